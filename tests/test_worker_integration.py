"""The worker as users run it: a subprocess, the real embedded broker, replayed worlds.

Checks conservation (one outcome or one dead letter per consumed event), parity with the
offline computation over more than 10,000 events, alerts equal to the offline
evaluation's, and a kill -9 in mid-stream followed by a restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from models.contracts import TransactionEvent, decode
from models.fraud_artifact import load_fraud_model
from models.worlds import open_world
from offline.generate.fraud_world import generate_fraud_world
from offline.serving_view import worker_view_scores
from stream.kafka.readback import read_topics
from stream.kafka.topics import ensure_topics
from stream.replay import iter_wire_events, replay_world
from stream.settings import WorkerSettings
from stream.worker_process import start_worker as start_worker_process

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


def worker_settings(broker, app_id: str, model_dir: Path) -> WorkerSettings:
    return WorkerSettings(bootstrap_servers=broker.bootstrap, app_id=app_id, model_dir=str(model_dir),
                          fraud_model="fusion-gated", metrics_port=0, batch_wait_ms=10)


def start_worker(settings: WorkerSettings) -> subprocess.Popen:
    # TEST_WORKER_LOG_LEVEL=info shows what a worker did when a test fails (not TRIBUTARY_*:
    # the worker refuses variables of its own prefix that no setting reads).
    # The log goes to a file, not a pipe: nobody reads a pipe until the worker stops, and
    # a full one (64 KiB) would block the worker's event loop in mid-test.
    level = os.environ.get("TEST_WORKER_LOG_LEVEL", "warning")
    log = tempfile.NamedTemporaryFile("w", prefix=f"{settings.app_id}-", suffix=".log", delete=False)
    process = start_worker_process(settings, log_level=level, stdout=log, stderr=subprocess.STDOUT)
    log.close()  # the child has its own copy of the descriptor
    process.log_path = Path(log.name)
    return process


def stop(process: subprocess.Popen, sig=signal.SIGTERM) -> str:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.log_path.read_text(errors="replace")


async def produce_poison(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i, (value, _) in enumerate(POISON):
            await producer.send_and_wait(topic, value, key=f"poison{i}".encode())
    finally:
        await producer.stop()


async def produce_labels(settings: WorkerSettings, events: list[TransactionEvent]) -> None:
    """A confirmed-fraud label for each event, keyed like its transaction, plus one for an unknown event."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for e in [*events, None]:
            event_id, account = (e.event_id, e.source_account) if e else ("no-such-transaction", "nobody")
            value = json.dumps({"label_id": f"label-{event_id}", "event_id": event_id, "source_account": account,
                                "kind": "confirmed_fraud", "labelled_at": "2025-03-01T00:00:00Z"}).encode()
            await producer.send(settings.topics.fraud_labels, value, key=account.encode())
        await producer.flush()
    finally:
        await producer.stop()


def outcomes_and_letters(settings: WorkerSettings, expected: int, timeout_s: float):
    """Outcomes, dead letters and alerts read back; stops early once `expected` distinct
    events have an outcome or a dead letter (duplicates after a restart do not count)."""
    topics = settings.topics
    events, letters = set(), set()

    def enough(fresh) -> bool:
        for record in fresh:
            if record.topic == topics.outcomes:
                events.add(json.loads(record.value)["event_id"])
            elif record.topic == topics.dead_letters:
                letter = json.loads(record.value)
                letters.add((letter["topic"], letter["partition"], letter["offset"]))
        return len(events) + len(letters) >= expected

    records = asyncio.run(read_topics(settings, [topics.outcomes, topics.dead_letters, topics.fraud_alerts],
                                      expected=expected, timeout_s=timeout_s, settle_s=2.0, until=enough))
    by_topic = defaultdict(list)
    for record in records:
        by_topic[record.topic].append(json.loads(record.value))
    return by_topic


def settled(settings: WorkerSettings, got) -> int:
    """Distinct events with an outcome, plus dead letters (duplicates must not count twice)."""
    distinct = {o["event_id"] for o in got[settings.topics.outcomes]}
    return len(distinct) + len({(d["topic"], d["partition"], d["offset"]) for d in got[settings.topics.dead_letters]})


def wait_for(settings: WorkerSettings, count: int, process: subprocess.Popen, timeout_s: float = 180) -> None:
    """Until `count` distinct events reached an outcome (or the worker died, or time ran out)."""
    deadline = time.monotonic() + timeout_s
    got = None
    while time.monotonic() < deadline:
        assert process.poll() is None, f"worker exited early:\n{stop(process)[-3000:]}"
        got = outcomes_and_letters(settings, count, timeout_s=20)
        if settled(settings, got) >= count:
            return
    if process.poll() is None:  # ask for every thread's and task's stack in the log (mode's SIGUSR1)
        process.send_signal(signal.SIGUSR1)
        time.sleep(3)
    raise AssertionError(f"only {settled(settings, got)} of {count} events reached an outcome within {timeout_s} s; "
                         f"{asyncio.run(unsettled(settings, got, count))}; the worker said:\n{stop(process)[-20000:]}")


async def unsettled(settings: WorkerSettings, got, count: int) -> str:
    """Which input offsets lack an outcome, per partition, and the group's committed offsets."""
    inputs = {settings.topics.transactions, settings.topics.gifts, settings.topics.donor_profiles,
              settings.topics.donor_relationships, settings.topics.fraud_labels}
    records = await read_topics(settings, sorted(inputs), expected=count, timeout_s=20, settle_s=1.0)
    done = {(o["topic"], o["partition"], o["offset"]) for o in got[settings.topics.outcomes]}
    done |= {(d["topic"], d["partition"], d["offset"]) for d in got[settings.topics.dead_letters]}
    missing = defaultdict(list)
    for r in records:
        if (r.topic, r.partition, r.offset) not in done:
            missing[(r.topic, r.partition)].append(r.offset)
    admin = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=settings.app_id,
                             enable_auto_commit=False)
    await admin.start()
    try:
        committed = {tp: await admin.committed(TopicPartition(*tp)) for tp in sorted(missing)}
    finally:
        await admin.stop()
    return "; ".join(f"{t}[{p}]: {len(offsets)} without outcome in {min(offsets)}..{max(offsets)}, "
                     f"committed {committed[(t, p)]}" for (t, p), offsets in sorted(missing.items())) or "none missing"


def test_every_event_is_scored_or_dead_lettered_and_scores_match_offline(broker, world, model_dir):
    settings = worker_settings(broker, "tributary-it-a", model_dir)
    asyncio.run(ensure_topics(settings))
    worker = start_worker(settings)
    try:
        asyncio.run(replay_world(world, settings, progress=False))
        asyncio.run(produce_poison(broker.bootstrap, settings.topics.transactions))
        good = [decode(e.value, TransactionEvent) for e in iter_wire_events(world)]
        assert len(good) >= 10_000
        wait_for(settings, len(good) + len(POISON), worker)
        # Late labels for some scored transactions (and one for a transaction never seen).
        labelled = good[:300]
        asyncio.run(produce_labels(settings, labelled))
        wait_for(settings, len(good) + len(POISON) + len(labelled) + 1, worker)
        got = outcomes_and_letters(settings, len(good) + len(POISON) + len(labelled) + 1, timeout_s=10)
    finally:
        log = stop(worker)
    assert "Traceback" not in log, log[-3000:]
    label_outcomes = {o["event_id"]: o for o in got[settings.topics.outcomes] if o["topic"] == settings.topics.fraud_labels}
    scored = {o["event_id"]: o for o in got[settings.topics.outcomes] if o["topic"] == settings.topics.transactions}
    assert set(label_outcomes) == {f"label-{e.event_id}" for e in labelled}
    assert all(label_outcomes[f"label-{e.event_id}"]["scores"] == scored[e.event_id]["scores"] for e in labelled)
    unknown = [d for d in got[settings.topics.dead_letters] if d["topic"] == settings.topics.fraud_labels]
    assert [d["reason"] for d in unknown] == ["unknown_entity"]
    got[settings.topics.outcomes] = [o for o in got[settings.topics.outcomes]  # the transactions' own, duplicates kept
                                     if o["topic"] == settings.topics.transactions]
    got[settings.topics.dead_letters] = [d for d in got[settings.topics.dead_letters] if d not in unknown]

    outcomes, letters = got[settings.topics.outcomes], got[settings.topics.dead_letters]
    # Conservation: each good event exactly one outcome, each poison exactly one dead letter.
    assert Counter(o["event_id"] for o in outcomes) == Counter(e.event_id for e in good)
    assert sorted(d["reason"] for d in letters) == sorted(reason for _, reason in POISON)

    # Parity: the same artifact, offline, on the worker's per-partition view.
    loaded = load_fraud_model(next(model_dir.glob("fusion-gated/*")))
    offline = worker_view_scores(good, loaded, settings.partitions)
    served = {o["event_id"]: o["scores"]["fraud"] for o in outcomes}
    worst = max(abs(served[e] - offline[e]) for e in offline)
    assert worst <= 1e-5, f"worker and offline scores differ by up to {worst}"

    # Alerts: exactly the events the offline evaluation flags at the artifact's threshold.
    alerted = {a["event_id"] for a in got[settings.topics.fraud_alerts]}
    assert alerted == {e for e, s in offline.items() if s >= loaded.threshold}
    assert alerted, "the test model should alert on something"


def test_kill_and_restart_loses_nothing_and_continues_exactly(broker, world, model_dir):
    settings = worker_settings(broker, "tributary-it-b", model_dir)
    good = [decode(e.value, TransactionEvent) for e in iter_wire_events(world)]
    # Topics of this module are shared: this worker gets input and output topics of its own.
    topics = settings.topics.model_copy(update={"transactions": "transactions-restart", "outcomes": "outcomes-restart",
                                                 "fraud_alerts": "alerts-restart", "dead_letters": "dead-restart",
                                                 "fraud_labels": "labels-restart"})
    settings = settings.model_copy(update={"topics": topics})
    asyncio.run(ensure_topics(settings))
    first = start_worker(settings)
    asyncio.run(replay_world(world, settings, progress=False))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill -9 somewhere in the middle of the stream
        seen = len(outcomes_and_letters(settings, len(good), timeout_s=2)[topics.outcomes])
        if seen >= len(good) // 3:
            break
    stop(first, signal.SIGKILL)
    assert seen < len(good), "the worker finished before it could be killed; the test proves nothing"

    second = start_worker(settings)
    try:
        wait_for(settings, len(good), second)
        got = outcomes_and_letters(settings, len(good), timeout_s=10)
    finally:
        log = stop(second)
    assert "Traceback" not in log, log[-3000:]

    outcomes = got[topics.outcomes]
    per_event = defaultdict(list)
    for o in outcomes:
        per_event[o["event_id"]].append(o)
    assert set(per_event) == {e.event_id for e in good}, "an event was left without an outcome"
    for copies in per_event.values():  # duplicates, if any, say the same thing
        # Same alert id; the score within float noise (a rescored event sits in a batch of
        # another size, and batched matrix products round differently).
        assert len({c.get("alert_id") for c in copies}) == 1
        scores = [c["scores"]["fraud"] for c in copies]
        assert max(scores) - min(scores) <= 1e-5, copies
    duplicates = sum(len(c) - 1 for c in per_event.values())
    print(f"killed after {seen:,} of {len(good):,} outcomes; {duplicates:,} duplicate outcomes after the restart")

    loaded = load_fraud_model(next(model_dir.glob("fusion-gated/*")))
    offline = worker_view_scores(good, loaded, settings.partitions)
    worst = max(abs(per_event[e][0]["scores"]["fraud"] - offline[e]) for e in offline)
    assert worst <= 1e-5, f"after the restart, scores differ from an uninterrupted run by up to {worst}"
