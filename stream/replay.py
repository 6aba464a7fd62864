"""Replay a world's event streams into Kafka in event-time order.

Each event is validated against its contract (exactly as the worker will) and written
in its canonical wire form, keyed by its entity id so that all events of one account or
donor land on one partition (the worker's per-entity state follows that partition).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from aiokafka import AIOKafkaProducer

from models.contracts import encode
from models.progress import progress as progress_bar
from models.world_events import iter_world_events
from models.worlds import EVENT_STREAMS, World
from stream.kafka.client_args import aiokafka_args
from stream.kafka.connect import started
from stream.settings import KafkaSettings

# Unacknowledged sends we allow before waiting: bounds memory, keeps the pipe full.
_IN_FLIGHT = 20_000


@dataclass(frozen=True)
class WireEvent:
    stream: str
    key: bytes
    value: bytes


@dataclass
class ReplayReport:
    sent: dict[str, int] = field(default_factory=dict)  # topic -> events acknowledged
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    @property
    def events_per_s(self) -> float:
        return self.total / self.seconds if self.seconds else 0.0


def iter_wire_events(world: World) -> Iterator[WireEvent]:
    """Every event of the world in its canonical wire form, merged across streams in
    (event_time, REPLAY_ORDER) order (models.world_events)."""
    for stream, record, event in iter_world_events(world):
        yield WireEvent(stream, record[EVENT_STREAMS[stream].key_field].encode(), encode(event))


async def replay_world(
    world: World,
    settings: KafkaSettings,
    rate: float | None = None,
    progress: bool = True,
    producer_options: dict | None = None,
) -> ReplayReport:
    """Produce every event of `world`; at `rate` events/s if given, else as fast as possible.

    Returns once every event is acknowledged by the broker; raises on the first failed send.
    """
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive (events per second), or None for as fast as possible")
    options = {"linger_ms": 5, "max_batch_size": 256 * 1024, "acks": 1, **(producer_options or {})}
    producer = await started(AIOKafkaProducer(**aiokafka_args(settings), **options), settings)
    report = ReplayReport()
    total = sum(world.manifest.counts.get(s, 0) for s in world.streams)
    bar = progress_bar(total=total, unit="ev", desc="replay", enabled=progress)
    pending: list[asyncio.Future] = []
    topics: list[str] = []
    began = time.monotonic()
    try:
        for index, event in enumerate(iter_wire_events(world)):
            if rate is not None:
                ahead = began + index / rate - time.monotonic()
                if ahead > 0.001:
                    await asyncio.sleep(ahead)
            topic = settings.topics.for_stream(event.stream)
            pending.append(await producer.send(topic, event.value, key=event.key))
            topics.append(topic)
            if len(pending) >= _IN_FLIGHT:
                await _settle(pending, topics, report, bar)
        await producer.flush()
        await _settle(pending, topics, report, bar)
    finally:
        bar.close()
        await producer.stop()
    report.seconds = time.monotonic() - began
    return report


async def _settle(pending: list, topics: list[str], report: ReplayReport, bar: Any) -> None:
    await asyncio.gather(*pending)  # raises the first send error
    for topic in topics:
        report.sent[topic] = report.sent.get(topic, 0) + 1
    bar.update(len(pending))
    pending.clear()
    topics.clear()
