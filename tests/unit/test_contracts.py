"""Strict validation of the wire contracts: every failure says which field and why."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from models.contracts import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DeadLetter,
    DeadLetterReason,
    DonorProfile,
    DonorRelationship,
    DonorSegmentUpdate,
    FraudAlert,
    GiftEvent,
    InvalidEvent,
    Segment,
    TransactionEvent,
    decode,
    encode,
    from_record,
)

GOOD_TX = {
    "event_id": "tx1",
    "event_time": "2025-01-06T10:00:00.123456Z",
    "source_account": "acct1",
    "destination_account": "acct2",
    "amount": 120.5,
    "currency": "EUR",
    "type": "transfer",
    "channel": "mobile",
}
GOOD_GIFT = {
    "event_id": "g1",
    "event_time": "2024-12-31T23:59:59+01:00",
    "donor_id": "d1",
    "amount": 50,
    "channel": "peer_to_peer",
    "campaign": "year-end-2024",
    "referrer_donor_id": "d2",
}
GOOD_REL = {
    "event_id": "r1",
    "event_time": "2024-01-01T00:00:00Z",
    "donor_id": "d1",
    "related_donor_id": "d2",
    "relationship_type": "board_committee",
}


def raw(payload: dict | str) -> bytes:
    return (payload if isinstance(payload, str) else json.dumps(payload)).encode()


def with_(base: dict, **changes) -> dict:
    out = {**base, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def test_valid_events_decode_and_round_trip():
    tx = decode(raw(GOOD_TX), TransactionEvent)
    assert tx.amount == 120.5 and tx.type.value == "transfer" and tx.schema_version == 1
    assert decode(encode(tx), TransactionEvent) == tx
    gift = decode(raw(GOOD_GIFT), GiftEvent)
    assert gift.event_time.utcoffset() == timedelta(hours=1)
    assert decode(encode(gift), GiftEvent) == gift
    assert decode(raw(GOOD_REL), DonorRelationship).action == "add"
    assert decode(raw({"event_id": "p1", "event_time": "2024-01-01T00:00:00Z", "donor_id": "d1"}), DonorProfile)


@pytest.mark.parametrize(
    "payload, field, words",
    [
        (with_(GOOD_TX, amount=-5), "amount", "greater than 0"),
        (with_(GOOD_TX, amount=0), "amount", "greater than 0"),
        (with_(GOOD_TX, amount=1e13), "amount", "less than or equal"),
        (with_(GOOD_TX, amount="120.5"), "amount", "valid number"),
        (with_(GOOD_TX, amount=True), "amount", "valid number"),
        (with_(GOOD_TX, amount=...), "amount", "Field required"),
        (with_(GOOD_TX, event_id=""), "event_id", "at least 1 character"),
        (with_(GOOD_TX, event_id="x" * 65), "event_id", "at most 64"),
        (with_(GOOD_TX, source_account="bad id; drop table"), "source_account", "match pattern"),
        (with_(GOOD_TX, source_account=123), "source_account", "valid string"),
        (with_(GOOD_TX, event_time="2025-01-06T10:00:00"), "event_time", "timezone"),
        (with_(GOOD_TX, event_time="yesterday"), "event_time", "valid datetime"),
        (with_(GOOD_TX, event_time=(datetime.now(timezone.utc) + timedelta(days=3)).isoformat()), "event_time", "future"),
        (with_(GOOD_TX, event_time="1970-01-01T00:00:05Z"), "event_time", "wrong unit"),
        (with_(GOOD_TX, type="wire"), "type", "'payment'"),
        (with_(GOOD_TX, channel="pigeon"), "channel", "'mobile'"),
        (with_(GOOD_TX, currency="usd"), "currency", "match pattern"),
        (with_(GOOD_TX, memo="hi"), "memo", "Extra inputs"),
        (with_(GOOD_TX, schema_version=2), "schema_version", "1"),
        (with_(GOOD_TX, old_balance_source=-1.0), "old_balance_source", "greater than or equal"),
        (with_(GOOD_GIFT, amount=2e9), "amount", "less than or equal"),
        (with_(GOOD_GIFT, channel="carrier-pigeon"), "channel", "'mail'"),
        (with_(GOOD_GIFT, is_recurring="yes"), "is_recurring", "valid boolean"),
        (with_(GOOD_REL, relationship_type="friend"), "relationship_type", "'family'"),
        (with_(GOOD_REL, action="merge"), "action", "'add'"),
        (with_(GOOD_REL, strength=1.5), "strength", "less than or equal"),
    ],
)
def test_schema_violations_name_the_field(payload, field, words):
    contract = GiftEvent if "donor_id" in payload and "relationship_type" not in payload else (
        DonorRelationship if "relationship_type" in payload else TransactionEvent
    )
    with pytest.raises(InvalidEvent) as caught:
        decode(raw(payload), contract)
    assert caught.value.reason is DeadLetterReason.SCHEMA_VIOLATION
    assert caught.value.field == field
    assert words in caught.value.message


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_amounts_are_rejected(literal):
    text = json.dumps(GOOD_TX).replace('"amount": 120.5', f'"amount": {literal}')
    with pytest.raises(InvalidEvent) as caught:
        decode(text.encode(), TransactionEvent)
    assert caught.value.field == "amount" and "finite" in caught.value.message


@pytest.mark.parametrize("payload", [b"{not json", b"", b"\xff\xfe\x00garbage", b'{"event_id": "t1",'])
def test_malformed_json_is_its_own_reason(payload):
    with pytest.raises(InvalidEvent) as caught:
        decode(payload, TransactionEvent)
    assert caught.value.reason is DeadLetterReason.MALFORMED_JSON


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"a string"', b"42", b"null"])
def test_non_objects_are_schema_violations(payload):
    with pytest.raises(InvalidEvent) as caught:
        decode(payload, TransactionEvent)
    assert caught.value.reason in (DeadLetterReason.SCHEMA_VIOLATION, DeadLetterReason.MALFORMED_JSON)
    assert "object" in caught.value.message or "valid" in caught.value.message


@pytest.mark.parametrize("version", ["true", "1.0", "1e0", '"1"'])
def test_schema_version_is_the_integer_one_and_nothing_equal_to_it(version):
    text = json.dumps({"schema_version": 1, **GOOD_TX}).replace('"schema_version": 1', f'"schema_version": {version}')
    with pytest.raises(InvalidEvent) as caught:
        decode(text.encode(), TransactionEvent)
    assert caught.value.reason is DeadLetterReason.SCHEMA_VIOLATION and caught.value.field == "schema_version"
    assert decode(json.dumps({"schema_version": 1, **GOOD_TX}).encode(), TransactionEvent).schema_version == 1


@pytest.mark.parametrize("repeat", ['"amount": 5', '"am\\u006funt": 5', '"source_account": "acct9"'],
                         ids=["plain", "escaped", "an-id"])
def test_a_field_named_twice_is_malformed(repeat):
    # pydantic would keep the last value; two readers could then see two different events.
    # "am\\u006funt" is "amount" with an escaped "o".
    text = json.dumps(GOOD_TX)[:-1] + ", " + repeat + "}"
    with pytest.raises(InvalidEvent) as caught:
        decode(text.encode(), TransactionEvent)
    assert caught.value.reason is DeadLetterReason.MALFORMED_JSON and "more than once" in caught.value.message


def test_a_field_name_that_is_also_a_value_is_no_repeat():
    gift = with_(GOOD_GIFT, campaign="amount")
    assert decode(raw(gift), GiftEvent).campaign == "amount"


def test_tombstone_is_malformed():
    with pytest.raises(InvalidEvent) as caught:
        decode(None, TransactionEvent)
    assert caught.value.reason is DeadLetterReason.MALFORMED_JSON


def test_oversized_payload_is_rejected_before_parsing():
    huge = with_(GOOD_TX, event_id="tx1")
    payload = raw(huge)[:-1] + b"," + b'"pad": "' + b"x" * DEFAULT_MAX_MESSAGE_BYTES + b'"}'
    with pytest.raises(InvalidEvent) as caught:
        decode(payload, TransactionEvent)
    assert caught.value.reason is DeadLetterReason.OVERSIZED
    assert "TRIBUTARY_MAX_MESSAGE_BYTES" in caught.value.message
    assert decode(raw(GOOD_TX), TransactionEvent, max_bytes=len(raw(GOOD_TX)))


def test_self_transfer_and_self_referral_are_rejected():
    with pytest.raises(InvalidEvent, match="same account"):
        decode(raw(with_(GOOD_TX, destination_account="acct1")), TransactionEvent)
    with pytest.raises(InvalidEvent, match="donor themself"):
        decode(raw(with_(GOOD_GIFT, referrer_donor_id="d1")), GiftEvent)
    with pytest.raises(InvalidEvent, match="same donor"):
        decode(raw(with_(GOOD_REL, related_donor_id="d1")), DonorRelationship)


def test_many_problems_are_counted_in_the_message():
    with pytest.raises(InvalidEvent, match=r"and \d+ more problems"):
        decode(b'{"event_id": "t1"}', TransactionEvent)


def test_from_record_validates_like_the_wire():
    record = {**GOOD_TX, "event_time": datetime(2025, 1, 6, tzinfo=timezone.utc), "old_balance_source": None}
    event = from_record(record, TransactionEvent)
    assert event.old_balance_source is None and event.currency == "EUR"
    with pytest.raises(InvalidEvent) as caught:
        from_record({**record, "amount": float("nan")}, TransactionEvent)
    assert caught.value.field == "amount"
    with pytest.raises(InvalidEvent) as caught:
        from_record({**record, "amount": "12"}, TransactionEvent)
    assert caught.value.field == "amount"


def test_output_contracts_serialise():
    now = datetime.now(timezone.utc)
    alert = FraudAlert(
        alert_id="tx1:v1", event_id="tx1", event_time=now, source_account="a", destination_account="b",
        amount=10.0, score=0.93, threshold=0.5, model_name="fusion-gated", model_version="1", scored_at=now,
    )
    assert json.loads(encode(alert))["score"] == 0.93
    update = DonorSegmentUpdate(
        donor_id="d1", event_id="g1", event_time=now, probabilities={s: 0.5 for s in Segment},
        segments=[Segment.HIGH_VALUE], previous_segments=[], model_name="multitarget", model_version="1",
        updated_at=now,
    )
    assert json.loads(encode(update))["probabilities"]["high_value"] == 0.5
    letter = DeadLetter(
        topic="transactions", partition=0, offset=5, original="e30=", original_bytes=2,
        original_sha256="44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        reason=DeadLetterReason.MALFORMED_JSON, error_class="InvalidEvent", message="bad", received_at=now,
    )
    assert json.loads(encode(letter))["reason"] == "malformed_json"
