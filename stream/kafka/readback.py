"""Read topics back from the beginning: for the demo's counts and for tests."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from stream.kafka.client_args import aiokafka_args
from stream.settings import KafkaSettings


async def read_topics(
    settings: KafkaSettings, topics: list[str], expected: int, timeout_s: float = 30.0, settle_s: float = 1.0
) -> list[ConsumerRecord]:
    """Every record of `topics`, read without a consumer group from the earliest offset.

    Reads until `expected` records arrived (or the timeout), then polls `settle_s`
    longer so that extra records would be seen too. Deliberately independent of end
    offsets: the embedded broker reports wrong ones after multi-record batches.
    """
    consumer = AIOKafkaConsumer(**aiokafka_args(settings), enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord] = []
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
