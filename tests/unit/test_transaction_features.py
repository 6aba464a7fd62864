"""Transaction features: causal, exact, batch-size invariant, and restorable from exported state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.features.account_state import NO_ACCOUNT, AccountState, account_key
from models.features.transactions import (
    EDGE_FEATURES,
    EVENT_FEATURES,
    NODE_FEATURES,
    SEQ_FEATURES,
    RawTransaction,
    TransactionBatch,
    TransactionFeatureConfig,
    TransactionFeaturizer,
)

CFG = TransactionFeatureConfig(window=6, fanout1=3, fanout2=2)
T0 = 1.736e9  # 2025-01-04


def featurizer(cfg=CFG) -> TransactionFeaturizer:
    return TransactionFeaturizer(AccountState(window=cfg.window, capacity=4), cfg)


def stream(n=400, accounts=25, seed=3) -> list[RawTransaction]:
    rng = np.random.default_rng(seed)
    out, t = [], T0
    for _ in range(n):
        a, b = rng.choice(accounts, 2, replace=False)
        t += float(rng.exponential(300))
        out.append(RawTransaction(f"acct{a}", f"acct{b}", float(rng.lognormal(4, 1)), t, int(rng.integers(5)),
                                  int(rng.integers(-1, 7))))
    return out


def assert_same(a: TransactionBatch, b: TransactionBatch):
    for name, values in a.arrays().items():
        np.testing.assert_array_equal(values, b.arrays()[name], err_msg=name)


def test_shapes_follow_the_schema():
    batch = featurizer().featurize(stream(10))
    assert batch.event.shape == (10, len(EVENT_FEATURES))
    assert batch.seq.shape == (10, 2, CFG.window, len(SEQ_FEATURES))
    assert batch.hop1.shape == (10, 2, CFG.fanout1, len(NODE_FEATURES) + len(EDGE_FEATURES))
    assert batch.hop2.shape == (10, 2, CFG.fanout1, CFG.fanout2, len(NODE_FEATURES) + len(EDGE_FEATURES))
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in batch.arrays().values())


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_batch_size_never_changes_a_feature(batch_size):
    txs = stream()
    whole = featurizer().featurize(txs)
    f = featurizer()
    parts = TransactionBatch.concat([f.featurize(txs[i:i + batch_size]) for i in range(0, len(txs), batch_size)])
    assert_same(whole, parts)


def test_features_see_only_the_past():
    """Appending future events (even wild ones) must not change any earlier event's features."""
    txs = stream()
    prefix = featurizer().featurize(txs[:250])
    future = [RawTransaction("acct1", "acct2", 1e9, txs[249].timestamp_s + 1 + i, 1, 0) for i in range(50)]
    extended = featurizer().featurize(txs[:250] + future)
    assert_same(prefix, extended.take(slice(0, 250)))


def test_first_sight_has_no_history_then_history_accumulates():
    f = featurizer()
    txs = [RawTransaction("a", "b", 99.0, T0 + 60 * i, 1, 2) for i in range(3)]
    batch = f.featurize(txs)
    known = EVENT_FEATURES.index("source_known")
    assert batch.event[:, known].tolist() == [0.0, 1.0, 1.0]
    assert batch.seq_mask[:, 0].sum(axis=1).tolist() == [0.0, 1.0, 2.0]
    # a->b twice before the third: the pair was seen twice, both times with b.
    assert batch.event[2, EVENT_FEATURES.index("pair_count_in_window")] == 2.0
    latest = batch.seq[2, 0, -1]  # source's newest window entry, right-aligned
    assert latest[SEQ_FEATURES.index("log_amount")] == pytest.approx(math.log1p(99.0), rel=1e-6)
    assert latest[SEQ_FEATURES.index("outgoing")] == 1.0
    assert latest[SEQ_FEATURES.index("log_hours_ago")] == pytest.approx(math.log1p(1 / 60), rel=1e-5)
    # the destination sees the same money arriving
    assert batch.seq[2, 1, -1, SEQ_FEATURES.index("outgoing")] == 0.0
    node = batch.node[2, 0]
    assert node[NODE_FEATURES.index("log_n_out")] == pytest.approx(math.log1p(2))
    assert node[NODE_FEATURES.index("log_n_in")] == 0.0


def test_window_keeps_only_the_latest_events():
    f = featurizer()
    txs = [RawTransaction("a", f"x{i}", 10.0 + i, T0 + 60 * i, 0, -1) for i in range(10)]
    batch = f.featurize(txs)
    last = batch.seq[9, 0]
    assert batch.seq_mask[9, 0].sum() == CFG.window
    amounts = np.expm1(last[:, SEQ_FEATURES.index("log_amount")])
    np.testing.assert_allclose(amounts, [13, 14, 15, 16, 17, 18], rtol=1e-5)  # oldest first


def test_two_hop_neighbourhood_reaches_counterparties_of_counterparties():
    f = featurizer()
    f.featurize([RawTransaction("c", "d", 5.0, T0, 1, -1), RawTransaction("b", "c", 6.0, T0 + 10, 1, -1)])
    batch = f.featurize([RawTransaction("a", "b", 7.0, T0 + 20, 1, -1)])
    # a is new: no neighbourhood. b's latest counterparty is c; c's latest are b then d.
    assert batch.hop1_mask[0, 0].sum() == 0
    assert batch.hop1_mask[0, 1].tolist() == [1.0, 0.0, 0.0]
    assert batch.hop2_mask[0, 1, 0].tolist() == [1.0, 1.0]
    amount = len(NODE_FEATURES) + EDGE_FEATURES.index("edge_log_amount")
    assert np.expm1(batch.hop2[0, 1, 0, :, amount]).round(3).tolist() == [6.0, 5.0]


def test_exported_state_restores_to_identical_features():
    """What a restart does: rebuild state from per-account records, then carry on."""
    txs = stream(600)
    original = featurizer()
    original.featurize(txs[:400])
    records = {key: original.state.export_account(key) for key in list(original.state.index.keys())}

    restored = featurizer()
    for key in sorted(records, reverse=True):  # any order: rows differ, features must not
        restored.state.import_account(key, records[key])
    assert len(restored.state) == len(original.state)
    assert_same(original.featurize(txs[400:]), restored.featurize(txs[400:]))


def test_state_grows_past_its_initial_capacity_and_stays_small():
    state = AccountState(window=50, capacity=2)
    f = TransactionFeaturizer(state)
    f.featurize(stream(300, accounts=200))
    assert len(state) > 100 and state.capacity >= len(state) + 1
    assert state.nbytes_per_account() < 1024
    assert state.lookup(account_key("never-seen")) == NO_ACCOUNT


def test_schema_hash_changes_with_the_configuration():
    assert CFG.schema_hash() == TransactionFeatureConfig(window=6, fanout1=3, fanout2=2).schema_hash()
    assert CFG.schema_hash() != TransactionFeatureConfig().schema_hash()


def test_state_and_config_must_agree_on_the_window():
    with pytest.raises(ValueError, match="keeps 50 events"):
        TransactionFeaturizer(AccountState(window=50), CFG)


def test_redelivered_transactions_are_not_applied_twice():
    """After a crash, events already in the restored state come again: they must not
    change it, and they are flagged so the worker does not score them again."""
    txs = stream(300)
    offsets = np.arange(300)
    reference = featurizer()
    reference.featurize(txs[:200])
    tail_reference = reference.featurize(txs[200:])

    f = featurizer()
    def args(part):
        return ([t.source for t in part], [t.destination for t in part],
                np.array([t.amount for t in part]), np.array([t.timestamp_s for t in part]),
                np.array([t.type_code for t in part]), np.array([t.channel_code for t in part]))
    f.featurize_columns(*args(txs[:200]), offsets=offsets[:200])
    # state written up to offset 199, but the consumer only committed offset 150
    restored = featurizer()
    for key in list(f.state.index.keys()):
        restored.state.import_account(key, f.state.export_account(key))
    again = restored.featurize_columns(*args(txs[150:]), offsets=offsets[150:])
    assert again.replayed[:50].all() and not again.replayed[50:].any()
    assert_same(tail_reference, again.take(slice(50, None)))


def test_a_half_applied_transaction_is_completed_for_the_missing_endpoint():
    """A crash between two accounts' changelog writes: one endpoint has the event, one not."""
    a = featurizer()
    a.featurize_columns(["a"], ["b"], np.array([10.0]), np.array([T0]), np.array([1]), np.array([-1]), offsets=np.array([0]))
    b = featurizer()
    b.state.import_account(account_key("a"), a.state.export_account(account_key("a")))  # b's write was lost
    redelivered = b.featurize_columns(["a"], ["b"], np.array([10.0]), np.array([T0]), np.array([1]), np.array([-1]),
                                      offsets=np.array([0]))
    assert redelivered.replayed.tolist() == [True]
    nxt = [RawTransaction("c", "b", 5.0, T0 + 60, 1, -1)]
    assert_same(a.featurize(nxt), b.featurize(nxt))
