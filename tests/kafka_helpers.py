"""Reading topics back in tests, independent of the code under test."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition


async def read_all(bootstrap: str, topics: list[str], expected: int, timeout_s: float = 30.0, settle_s: float = 1.0):
    """Read every record of `topics` from the beginning until `expected` records arrived
    (or the timeout), then keep polling `settle_s` longer so extras would be seen too.

    Deliberately independent of end offsets: the embedded broker reports wrong ones
    after multi-record batches (../shared/BROKER.md).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records = []
        deadline = time.monotonic() + timeout_s
        settle_until = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for items in batch.values():
                records.extend(items)
            if len(records) >= expected:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
        return records
    finally:
        await consumer.stop()


def run(coro):
    return asyncio.run(coro)
