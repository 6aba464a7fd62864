"""The worker built and driven in-process: its real parts, Kafka replaced by fakes.

Batches go through the pipelines as Faust would hand them over (events with a message
and an ack), outputs and changelogs into a fake producer, committed offsets from a fake
probe. What is checked is the commit protocol's order (everything of a batch published
before any of its events is acked), what a fatal publishing error does, and that each
stage is observed by the monitors of the model version that scored it.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiokafka import errors as kafka_errors

from models.contracts import DeadLetter, EventOutcome
from stream.pipeline.records import RawRecord
from stream.state.commit_protocol import marker_topic
from tests.serving_helpers import untrained_donor_artifact, untrained_fraud_artifact
from tests.worker_driver import Driver, transactions


@pytest.fixture
def model_dir(tmp_path):
    untrained_fraud_artifact(tmp_path, threshold=0.5)
    return tmp_path


def test_each_batch_is_published_whole_before_any_of_its_events_is_acked(model_dir):
    driver = Driver(model_dir)
    recs = transactions(60)
    driver.run("transactions", [recs[:25], recs[25:]])
    outcomes = [EventOutcome.model_validate_json(v) for v in driver.sent(driver.settings.topics.outcomes)]
    assert [o.offset for o in outcomes] == list(range(60))
    kinds = [kind for kind, _ in driver.journal]
    first_ack = kinds.index("ack")
    changelog = driver.settings.changelog_topic("accounts")
    assert ("sent", changelog) in driver.journal[:first_ack]  # the changelog too, before the acks
    assert kinds[first_ack:first_ack + 25] == ["ack"] * 25  # the first batch, then the second's sends
    assert [o for kind, o in driver.journal if kind == "ack"] == list(range(60))
    markers = [(key, value) for t, key, value in driver.producer.sent if t == changelog
               for key, _ in value if marker_topic(key) is not None]
    assert markers, "the changelog carries the published-offset markers"
    assert driver.worker.processed == {("transactions", 0): 60}


def test_commit_and_consumer_lag_per_partition_are_measured_against_the_broker(model_dir):
    driver = Driver(model_dir)
    driver.broker.offsets[("transactions", 0)] = list(range(100))  # the partition's end offset is 100
    driver.broker.committed_offsets[("transactions", 0)] = 20
    driver.run("transactions", [transactions(60)])
    asyncio.run(driver.worker.measure_commit_lag([("transactions", 0)]))
    sample = driver.worker.metrics.registry.get_sample_value
    partition = {"topic": "transactions", "partition": "0"}
    assert sample("tributary_commit_lag_offsets", partition) == 60 - 20
    assert sample("tributary_consumer_lag_offsets", partition) == 100 - 60
    assert sample("process_resident_memory_bytes") > 0  # the process metrics are exported too


def test_a_batch_that_cannot_be_published_is_not_acked_and_stops_the_worker(model_dir):
    driver = Driver(model_dir, fail=lambda t, k, v, a: kafka_errors.TopicAuthorizationFailedError()
                    if t == "event-outcomes" else None)
    driver.run("transactions", [transactions(10)])
    assert not [kind for kind, _ in driver.journal if kind == "ack"]
    assert driver.stops == [True] and "retrying cannot mend" in driver.worker.fatal_error
    assert driver.worker.stopping and not driver.worker.processed


def test_bad_records_come_out_as_dead_letters_in_the_same_batch(model_dir):
    driver = Driver(model_dir)
    good = transactions(5)
    bad = RawRecord("transactions", 0, 5, b"acct1", b"{not json")
    driver.run("transactions", [good + [bad]])
    (letter,) = [DeadLetter.model_validate_json(v) for v in driver.sent(driver.settings.topics.dead_letters)]
    assert letter.reason.value == "malformed_json" and letter.offset == 5
    assert [o for kind, o in driver.journal if kind == "ack"] == list(range(6))


def test_donor_batches_are_observed_by_the_monitors_of_the_version_that_scored_them(tmp_path):
    untrained_fraud_artifact(tmp_path, threshold=0.5)
    untrained_donor_artifact(tmp_path, threshold=0.5)
    driver = Driver(tmp_path, drift_window=100)
    gifts = [RawRecord("gifts", 0, i, f"d{i % 5}".encode(), json.dumps({
        "event_id": f"g{i}", "event_time": f"2024-03-{1 + i % 28:02d}T00:00:00Z", "donor_id": f"d{i % 5}",
        "amount": 25.0, "channel": "online"}).encode()) for i in range(120)]
    served = driver.worker.pipelines["donors"].stage.scorer.current
    driver.run("donors", [gifts])
    reports = driver.sent(driver.settings.topics.drift_reports)
    statistics = served.monitors.statistics()
    assert any(monitor.endswith("psi:score") for _, monitor in statistics)  # PSI measured per target
    assert all(model == "multitarget" for model, _ in statistics)
    assert all(json.loads(r)["model_version"] == served.model.version for r in reports)
