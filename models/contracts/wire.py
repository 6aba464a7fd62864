"""Decoding untrusted bytes into contracts, with one typed error per failure.

The worker never lets a bad message raise past this module: `decode` either returns a
contract instance or raises `InvalidEvent`, whose `reason` and `field` go straight into
a dead-letter record.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import TypeVar

from pydantic import ValidationError

from models.errors import TributaryError

from ._base import Contract
from .outputs import DeadLetterReason

# Far above any honest event (a transaction is ~300 bytes) and far below what would let
# one message balloon the worker's memory. The broker does not enforce max.message.bytes.
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024

C = TypeVar("C", bound=Contract)


class InvalidEvent(TributaryError, ValueError):
    """An input message that cannot become a contract; says which field and why."""

    def __init__(self, reason: DeadLetterReason, message: str, field: str | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.reason = reason
        self.field = field
        self.message = message


def _describe(error: ValidationError) -> tuple[str | None, str]:
    first = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"].removeprefix("Value error, ")
    count = error.error_count()
    more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
    return field, f"{message}{more}"


def decode(raw: bytes | None, contract: type[C], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> C:
    """Parse and validate one message value.

    >>> from models.contracts import GiftEvent
    >>> decode(b'{"event_id": "g1"}', GiftEvent).field
    Traceback (most recent call last):
    ...
    models.contracts.wire.InvalidEvent: event_time: Field required (and 3 more problems)
    """
    if raw is None:
        raise InvalidEvent(DeadLetterReason.MALFORMED_JSON, "message has no value (tombstone)")
    if len(raw) > max_bytes:
        raise InvalidEvent(
            DeadLetterReason.OVERSIZED,
            f"message is {len(raw)} bytes, over the limit of {max_bytes} "
            "(raise TRIBUTARY_MAX_MESSAGE_BYTES if such events are legitimate)",
        )
    try:
        event = contract.model_validate_json(raw)
    except ValidationError as error:
        # pydantic reports unparseable JSON as a validation error of type json_invalid.
        if error.errors(include_url=False)[0]["type"] in ("json_invalid", "json_type"):
            raise InvalidEvent(DeadLetterReason.MALFORMED_JSON, _describe(error)[1]) from None
        field, message = _describe(error)
        raise InvalidEvent(DeadLetterReason.SCHEMA_VIOLATION, message, field) from None
    if _may_repeat_a_field(raw, event):
        _refuse_repeated_fields(raw)
    return event


# The end of a field name in JSON: its closing quote, then the colon.
_NAME_END = re.compile(rb'"\s*:')


def _may_repeat_a_field(raw: bytes, event: Contract) -> bool:
    """False when no field can be named twice in `raw`: the cheap test before the full one
    (about 1 us against 5 for the full parse).

    The input contracts are flat and forbid unknown fields, so every name in a valid
    message is one of the fields set: more name endings than fields set means a name
    came twice (or a string value holds `":`, which the full parse tells apart).
    """
    return len(_NAME_END.findall(raw)) > len(event.model_fields_set)


def _refuse_repeated_fields(raw: bytes) -> None:
    """Raise InvalidEvent if a JSON object in `raw` names one field twice.

    pydantic keeps the last of repeated fields without a word; two producers (or a
    forger) would then read one message differently. Checked after validation: the
    message is known to be well-formed JSON by then.
    """

    def pairs(items: list[tuple[str, object]]) -> dict:
        seen: set[str] = set()
        for name, _ in items:
            if name in seen:
                raise InvalidEvent(DeadLetterReason.MALFORMED_JSON, f"field {name!r} appears more than once", name)
            seen.add(name)
        return dict(items)

    json.loads(raw, object_pairs_hook=pairs)


def encode(event: Contract) -> bytes:
    """The canonical wire form: compact JSON, fields in declaration order, unset optionals left out."""
    return event.__pydantic_serializer__.to_json(event, exclude_none=True)


def from_record(record: dict, contract: type[C], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> C:
    """Validate a plain record (e.g. a Parquet row) exactly as the worker validates the wire.

    Going through JSON on purpose: strict mode then accepts enum strings and ISO times
    the way it does on the wire, so a world file that passes here passes in the worker.
    """
    # A null column means "not given", so the contract's default applies, as on the wire
    # where producers leave optional fields out.
    present = {name: value for name, value in record.items() if value is not None}
    for name, value in present.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidEvent(DeadLetterReason.SCHEMA_VIOLATION, "Input should be a finite number", name)
    raw = json.dumps(present, default=_json_default).encode()
    return decode(raw, contract, max_bytes)


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot put {type(value).__name__} on the wire")
