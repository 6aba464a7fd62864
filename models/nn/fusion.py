"""Four ways to fuse modality embeddings into one fraud logit.

Every fusion gets a list of modality vectors [B, D_m] (e.g. graph, sequence, and the
transaction's own features) and returns logits [B]. They differ in how much the
modalities may talk to each other before the head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _head(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


class ConcatFusion(nn.Module):
    """Concatenate the modalities, then an MLP."""

    def __init__(self, dims: list[int], hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.head = _head(sum(dims), hidden, dropout)

    def forward(self, parts: list[Tensor]) -> Tensor:
        return self.head(torch.cat(parts, dim=-1)).squeeze(-1)


class _Projected(nn.Module):
    """Projects each modality to a common width, the entry of the three fusions below."""

    def __init__(self, dims: list[int], width: int):
        super().__init__()
        self.project = nn.ModuleList(nn.Sequential(nn.Linear(d, width), nn.LayerNorm(width)) for d in dims)

    def tokens(self, parts: list[Tensor]) -> Tensor:
        return torch.stack([p(x) for p, x in zip(self.project, parts)], dim=1)  # [B, M, width]


class AttentionWeightFusion(_Projected):
    """Learned per-event weights over modalities (softmax of a score), weighted sum, MLP.

    `last_weights` keeps the weights of the last forward pass, for alert explanations.
    """

    def __init__(self, dims: list[int], hidden: int = 64, dropout: float = 0.1):
        super().__init__(dims, hidden)
        self.score = nn.Sequential(nn.Linear(hidden, hidden // 2), nn.Tanh(), nn.Linear(hidden // 2, 1))
        self.head = _head(hidden, hidden, dropout)
        self.last_weights: Tensor | None = None

    def forward(self, parts: list[Tensor]) -> Tensor:
        tokens = self.tokens(parts)
        weights = torch.softmax(self.score(tokens).squeeze(-1), dim=1)
        self.last_weights = weights.detach()
        return self.head((weights.unsqueeze(-1) * tokens).sum(1)).squeeze(-1)


class GatedFusion(_Projected):
    """Each modality passes through a sigmoid gate computed from all of them."""

    def __init__(self, dims: list[int], hidden: int = 64, dropout: float = 0.1):
        super().__init__(dims, hidden)
        self.gate = nn.Linear(hidden * len(dims), hidden * len(dims))
        self.head = _head(hidden * len(dims), hidden, dropout)

    def forward(self, parts: list[Tensor]) -> Tensor:
        flat = self.tokens(parts).flatten(1)
        return self.head(torch.sigmoid(self.gate(flat)) * flat).squeeze(-1)


class CrossModalAttentionFusion(_Projected):
    """Multi-head attention across modality tokens, then pooled tokens into an MLP."""

    def __init__(self, dims: list[int], hidden: int = 64, dropout: float = 0.1, heads: int = 4):
        super().__init__(dims, hidden)
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.head = _head(hidden * len(dims), hidden, dropout)

    def forward(self, parts: list[Tensor]) -> Tensor:
        tokens = self.tokens(parts)
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return self.head(self.norm(tokens + attended).flatten(1)).squeeze(-1)


FUSIONS = {
    "concat": ConcatFusion,
    "attention": AttentionWeightFusion,
    "gated": GatedFusion,
    "cross-attention": CrossModalAttentionFusion,
}


def fusion(name: str, dims: list[int], hidden: int) -> nn.Module:
    try:
        return FUSIONS[name](dims, hidden)
    except KeyError:
        raise ValueError(f"unknown fusion {name!r}; valid: {', '.join(FUSIONS)}") from None
