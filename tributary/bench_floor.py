"""The latency floor of `tributary bench`: a bare aiokafka loop that consumes each record
and publishes it on, deliveries awaited per batch; nothing else.

Whatever latency it has, the broker, the clients and the machine give any consumer that
must publish one record per event: no scorer on the same broker and cores can do better.
It long-polls as the worker does (TRIBUTARY_FETCH_MAX_WAIT_MS, when set) and joins a group,
as the worker does.

Run as a subprocess: `python -m tributary.bench_floor BOOTSTRAP FROM_TOPIC TO_TOPIC EXPECTED READY_FILE`.
It writes READY_FILE once it holds its partitions, and exits after EXPECTED records.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream.kafka.client_args import aiokafka_args
from stream.settings import WorkerSettings


async def pass_on(bootstrap: str, from_topic: str, to_topic: str, expected: int, ready: Path) -> None:
    settings = WorkerSettings(bootstrap_servers=bootstrap)
    wait = int(os.environ.get("TRIBUTARY_FETCH_MAX_WAIT_MS") or 500)
    consumer = AIOKafkaConsumer(from_topic, **aiokafka_args(settings), group_id=f"bench-floor-{from_topic}",
                                auto_offset_reset="earliest", fetch_max_wait_ms=wait, session_timeout_ms=10_000)
    producer = AIOKafkaProducer(**aiokafka_args(settings), linger_ms=2)  # as the worker's outputs producer
    await consumer.start()
    await producer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        ready.write_text("ready")
        passed = 0
        while passed < expected:
            fetched = await consumer.getmany(timeout_ms=100, max_records=256)
            deliveries = [await producer.send(to_topic, m.value, key=m.key) for ms in fetched.values() for m in ms]
            await asyncio.gather(*deliveries)
            passed += len(deliveries)
    finally:
        await producer.stop()
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(pass_on(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])))
