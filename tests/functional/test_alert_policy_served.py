"""The worker serves the alert policy: a budget holds its alert rate where a threshold
fixed from validation does not, a rescored partition raises the same alerts, a policy
file is read again while it runs, and a budget the model cannot serve stops it at start."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from models.alert_policy import AlertPolicy, AlertPolicyError, budget_reference
from models.contracts import EventOutcome, FraudAlert
from models.model_store import load_fraud_model
from offline.evaluation.alert_budget import served_at_budget
from stream.pipeline.records import RawRecord
from tests.serving_helpers import untrained_fraud_artifact
from tests.worker_driver import Driver, transactions

N = 600
DAYS = 2.0  # the "validation period" the reference is said to span: N / DAYS events a day
PARTITIONS = 4


def scores_of(driver: Driver) -> list[float]:
    outcomes = [EventOutcome.model_validate_json(v) for v in driver.sent(driver.settings.topics.outcomes)]
    return [o.scores["fraud"] for o in sorted(outcomes, key=lambda o: o.offset)]


@pytest.fixture
def budget_models(tmp_path):
    """An artifact whose validation scores are those of the first N transactions of
    `transactions`, said to span DAYS."""
    first = tmp_path / "first"
    untrained_fraud_artifact(first, threshold=0.5)
    probe = Driver(first)
    probe.run("transactions", [transactions(N)])
    served = tmp_path / "served"
    untrained_fraud_artifact(served, threshold=0.5,
                             metrics={"alert_budget": budget_reference(scores_of(probe), DAYS * 86_400)})
    return served


def alerts(driver: Driver) -> int:
    return len(driver.sent(driver.settings.topics.fraud_alerts))


def replayed(driver: Driver, stream: list[list[RawRecord]], start: int = 0) -> Driver:
    """`driver` after scoring stream[start:], with the whole stream in the topic first (a
    replay: every partition's next record is there, so the graph merge never has to pass
    an idle partition, and the features do not depend on how fast it reads)."""
    driver.feed.produce([record for batch in stream for record in batch])
    driver.run("transactions", stream[start:])
    return driver


def moving_stream(days: int = 12, busy: int = 600, quiet: int = 150) -> list[list[RawRecord]]:
    """Days of transactions over PARTITIONS partitions, unlike the validation period: the
    first half at `busy` a day, the second at `quiet`, with amounts (and so scores)
    drifting all along; one batch per half day."""
    start, batches, offsets, i = datetime(2025, 3, 1, tzinfo=timezone.utc), [], [0] * PARTITIONS, 0
    for half_day in range(2 * days):
        per_day = busy if half_day < days else quiet
        batch = []
        for k in range(per_day // 2):
            partition = i % PARTITIONS
            at = start + timedelta(days=half_day / 2 + k / per_day)
            value = json.dumps({"event_id": f"m{i}", "event_time": at.isoformat(), "source_account": f"a{i % 37}",
                                "destination_account": f"a{(i + 1 + i % 5) % 37}", "amount": 20.0 + (i % 50) * (1 + half_day),
                                "type": "transfer"}).encode()
            batch.append(RawRecord("transactions", partition, offsets[partition], f"a{i % 37}".encode(), value))
            offsets[partition] += 1
            i += 1
        batches.append(batch)
    return batches


@pytest.mark.parametrize("policy", ["alerts_per_day=40", "top_fraction=0.1"])
def test_a_budget_holds_its_alert_rate_when_traffic_and_scores_move_from_validation(budget_models, policy):
    days, stream = 12, moving_stream()
    events = sum(len(batch) for batch in stream)
    budget = 40 * days if policy.startswith("alerts_per_day") else 0.1 * events
    fixed = replayed(Driver(budget_models, alert_policy=f"threshold={budget_threshold(budget_models, policy):.12f}"),
                     stream)
    driver = replayed(Driver(budget_models, alert_policy=policy), stream)
    assert abs(alerts(driver) - budget) <= 0.1 * budget, (
        f"{alerts(driver)} alerts for a budget of {budget:g} ({alerts(fixed)} at the fixed validation threshold)")
    assert abs(alerts(fixed) - budget) > 0.1 * budget, "the stream does not move enough to test anything"
    # `tributary evaluate --alert-policy` says what this worker raised: the same budget, per partition.
    outcomes = [EventOutcome.model_validate_json(v) for v in driver.sent(driver.settings.topics.outcomes)]
    times = {json.loads(r.value)["event_id"]: datetime.fromisoformat(json.loads(r.value)["event_time"]).timestamp()
             for batch in stream for r in batch}
    model = driver.worker.fraud_scorer.current.model
    span_days = (max(times.values()) - min(times.values())) / 86_400
    offline = served_at_budget(np.array([o.scores["fraud"] for o in outcomes]), np.zeros(len(outcomes), dtype=bool),
                               span_days, np.array([times[o.event_id] for o in outcomes]),
                               np.array([o.partition for o in outcomes]), PARTITIONS, model.manifest.metrics,
                               AlertPolicy.parse(policy))
    assert round(offline["alerts_per_day"] * span_days) == alerts(driver)
    sample = driver.worker.metrics.registry.get_sample_value
    last_alert = FraudAlert.model_validate_json(driver.sent(driver.settings.topics.fraud_alerts)[-1])
    assert sample("tributary_alert_threshold", {"model": "fusion-gated"}) >= 0.0 and last_alert.score >= last_alert.threshold


def budget_threshold(model_dir, policy: str) -> float:
    """The threshold a fixed conversion of the budget would use (what main served before)."""
    model = load_fraud_model(next(model_dir.glob("fusion-gated/*")))
    return AlertPolicy.parse(policy).threshold(model.threshold, model.manifest.metrics)


def test_a_partition_rescored_from_its_marker_raises_the_same_alerts(budget_models):
    # A worker that stops after any batch and a new one that restores its markers (the
    # budget's state inside them) raise the alerts an uninterrupted worker raises.
    stream, stop = moving_stream(days=4), 5  # the stop falls where the budget is alerting
    whole = replayed(Driver(budget_models, alert_policy="alerts_per_day=40"), stream)
    first = replayed(Driver(budget_models, alert_policy="alerts_per_day=40"), stream[:stop])
    second = Driver(budget_models, alert_policy="alerts_per_day=40")
    markers = first.worker.accounts.published
    for topic_index, partition in markers.as_dict():
        second.worker.accounts.restore(partition, *markers.mark(topic_index, partition, markers.get(topic_index, partition)))
        second.broker.committed_offsets[("transactions", partition)] = markers.get(topic_index, partition) + 1
    replayed(second, stream, start=stop)  # the graph is rebuilt from the topic

    def said(driver):
        return sorted((a.event_id, a.threshold) for a in map(FraudAlert.model_validate_json,
                                                             driver.sent(driver.settings.topics.fraud_alerts)))
    assert said(second) and sorted(said(first) + said(second)) == said(whole)


def test_a_policy_file_is_read_again_at_the_reload_check(budget_models, tmp_path):
    policy = tmp_path / "alert-policy"
    policy.write_text("top_fraction=0.2\n")
    driver = Driver(budget_models, alert_policy=f"@{policy}")
    records = transactions(2 * N)
    driver.run("transactions", [records[:N]])
    before = alerts(driver)
    assert before > 0.1 * N
    policy.write_text("threshold=1.0\n")  # nothing scores 1.0: no more alerts
    driver.worker.reload()
    driver.run("transactions", [records[N:]])
    assert alerts(driver) == before
    policy.write_text("alerts_per_day=oops\n")  # a bad edit keeps the policy in force
    driver.worker.reload()
    assert str(driver.worker.alert_thresholds.policy) == "threshold=1"


def test_a_budget_the_model_cannot_serve_stops_the_worker_at_start(tmp_path):
    untrained_fraud_artifact(tmp_path, threshold=0.5)  # trained before artifacts carried validation scores
    with pytest.raises(AlertPolicyError, match="retrain it with `tributary train fraud`"):
        Driver(tmp_path, alert_policy="alerts_per_day=100")
