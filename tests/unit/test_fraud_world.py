"""The synthetic fraud world: determinism, contract validity, label consistency, typologies."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from models.contracts import TransactionEvent, from_record
from models.worlds import EVENT_STREAMS, open_world
from offline.generate.fraud_patterns import TYPOLOGIES
from offline.generate.fraud_rows import normal_rows, order_strictly
from offline.generate.fraud_world import generate_fraud_world

ACCOUNTS, DAYS, SEED = 3_000, 8, 11  # about 11k transactions and a dozen patterns
FILES = ("events/transactions.parquet", "labels/transactions.parquet", "labels/accounts.parquet")


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name, seed in (("a", SEED), ("again", SEED), ("other", SEED + 1)):
        out[name] = tmp_path_factory.mktemp(name)
        generate_fraud_world(out[name], accounts=ACCOUNTS, days=DAYS, seed=seed, progress=False)
    return out


@pytest.fixture(scope="module")
def world(worlds):
    w = open_world(worlds["a"])
    return w, w.read_events("transactions").to_pydict(), w.read_labels("transactions").to_pydict()


def test_same_seed_gives_byte_identical_tables(worlds):
    for name in FILES:
        assert (worlds["a"] / name).read_bytes() == (worlds["again"] / name).read_bytes(), name


def test_other_seed_gives_another_world(worlds):
    a, b = open_world(worlds["a"]), open_world(worlds["other"])
    assert not a.read_events("transactions").equals(b.read_events("transactions"))
    assert not a.read_labels("accounts").equals(b.read_labels("accounts"))


def test_events_have_the_contract_columns_and_strict_time_order(world):
    w, events, _ = world
    assert w.read_events("transactions").schema.equals(EVENT_STREAMS["transactions"].schema)
    times = np.array(w.read_events("transactions", ["event_time"]).column(0).cast("int64"))
    assert np.all(np.diff(times) > 0)
    start = times[0] // 86_400_000_000 * 86_400_000_000
    assert w.manifest.parameters["start"].startswith("2025-01-06T00:00:00")
    assert (times[-1] - start) < DAYS * 86_400_000_000


def test_event_ids_are_unique_and_well_formed(world):
    _, events, _ = world
    ids = events["event_id"]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"tx\d{12}", i) for i in ids)


def test_rows_are_sane(world):
    _, events, _ = world
    src, dst = np.array(events["source_account"]), np.array(events["destination_account"])
    assert not np.any(src == dst)
    amount = np.array(events["amount"])
    assert np.all((amount > 0) & (amount <= 1e12))
    assert set(events["currency"]) == {"USD"}
    assert all(re.fullmatch(r"acct\d{7}", a) for a in set(events["source_account"]) | set(events["destination_account"]))
    for balance in ("old_balance_source", "new_balance_source", "old_balance_destination", "new_balance_destination"):
        assert set(events[balance]) == {None}, "balances leak the label in PaySim; they must stay null"


def test_sampled_rows_validate_against_the_contract(world):
    w, _, labels = world
    table = w.read_events("transactions")
    rng = np.random.default_rng(0)
    fraud = np.flatnonzero(labels["is_fraud"])
    picks = np.union1d(rng.choice(table.num_rows, 2_000, replace=False), fraud[:500])
    for row in table.take(picks).to_pylist():
        from_record(row, TransactionEvent)


def test_labels_align_one_to_one_with_events(world):
    _, events, labels = world
    assert labels["event_id"] == events["event_id"]
    for is_fraud, pid, ptype in zip(labels["is_fraud"], labels["pattern_id"], labels["pattern_type"]):
        assert (pid is not None) == is_fraud == (ptype is not None)
        if pid is not None:
            assert re.fullmatch(r"p\d{6}", pid) and ptype in TYPOLOGIES
    types_of = {}
    for pid, ptype in zip(labels["pattern_id"], labels["pattern_type"]):
        if pid is not None:
            assert types_of.setdefault(pid, ptype) == ptype, "one pattern, one typology"


def test_every_typology_is_planted_and_fraud_rate_is_plausible(world):
    w, _, labels = world
    present = {t for t in labels["pattern_type"] if t is not None}
    assert present == set(TYPOLOGIES)
    rate = np.mean(labels["is_fraud"])
    assert 0.004 <= rate <= 0.025, rate


def test_an_amount_threshold_alone_cannot_find_the_fraud(world):
    _, events, labels = world
    amount, fraud = np.array(events["amount"]), np.array(labels["is_fraud"])
    order = np.argsort(-amount, kind="stable")
    hits = np.cumsum(fraud[order])
    precision = hits / np.arange(1, len(order) + 1)
    recall = hits / fraud.sum()
    best_f1 = np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12))
    assert best_f1 < 0.35, best_f1


def test_manifest_describes_a_synthetic_world(worlds, world):
    w, events, labels = world
    m = w.manifest
    assert m.kind.value == "fraud" and m.synthetic is True and m.source == "tributary-generate-fraud"
    assert m.seed == SEED and m.parameters["accounts"] == ACCOUNTS and m.parameters["days"] == DAYS
    assert m.notes[0].startswith("SYNTHETIC")
    assert m.counts["labels/accounts"] == ACCOUNTS
    assert m.time_range[0] == events["event_time"][0] and m.time_range[1] == events["event_time"][-1]
    assert m.parameters["fraud_transactions"] == sum(labels["is_fraud"])
    patterns = {p for p in labels["pattern_id"] if p is not None}
    assert sum(m.parameters["patterns_planted"].values()) == len(patterns)


def test_manifest_counts_events_and_labels_apart(world):
    w, events, _ = world
    assert w.manifest.counts["transactions"] == len(events["event_id"])
    assert w.manifest.counts["labels/transactions"] == len(events["event_id"])


def _expected_fraudsters(events: dict, labels: dict) -> dict[str, object]:
    """The rule of `fraud_patterns`: the side of a fraud row that acts as a fraudster.

    Cash agents (the counterparty of placements and cash-outs) and account-takeover
    victims (the source of a takeover transfer) take part but are not fraudsters.
    """
    first: dict[str, object] = {}
    for i in np.flatnonzero(labels["is_fraud"]).tolist():
        kind, typology = events["type"][i], labels["pattern_type"][i]
        if kind == "cash_in":
            sides = ("destination_account",)
        elif kind == "cash_out":
            sides = ("source_account",)
        elif typology == "account_takeover":
            sides = ("destination_account",)
        else:
            sides = ("source_account", "destination_account")
        for side in sides:
            first.setdefault(events[side][i], events["event_time"][i])
    return first


def _flagged(w) -> set[str]:
    accounts = w.read_labels("accounts").to_pydict()
    return {a for a, f in zip(accounts["account_id"], accounts["is_fraud"]) if f}


def test_account_labels_follow_the_transaction_labels(world):
    w, events, labels = world
    accounts = w.read_labels("accounts").to_pydict()
    assert len(accounts["account_id"]) == len(set(accounts["account_id"])) == ACCOUNTS
    expected = _expected_fraudsters(events, labels)
    flagged = {a: t for a, f, t in zip(accounts["account_id"], accounts["is_fraud"], accounts["fraud_since"]) if f}
    assert flagged == expected
    assert all(t is None for f, t in zip(accounts["is_fraud"], accounts["fraud_since"]) if not f)


def test_takeover_victims_and_cash_agents_are_not_fraudsters(world):
    w, events, labels = world
    flagged = _flagged(w)
    victims = {
        events["source_account"][i]
        for i, t in enumerate(labels["pattern_type"])
        if t == "account_takeover" and events["type"][i] == "transfer"
    }
    agents = {d for d, k in zip(events["destination_account"], events["type"]) if k == "cash_out"}
    assert victims and agents
    assert not victims & flagged and not agents & flagged


def test_mules_also_have_ordinary_history(world):
    w, events, labels = world
    flagged = _flagged(w)
    ordinary = set()
    for src, dst, f in zip(events["source_account"], events["destination_account"], labels["is_fraud"]):
        if not f:
            ordinary.update((src, dst))
    with_history = len(flagged & ordinary) / len(flagged)
    assert 0.5 < with_history < 1.0, "mules come mostly from the person pool, plus a few fresh accounts"


def test_order_strictly_breaks_ties_without_reordering():
    t = np.array([5, 3, 3, 3, 9], np.int64)
    rows = normal_rows(t, np.arange(5), np.arange(5) + 1, np.ones(5), 0, np.zeros(5, np.int8))
    ordered, last = order_strictly(rows, after_us=3)
    assert ordered.time.tolist() == [4, 5, 6, 7, 9] and last == 9
    assert ordered.src.tolist() == [1, 2, 3, 0, 4]


def test_too_few_accounts_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="at least"):
        generate_fraud_world(tmp_path, accounts=50, days=1, progress=False)


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    generate_fraud_world(tmp_path, accounts=200, days=2, seed=1, progress=True)
    captured = capsys.readouterr()
    assert "fraud world" in captured.err and captured.out == ""
