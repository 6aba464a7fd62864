"""The AML signals among the event features: each one on a stream built to show it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.features.account_state import AccountState
from models.features.transactions import (
    EVENT_FEATURES,
    RICH_FEATURES,
    RawTransaction,
    TransactionFeatureConfig,
    TransactionFeaturizer,
)

T0 = 1.736e9
HOUR = 3600.0


def features(txs: list[RawTransaction]) -> list[dict[str, float]]:
    f = TransactionFeaturizer(AccountState(window=50), TransactionFeatureConfig())
    batch = f.featurize(txs)
    return [{name: float(batch.event[i, EVENT_FEATURES.index(name)]) for name in RICH_FEATURES} for i in range(len(txs))]


def tx(source, destination, amount, hours):
    return RawTransaction(source, destination, amount, T0 + hours * HOUR, 1, 0)


def test_rich_features_are_named_once_and_follow_the_base_features():
    assert len(set(RICH_FEATURES)) == len(RICH_FEATURES)
    assert EVENT_FEATURES[-len(RICH_FEATURES):] == RICH_FEATURES


def test_a_cycle_back_to_the_source_is_found_one_and_two_hops_out():
    # a -> b -> c, then c pays a: a's money came back through b (one account between).
    # p -> q -> r -> s, then s pays p: two accounts between.
    rows = features([tx("a", "b", 500, 0), tx("b", "c", 480, 1), tx("c", "a", 470, 2),
                     tx("p", "q", 500, 0), tx("q", "r", 480, 1), tx("r", "s", 470, 2), tx("s", "p", 460, 3)])
    assert rows[2]["cycles_via_1"] == pytest.approx(math.log1p(1))
    assert rows[2]["cycles_via_2"] == 0.0
    assert rows[6]["cycles_via_1"] == 0.0
    assert rows[6]["cycles_via_2"] == pytest.approx(math.log1p(1))
    assert rows[1]["cycles_via_1"] == rows[1]["cycles_via_2"] == 0.0  # b -> c closes nothing


def test_fan_in_then_pass_through_shows_at_the_mule():
    senders = [tx(f"s{i}", "mule", 900 + i, i * 0.1) for i in range(6)]
    rows = features([*senders, tx("mule", "exit", 5000, 1.0)])
    out = rows[-1]
    assert out["source_in_distinct"] == pytest.approx(math.log1p(6))
    assert out["source_fan_in_ratio"] == 1.0
    assert out["source_in_count_1h"] == pytest.approx(math.log1p(6))
    assert out["source_in_count_1d"] == pytest.approx(math.log1p(6))
    assert out["source_has_incoming"] == 1.0
    assert out["source_log_hours_since_incoming"] == pytest.approx(math.log1p(0.5), rel=1e-4)
    assert out["amount_vs_source_last_incoming"] == pytest.approx(math.log1p(5000) - math.log1p(905), rel=1e-5)
    assert out["amount_share_of_source_inflow_1d"] == pytest.approx(5000 / sum(900 + i for i in range(6)), rel=1e-5)
    assert out["source_net_inflow_7d"] == pytest.approx(math.log1p(sum(900 + i for i in range(6))), rel=1e-5)
    assert rows[0]["source_has_incoming"] == 0.0  # first sight: nothing yet


def test_velocity_counts_each_horizon_and_forgets_outside_it():
    history = [tx("a", f"x{i}", 10, -h) for i, h in enumerate([40 * 24, 10 * 24, 2 * 24, 5, 0.5])]
    rows = features([*sorted(history, key=lambda t: t.timestamp_s), tx("a", "y", 10, 0)])
    last = rows[-1]
    expected = {"1h": 1, "1d": 2, "7d": 3, "30d": 4}
    for horizon, count in expected.items():
        assert last[f"source_out_count_{horizon}"] == pytest.approx(math.log1p(count)), horizon
    assert last["source_out_distinct"] == pytest.approx(math.log1p(5))
    assert last["source_in_count_30d"] == 0.0


def test_amount_echoes_rounds_and_the_pair_both_ways():
    rows = features([tx("a", "b", 1000, 0), tx("b", "a", 1050, 1), tx("a", "b", 1000, 2), tx("a", "b", 9500, 3)])
    third = rows[2]
    assert third["source_amount_echo_exact"] == pytest.approx(math.log1p(1))  # 1000 before
    assert third["source_amount_echo_10pct"] == pytest.approx(math.log1p(2))  # 1000 and 1050
    assert third["amount_round_100"] == third["amount_round_1000"] == 1.0
    assert third["pair_reciprocal_count"] == pytest.approx(math.log1p(1))  # b paid a once
    assert third["pair_log_sum"] == pytest.approx(math.log1p(2050), rel=1e-5)
    assert third["pair_log_hours_since_last"] == pytest.approx(math.log1p(1), rel=1e-4)
    assert rows[3]["amount_just_under_10k"] == 1.0 and rows[3]["amount_round_1000"] == 0.0
    assert rows[1]["source_min_log_amount"] == pytest.approx(math.log1p(1000), rel=1e-6)


def test_shared_counterparties_count_once_each():
    rows = features([tx("a", "m", 10, 0), tx("a", "m", 10, 0.1), tx("b", "m", 10, 0.2), tx("a", "n", 10, 0.3),
                     tx("b", "n", 10, 0.4), tx("a", "b", 10, 1)])
    assert rows[-1]["common_counterparties"] == pytest.approx(math.log1p(2))  # m and n


def test_every_rich_feature_is_finite_on_a_random_stream():
    rng = np.random.default_rng(0)
    txs = [tx(f"u{rng.integers(20)}", f"u{rng.integers(20)}", float(rng.lognormal(5, 2)), i * 0.05) for i in range(500)]
    rows = features([t for t in txs if t.source != t.destination])
    assert all(math.isfinite(v) for row in rows for v in row.values())
