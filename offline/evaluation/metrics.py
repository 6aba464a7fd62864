"""Binary classification metrics for imbalanced problems (fraud, donor segments)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve


def choose_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises F1 on these (validation) labels.

    >>> choose_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.35
    """
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return 0.5
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """PR-AUC (average precision), unrounded: what the served model is chosen by. NaN
    without both classes.

    >>> round(average_precision(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.2, 0.8])), 4)
    1.0
    """
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(average_precision_score(labels, np.asarray(scores, dtype=np.float64)))


def recall_at_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float = 0.01) -> float:
    """Share of positives caught while flagging at most `max_fpr` of negatives."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= max_fpr].max(initial=0.0))


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """precision, recall, f1 at `threshold`; roc_auc, pr_auc (average precision), recall_at_1pct_fpr.

    >>> m = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]), 0.5)
    >>> m["precision"], m["recall"], m["f1"]
    (1.0, 0.5, 0.6667)
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    predicted = scores >= threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    both_classes = labels.any() and not labels.all()
    return {
        "pr_auc": round(float(average_precision_score(labels, scores)), 4) if both_classes else float("nan"),
        "roc_auc": round(float(roc_auc_score(labels, scores)), 4) if both_classes else float("nan"),
        "f1": round(f1, 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "recall_at_1pct_fpr": round(recall_at_fpr(labels, scores), 4) if both_classes else float("nan"),
        "threshold": float(threshold),
        "positives": int(labels.sum()),
        "events": int(labels.size),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }
