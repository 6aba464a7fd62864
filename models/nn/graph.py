"""GraphSAGE over each endpoint's time-respecting, sampled neighbourhood.

The neighbourhood arrives as a fixed-fan-out computation tree (hop 1: the account's
latest counterparties; hop 2: theirs), as `models.features.transactions` builds it from
edges strictly before the transaction. On such a tree GraphSAGE's mean aggregation is a
masked mean over a tensor axis, so the layers are written densely: the same operator
as PyG's `SAGEConv` (root weight + mean of neighbour messages), with edge features
(amount, type, direction, age) concatenated to each neighbour's message, and without
building an edge index per batch on the hot path.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.nn.masked import masked_mean


class SAGELayer(nn.Module):
    """h' = relu(W_root h + W_neigh mean_j m_j), m_j = neighbour state (+ edge features)."""

    def __init__(self, root_dim: int, message_dim: int, out_dim: int):
        super().__init__()
        self.root = nn.Linear(root_dim, out_dim)
        self.neigh = nn.Linear(message_dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, root: Tensor, messages: Tensor, mask: Tensor) -> Tensor:
        return torch.relu(self.norm(self.root(root) + self.neigh(masked_mean(messages, mask, dim=-2))))


class TemporalGraphSAGE(nn.Module):
    """1- or 2-layer GraphSAGE embedding of both endpoints of a transaction.

    Args:
        node_dim: node features per account. edge_dim: features per edge.
        hidden: width. depth: 1 (hop-1 only) or 2 (hop-1 and hop-2).
    Shapes: node [B, 2, node_dim]; hop1 [B, 2, K1, node_dim + edge_dim], hop1_mask [B, 2, K1];
        hop2 [B, 2, K1, K2, node_dim + edge_dim], hop2_mask [B, 2, K1, K2] -> [B, 2 * hidden]
    """

    def __init__(self, node_dim: int, edge_dim: int, hidden: int = 64, depth: int = 2):
        super().__init__()
        if depth not in (1, 2):
            raise ValueError(f"depth must be 1 or 2, got {depth}")
        self.node_dim, self.edge_dim, self.hidden, self.depth = node_dim, edge_dim, hidden, depth
        self.out_dim = 2 * hidden
        full = node_dim + edge_dim
        self.center1 = SAGELayer(node_dim, full, hidden)
        if depth == 2:
            self.neigh1 = SAGELayer(full, full, hidden)  # hop-1 nodes aggregate their hop-2
            self.center2 = SAGELayer(hidden, hidden, hidden)

    def forward(self, node: Tensor, hop1: Tensor, hop1_mask: Tensor, hop2: Tensor, hop2_mask: Tensor) -> Tensor:
        h_center = self.center1(node, hop1, hop1_mask)
        if self.depth == 2:
            h_neigh = self.neigh1(hop1, hop2, hop2_mask)
            h_center = self.center2(h_center, h_neigh, hop1_mask)
        return h_center.flatten(1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(node={self.node_dim}, edge={self.edge_dim}, hidden={self.hidden}, depth={self.depth})"
