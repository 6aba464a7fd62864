"""The hybrid fraud model: the trees and a neural model of the same run, blended in log-odds.

    logit(hybrid) = w * logit(trees) + (1 - w) * logit(neural)

Trees see the flat as-of features; the neural model sees the windows and the 2-hop
neighbourhood themselves. They make different mistakes, so a blend can beat both.
Training picks the neural component (the best of its run on validation) and `w` (from
WEIGHTS, on validation); the hybrid then competes for "served" like any other model. The
grid leaves out 0 and 1, so the hybrid never wins just by being one of its components.

Both components score exactly as they do when served alone (models.gbdt, the torch
module), and the blend is this module's `combine`, so training, `tributary evaluate` and
the worker agree. It is saved as one artifact: the module's weights and the trees' text,
each checked when loaded.
"""

from __future__ import annotations

import numpy as np
import torch

from models.gbdt import GbdtFraudModel
from models.nn.fraud_model import FraudModel

FAMILY = "hybrid"
WEIGHTS = (0.25, 0.5, 0.75)  # the trees' weight; the neural model gets the rest
_EPS = 1e-7  # probabilities are clipped this far from 0 and 1 before their logit


class HybridFraudModel:
    """A tree model and a neural model, blended; `to`/`eval` as the served models have."""

    family = FAMILY

    def __init__(self, trees: GbdtFraudModel, net: FraudModel, tree_weight: float):
        if not 0.0 < tree_weight < 1.0:
            raise ValueError(f"the trees' weight must be inside (0, 1), not {tree_weight}")
        self.trees, self.net, self.tree_weight = trees, net, float(tree_weight)

    def combine(self, tree_probabilities: np.ndarray, net_probabilities: np.ndarray) -> np.ndarray:
        """The hybrid's probabilities from its components' (float32)."""
        return blend(tree_probabilities, net_probabilities, self.tree_weight)

    def to(self, device: torch.device | str) -> HybridFraudModel:
        self.net.to(device)  # the trees stay on the CPU
        return self

    def eval(self) -> HybridFraudModel:
        self.net.eval()
        return self


def blend(tree_probabilities: np.ndarray, net_probabilities: np.ndarray, tree_weight: float) -> np.ndarray:
    """sigmoid(w * logit(trees) + (1 - w) * logit(net)), computed in float64, returned as float32."""
    blended = (tree_weight * logit(tree_probabilities) + (1.0 - tree_weight) * logit(net_probabilities))
    return (1.0 / (1.0 + np.exp(-blended))).astype(np.float32)


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) in float64, p clipped `_EPS` away from 0 and 1."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def reason_name(net_name: str) -> str:
    """A neural model's reason name in the trees' naming (models.features.flat), so that a
    feature both components weigh is one reason: 'log_amount' -> 'event.log_amount',
    'source.x' -> 'src.x', 'destination.x' -> 'dst.x'."""
    for prefix, flat in (("source.", "src."), ("destination.", "dst.")):
        if net_name.startswith(prefix):
            return flat + net_name[len(prefix):]
    return f"event.{net_name}"
