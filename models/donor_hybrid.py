"""The hybrid donor model: per target, LightGBM's and the multi-target network's
probabilities blended in log-odds (models.hybrid.blend), with a weight per target.

    logit(hybrid_t) = w_t * logit(trees_t) + (1 - w_t) * logit(network_t)

The trees see the flat features of the donor state; the network sees the gift sequence
and the relationship network themselves. Training chooses each w_t on the validation
donors from models.hybrid.WEIGHTS (never 0 or 1, so the hybrid is never just one of its
components), then it competes for "served" like the other donor models. Both components
score as they do when served alone, so training, `tributary evaluate` and the worker
agree. One artifact holds the trees' texts (each with its sha256) and the network's
weights.
"""

from __future__ import annotations

import numpy as np
import torch

from models.gbdt import GbdtDonorModel
from models.hybrid import FAMILY, blend
from models.nn.donor_model import DonorModel


class HybridDonorModel:
    """A booster per target and the multi-target network, blended per target."""

    family = FAMILY

    def __init__(self, trees: GbdtDonorModel, net: DonorModel, tree_weights: dict[str, float]):
        if tuple(net.spec.targets) != trees.targets or set(tree_weights) != set(trees.targets):
            raise ValueError(f"targets differ: trees {trees.targets}, network {tuple(net.spec.targets)}, "
                             f"weights {sorted(tree_weights)}")
        outside = {t: w for t, w in tree_weights.items() if not 0.0 < w < 1.0}
        if outside:
            raise ValueError(f"the trees' weights must be inside (0, 1): {outside}")
        self.trees, self.net = trees, net
        self.tree_weights = {t: float(tree_weights[t]) for t in trees.targets}

    @property
    def targets(self) -> tuple[str, ...]:
        return self.trees.targets

    def combine(self, tree_probabilities: np.ndarray, net_probabilities: np.ndarray) -> np.ndarray:
        """[N, targets] hybrid probabilities from its components' (float32)."""
        out = np.empty(tree_probabilities.shape, dtype=np.float32)
        for j, target in enumerate(self.targets):
            out[:, j] = blend(tree_probabilities[:, j], net_probabilities[:, j], self.tree_weights[target])
        return out

    def to(self, device: torch.device | str) -> HybridDonorModel:
        self.net.to(device)  # the trees stay on the CPU
        return self

    def eval(self) -> HybridDonorModel:
        self.net.eval()
        return self
