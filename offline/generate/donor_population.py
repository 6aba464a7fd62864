"""Who the donors are: latent traits, join times and the static attributes a CRM holds.

Five latent traits per donor drive everything observable. Each is a persistent base
(standard normal, correlated across traits) plus a slowly drifting AR(1) part, so
behaviour before the cut-off predicts the target window without restating it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .donor_calendar import DAYS_PER_MONTH, US_PER_DAY, US_PER_SECOND, Timeline
from .donor_params import DonorParams

TRAITS = ("engagement", "influence", "regularity", "capacity", "activity")
ENG, INF, REG, CAP, ACT = range(len(TRAITS))

# Engaged donors give more regularly and lapse less; influence comes with capacity.
_CORRELATION = np.array(
    [
        [1.00, 0.35, 0.30, 0.10, 0.30],
        [0.35, 1.00, 0.10, 0.25, 0.10],
        [0.30, 0.10, 1.00, 0.10, 0.35],
        [0.10, 0.25, 0.10, 1.00, 0.05],
        [0.30, 0.10, 0.35, 0.05, 1.00],
    ]
)

REGIONS = ("northeast", "mid-atlantic", "southeast", "great-lakes", "midwest", "southwest", "mountain", "pacific")
_REGION_WEIGHTS = np.array([0.16, 0.12, 0.18, 0.12, 0.10, 0.12, 0.06, 0.14])

# Age bands in AgeBand order (without "unknown"), by lower bound in years.
AGE_BAND_NAMES = ("under_25", "25_34", "35_44", "45_54", "55_64", "65_74", "75_plus")
_AGE_BAND_LOWER = np.array([25, 35, 45, 55, 65, 75])

# Share of donors for whom the CRM never has an attribute (data-entry gaps, no screening,
# no consent). The donor model must treat these as masks, not zeros.
MISSING_SHARE = {
    "tenure_years": 0.02,
    "age_band": 0.15,
    "wealth_index": 0.35,
    "home_owner": 0.45,
    "region": 0.04,
    "event_attendance_12m": 0.10,
    "volunteer_hours_12m": 0.40,
    "promotions_received_12m": 0.05,
}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Population:
    """Per-donor arrays, indexed by donor number (ids are given in join order)."""

    n: int
    base: np.ndarray  # (5, n) persistent traits
    drift: np.ndarray  # (5, n) AR(1) part, updated monthly
    legacy: np.ndarray  # joined before the stream starts
    join_month: np.ndarray  # simulation month of joining; negative for legacy donors
    join_time_us: np.ndarray
    age0: np.ndarray  # age in years at the stream start
    region: np.ndarray
    home_owner: np.ndarray
    has_email: np.ndarray
    volunteer: np.ndarray  # signed up as a volunteer at all
    channel_affinity: np.ndarray  # (n, 4) persistent preference for mail/online/phone/other
    level_offset: np.ndarray  # persistent part of the log gift size beyond capacity
    wealth_noise: np.ndarray  # screening error of the wealth index
    edge_noise: np.ndarray  # sociability not explained by influence
    missing: dict[str, np.ndarray]
    prior_count: np.ndarray  # -1 where unknown
    prior_total: np.ndarray  # nan where unknown
    prior_last_months: np.ndarray  # months before the stream start; nan where unknown
    prior_first_months: np.ndarray
    initial_active: np.ndarray
    initial_recurring: np.ndarray
    recurring_day: np.ndarray  # day of month of the standing order, 1-28
    profile_day: np.ndarray  # day of month of quarterly CRM refreshes, 1-28
    profile_second: np.ndarray
    profile_phase: np.ndarray  # legacy donors: which month of the quarter they refresh in

    def traits(self) -> np.ndarray:
        return self.base + self.drift

    def step_drift(self, params: DonorParams, rng: np.random.Generator) -> None:
        shock = rng.standard_normal(self.drift.shape, dtype=np.float32)
        self.drift *= params.drift_phi
        self.drift += np.float32(params.drift_tau * np.sqrt(1 - params.drift_phi**2)) * shock

    def age_band_codes(self, donors: np.ndarray, time_us: np.ndarray, timeline: Timeline) -> np.ndarray:
        """Index into AGE_BAND_NAMES at the given times (donors age across bands)."""
        years = (time_us - timeline.month_start_us(0)) / (365.25 * US_PER_DAY)
        return np.searchsorted(_AGE_BAND_LOWER, self.age0[donors] + years, side="right")


def make_population(n: int, timeline: Timeline, params: DonorParams, rng: np.random.Generator) -> Population:
    chol = np.linalg.cholesky(_CORRELATION)
    base = (rng.standard_normal((n, len(TRAITS))) @ chol.T).T.astype(np.float32)
    drift = (params.drift_tau * rng.standard_normal(base.shape)).astype(np.float32)

    # Donors skew older; capacity and regular giving come with age.
    age0 = np.clip(50 + 15 * (0.35 * base[CAP] + 0.25 * base[REG] + 0.85 * rng.standard_normal(n)), 18, 95)
    legacy = rng.random(n) < params.legacy_share
    age0 = np.where(legacy, age0, np.maximum(age0 - 4, 18))

    tenure_months = np.ceil(rng.exponential(params.legacy_tenure_mean_months, n)) + 1
    tenure_months = np.minimum(tenure_months, np.maximum((age0 - 18) * 12, 1))
    weights = 1 + params.join_growth * np.arange(timeline.n_months)
    new_month = rng.choice(timeline.n_months, size=n, p=weights / weights.sum())
    join_month = np.where(legacy, -tenure_months, new_month).astype(np.int32)
    month_len_us = np.diff(timeline.month_start_us(np.arange(-int(tenure_months.max()) - 1, timeline.n_months + 1)))
    offset = int(tenure_months.max()) + 1
    # Not in a month's last seconds: the acquisition gift follows a second later, same month.
    within = (rng.random(n) * (month_len_us[join_month + offset] - 2 * US_PER_SECOND)).astype(np.int64)
    join_time_us = (timeline.month_start_us(join_month) + within) // US_PER_SECOND * US_PER_SECOND

    # Donor numbers follow join order, as CRM ids do.
    order = np.argsort(join_time_us, kind="stable")
    base, drift = base[:, order], drift[:, order]
    age0, legacy, join_month, join_time_us = age0[order], legacy[order], join_month[order], join_time_us[order]
    tenure_months = tenure_months[order]
    eng, cap, reg, act = base[ENG], base[CAP], base[REG], base[ACT]

    initial_active = ~legacy | (rng.random(n) < sigmoid(0.8 + 1.2 * act))
    initial_recurring = initial_active & (rng.random(n) < sigmoid(-2.4 + params.recurring_regularity * reg + 0.3 * eng))

    known = legacy & (rng.random(n) < params.legacy_history_known)
    tenure_years = tenure_months / 12
    rate = np.exp(-0.2 + 0.6 * reg + 0.3 * eng)
    count = 1 + rng.poisson(rate * tenure_years)
    total = count * np.exp(params.gift_log_base + params.gift_capacity * cap + 0.3 * rng.standard_normal(n))
    last = np.where(initial_active, rng.exponential(5, n), 12 + rng.exponential(24, n))
    last = np.minimum(np.round(last, 1), tenure_months)

    return Population(
        n=n,
        base=base,
        drift=drift,
        legacy=legacy,
        join_month=join_month,
        join_time_us=join_time_us,
        age0=age0.astype(np.float32),
        region=rng.choice(len(REGIONS), size=n, p=_REGION_WEIGHTS).astype(np.int8),
        home_owner=rng.random(n) < sigmoid(-0.2 + 0.9 * cap + 0.04 * (age0 - 45)),
        has_email=rng.random(n) < sigmoid(1.5 - 0.04 * (age0 - 50) + 0.3 * eng),
        volunteer=rng.random(n) < sigmoid(params.volunteer_share_logit + 1.1 * eng),
        channel_affinity=(0.8 * rng.gumbel(size=(n, 4))).astype(np.float32),
        level_offset=(0.35 * rng.standard_normal(n)).astype(np.float32),
        wealth_noise=(0.5 * rng.standard_normal(n)).astype(np.float32),
        edge_noise=(params.edge_propensity_noise * rng.standard_normal(n)).astype(np.float32),
        missing={name: rng.random(n) < share for name, share in MISSING_SHARE.items()},
        prior_count=np.where(known, count, np.where(legacy, -1, 0)).astype(np.int64),
        prior_total=np.where(known, np.round(total, 2), np.where(legacy, np.nan, 0.0)),
        prior_last_months=np.where(known, last, np.nan),
        prior_first_months=np.where(known, tenure_months, np.nan),
        initial_active=initial_active,
        initial_recurring=initial_recurring,
        recurring_day=rng.integers(1, 29, n).astype(np.int8),
        profile_day=rng.integers(1, 29, n).astype(np.int8),
        profile_second=rng.integers(0, 86_400, n).astype(np.int32),
        profile_phase=rng.integers(0, 3, n).astype(np.int8),
    )


def months_between(later_us: np.ndarray, earlier_us) -> np.ndarray:
    return (later_us - earlier_us) / (DAYS_PER_MONTH * US_PER_DAY)
