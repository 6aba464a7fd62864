"""What the fraud and donor training loops share: the loss, how a checkpoint is signed,
the normalisation statistics of their inputs, and how a hybrid's blend weight is chosen.

Both loops train on imbalanced targets with a class-weighted focal loss (Lin et al.
2017) and checkpoint every epoch; a rerun resumes only from a checkpoint signed with
the same run (model, training settings, data), never from a stale file that happens to
sit at the path.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from torch import Tensor

from models.errors import TributaryError
from models.hybrid import WEIGHTS, blend
from offline.evaluation.metrics import average_precision


class TrainingInputError(TributaryError, ValueError):
    """What was asked to train cannot be trained: an unknown model, a world too small or
    without both classes."""


def check_model_names(asked: list[str] | None, known: list[str], task: str) -> None:
    unknown = [name for name in asked or [] if name not in known]
    if unknown:
        raise TrainingInputError(f"unknown {task} model {', '.join(map(repr, unknown))}: choose from {', '.join(known)}")


def check_trainable(world: str, size: str, periods: dict[str, tuple[int, int]], split: str, what: str,
                    how: str) -> None:
    """Refuse a world whose time split leaves a period empty or with one class only.

    `size` is the world's size in words ("2 transactions"); `periods` maps each period
    (training, validation, test) to (labels, positives) of the target `what`, as cut by
    `split`; `how` says how the user gets both classes into a world. Training on one
    class would end in a model that scores a constant, and a report of NaN metrics.
    """
    empty = [name for name, (rows, _) in periods.items() if rows == 0]
    if empty:
        raise TrainingInputError(
            f"{world}: {size} are too few to train on: the split {split} leaves the {_periods(empty)} empty. "
            "Use a larger world.")
    one_class = [name for name, (rows, positives) in periods.items() if positives in (0, rows)]
    if one_class:
        verb = "hold" if len(one_class) > 1 else "holds"
        raise TrainingInputError(
            f"{world}: the {_periods(one_class)} {verb} only one class of {what}, so a model can neither learn "
            f"nor be evaluated. {how}")


def _periods(names: list[str]) -> str:
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"{listed} period" + ("s" if len(names) > 1 else "")


def focal_terms(logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
    """Element-wise binary focal loss, with class weight `alpha` for positives.

    >>> focal_terms(torch.tensor([0.0]), torch.tensor([1.0]), alpha=0.5, gamma=0.0).item()  # half of ln 2
    0.3465735912322998
    """
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_true = torch.exp(-bce)
    weight = targets * alpha + (1 - targets) * (1 - alpha)
    return weight * (1 - p_true) ** gamma * bce


def run_signature(**parts: object) -> str:
    """A stable digest of what a run's checkpoint depends on (JSON of `parts`)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class MaskedMoments:
    """Mean and std per feature (last axis) over the present entries of chunks of inputs.

    Float64 sums, added chunk by chunk, so a large training set needs no copy of its
    inputs; a feature never present reads mean 0, std 1.

    >>> m = MaskedMoments()
    >>> m.add(np.array([[1.0, 5.0], [3.0, 7.0]]), mask=np.array([1.0, 1.0]))
    >>> m.add(np.array([[9.0, 9.0]]), mask=np.array([0.0]))  # absent: counts nowhere
    >>> [t.tolist() for t in m.mean_std()]
    [[2.0, 6.0], [1.0, 1.0]]
    """

    def __init__(self) -> None:
        self._n: np.ndarray | float = 0.0
        self._sum: np.ndarray | float = 0.0
        self._squares: np.ndarray | float = 0.0

    def add(self, values: np.ndarray, mask: np.ndarray | None = None) -> None:
        """`values` [..., F]; `mask` over the leading axes (1 = present), or None for all present."""
        flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
        weight = np.ones((len(flat), 1)) if mask is None else mask.reshape(len(flat), -1).astype(np.float64)
        self._n = self._n + weight.sum(0)
        self._sum = self._sum + (flat * weight).sum(0)
        self._squares = self._squares + (flat * flat * weight).sum(0)

    def mean_std(self) -> tuple[Tensor, Tensor]:
        n = np.broadcast_to(np.asarray(self._n, dtype=np.float64), np.shape(self._sum))
        mean = self._sum / np.maximum(n, 1)
        std = np.where(n > 1, np.sqrt(np.maximum(self._squares / np.maximum(n, 1) - mean**2, 0.0)), 1.0)
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def choose_blend_weight(labels: np.ndarray, tree_scores: np.ndarray, net_scores: np.ndarray
                        ) -> tuple[float, dict[str, float]]:
    """The trees' weight in a hybrid (models.hybrid.WEIGHTS) with the best validation
    PR-AUC of the blend, ties going to the even blend; and every weight's PR-AUC, as the
    manifest records it. An undefined PR-AUC (no positive) counts as 0."""
    tried = {w: average_precision(labels, blend(tree_scores, net_scores, w)) for w in WEIGHTS}
    tried = {w: (v if v == v else 0.0) for w, v in tried.items()}
    weight = max(WEIGHTS, key=lambda w: (tried[w], -abs(w - 0.5)))
    return weight, {str(w): round(v, 6) for w, v in tried.items()}
