"""Alert policies: how they are written, and the threshold each sets from validation scores."""

from __future__ import annotations

import numpy as np
import pytest

from models.alert_policy import AlertPolicy, AlertPolicyError, budget_reference

SCORES = np.random.default_rng(0).random(20_000)  # uniform: the top q fraction starts at 1 - q
METRICS = {"alert_budget": budget_reference(SCORES, validation_seconds=10 * 86_400)}  # 2,000 events a day


@pytest.mark.parametrize("text, expected", [("", AlertPolicy()), ("model", AlertPolicy()),
                                            ("threshold=0.8", AlertPolicy("threshold", 0.8)),
                                            (" top_fraction = 0.01 ", AlertPolicy("top_fraction", 0.01)),
                                            ("alerts_per_day=200\n", AlertPolicy("alerts_per_day", 200.0))])
def test_policies_are_read_from_one_line(text, expected):
    assert AlertPolicy.parse(text) == expected


@pytest.mark.parametrize("text", ["top=5", "threshold=", "threshold=1.5", "top_fraction=0", "alerts_per_day=-3",
                                  "alerts_per_day=lots"])
def test_a_bad_policy_says_what_is_expected(text):
    with pytest.raises(AlertPolicyError, match="alert policy"):
        AlertPolicy.parse(text)


def test_each_policy_sets_its_threshold():
    assert AlertPolicy().threshold(0.61, METRICS) == 0.61
    assert AlertPolicy("threshold", 0.9).threshold(0.61, METRICS) == 0.9
    assert AlertPolicy("top_fraction", 0.01).threshold(0.61, METRICS) == pytest.approx(0.99, abs=0.002)
    # 200 a day of 2,000 a day: the top 10%.
    assert AlertPolicy("alerts_per_day", 200).threshold(0.61, METRICS) == pytest.approx(0.90, abs=0.005)


@pytest.mark.parametrize("budget", [0.001, 0.0005])
def test_small_budgets_are_resolved_near_the_top(budget):
    threshold = AlertPolicy("top_fraction", budget).threshold(0.5, METRICS)
    assert (SCORES >= threshold).mean() == pytest.approx(budget, rel=0.2)  # 10-20 of 20,000


def test_a_budget_needs_an_artifact_with_validation_scores():
    with pytest.raises(AlertPolicyError, match="retrain"):
        AlertPolicy("alerts_per_day", 10).threshold(0.5, {}, "fusion-gated version v1")
