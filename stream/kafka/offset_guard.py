"""Hand the pipeline each partition's records in offset order, with no silent holes.

The stages rely on it: state is built in offset order, and a record at or below a
partition's "outputs published up to" marker counts as already published. Faust
(faust-streaming 0.15) can break it right after a restart or a rebalance: its fetcher
drops records fetched for a partition it has just paused for table recovery (the
consumer's position has already moved past them), then resumes the partition, delivers
what follows the hole, and only afterwards seeks back to the committed offset. The
records after the hole were then processed first, the marker moved past the hole, and
the re-read records in it looked published: they never got an outcome. Seen on the
embedded broker as a block of one fetch (372 records) per partition without outcomes
after a kill -9 and restart.

So, per partition, the guard keeps the next offset it expects (from the group's
committed offset when it first sees the partition in an assignment) and lets a record
through only if it is at or below that offset (a redelivery, which the stages handle)
or if the broker confirms there is nothing to read between the two (offsets a consumer
never sees: transaction markers, compacted records). A second copy of a record within
one batch (the re-read after a seek overtaking the queued first copy) is left out: the
stages recognise copies of earlier batches only. Otherwise it holds back the rest of
that partition's records in the batch, unacked and unreferenced, and seeks the consumer
back to the expected offset, so they come again in order. A held-back record is never
lost: it is not acked, so no commit passes it, and the seek brings it back. A hole with
nothing after it is found by `watch` (the consumer fetched further than the pipeline got).

Records fetched before a seek keep arriving for a while after it (Faust's batch and the
agent's queue hold thousands). They are held back too, without seeking again: each seek
would restart the re-read, and with a queue that is never empty the re-read would never
arrive. Once a record at or after the sought offset is admitted, the re-read is here and
`settled(topic, partition)` is called (the worker lets Faust count that partition's read
offset again; see `stream.kafka.faust_compat.seek_back`). A seek that is lost is found
by `watch`, which seeks again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger("tributary.offsets")

Partition = tuple[str, int]


class OffsetGuard:
    """`probe` is a consumer of the group (never subscribed: it reads committed offsets and
    fetches single records); `seek(topic, partition, offset)` moves the worker's consumer
    back; `settled(topic, partition)` is told when the records sought back have arrived."""

    def __init__(self, probe: Callable[[], Awaitable[AIOKafkaConsumer]],
                 seek: Callable[[str, int, int], Awaitable[None]],
                 settled: Callable[[str, int], None] = lambda topic, partition: None, probe_timeout_ms: int = 2000):
        self._probe = probe
        self._seek = seek
        self._settled = settled
        self._sought: dict[Partition, int] = {}  # partitions sought back, to the offset, until the re-read arrives
        self._probe_timeout_ms = probe_timeout_ms
        self._expected: dict[Partition, int] = {}
        self._watched: dict[Partition, int] = {}  # expected offsets at the last watch
        self.held_back = 0  # records held back since start (a metric reads it)
        self.repeated = 0  # second copies of a record within one batch, left out

    def forget(self, partitions: Iterable[Partition]) -> None:
        """A rebalance moved these partitions: their next offset comes from the commit again."""
        for partition in partitions:
            self._expected.pop(partition, None)
            self._watched.pop(partition, None)
            self._sought.pop(partition, None)

    async def admit(self, events: list) -> list:
        """The events the pipeline may process now, in their order; the others are held back."""
        admitted, blocked = [], set()
        taken: set[tuple[Partition, int]] = set()  # (partition, offset) admitted from this batch
        for event in events:
            message = event.message
            partition = (message.topic, message.partition)
            if partition in blocked:
                self.held_back += 1
                continue
            if (partition, message.offset) in taken:
                # A second copy in one batch: a seek back re-read records still queued from
                # before it. The stages recognise a copy of an earlier batch by its published
                # marker, but not one within the batch; the first copy's ack covers the offset.
                self.repeated += 1
                continue
            expected = self._expected.get(partition)
            if expected is None:
                expected = await self._start_offset(partition, message.offset)
            if message.offset > expected and not await self._nothing_between(partition, expected, message.offset):
                if self._sought.get(partition) == expected:
                    log.debug("%s[%d]: record %d was fetched before the seek back to %d; held back",
                              *partition, message.offset, expected)
                else:
                    log.warning("%s[%d]: record %d arrived while %d was expected; holding the partition back and "
                                "reading again from %d", *partition, message.offset, expected, expected)
                blocked.add(partition)
                self.held_back += 1
                await self._seek_back(partition, expected)
                continue
            self._expected[partition] = max(expected, message.offset + 1)
            sought = self._sought.get(partition)
            if sought is not None and message.offset >= sought:
                del self._sought[partition]  # the re-read is here
                self._settled(*partition)
            taken.add((partition, message.offset))
            admitted.append(event)
        return admitted

    async def watch(self, positions: dict[Partition, int]) -> int:
        """Called now and then with the consumer's fetch position of each assigned input
        partition. A hole at the end of what was fetched is followed by no record that
        would reveal it; so a partition fetched beyond what was admitted, with nothing
        admitted since the last call, is looked at: records in between are read again
        (a seek), offsets without records are skipped. Returns the partitions sought back.
        """
        sought = 0
        for partition, position in positions.items():
            expected = self._expected.get(partition)
            if expected is None:
                expected = self._expected[partition] = await self._start_offset(partition, position)
            stalled = self._watched.get(partition) == expected
            self._watched[partition] = expected
            if position <= expected or not stalled:
                continue  # caught up, or still moving
            if await self._nothing_between(partition, expected, position):
                self._expected[partition] = position
                continue
            log.warning("%s[%d]: fetched up to %d but nothing after %d reached the pipeline; reading again "
                        "from %d", *partition, position, expected - 1, expected)
            await self._seek_back(partition, expected, again=True)
            sought += 1
        return sought

    async def _seek_back(self, partition: Partition, offset: int, again: bool = False) -> None:
        """Seek back, unless this partition is already sought back there and the records
        seen now were fetched before that seek (`again`: the watch found it stalled)."""
        if self._sought.get(partition) == offset and not again:
            return
        try:
            await self._seek(*partition, offset)
            self._sought[partition] = offset
        except Exception as error:  # e.g. the partition was revoked meanwhile; the watch tries again
            log.warning("%s[%d]: could not seek back to %d (%s)", *partition, offset, error)

    async def _start_offset(self, partition: Partition, first: int) -> int:
        """Where the worker's consumer starts in this assignment: the committed offset, or
        (nothing committed) the log's start. Unknown (broker unreachable): the first record."""
        try:
            probe = await self._probe()
            tp = TopicPartition(*partition)
            committed = await probe.committed(tp)
            if committed is not None:
                return committed
            return (await probe.beginning_offsets([tp]))[tp]
        except Exception as error:  # the guard must not stop the worker; the stages skip what was published
            log.warning("%s[%d]: committed offset unknown (%s); starting at the first record, %d",
                        *partition, error, first)
            return first

    async def _nothing_between(self, partition: Partition, start: int, end: int) -> bool:
        """True when no record a consumer would read lies in [start, end)."""
        try:
            probe = await self._probe()
            tp = TopicPartition(*partition)
            if probe.assignment() != {tp}:
                probe.assign([tp])
            probe.seek(tp, start)
            fetched = await probe.getmany(tp, timeout_ms=self._probe_timeout_ms, max_records=1)
        except Exception as error:
            log.warning("%s[%d]: could not look between offsets %d and %d (%s)", *partition, start, end, error)
            return False
        records = fetched.get(tp, [])
        return bool(records) and records[0].offset >= end
