"""A budget that holds its alert rate: a threshold from each partition's own recent scores.

A threshold fixed from validation quantiles holds a budget only while traffic and scores
look like validation. Measured on the AMLSim sample (LightGBM, 4 partitions, test
period, traffic falling from ~1,050 to ~20 events a day): alerts_per_day=50 gave 38.2 a
day; converting the budget with the current event rate instead overshot to 81, because
the score mix moved too. An integral controller on the alert count held the rate on
average, but on a stream whose scores jump it alerted a burst and then wound up and
stayed silent for days. So the threshold is read from the scores themselves:

    per input partition, a histogram of its scores (bins between validation's score
    quantiles, and of 0.25 in log-odds outside their range), decayed
    with a time constant of one day of event time, so that it holds about one day of
    its traffic; the threshold leaves the budget above it: N / P alerts (the
    partition's share of `alerts_per_day=N`), or Q of the histogram (`top_fraction=Q`)

Each event is compared with the histogram of the events before it, then added to it.
No gain to tune, no wind-up: after any change of traffic, score mix or model version,
the threshold follows within about a day. When a partition's last day holds fewer
events than its share of the budget, it alerts on all of them (the traffic is below the
budget). A partition starts from the validation period (its quantiles and event rate).

The state is one time and ~550 counts per partition (4 KB), updated per event in offset order,
so batch boundaries change nothing and a partition rescored from its published marker
raises exactly the alerts it raised before (the worker keeps the state inside that
marker: stream.pipeline.transactions).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.alert_policy import SECONDS_PER_DAY, AlertPolicy

BUCKET_S = SECONDS_PER_DAY / 2  # the window is the current half day of event time and the one before
GAIN_PER_DAY = 2.0  # the trim's integral gain (see _retrim)
TRIM_LIMIT = 4.0
LOGIT_STEP = 0.5  # the bins beyond validation's range, in log-odds (scores are probabilities)
LOGIT_RANGE = 12.0
_HEADER = struct.Struct("<6d")


def bin_edges(quantiles: np.ndarray) -> np.ndarray:
    """Score bins: validation's quantiles (fine where the model's scores lie, and dense in
    the top tail where budgets live) with a log-odds grid for scores outside them."""
    grid = 1.0 / (1.0 + np.exp(-np.arange(-LOGIT_RANGE, LOGIT_RANGE + LOGIT_STEP / 2, LOGIT_STEP)))
    if not len(quantiles):
        return np.unique(np.concatenate([[0.0], grid, [1.0]]))
    outside = grid[(grid < quantiles.min()) | (grid > quantiles.max())]
    return np.unique(np.concatenate([[0.0], quantiles[::4], quantiles[-1:], outside, [1.0]]))


@dataclass
class BudgetState:
    """One partition's scores in the window, as of the last event it flagged or not."""

    time_s: float  # event time of that event (nan: none yet)
    bucket_start_s: float  # where the current half day began
    previous: np.ndarray  # events per score bin in the half day before it
    current: np.ndarray  # and in the current one, so far
    credit: float = 0.0  # the boundary bin's share owed but not alerted yet (see flag)
    alerts: float = 0.0  # alerts and events, decayed with a time constant of one day (see trim)
    events: float = 0.0
    trim: float = 0.0  # log of the factor on the window's budget that the alert count asks for

    def encode(self, tag: str) -> bytes:
        """Bytes for the changelog, tagged with what they belong to (policy and model version)."""
        counts = np.concatenate([self.previous, self.current]).astype("<f8")
        header = _HEADER.pack(self.time_s, self.bucket_start_s, self.credit, self.alerts, self.events, self.trim)
        return header + counts.tobytes() + tag.encode()

    @classmethod
    def decode(cls, raw: bytes, tag: str, bins: int) -> BudgetState | None:
        """The state in `raw`, or None when it is missing or belongs to another policy or model."""
        header = _HEADER.size + 16 * bins
        if len(raw) < header or raw[header:].decode(errors="replace") != tag:
            return None
        counts = np.frombuffer(raw, dtype="<f8", count=2 * bins, offset=_HEADER.size).astype(np.float64)
        time_s, bucket_start_s, *rest = _HEADER.unpack_from(raw)
        return cls(time_s, bucket_start_s, counts[:bins].copy(), counts[bins:].copy(), *rest)


class BudgetController:
    """Flags the scores of one partition against `policy` (`alerts_per_day` or
    `top_fraction`), starting from the model's validation reference (`budget_reference`)."""

    def __init__(self, policy: AlertPolicy, reference: dict, partitions: int):
        if not policy.is_budget or policy.value is None:
            raise ValueError(f"{policy} is not a budget")
        self.policy = policy
        self.partitions = max(partitions, 1)
        self.per_day = policy.kind == "alerts_per_day"
        self.share = policy.value / self.partitions if self.per_day else policy.value
        levels = np.asarray(reference["levels"], dtype=np.float64)
        quantiles = np.asarray(reference["score_quantiles"], dtype=np.float64)
        self.edges = bin_edges(quantiles)
        self.bins = len(self.edges) - 1
        # Half a day of validation traffic for one partition, spread as validation's scores were.
        self.events_per_day = float(reference["events_per_day"]) / self.partitions
        half_day = self.events_per_day * BUCKET_S / SECONDS_PER_DAY
        self._seed = np.zeros(self.bins)
        for share, score in zip(np.diff(levels), (quantiles[1:] + quantiles[:-1]) / 2):
            self._seed[self.bin_of(float(score))] += share * half_day

    def bin_of(self, score: float) -> int:
        return min(max(int(np.searchsorted(self.edges, score, side="right")) - 1, 0), self.bins - 1)

    def initial(self) -> BudgetState:
        """Before its first event a partition has validation's last half day behind it."""
        alerts = self.share if self.per_day else self.share * self.events_per_day
        return BudgetState(math.nan, math.nan, self._seed.copy(), np.zeros(self.bins), 0.0,
                           min(alerts, self.events_per_day), self.events_per_day, 0.0)

    def _retrim(self, state: BudgetState, elapsed_s: float) -> None:
        """Integral action on the alert count: the window's scores say where the budget lies
        now, but bursts of high scores and ties make the alerts drift from it; the trim
        moves the window's budget by GAIN x (target - alerts) / target a day, within a
        factor TRIM_LIMIT either way, so that it can never wind up."""
        decay = math.exp(-elapsed_s / SECONDS_PER_DAY)
        state.alerts *= decay
        state.events = state.events * decay + 1.0
        target = max(self.share if self.per_day else self.share * state.events, 1e-9)
        step = GAIN_PER_DAY * (target - state.alerts) / target * elapsed_s / SECONDS_PER_DAY
        state.trim = min(max(state.trim + step, -math.log(TRIM_LIMIT)), math.log(TRIM_LIMIT))

    def boundary(self, state: BudgetState, now_s: float | None = None) -> tuple[int, float]:
        """For an event at `now_s`: the bin where the budget's share of the window begins,
        and the part of that bin it takes (bins above it all alert, bins below it none)."""
        counts = state.previous + state.current
        if self.per_day:
            span_s = BUCKET_S if now_s is None or math.isnan(state.bucket_start_s) else (
                now_s - state.bucket_start_s + BUCKET_S)  # half a day to a whole one
            target = self.share * span_s / SECONDS_PER_DAY
        else:
            target = self.share * float(counts.sum())
        target *= math.exp(state.trim)
        if target <= 0.0:
            return self.bins, 0.0
        above = np.cumsum(counts[::-1])[::-1]  # above[k]: the events in bins k and higher
        full = np.flatnonzero(above >= target)
        if not len(full):
            return -1, 1.0  # less traffic than the budget: every event alerts
        k = int(full[-1])  # the highest bin that, with those above it, holds the target
        higher = float(above[k + 1]) if k + 1 < self.bins else 0.0
        return k, min(max((target - higher) / max(float(counts[k]), 1e-300), 0.0), 1.0)

    def threshold_of(self, state: BudgetState, now_s: float | None = None) -> float:
        """The lowest score that can alert now: the boundary bin's lower edge."""
        return self._lowest_alerting(self.boundary(state, now_s)[0])

    def _lowest_alerting(self, boundary_bin: int) -> float:
        return 0.0 if boundary_bin < 0 else 1.0 if boundary_bin >= self.bins else float(self.edges[boundary_bin])

    def flag_partitions(self, partition_ids: np.ndarray, times_s: np.ndarray, scores: np.ndarray,
                        start: Callable[[int], BudgetState]) -> tuple[np.ndarray, np.ndarray, dict[int, BudgetState]]:
        """`flag` for rows of several partitions (each partition's rows in its order), each
        from `start(partition)`; also the state each partition ends in."""
        flags = np.zeros(len(scores), dtype=np.bool_)
        thresholds = np.zeros(len(scores), dtype=np.float64)
        states = {}
        for partition in np.unique(partition_ids).tolist():
            rows = np.flatnonzero(partition_ids == partition)
            states[partition] = state = start(partition)
            flags[rows], thresholds[rows] = self.flag(state, times_s[rows], scores[rows])
        return flags, thresholds, states

    def flag(self, state: BudgetState, times_s: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whether each event (in order) alerts, and the lowest score that could; advances `state`.

        Events in the boundary bin alert in the share the budget needs from it, spread by
        error diffusion (a running credit): many models give many events one same score (a
        tree ensemble's leaves), and a single threshold would then alert all of them or
        none, missing small budgets by half (measured on the AMLSim sample)."""
        flags = np.zeros(len(scores), dtype=np.bool_)
        thresholds = np.zeros(len(scores), dtype=np.float64)
        for i, (t, score) in enumerate(zip(np.asarray(times_s, dtype=np.float64).tolist(), scores.tolist())):
            if math.isnan(state.time_s):
                state.time_s = state.bucket_start_s = t
            elapsed = max(t - state.time_s, 0.0)
            state.time_s = t = max(t, state.time_s)
            self._retrim(state, elapsed)
            passed = math.floor((t - state.bucket_start_s) / BUCKET_S)
            if passed >= 1:  # the window moves on by whole half days
                state.previous = state.current if passed == 1 else np.zeros(self.bins)
                state.current = np.zeros(self.bins)
                state.bucket_start_s += passed * BUCKET_S
            k, share = self.boundary(state, t)
            thresholds[i] = self._lowest_alerting(k)
            b = self.bin_of(score)
            if b > k:
                flags[i] = True
            elif b == k:
                state.credit += share
                if state.credit >= 1.0:
                    flags[i] = True
                    state.credit -= 1.0
            state.current[b] += 1.0
            state.alerts += float(flags[i])
        return flags, thresholds
