"""Alert patterns: each one named on a stream built to show it, and not on ordinary traffic."""

from __future__ import annotations

from models.features.account_state import AccountState
from models.features.patterns import patterns_of
from models.features.transactions import RawTransaction, TransactionFeatureConfig, TransactionFeaturizer

T0 = 1.736e9
HOUR = 3600.0


def tx(source, destination, amount, hours):
    return RawTransaction(source, destination, amount, T0 + hours * HOUR, 1, 0)


def named(txs: list[RawTransaction]) -> list[dict[str, float]]:
    """Per transaction: pattern -> evidence."""
    batch = TransactionFeaturizer(AccountState(window=50), TransactionFeatureConfig()).featurize(txs)
    return [dict(patterns_of(row)) for row in batch.event]


def test_a_cycle_back_to_the_source():
    rows = named([tx("a", "b", 500, 0), tx("b", "c", 480, 1), tx("c", "a", 470, 2)])
    assert rows[2]["cycle"] == 1.0 and "cycle" not in rows[1]
    assert rows[2]["pass_through"] == 1.0  # c forwards, an hour later, about what b sent it


def test_fan_in_at_the_collector_then_pass_through_at_the_mule():
    senders = [tx(f"s{i}", "mule", 900 + i, i * 0.1) for i in range(6)]
    rows = named([*senders, tx("mule", "exit", 5000, 1.0)])
    assert rows[5]["fan_in"] == 5  # the sixth transfer: five distinct senders before it
    assert "fan_in" not in rows[3]  # three before it: not yet a fan
    assert rows[-1]["pass_through"] == 0.5  # half an hour after the last money in, most of the day's inflow out


def test_fan_out_and_a_burst_from_a_taken_over_account():
    history = [tx("victim", "shop", 40, -24 * d) for d in range(19, 0, -1)]  # one payment a day for weeks
    burst = [tx("victim", f"drop{i}", 2000, 0.1 * i) for i in range(6)]
    rows = named([*history, *burst])
    assert all(not r for r in rows[:19])  # ordinary traffic matches nothing
    last = rows[-1]
    assert last["burst"] == 5 and last["fan_out"] == 6  # five drops and the shop this week


def test_structuring_just_under_the_reporting_threshold():
    rows = named([tx("a", "b", 9_950, 0), tx("a", "b", 10_000, 1)])
    assert rows[0] == {"structuring": 1.0} and "structuring" not in rows[1]


def test_a_shop_paid_by_many_customers_is_no_fan_in():
    payments = [RawTransaction(f"c{i}", "shop", 30.0, T0 + i * 60.0, 0, 0) for i in range(8)]  # type 0: payment
    assert all("fan_in" not in r for r in named(payments))
    transfers = [RawTransaction(f"c{i}", "collector", 30.0, T0 + i * 60.0, 1, 0) for i in range(8)]
    assert named(transfers)[-1]["fan_in"] == 7
