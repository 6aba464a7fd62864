"""Event contracts: the pydantic models that define Tributary's JSON wire format."""

from ._base import SCHEMA_VERSION
from .events import (
    AgeBand,
    DonorProfile,
    FraudLabel,
    LabelKind,
    DonorRelationship,
    GiftChannel,
    GiftEvent,
    RelationshipType,
    TransactionChannel,
    TransactionEvent,
    TransactionType,
)
from .outputs import (
    AlertReason,
    DeadLetter,
    DeadLetterReason,
    DonorSegmentUpdate,
    DriftKind,
    DriftReport,
    EventOutcome,
    FraudAlert,
    Outcome,
    Segment,
)
from .wire import DEFAULT_MAX_MESSAGE_BYTES, InvalidEvent, decode, encode, from_record

__all__ = [
    "SCHEMA_VERSION",
    "AgeBand",
    "AlertReason",
    "DeadLetter",
    "DeadLetterReason",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DonorProfile",
    "DonorRelationship",
    "DonorSegmentUpdate",
    "DriftKind",
    "DriftReport",
    "EventOutcome",
    "FraudAlert",
    "FraudLabel",
    "LabelKind",
    "GiftChannel",
    "GiftEvent",
    "InvalidEvent",
    "Outcome",
    "RelationshipType",
    "Segment",
    "TransactionChannel",
    "TransactionEvent",
    "TransactionType",
    "decode",
    "encode",
    "from_record",
]
