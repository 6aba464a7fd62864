"""`tributary replay-test`: the code of the compose service, here against the embedded broker.

It passes with a worker running; it fails when the worker is not running (the topics
then still hold the first run's outputs, which must not count for the second run); and
its checks fail on readback data with one thing wrong.
"""

from __future__ import annotations

import asyncio
import base64
import copy

import pytest
from click.testing import CliRunner

from models.contracts import DEFAULT_MAX_MESSAGE_BYTES, TransactionEvent, decode
from models.worlds import open_world
from offline.generate.fraud_world import generate_fraud_world
from stream.kafka.topics import ensure_topics
from stream.pipeline.records import RawRecord, decode_or_dead_letter
from stream.settings import WorkerSettings
from tributary.cli import main
from tributary.replay_check import check, format_report
from tributary.replay_test import BAD_KINDS, _event, _json, plan_bad_events, run_replay_test, running_worker


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    # Small, but with fraud in it (12 fraudulent of ~1,000 transactions) for the quality check.
    generate_fraud_world(root, accounts=800, days=3, seed=2, progress=False)
    return open_world(root)


@pytest.fixture(scope="module")
def passing_run(broker, world, model_dir, tmp_path_factory):
    settings = WorkerSettings(bootstrap_servers=broker.bootstrap, app_id="tributary-replay-test",
                              model_dir=str(model_dir), metrics_port=0, batch_wait_ms=10)
    asyncio.run(ensure_topics(settings))
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with running_worker(settings, log) as worker:
        report = run_replay_test(world.root, model_dir, settings, bad_per_kind=2, timeout_s=120, worker=worker)
    if not report.passed:
        report.notes.append("worker log (tail):\n" + log.read_text()[-3000:])
    print(format_report(report))
    return report


@pytest.mark.integration
@pytest.mark.slow
def test_replay_test_passes_with_a_worker_on_the_embedded_broker(passing_run):
    report, expected, got = passing_run, passing_run.expected, passing_run.readback
    assert report.passed, format_report(report)
    assert len(report.checks) >= 9
    assert {o["event_id"] for o in got.outcomes} == set(expected.event_ids)
    assert len(got.dead_letters) >= len(expected.planted) == 2 * len(BAD_KINDS)
    alerted = {e for e, s in expected.offline_scores.items() if s >= expected.threshold}
    assert alerted and 0 < len(alerted) < len(expected.event_ids), "the test model should alert on some events"
    assert any(expected.labels.values()), "the world should hold fraud, or precision and recall say nothing"


@pytest.mark.integration
@pytest.mark.slow
def test_without_a_worker_it_fails_and_ignores_the_earlier_runs_outputs(broker, world, model_dir, passing_run):
    # The topics hold the first run's outcomes for the same event ids, and its dead letters.
    result = CliRunner().invoke(main, ["replay-test", "--data", str(world.root), "--model-dir", str(model_dir),
                                       "--bootstrap", broker.bootstrap, "--timeout-s", "3", "--bad-per-kind", "1"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "FAIL  every replayed transaction has an outcome" in result.output
    assert "FAIL  dead letters = bad events planted" in result.output
    assert "replay-test FAILED" in result.output


def _mutated(report, mutate):
    got = copy.deepcopy(report.readback)
    mutate(got, report.expected)
    return check(report.expected, got, margin=0.05)


def _drop_one_outcome(got, expected):
    got.outcomes[:] = [o for o in got.outcomes if o["event_id"] != got.outcomes[0]["event_id"]]


def _extra_dead_letter(got, expected):
    extra = dict(got.dead_letters[0], offset=got.dead_letters[0]["offset"] + 10**9,
                 key=base64.b64encode(b"some-account").decode(), reason="processing_error")
    got.dead_letters.append(extra)


def _lose_one_dead_letter(got, expected):
    got.dead_letters.pop()


def _wrong_reason(got, expected):
    letter = next(d for d in got.dead_letters if d["reason"] == "oversized")
    letter["reason"] = "schema_violation"


def _disagreeing_duplicate(got, expected):
    got.outcomes.append(dict(got.outcomes[0], scores={"fraud": 1 - got.outcomes[0]["scores"]["fraud"]}))


def _outcome_for_a_planted_event(got, expected):
    got.outcomes.append(dict(got.outcomes[0], event_id="replay-test-x-1"))


def _lose_one_alert(got, expected):
    got.alerts.pop()


def _drop_the_alerts_on_fraud(got, expected):  # as if the streamed model were worse: recall falls
    fraud = {e for e, f in expected.labels.items() if f}
    assert {a["event_id"] for a in got.alerts} & fraud, "no alert on fraud to take away"
    got.alerts[:] = [a for a in got.alerts if a["event_id"] not in fraud]

MUTATIONS = [
    (_drop_one_outcome, "every replayed transaction has an outcome"),
    (_extra_dead_letter, "dead letters = bad events planted"),
    (_lose_one_dead_letter, "dead letters = bad events planted"),
    (_wrong_reason, "each dead letter has the expected reason"),
    (_disagreeing_duplicate, "duplicate outcomes agree on score and alert"),
    (_outcome_for_a_planted_event, "no outcome for an event that was not replayed"),
    (_lose_one_alert, "every alert an outcome names was published"),
    (_drop_the_alerts_on_fraud, "alert recall >= offline - 0.05"),
]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("mutate, failing", MUTATIONS, ids=[m.__name__.strip("_") for m, _ in MUTATIONS])
def test_checks_fail_when_one_thing_is_wrong(passing_run, mutate, failing):
    report = _mutated(passing_run, mutate)
    assert not report.passed
    assert failing in report.failed(), format_report(report)
    assert "replay-test FAILED" in format_report(report)


def test_each_bad_kind_is_dead_lettered_for_its_reason():
    assert decode(_json(_event("replay-test-x-0")), TransactionEvent)  # the template itself is valid
    for kind in BAD_KINDS:
        # As the replay test plants it: keyed by its planted key, not by its source account.
        record = RawRecord("transactions", 0, 0, f"replay-test:x:{kind.name}:1".encode(),
                           kind.value("replay-test-x-1", DEFAULT_MAX_MESSAGE_BYTES))
        event, letter = decode_or_dead_letter(record, TransactionEvent, DEFAULT_MAX_MESSAGE_BYTES)
        assert event is None and letter.reason == kind.reason, kind.name


def test_every_partition_gets_a_planted_event_first_and_keys_carry_the_run():
    planted = plan_bad_events("abc", per_kind=1, partitions=12, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES)
    assert len(planted) == 12 and sorted(p.partition for p in planted) == list(range(12))
    planted = plan_bad_events("abc", per_kind=3, partitions=4, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES)
    assert {p.partition for p in planted[:4]} == {0, 1, 2, 3}
    assert len(planted) == 3 * len(BAD_KINDS) and len({p.key for p in planted}) == len(planted)
    assert all(p.key.startswith("replay-test:abc:") for p in planted)
    # Each kind on more than one partition.
    assert all(len({p.partition for p in planted if p.kind == k.name}) > 1 for k in BAD_KINDS)


def test_what_the_user_can_fix_is_one_clear_message(tmp_path, world, model_dir):
    def run(*args):
        result = CliRunner().invoke(main, ["replay-test", *args])
        assert result.exit_code in (1, 2) and "Traceback" not in result.output, result.output
        return result.output

    assert "tributary generate" in run("--data", str(tmp_path), "--model-dir", str(model_dir))
    assert "tributary train" in run("--data", str(world.root), "--model-dir", str(tmp_path))
    assert "cannot connect to Kafka at 127.0.0.1:1" in run("--data", str(world.root), "--model-dir", str(model_dir),
                                                          "--bootstrap", "127.0.0.1:1")
    assert "leave out --bootstrap" in run("--data", str(world.root), "--model-dir", str(model_dir),
                                          "--bootstrap", "127.0.0.1:1", "--embedded")


@pytest.mark.integration
@pytest.mark.slow
def test_scores_unlike_the_offline_view_are_pointed_out(passing_run):
    # What a worker whose state already held these accounts (an earlier replay) produces.
    def shift_one_score(got, expected):
        got.outcomes[0] = dict(got.outcomes[0], scores={"fraud": got.outcomes[0]["scores"]["fraud"] / 2})

    report = _mutated(passing_run, shift_one_score)
    assert any("not like for like" in note for note in report.notes), format_report(report)
