"""Dead letters: always small enough to publish, and still enough to find the record."""

from __future__ import annotations

import base64
import hashlib

import pytest

from models.contracts import DeadLetter, DeadLetterReason
from stream.pipeline.records import (
    CARRIED_KEY_BYTES,
    CARRIED_VALUE_BYTES,
    PREFIX_BYTES,
    RawRecord,
    StageResult,
    dead_letter,
)

# What aiokafka's producer sends at most by default (max_request_size), as Kafka takes.
PRODUCER_LIMIT = 1024 * 1024


def letter_for(key: bytes | None, value: bytes | None) -> tuple[DeadLetter, StageResult]:
    record = RawRecord("transactions", 3, 77, key, value)
    letter = dead_letter(record, DeadLetterReason.OVERSIZED, "InvalidEvent", "too big")
    result = StageResult()
    result.add_dead_letter("dead-letters", record, letter)
    return letter, result


@pytest.mark.parametrize("size", [0, 100, CARRIED_VALUE_BYTES])
def test_a_value_up_to_the_limit_is_carried_whole(size):
    value = bytes(range(256)) * (size // 256) + b"v" * (size % 256)
    letter, result = letter_for(b"acct1", value)
    assert base64.b64decode(letter.original) == value and not letter.original_truncated
    assert letter.original_bytes == size and letter.original_sha256 == hashlib.sha256(value).hexdigest()
    assert result.outputs[0].key == b"acct1"


@pytest.mark.parametrize("size", [CARRIED_VALUE_BYTES + 1, 900 * 1024, 5 * PRODUCER_LIMIT])
def test_a_larger_value_is_carried_as_prefix_length_and_digest(size):
    value = b"{" + b"z" * (size - 1)
    letter, result = letter_for(b"acct1", value)
    assert letter.original_truncated and base64.b64decode(letter.original) == value[:PREFIX_BYTES]
    assert letter.original_bytes == size and letter.original_sha256 == hashlib.sha256(value).hexdigest()
    (output,) = result.outputs
    assert len(output.value) + len(output.key) < 16 * 1024 and output.fallback is None


@pytest.mark.parametrize("size", [CARRIED_KEY_BYTES + 1, PRODUCER_LIMIT, 3 * PRODUCER_LIMIT])
def test_a_large_key_is_carried_in_part_and_the_letter_keyed_by_its_digest(size):
    key = b"k" * size
    letter, result = letter_for(key, b"{}")
    assert letter.key_truncated and base64.b64decode(letter.key) == key[:PREFIX_BYTES]
    assert letter.key_bytes == size and letter.key_sha256 == hashlib.sha256(key).hexdigest()
    (output,) = result.outputs
    assert output.key == f"sha256:{letter.key_sha256}".encode() and len(output.value) < 16 * 1024


def test_the_worst_case_letter_fits_the_producer():
    letter, result = letter_for(b"k" * CARRIED_KEY_BYTES, b"v" * CARRIED_VALUE_BYTES)
    (output,) = result.outputs
    assert len(output.key) + len(output.value) < PRODUCER_LIMIT // 8
    assert base64.b64decode(letter.key) == b"k" * CARRIED_KEY_BYTES and not letter.key_truncated


def test_a_whole_original_has_a_prefix_only_fallback_for_a_broker_that_refuses_it():
    value = b"v" * 10_000
    letter, result = letter_for(b"acct1", value)
    fallback = DeadLetter.model_validate_json(result.outputs[0].fallback.value)
    assert fallback.original_truncated and base64.b64decode(fallback.original) == value[:PREFIX_BYTES]
    assert (fallback.original_bytes, fallback.original_sha256) == (letter.original_bytes, letter.original_sha256)
    assert letter_for(b"acct1", b"v" * PREFIX_BYTES)[1].outputs[0].fallback is None  # nothing smaller to send


def test_a_tombstone_and_a_missing_key_are_described_too():
    letter, result = letter_for(None, None)
    assert letter.key is None and letter.key_bytes is None and result.outputs[0].key is None
    assert letter.original == "" and letter.original_bytes == 0
