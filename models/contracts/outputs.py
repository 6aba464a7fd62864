"""Output records the worker publishes: alerts, segment updates, drift reports, dead letters."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Literal

from pydantic import AwareDatetime, Field

from ._base import SCHEMA_VERSION, Contract, EntityId, Probability, SchemaVersion
from .events import TransactionType


class Segment(str, Enum):
    """The five donor segments of the multi-target model, in head order."""

    HIGH_ENGAGEMENT = "high_engagement"
    NETWORK_INFLUENCE = "network_influence"
    GIVING_CONSISTENCY = "giving_consistency"
    HIGH_VALUE = "high_value"
    RECENT_ENGAGEMENT = "recent_engagement"


class AlertReason(Contract):
    """One reason an analyst can check: a feature value and its weight in the score, or a
    pattern the transaction matches (models.features.patterns: `value` is the evidence to
    check, e.g. the number of distinct senders; `weight` is 1, a match, not a share)."""

    kind: Literal["feature", "neighbour", "modality", "pattern"]
    name: str = Field(min_length=1, max_length=128)
    value: float | None = None
    weight: float


class AlertEvidence(Contract):
    """A past transaction of the alert's source or destination account that drove its score:
    a step of the window the model read, as of just before the alerting transaction."""

    account: Literal["source", "destination"]  # whose window it is in
    direction: Literal["in", "out"]  # money into or out of that account
    counterparty: EntityId | None = None  # None: an account this worker holds no id for
    amount: float  # as the state keeps it, a float32 logarithm: about 6 significant digits
    event_time: AwareDatetime  # to the second
    type: TransactionType
    # How much it raised the score: the fall of the log-odds when the model reads the window
    # without it (and without the neighbour it leads to). Negative: it lowered the score.
    weight: float


class CounterpartyEvidence(Contract):
    """An account the alert's two accounts dealt with in the windows the model read."""

    account: EntityId
    transactions: int = Field(ge=1)  # window steps with it, in both windows
    amount: float  # their total
    weight: float  # its steps' weights added


class FraudAlert(Contract):
    """A transaction whose fused score crossed the model's threshold.

    `alert_id` is derived from event id and model version, so a redelivered event
    produces the same alert id and downstream consumers can de-duplicate.
    """

    schema_version: SchemaVersion = SCHEMA_VERSION
    alert_id: str = Field(min_length=1, max_length=128)
    event_id: EntityId
    event_time: AwareDatetime
    source_account: EntityId
    destination_account: EntityId
    amount: float
    score: Probability
    threshold: Probability
    model_name: str
    model_version: str
    reasons: list[AlertReason] = Field(default_factory=list, max_length=16)
    # Case evidence: the transactions and counterparties behind the score, strongest first.
    evidence: list[AlertEvidence] = Field(default_factory=list, max_length=16)
    counterparties: list[CounterpartyEvidence] = Field(default_factory=list, max_length=16)
    scored_at: AwareDatetime


def alert_id(event_id: str, model_name: str, model_version: str) -> str:
    """A `FraudAlert`'s id: a redelivered event scored by the same model gets the same one.

    >>> alert_id("tx1", "fusion-gated", "20260101T000000000000Z")
    'fusion-gated:20260101T000000000000Z:tx1'
    """
    return f"{model_name}:{model_version}:{event_id}"


class DonorSegmentUpdate(Contract):
    """A donor's segment memberships changed; published only on change, keyed by donor."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    donor_id: EntityId
    event_id: EntityId
    event_time: AwareDatetime
    probabilities: dict[Segment, Probability]
    segments: list[Segment]
    previous_segments: list[Segment]
    model_name: str
    model_version: str
    updated_at: AwareDatetime


class DriftKind(str, Enum):
    PSI = "psi"
    ADWIN = "adwin"
    PAGE_HINKLEY = "page_hinkley"
    PERFORMANCE = "performance"


class DriftReport(Contract):
    schema_version: SchemaVersion = SCHEMA_VERSION
    report_id: str = Field(min_length=1, max_length=128)
    monitor: str = Field(min_length=1, max_length=128)
    kind: DriftKind
    statistic: float
    threshold: float
    model_name: str
    model_version: str
    window_events: int = Field(ge=0)
    detected_at: AwareDatetime
    details: dict[str, float | str] = Field(default_factory=dict)


class Outcome(str, Enum):
    SCORED = "scored"  # a transaction or gift went through a model
    APPLIED = "applied"  # a profile or relationship event updated state (nothing to score)


class EventOutcome(Contract):
    """What became of one consumed input event that was not dead-lettered.

    Exactly one EventOutcome or one DeadLetter exists per consumed event, so a consumer
    of both topics can prove nothing was lost. A redelivered event whose outcome was
    already published gets no second one; a duplicate, if any, has the same content.
    """

    schema_version: SchemaVersion = SCHEMA_VERSION
    event_id: EntityId
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    outcome: Outcome
    scores: dict[str, float] = Field(default_factory=dict)
    alert_id: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    processed_at: AwareDatetime


class DeadLetterReason(str, Enum):
    OVERSIZED = "oversized"
    MALFORMED_JSON = "malformed_json"
    SCHEMA_VIOLATION = "schema_violation"
    KEY_MISMATCH = "key_mismatch"  # the record key is not the event's entity id
    DUPLICATE_EVENT = "duplicate_event"  # the event id was already recorded for its entity
    UNKNOWN_ENTITY = "unknown_entity"
    PROCESSING_ERROR = "processing_error"


class DeadLetter(Contract):
    """An input event the worker could not score, with what is needed to find or replay it.

    `original` and `key` are the raw value and key, base64-encoded so that any bytes
    survive JSON. A dead letter must always fit what a producer can send, so a value of
    more than 64 KiB, or a key of more than 1 KiB, is carried only in part: its first
    1 KiB, with `original_truncated` / `key_truncated` set; `original_bytes`,
    `key_bytes` and the sha256 digests describe the whole, and with the topic,
    partition and offset they identify the record in the input topic. A truncated key
    also means the dead letter is keyed on Kafka by `sha256:<digest of the key>`
    instead of the key itself.
    """

    schema_version: SchemaVersion = SCHEMA_VERSION
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    key: str | None = None
    key_bytes: int | None = Field(None, ge=0)
    key_sha256: str | None = None
    key_truncated: bool = False
    original: str
    original_bytes: int = Field(ge=0)
    original_sha256: str
    original_truncated: bool = False
    reason: DeadLetterReason
    error_class: str
    field: str | None = None
    message: str = Field(max_length=4096)
    received_at: datetime
