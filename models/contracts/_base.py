"""Building blocks shared by every wire contract: strict config, id, money and time types."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

SCHEMA_VERSION: Literal[1] = 1

# Events older than this are almost certainly a unit error (seconds vs milliseconds).
EARLIEST_EVENT_TIME = datetime(1970, 1, 2, tzinfo=timezone.utc)
# Producers' clocks drift; a day of slack keeps honest skew while catching unit errors.
MAX_CLOCK_SKEW = timedelta(days=1)

MAX_ID_LENGTH = 64
MAX_TRANSACTION_AMOUNT = 1e12
MAX_GIFT_AMOUNT = 1e9


class Contract(BaseModel):
    """Base of every message on the wire.

    strict: "5" is not an amount and 1.5 is not a count; extra="forbid": a misspelt
    field is an error, not silently dropped; allow_inf_nan=False: pydantic would
    otherwise take NaN, Infinity and 1e400 as floats.
    """

    # The record key an input contract must arrive under: the name of its entity-id field
    # ("" for contracts that are not keyed inputs).
    KEY_FIELD: ClassVar[str] = ""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        allow_inf_nan=False,
        frozen=True,
        str_strip_whitespace=False,
    )


def _exactly_an_integer(value: object) -> object:
    # JSON `true`, `1.0` and `1e0` all equal 1 in Python, and pydantic's Literal check
    # compares by equality: without this, each passed as schema version 1.
    if type(value) is not int:
        raise ValueError(f"must be the integer {SCHEMA_VERSION}, not {value!r}")
    return value


# Every contract's `schema_version`: the integer 1 and nothing that merely equals it.
SchemaVersion = Annotated[Literal[1], BeforeValidator(_exactly_an_integer)]


def _not_far_future(value: datetime) -> datetime:
    latest = datetime.now(timezone.utc) + MAX_CLOCK_SKEW
    if value > latest:
        raise ValueError(f"is in the future beyond the allowed clock skew of {MAX_CLOCK_SKEW} "
                         f"(latest accepted {latest.isoformat()})")
    if value < EARLIEST_EVENT_TIME:
        raise ValueError(f"is before {EARLIEST_EVENT_TIME.date()}; is the timestamp in the wrong unit?")
    return value


EventTime = Annotated[AwareDatetime, AfterValidator(_not_far_future)]
EntityId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[A-Za-z0-9_.:@\-]+$")]
ShortText = Annotated[str, Field(min_length=1, max_length=64)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
TransactionAmount = Annotated[float, Field(gt=0, le=MAX_TRANSACTION_AMOUNT)]
GiftAmount = Annotated[float, Field(gt=0, le=MAX_GIFT_AMOUNT)]
Balance = Annotated[float, Field(ge=0, le=MAX_TRANSACTION_AMOUNT)]
Probability = Annotated[float, Field(ge=0, le=1)]
