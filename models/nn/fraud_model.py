"""The fraud scorer: transaction features + optional graph and sequence context, fused.

One class covers every family we train, so the worker loads any of them the same way:
    graph-sage-*     graph encoder only (+ the transaction's own features)
    sequence-*       sequence encoder only (+ own features)
    tabular-mlp      own features and the two accounts' aggregates only
    fusion-*         graph and sequence encoders, fused by one of four strategies
Input normalisation statistics are buffers, saved with the weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from models.nn.fusion import fusion
from models.nn.graph import TemporalGraphSAGE
from models.nn.sequence import sequence_encoder

INPUTS = ("event", "seq", "seq_mask", "node", "hop1", "hop1_mask", "hop2", "hop2_mask")


@dataclass(frozen=True)
class FraudModelSpec:
    """Hyper-parameters of a fraud model; stored in the artifact manifest."""

    name: str
    graph_depth: int | None = 2  # None: no graph branch
    graph_hidden: int = 64
    sequence: str | None = "bilstm"  # None: no sequence branch
    sequence_hidden: int = 32
    fusion: str = "concat"
    fusion_hidden: int = 64
    dims: dict = field(default_factory=dict)  # feature widths, filled from the feature schema

    def to_dict(self) -> dict:
        return asdict(self)


class FraudModel(nn.Module):
    """Shapes: see models.features.transactions; forward returns logits [B]."""

    def __init__(self, spec: FraudModelSpec, event_dim: int, seq_dim: int, node_dim: int, edge_dim: int):
        super().__init__()
        self.spec = spec
        self.graph = (
            TemporalGraphSAGE(node_dim, edge_dim, spec.graph_hidden, spec.graph_depth) if spec.graph_depth else None
        )
        self.sequence = sequence_encoder(spec.sequence, seq_dim, spec.sequence_hidden) if spec.sequence else None
        dims = [event_dim]
        if self.graph is not None:
            dims.append(self.graph.out_dim)
        if self.sequence is not None:
            dims.append(2 * self.sequence.out_dim)
        if self.graph is None and self.sequence is None:
            dims.append(2 * node_dim)  # tabular: the endpoints' aggregates stand in for context
        self.fusion = fusion(spec.fusion, dims, spec.fusion_hidden)
        for name, width in (("event", event_dim), ("seq", seq_dim), ("node", node_dim), ("hop", node_dim + edge_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(width))
            self.register_buffer(f"{name}_std", torch.ones(width))

    def set_normalisation(self, stats: dict[str, tuple[Tensor, Tensor]]) -> None:
        """Per-feature mean and std from the training split (masked positions excluded)."""
        for name, (mean, std) in stats.items():
            getattr(self, f"{name}_mean").copy_(mean)
            getattr(self, f"{name}_std").copy_(std.clamp_min(1e-3))

    def _norm(self, name: str, x: Tensor, mask: Tensor | None = None) -> Tensor:
        z = (x - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std")
        return z * mask.unsqueeze(-1) if mask is not None else z

    def embed(self, inputs: dict[str, Tensor]) -> list[Tensor]:
        """The modality vectors that go into the fusion, in order (event first)."""
        parts = [self._norm("event", inputs["event"])]
        node = self._norm("node", inputs["node"])
        if self.graph is not None:
            hop1 = self._norm("hop", inputs["hop1"], inputs["hop1_mask"])
            hop2 = self._norm("hop", inputs["hop2"], inputs["hop2_mask"])
            parts.append(self.graph(node, hop1, inputs["hop1_mask"], hop2, inputs["hop2_mask"]))
        if self.sequence is not None:
            seq, mask = inputs["seq"], inputs["seq_mask"]
            B, S, W, F = seq.shape
            flat = self.sequence(self._norm("seq", seq, mask).reshape(B * S, W, F), mask.reshape(B * S, W))
            parts.append(flat.reshape(B, -1))
        if self.graph is None and self.sequence is None:
            parts.append(node.flatten(1))
        return parts

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.fusion(self.embed(inputs))

    @torch.inference_mode()
    def score(self, inputs: dict[str, Tensor]) -> Tensor:
        """Fraud probabilities [B] (eval mode, no autograd)."""
        self.eval()
        return torch.sigmoid(self.forward(inputs))
