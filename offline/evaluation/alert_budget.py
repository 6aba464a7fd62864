"""Precision and recall against alerts per day, as the worker's alert policy serves them.

The chosen policy's point is what a worker gives: a budget (`top_fraction`,
`alerts_per_day`) runs models.alert_budget per input partition over the evaluated
period in event-time order, from the validation reference, as a worker started at the
period's start would; a threshold is applied as it is. The curve over many budgets
(the plot) is the scores' ranking at fixed validation thresholds: precision and recall
against the volume they give, cheap enough for 40 budgets and every model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from models.alert_budget import BudgetController  # noqa: E402
from models.alert_policy import AlertPolicy  # noqa: E402


def budget_point(scores: np.ndarray, labels: np.ndarray, days: float, threshold: float) -> dict[str, float | None]:
    return {"threshold": float(threshold), **alerted_point(scores >= threshold, labels, days)}


def alerted_point(alerted: np.ndarray, labels: np.ndarray, days: float) -> dict[str, float | None]:
    true_alerts = int((alerted & labels).sum())
    return {
        "alerts_per_day": float(alerted.sum() / days),
        "precision": true_alerts / int(alerted.sum()) if alerted.any() else None,
        "recall": true_alerts / int(labels.sum()) if labels.any() else None,
    }


def at_budget(scores: np.ndarray, labels: np.ndarray, days: float, metrics: dict[str, Any],
              policy: AlertPolicy) -> dict[str, Any]:
    """What `policy` gives on these scores at the fixed threshold it converts to from
    validation: threshold, alerts per day, precision, recall."""
    threshold = policy.threshold(float("nan"), metrics)
    return {"policy": str(policy), **budget_point(scores, np.asarray(labels, dtype=bool), days, threshold)}


def served_at_budget(scores: np.ndarray, labels: np.ndarray, days: float, times_s: np.ndarray,
                     partition_ids: np.ndarray, partitions: int, metrics: dict[str, Any],
                     policy: AlertPolicy) -> dict[str, Any]:
    """What a worker with `partitions` input partitions raises under `policy` over `days`:
    alerts per day, precision, recall, and for a budget the threshold range it moved through."""
    if not policy.is_budget:
        return at_budget(scores, labels, days, metrics, policy)
    policy.threshold(float("nan"), metrics)  # refuses an artifact without the validation reference
    controller = BudgetController(policy, metrics["alert_budget"], partitions)
    order = np.argsort(times_s, kind="stable")  # each partition in event-time order, as it is consumed
    flags, thresholds = np.zeros(len(scores), dtype=np.bool_), np.zeros(len(scores))
    flags[order], thresholds[order], _ = controller.flag_partitions(
        partition_ids[order], times_s[order], scores[order], lambda partition: controller.initial())
    return {"policy": str(policy),
            "threshold_range": [float(thresholds.min()), float(thresholds.max())] if len(thresholds) else None,
            **alerted_point(flags, np.asarray(labels, dtype=bool), days)}


def budget_curve(scores: np.ndarray, labels: np.ndarray, days: float, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """`at_budget` over budgets from 1 alert a day to a quarter of the validation traffic."""
    reference = metrics.get("alert_budget") or {}
    if not reference.get("score_quantiles"):
        return []
    ceiling = max(reference["events_per_day"] / 4, 2.0)
    budgets = np.unique(np.round(np.geomspace(1.0, ceiling, 40), 2))
    return [{"budget_per_day": float(b),
             **at_budget(scores, labels, days, metrics, AlertPolicy("alerts_per_day", float(b)))} for b in budgets]


def plot_budget_curves(path: Path, curves: dict[str, list[dict[str, Any]]], title: str) -> None:
    """Precision and recall (y) against the alerts per day each budget gave (x, log)."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    for name, curve in curves.items():
        if not curve:
            continue
        x = [p["alerts_per_day"] for p in curve]
        top.plot(x, [np.nan if p["precision"] is None else p["precision"] for p in curve], label=name, lw=1.2)
        bottom.plot(x, [np.nan if p["recall"] is None else p["recall"] for p in curve], label=name, lw=1.2)
    top.set(ylabel="precision", ylim=(0, 1.02), title=title)
    bottom.set(ylabel="recall", ylim=(0, 1.02), xlabel="alerts per day (log)")
    bottom.set_xscale("log")
    if top.lines:
        top.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
