"""`tributary replay-test`: replay a labelled world end to end and check what came out.

The same code runs as the `replay-test` compose service (a real Kafka, the worker
already running) and in our test suite (the embedded broker, a worker subprocess).

1. Replay the world's transactions and plant bad events of every kind (malformed JSON,
   schema violations, an oversized message, an unknown enum, a tombstone) into the
   transactions topic, each keyed with a marker unique to this run.
2. Read back outcomes, dead letters and fraud alerts until every replayed transaction
   has an outcome and every planted event a dead letter (or the timeout).
3. Check conservation (nothing lost, duplicates agree, one dead letter per planted
   event with the expected reason) and quality (alert precision and recall against the
   world's labels, no worse than the offline evaluation of the same events by the same
   artifact, minus a margin).

Topics may hold records of earlier runs. This run's records are told apart by
position, not by count or by event id alone (a world replayed twice repeats its ids):
before the replay one planted event goes to each partition of the transactions topic,
and the offset the broker acknowledges for it is where this run starts on that
partition. Outcomes and dead letters name the input partition and offset they came
from. (End offsets are not used: the embedded broker reports wrong ones.)

Two things the run cannot check for itself. It must see the worker's topic names,
partition count and message size limit (the same TRIBUTARY_* variables). And the
offline view starts from empty account state: against a worker that has already seen
this world, scores differ (the report says so) and the quality comparison is not like
for like; give the replay test a fresh worker, or its own topics and app id.

Reading back and checking live in tributary.replay_check. This module imports both
`offline` (the offline view of the scores) and `stream` (Kafka): only `tributary/` may.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from models.artifacts import DEFAULT_FRAUD_MODEL, SERVED_CHOICE, latest_version, resolve_model_name, served_root
from models.contracts import DeadLetterReason, TransactionEvent, decode
from models.errors import TributaryError
from models.model_store import load_fraud_model
from models.worlds import World, WorldError, WorldKind, open_world
from stream.kafka.client_args import aiokafka_args
from stream.kafka.readback import read_topics
from stream.kafka.topics import ensure_topics
from stream.replay import iter_wire_events, replay_world
from stream.settings import KafkaSettings, WorkerSettings
from stream.worker_process import start_worker
from tributary.replay_check import MARKER, Check, Collector, Expected, Report, check


class ReplayTestError(TributaryError):
    """Something the user can fix before the test can run (the message says what)."""


# ---------------------------------------------------------------------------------------
# Bad events

@dataclass(frozen=True)
class BadKind:
    name: str
    reason: DeadLetterReason
    value: Callable[[str, int], bytes | None]  # (event id, max message bytes) -> message value


def _event(event_id: str, **change) -> dict:
    """A transaction that passes the contract, to be broken in exactly one way."""
    fields = {"event_id": event_id, "event_time": "2025-01-06T00:00:00Z", "source_account": f"{event_id}-src",
              "destination_account": f"{event_id}-dst", "amount": 12.5, "type": "transfer"}
    fields.update(change)
    return {k: v for k, v in fields.items() if v is not None}


def _json(event: dict) -> bytes:
    return json.dumps(event).encode()


BAD_KINDS: tuple[BadKind, ...] = (
    BadKind("malformed_json", DeadLetterReason.MALFORMED_JSON, lambda e, _: _json(_event(e))[:-7]),
    BadKind("tombstone", DeadLetterReason.MALFORMED_JSON, lambda e, _: None),
    BadKind("missing_field", DeadLetterReason.SCHEMA_VIOLATION, lambda e, _: _json(_event(e, amount=None))),
    BadKind("negative_amount", DeadLetterReason.SCHEMA_VIOLATION, lambda e, _: _json(_event(e, amount=-12.5))),
    # json.dumps writes NaN, which Python's json (and pydantic, unless told not to) accept.
    BadKind("nan_amount", DeadLetterReason.SCHEMA_VIOLATION, lambda e, _: _json(_event(e, amount=math.nan))),
    BadKind("naive_time", DeadLetterReason.SCHEMA_VIOLATION,
            lambda e, _: _json(_event(e, event_time="2025-01-06T00:00:00"))),
    BadKind("unknown_enum", DeadLetterReason.SCHEMA_VIOLATION, lambda e, _: _json(_event(e, type="teleport"))),
    BadKind("oversized", DeadLetterReason.OVERSIZED,
            lambda e, limit: _json(_event(e, note="x" * (limit + 1024)))),
    # Valid in itself, but keyed by the planted key instead of its source_account.
    BadKind("wrong_key", DeadLetterReason.KEY_MISMATCH, lambda e, _: _json(_event(e))),
    BadKind("repeated_field", DeadLetterReason.MALFORMED_JSON, lambda e, _: _json(_event(e))[:-1] + b', "amount": 1}'),
    BadKind("boolean_version", DeadLetterReason.SCHEMA_VIOLATION,
            lambda e, _: _json(_event(e, schema_version=True))),
)


@dataclass(frozen=True)
class Planted:
    key: str  # carries the run's marker: how its dead letter is recognised
    kind: str
    reason: str
    value: bytes | None
    partition: int


def plan_bad_events(run_id: str, per_kind: int, partitions: int, max_message_bytes: int) -> list[Planted]:
    """`per_kind` events of every kind, spread over the partitions.

    At least one per partition (more than `per_kind` of the first kinds if needed): the
    first `partitions` of them mark where this run starts on each partition.
    """
    if per_kind < 1:
        raise ReplayTestError("--bad-per-kind must be at least 1")
    total = max(per_kind * len(BAD_KINDS), partitions)
    planted = []
    for i in range(total):
        kind = BAD_KINDS[i % len(BAD_KINDS)]
        event_id = f"{MARKER}-{run_id}-{i}"
        planted.append(Planted(f"{MARKER}:{run_id}:{kind.name}:{i}", kind.name, kind.reason.value,
                               kind.value(event_id, max_message_bytes),
                               # 0, 1, ... P-1 first; then shifted each round, so a kind visits several
                               (i + i // partitions) % partitions))
    return planted


# ---------------------------------------------------------------------------------------
# Running it

def _fraud_world(path: Path) -> World:
    world = open_world(path)
    if world.manifest.kind != WorldKind.FRAUD or "transactions" not in world.streams:
        raise WorldError(f"{path} is a {world.manifest.kind.value} world; the replay test needs a fraud world "
                         "with transactions (`tributary generate fraud --out DIR`)")
    world.read_labels("transactions")  # a clear error now rather than after the replay
    return world


@dataclass(frozen=True)
class Sent:
    start_offsets: dict[int, int]
    partitions: int
    seconds: float


async def _replay_and_plant(world: World, settings: KafkaSettings, run_id: str, per_kind: int) -> tuple[Sent, list[Planted]]:
    await ensure_topics(settings)  # the first contact with Kafka: BrokerUnreachable if none answers
    topic = settings.topics.transactions
    # acks=all and one record per request: the acknowledged offset is exact on any broker.
    size = max(settings.max_message_bytes * 2 + 4096, 1_048_576)  # room for the oversized event
    producer = AIOKafkaProducer(**aiokafka_args(settings), acks="all", linger_ms=0, max_batch_size=size,
                                max_request_size=size)
    await producer.start()
    started = time.monotonic()
    try:
        partitions = len(await producer.partitions_for(topic))
        planted = plan_bad_events(run_id, per_kind, partitions, settings.max_message_bytes)
        start_offsets: dict[int, int] = {}
        for bad in planted[:partitions]:  # one on each partition, before any event of the run
            meta = await producer.send_and_wait(topic, bad.value, key=bad.key.encode(), partition=bad.partition)
            start_offsets[meta.partition] = meta.offset
        replay = asyncio.ensure_future(replay_world(world, settings, progress=False))
        try:
            for bad in planted[partitions:]:  # the rest in among the replayed events, as long as it lasts
                await producer.send_and_wait(topic, bad.value, key=bad.key.encode(), partition=bad.partition)
                if not replay.done():
                    await asyncio.sleep(0.01)
            await replay
        finally:
            replay.cancel()  # if planting failed; a no-op once the replay is done
    finally:
        await producer.stop()
    return Sent(start_offsets, partitions, time.monotonic() - started), planted


def _transactions(world: World) -> list[TransactionEvent]:
    return [decode(e.value, TransactionEvent) for e in iter_wire_events(world) if e.stream == "transactions"]


def run_replay_test(world_dir: Path, model_dir: Path, settings: KafkaSettings, fraud_model: str = SERVED_CHOICE,
                    bad_per_kind: int = 3, margin: float = 0.05, timeout_s: float = 600.0,
                    worker: subprocess.Popen | None = None, echo: Callable[[str], None] = lambda _: None) -> Report:
    """Replay, plant, read back, check. `worker`, when given, is watched: if it exits,
    waiting stops. Raises WorldError, ArtifactError or ReplayTestError for what the user
    can fix (no world, no model, Kafka unreachable)."""
    world = _fraud_world(Path(world_dir))
    root = served_root(model_dir)  # as the worker reads it
    fraud_model = resolve_model_name(root, "fraud", fraud_model, DEFAULT_FRAUD_MODEL)  # as the worker resolves it
    latest_version(root, fraud_model)  # no model: say so before replaying anything
    events = _transactions(world)
    labels_table = world.read_labels("transactions").to_pydict()
    labels = dict(zip(labels_table["event_id"], labels_table["is_fraud"]))
    event_ids = [e.event_id for e in events]
    run_id = uuid.uuid4().hex[:12]

    echo(f"replay-test run {run_id}: {len(events):,} transactions from {world.root} to {settings.bootstrap_servers}")
    try:
        sent, planted = asyncio.run(_replay_and_plant(world, settings, run_id, bad_per_kind))
    except KafkaConnectionError:
        raise ReplayTestError(f"cannot reach Kafka at {settings.bootstrap_servers}; start it, or point "
                              "--bootstrap / TRIBUTARY_BOOTSTRAP_SERVERS at it") from None
    except MessageSizeTooLargeError:
        raise ReplayTestError(f"the broker refused the oversized test event ({settings.max_message_bytes + 1024:,} "
                              "bytes): its max.message.bytes is below TRIBUTARY_MAX_MESSAGE_BYTES, so the worker's "
                              "own limit never applies; lower TRIBUTARY_MAX_MESSAGE_BYTES") from None
    echo(f"replayed {len(events):,} transactions and planted {len(planted):,} bad events "
         f"in {sent.seconds:.1f} s; waiting for the worker (up to {timeout_s:.0f} s) ...")

    collector = Collector(settings.topics, sent.start_offsets, set(event_ids), len(planted))

    def until(batch) -> bool:
        return collector.feed(batch) or (worker is not None and worker.poll() is not None)

    started = time.monotonic()
    topics = settings.topics
    asyncio.run(read_topics(settings, [topics.outcomes, topics.dead_letters, topics.fraud_alerts], expected=0,
                            timeout_s=timeout_s, settle_s=2.0, until=until))
    waited = time.monotonic() - started
    got = collector.readback

    # The offline evaluation uses the version the worker served (it may be older than the latest).
    served = {(o.get("model_name"), o.get("model_version")) for o in got.outcomes}
    notes = []
    path = latest_version(root, fraud_model)
    if len(served) == 1:
        name, version = next(iter(served))
        if name != fraud_model or not (root / name / version).is_dir():
            raise ReplayTestError(f"the worker scored with {name} version {version}, which is not under {root}; "
                                  "pass the worker's --model-dir and --fraud-model")
        path = root / name / version
    elif served:
        notes.append(f"the worker switched model versions during the run; compared with the latest, {path.name}")
    from offline.serving_view import worker_view_scores  # torch and the training loop: only now

    loaded = load_fraud_model(path)
    offline = worker_view_scores(events, loaded, sent.partitions)
    expected = Expected(event_ids, labels, {p.key: p.reason for p in planted}, offline, loaded.threshold,
                        f"{loaded.manifest.name} {loaded.version}")
    report = check(expected, got, margin)
    report.figures[:0] = [("run id (in planted keys)", run_id),
                          ("bootstrap servers", settings.bootstrap_servers),
                          ("input partitions", f"{sent.partitions}"),
                          ("replay + planting / waiting (s)", f"{sent.seconds:.1f} / {waited:.1f}")]
    if got.unreadable:
        notes.append(f"{got.unreadable} output records were not JSON (not counted)")
    if worker is not None and worker.poll() is not None:
        report.checks.append(Check("the worker kept running", False, f"it exited with {worker.returncode}"))
    report.notes[:0] = notes
    return report


@contextlib.contextmanager
def running_worker(settings: WorkerSettings, log_path: Path | None = None) -> Iterator[subprocess.Popen]:
    """`tributary worker` in a subprocess for the duration; its output goes to `log_path`."""
    log = open(log_path, "w") if log_path else tempfile.TemporaryFile("w+")
    process = start_worker(settings, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def run_embedded(world_dir: Path, model_dir: Path, fraud_model: str = SERVED_CHOICE, bad_per_kind: int = 3,
                 margin: float = 0.05, timeout_s: float = 600.0, echo: Callable[[str], None] = lambda _: None) -> Report:
    """The replay test on an embedded broker with a worker of its own (no Kafka needed)."""
    from stream.kafka.embedded_broker import EmbeddedBroker

    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="tributary-replay-test-") as tmp:
        settings = WorkerSettings(bootstrap_servers=broker.bootstrap, model_dir=str(model_dir),
                                  fraud_model=fraud_model, metrics_port=0, batch_wait_ms=10)
        asyncio.run(ensure_topics(settings))
        echo(f"embedded broker on {broker.bootstrap}; starting a worker")
        log_path = Path(tmp) / "worker.log"
        with running_worker(settings, log_path) as worker:
            report = run_replay_test(world_dir, model_dir, settings, fraud_model, bad_per_kind, margin, timeout_s,
                                     worker=worker, echo=echo)
        if not report.passed:
            tail = log_path.read_text()[-2000:].strip()
            if tail:
                report.notes.append("worker log (tail):\n" + tail)
        return report
