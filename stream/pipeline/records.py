"""What the pipeline consumes and produces, independent of the Kafka client."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from models.contracts import DeadLetter, DeadLetterReason, InvalidEvent, decode, encode
from models.contracts._base import Contract


@dataclass(frozen=True)
class RawRecord:
    """One consumed message: where it came from and its untouched bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None  # the record's Kafka timestamp, for end-to-end latency


@dataclass
class Output:
    """A message to publish: topic, key, value bytes."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass
class ChangelogWrite:
    """What one batch writes to one changelog partition: the "outputs published up to"
    markers, which must land before the entity records they cover, then those records."""

    markers: list[tuple[bytes, bytes]]
    records: list[tuple[bytes, bytes]]

    def __iter__(self):
        yield from self.markers
        yield from self.records


@dataclass
class StageResult:
    outputs: list[Output] = field(default_factory=list)
    changelog: dict[int, ChangelogWrite] = field(default_factory=dict)  # by partition
    consumed: int = 0
    scored: int = 0
    applied: int = 0
    replayed: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)  # reason -> count
    alerts: int = 0
    segment_changes: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)  # late labels: tp / fp / tn / fn -> count
    reports: list = field(default_factory=list)  # DriftReports the stage raised (published with the outputs)
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds for the batch
    model: tuple[str, str] | None = None  # (name, version) that scored the batch
    scores: np.ndarray | None = None  # scores of the scored events, for the drift monitor
    event_features: np.ndarray | None = None  # their event features, for the drift monitor


    def add_dead_letter(self, topic: str, record: RawRecord, letter: DeadLetter) -> None:
        """Publish `letter` for `record` on `topic`, counted by reason."""
        self.outputs.append(Output(topic, record.key, encode(letter)))
        self.dead_letters[letter.reason.value] = self.dead_letters.get(letter.reason.value, 0) + 1

    def lap(self, stage: str, started: float) -> float:
        """Add the time since `started` to `stage`; returns now, the next stage's start."""
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - started
        return now


def decode_or_dead_letter(
    record: RawRecord, contract: type[Contract], max_bytes: int
) -> tuple[Contract | None, DeadLetter | None]:
    """The event, or a dead letter saying why not. Never raises for bad input."""
    try:
        return decode(record.value, contract, max_bytes), None
    except InvalidEvent as error:
        return None, dead_letter(record, error.reason.value, type(error).__name__, error.message, error.field)


def dead_letter(record: RawRecord, reason: str, error_class: str, message: str, field_name: str | None = None) -> DeadLetter:
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=base64.b64encode(record.key).decode() if record.key is not None else None,
        original=base64.b64encode(record.value or b"").decode(),
        reason=DeadLetterReason(reason),
        error_class=error_class,
        field=field_name,
        message=message[:4096],
        received_at=datetime.now(timezone.utc),
    )
