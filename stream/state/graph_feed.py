"""Every partition of `transactions`, read from its first offset by a consumer of no group.

What Kafka Streams does for a global table, for the merge in stream.state.graph_merge:
a plain consumer assigned all partitions (no group, nothing committed) buffers each
partition's records in offset order. The event loop fetches; the scoring thread takes.
A partition's fetching pauses while `max_buffered` records of it wait, so a fast feed
never outgrows memory; the others go on (the merge may need exactly them).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.kafka.client_args import aiokafka_args
from stream.kafka.connect import started
from stream.pipeline.records import RawRecord
from stream.settings import WorkerSettings

log = logging.getLogger("tributary.worker")


class KafkaGraphFeed:
    """Implements `stream.state.graph_merge.GraphFeed` over a topic's partitions."""

    def __init__(self, settings: WorkerSettings, topic: str, max_buffered: int = 20_000):
        self.settings = settings
        self.topic = topic
        self.partitions = settings.partitions
        self.max_buffered = max_buffered
        self._partitions = [TopicPartition(topic, p) for p in range(self.partitions)]
        self._buffers: list[deque[RawRecord]] = [deque() for _ in range(self.partitions)]
        self._next_offset = [0] * self.partitions  # after the last buffered record
        self._changed = threading.Condition()
        self._rewind_asked = False
        self._rewind_to: list[int] | None = None  # where the asked rewind goes (None: the beginning)
        self._generation = 0  # bumped by every rewind
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[Any] | None = None
        self.closed = False

    async def start(self) -> None:
        # The same long-poll as the worker's own consumer: the embedded broker answers a waiting
        # fetch only when it times out, so the merge would wait that long for every partition.
        wait = {"fetch_max_wait_ms": self.settings.fetch_max_wait_ms} if self.settings.fetch_max_wait_ms else {}
        consumer = AIOKafkaConsumer(**aiokafka_args(self.settings), group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", **wait)
        self._consumer = await started(consumer, self.settings)
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)
        self._task = asyncio.ensure_future(self._fetch())

    async def stop(self) -> None:
        self.closed = True
        with self._changed:
            self._changed.notify_all()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    async def _fetch(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self.closed:
            try:
                if self._rewind_asked:
                    consumer.resume(*self._partitions)
                    to = self._rewind_to
                    if to is None:
                        await consumer.seek_to_beginning(*self._partitions)
                    else:
                        for tp, offset in zip(self._partitions, to):
                            consumer.seek(tp, offset)
                    with self._changed:
                        for buffer in self._buffers:
                            buffer.clear()
                        self._next_offset = list(to) if to is not None else [0] * self.partitions
                        self._rewind_asked = False
                        self._generation += 1
                        self._changed.notify_all()
                self._pause_full(consumer)
                fetched = await consumer.getmany(timeout_ms=100, max_records=5000)
            except asyncio.CancelledError:
                raise
            except Exception:  # the broker away: aiokafka reconnects; keep asking
                log.warning("the graph feed could not fetch; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            if self._rewind_asked:
                continue  # fetched before the seek: thrown away
            for tp, messages in fetched.items():
                buffer = self._buffers[tp.partition]
                for m in messages:
                    buffer.append(RawRecord(m.topic, m.partition, m.offset, m.key, m.value,
                                            m.timestamp if m.timestamp else None))
                if messages:
                    self._next_offset[tp.partition] = messages[-1].offset + 1
            with self._changed:
                self._changed.notify_all()

    def _pause_full(self, consumer: AIOKafkaConsumer) -> None:
        """Pause partitions with `max_buffered` records waiting; resume them at half."""
        paused = consumer.paused()
        for tp, buffer in zip(self._partitions, self._buffers):
            if tp not in paused and len(buffer) >= self.max_buffered:
                consumer.pause(tp)
            elif tp in paused and len(buffer) < self.max_buffered // 2:
                consumer.resume(tp)

    # -- the scoring thread's side ---------------------------------------------------

    def peek(self, partition: int) -> RawRecord | None:
        buffer = self._buffers[partition]
        return buffer[0] if buffer else None

    def pop(self, partition: int) -> RawRecord:
        return self._buffers[partition].popleft()

    def caught_up(self, partition: int) -> bool:
        if self._consumer is None:
            return False
        end = self._consumer.highwater(self._partitions[partition])
        return end is not None and self._next_offset[partition] >= end and not self._buffers[partition]

    def wait(self, timeout_s: float) -> None:
        with self._changed:
            self._changed.wait(timeout_s)

    def rewind(self, offsets: list[int] | None = None) -> None:
        with self._changed:
            generation = self._generation
            self._rewind_to = list(offsets) if offsets is not None else None
            self._rewind_asked = True
            while self._generation == generation and not self.closed:
                self._changed.wait(0.1)

    def buffered(self) -> int:
        return sum(len(b) for b in self._buffers)
