"""The worker as users run it: a subprocess, the real embedded broker, replayed worlds.

Checks conservation (one outcome or one dead letter per consumed record), parity with
the offline computation over more than 10,000 events, alerts equal to the offline
evaluation's, and a kill -9 in mid-stream followed by a restart. Where the kill lands
is set by the input (see tests/worker_harness.py), not by a clock.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from models.contracts import TransactionEvent, decode
from models.model_store import load_fraud_model
from models.worlds import open_world
from offline.generate.fraud_world import generate_fraud_world
from offline.serving_view import worker_view_scores
from stream.replay import iter_wire_events
from stream.state.commit_protocol import marker_topic
from tests.readback import (
    ChangelogMarkers,
    Readback,
    kill_in_mid_batch,
)
from tests.worker_harness import (
    MANY_BATCHES,
    Record,
    Worker,
    end_offsets,
    no_traceback,
    produce,
    same_outcomes,
    wait_for_commits,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POISON = [
    (b"{not json", "malformed_json"),
    (b'{"event_id": "p1"}', "schema_violation"),
    (b'{"event_id": "p2", "event_time": "2025-02-01T00:00:00Z", "source_account": "a", '
     b'"destination_account": "b", "amount": NaN, "type": "transfer"}', "schema_violation"),
    (b'{"event_id": "p3", "event_time": "2025-02-01T00:00:00", "source_account": "a", '
     b'"destination_account": "b", "amount": 5, "type": "transfer"}', "schema_violation"),
    (b'{"event_id": "p4", "event_time": "2025-02-01T00:00:00Z", "source_account": "a", '
     b'"destination_account": "b", "amount": 5, "type": "teleport"}', "schema_violation"),
    (b"z" * 40_000, "oversized"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate_fraud_world(root, accounts=2500, days=11, seed=11, progress=False)
    return open_world(root)


def transactions(world, settings) -> tuple[list[Record], list[TransactionEvent]]:
    wire = list(iter_wire_events(world))
    return ([Record(settings.topics.for_stream(w.stream), w.key, w.value) for w in wire],
            [decode(w.value, TransactionEvent) for w in wire])


def label_records(settings, events: list[TransactionEvent]) -> list[Record]:
    """A confirmed-fraud label for each event, keyed like its transaction, plus one for an unknown event."""
    out = []
    for e in [*events, None]:
        event_id, account = (e.event_id, e.source_account) if e else ("no-such-transaction", "nobody")
        value = json.dumps({"label_id": f"label-{event_id}", "event_id": event_id, "source_account": account,
                            "kind": "confirmed_fraud", "labelled_at": "2025-03-01T00:00:00Z"}).encode()
        out.append(Record(settings.topics.fraud_labels, account.encode(), value))
    return out


def test_every_event_is_scored_or_dead_lettered_and_scores_match_offline(broker, world, model_dir):
    settings = worker_settings(broker.bootstrap, "it-a", model_dir)
    records, good = transactions(world, settings)
    assert len(good) >= 10_000
    worker = Worker(settings)
    readback = Readback(settings)
    try:
        scored = produce(settings, records)
        poisoned = produce(settings, [Record(settings.topics.transactions, f"poison{i}".encode(), value)
                                      for i, (value, _) in enumerate(POISON)])
        readback.wait_for(scored + poisoned, "an outcome or dead letter for every transaction", [worker])
        readback.wait_for_alerts([worker])
        # Late labels for some scored transactions (and one for a transaction never seen).
        labelled = good[:300]
        labels = produce(settings, label_records(settings, labelled))
        readback.wait_for(labels, "an outcome or dead letter for every label", [worker])
        wait_for_commits(settings, end_offsets(scored + poisoned + labels), [worker])
    finally:
        worker.stop()
        readback.close()
    no_traceback(worker)
    # At the default log level (warning) too, the log says when the worker is ready.
    ready = [line for line in worker.log().splitlines() if "worker ready: consuming input partitions" in line]
    assert ready and f"{settings.topics.transactions} 0,1,2,3" in ready[0], worker.log()[-2000:]

    # Conservation: each record exactly one outcome or one dead letter, never both.
    for position in scored:
        assert len(readback.outcomes[position]) == 1 and position not in readback.dead_letters
    assert sorted(readback.dead_letters[p][0]["reason"] for p in poisoned) == sorted(r for _, r in POISON)
    assert all(len(readback.dead_letters[p]) == 1 and p not in readback.outcomes for p in poisoned)

    # Labels: each matched to its transaction's score; the unknown one dead-lettered.
    by_event = {readback.outcomes[p][0]["event_id"]: readback.outcomes[p][0] for p in scored}
    for event, position in zip(labelled, labels):
        (outcome,) = readback.outcomes[position]
        assert outcome["event_id"] == f"label-{event.event_id}"
        assert outcome["scores"] == by_event[event.event_id]["scores"]
    assert [d["reason"] for d in readback.dead_letters[labels[-1]]] == ["unknown_entity"]

    # Parity: the same artifact, offline, on the worker's per-partition view.
    loaded = load_fraud_model(next(model_dir.glob("fusion-gated/*")))
    offline = worker_view_scores(good, loaded, settings.partitions)
    worst = max(abs(by_event[e]["scores"]["fraud"] - offline[e]) for e in offline)
    assert worst <= 1e-5, f"worker and offline scores differ by up to {worst}"

    # Alerts: exactly the events the offline evaluation flags at the artifact's threshold.
    alerted = {a["event_id"] for a in readback.alerts}
    assert alerted == {e for e, s in offline.items() if s >= loaded.threshold}
    assert alerted, "the test model should alert on something"


def test_a_clean_restart_reads_on_from_the_graph_checkpoint_and_scores_exactly(broker, world, model_dir):
    """Stopped cleanly after half the stream, the worker leaves a graph checkpoint; its
    restart loads it, reads only what came after it, and scores as an uninterrupted
    worker would."""
    settings = worker_settings(broker.bootstrap, "it-checkpoint", model_dir)
    records, good = transactions(world, settings)
    half = len(records) // 2
    readback = Readback(settings)
    first, second = Worker(settings, "first worker"), None
    try:
        first_half = produce(settings, records[:half])
        readback.wait_for(first_half, "the outcomes of the first half", [first])
        assert first.stop() == 0
        rest = produce(settings, records[half:])
        second = Worker(settings, "restarted worker")
        readback.wait_for(first_half + rest, "an outcome for every event after the restart", [second])
        metrics = second.metrics()
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.stop()
        readback.close()
    no_traceback(first, second)
    assert metrics["tributary_graph_restored_records"] == half, "the restart did not start from the checkpoint"
    assert metrics["tributary_graph_rebuilds"] == 0 and metrics["tributary_graph_merged_records"] == len(records)

    loaded = load_fraud_model(next(model_dir.glob("fusion-gated/*")))
    offline = worker_view_scores(good, loaded, settings.partitions)
    served = {o["event_id"]: o["scores"]["fraud"] for p in first_half + rest for o in readback.outcomes[p]}
    assert set(served) == set(offline)
    worst = max(abs(served[e] - offline[e]) for e in offline)
    assert worst <= 1e-5, f"after the restart from the checkpoint, scores differ by up to {worst}"


@pytest.mark.fault
def test_kill_and_restart_loses_nothing_and_continues_exactly(broker, world, model_dir):
    """Killed with SIGKILL in the middle of a batch of the second third of the stream
    (outputs published, changelog marker not), before it ever committed (a commit
    interval longer than the test), then restarted: it must read everything again,
    publish each event's outcome at least once with identical duplicates, score as an
    uninterrupted worker would, and commit all of it."""
    settings = worker_settings(broker.bootstrap, "it-restart", model_dir)
    records, good = transactions(world, settings)
    third = len(records) // 3
    readback = Readback(settings)
    markers = ChangelogMarkers(settings, "accounts", lambda key: settings.topics.transactions
                               if marker_topic(key) == 0 else None)
    first = Worker(settings.model_copy(update={"commit_interval_s": 3600.0, **MANY_BATCHES}), "first worker")
    second = None
    try:
        first_third = produce(settings, records[:third])
        readback.wait_for(first_third, "the outcomes of the first third", [first])
        first.pause()  # the second third is all there when it wakes: batch after batch
        second_third = produce(settings, records[third:2 * third])
        first.resume()
        ahead = kill_in_mid_batch(first, readback, markers, second_third)
        at_kill = len(readback.settled(second_third))
        rest = produce(settings, records[2 * third:])
        second = Worker(settings, "restarted worker")
        everything = first_third + second_third + rest
        readback.wait_for(everything, "an outcome for every event after the restart", [second])
        commit_s = wait_for_commits(settings, end_offsets(everything), [second])
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.stop()
        readback.close()
        markers.close()
    no_traceback(second)

    assert not readback.dead_letters
    for position in everything:  # at least one outcome each; duplicates say the same
        assert same_outcomes(readback.outcomes[position]), readback.outcomes[position]
    duplicates = sum(len(readback.outcomes[p]) - 1 for p in everything)
    assert duplicates >= ahead  # what was ahead of the changelog was scored again
    print(f"killed with {at_kill:,} of {len(second_third):,} outcomes of the second third published, {ahead} of "
          f"them ahead of the changelog; "
          f"{duplicates:,} duplicate outcomes after the restart; commits caught up {commit_s:.1f} s after the last outcome")

    loaded = load_fraud_model(next(model_dir.glob("fusion-gated/*")))
    offline = worker_view_scores(good, loaded, settings.partitions)
    served = {o[0]["event_id"]: o[0]["scores"]["fraud"] for o in (readback.outcomes[p] for p in everything)}
    worst = max(abs(served[e] - offline[e]) for e in offline)
    assert worst <= 1e-5, f"after the restart, scores differ from an uninterrupted run by up to {worst}"
    assert Counter(o[0]["event_id"] for o in (readback.outcomes[p] for p in everything)) == Counter(e.event_id for e in good)
