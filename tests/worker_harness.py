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
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream.kafka.embedded_broker import EMBEDDED_BROKER_SETTINGS, free_port
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

Position = tuple[str, int, int]  # topic, partition, offset
# Settings for a worker that a test will catch in the middle of a batch: small batches
# make many of them in a row, each with its moment between outputs and changelog marker.
MANY_BATCHES = {"batch_max": 32}
# What `--embedded-broker-safe` sets, with a shorter session: the embedded broker holds
# every group join for half the session, and a killed member's partitions move only when
# its session ends, so each start and each kill costs seconds of it. The heartbeat stays
# at a sixth of the session, where one late beat cannot cost a member its partitions.
TEST_BROKER_SETTINGS = {**EMBEDDED_BROKER_SETTINGS, "session_timeout_s": 6.0, "heartbeat_interval_s": 1.0}


# Every test worker's graph checkpoints, removed when the test run ends.
_GRAPH_CHECKPOINTS = tempfile.TemporaryDirectory(prefix="tributary-test-graph-")


def worker_settings(bootstrap: str, app_id: str, model_dir: Path, **overrides) -> WorkerSettings:
    """Settings of a test worker whose topics are its own: `<name>-<app_id>`, so tests
    that share a module's broker never read each other's records."""
    # Graph checkpoints of its own: workers of one test share them, other tests never see them.
    base = WorkerSettings(bootstrap_servers=bootstrap, app_id=app_id, model_dir=str(model_dir),
                          fraud_model="fusion-gated", metrics_port=0, batch_wait_ms=10, **TEST_BROKER_SETTINGS,
                          graph_checkpoint_dir=tempfile.mkdtemp(prefix=f"{app_id}-", dir=_GRAPH_CHECKPOINTS.name))
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
        self.process = start_worker_process(self.settings, embedded_broker=False, log_level=level, stdout=log,
                                            stderr=subprocess.STDOUT)
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
