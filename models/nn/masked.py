"""Small masked reductions used by the encoders."""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Mean of `x` over `dim` where `mask` is 1; zeros where nothing is valid.

    Shapes: x [..., N, D] with mask [..., N] (dim is the N axis).
    """
    weights = mask.unsqueeze(-1)
    total = (x * weights).sum(dim)
    count = weights.sum(dim).clamp_min(1.0)
    return total / count


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax that gives 0 weight to masked positions and all-zero weights to empty rows."""
    scores = scores.masked_fill(mask <= 0, float("-inf"))
    weights = torch.softmax(scores, dim=dim)
    return torch.nan_to_num(weights, nan=0.0)
