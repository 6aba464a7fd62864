"""The downstream side: follow fraud alerts and segment updates, de-duplicated, into a file.

What a fraud or fundraising team runs next to the worker. The worker is at-least-once, so
after a crash an alert can arrive twice, with the same alert id; this sink writes each
alert id (and each distinct segment update) once, as one JSON line, and logs a line a
person can read. Ids already in the output file are loaded at start, so a restarted sink
does not write them again. Offsets are committed only after the lines are flushed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from models.contracts import DonorSegmentUpdate, FraudAlert
from stream.kafka.client_args import aiokafka_args
from stream.kafka.connect import started
from stream.settings import KafkaSettings

log = logging.getLogger("tributary.alerts")


class RecentIds:
    """A bounded set: remembers the last `capacity` ids (older duplicates are not expected)."""

    def __init__(self, capacity: int = 1_000_000):
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> bool:
        """True if `key` is new."""
        if key in self._ids:
            self._ids.move_to_end(key)
            return False
        self._ids[key] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True


@dataclass
class SinkCounts:
    alerts: int = 0
    segment_updates: int = 0
    duplicates: int = 0
    unreadable: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)


def describe_alert(alert: FraudAlert) -> str:
    reasons = ", ".join(f"{r.name}={r.value:.3g}" if r.value is not None else r.name for r in alert.reasons[:3])
    return (f"FRAUD ALERT {alert.event_id}: {alert.source_account} -> {alert.destination_account} "
            f"amount {alert.amount:,.2f} score {alert.score:.3f} (threshold {alert.threshold:.3f}, "
            f"{alert.model_name} {alert.model_version}); strongest: {reasons}")


def describe_update(update: DonorSegmentUpdate) -> str:
    joined = sorted(set(update.segments) - set(update.previous_segments))
    left = sorted(set(update.previous_segments) - set(update.segments))
    return (f"DONOR {update.donor_id}: now {[s.value for s in update.segments]}"
            f" (joined {[s.value for s in joined]}, left {[s.value for s in left]}) after {update.event_id}")


class AlertSink:
    def __init__(self, out: Path, capacity: int = 1_000_000):
        self.out = out
        self.seen = RecentIds(capacity)
        self.counts = SinkCounts()
        if out.exists():  # a restarted sink must not write again what it wrote before
            for line in out.read_text().splitlines():
                try:
                    self.seen.add(json.loads(line)["id"])
                except (ValueError, KeyError):
                    continue

    def handle(self, topic: str, value: bytes | None, alerts_topic: str) -> str | None:
        """The JSON line to write for one message, or None (duplicate or unreadable)."""
        self.counts.per_topic[topic] = self.counts.per_topic.get(topic, 0) + 1
        try:
            record: FraudAlert | DonorSegmentUpdate
            if topic == alerts_topic:
                record = alert = FraudAlert.model_validate_json(value or b"")
                key, kind, text = alert.alert_id, "fraud_alert", describe_alert(alert)
            else:
                record = update = DonorSegmentUpdate.model_validate_json(value or b"")
                key = f"{update.donor_id}:{update.event_id}:{update.model_version}"
                kind, text = "segment_update", describe_update(update)
        except ValidationError as error:
            self.counts.unreadable += 1
            log.warning("skipping an unreadable message on %s: %s", topic, error.errors()[0]["msg"])
            return None
        if not self.seen.add(key):
            self.counts.duplicates += 1
            return None
        if kind == "fraud_alert":
            self.counts.alerts += 1
        else:
            self.counts.segment_updates += 1
        log.info(text)
        return json.dumps({"id": key, "kind": kind, "record": json.loads(record.model_dump_json())})


async def follow(settings: KafkaSettings, out: Path, group_id: str = "tributary-alert-sink",
                 idle_exit_s: float | None = None) -> SinkCounts:
    """Consume alerts and segment updates into `out` until stopped (or idle for `idle_exit_s`)."""
    sink = AlertSink(out)
    topics = [settings.topics.fraud_alerts, settings.topics.donor_segments]
    consumer = await started(AIOKafkaConsumer(*topics, **aiokafka_args(settings), group_id=group_id,
                                              enable_auto_commit=False, auto_offset_reset="earliest"), settings)
    last_message = time.monotonic()
    try:
        with out.open("a") as handle:
            while idle_exit_s is None or time.monotonic() - last_message < idle_exit_s:
                batch = await consumer.getmany(timeout_ms=500, max_records=1000)
                if not batch:
                    continue
                last_message = time.monotonic()
                for records in batch.values():
                    for record in records:
                        line = sink.handle(record.topic, record.value, settings.topics.fraud_alerts)
                        if line is not None:
                            handle.write(line + "\n")
                handle.flush()
                await consumer.commit()  # after the lines are on disk: at-least-once, duplicates filtered
    finally:
        await consumer.stop()
    return sink.counts


def run(settings: KafkaSettings, out: Path, idle_exit_s: float | None = None) -> SinkCounts:
    return asyncio.run(follow(settings, out, idle_exit_s=idle_exit_s))
