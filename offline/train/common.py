"""What the fraud and donor training loops share: the loss, and how a checkpoint is signed.

Both loops train on imbalanced targets with a class-weighted focal loss (Lin et al.
2017) and checkpoint every epoch; a rerun resumes only from a checkpoint signed with
the same run (model, training settings, data), never from a stale file that happens to
sit at the path.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import Tensor


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
