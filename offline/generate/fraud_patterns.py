"""Planted fraud and money-laundering typologies (after PaySim and IBM AMLworld).

Each instance gets a pattern number and a typology. Who counts as a fraudster (the
`src_fraud` / `dst_fraud` flags, from which account labels are derived):

- account_takeover: the beneficiaries (mules) are fraudsters; the victim whose account
  was taken over is not, and neither is the cash agent the mules cash out at.
- every laundering typology (mule_chain, fan_out, fan_in, scatter_gather, cycle,
  bipartite_layering): every person account that sends or receives the dirty money is a
  fraudster; cash agents used to place (cash_in) or withdraw (cash_out) it are not.

Every transaction of a pattern, including placements and cash-outs, is labelled fraud.
Patterns are few (about 1% of transactions), so they are built with small Python loops.
Amounts are drawn to overlap ordinary traffic (rent-sized transfers, salaries, business
payments) and the pace of each instance varies from minutes to a day, so that neither an
amount threshold nor a fixed time window gives them away.
"""

from __future__ import annotations

import numpy as np

from .fraud_population import Population
from .fraud_rows import (
    ATM,
    BRANCH,
    CASH_IN,
    CASH_OUT,
    DAY_US,
    MOBILE,
    START_US,
    TRANSFER,
    WEB,
    Rows,
    empty_rows,
)
from .fraud_traffic import PEOPLE_HOURS, times_of_day

TYPOLOGIES: tuple[str, ...] = (
    "account_takeover",
    "mule_chain",
    "fan_out",
    "fan_in",
    "scatter_gather",
    "cycle",
    "bipartite_layering",
)
# Typologies are dealt in shuffled blocks rather than drawn independently, so every
# world with a block's worth of patterns has every typology. Takeovers and mule chains,
# the most common in practice, come twice per block.
_BLOCK = np.array([0, 0, 1, 1, 2, 3, 4, 5, 6])
_SECOND = 1_000_000


class _Pattern:
    """Collects one instance's rows; times in microseconds."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, t: int, src: int, dst: int, amount: float, type_code: int, channel: int,
            src_fraud: bool, dst_fraud: bool) -> None:
        self.rows.append((t, src, dst, amount, type_code, channel, src_fraud, dst_fraud))

    def to_rows(self, number: int, typology: int) -> Rows:
        t, src, dst, amount, type_code, channel, sf, df = (np.array(c) for c in zip(*self.rows))
        n = len(t)
        return Rows(
            time=t.astype(np.int64),
            src=src.astype(np.int64),
            dst=dst.astype(np.int64),
            amount=np.clip(np.round(amount.astype(np.float64), 2), 0.01, 1e9),
            type_code=type_code.astype(np.int8),
            channel=channel.astype(np.int8),
            pattern=np.full(n, number, np.int64),
            pattern_type=np.full(n, typology, np.int8),
            src_fraud=sf.astype(bool),
            dst_fraud=df.astype(bool),
        )


class PatternPlanter:
    """Plants about `per_account_day * accounts` pattern instances a day.

    Instances that run past midnight keep their later rows for the next day; rows that
    would fall after the last simulated day are never emitted.
    """

    def __init__(self, pop: Population, per_account_day: float, schedule_rng: np.random.Generator):
        self.pop = pop
        self.rate = per_account_day * pop.n
        self._schedule_rng = schedule_rng
        self._queue: list[int] = []
        self._pending = empty_rows()
        self._mules = np.flatnonzero(pop.mule)
        self._victims = pop.persons[~pop.mule[pop.persons]]
        self.planted = [0] * len(TYPOLOGIES)

    @property
    def total(self) -> int:
        return sum(self.planted)

    def day(self, day: int, rng: np.random.Generator) -> Rows:
        """Pattern rows that fall on day `day`, unsorted."""
        day_start = START_US + day * DAY_US
        # A running total rather than a Poisson draw keeps small worlds from getting none.
        count = int(np.floor((day + 1) * self.rate) - np.floor(day * self.rate))
        started = [self._plant(rng, day_start) for _ in range(count)]
        rows = Rows.concat([self._pending, *started])
        today = rows.time < day_start + DAY_US
        self._pending = rows.take(~today)
        return rows.take(today)

    def _plant(self, rng: np.random.Generator, day_start: int) -> Rows:
        if not self._queue:
            self._queue = self._schedule_rng.permutation(_BLOCK).tolist()
        typology = self._queue.pop()
        # Two thirds start when people are about; the rest any time, nights included.
        if rng.random() < 0.65:
            t0 = int(times_of_day(rng, 1, day_start, PEOPLE_HOURS)[0])
        else:
            t0 = day_start + int(rng.integers(0, DAY_US))
        # Pace of this instance: the typical gap between its steps, minutes to hours.
        pace = float(np.exp(rng.uniform(np.log(120.0), np.log(6 * 3600.0))))
        p = _Pattern()
        _BUILDERS[typology](self, rng, p, t0, pace)
        number = self.total
        self.planted[typology] += 1
        return p.to_rows(number, typology)

    # Participants ---------------------------------------------------------------------

    def mules(self, rng: np.random.Generator, k: int) -> np.ndarray:
        """`k` distinct accounts from the mule pool (recruited persons and fresh accounts)."""
        return self._mules[rng.choice(len(self._mules), size=k, replace=False)]

    def victim(self, rng: np.random.Generator) -> int:
        return int(self._victims[rng.integers(len(self._victims))])

    def agent(self, rng: np.random.Generator) -> int:
        return int(self.pop.agents[rng.integers(len(self.pop.agents))])


def _gap(rng: np.random.Generator, pace: float) -> int:
    """Microseconds to the next step: around `pace` seconds, never under 20 s."""
    return int(max(20.0, pace * rng.lognormal(0.0, 0.5)) * _SECOND) + int(rng.integers(0, _SECOND))


def _channel(rng: np.random.Generator) -> int:
    # The channels people use for ordinary transfers: a person sending over the API would
    # be a one-feature giveaway, since only businesses and billers use it here.
    return int(rng.choice([MOBILE, WEB, BRANCH], p=[0.65, 0.3, 0.05]))


def _place(w: PatternPlanter, rng: np.random.Generator, p: _Pattern, t: int, mule: int, amount: float) -> None:
    """Placement: dirty cash paid in at an agent."""
    channel = int(rng.choice([MOBILE, BRANCH, ATM], p=[0.5, 0.35, 0.15]))
    if channel == ATM:
        amount = max(10.0, np.floor(amount / 10) * 10)
    p.add(t, w.agent(rng), mule, amount, CASH_IN, channel, False, True)


def _cash_out(w: PatternPlanter, rng: np.random.Generator, p: _Pattern, t: int, mule: int, amount: float,
              pace: float) -> None:
    """Withdrawal in up to three goes of uneven size, each under the channel's cap.

    What does not fit under the caps stays in the account: mules rarely empty it at once.
    """
    channel = int(rng.choice([ATM, MOBILE, BRANCH], p=[0.5, 0.35, 0.15]))
    cap = 1_000.0 if channel == ATM else 5_000.0
    goes = int(min(3, np.ceil(amount / cap)))
    parts = amount * rng.dirichlet(np.full(goes, 4.0)) if goes > 1 else np.array([amount])
    for part in parts.tolist():
        part = min(part, cap * rng.uniform(0.7, 1.0))
        if channel == ATM:
            part = max(20.0, np.floor(part / 20) * 20)
        p.add(t, mule, w.agent(rng), part, CASH_OUT, channel, True, False)
        t += _gap(rng, pace)


def _dirty_amount(rng: np.random.Generator, median: float) -> float:
    return float(rng.lognormal(np.log(median), 0.8))


def _account_takeover(w, rng, p, t, pace):
    victim = w.victim(rng)
    k = int(rng.integers(1, 4))
    beneficiaries = w.mules(rng, k)
    # The fraudster drives the victim's session: one channel, quick succession.
    channel = WEB if rng.random() < 0.55 else MOBILE
    pace = min(pace, 3600.0)
    if rng.random() < 0.3:  # a small test transfer first
        p.add(t, victim, int(beneficiaries[0]), float(rng.lognormal(np.log(5.0), 0.8)), TRANSFER, channel, False, True)
        t += _gap(rng, pace)
    # A burst: every beneficiary at least once, some twice or more.
    targets = np.concatenate([np.arange(k), rng.integers(0, k, int(rng.integers(1, 4)))])
    rng.shuffle(targets)
    base = float(w.pop.scale[victim]) * _dirty_amount(rng, 700.0)
    received = np.zeros(k)
    last = np.zeros(k, np.int64)
    for i in targets.tolist():
        amount = base * float(rng.lognormal(0.0, 0.3))
        p.add(t, victim, int(beneficiaries[i]), amount, TRANSFER, channel, False, True)
        received[i] += amount
        last[i] = t
        t += _gap(rng, pace)
    for i in range(k):
        if rng.random() < 0.75:
            start = int(last[i]) + _gap(rng, float(rng.uniform(600, 4 * 3600)))
            _cash_out(w, rng, p, start, int(beneficiaries[i]), received[i] * rng.uniform(0.85, 0.99), pace)


def _mule_chain(w, rng, p, t, pace):
    chain = w.mules(rng, int(rng.integers(3, 7)))
    amount = _dirty_amount(rng, 2500.0)
    if rng.random() < 0.6:
        _place(w, rng, p, t, int(chain[0]), amount)
        t += _gap(rng, pace)
    for a, b in zip(chain[:-1].tolist(), chain[1:].tolist()):
        amount *= rng.uniform(0.95, 0.995)  # each mule keeps a cut
        p.add(t, a, b, amount, TRANSFER, _channel(rng), True, True)
        t += _gap(rng, pace)
    _cash_out(w, rng, p, t, int(chain[-1]), amount * rng.uniform(0.97, 0.995), pace)


def _fan_out(w, rng, p, t, pace):
    k = int(rng.integers(5, 15))
    accounts = w.mules(rng, k + 1)
    source, targets = int(accounts[0]), accounts[1:].tolist()
    total = _dirty_amount(rng, 6000.0)
    if rng.random() < 0.5:
        _place(w, rng, p, t, source, total * rng.uniform(1.0, 1.05))
        t += _gap(rng, pace)
    shares = total * rng.dirichlet(np.full(k, 2.0))
    channel = _channel(rng)
    for target, amount in zip(targets, shares.tolist()):
        p.add(t, source, target, amount, TRANSFER, channel, True, True)
        if rng.random() < 0.4:
            _cash_out(w, rng, p, t + _gap(rng, pace), target, amount * rng.uniform(0.9, 0.99), pace)
        t += _gap(rng, pace / 4)


def _fan_in(w, rng, p, t, pace):
    k = int(rng.integers(5, 15))
    accounts = w.mules(rng, k + 1)
    collector, senders = int(accounts[0]), accounts[1:].tolist()
    total = 0.0
    for sender in senders:
        amount = _dirty_amount(rng, 900.0)
        if rng.random() < 0.5:  # smurfs paying cash in before passing it on
            _place(w, rng, p, t, sender, amount * rng.uniform(1.0, 1.05))
            t += _gap(rng, pace / 4)
        p.add(t, sender, collector, amount, TRANSFER, _channel(rng), True, True)
        total += amount
        t += _gap(rng, pace / 2)
    _cash_out(w, rng, p, t + _gap(rng, pace), collector, total * rng.uniform(0.9, 0.99), pace)


def _scatter_gather(w, rng, p, t, pace):
    k = int(rng.integers(3, 9))
    accounts = w.mules(rng, k + 2).tolist()
    source, middle, sink = accounts[0], accounts[1:-1], accounts[-1]
    shares = _dirty_amount(rng, 5000.0) * rng.dirichlet(np.full(k, 3.0))
    arrivals = []
    for m, amount in zip(middle, shares.tolist()):
        p.add(t, source, m, amount, TRANSFER, _channel(rng), True, True)
        arrivals.append((t + _gap(rng, pace), m, amount * rng.uniform(0.95, 0.99)))
        t += _gap(rng, pace / 4)
    for t_fwd, m, amount in arrivals:
        p.add(t_fwd, m, sink, amount, TRANSFER, _channel(rng), True, True)
    if rng.random() < 0.5:
        last = max(a[0] for a in arrivals)
        gathered = sum(a[2] for a in arrivals)
        _cash_out(w, rng, p, last + _gap(rng, pace), sink, gathered * rng.uniform(0.9, 0.99), pace)


def _cycle(w, rng, p, t, pace):
    ring = w.mules(rng, int(rng.integers(3, 8))).tolist()
    amount = _dirty_amount(rng, 3000.0)
    if rng.random() < 0.3:
        _place(w, rng, p, t, ring[0], amount)
        t += _gap(rng, pace)
    for a, b in zip(ring, ring[1:] + ring[:1]):
        amount *= rng.uniform(0.97, 0.995)
        p.add(t, a, b, amount, TRANSFER, _channel(rng), True, True)
        t += _gap(rng, pace)


def _bipartite_layering(w, rng, p, t, pace):
    n_s, n_t = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    accounts = w.mules(rng, n_s + n_t).tolist()
    senders, receivers = accounts[:n_s], accounts[n_s:]
    edges = rng.random((n_s, n_t)) < 0.6
    # Every sender and every receiver takes part at least once.
    edges[np.arange(n_s), rng.integers(0, n_t, n_s)] = True
    edges[rng.integers(0, n_s, n_t), np.arange(n_t)] = True
    pairs = np.argwhere(edges)
    rng.shuffle(pairs)
    received = dict.fromkeys(range(n_t), 0.0)
    for s, r in pairs.tolist():
        amount = _dirty_amount(rng, 1500.0)
        p.add(t, senders[s], receivers[r], amount, TRANSFER, _channel(rng), True, True)
        received[r] += amount
        t += _gap(rng, pace / 2)
    for r in range(n_t):
        if rng.random() < 0.5:
            _cash_out(w, rng, p, t + _gap(rng, pace), receivers[r], received[r] * rng.uniform(0.9, 0.99), pace)


_BUILDERS = (_account_takeover, _mule_chain, _fan_out, _fan_in, _scatter_gather, _cycle, _bipartite_layering)
