"""The commit protocol: how a batch's outputs, state and offsets become durable, in order.

Each state table writes its changes to its own changelog topic, partition for partition:
the donors table its donors, the accounts table only its markers (the transaction graph
is rebuilt from the transactions topic itself: stream.state.graph_merge). For one batch:

1. The stage processes the batch against the state, in offset order per partition:
   features as of each event, then the event recorded into the entities it touches.
   Each entity row remembers the offsets applied to it, so applying a redelivered event
   twice is impossible.
2. The batch's outputs (outcomes, alerts, segment updates, dead letters, drift reports)
   are published, and every delivery is awaited.
3. Per changelog partition, a `ChangelogWrite`: for each input topic of the batch, a
   marker "outputs of this topic partition are published up to offset O"; then every
   entity the batch changed; then the last marker alone again (which keeps the
   partition's end offset right on the embedded broker). Every delivery is awaited.
4. The batch's events are acked; Faust commits the offsets later, never past an
   unacked event.

After a crash, the worker that takes the partition over restores the state from the
changelog and reads again from the committed offset:
- an event at or below its topic partition's marker already has its outputs: it is not
  scored or dead-lettered again, only applied to the entities that lack it (a crash
  between the marker and the entities leaves some behind);
- an event above the marker is processed as new: the state does not hold it yet, so
  it is scored as before, and its outputs are published again, identical.
Nothing is acked before step 3 is durable, so no event is lost.

This module holds what both tables share: the changelog record codecs, the
`ChangelogWrite` of one partition, and the `PartitionedState` protocol they implement.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

MARKER_PREFIX = b"\xffpublish"
# The accounts table's markers before donors had several topics: read as topic 0.
_LEGACY_MARKER = MARKER_PREFIX
_ENTITY_KEY_BYTES = 8  # entity keys are 8 bytes, so they never collide with a 10-byte marker
_OFFSET_BYTES = 8

Record = tuple[bytes, bytes]  # a changelog record: key, value


def marker_key(topic_index: int) -> bytes:
    """Changelog key of the marker of the table's input topic number `topic_index`.

    >>> marker_key(2)
    b'\\xffpublish\\x02'
    """
    return MARKER_PREFIX + bytes([topic_index])


def marker_topic(key: bytes) -> int | None:
    """The input topic index a changelog key is the marker of; None for an entity key.

    >>> marker_topic(marker_key(1)), marker_topic(encode_entity_key(7))
    (1, None)
    """
    if key == _LEGACY_MARKER:
        return 0
    if len(key) == len(MARKER_PREFIX) + 1 and key.startswith(MARKER_PREFIX):
        return key[-1]
    return None


def encode_offset(offset: int) -> bytes:
    return offset.to_bytes(_OFFSET_BYTES, "little", signed=True)


def decode_offset(raw: bytes) -> int:
    """The offset of a marker value (its first 8 bytes; what follows is the marker's payload)."""
    return int.from_bytes(raw[:_OFFSET_BYTES], "little", signed=True)


def encode_entity_key(key: int) -> bytes:
    return key.to_bytes(_ENTITY_KEY_BYTES, "little", signed=True)


def decode_entity_key(raw: bytes) -> int:
    return int.from_bytes(raw, "little", signed=True)


@dataclass
class ChangelogWrite:
    """What one batch writes to one changelog partition (step 3 above): the markers,
    then the entity records they cover."""

    markers: list[Record]
    records: list[Record]

    def __iter__(self) -> Iterator[Record]:
        yield from self.markers
        yield from self.records


class PublishedOffsets:
    """Per (input topic index, partition): the highest offset whose outputs are published,
    and the marker's payload: state that must be exactly as of that offset (the alert
    budget's controller), so it is written in the same record and can never be ahead of
    the marker or behind it."""

    def __init__(self) -> None:
        self._offsets: dict[tuple[int, int], int] = {}
        self._payloads: dict[tuple[int, int], bytes] = {}

    def get(self, topic_index: int, partition: int) -> int:
        """-1 where nothing is published yet."""
        return self._offsets.get((topic_index, partition), -1)

    def payload(self, topic_index: int, partition: int) -> bytes:
        """What the last marker carried besides its offset (b"": nothing)."""
        return self._payloads.get((topic_index, partition), b"")

    def mark(self, topic_index: int, partition: int, offset: int, payload: bytes | None = None) -> Record:
        """Advance the offset, and return the marker record that says so in the changelog
        (with `payload`, or the payload it had).

        The record must reach the changelog only after the outputs it covers are
        durable (step 3): the stage builds it while processing, the worker writes it
        after publishing.
        """
        key = (topic_index, partition)
        current = self._offsets[key] = max(self.get(topic_index, partition), offset)
        if payload is not None:
            self._payloads[key] = payload
        return marker_key(topic_index), encode_offset(current) + self.payload(topic_index, partition)

    def restore(self, topic_index: int, partition: int, raw: bytes) -> None:
        key = (topic_index, partition)
        offset = decode_offset(raw)
        if offset >= self.get(topic_index, partition):
            self._payloads[key] = raw[_OFFSET_BYTES:]
        self._offsets[key] = max(self.get(topic_index, partition), offset)

    def drop(self, partition: int) -> None:
        for key in [k for k in self._offsets if k[1] == partition]:
            del self._offsets[key]
            self._payloads.pop(key, None)

    def as_dict(self) -> dict[tuple[int, int], int]:
        return dict(self._offsets)


class PartitionedState(Protocol):
    """A state table as the stages, the Faust store and the commit protocol see it."""

    published: PublishedOffsets

    @property
    def partitions(self) -> list[int]: ...

    def take_changes(self, partition: int) -> list[Record]:
        """Changelog records of the entities of `partition` changed since the last call."""

    def restore(self, partition: int, key: bytes, value: bytes) -> None:
        """Apply one changelog record (the latest of a key wins, as in a compacted topic)."""

    def export(self, partition: int, keys: Iterable[int]) -> list[Record]: ...

    def items(self, partition: int) -> Iterator[Record]: ...

    def entities(self) -> dict[int, int]:
        """Entities held per partition."""

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget these partitions (they moved to another worker)."""
