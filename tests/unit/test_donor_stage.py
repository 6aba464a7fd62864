"""The donor stage without Faust: outcomes, segment updates, parity, redelivery, restore."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pytest

from models.contracts import (
    DonorProfile,
    DonorRelationship,
    DonorSegmentUpdate,
    EventOutcome,
    GiftChannel,
    GiftEvent,
    decode,
)
from models.features.donor_layout import (
    GIFT_COUNT,
    REFERRAL_COUNT,
)
from models.model_store import load_donor_model
from models.worlds import open_world
from offline.generate.donor_world import generate_donor_world
from offline.serving_view import donor_worker_view_scores
from stream.pipeline.donors import DonorStage
from stream.pipeline.records import RawRecord
from stream.scoring.donor_scorer import DonorScorer
from stream.settings import TopicNames
from stream.state.partitioned_donors import DonorPartition, PartitionedDonors
from tests.serving_helpers import SMALL_DONOR_FEATURES, consumed_records, restore_compacted, untrained_donor_artifact

TOPICS = TopicNames()
PARTITIONS = 3


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return untrained_donor_artifact(tmp_path_factory.mktemp("models"), threshold=0.5)


@pytest.fixture(scope="module")
def stream_records(tmp_path_factory) -> list[RawRecord]:
    """A generated donor world as the worker consumes it: per topic partition, in offset order."""
    root = tmp_path_factory.mktemp("donor-world")
    generate_donor_world(root, donors=150, seed=5, progress=False)
    return consumed_records(open_world(root), TOPICS, PARTITIONS)


CONTRACTS = {TOPICS.gifts: GiftEvent, TOPICS.donor_profiles: DonorProfile, TOPICS.donor_relationships: DonorRelationship}


def event_of(record: RawRecord):
    return decode(record.value, CONTRACTS[record.topic])


def stage_for(path, donors=None) -> DonorStage:
    loaded = load_donor_model(path)
    return DonorStage(donors or PartitionedDonors(loaded.features), DonorScorer(loaded), TOPICS, 16 * 1024)


def outputs_of(result, topic):
    return [o for o in result.outputs if o.topic == topic]


def outcome_scores(result) -> dict[str, dict[str, float]]:
    outcomes = [EventOutcome.model_validate_json(o.value) for o in outputs_of(result, TOPICS.outcomes)]
    return {o.event_id: o.scores for o in outcomes if o.outcome.value == "scored"}


def test_every_donor_event_gets_one_outcome_or_dead_letter(artifact, stream_records):
    bad = [RawRecord(TOPICS.gifts, 0, 10_000, b"k", b"{not json"),
           RawRecord(TOPICS.donor_profiles, 1, 10_000, b"k", b'{"event_id": "x"}'),
           RawRecord(TOPICS.donor_relationships, 2, 10_000, b"k", b"z" * 20_000)]
    result = stage_for(artifact).process(stream_records + bad)
    outcomes = [EventOutcome.model_validate_json(o.value) for o in outputs_of(result, TOPICS.outcomes)]
    assert len(outcomes) + sum(result.dead_letters.values()) == len(stream_records) + len(bad)
    assert sorted(o.event_id for o in outcomes) == sorted(event_of(r).event_id for r in stream_records)
    assert result.dead_letters == {"malformed_json": 1, "schema_violation": 1, "oversized": 1}
    kinds = Counter((o.topic, o.outcome.value) for o in outcomes)
    assert set(kinds) == {(TOPICS.gifts, "scored"), (TOPICS.donor_profiles, "applied"),
                          (TOPICS.donor_relationships, "applied")}
    assert result.scored == kinds[(TOPICS.gifts, "scored")] and result.applied == len(outcomes) - result.scored
    gift = next(o for o in outcomes if o.outcome.value == "scored")
    assert set(gift.scores) == {"high_engagement", "network_influence", "giving_consistency", "high_value",
                                "recent_engagement"} and gift.model_name == "multitarget"


def test_scores_match_the_offline_computation(artifact, stream_records):
    result = stage_for(artifact).process(stream_records)
    loaded = load_donor_model(artifact)
    # The partitions' consumption order: each partition's records in the stage's merge order,
    # which for one batch is the replay order.
    events = [event_of(r) for r in stream_records]
    offline = donor_worker_view_scores(events, loaded.model, loaded.features, PARTITIONS)
    online = outcome_scores(result)
    assert set(online) == set(offline) and len(online) > 500
    diff = max(abs(online[e][t] - offline[e][j]) for e in online for j, t in enumerate(loaded.targets))
    assert diff <= 1e-5


def test_a_membership_margin_publishes_fewer_changes_and_only_firm_ones(tmp_path, stream_records):
    def updates(margin):
        path = untrained_donor_artifact(tmp_path / f"m{margin}", threshold=0.5, margin=margin)
        result = stage_for(path).process(stream_records)
        return [DonorSegmentUpdate.model_validate_json(o.value) for o in outputs_of(result, TOPICS.donor_segments)]

    plain, steady = updates(0.0), updates(0.05)
    assert len(steady) < len(plain)
    for update in steady:  # a donor joins only above 0.55 and leaves only below 0.45
        for segment, p in update.probabilities.items():
            joined = segment in update.segments and segment not in update.previous_segments
            left = segment in update.previous_segments and segment not in update.segments
            assert (not joined or p >= 0.55) and (not left or p < 0.45)


@pytest.fixture(scope="module")
def tree_run(tmp_path_factory):
    """LightGBM donor boosters, a one-epoch network and their hybrid, trained on a world of their own."""
    from offline.train.donors import train_donors

    root = tmp_path_factory.mktemp("trees")
    generate_donor_world(root / "world", donors=400, seed=8, progress=False)
    train_donors(root / "world", root / "run", models=["lightgbm", "multitarget", "hybrid"], progress=False, epochs=1)
    return root / "run" / "artifacts"


@pytest.mark.parametrize("family", ["lightgbm", "hybrid"])
def test_a_tree_model_scores_like_the_offline_computation(tree_run, stream_records, family):
    from models.artifacts import latest_version
    from models.donor_hybrid import HybridDonorModel
    from models.gbdt import GbdtDonorModel

    tree_artifact = latest_version(tree_run, family)
    result = stage_for(tree_artifact).process(stream_records)
    loaded = load_donor_model(tree_artifact)
    assert isinstance(loaded.model, {"lightgbm": GbdtDonorModel, "hybrid": HybridDonorModel}[family])
    offline = donor_worker_view_scores([event_of(r) for r in stream_records], loaded.model, loaded.features,
                                       PARTITIONS)
    online = outcome_scores(result)
    assert set(online) == set(offline) and len(online) > 500
    diff = max(abs(online[e][t] - offline[e][j]) for e in online for j, t in enumerate(loaded.targets))
    assert diff <= 1e-5
    assert len({round(online[e]["high_value"], 6) for e in online}) > 10  # trees that score, not a constant


def test_segment_updates_are_published_only_when_membership_changes(tmp_path, stream_records):
    everything = stage_for(untrained_donor_artifact(tmp_path / "a", threshold=0.0)).process(stream_records)
    updates = [DonorSegmentUpdate.model_validate_json(o.value) for o in outputs_of(everything, TOPICS.donor_segments)]
    gifted = {event_of(r).donor_id for r in stream_records if r.topic == TOPICS.gifts}
    # Threshold 0: every segment from the first gift on, so one update per donor, then none.
    assert sorted(u.donor_id for u in updates) == sorted(gifted)
    assert all(len(u.segments) == 5 and u.previous_segments == [] for u in updates)
    assert everything.segment_changes == {s: len(gifted) for s in everything.segment_changes}
    assert len(everything.segment_changes) == 5
    nothing = stage_for(untrained_donor_artifact(tmp_path / "b", threshold=1.0)).process(stream_records)
    assert not outputs_of(nothing, TOPICS.donor_segments) and nothing.scored == everything.scored


def test_a_redelivered_batch_is_not_scored_or_applied_twice(artifact, stream_records):
    stage = stage_for(artifact)
    first = stage.process(stream_records[:400])
    again = stage.process(stream_records[:400])
    assert first.replayed == 0 and again.replayed == 400 and not again.outputs


def test_state_restored_from_changelog_continues_exactly(artifact, stream_records):
    cut, resume_from = 1200, 1000
    uninterrupted = stage_for(artifact)
    uninterrupted.process(stream_records[:cut])
    expected = uninterrupted.process(stream_records[cut:])

    crashed = stage_for(artifact)
    restored = PartitionedDonors(load_donor_model(artifact).features)
    restore_compacted(restored, [crashed.process(stream_records[start:start + 200]) for start in range(0, cut, 200)])
    resumed = stage_for(artifact, restored).process(stream_records[resume_from:])  # redelivery
    assert resumed.replayed == cut - resume_from
    got, want = outcome_scores(resumed), outcome_scores(expected)
    assert set(got) == set(want)
    assert max(abs(got[e][t] - want[e][t]) for e in got for t in got[e]) <= 1e-5

    def changes(result):
        return [(u.event_id, u.segments, u.previous_segments) for u in
                (DonorSegmentUpdate.model_validate_json(o.value) for o in outputs_of(result, TOPICS.donor_segments))]
    assert changes(resumed) == changes(expected) and changes(expected)


def test_an_event_missing_from_one_end_is_applied_to_that_end_only():
    """A crash can persist the donor's row but not the referrer's: redelivery fixes only the referrer."""
    gift = GiftEvent(event_id="g1", event_time=datetime(2024, 5, 1, tzinfo=timezone.utc), donor_id="d1",
                     amount=20.0, channel=GiftChannel.ONLINE, referrer_donor_id="d2")
    before = DonorPartition(SMALL_DONOR_FEATURES)
    assert before.apply(gift, offset=7)
    after = DonorPartition(SMALL_DONOR_FEATURES)
    d1 = before.row_of("d1")
    after.import_row(int(before.state.keys[d1]), before.export_rows([d1])[0][1])  # d1's row only
    assert after.apply(gift, offset=7) and not after.apply(gift, offset=7)
    for part in (before, after):
        assert part.state.meta[part.row_of("d1"), GIFT_COUNT] == 1
        assert part.state.meta[part.row_of("d2"), REFERRAL_COUNT] == 1  # the credit, once
    assert np.array_equal(after.applied[after.row_of("d2")], before.applied[before.row_of("d2")])


def test_crash_midway_through_the_changelog_publishes_exactly_the_uninterrupted_updates(artifact, stream_records):
    """Batch B's outputs and markers landed, only part of its donor rows did. Its gifts
    come again as replays (outputs are out), but the rows that missed them must still
    end with the segments that were published, or the next gift publishes a false change."""
    def updates(result):
        return [(u.event_id, u.segments, u.previous_segments) for u in
                (DonorSegmentUpdate.model_validate_json(o.value) for o in outputs_of(result, TOPICS.donor_segments))]

    a, b, c = stream_records[:1000], stream_records[1000:1600], stream_records[1600:]
    original = stage_for(artifact)
    first, second, third = original.process(a), original.process(b), original.process(c)
    part_of_second = {p: [*w.markers, *w.records[: len(w.records) // 3]] for p, w in second.changelog.items()}
    restored = PartitionedDonors(load_donor_model(artifact).features)
    for changelog in (first.changelog, part_of_second):
        for partition, records in changelog.items():
            for key, blob in records:
                restored.restore(partition, key, blob)
    resumed = stage_for(artifact, restored)
    again = resumed.process(b)
    assert again.replayed == len(b) and not again.outputs
    assert updates(resumed.process(c)) == updates(third) and updates(third)


def test_a_redelivered_bad_donor_record_is_not_dead_lettered_again(artifact, stream_records):
    bad = [RawRecord(TOPICS.donor_profiles, 2, 10_000, b"k", b'{"event_id": "x"}')]
    stage = stage_for(artifact)
    first = stage.process(stream_records[:300] + bad)
    assert first.dead_letters == {"schema_violation": 1}
    restored = PartitionedDonors(load_donor_model(artifact).features)
    restore_compacted(restored, [first])
    again = stage_for(artifact, restored).process(stream_records[:300] + bad)
    assert again.replayed == 301 and not again.outputs
