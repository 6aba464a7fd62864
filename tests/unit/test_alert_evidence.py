"""Alert case evidence: account ids kept per state row, window steps weighed by occlusion and cited."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from models.features.account_names import AccountNames
from models.features.account_state import AccountState
from models.features.transactions import RawTransaction, TransactionFeatureConfig, TransactionFeaturizer
from models.worlds import open_world
from offline.evaluation.evidence import cites_fraud, fraudulent_transfers
from offline.generate.fraud_world import generate_fraud_world
from stream.scoring.alert_evidence import alert_evidence, step_occlusion

CONFIG = TransactionFeatureConfig(window=6, fanout1=3, fanout2=2)
T0 = 1.75e9  # 2025-06-15


def featurized(transactions):
    featurizer = TransactionFeaturizer(AccountState(window=CONFIG.window, capacity=2), CONFIG)
    return featurizer, featurizer.featurize(transactions)


def test_every_row_is_named_after_its_account_through_growth_and_checkpoints():
    accounts = [f"acct-{i}" + "x" * (i % 40) for i in range(3000)]  # ids of many lengths, far past the capacity
    transactions = [RawTransaction(accounts[i], accounts[(i * 7 + 1) % 3000], 10.0 + i, T0 + i, 1, 0)
                    for i in range(3000)]
    featurizer, _ = featurized(transactions)
    state = featurizer.state
    assert {state.names.name(state.lookup(k)) for k in state.index.keys()} == set(accounts)
    restored = AccountState.from_arrays(CONFIG.window, state.to_arrays())
    assert all(restored.names.name(row) == state.names.name(row) for row in range(len(state) + 1))
    assert state.names.name(0) is None and state.names.name(len(state) + 1) is None
    # A checkpoint written before accounts had names still loads: every account reads as unknown.
    old = {k: v for k, v in state.to_arrays().items() if not k.startswith("names.")}
    assert AccountState.from_arrays(CONFIG.window, old).names.name(1) is None
    # An account restored from a changelog record (no id in it) is unknown, and checkpoints still fit.
    imported = AccountState(window=CONFIG.window)
    key = next(iter(state.index.keys()))
    row = imported.import_account(key, state.export_account(key))
    assert imported.names.name(row) is None
    assert AccountState.from_arrays(CONFIG.window, imported.to_arrays()).names.count == len(imported) + 1
    with pytest.raises(ValueError, match="names"):
        AccountState.from_arrays(CONFIG.window, {**state.to_arrays(), "names.ends": np.zeros(3, np.uint32)})


def test_names_cost_the_id_and_four_bytes():
    names = AccountNames(capacity=1000)
    keys = np.arange(1001, dtype=np.int64)
    names.name_new_rows(keys, 1001, {k: f"C{k:010d}" for k in range(1, 1001)})
    assert names.name(500) == "C0000000500"
    assert int(names.ends[1000]) == 11 * 1000


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def test_occlusion_weighs_each_step_by_what_the_score_loses_without_it():
    history = [RawTransaction(f"s{i}", "mule", float(np.expm1(i + 1)), T0 + 60 * i, 1, 0) for i in range(4)]
    _, batch = featurized(history + [RawTransaction("mule", "out", 5.0, T0 + 600, 1, 0)])
    inputs = {k: v[4:5] for k, v in batch.arrays().items()}
    # A score whose log-odds are the source window's log amounts plus 10 per hop-1 neighbour.
    def score(x):
        return _sigmoid((x["seq"][:, 0, :, 0] * x["seq_mask"][:, 0]).sum(1) / 4 + x["hop1_mask"][:, 0].sum(1) / 2)
    weights = step_occlusion(score, inputs)
    window = CONFIG.window
    # Steps hold log amounts 1..4, oldest first; the newest 3 (fanout1) also lead to a hop-1 neighbour.
    np.testing.assert_allclose(weights[0, 0, window - 4:], [1 / 4, 2 / 4 + 0.5, 3 / 4 + 0.5, 4 / 4 + 0.5], rtol=1e-5)
    assert np.isnan(weights[0, 0, : window - 4]).all() and np.isnan(weights[0, 1]).all()  # empty steps
    only_newest = step_occlusion(score, inputs, newest=2)
    assert np.isnan(only_newest[0, 0, : window - 2]).all()
    np.testing.assert_allclose(only_newest[0, 0, window - 2:], weights[0, 0, window - 2:], rtol=1e-6)


def test_a_rows_weights_do_not_depend_on_the_rows_beside_it():
    history = [RawTransaction(f"s{i % 3}", f"m{i % 2}", 10.0 + i, T0 + 60 * i, 1, 0) for i in range(12)]
    _, batch = featurized(history)
    inputs = batch.arrays()
    calls = []

    def score(x):
        calls.append(len(x["seq"]))
        return _sigmoid(x["seq"][..., 0].sum((1, 2)) / 50 - x["seq_mask"].sum((1, 2)) / 10)

    together = step_occlusion(score, inputs)
    alone = np.concatenate([step_occlusion(score, {k: v[i:i + 1] for k, v in inputs.items()}) for i in range(12)])
    np.testing.assert_array_equal(together, alone)
    assert max(calls) <= 1 + 2 * CONFIG.window  # one row's variants per call


def test_the_evidence_is_the_most_raising_steps_and_counterparties_add_theirs():
    history = [RawTransaction(f"s{i % 2}", "mule", 10.0 * (i + 1), T0 + 60 * i, 1, 0) for i in range(4)]
    history.append(RawTransaction("boss", "out", 7.0, T0 + 300, 2, 0))
    featurizer, batch = featurized(history + [RawTransaction("mule", "out", 99.0, T0 + 600, 1, 0)])
    weights = np.full((1, 2, CONFIG.window), np.nan, dtype=np.float32)
    window = CONFIG.window
    weights[0, 0, window - 4:] = [0.1, -0.9, 0.3, 0.3]  # the source's 4 steps, oldest first: s0, s1, s0, s1
    weights[0, 1, window - 1] = 0.3  # the destination's one step: from boss
    [(evidence, counterparties)] = alert_evidence(batch, np.array([5]), weights, featurizer.state.names, top_steps=4)
    # Ties: the newer step first, then the source's.
    assert [(e.account, e.direction, e.counterparty, e.amount) for e in evidence] == [
        ("source", "in", "s1", 40.0), ("destination", "in", "boss", 7.0), ("source", "in", "s0", 30.0),
        ("source", "in", "s0", 10.0)]
    assert [e.weight for e in evidence] == pytest.approx([0.3, 0.3, 0.3, 0.1])
    assert evidence[0].event_time == datetime.fromtimestamp(T0 + 180, timezone.utc)
    assert evidence[1].type.value == "cash_out" and evidence[0].type.value == "transfer"
    assert [(c.account, c.transactions, c.amount) for c in counterparties] == [
        ("s0", 2, 40.0), ("boss", 1, 7.0), ("s1", 2, 60.0)]
    assert [c.weight for c in counterparties] == pytest.approx([0.4, 0.3, -0.6])


def test_cited_steps_are_judged_by_their_accounts_and_second(tmp_path):
    generate_fraud_world(tmp_path / "w", accounts=800, days=5, seed=2, progress=False)
    world = open_world(tmp_path / "w")
    events = world.read_events("transactions").to_pylist()
    labels = dict(zip(*world.read_labels("transactions").select(["event_id", "is_fraud"]).to_pydict().values()))
    fraud = next(e for e in events if labels[e["event_id"]])
    fraudulent = fraudulent_transfers(world)
    honest = next(e for e in events if (e["source_account"], e["destination_account"],
                                        int(e["event_time"].timestamp())) not in fraudulent)
    assert not labels[honest["event_id"]]
    assert (fraud["source_account"], fraud["destination_account"], int(fraud["event_time"].timestamp())) in fraudulent
    assert len(fraudulent) <= sum(labels.values())
    # The fraud transfer as the source's outgoing step of an alert, and as the destination's incoming one.
    out_step = {"account": "source", "direction": "out", "counterparty": fraud["destination_account"],
                "event_time": fraud["event_time"].isoformat()}
    in_step = {"account": "destination", "direction": "in", "counterparty": fraud["source_account"],
               "event_time": fraud["event_time"]}
    assert cites_fraud(out_step, fraud["source_account"], "anyone", fraudulent)
    assert cites_fraud(in_step, "anyone", fraud["destination_account"], fraudulent)
    assert not cites_fraud({**out_step, "direction": "in"}, fraud["source_account"], "anyone", fraudulent)
    assert not cites_fraud({"account": "source", "direction": "out", "counterparty": honest["destination_account"],
                            "event_time": honest["event_time"]}, honest["source_account"], "x", fraudulent)
