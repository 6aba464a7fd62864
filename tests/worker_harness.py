"""Run workers as users do, feed them records, and read back what they published.

For the integration and fault tests. Faults are placed by the input, never by a clock:
a test produces a slice of records, learns exactly where each landed (topic,
partition, offset), waits for the outcomes of exactly those (a condition, with a
timeout generous enough for a slow machine), and only then kills, cuts or adds a
worker. Every wait that fails says what it awaited, what it saw, and what the workers
logged.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream.kafka.embedded_broker import free_port
from stream.kafka.topics import ensure_topics
from stream.settings import WorkerSettings
from stream.worker_process import start_worker as start_worker_process

# Generous on purpose: a wait ends as soon as its condition holds, so only a failing
# test (or a much slower machine) ever waits this long.
WAIT_S = 240.0
INPUT_TOPICS = ("transactions", "gifts", "donor_profiles", "donor_relationships", "fraud_labels")
OUTPUT_TOPICS = ("outcomes", "dead_letters", "fraud_alerts", "donor_segments")
# Records of up to this size travel in the tests (a 1 MiB key, a 900 KiB value, framing).
MAX_TEST_RECORD_BYTES = 4 * 1024 * 1024

# The embedded broker answers a waiting fetch only when its wait ends: readers that wait
# long see new records late (and a kill meant for mid-batch lands after the batch).
FETCH_WAIT_MS = 10

Position = tuple[str, int, int]  # topic, partition, offset
# Settings for a worker that a test will catch in the middle of a batch: small batches
# make many of them in a row, each with its moment between outputs and changelog marker.
MANY_BATCHES = {"batch_max": 32}


def worker_settings(bootstrap: str, app_id: str, model_dir: Path, **overrides) -> WorkerSettings:
    """Settings of a test worker whose topics are its own: `<name>-<app_id>`, so tests
    that share a module's broker never read each other's records."""
    base = WorkerSettings(bootstrap_servers=bootstrap, app_id=app_id, model_dir=str(model_dir),
                          fraud_model="fusion-gated", metrics_port=0, batch_wait_ms=10)
    topics = base.topics.model_copy(update={name: f"{getattr(base.topics, name)}-{app_id}"
                                            for name in type(base.topics).model_fields})
    settings = base.model_copy(update={"topics": topics, **overrides})
    asyncio.run(ensure_topics(settings))
    return settings


class Worker:
    """A `tributary worker` subprocess with its log in a file and /metrics on a free port.

    The log goes to a file, not a pipe: nobody reads a pipe until the worker stops, and
    a full one (64 KiB) would block the worker's event loop in mid-test.
    TEST_WORKER_LOG_LEVEL=info shows more of what a worker did when a test fails.
    """

    def __init__(self, settings: WorkerSettings, name: str = "worker"):
        self.name = name
        self.settings = settings.model_copy(update={"metrics_port": free_port()})
        level = os.environ.get("TEST_WORKER_LOG_LEVEL", "warning")
        log = tempfile.NamedTemporaryFile("w", prefix=f"{settings.app_id}-{name}-", suffix=".log", delete=False)
        self.log_path = Path(log.name)
        self.process = start_worker_process(self.settings, log_level=level, stdout=log, stderr=subprocess.STDOUT)
        log.close()  # the child has its own copy of the descriptor

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when a machine dies."""
        self.process.kill()
        self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: the worker is frozen where it is (its outputs in Kafka stop changing)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, then wait for the exit; returns the exit code (SIGKILL past the timeout)."""
        if self.alive():
            self.resume()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        """The worker's /metrics as {'name{labels}': value}; {} while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.settings.metrics_port}/metrics", timeout=2) as answer:
                text = answer.read().decode()
        except OSError:
            return {}
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def assigned(self) -> set[tuple[str, int]]:
        """The input partitions the worker says it holds (tributary_partition_assigned)."""
        held = set()
        for name, value in self.metrics().items():
            if name.startswith("tributary_partition_assigned{") and value == 1:
                labels = dict(part.split("=", 1) for part in name[name.index("{") + 1:-1].split(","))
                held.add((labels["topic"].strip('"'), int(labels["partition"].strip('"'))))
        return held

    def stacks(self) -> None:
        """Ask the worker to log every thread's and task's stack (mode's SIGUSR1)."""
        if self.alive():
            self.process.send_signal(signal.SIGUSR1)
            time.sleep(3)


@dataclass
class Record:
    topic: str
    key: bytes | None
    value: bytes | None


async def _produce(settings: WorkerSettings, records: list[Record], rate: float | None = None) -> list[Position]:
    # One record per batch: after a multi-record batch the embedded broker reports a wrong
    # end offset (../shared/BROKER.md), and a worker restarted after the last write then
    # does not see the tail of the topic. Real Kafka has no such bug.
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=0, max_batch_size=1,
                                max_request_size=MAX_TEST_RECORD_BYTES)
    await producer.start()
    try:
        sent, started = [], time.monotonic()
        for i, r in enumerate(records):
            if rate and (ahead := started + i / rate - time.monotonic()) > 0:
                await asyncio.sleep(ahead)
            sent.append(await producer.send(r.topic, r.value, key=r.key))
        return [(m.topic, m.partition, m.offset) for m in await asyncio.gather(*sent)]
    finally:
        await producer.stop()


def produce(settings: WorkerSettings, records: list[Record]) -> list[Position]:
    """Send `records` in order; where each one landed."""
    return asyncio.run(_produce(settings, records))


class BackgroundProducer(threading.Thread):
    """Sends `records` in order at `rate` records/s from a thread, so that something else
    (a worker joining, say) happens while the stream flows; `join()` returns the positions."""

    def __init__(self, settings: WorkerSettings, records: list[Record], rate: float):
        super().__init__(name="test-producer", daemon=True)
        self._settings, self._records, self._rate = settings, records, rate
        self._positions: list[Position] = []
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._positions = asyncio.run(_produce(self._settings, self._records, self._rate))
        except BaseException as error:  # handed to the test thread by join()
            self._error = error

    def join(self, timeout: float | None = WAIT_S) -> list[Position]:
        super().join(timeout)
        if self._error is not None:
            raise self._error
        assert not self.is_alive(), f"the producer did not finish within {timeout} s"
        return self._positions


class LoopThread:
    """An event loop running in its own thread, for the test's own Kafka clients: their
    background work (metadata, reconnects after an outage) goes on between the test's
    calls, as in any client program, and closing them never leaves tasks behind."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-clients", daemon=True)
        self._thread.start()

    def run(self, coroutine, timeout_s: float = WAIT_S):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def close(self, client) -> None:
        """Stop `client`, then the loop. What a broken connection left behind is cancelled."""
        async def stop():
            try:
                await asyncio.wait_for(client.stop(), 30)
            except (Exception, asyncio.CancelledError):
                pass  # after an outage a fetch may still be backing off; nothing to keep
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        try:
            self.run(stop(), 60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@dataclass
class Readback:
    """What the workers published, read from the start of the output topics and kept up to date."""

    settings: WorkerSettings
    outcomes: dict[Position, list[dict]] = field(default_factory=lambda: defaultdict(list))
    dead_letters: dict[Position, list[dict]] = field(default_factory=lambda: defaultdict(list))
    alerts: list[dict] = field(default_factory=list)
    segment_updates: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self._clients = LoopThread()
        self._consumer = self._clients.run(self._start())

    async def _start(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, enable_auto_commit=False,
                                    auto_offset_reset="earliest", max_partition_fetch_bytes=MAX_TEST_RECORD_BYTES,
                                    fetch_max_wait_ms=FETCH_WAIT_MS)
        await consumer.start()
        topics = [getattr(self.settings.topics, name) for name in OUTPUT_TOPICS]
        partitions = [TopicPartition(t, p) for t in topics for p in range(self.settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        return consumer

    def poll(self, timeout_ms: int = 200) -> None:
        batches = self._clients.run(self._consumer.getmany(timeout_ms=timeout_ms, max_records=20_000))
        topics = self.settings.topics
        for records in batches.values():
            for record in records:
                value = json.loads(record.value)
                if record.topic == topics.outcomes:
                    self.outcomes[(value["topic"], value["partition"], value["offset"])].append(value)
                elif record.topic == topics.dead_letters:
                    self.dead_letters[(value["topic"], value["partition"], value["offset"])].append(value)
                elif record.topic == topics.fraud_alerts:
                    self.alerts.append(value)
                else:
                    self.segment_updates.append(value)

    def drain(self) -> None:
        """Read until two polls in a row bring nothing (the topics have stopped changing)."""
        quiet = 0
        while quiet < 2:
            before = self.count()
            self.poll()
            quiet = quiet + 1 if self.count() == before else 0

    def count(self) -> int:
        return sum(map(len, self.outcomes.values())) + sum(map(len, self.dead_letters.values())) + \
            len(self.alerts) + len(self.segment_updates)

    def settled(self, positions: Iterable[Position]) -> list[Position]:
        """The positions that have an outcome or a dead letter."""
        return [p for p in positions if p in self.outcomes or p in self.dead_letters]

    def wait_for(self, positions: list[Position], what: str, workers: Iterable[Worker] = (),
                 timeout_s: float = WAIT_S) -> None:
        """Until every position has an outcome or a dead letter."""
        self.wait_until(lambda: len(self.settled(positions)) == len(positions), what, workers, timeout_s,
                        seen=lambda: f"{len(self.settled(positions)):,} of {len(positions):,} settled; "
                                     f"unsettled: {_ranges(set(positions) - set(self.settled(positions)))}")

    def wait_until(self, condition: Callable[[], bool], what: str, workers: Iterable[Worker] = (),
                   timeout_s: float = WAIT_S, seen: Callable[[], str] = lambda: "") -> None:
        """Poll the outputs until `condition()`; fail saying what was awaited and seen, with the
        workers' logs, if it does not hold within `timeout_s` or a running worker exits."""
        workers = list(workers)
        running = [w for w in workers if w.alive()]
        deadline = time.monotonic() + timeout_s
        while not condition():
            dead = [w for w in running if not w.alive()]
            if dead or time.monotonic() > deadline:
                why = f"{dead[0].name} exited with code {dead[0].process.returncode}" if dead else \
                    f"not within {timeout_s:.0f} s"
                for w in workers:
                    w.stacks()
                logs = "\n".join(f"--- {w.name} log (tail):\n{w.log()[-6000:]}" for w in workers)
                raise AssertionError(f"awaiting {what}: {why}. {seen()}\n{logs}")
            self.poll()

    def close(self) -> None:
        self._clients.close(self._consumer)


class ChangelogMarkers:
    """The "outputs published up to offset O" markers a worker writes to a table's
    changelog (stream.state), read as they come: {(input topic, partition): O}."""

    def __init__(self, settings: WorkerSettings, table: str, topic_of_marker: Callable[[bytes], str | None]):
        self._topic_of_marker = topic_of_marker
        self._clients = LoopThread()
        self.published: dict[tuple[str, int], int] = {}
        self._consumer = self._clients.run(self._start(settings.bootstrap_servers, settings.changelog_topic(table),
                                                       settings.partitions))

    async def _start(self, bootstrap: str, topic: str, partitions: int) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    max_partition_fetch_bytes=MAX_TEST_RECORD_BYTES, fetch_max_wait_ms=FETCH_WAIT_MS)
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return consumer

    def drain(self) -> None:
        while batches := self._clients.run(self._consumer.getmany(timeout_ms=300, max_records=50_000)):
            for records in batches.values():
                for record in records:
                    topic = self._topic_of_marker(record.key)
                    if topic is not None:
                        offset = int.from_bytes(record.value, "little", signed=True)
                        self.published[(topic, record.partition)] = offset

    def close(self) -> None:
        self._clients.close(self._consumer)


def freeze_in_mid_batch(worker: Worker, readback: Readback, markers: ChangelogMarkers, positions: list[Position],
                        timeout_s: float = WAIT_S) -> int:
    """Leave `worker` frozen (SIGSTOP) at a moment its outputs for some of `positions` are
    published and their batch's changelog marker is not: the middle of the commit protocol.

    Each time new outputs of `positions` appear, the worker is frozen and its published
    outputs are compared with its changelog markers, all read while nothing moves; the
    first time outputs run ahead of the markers, it stays frozen. Returns how many
    positions are ahead. Fails if `positions` all settle first: then every moment looked
    at was between batches, which the input (hundreds of small batches in a row: give
    the worker MANY_BATCHES and the positions all at once) makes practically impossible.
    """
    deadline = time.monotonic() + timeout_s
    seen = 0
    while time.monotonic() < deadline and worker.alive():
        readback.poll()
        if len(readback.settled(positions)) == seen:
            continue
        worker.pause()
        readback.drain()
        markers.drain()
        settled = readback.settled(positions)
        ahead = [(t, p, o) for t, p, o in settled if o > markers.published.get((t, p), -1)]
        if ahead:
            return len(ahead)
        worker.resume()
        if len(settled) == len(positions):
            raise AssertionError("every output was covered by a changelog marker each time the worker was "
                                 "frozen: it was never caught in the middle of a batch")
        seen = len(settled)
    raise AssertionError(f"no outputs of the awaited records within {timeout_s:.0f} s "
                         f"(worker alive: {worker.alive()})\n{worker.log()[-6000:]}")


def kill_in_mid_batch(worker: Worker, readback: Readback, markers: ChangelogMarkers,
                      positions: list[Position]) -> int:
    """SIGKILL `worker` in the middle of a batch (see freeze_in_mid_batch); how many of
    `positions` had outputs ahead of the changelog."""
    ahead = freeze_in_mid_batch(worker, readback, markers, positions)
    worker.kill()
    return ahead


def _ranges(positions: set[Position], most: int = 8) -> str:
    by_partition = defaultdict(list)
    for topic, partition, offset in positions:
        by_partition[(topic, partition)].append(offset)
    parts = [f"{t}[{p}] {min(o)}..{max(o)} ({len(o)})" for (t, p), o in sorted(by_partition.items())]
    return ", ".join(parts[:most]) or "none"


def end_offsets(positions: Iterable[Position]) -> dict[tuple[str, int], int]:
    """Per partition, one past the highest produced offset: what the group must commit."""
    ends: dict[tuple[str, int], int] = {}
    for topic, partition, offset in positions:
        ends[(topic, partition)] = max(ends.get((topic, partition), 0), offset + 1)
    return ends


async def _committed(settings: WorkerSettings, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=settings.app_id,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp: await consumer.committed(TopicPartition(*tp)) or 0 for tp in partitions}
    finally:
        await consumer.stop()


def wait_for_commits(settings: WorkerSettings, ends: dict[tuple[str, int], int], workers: Iterable[Worker] = (),
                     timeout_s: float = 60.0) -> float:
    """Until the group's committed offsets reach `ends` on every partition; seconds it took."""
    started = time.monotonic()
    while True:
        committed = asyncio.run(_committed(settings, ends))
        if all(committed[tp] >= end for tp, end in ends.items()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            behind = {f"{t}[{p}]": f"{committed[(t, p)]} of {end}" for (t, p), end in ends.items()
                      if committed[(t, p)] < end}
            logs = "\n".join(f"--- {w.name} log (tail):\n{w.log()[-4000:]}" for w in workers)
            raise AssertionError(f"committed offsets still behind after {timeout_s:.0f} s: {behind}\n{logs}")
        time.sleep(0.5)


def same_outcomes(copies: list[dict]) -> bool:
    """Duplicates (after a restart) say the same: same alert id, scores within float noise
    (a rescored event sits in a batch of another size, and batched matrix products round
    differently)."""
    first = copies[0]
    return all(c.get("alert_id") == first.get("alert_id") and set(c["scores"]) == set(first["scores"])
               and all(abs(c["scores"][k] - first["scores"][k]) <= 1e-5 for k in first["scores"]) for c in copies)


def no_traceback(*workers: Worker) -> None:
    for worker in workers:
        log = worker.log()
        assert "Traceback" not in log, f"{worker.name} logged a traceback:\n{log[-6000:]}"
