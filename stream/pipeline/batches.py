"""One agent's micro-batches through the commit protocol: admit, process, publish, ack.

For each batch the agent hands over (stream.state.commit_protocol has the full order):
    1. admit: the offset guard passes each partition's records in offset order, holding
       back what follows a hole (stream.kafka.offset_guard);
    2. process: the stage runs in the worker's one thread, so the event loop keeps
       heartbeating and fetching while torch works, and batches are processed in order;
    3. publish: outputs and drift reports, then the table's changelog, every delivery
       awaited; a batch publishes only after the one before it (in order);
    4. ack: the events, so that Faust may commit past them.
`depth` batches are in flight: while batch N publishes, N+1 is processed and N+2 is
buffered by Faust. A batch that cannot be published is never acked: its events are
read again by whichever worker holds the partition next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, Protocol

from models.contracts import DeadLetterReason, encode
from stream.kafka.offset_guard import OffsetGuard
from stream.kafka.publisher import PublishAbandoned, Publisher, PublishFailed
from stream.monitoring.metrics import WorkerMetrics
from stream.pipeline.records import Output, RawRecord, StageInterrupted, StageResult, dead_letter
from stream.settings import TopicNames
from stream.state.commit_protocol import PartitionedState

log = logging.getLogger("tributary.worker")

Ack = Callable[[Any], Awaitable[Any]]  # acks one Faust event


class Stage(Protocol):
    """What a pipeline runs: a pure function of raw records and the stage's own state."""

    metric_topic: str  # labels the batch's metrics

    @property
    def state(self) -> PartitionedState | None:
        """The table the stage keeps (None: none)."""

    def process(self, records: list[RawRecord]) -> StageResult: ...


def raw_records(events: list) -> list[RawRecord]:
    return [RawRecord(e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value,
                      int(e.message.timestamp * 1000) if e.message.timestamp else None) for e in events]


class BatchPipeline:
    """Runs one stage's batches; `table` names the table it keeps and `changelog_topic` is
    that table's changelog (both None: no table).

    `on_processed(records)` hears of every batch acked, `on_fatal(reason)` of outputs that
    cannot be published (the worker then stops; see TributaryWorker.fail).
    """

    def __init__(self, stage: Stage, table: str | None, changelog_topic: str | None, *, executor: Executor,
                 publisher: Publisher,
                 guard: OffsetGuard, metrics: WorkerMetrics, topics: TopicNames, depth: int,
                 on_processed: Callable[[list[RawRecord]], None], on_fatal: Callable[[str], None]):
        self.stage = stage
        self.table = table
        self.changelog_topic = changelog_topic
        self._executor = executor
        self._publisher = publisher
        self._guard = guard
        self._metrics = metrics
        self._topics = topics
        self._depth = depth
        self._on_processed = on_processed
        self._on_fatal = on_fatal
        self._inflight: deque[asyncio.Future] = deque()

    async def submit(self, events: list, ack: Ack) -> None:
        """Hand a batch to the pipeline; returns once it has a slot, so Faust buffers the
        next batch meanwhile. Never raises (an exception would stop the agent)."""
        clock = {"to_pipeline": time.time()}  # the end of each latency phase (metrics.LATENCY_PHASES)
        try:
            admitted = await self._guard.admit(events)
        except Exception:  # a bug in the guard must not stop the agent. The stages still skip what
            # was published already; two copies of a record in one batch, which only the guard
            # leaves out, would fail that batch into dead letters.
            log.exception("offset check failed; processing the batch as it came")
            admitted = events
        if len(admitted) < len(events):
            self._metrics.held_back.inc(len(events) - len(admitted))
            if not admitted:
                return
        while len(self._inflight) >= self._depth:
            await asyncio.wait({self._inflight[0]})
        records = raw_records(admitted)
        clock["queued"] = time.time()
        # Into the one-thread executor now, so batches are processed in submission order.
        processing = asyncio.get_running_loop().run_in_executor(self._executor, self.stage.process, records)
        previous = self._inflight[-1] if self._inflight else None
        task = asyncio.ensure_future(self._complete(admitted, records, processing, previous, ack, clock))
        self._inflight.append(task)
        task.add_done_callback(self._inflight.remove)

    async def drain(self, timeout_s: float) -> None:
        """Let the batches in flight finish publishing (before the producers stop)."""
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=timeout_s)

    async def _complete(self, events: list, records: list[RawRecord], processing: asyncio.Future,
                        previous: asyncio.Future | None, ack: Ack, clock: dict[str, float]) -> None:
        try:
            result = await self._result(records, processing)
            clock["processing"] = time.time()
            if previous is not None:
                await asyncio.wait({previous})  # publish in batch order
            clock["publish_order"] = time.time()
            await self._publish(records, result, clock)
            for event in events:
                await ack(event)
            self._on_processed(records)
        except asyncio.CancelledError:  # shutting down: unacked events are redelivered
            raise
        except (PublishAbandoned, StageInterrupted) as stopped:
            log.info("%s; its %d events are read again after the restart", stopped, len(records))
        except PublishFailed as error:  # unacked, so never committed: a restarted worker scores them
            self._on_fatal(str(error))
        except Exception:  # a bug: these events stay unacked, so offsets are never committed past them
            log.exception("publishing a batch of %d failed; its events will be redelivered after a restart",
                          len(records))

    async def _result(self, records: list[RawRecord], processing: asyncio.Future) -> StageResult:
        try:
            return await processing
        except StageInterrupted:
            raise
        except Exception as error:  # a bug, not bad input: fail these events loudly, keep going
            log.exception("batch of %d failed; dead-lettering it", len(records))
            result = StageResult(consumed=len(records))
            for record in records:
                letter = dead_letter(record, DeadLetterReason.PROCESSING_ERROR, type(error).__name__, str(error))
                result.add_dead_letter(self._topics.dead_letters, record, letter)
            return result

    async def _publish(self, records: list[RawRecord], result: StageResult, clock: dict[str, float]) -> None:
        """Outputs, then the changelog, then the batch's metrics."""
        started = time.perf_counter()
        result.outputs += [Output(self._topics.drift_reports, r.monitor.encode(), encode(r)) for r in result.reports]
        await self._publisher.publish(result.outputs)
        # Durable before the next batch: otherwise a crash could keep batch N's outputs
        # but lose batch N-1's state, and redelivered events would see an older state.
        # (Faust's own producer.flush() gives up after 0.1 s per message, so it cannot
        # promise this; a producer of our own, awaited, can.)
        if self.changelog_topic is not None:
            await self._publisher.publish_changelog(self.changelog_topic, result.changelog)
        result.timings["publish"] = time.perf_counter() - started
        self._metrics.record_batch(self.stage.metric_topic, result, Counter(record.topic for record in records))
        clock["publishing"] = time.time()
        self._metrics.record_latency(records, clock)
        if self.table is not None and self.stage.state is not None:
            self._metrics.state_entities.labels(self.table).set(sum(self.stage.state.entities().values()))
