"""Input events: what producers write to the worker's input topics.

Every event carries `event_id` (unique per topic, used for idempotent state updates
and alert ids) and a timezone-aware `event_time` (the time the thing happened, which
orders features; not the time it reached Kafka).
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ._base import (
    SCHEMA_VERSION,
    Balance,
    Contract,
    Currency,
    EntityId,
    EventTime,
    GiftAmount,
    Probability,
    SchemaVersion,
    ShortText,
    TransactionAmount,
)


class TransactionType(str, Enum):
    PAYMENT = "payment"
    TRANSFER = "transfer"
    CASH_OUT = "cash_out"
    CASH_IN = "cash_in"
    DEBIT = "debit"


class TransactionChannel(str, Enum):
    MOBILE = "mobile"
    WEB = "web"
    CARD = "card"
    BRANCH = "branch"
    ATM = "atm"
    API = "api"
    OTHER = "other"


class GiftChannel(str, Enum):
    MAIL = "mail"
    ONLINE = "online"
    EVENT = "event"
    PEER_TO_PEER = "peer_to_peer"
    PHONE = "phone"
    OTHER = "other"


class RelationshipType(str, Enum):
    """The five edge types of the donor network; one GraphSAGE branch each."""

    FAMILY = "family"
    BOARD_COMMITTEE = "board_committee"
    PEER_FUNDRAISER = "peer_fundraiser"
    EMPLOYER_MATCHING = "employer_matching"
    EVENT_COATTENDANCE = "event_coattendance"


class AgeBand(str, Enum):
    UNDER_25 = "under_25"
    AGE_25_34 = "25_34"
    AGE_35_44 = "35_44"
    AGE_45_54 = "45_54"
    AGE_55_64 = "55_64"
    AGE_65_74 = "65_74"
    AGE_75_PLUS = "75_plus"
    UNKNOWN = "unknown"


class TransactionEvent(Contract):
    """A money movement between two accounts. Keyed on the wire by `source_account`."""

    KEY_FIELD: ClassVar[str] = "source_account"  # the record key on the wire: this field's value
    schema_version: SchemaVersion = SCHEMA_VERSION
    event_id: EntityId
    event_time: EventTime
    source_account: EntityId
    destination_account: EntityId
    amount: TransactionAmount
    currency: Currency = "USD"
    type: TransactionType
    channel: TransactionChannel | None = None
    old_balance_source: Balance | None = None
    new_balance_source: Balance | None = None
    old_balance_destination: Balance | None = None
    new_balance_destination: Balance | None = None

    @model_validator(mode="after")
    def _distinct_accounts(self) -> "TransactionEvent":
        if self.source_account == self.destination_account:
            raise ValueError("source_account and destination_account are the same account")
        return self


class GiftEvent(Contract):
    """A gift to the charity. Keyed on the wire by `donor_id`."""

    KEY_FIELD: ClassVar[str] = "donor_id"  # the record key on the wire: this field's value
    schema_version: SchemaVersion = SCHEMA_VERSION
    event_id: EntityId
    event_time: EventTime
    donor_id: EntityId
    amount: GiftAmount
    currency: Currency = "USD"
    channel: GiftChannel
    campaign: ShortText | None = None
    is_recurring: bool = False
    # Soft credit: the donor whose ask or fundraising page brought this gift in.
    referrer_donor_id: EntityId | None = None

    @model_validator(mode="after")
    def _not_self_referred(self) -> "GiftEvent":
        if self.referrer_donor_id is not None and self.referrer_donor_id == self.donor_id:
            raise ValueError("referrer_donor_id is the donor themself")
        return self


class DonorProfile(Contract):
    """Slowly changing donor attributes; the latest event per donor wins.

    Every attribute is optional: a CRM export rarely has all of them, and the donor
    model treats a missing attribute as missing (a mask), never as zero.
    """

    KEY_FIELD: ClassVar[str] = "donor_id"  # the record key on the wire: this field's value
    schema_version: SchemaVersion = SCHEMA_VERSION
    event_id: EntityId
    event_time: EventTime
    donor_id: EntityId
    tenure_years: float | None = Field(default=None, ge=0, le=100)
    age_band: AgeBand = AgeBand.UNKNOWN
    wealth_index: Probability | None = None
    home_owner: bool | None = None
    region: ShortText | None = None
    event_attendance_12m: int | None = Field(default=None, ge=0, le=366)
    email_open_rate_12m: Probability | None = None
    volunteer_hours_12m: float | None = Field(default=None, ge=0, le=8784)
    promotions_received_12m: int | None = Field(default=None, ge=0, le=10_000)
    # Giving summaries held by the CRM for history that predates the event stream.
    prior_gift_count: int | None = Field(default=None, ge=0, le=100_000)
    prior_gift_total: float | None = Field(default=None, ge=0, le=1e9)
    months_since_last_gift: float | None = Field(default=None, ge=0, le=1200)
    months_since_first_gift: float | None = Field(default=None, ge=0, le=1200)


class DonorRelationship(Contract):
    """An edge of the donor network being added or removed. Keyed by `donor_id`."""

    KEY_FIELD: ClassVar[str] = "donor_id"  # the record key on the wire: this field's value
    schema_version: SchemaVersion = SCHEMA_VERSION
    event_id: EntityId
    event_time: EventTime
    donor_id: EntityId
    related_donor_id: EntityId
    relationship_type: RelationshipType
    action: Literal["add", "remove"] = "add"
    strength: Probability | None = None

    @model_validator(mode="after")
    def _distinct_donors(self) -> "DonorRelationship":
        if self.donor_id == self.related_donor_id:
            raise ValueError("donor_id and related_donor_id are the same donor")
        return self


class LabelKind(str, Enum):
    CONFIRMED_FRAUD = "confirmed_fraud"
    CHARGEBACK = "chargeback"
    CLEARED = "cleared"  # investigated and found legitimate


class FraudLabel(Contract):
    """A late verdict on a scored transaction (case outcome, chargeback).

    Keyed on the wire by `source_account`, like the transaction, so the label reaches the
    worker that scored it (same partition).
    """

    KEY_FIELD: ClassVar[str] = "source_account"  # the record key on the wire: this field's value
    schema_version: SchemaVersion = SCHEMA_VERSION
    label_id: EntityId  # of the label itself: its outcome record carries this id
    event_id: EntityId  # of the transaction
    source_account: EntityId
    kind: LabelKind
    labelled_at: EventTime

    @property
    def is_fraud(self) -> bool:
        return self.kind is not LabelKind.CLEARED
