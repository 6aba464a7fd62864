"""The partition comparison reads, for each P, the model each seed served."""

from __future__ import annotations

from tributary.compare_partitions import donor_table, fraud_table, served_targets


def donor_report(served: str, per_model: dict[str, dict[str, tuple[float, float]]]) -> dict:
    return {"served": {"model": served, "validation_pr_auc": {}},
            "models": {name: {"targets": {t: {"f1": f1, "pr_auc": pr} for t, (f1, pr) in targets.items()}}
                       for name, targets in per_model.items()}}


def test_each_seed_contributes_the_targets_of_the_model_it_served():
    reports = [donor_report("a", {"a": {"x": (0.6, 0.7), "y": (0.8, 0.9)}, "b": {"x": (0.0, 0.0), "y": (0.0, 0.0)}}),
               donor_report("b", {"a": {"x": (0.0, 0.0), "y": (0.0, 0.0)}, "b": {"x": (0.4, 0.5), "y": (0.6, 0.7)}})]
    rows = served_targets(reports)
    assert rows["x"] == {"f1": [0.6, 0.4], "pr_auc": [0.7, 0.5]}
    assert list(rows)[-1] == "mean" and rows["mean"]["f1"] == [0.7, 0.5]


def test_the_donor_table_has_a_column_per_partition_count():
    one = donor_report("a", {"a": {"x": (0.6, 0.7)}})
    lines = donor_table({1: [one], 4: [donor_report("a", {"a": {"x": (0.5, 0.6)}})]})
    assert lines[0].endswith("| P=1 | P=4 |")
    assert lines[2] == "| x | 0.6000 ± 0.0000 / 0.7000 ± 0.0000 | 0.5000 ± 0.0000 / 0.6000 ± 0.0000 |"
    assert lines[-1] == "| served (per seed) | a | a |"


def test_the_fraud_table_shows_every_model_and_the_served_one_by_partition_count():
    def report(scores, served):
        return {"models": {n: {"pr_auc": v} for n, v in scores.items()},
                "served": {"model": served, "validation_pr_auc": dict.fromkeys(scores, 0.5)}}
    lines = fraud_table({1: [report({"a": 0.9, "b": 0.8}, "a")], 16: [report({"a": 0.7}, "a")]})
    assert lines[2:] == ["| a | 0.9000 ± 0.0000 | 0.7000 ± 0.0000 |", "| b | 0.8000 ± 0.0000 | - |",
                         "| **served** | 0.9000 ± 0.0000 | 0.7000 ± 0.0000 |"]
