"""The seed comparison reports each model over seeds, and what was served in each."""

from __future__ import annotations

from tributary.compare_seeds import mean_std, summarise, table_lines


def report(seed_scores, served, validation):
    return {"models": {name: {"pr_auc": value} for name, value in seed_scores.items()},
            "served": {"model": served, "validation_pr_auc": validation}}


def test_the_served_row_follows_the_validation_winner_of_each_seed():
    reports = [
        report({"a": 0.80, "b": 0.90}, "a", {"a": 0.7, "b": 0.6}),  # validation chose a, test prefers b
        report({"a": 0.82, "b": 0.86}, "b", {"a": 0.6, "b": 0.7}),
    ]
    rows = summarise(reports)
    assert rows["served"]["test"] == [0.80, 0.86] and rows["served"]["models"] == ["a", "b"]
    assert rows["b"]["test"] == [0.90, 0.86] and rows["b"]["validation"] == [0.6, 0.7]
    assert mean_std(rows["a"]["test"]) == "0.8100 ± 0.0100"
    assert mean_std([float("nan")]) == "-"


def test_donor_reports_are_compared_on_the_mean_over_targets():
    donor = {"models": {"m": {"mean_f1": 0.7, "targets": {"a": {"pr_auc": 0.6}, "b": {"pr_auc": 0.8}}}},
             "served": {"model": "m", "validation_pr_auc": {"m": 0.65}}}
    rows = summarise([donor])
    assert rows["m"]["test"] == [0.7] and rows["served"]["mean_f1"] == [0.7]


def test_the_served_donor_row_shows_churn_without_and_with_the_chosen_margins():
    hysteresis = {"m": {"margins": {"a": 0.05},
                        "per_margin": {"a": [{"margin": 0.0, "churn_per_donor_month": 0.4},
                                             {"margin": 0.05, "churn_per_donor_month": 0.1}]}}}
    donor = {"models": {"m": {"mean_f1": 0.7, "targets": {"a": {"pr_auc": 0.6}}}},
             "served": {"model": "m", "validation_pr_auc": {"m": 0.65}}, "hysteresis": hysteresis}
    rows = summarise([donor])
    assert rows["served"]["churn_plain"] == [0.4] and rows["served"]["churn_kept"] == [0.1]
    assert table_lines(rows, [0])[-1].endswith("| 0.4000 ± 0.0000 → 0.1000 ± 0.0000 |")
