"""How many alerts a fraud model raises: its own threshold, another one, or a budget.

Analysts have a capacity: so many cases a day. A budget is turned into a score
threshold with the model's own validation period, which training stores in the
artifact (`metrics["alert_budget"]`: quantiles of the validation scores and the events
per day there):

    model              the threshold chosen at training (best F1 on validation)
    threshold=0.8      this score threshold
    top_fraction=0.001 alert on the highest-scored 0.1% of transactions
    alerts_per_day=200 about 200 alerts a day, all partitions together

`threshold` below converts a budget once, from validation: right only while scores and
traffic look like validation. What the worker serves for a budget follows each
partition's own recent scores instead (models.alert_budget), starting from this
reference. `offline` writes the reference, `stream` serves the policy, `tributary
evaluate` shows precision and recall against alerts per day.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.errors import TributaryError

# Quantile levels: even over [0, 1], and dense near 1 where budgets live (top 1e-5 .. 50%).
LEVELS = np.unique(np.concatenate([np.linspace(0.0, 1.0, 501), 1.0 - np.logspace(-5, np.log10(0.5), 500)]))
KINDS = ("model", "threshold", "top_fraction", "alerts_per_day")
SECONDS_PER_DAY = 86_400.0


class AlertPolicyError(TributaryError, ValueError):
    """A policy that cannot be read, or that the model's artifact cannot serve."""


def budget_reference(validation_scores: np.ndarray, validation_seconds: float) -> dict[str, Any]:
    """What training stores so that a budget can become a threshold."""
    scores = np.asarray(validation_scores, dtype=np.float64)
    return {
        "levels": [round(float(level), 8) for level in LEVELS],
        "score_quantiles": [float(q) for q in np.quantile(scores, LEVELS)] if len(scores) else [],
        "events": int(len(scores)),
        "events_per_day": float(len(scores) / max(validation_seconds / SECONDS_PER_DAY, 1e-9)),
    }


@dataclass(frozen=True)
class AlertPolicy:
    kind: str = "model"
    value: float | None = None

    @classmethod
    def parse(cls, text: str) -> AlertPolicy:
        """`model`, `threshold=X`, `top_fraction=Q` or `alerts_per_day=N` ('' is `model`)."""
        text = text.strip()
        if text in ("", "model"):
            return cls()
        kind, _, raw = text.partition("=")
        kind = kind.strip()
        if kind not in KINDS[1:] or not raw.strip():
            raise AlertPolicyError(f"alert policy {text!r}: expected model, threshold=X, top_fraction=Q or "
                                   "alerts_per_day=N")
        try:
            value = float(raw)
        except ValueError:
            raise AlertPolicyError(f"alert policy {text!r}: {raw.strip()!r} is not a number") from None
        bounds = {"threshold": (0.0, 1.0), "top_fraction": (0.0, 1.0), "alerts_per_day": (0.0, float("inf"))}[kind]
        if not (bounds[0] < value <= bounds[1] or (kind == "threshold" and value == 0.0)):
            raise AlertPolicyError(f"alert policy {text!r}: {kind} must be in "
                                   f"{'[0, 1]' if kind == 'threshold' else '(0, 1]' if kind == 'top_fraction' else '> 0'}")
        return cls(kind, value)

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}={self.value:g}"

    @property
    def is_budget(self) -> bool:
        """A share of the traffic (`top_fraction`, `alerts_per_day`), not a score."""
        return self.kind in ("top_fraction", "alerts_per_day")

    def threshold(self, model_threshold: float, metrics: dict[str, Any], what: str = "the model") -> float:
        """The score threshold this policy sets for a model (its own threshold and metrics)."""
        if self.kind == "model":
            return float(model_threshold)
        assert self.value is not None
        if self.kind == "threshold":
            return self.value
        reference = metrics.get("alert_budget") or {}
        if not reference.get("score_quantiles"):
            raise AlertPolicyError(f"alert policy {self}: {what} was trained without the validation scores a budget "
                                   "needs; retrain it with `tributary train fraud`, or use threshold=X")
        fraction = self.value if self.kind == "top_fraction" else self.value / reference["events_per_day"]
        return threshold_at_fraction(reference, fraction)


def threshold_at_fraction(reference: dict[str, Any], fraction: float) -> float:
    """The validation score above which `fraction` of validation events fall."""
    level = 1.0 - min(max(fraction, 0.0), 1.0)
    return float(np.interp(level, reference["levels"], reference["score_quantiles"]))
