"""Replay through the real embedded broker: every event comes back, bit for bit."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from models.contracts import DonorProfile, GiftEvent, TransactionEvent, decode
from models.worlds import WorldManifest, WorldWriter, open_world
from stream.kafka.readback import read_topics
from stream.kafka.topics import TopicLayoutError, TopicSpec, ensure_topics, topic_specs
from stream.replay import iter_wire_events, replay_world

pytestmark = pytest.mark.integration
run = asyncio.run

START = datetime(2025, 3, 1, tzinfo=timezone.utc)
CONTRACTS = {"transactions": TransactionEvent, "gifts": GiftEvent, "donor-profiles": DonorProfile}


def _small_world(tmp_path, n_tx=1500, n_gifts=500):
    """Hand-written so this test does not depend on the generators."""
    times = [START + timedelta(seconds=7 * i) for i in range(n_tx)]
    with WorldWriter(tmp_path) as w:
        w.write_events("transactions", {
            "event_id": [f"t{i}" for i in range(n_tx)],
            "event_time": times,
            "source_account": [f"a{i % 37}" for i in range(n_tx)],
            "destination_account": [f"a{(i * 7 + 1) % 37 + 37}" for i in range(n_tx)],
            "amount": [round(1 + (i * 13.37) % 900, 2) for i in range(n_tx)],
            "currency": ["USD"] * n_tx,
            "type": ["payment", "transfer", "cash_out"] * (n_tx // 3),
        })
        w.write_events("gifts", {
            "event_id": [f"g{i}" for i in range(n_gifts)],
            # Same timestamps as transactions: ties must keep their stream order.
            "event_time": times[:n_gifts],
            "donor_id": [f"d{i % 11}" for i in range(n_gifts)],
            "amount": [25.0 + i for i in range(n_gifts)],
            "channel": ["online"] * n_gifts,
            "campaign": ["été-appeal-2025 ✓"] * n_gifts,  # non-ASCII must survive the trip
        })
        w.write_events("donor_profiles", {
            "event_id": [f"p{i}" for i in range(11)],
            "event_time": [START] * 11,
            "donor_id": [f"d{i}" for i in range(11)],
            "wealth_index": [i / 10 for i in range(11)],
            "age_band": ["35_44"] * 11,
        })
        w.finish(WorldManifest(kind="fraud", synthetic=True, source="test", description="round-trip test world"))
    return open_world(tmp_path)


def test_every_replayed_event_comes_back_bit_for_bit(tmp_path, kafka_settings):
    world = _small_world(tmp_path)
    expected = list(iter_wire_events(world))
    assert len(expected) == 1500 + 500 + 11

    run(ensure_topics(kafka_settings))
    report = run(replay_world(world, kafka_settings, progress=False))
    assert report.sent == {"donor-profiles": 11, "gifts": 500, "transactions": 1500}

    topics = ["transactions", "gifts", "donor-profiles"]
    records = run(read_topics(kafka_settings, topics, expected=len(expected)))

    sent = Counter((kafka_settings.topics.for_stream(e.stream), e.key, e.value) for e in expected)
    got = Counter((r.topic, r.key, r.value) for r in records)
    assert got == sent, f"missing {sum((sent - got).values())}, extra {sum((got - sent).values())}"
    for record in records:  # what went over the wire is valid input for the worker
        decode(record.value, CONTRACTS[record.topic])

    # Events of one entity share a partition, so they come back in event-time order.
    per_key = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        per_key[(record.topic, record.key)].append(decode(record.value, CONTRACTS[record.topic]).event_time)
    assert all(times == sorted(times) for times in per_key.values())
    assert len({(r.topic, r.partition) for r in records if r.key == b"a0"}) == 1


def test_merge_order_is_event_time_then_profiles_before_gifts(tmp_path):
    world = _small_world(tmp_path)
    streams_at_start = [e.stream for e in iter_wire_events(world)][:13]
    assert streams_at_start[:11] == ["donor_profiles"] * 11
    assert streams_at_start[11:13] == ["gifts", "transactions"]


def test_rate_limit_paces_the_replay(tmp_path, kafka_settings):
    world = _small_world(tmp_path, n_tx=150, n_gifts=0)
    run(ensure_topics(kafka_settings))
    started = time.monotonic()
    report = run(replay_world(world, kafka_settings, rate=300, progress=False))
    elapsed = time.monotonic() - started
    assert report.total == 161
    assert elapsed >= 160 / 300 * 0.9, f"161 events at 300/s took only {elapsed:.2f} s"


def test_topics_are_created_with_the_configured_partitions(kafka_settings):
    outcome = run(ensure_topics(kafka_settings))
    assert set(outcome) == {s.name for s in topic_specs(kafka_settings)}
    assert set(run(ensure_topics(kafka_settings)).values()) == {"exists"}


def test_a_topic_with_another_partition_count_is_refused(kafka_settings):
    run(ensure_topics(kafka_settings, [TopicSpec("odd-topic", 2)]))
    with pytest.raises(TopicLayoutError, match="odd-topic.*2 partitions.*TRIBUTARY_PARTITIONS"):
        run(ensure_topics(kafka_settings, [TopicSpec("odd-topic", 4)]))


def test_replay_of_an_invalid_world_row_names_the_row(tmp_path, kafka_settings):
    from models.worlds import WorldError

    with WorldWriter(tmp_path) as w:
        w.write_events("gifts", {
            "event_id": ["g0", "g1"], "event_time": [START, START], "donor_id": ["d0", "d1"],
            "amount": [10.0, -5.0], "channel": ["online", "online"],
        })
        w.finish(WorldManifest(kind="donors", synthetic=True, source="test", description="bad row"))
    with pytest.raises(WorldError, match=r"gifts.parquet row 1 \(g1\).*amount"):
        run(replay_world(open_world(tmp_path), kafka_settings, progress=False))
