"""Read topics back from the beginning: for the demo's counts, the replay test and tests."""

from __future__ import annotations

import time
from typing import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from stream.kafka.client_args import aiokafka_args
from stream.kafka.connect import started
from stream.settings import KafkaSettings


async def read_topics(
    settings: KafkaSettings,
    topics: list[str],
    expected: int,
    timeout_s: float = 30.0,
    settle_s: float = 1.0,
    *,
    until: Callable[[list[ConsumerRecord]], bool] | None = None,
) -> list[ConsumerRecord]:
    """Every record of `topics`, read without a consumer group from the earliest offset.

    Reads until `expected` records arrived (or the timeout), then polls `settle_s`
    longer so that extra records would be seen too. Deliberately independent of end
    offsets: the embedded broker reports wrong ones after multi-record batches.

    `until`, when given, replaces the count: it is called with each newly fetched
    batch of records (possibly empty) and returns True once everything awaited has
    arrived. For topics that also hold records of earlier runs, where a count of all
    records says nothing.
    """
    consumer = await started(
        AIOKafkaConsumer(**aiokafka_args(settings), enable_auto_commit=False, auto_offset_reset="earliest"), settings)
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        settle_until = None
        arrived = False
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            fresh = [record for items in batch.values() for record in items]
            records.extend(fresh)
            arrived = arrived or (until(fresh) if until is not None else len(records) >= expected)
            if arrived:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
        return records
    finally:
        await consumer.stop()
