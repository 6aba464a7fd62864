"""The donor relationship network, grown month by month.

Degree is heavy-tailed: each donor has a lognormal propensity tied to influence, and a
share of new edges attach to a random end of an existing edge (preferential
attachment). Ties are homophilous: the second end is drawn from the same region more
often than not, and the most similar of a few candidates is kept. A few edges end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.contracts import RelationshipType

from .donor_calendar import Timeline
from .donor_params import DonorParams
from .donor_population import CAP, ENG, INF, Population

# Codes index EDGE_TYPES; the per-type tables below and the logits in `_kinds` follow it.
EDGE_TYPES = (
    RelationshipType.FAMILY.value,
    RelationshipType.BOARD_COMMITTEE.value,
    RelationshipType.PEER_FUNDRAISER.value,
    RelationshipType.EMPLOYER_MATCHING.value,
    RelationshipType.EVENT_COATTENDANCE.value,
)
FAMILY, BOARD, PEER_FUNDRAISER, EMPLOYER, COATTENDANCE = range(len(EDGE_TYPES))
# Strength ~ Beta(a, b) per type: family ties are strong, co-attendance weak.
_STRENGTH_A = np.array([5.0, 3.0, 2.0, 2.0, 1.5])
_STRENGTH_B = np.array([2.0, 3.0, 3.0, 4.0, 4.0])
_STRENGTH_MISSING = 0.12
# Monthly chance that a tie ends, per type (people leave boards and employers).
_REMOVE_PROB = np.array([0.0003, 0.003, 0.002, 0.004, 0.006])


@dataclass
class EdgeBatch:
    time_us: np.ndarray
    donor: np.ndarray
    related: np.ndarray
    kind: np.ndarray
    added: np.ndarray  # False: a "remove" event
    strength: np.ndarray  # nan where unknown

    def __len__(self) -> int:
        return len(self.time_us)


class Network:
    def __init__(self, pop: Population, timeline: Timeline, params: DonorParams):
        self.pop, self.timeline, self.params = pop, timeline, params
        self.u = np.zeros(0, dtype=np.int64)  # live edges, u initiated the tie
        self.v = np.zeros(0, dtype=np.int64)
        self.kind = np.zeros(0, dtype=np.int8)
        self._keys = np.zeros(0, dtype=np.int64)  # sorted undirected keys of live edges
        self._survived = 0  # live edges that predate this month's additions
        self._ended = np.zeros(0, dtype=np.int64)  # sorted keys of ties ended this month
        self._by_region = np.argsort(pop.region, kind="stable")
        self._region_bounds = np.searchsorted(pop.region[self._by_region], np.arange(pop.region.max() + 2))

    def degree(self) -> np.ndarray:
        return np.bincount(self.u, minlength=self.pop.n) + np.bincount(self.v, minlength=self.pop.n)

    def survivors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(u, v, kind) of ties that were live all this month: formed before it and not ended in it."""
        s = self._survived
        return self.u[:s], self.v[:s], self.kind[:s]

    def month(self, month: int, traits: np.ndarray, active: np.ndarray, rng: np.random.Generator) -> EdgeBatch:
        """End some ties, then form new ones among donors on file before this month."""
        removed = self._remove(month, rng)
        self._survived = len(self.u)
        on_file = self.pop.join_month < month
        p = self.params
        if month == 0:
            # The CRM migration brings the relationships already recorded for legacy donors.
            count = p.initial_edges_per_legacy * np.count_nonzero(self.pop.legacy)
            days = 14
        else:
            count = p.edges_per_donor_month * np.count_nonzero(on_file)
            days = self.timeline.month_days(month)
        added = self._add(month, int(rng.poisson(count)), days, traits, on_file, active, rng)
        return _concat(removed, added)

    def _remove(self, month: int, rng: np.random.Generator) -> EdgeBatch:
        gone = rng.random(len(self.u)) < _REMOVE_PROB[self.kind]
        batch = EdgeBatch(
            time_us=self._times(month, self.timeline.month_days(month), int(gone.sum()), rng),
            donor=self.u[gone], related=self.v[gone], kind=self.kind[gone],
            added=np.zeros(int(gone.sum()), dtype=bool), strength=np.full(int(gone.sum()), np.nan),
        )
        self._ended = np.sort(self._key(self.u[gone], self.v[gone]))
        if gone.any():
            keep = ~gone
            self._keys = self._keys[~_isin_sorted(self._keys, self._ended)]
            self.u, self.v, self.kind = self.u[keep], self.v[keep], self.kind[keep]
        return batch

    def _add(self, month, count, days, traits, on_file, active, rng) -> EdgeBatch:
        p, pop = self.params, self.pop
        # Lapsed donors still have friends, but fewer new ones get recorded.
        weight = np.exp(p.edge_propensity_influence * traits[INF] + pop.edge_noise)
        weight *= on_file * np.where(active, 1.0, 0.3)
        if count == 0 or weight.sum() == 0:
            return _empty()
        cum = np.cumsum(weight[self._by_region])

        first = self._draw(cum, rng.random(count) * cum[-1])
        if len(self.u):
            by_degree = rng.random(count) < p.preferential_share
            ends = np.concatenate([self.u, self.v])
            first = np.where(by_degree, ends[rng.integers(0, len(ends), count)], first)

        k = p.homophily_candidates
        region = pop.region[first].astype(np.int64)
        lo, hi = cum_at(cum, self._region_bounds[region] - 1), cum[self._region_bounds[region + 1] - 1]
        local = rng.random((count, k)) < p.same_region_share
        r = rng.random((count, k))
        target = np.where(local, lo[:, None] + r * (hi - lo)[:, None], r * cum[-1])
        cand = self._draw(cum, target)
        similarity = (
            -0.6 * np.abs(traits[ENG][cand] - traits[ENG][first][:, None])
            - 0.5 * np.abs(traits[CAP][cand] - traits[CAP][first][:, None])
            - 0.02 * np.abs(pop.age0[cand] - pop.age0[first][:, None])
            + rng.gumbel(size=(count, k))
        )
        similarity[cand == first[:, None]] = -np.inf
        second = cand[np.arange(count), np.argmax(similarity, axis=1)]

        keys = self._key(first, second)
        # Not a live tie, nor one that ended this month (its "remove" may come later in
        # the month than the new "add" would).
        ok = (first != second) & ~_isin_sorted(keys, self._keys) & ~_isin_sorted(keys, self._ended)
        ok &= weight[second] > 0  # guards the degenerate case of a zero-weight draw
        _, unique = np.unique(np.where(ok, keys, -1), return_index=True)
        pick = np.sort(unique[ok[unique]])
        u, v = first[pick], second[pick]

        kind = self._kinds(u, v, traits, rng)
        self.u, self.v = np.concatenate([self.u, u]), np.concatenate([self.v, v])
        self.kind = np.concatenate([self.kind, kind])
        new_keys = np.sort(keys[pick])
        self._keys = np.insert(self._keys, np.searchsorted(self._keys, new_keys), new_keys)
        strength = np.round(rng.beta(_STRENGTH_A[kind], _STRENGTH_B[kind]), 3)
        strength[rng.random(len(u)) < _STRENGTH_MISSING] = np.nan
        return EdgeBatch(self._times(month, days, len(u), rng), u, v, kind, np.ones(len(u), dtype=bool), strength)

    def _kinds(self, u, v, traits, rng) -> np.ndarray:
        """Type of each new tie from who the two donors are (Gumbel-max over logits)."""
        pop = self.pop
        same_region = pop.region[u] == pop.region[v]
        working = (pop.age0[u] < 62) & (pop.age0[v] < 62)
        logits = np.stack(
            [
                -0.3 + 1.0 * same_region,
                -2.8 + 0.6 * (traits[CAP][u] + traits[CAP][v]) + 0.4 * (traits[INF][u] + traits[INF][v]),
                -1.0 + 0.9 * np.maximum(traits[INF][u], traits[INF][v]),
                -1.6 + 0.6 * same_region + 1.0 * working,
                -0.6 + 0.5 * (traits[ENG][u] + traits[ENG][v]),
            ],
            axis=1,
        )
        return np.argmax(logits + rng.gumbel(size=logits.shape), axis=1).astype(np.int8)

    def _draw(self, cum: np.ndarray, target: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(cum, target, side="right"), len(cum) - 1)
        return self._by_region[pos]

    def _key(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.minimum(a, b) * self.pop.n + np.maximum(a, b)

    def _times(self, month: int, days: int, k: int, rng: np.random.Generator) -> np.ndarray:
        return self.timeline.month_start_us(month) + (rng.random(k) * days * 86_400).astype(np.int64) * 1_000_000


def cum_at(cum: np.ndarray, index: np.ndarray) -> np.ndarray:
    """cum[index] with cum[-1] read as 0 (the sum before the first element)."""
    return np.where(index >= 0, cum[np.maximum(index, 0)], 0.0)


def _isin_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return sorted_keys[pos] == values


def _empty() -> EdgeBatch:
    z = np.zeros(0, dtype=np.int64)
    return EdgeBatch(z, z, z, z.astype(np.int8), z.astype(bool), z.astype(np.float64))


def _concat(a: EdgeBatch, b: EdgeBatch) -> EdgeBatch:
    return EdgeBatch(*(np.concatenate([x, y]) for x, y in zip(
        (a.time_us, a.donor, a.related, a.kind, a.added, a.strength),
        (b.time_us, b.donor, b.related, b.kind, b.added, b.strength),
    )))
