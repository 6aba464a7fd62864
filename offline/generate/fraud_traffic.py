"""Ordinary traffic of one day, fully vectorised: no Python loop runs per transaction.

Each category (peer transfers, shopping, cash, bills, salaries, business payments) is a
Poisson count per account or a calendar rule, then array draws for counterparties,
amounts, channels and times. Ordinary traffic deliberately contains the shapes fraud
patterns have (an employer paying many people is a fan-out, a popular merchant a fan-in,
friends paying each other back a cycle) so that shape alone is not a giveaway.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from .fraud_population import Population, draw
from .fraud_rows import (
    API,
    ATM,
    BRANCH,
    CARD,
    CASH_IN,
    CASH_OUT,
    DAY_US,
    DEBIT,
    HOUR_US,
    MOBILE,
    PAYMENT,
    START,
    START_US,
    TRANSFER,
    WEB,
    Rows,
    normal_rows,
)

# Mean events per person (or business) per day before the activity and weekday factors.
PEER_RATE = 0.12
SHOP_RATE = 0.22
CASH_OUT_RATE = 0.035
CASH_IN_RATE = 0.02
B2B_RATE = 0.25

# Weekday factors, Monday first.
_WEEK = {
    "peer": np.array([0.9, 0.9, 0.9, 0.95, 1.1, 1.25, 1.2]),
    "shop": np.array([0.9, 0.9, 0.9, 0.95, 1.1, 1.4, 1.1]),
    "cash_out": np.array([0.9, 0.9, 0.9, 1.0, 1.3, 1.3, 0.9]),
    "cash_in": np.array([1.1, 1.0, 1.0, 1.0, 1.1, 0.9, 0.6]),
    "b2b": np.array([1.1, 1.1, 1.1, 1.1, 1.1, 0.3, 0.1]),
}

# Relative activity per hour of day (UTC taken as local time): quiet nights, busy evenings.
PEOPLE_HOURS = np.array([
    0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 0.6, 0.8, 0.9, 1.0, 1.0,
    1.1, 1.0, 1.0, 1.0, 1.1, 1.3, 1.5, 1.6, 1.5, 1.2, 0.8, 0.4,
])
SHOP_HOURS = np.array([
    0.1, 0.05, 0.02, 0.02, 0.02, 0.05, 0.2, 0.5, 0.8, 1.0, 1.2, 1.4,
    1.6, 1.4, 1.2, 1.1, 1.2, 1.5, 1.7, 1.6, 1.3, 0.9, 0.5, 0.2,
])
OFFICE_HOURS = np.array([0.02] * 7 + [0.3, 1.0, 1.2, 1.2, 1.1, 0.8, 1.1, 1.2, 1.1, 0.9, 0.4] + [0.05] * 6)
BATCH_HOURS = np.array([0.1, 1.0, 1.0, 1.0, 1.0, 0.6] + [0.0] * 18)

_CONTACT_CDF = np.cumsum([0.35, 0.25, 0.18, 0.12, 0.10])
# (channels, probabilities) per category
_PEER_CH = (np.array([MOBILE, WEB, BRANCH]), np.array([0.7, 0.25, 0.05]))
_SHOP_CH = (np.array([CARD, MOBILE, WEB]), np.array([0.6, 0.25, 0.15]))
_CASH_OUT_CH = (np.array([ATM, MOBILE, BRANCH]), np.array([0.6, 0.3, 0.1]))
_CASH_IN_CH = (np.array([MOBILE, BRANCH, ATM]), np.array([0.6, 0.3, 0.1]))
_BILL_CH = (np.array([WEB, MOBILE]), np.array([0.6, 0.4]))
_B2B_CH = (np.array([API, WEB]), np.array([0.6, 0.4]))


def normal_day(pop: Population, day: int, rng: np.random.Generator) -> Rows:
    """All ordinary transactions of day `day` (0 = the first day), unsorted."""
    weekday = day % 7
    day_start = START_US + day * DAY_US
    parts = [
        _peer(pop, rng, day_start, weekday),
        _shopping(pop, rng, day_start, weekday),
        _cash_out(pop, rng, day_start, weekday),
        _cash_in(pop, rng, day_start, weekday),
        _bills(pop, rng, day_start, (START + timedelta(days=day)).date()),
        _salaries(pop, rng, day_start, day),
        _business(pop, rng, day_start, weekday),
    ]
    return Rows.concat(parts)


def times_of_day(rng: np.random.Generator, n: int, day_start: int, hours: np.ndarray, weekday: int = 0) -> np.ndarray:
    """`n` microsecond times within the day, hour drawn from the `hours` profile."""
    if weekday >= 5:
        hours = np.roll(hours, 1)  # weekends start an hour later
    hour = draw(np.cumsum(hours) / hours.sum(), rng.random(n))
    return day_start + hour * HOUR_US + rng.integers(0, HOUR_US, n)


def pick(rng: np.random.Generator, choices: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    values, probs = choices
    return values[draw(np.cumsum(probs) / probs.sum(), rng.random(n))].astype(np.int8)


def cents(amount: np.ndarray) -> np.ndarray:
    return np.clip(np.round(amount, 2), 0.01, 1e9)


def atm_round(amount: np.ndarray, channel: np.ndarray, note: float) -> np.ndarray:
    """Cash machines hand out and take whole notes."""
    rounded = np.maximum(note, np.floor(amount / note) * note)
    return np.where(channel == ATM, rounded, amount)


def _person_counts(pop: Population, rng: np.random.Generator, rate: np.ndarray) -> np.ndarray:
    """Positions (into `pop.persons`) repeated once per event drawn at per-person `rate`."""
    return np.repeat(np.arange(len(pop.persons)), rng.poisson(rate))


def _peer(pop: Population, rng: np.random.Generator, day_start: int, weekday: int) -> Rows:
    pos = _person_counts(pop, rng, PEER_RATE * _WEEK["peer"][weekday] * pop.activity)
    n = len(pos)
    src = pop.persons[pos]
    contact = pop.contacts[pos, draw(_CONTACT_CDF, rng.random(n))]
    j = rng.integers(0, len(pop.persons), n)
    stranger = pop.persons[j]
    clash = stranger == src
    stranger[clash] = pop.persons[(j[clash] + 1) % len(pop.persons)]
    dst = np.where(rng.random(n) < 0.85, contact, stranger)
    # Mostly small sums between friends, some rent- or loan-sized ones.
    big = rng.random(n) < 0.15
    amount = np.where(big, rng.lognormal(np.log(400.0), 0.8, n), rng.lognormal(np.log(35.0), 0.9, n))
    times = times_of_day(rng, n, day_start, PEOPLE_HOURS, weekday)
    return normal_rows(times, src, dst, cents(amount * pop.scale[src]), TRANSFER, pick(rng, _PEER_CH, n))


def _shopping(pop: Population, rng: np.random.Generator, day_start: int, weekday: int) -> Rows:
    pos = _person_counts(pop, rng, SHOP_RATE * _WEEK["shop"][weekday] * pop.activity)
    n = len(pos)
    src = pop.persons[pos]
    merchant = np.where(
        rng.random(n) < 0.35,
        pop.favourites[pos, rng.integers(0, pop.favourites.shape[1], n)],
        draw(pop.merchant_cdf, rng.random(n)),
    )
    amount = pop.merchant_ticket[merchant] * rng.lognormal(0.0, 0.6, n) * np.sqrt(pop.scale[src])
    times = times_of_day(rng, n, day_start, SHOP_HOURS, weekday)
    return normal_rows(times, src, pop.merchants[merchant], cents(amount), PAYMENT, pick(rng, _SHOP_CH, n))


def _agent_for(pop: Population, rng: np.random.Generator, pos: np.ndarray) -> np.ndarray:
    n = len(pos)
    return np.where(rng.random(n) < 0.85, pop.home_agent[pos], pop.agents[rng.integers(0, len(pop.agents), n)])


def _cash_out(pop: Population, rng: np.random.Generator, day_start: int, weekday: int) -> Rows:
    pos = _person_counts(pop, rng, CASH_OUT_RATE * _WEEK["cash_out"][weekday] * np.sqrt(pop.activity))
    n = len(pos)
    src = pop.persons[pos]
    channel = pick(rng, _CASH_OUT_CH, n)
    amount = atm_round(rng.lognormal(np.log(120.0), 0.8, n) * pop.scale[src], channel, 20.0)
    times = times_of_day(rng, n, day_start, SHOP_HOURS, weekday)
    return normal_rows(times, src, _agent_for(pop, rng, pos), cents(amount), CASH_OUT, channel)


def _cash_in(pop: Population, rng: np.random.Generator, day_start: int, weekday: int) -> Rows:
    pos = _person_counts(pop, rng, CASH_IN_RATE * _WEEK["cash_in"][weekday] * np.sqrt(pop.activity))
    n = len(pos)
    dst = pop.persons[pos]
    channel = pick(rng, _CASH_IN_CH, n)
    amount = atm_round(rng.lognormal(np.log(200.0), 0.9, n) * pop.scale[dst], channel, 10.0)
    times = times_of_day(rng, n, day_start, OFFICE_HOURS, weekday)
    return normal_rows(times, _agent_for(pop, rng, pos), dst, cents(amount), CASH_IN, channel)


def _bills(pop: Population, rng: np.random.Generator, day_start: int, today: date) -> Rows:
    pos, slot = np.nonzero((pop.bill_to >= 0) & (pop.bill_day == today.day))
    n = len(pos)
    amount = pop.bill_amount[pos, slot] * rng.lognormal(0.0, 0.1, n)
    # Most bills are direct debits run by the biller overnight; the rest are paid by hand.
    auto = rng.random(n) < 0.7
    times = np.where(
        auto,
        times_of_day(rng, n, day_start, BATCH_HOURS),
        times_of_day(rng, n, day_start, PEOPLE_HOURS, today.weekday()),
    )
    channel = np.where(auto, API, pick(rng, _BILL_CH, n)).astype(np.int8)
    return normal_rows(times, pop.persons[pos], pop.bill_to[pos, slot], cents(amount), DEBIT, channel)


def _salaries(pop: Population, rng: np.random.Generator, day_start: int, day: int) -> Rows:
    today = (START + timedelta(days=day)).date()
    monthly_due = np.zeros(32, bool)
    next_month = (today.replace(day=1) + timedelta(days=32)).replace(day=1)
    for dom in np.unique(pop.pay_day[~pop.pay_biweekly]).tolist():
        # A pay day on the 1st that falls on a weekend is paid at the end of the month before.
        runs = (_business_day_on_or_before(m.replace(day=dom)) for m in (today, next_month))
        monthly_due[dom] = today in runs
    pays = np.where(pop.pay_biweekly, (day - pop.pay_day) % 14 == 0, monthly_due[np.clip(pop.pay_day, 0, 31)])
    employer = pop.employer_pos
    pos = np.flatnonzero((employer >= 0) & pays[np.maximum(employer, 0)])
    n = len(pos)
    e = employer[pos]
    amount = pop.salary[pos] / np.where(pop.pay_biweekly[e], 2.17, 1.0) * rng.lognormal(0.0, 0.02, n)
    # One payroll batch per employer: everybody paid within a few minutes of the run.
    times = day_start + pop.pay_hour[e] * HOUR_US + rng.integers(0, 20 * 60 * 1_000_000, n)
    channel = np.full(n, API, np.int8)
    return normal_rows(times, pop.employers[e], pop.persons[pos], cents(amount), TRANSFER, channel)


def _business(pop: Population, rng: np.random.Generator, day_start: int, weekday: int) -> Rows:
    b = len(pop.businesses)
    src_pos = np.repeat(np.arange(b), rng.poisson(B2B_RATE * _WEEK["b2b"][weekday], b))
    n = len(src_pos)
    dst_pos = draw(pop.business_cdf, rng.random(n))
    dst_pos = np.where(dst_pos == src_pos, (dst_pos + 1) % b, dst_pos)
    src = pop.businesses[src_pos]
    amount = rng.lognormal(np.log(1500.0), 1.0, n) * np.sqrt(pop.scale[src])
    times = times_of_day(rng, n, day_start, OFFICE_HOURS, weekday)
    return normal_rows(times, src, pop.businesses[dst_pos], cents(amount), TRANSFER, pick(rng, _B2B_CH, n))


def _business_day_on_or_before(day: date) -> date:
    """Payroll due on a weekend is paid on the Friday before."""
    return day - timedelta(days=max(0, day.weekday() - 4))
