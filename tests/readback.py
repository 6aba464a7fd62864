"""Reading back what workers published, as they publish it: outputs and changelog markers.

For the integration and fault tests (tests/worker_harness.py starts the workers and
feeds them). `freeze_in_mid_batch` places a fault in the middle of the commit protocol
by reading both while the worker is frozen.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.settings import WorkerSettings
from tests.worker_harness import MAX_TEST_RECORD_BYTES, OUTPUT_TOPICS, WAIT_S, Position, Worker

# The embedded broker answers a waiting fetch only when its wait ends: readers that wait
# long see new records late (and a kill meant for mid-batch lands after the batch).
FETCH_WAIT_MS = 10


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

    def wait_for_alerts(self, workers: Iterable[Worker] = (), timeout_s: float = WAIT_S) -> None:
        """Until every alert an outcome read so far names (its `alert_id`) has been read too.
        A batch's alerts and outcomes go to different topics, so the last outcomes can be
        read before the last alerts are."""
        def missing() -> set[str]:
            named = {o["alert_id"] for found in self.outcomes.values() for o in found if o.get("alert_id")}
            return named - {a["alert_id"] for a in self.alerts}
        self.wait_until(lambda: not missing(), "the alerts the outcomes name", workers, timeout_s,
                        seen=lambda: f"{len(missing()):,} not read yet")

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
                        offset = int.from_bytes(record.value[:8], "little", signed=True)  # then the payload
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


