"""Donor features: causal, the same in one pass and event by event, restorable from
exported state, bounded, and explicit about what is missing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow.compute as pc
import pytest

from models.contracts import (
    AgeBand,
    DonorProfile,
    DonorRelationship,
    GiftChannel,
    GiftEvent,
    RelationshipType,
    from_record,
)
from models.features.donor_state import donor_key
from models.features.donors import (
    EDGE_FEATURES,
    F_NODE,
    GIFT_FEATURES,
    NODE_FEATURES,
    TAB_FEATURES,
    DonorBatch,
    DonorFeatureConfig,
    DonorFeaturizer,
)
from models.features.partitioning import kafka_partition
from models.worlds import WorldManifest, WorldWriter, open_world
from offline.generate.donor_world import generate_donor_world
from offline.train.donor_data import load_donor_dataset
from offline.train.donor_replay import donor_state_at, donor_states_at

CFG = DonorFeatureConfig()
SMALL = DonorFeatureConfig(window=4, fanout=8, neighbours=3)
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
CONTRACTS = {"gifts": GiftEvent, "donor_profiles": DonorProfile, "donor_relationships": DonorRelationship}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("donors")
    generate_donor_world(out, donors=300, seed=5, progress=False)
    return open_world(out)


@pytest.fixture(scope="module")
def labelled(world) -> list[str]:
    return world.read_labels("donor_targets").column("donor_id").to_pylist()


def features(world, at, donors, config=CFG, inclusive=False) -> DonorBatch:
    return DonorFeaturizer(donor_state_at(world, at, config, inclusive=inclusive), config).featurize(donors, at)


def assert_same(a: DonorBatch, b: DonorBatch) -> None:
    for name, values in a.arrays().items():
        np.testing.assert_array_equal(values, b.arrays()[name], err_msg=name)


def events_before(world, until: datetime, inclusive: bool = False) -> list:
    """Every event of the world before `until` as contract objects, merged in event-time order."""
    out = []
    for stream, contract in CONTRACTS.items():
        table = world.read_events(stream)
        keep = pc.less_equal(table["event_time"], until) if inclusive else pc.less(table["event_time"], until)
        out += [from_record(r, contract) for r in table.filter(keep).to_pylist()]
    return sorted(out, key=lambda e: e.event_time)  # stable: each stream keeps its own order


def gift(donor: str, day: int, amount: float = 20.0, **kw) -> GiftEvent:
    return GiftEvent(event_id=f"g-{donor}-{day}-{amount}", event_time=T0 + timedelta(days=day), donor_id=donor,
                     amount=amount, channel=kw.pop("channel", GiftChannel.ONLINE), **kw)


def edge(a: str, b: str, day: float, kind=RelationshipType.FAMILY, action="add", strength=None) -> DonorRelationship:
    return DonorRelationship(event_id=f"r-{a}-{b}-{day}-{action}", event_time=T0 + timedelta(days=day), donor_id=a,
                             related_donor_id=b, relationship_type=kind, action=action, strength=strength)


def test_shapes_follow_the_schema_and_values_are_finite(world, labelled):
    batch = features(world, world.manifest.cutoff, labelled)
    n, W, K = len(labelled), CFG.window, CFG.neighbours
    assert batch.tab.shape == batch.tab_mask.shape == (n, len(TAB_FEATURES))
    assert batch.seq.shape == (n, W, len(GIFT_FEATURES)) and batch.seq_mask.shape == (n, W)
    assert batch.node.shape == (n, len(NODE_FEATURES))
    assert batch.nbr.shape == (n, 5, K, len(NODE_FEATURES) + len(EDGE_FEATURES))
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in batch.arrays().values())
    # The synthetic world has every modality: most donors have gifts, many have neighbours.
    share = batch.modality_mask().mean(axis=0)
    assert share[0] == 1.0 and share[1] > 0.8 and share[2] > 0.2
    assert len(CFG.schema_hash()) == 16 and CFG.schema_hash() != SMALL.schema_hash()


def test_future_events_never_change_features_at_t(world, labelled, tmp_path):
    """Rewrite everything after t (drop it, add wild gifts and edges): features at t stay identical."""
    t = world.manifest.cutoff - timedelta(days=200)
    writer_dir = tmp_path / "rewritten"
    with WorldWriter(writer_dir) as writer:
        for stream in CONTRACTS:
            table = world.read_events(stream)
            writer.write_events(stream, table.filter(pc.less(table["event_time"], t)))
        late = t + timedelta(seconds=1)
        donors = labelled[:20]
        writer.write_events("gifts", {
            "event_id": [f"wild{i}" for i in range(20)], "event_time": [late + timedelta(seconds=i) for i in range(20)],
            "donor_id": donors, "amount": [1e6] * 20, "currency": ["USD"] * 20, "channel": ["event"] * 20,
            "is_recurring": [True] * 20, "referrer_donor_id": labelled[20:40],
        })
        writer.write_events("donor_relationships", {
            "event_id": [f"wildr{i}" for i in range(19)],
            "event_time": [late + timedelta(seconds=i) for i in range(19)],
            "donor_id": donors[:19], "related_donor_id": donors[1:20], "relationship_type": ["family"] * 19,
            "action": ["add"] * 19, "strength": [1.0] * 19,
        })
        writer.finish(WorldManifest(kind="donors", synthetic=True, source="test", description="rewritten"))
    assert_same(features(world, t, labelled), features(open_world(writer_dir), t, labelled))


def test_reading_before_the_latest_ingested_event_is_refused(world, labelled):
    state = donor_state_at(world, world.manifest.cutoff, CFG)
    with pytest.raises(ValueError, match="leak"):
        DonorFeaturizer(state, CFG).featurize(labelled[:3], world.manifest.cutoff - timedelta(days=30))


def test_one_pass_equals_event_by_event_and_the_worker_read_after_a_gift(world, labelled):
    cutoff = world.manifest.cutoff
    events = events_before(world, cutoff)
    live = DonorFeaturizer(CFG.new_state(capacity=8), CFG)  # tiny capacity: growth is exercised too
    checkpoints = {}
    gifts = [i for i, e in enumerate(events) if isinstance(e, GiftEvent)]
    probe = {gifts[len(gifts) // 3], gifts[-1]}
    for i, event in enumerate(events):
        live.state.ingest(event)
        if i in probe:  # what the worker does: after a gift, read that donor at the gift's time
            checkpoints[event] = live.featurize([event.donor_id], event.event_time)
    assert_same(features(world, cutoff, labelled), live.featurize(labelled, cutoff))
    for event, streamed in checkpoints.items():
        assert streamed.seq_mask[0, -1] == 1.0  # the gift itself is in the window, newest, 0 days old
        assert streamed.seq[0, -1, GIFT_FEATURES.index("log_days_ago")] == 0.0
        assert_same(features(world, event.event_time, [event.donor_id], inclusive=True), streamed)


def test_per_partition_states_equal_a_worker_per_partition_and_training_reads_them(world, labelled):
    """With P partitions, each donor's features are those its home partition's state
    holds after consuming that partition's events one by one; training reads the same."""
    cutoff, partitions = world.manifest.cutoff, 4
    home = {d: kafka_partition(d.encode(), partitions) for d in labelled}
    live = [DonorFeaturizer(CFG.new_state(), CFG) for _ in range(partitions)]
    for event in events_before(world, cutoff):
        live[kafka_partition(event.donor_id.encode(), partitions)].state.ingest(event)
    states = donor_states_at(world, cutoff, CFG, partitions=partitions)
    for p in range(partitions):
        mine = [d for d in labelled if home[d] == p]
        assert mine and len(states[p]) == len(live[p].state)
        assert_same(DonorFeaturizer(states[p], CFG).featurize(mine, cutoff), live[p].featurize(mine, cutoff))
    data = load_donor_dataset(world, CFG, partitions=partitions)
    assert data.partitions == data.description["partitions"] == partitions
    row = {d: i for i, d in enumerate(data.donor_ids.tolist())}
    for p in range(partitions):
        mine = [d for d in labelled if home[d] == p]
        assert_same(data.batch.take(np.array([row[d] for d in mine])), live[p].featurize(mine, cutoff))
    # The split is real: a donor whose neighbours live elsewhere sees less of them than with one partition.
    whole = load_donor_dataset(world, CFG, partitions=1)
    assert whole.partitions == 1
    assert not np.array_equal(whole.batch.nbr, data.batch.nbr)
    # A donor's own profile and gifts are at home; what differs is what other donors' events said.
    differs = {TAB_FEATURES[j] for j in np.flatnonzero((whole.batch.tab != data.batch.tab).any(axis=0))}
    assert differs and all(any(k in name for k in ("degree", "edge", "referral")) for name in differs), differs


def test_one_donor_at_a_time_equals_all_at_once(world, labelled):
    f = DonorFeaturizer(donor_state_at(world, world.manifest.cutoff, CFG), CFG)
    whole = f.featurize(labelled, world.manifest.cutoff)
    singles = DonorBatch.concat([f.featurize([d], world.manifest.cutoff) for d in labelled[:40]])
    assert_same(whole.take(slice(0, 40)), singles)


def test_exported_state_restores_to_identical_features_and_carries_on(world, labelled):
    cutoff = world.manifest.cutoff
    original = donor_state_at(world, cutoff, CFG)
    records = {int(key): original.export_donor(int(key)) for key in original.index.keys()}
    restored = CFG.new_state(capacity=4)
    for key, blob in reversed(list(records.items())):  # any order: neighbours may come later
        restored.import_donor(key, blob)
    assert len(restored) == len(original)
    assert_same(DonorFeaturizer(original, CFG).featurize(labelled, cutoff),
                DonorFeaturizer(restored, CFG).featurize(labelled, cutoff))
    # Both go on ingesting the same later events and stay identical.
    later = [e for e in events_before(world, cutoff + timedelta(days=90)) if e.event_time >= cutoff]
    for state in (original, restored):
        for event in later:
            state.ingest(event)
    at = cutoff + timedelta(days=90)
    assert_same(DonorFeaturizer(original, CFG).featurize(labelled, at), DonorFeaturizer(restored, CFG).featurize(labelled, at))


def test_missing_profile_attributes_are_masked_not_zero():
    f = DonorFeaturizer(SMALL.new_state(), SMALL)
    f.state.ingest(DonorProfile(event_id="p1", event_time=T0, donor_id="known", wealth_index=0.0, home_owner=False,
                                age_band=AgeBand.AGE_45_54, email_open_rate_12m=0.0))
    f.state.ingest(DonorProfile(event_id="p2", event_time=T0, donor_id="sparse"))
    batch = f.featurize(["known", "sparse", "stranger"], T0 + timedelta(days=1))
    col = {name: i for i, name in enumerate(TAB_FEATURES)}
    for name in ("wealth_index", "home_owner", "email_open_rate_12m"):
        # A true zero is present; an absent attribute is masked (and its value is 0, not NaN).
        assert (batch.tab[0, col[name]], batch.tab_mask[0, col[name]]) == (0.0, 1.0)
        assert (batch.tab[1, col[name]], batch.tab_mask[1, col[name]]) == (0.0, 0.0)
    assert batch.tab[0, col["age_band"]] == 3.0 and batch.tab_mask[1, col["age_band"]] == 0.0
    assert batch.tab_mask[1, col["region_00"]: col["region_00"] + 16].sum() == 0
    # No gifts: gift statistics that need one are masked, counts are a true zero.
    assert batch.tab_mask[0, col["mean_log_amount"]] == 0.0 and batch.tab_mask[0, col["log_days_since_last_gift"]] == 0.0
    assert (batch.tab[0, col["log_gift_count"]], batch.tab_mask[0, col["log_gift_count"]]) == (0.0, 1.0)
    # An unknown donor has no profile (has_profile is a present 0) and no modality beyond the tabular.
    assert batch.tab[2, col["has_profile"]] == 0.0 and batch.tab_mask[2, col["has_profile"]] == 1.0
    assert batch.modality_mask().tolist() == [[1.0, 0.0, 0.0]] * 3
    assert not batch.seq_mask.any() and not batch.nbr_mask.any()


def test_gift_window_is_bounded_right_aligned_and_newest_last():
    f = DonorFeaturizer(SMALL.new_state(), SMALL)
    for day in range(10):
        f.state.ingest(gift("a", day, amount=10.0 + day))
    batch = f.featurize(["a"], T0 + timedelta(days=10))
    assert batch.seq_mask[0].tolist() == [1.0] * SMALL.window
    amounts = np.expm1(batch.seq[0, :, GIFT_FEATURES.index("log_amount")])
    np.testing.assert_allclose(amounts, [16, 17, 18, 19], rtol=1e-5)
    col = {name: i for i, name in enumerate(TAB_FEATURES)}
    assert batch.tab[0, col["log_gift_count"]] == pytest.approx(np.log1p(10))  # aggregates are all-time
    assert batch.tab[0, col["window_full"]] == 1.0


def test_adjacency_is_bounded_exact_in_degree_and_newest_first():
    f = DonorFeaturizer(SMALL.new_state(), SMALL)
    for i in range(12):
        f.state.ingest(edge("hub", f"n{i}", i, strength=None if i == 11 else 0.5))
    f.state.ingest(edge("hub", "n11", 20, action="remove"))
    f.state.ingest(edge("hub", "n0", 21, action="remove"))  # pushed out of the list long ago, still live
    f.state.ingest(edge("n3", "hub", 22, kind=RelationshipType.BOARD_COMMITTEE))
    # The list kept the latest 8 (n4..n11), then lost n11; the degree counts every live edge.
    assert f.state.neighbours("hub", RelationshipType.FAMILY) == [donor_key(f"n{i}") for i in range(4, 11)]
    batch = f.featurize(["hub", "n5"], T0 + timedelta(days=30))
    col = {name: i for i, name in enumerate(TAB_FEATURES)}
    assert batch.tab[0, col["log_degree_family"]] == pytest.approx(np.log1p(10))
    assert batch.tab[0, col["log_degree_board_committee"]] == pytest.approx(np.log1p(1))
    assert batch.nbr_mask[0, 0].tolist() == [1.0] * SMALL.neighbours
    age = F_NODE + EDGE_FEATURES.index("log_days_since_added")
    np.testing.assert_allclose(np.expm1(batch.nbr[0, 0, :, age]), [20, 21, 22], rtol=1e-5)  # n10, n9, n8
    # The edge is undirected: the neighbour sees the hub.
    assert batch.nbr_mask[1, 0].tolist() == [1.0, 0.0, 0.0]
    assert batch.nbr[1, 0, 0, NODE_FEATURES.index("log_degree_total")] == pytest.approx(np.log1p(11))


def test_missing_edge_strength_is_flagged_and_referrals_credit_the_referrer():
    f = DonorFeaturizer(SMALL.new_state(), SMALL)
    f.state.ingest(edge("a", "b", 0))
    f.state.ingest(gift("c", 1, referrer_donor_id="a", channel=GiftChannel.PEER_TO_PEER))
    batch = f.featurize(["a", "c"], T0 + timedelta(days=2))
    assert batch.nbr[0, 0, 0, F_NODE + EDGE_FEATURES.index("strength_missing")] == 1.0
    assert batch.nbr[0, 0, 0, F_NODE + EDGE_FEATURES.index("strength")] == 0.0
    col = {name: i for i, name in enumerate(TAB_FEATURES)}
    assert batch.tab[0, col["log_referral_count"]] == pytest.approx(np.log1p(1))
    assert batch.tab_mask[0, col["mean_edge_strength"]] == 0.0
    assert batch.seq[1, -1, GIFT_FEATURES.index("referred")] == 1.0
    assert batch.seq[1, -1, GIFT_FEATURES.index("channel_peer_to_peer")] == 1.0
