"""Stand-ins for Kafka clients, for tests of the worker's parts without a broker."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka import TopicPartition


class FakeProducer:
    """Records every send in order; `fail(topic, key, value, attempt)` may return an
    exception for a send: raised by send() itself when `at_send`, else by its future."""

    def __init__(self, fail=lambda topic, key, value, attempt: None, at_send=()):
        self.fail, self.at_send = fail, at_send
        self.sent: list[tuple[str, bytes | None, bytes]] = []  # delivered
        self.attempts: dict[tuple, int] = {}

    async def send(self, topic, value, key=None):
        attempt = self.attempts[(topic, key, value)] = self.attempts.get((topic, key, value), 0) + 1
        error = self.fail(topic, key, value, attempt)
        if error is not None and type(error) in self.at_send:
            raise error
        future = asyncio.get_running_loop().create_future()
        if error is not None:
            future.set_exception(error)
        else:
            self.sent.append((topic, key, value))
            future.set_result(None)
        return future

    def create_batch(self):
        return FakeBatch()

    async def send_batch(self, batch, topic, partition):
        return await self.send(topic, tuple(batch.records), key=partition)

    async def stop(self):
        pass


class FakeBatch:
    def __init__(self):
        self.records = []

    def append(self, key, value, timestamp):
        self.records.append((key, value))


class FakeProbe:
    """The broker as the guard's probe consumer sees it: records per partition, commits."""

    def __init__(self, offsets: dict[tuple[str, int], list[int]], committed: dict[tuple[str, int], int]):
        self.offsets, self.committed_offsets = offsets, committed
        self.position: dict[TopicPartition, int] = {}

    async def committed(self, tp: TopicPartition):
        return self.committed_offsets.get((tp.topic, tp.partition))

    async def beginning_offsets(self, tps):
        return {tp: min(self.offsets[(tp.topic, tp.partition)]) for tp in tps}

    async def end_offsets(self, tps):
        return {tp: max(self.offsets[(tp.topic, tp.partition)]) + 1 for tp in tps}

    def assign(self, tps):
        self.assigned = set(tps)

    def assignment(self):
        return getattr(self, "assigned", set())

    def seek(self, tp, offset):
        self.position[tp] = offset

    async def getmany(self, tp, timeout_ms, max_records):
        after = [o for o in self.offsets[(tp.topic, tp.partition)] if o >= self.position[tp]]
        return {tp: [SimpleNamespace(offset=after[0])]} if after else {}


class LogFeed:
    """The graph feed over an in-memory topic: `log[partition]` is every record ever
    produced to it, in offset order (append to produce). Its end is always caught up."""

    def __init__(self, partitions: int, log: dict | None = None):
        self.partitions = partitions
        self.log = log if log is not None else {p: [] for p in range(partitions)}
        self.position = [0] * partitions
        self.rewinds = 0

    def produce(self, records) -> None:
        """Add the records not in the log yet (by partition and offset), in offset order."""
        for record in records:
            partition = self.log.setdefault(record.partition, [])
            if all(r.offset != record.offset for r in partition):
                partition.append(record)
                partition.sort(key=lambda r: r.offset)

    def peek(self, partition):
        records, at = self.log.get(partition, []), self.position[partition]
        return records[at] if at < len(records) else None

    def pop(self, partition):
        record = self.peek(partition)
        self.position[partition] += 1
        return record

    def caught_up(self, partition) -> bool:
        return self.position[partition] >= len(self.log.get(partition, []))

    def wait(self, timeout_s) -> None:
        pass

    def buffered(self) -> int:
        return sum(len(self.log.get(p, [])) - self.position[p] for p in range(self.partitions))

    def rewind(self, offsets=None) -> None:
        self.rewinds += 1
        self.position = list(offsets) if offsets is not None else [0] * self.partitions

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
