"""The budget's per-partition threshold: it holds the rate on shifted and tied scores,
ignores batch boundaries, and survives a trip through the changelog bytes."""

from __future__ import annotations

import numpy as np
import pytest

from models.alert_budget import BudgetController, BudgetState
from models.alert_policy import SECONDS_PER_DAY, AlertPolicy, budget_reference

DAYS = 20
VALIDATION = np.random.default_rng(0).random(20_000)  # 2,000 events a day over 10 days
REFERENCE = budget_reference(VALIDATION, validation_seconds=10 * SECONDS_PER_DAY)


def stream(per_day: int, days: int = DAYS, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(0, days * SECONDS_PER_DAY, per_day * days))
    return times, rng.random(len(times))


def alerts_after_day_two(controller: BudgetController, times, scores) -> float:
    flags, _ = controller.flag(controller.initial(), times, scores)
    later = times >= 2 * SECONDS_PER_DAY  # the first two days adapt from validation
    return flags[later].sum() / ((times[later].max() - times[later].min()) / SECONDS_PER_DAY)


@pytest.mark.parametrize("per_day", [2_000, 300])
def test_alerts_per_day_hold_when_traffic_and_scores_move(per_day):
    controller = BudgetController(AlertPolicy.parse("alerts_per_day=40"), REFERENCE, partitions=4)
    times, scores = stream(per_day)
    scores = scores ** 4  # lower than validation: a fixed threshold would alert far less
    assert alerts_after_day_two(controller, times, scores) == pytest.approx(10.0, rel=0.1)  # one partition's share


def test_a_top_fraction_holds_on_scores_with_heavy_ties():
    # A tree ensemble gives many events the very same score; a plain threshold alerts all or none of them.
    controller = BudgetController(AlertPolicy.parse("top_fraction=0.01"), REFERENCE, partitions=1)
    times, scores = stream(1_000)
    tied = np.round(scores * 20) / 20  # 21 distinct scores, ~5% of events on each
    flags, _ = controller.flag(controller.initial(), times, tied)
    assert flags[times >= 2 * SECONDS_PER_DAY].mean() == pytest.approx(0.01, rel=0.1)


def test_traffic_below_the_budget_alerts_every_event():
    controller = BudgetController(AlertPolicy.parse("alerts_per_day=100"), REFERENCE, partitions=1)
    times, scores = stream(20)
    flags, thresholds = controller.flag(controller.initial(), times, scores)
    assert flags[times >= 2 * SECONDS_PER_DAY].all() and (thresholds[times >= 2 * SECONDS_PER_DAY] == 0).all()


def test_batches_and_the_changelog_change_nothing():
    policy = AlertPolicy.parse("alerts_per_day=30")
    controller = BudgetController(policy, REFERENCE, partitions=2)
    times, scores = stream(500, days=4)
    whole, whole_thresholds = controller.flag(controller.initial(), times, scores)
    state, parts = controller.initial(), []
    for rows in np.array_split(np.arange(len(times)), 37):
        state = BudgetState.decode(state.encode("tag"), "tag", controller.bins)  # as a rescored partition reads it
        assert state is not None
        parts.append(controller.flag(state, times[rows], scores[rows]))
    assert (np.concatenate([f for f, _ in parts]) == whole).all()
    assert (np.concatenate([t for _, t in parts]) == whole_thresholds).all()


def test_state_of_another_policy_or_model_is_not_read():
    controller = BudgetController(AlertPolicy.parse("top_fraction=0.1"), REFERENCE, partitions=1)
    raw = controller.initial().encode("top_fraction=0.1 v1")
    assert BudgetState.decode(raw, "top_fraction=0.1 v2", controller.bins) is None
    assert BudgetState.decode(b"", "top_fraction=0.1 v1", controller.bins) is None
    assert BudgetState.decode(raw, "top_fraction=0.1 v1", controller.bins) is not None
