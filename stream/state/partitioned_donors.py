"""Donor-feature state, one independent `DonorState` per input partition.

The three donor topics (gifts, profiles, relationships) are keyed by donor id and
co-partitioned, so partition p of each feeds partition p's state, and that state's
changelog is partition p of the donors changelog topic. State follows its partition
(transactions, by contrast, merge every partition: stream.state.graph_merge): a gift's referrer or a relationship's other donor
that is keyed to another partition gets a row here too, holding what *this* partition
saw of it (the referral credit, the edge); its own profile and gifts live in its home
partition and are not visible here. With one partition that is the whole network.

Idempotence after a redelivery, per (row, topic): each row remembers the highest offset
of each donor topic that touched it. Every touch of a row from one topic partition comes
in offset order, so an event at or below that offset is already in the row; the event
is then applied only to the end (donor, referrer / related donor) that lacks it. Each
row also remembers the segments last published for the donor, so an update is published
only when membership changes, across restarts too.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from models.contracts import DonorProfile, DonorRelationship, GiftEvent
from models.features.donor_layout import (
    DONOR_END,
    NO_KEY,
    OTHER_END,
)
from models.features.donor_state import donor_key
from models.features.donors import DonorFeatureConfig, DonorFeaturizer
from stream.state.commit_protocol import PublishedOffsets, Record, decode_entity_key, encode_entity_key, marker_topic

# Topic index of each donor event class: the column of `applied`, the byte in marker keys.
DONOR_TOPICS = (GiftEvent, DonorProfile, DonorRelationship)
TOPIC_INDEX = {cls: i for i, cls in enumerate(DONOR_TOPICS)}
_HEADER = np.dtype([("applied", "<i8", (len(DONOR_TOPICS),)), ("segments", "u1")])


def other_end_key(event: GiftEvent | DonorProfile | DonorRelationship) -> int:
    """Key of the second donor an event touches, or NO_KEY."""
    if isinstance(event, GiftEvent):
        return donor_key(event.referrer_donor_id) if event.referrer_donor_id else NO_KEY
    if isinstance(event, DonorRelationship):
        return donor_key(event.related_donor_id)
    return NO_KEY


class DonorPartition:
    """A `DonorState` plus, per row, the applied offsets per topic and the published segments."""

    def __init__(self, config: DonorFeatureConfig, capacity: int = 1024):
        self.state = config.new_state(capacity=capacity)
        self.featurizer = DonorFeaturizer(self.state, config)
        self.applied = np.full((0, len(DONOR_TOPICS)), -1, dtype=np.int64)
        self.segments = np.zeros(0, dtype=np.uint8)
        self._changed: set[int] = set()  # rows changed since the last take_changes()
        self._fit()

    def _fit(self) -> None:
        """Grow the per-row side arrays with the state (which grows by doubling)."""
        capacity = self.state.capacity
        if len(self.segments) < capacity:
            grown = np.full((capacity, len(DONOR_TOPICS)), -1, dtype=np.int64)
            grown[: len(self.applied)] = self.applied
            self.applied = grown
            segments = np.zeros(capacity, dtype=np.uint8)
            segments[: len(self.segments)] = self.segments
            self.segments = segments

    def apply(self, event: GiftEvent | DonorProfile | DonorRelationship, offset: int) -> int:
        """Apply the event to the ends that lack it; which ends those were (DONOR_END |
        OTHER_END bits; 0 when it was already in both)."""
        topic = TOPIC_INDEX[type(event)]
        rows = [self.state.row(donor_key(event.donor_id))]
        other = other_end_key(event)
        if other != NO_KEY:
            rows.append(self.state.row(other))
        self._fit()
        ends = 0
        for end, row in zip((DONOR_END, OTHER_END), rows):
            if self.applied[row, topic] < offset:
                ends |= end
        if not ends:
            return 0
        self.state.ingest(event, ends)
        self._fit()
        for end, row in zip((DONOR_END, OTHER_END), rows):
            if ends & end:
                self.applied[row, topic] = offset
                self._changed.add(row)
        return ends

    def set_segments(self, row: int, mask: int) -> None:
        """Record the segments last published for the donor in `row`."""
        self.segments[row] = mask
        self._changed.add(row)

    def take_changes(self) -> list[Record]:
        """Changelog records of the rows changed since the last call."""
        records = self.export_rows(self._changed)
        self._changed.clear()
        return records

    def row_of(self, donor_id: str) -> int:
        return self.state.lookup(donor_key(donor_id))

    def export_rows(self, rows: Iterable[int]) -> list[Record]:
        records = []
        for row in sorted(set(rows)):
            header = np.zeros(1, dtype=_HEADER)
            header["applied"], header["segments"] = self.applied[row], self.segments[row]
            key = int(self.state.keys[row])
            records.append((encode_entity_key(key), header.tobytes() + self.state.export_donor(key)))
        return records

    def import_row(self, key: int, blob: bytes) -> None:
        header = np.frombuffer(blob, dtype=_HEADER, count=1)
        row = self.state.import_donor(key, blob[_HEADER.itemsize:])
        self._fit()
        self.applied[row], self.segments[row] = header["applied"][0], header["segments"][0]

    def __len__(self) -> int:
        return len(self.state)


class PartitionedDonors:
    """Implements `stream.state.commit_protocol.PartitionedState` for donor features."""

    def __init__(self, config: DonorFeatureConfig, initial_capacity: int = 1024):
        self.config = config
        self.initial_capacity = initial_capacity
        self._partitions: dict[int, DonorPartition] = {}
        self.published = PublishedOffsets()  # by TOPIC_INDEX

    def partition(self, partition: int) -> DonorPartition:
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = DonorPartition(self.config, self.initial_capacity)
        return part

    @property
    def partitions(self) -> list[int]:
        return sorted(self._partitions)

    def drop(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._partitions.pop(partition, None)
            self.published.drop(partition)

    def take_changes(self, partition: int) -> list[Record]:
        return self.partition(partition).take_changes()

    def restore(self, partition: int, key: bytes, blob: bytes) -> None:
        """Apply one changelog record (the latest wins)."""
        topic = marker_topic(key)
        if topic is not None:
            self.published.restore(topic, partition, blob)
        else:
            self.partition(partition).import_row(decode_entity_key(key), blob)

    def export(self, partition: int, keys: Iterable[int]) -> list[Record]:
        part = self.partition(partition)
        return part.export_rows(r for k in keys if (r := part.state.lookup(k)))

    def items(self, partition: int) -> Iterator[Record]:
        part = self.partition(partition)
        yield from part.export_rows(range(1, len(part) + 1))

    def entities(self) -> dict[int, int]:
        """Donors (rows) held per partition."""
        return {p: len(part) for p, part in self._partitions.items()}
