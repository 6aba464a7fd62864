"""What the pipeline consumes and produces, independent of the Kafka client."""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TypeVar

import numpy as np

from models.contracts import Contract, DeadLetter, DeadLetterReason, DriftReport, InvalidEvent, decode, encode
from models.errors import TributaryError
from stream.monitoring.model_monitors import ModelMonitors
from stream.state.commit_protocol import ChangelogWrite

# A dead letter must always fit what the producer can send (aiokafka's and Kafka's
# default limit is 1 MiB a record): one with an 800 KB original, base64-encoded, did
# not, and its retries stopped every partition (issue #13). So a record's value is
# carried in full up to 64 KiB, four times the default input limit, and its key up to
# 1 KiB (ids are at most 64 characters); past that only their first PREFIX_BYTES, with
# the length and sha256 of the whole.
CARRIED_VALUE_BYTES = 64 * 1024
CARRIED_KEY_BYTES = 1024
PREFIX_BYTES = 1024


C = TypeVar("C", bound=Contract)


class StageInterrupted(TributaryError):
    """The stage could not finish a batch because the worker is stopping: the batch is
    not acked, and its events are read again after the restart."""


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
    """A message to publish: topic, key, value bytes.

    `fallback`, when given, is a smaller message to publish instead if the broker
    refuses this one for good (too large, say): a dead letter carries the original
    record, and its fallback carries only a summary of it.
    """

    topic: str
    key: bytes | None
    value: bytes
    fallback: "Output | None" = None


@dataclass
class StageResult:
    outputs: list[Output] = field(default_factory=list)
    changelog: dict[int, ChangelogWrite] = field(default_factory=dict)  # by partition (stream.state.commit_protocol)
    consumed: int = 0
    scored: int = 0
    applied: int = 0
    replayed: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)  # reason -> count
    alerts: int = 0
    segment_changes: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)  # late labels: tp / fp / tn / fn -> count
    reports: list[DriftReport] = field(default_factory=list)  # drift reports raised (published with the outputs)
    drift_statistics: dict[tuple[str, str], float] = field(default_factory=dict)  # (model, monitor) -> latest
    performance: dict[str, float] = field(default_factory=dict)  # labelled precision / recall, when measured
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds for the batch
    model: tuple[str, str] | None = None  # (name, version) that scored the batch

    def observe(self, monitors: ModelMonitors, scores: np.ndarray, features: np.ndarray) -> None:
        """Feed the batch's scores to the serving version's drift monitors."""
        self.reports += monitors.observe(scores, features)
        self.drift_statistics.update(monitors.statistics())


    def add_dead_letter(self, topic: str, record: RawRecord, letter: DeadLetter) -> None:
        """Publish `letter` for `record` on `topic`, counted by reason."""
        key = record.key if record.key is None or len(record.key) <= CARRIED_KEY_BYTES else \
            f"sha256:{letter.key_sha256}".encode()
        value = record.value or b""
        fallback = None
        if len(value) > PREFIX_BYTES and not letter.original_truncated:
            summary = letter.model_copy(update={"original": _base64(value[:PREFIX_BYTES]), "original_truncated": True})
            fallback = Output(topic, key, encode(summary))
        self.outputs.append(Output(topic, key, encode(letter), fallback=fallback))
        self.dead_letters[letter.reason.value] = self.dead_letters.get(letter.reason.value, 0) + 1

    def lap(self, stage: str, started: float) -> float:
        """Add the time since `started` to `stage`; returns now, the next stage's start."""
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - started
        return now


def decode_or_dead_letter(record: RawRecord, contract: type[C], max_bytes: int) -> tuple[C | None, DeadLetter | None]:
    """The event, or a dead letter saying why not. Never raises for bad input.

    Besides the value, the key is checked: it must be the event's entity id (the
    contract's KEY_FIELD), because per-entity state lives in the partition the key
    picks. A transaction keyed by anything else would be scored against a stranger's
    history, and its own account's history would miss it.
    """
    try:
        event = decode(record.value, contract, max_bytes)
    except InvalidEvent as error:
        return None, dead_letter(record, error.reason, type(error).__name__, error.message, error.field)
    if not contract.KEY_FIELD:
        return event, None
    entity = getattr(event, contract.KEY_FIELD)
    if record.key != entity.encode():
        shown = "no key" if record.key is None else f"key {_show(record.key)}"
        return None, dead_letter(
            record, DeadLetterReason.KEY_MISMATCH, "KeyMismatch",
            f"the record has {shown}, but {contract.__name__} records must be keyed by {contract.KEY_FIELD} "
            f"({entity!r}): produce them with that key", contract.KEY_FIELD)
    return event, None


def dead_letter(record: RawRecord, reason: DeadLetterReason, error_class: str, message: str,
                field_name: str | None = None) -> DeadLetter:
    """The dead letter of `record`, carrying its key and value in full or, past the
    size limits (CARRIED_KEY_BYTES, CARRIED_VALUE_BYTES), their first PREFIX_BYTES."""
    value, key = record.value or b"", record.key
    key_truncated = key is not None and len(key) > CARRIED_KEY_BYTES
    truncated = len(value) > CARRIED_VALUE_BYTES
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=None if key is None else _base64(key[:PREFIX_BYTES] if key_truncated else key),
        key_bytes=None if key is None else len(key),
        key_sha256=None if key is None else hashlib.sha256(key).hexdigest(),
        key_truncated=key_truncated,
        original=_base64(value[:PREFIX_BYTES] if truncated else value),
        original_bytes=len(value),
        original_sha256=hashlib.sha256(value).hexdigest(),
        original_truncated=truncated,
        reason=reason,
        error_class=error_class,
        field=field_name,
        message=message[:4096],
        received_at=datetime.now(timezone.utc),
    )


def _base64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _show(raw: bytes, limit: int = 80) -> str:
    """A key as a user can read it in a message: quoted text, cut at `limit` characters."""
    text = raw.decode("utf-8", errors="replace")
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(raw):,} bytes)"
