"""The five segment targets, measured only on the window [cutoff, horizon).

Each target is the top share of eligible donors (joined before the cut-off) by a score
of what they did in the window. Ties are broken by the listed secondary scores and
finally by donor number (earlier donors first), so the labels are deterministic and
every target has exactly round(share * eligible) positives.
"""

from __future__ import annotations

import numpy as np

from models.contracts import Segment

SHARES = {
    Segment.HIGH_ENGAGEMENT: 0.20,
    Segment.NETWORK_INFLUENCE: 0.20,
    Segment.GIVING_CONSISTENCY: 0.20,
    Segment.HIGH_VALUE: 0.15,
    Segment.RECENT_ENGAGEMENT: 0.25,
}

DEFINITIONS = {
    Segment.HIGH_ENGAGEMENT: "top 20% by events_attended + 0.2*emails_opened + 1.5*ln(1+volunteer_hours) in the window",
    Segment.NETWORK_INFLUENCE: (
        "top 20% by 2*referred_gifts + ln(1+referred_amount) + new_relationships in the window "
        "(gifts soft-credited to the donor as referrer; relationship adds with the donor at either end); "
        "ties by degree at the horizon"
    ),
    Segment.GIVING_CONSISTENCY: (
        "top 20% by the share of the window's 12 months with at least one gift; ties by gift count, then amount"
    ),
    Segment.HIGH_VALUE: "top 15% by total amount given in the window",
    Segment.RECENT_ENGAGEMENT: (
        "top 25% by recency of the last gift as of the horizon, in whole calendar months "
        "(a gift in the window's last month is most recent); ties by gift count in the window, then amount"
    ),
}


class WindowTally:
    """Per-donor accumulators over the target window, fed month by month."""

    def __init__(self, n: int, window_months: int):
        self.window_months = window_months
        self.attended = np.zeros(n, dtype=np.int64)
        self.opened = np.zeros(n, dtype=np.int64)
        self.volunteer_hours = np.zeros(n, dtype=np.float64)
        self.gift_months = np.zeros(n, dtype=np.int64)
        self.gift_count = np.zeros(n, dtype=np.int64)
        self.gift_total = np.zeros(n, dtype=np.float64)
        self.referred_count = np.zeros(n, dtype=np.int64)
        self.referred_total = np.zeros(n, dtype=np.float64)
        self.new_edges = np.zeros(n, dtype=np.int64)
        # Over the whole stream, not only the window: recency is measured at the horizon.
        # Whole months, as in RFM recency: the day within a month says little about a
        # donor and would make the target hinge on when a standing order is collected.
        self.last_gift_month = np.full(n, -(10**6), dtype=np.int64)

    def add_gifts(
        self, month: int, donor: np.ndarray, amount: np.ndarray, referrer: np.ndarray, in_window: bool
    ) -> None:
        self.last_gift_month[donor] = month
        if not in_window:
            return
        n = len(self.gift_count)
        counts = np.bincount(donor, minlength=n)
        self.gift_count += counts
        self.gift_months += counts > 0
        self.gift_total += np.bincount(donor, weights=amount, minlength=n)
        referred = referrer >= 0
        self.referred_count += np.bincount(referrer[referred], minlength=n)
        self.referred_total += np.bincount(referrer[referred], weights=amount[referred], minlength=n)

    def add_activity(self, attended: np.ndarray, opened: np.ndarray, volunteer_hours: np.ndarray) -> None:
        self.attended += attended
        self.opened += opened
        self.volunteer_hours += volunteer_hours

    def add_edges(self, donor: np.ndarray, related: np.ndarray, added: np.ndarray) -> None:
        n = len(self.new_edges)
        self.new_edges += np.bincount(donor[added], minlength=n) + np.bincount(related[added], minlength=n)

    def scores(self, degree: np.ndarray) -> dict[Segment, tuple[np.ndarray, ...]]:
        """Primary score then tie-breakers, per target; larger is better for all."""
        return {
            Segment.HIGH_ENGAGEMENT: (self.attended + 0.2 * self.opened + 1.5 * np.log1p(self.volunteer_hours),),
            Segment.NETWORK_INFLUENCE: (
                2.0 * self.referred_count + np.log1p(self.referred_total) + self.new_edges,
                degree,
            ),
            Segment.GIVING_CONSISTENCY: (self.gift_months / self.window_months, self.gift_count, self.gift_total),
            Segment.HIGH_VALUE: (self.gift_total,),
            Segment.RECENT_ENGAGEMENT: (self.last_gift_month, self.gift_count, self.gift_total),
        }


def top_share(keys: tuple[np.ndarray, ...], eligible: np.ndarray, share: float) -> np.ndarray:
    """Mask of the top `share` of eligible donors by `keys` (lexicographic, larger first).

    >>> top_share((np.array([3, 1, 3, 2]),), np.array([True, True, True, True]), 0.5)
    array([ True, False,  True, False])
    """
    donors = np.flatnonzero(eligible)
    # lexsort sorts by its last key first, ascending: negate to rank larger first, and
    # put the donor number first so that it is the final tie-breaker.
    order = np.lexsort((donors,) + tuple(-np.asarray(k, dtype=np.float64)[donors] for k in reversed(keys)))
    chosen = donors[order[: int(round(share * len(donors)))]]
    mask = np.zeros(len(eligible), dtype=bool)
    mask[chosen] = True
    return mask


def compute_targets(tally: WindowTally, degree: np.ndarray, eligible: np.ndarray) -> dict[Segment, np.ndarray]:
    scores = tally.scores(degree)
    return {segment: top_share(scores[segment], eligible, share) for segment, share in SHARES.items()}
