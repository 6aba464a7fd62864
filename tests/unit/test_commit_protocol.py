"""The changelog records both state tables share, and the published offsets they keep."""

from __future__ import annotations

from stream.state.commit_protocol import PublishedOffsets, encode_offset, marker_key, marker_topic
from stream.state.published_markers import PublishedMarkers
from tests.serving_helpers import SMALL_DONOR_FEATURES


def test_a_marker_never_moves_back_and_is_forgotten_with_its_partition():
    published = PublishedOffsets()
    assert published.get(0, 3) == -1
    assert published.mark(0, 3, 40) == (marker_key(0), encode_offset(40))
    assert published.mark(0, 3, 12) == (marker_key(0), encode_offset(40))  # an older batch cannot lower it
    published.restore(1, 3, encode_offset(7))
    published.drop(3)
    assert published.as_dict() == {}


def test_a_marker_carries_its_payload_and_a_restore_keeps_the_newest():
    written = PublishedOffsets()
    first = written.mark(0, 1, 10, payload=b"state at 10")
    assert written.mark(0, 1, 11) == (marker_key(0), encode_offset(11) + b"state at 10")  # kept until replaced
    newest = written.mark(0, 1, 12, payload=b"state at 12")
    restored = PublishedOffsets()
    for _, value in (newest, first):  # a changelog read out of order: the older marker must not win
        restored.restore(0, 1, value)
    assert restored.get(0, 1) == 12 and restored.payload(0, 1) == b"state at 12"
    restored.drop(1)
    assert restored.payload(0, 1) == b""


def test_the_accounts_table_reads_the_markers_it_wrote_before_there_were_topic_indices():
    accounts = PublishedMarkers()
    accounts.restore(2, b"\xffpublish", encode_offset(99))  # the 9-byte key of older changelogs
    accounts.restore(2, marker_key(0), encode_offset(120))
    assert accounts.published.get(0, 2) == 120 and marker_topic(b"\xffpublish") == 0


def test_both_tables_implement_the_protocol():
    from stream.state.partitioned_donors import PartitionedDonors

    for table in (PublishedMarkers(), PartitionedDonors(SMALL_DONOR_FEATURES)):
        for member in ("published", "partitions", "take_changes", "restore", "export", "items", "entities", "drop"):
            assert hasattr(table, member), (type(table).__name__, member)
        assert table.take_changes(0) == []
