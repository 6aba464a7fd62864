"""The multi-target donor-segment model: tabular, gift-sequence and network branches,
cross-modal attention fusion, and one head per segment with cross-target attention.

Inputs are `models.features.donors.DonorBatch` arrays as tensors (see `INPUTS`):
    tabular   [N, F_tab] + mask    piecewise-linear encoding over training quantiles,
                                   2-layer MLP (batch norm, dropout)           -> tab_hidden
    sequence  [N, W, F_gift] + mask  BiLSTM over the gifts, multi-head self-attention,
                                   masked mean                                 -> 2 * seq_hidden
    network   node [N, F_node], nbr [N, 5, K, F_node + F_edge] + mask
                                   one PyG SAGEConv per relationship type over the batch's
                                   bipartite neighbour -> donor graph, concatenated  -> graph_hidden
    fusion    each modality projected to `fusion_width`, 8-head attention across them,
              concatenation, then feature-wise attention (a sigmoid gate)        -> fused
    heads     per target a 2-layer MLP whose hidden states attend to each other
              (cross-target attention) before the final logit                   -> [N, T]

A missing modality (no gifts yet, no relationships, or a data set without a network) is
never a vector of zeros that looks like data: its token is replaced by a learned
"missing" token, and it is masked out as a key of the fusion attention, so present
modalities never attend to it. Which modalities are present comes from the masks.

Variants of the same class drop branches altogether (`DonorModelSpec.modalities`), which
is how the single-modality baselines are trained in the same harness.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.contracts import Segment
from models.nn.masked import masked_mean

INPUTS = ("tab", "tab_mask", "seq", "seq_mask", "node", "nbr", "nbr_mask")
MODALITIES = ("tabular", "sequence", "network")
SEGMENTS = tuple(s.value for s in Segment)
# Inputs are standardised, then clipped: a rare flag with a tiny training std must not
# turn into a value of hundreds when it does occur.
_CLIP = 8.0


@dataclass(frozen=True)
class DonorModelSpec:
    """Hyper-parameters of a donor model; stored in the artifact manifest.

    Defaults are the design widths (`full`); `quick` halves them (see offline.train.donors).
    dims: feature widths {"tab", "gift", "node", "edge", "window", "neighbours", "types"}.
    """

    name: str = "multitarget"
    targets: tuple[str, ...] = SEGMENTS
    modalities: tuple[str, ...] = MODALITIES
    tab_hidden: int = 256
    seq_hidden: int = 128  # LSTM units per direction: the branch is 2 * seq_hidden wide
    seq_heads: int = 4
    graph_hidden: int = 128
    fusion_width: int = 256
    fusion_heads: int = 8
    fused: int = 512
    head_hidden: int = 128
    target_heads: int = 4
    dropout: float = 0.2
    tab_bins: int = 16  # quantile bins of the tabular branch's piecewise-linear encoding
    dims: dict = field(default_factory=dict)

    def __post_init__(self):
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {self.modalities}")
        if not self.targets:
            raise ValueError("a donor model needs at least one target")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DonorModelSpec":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        for name in ("targets", "modalities"):
            values[name] = tuple(values[name])
        return cls(**values)


def piecewise_linear(x: Tensor, edges: Tensor) -> Tensor:
    """Piecewise-linear encoding of each feature over its quantile bins.

    Bin i of a feature with edges e reads 0 below e_i, 1 above e_{i+1} and rises linearly
    in between, so a value becomes "how far up the training distribution" it is. An MLP
    on these fits the step-like effects trees find easily (Gorishniy et al., 2022, "On
    embeddings for numerical features in tabular deep learning"). Bins that collapse on
    a repeated value (binary features) become steps.

    Shapes: x [N, F], edges [F, B + 1] -> [N, F * B]
    """
    lo, hi = edges[:, :-1], edges[:, 1:]
    width = (hi - lo).clamp_min(1e-6)
    return ((x.unsqueeze(-1) - lo) / width).clamp(0.0, 1.0).flatten(1)


class TabularEncoder(nn.Module):
    """Values (encoded piecewise-linearly, zeroed where missing) and the mask itself, through a 2-layer MLP.

    Shapes: x [N, F], mask [N, F] -> [N, hidden]
    """

    def __init__(self, in_dim: int, hidden: int, dropout: float, bins: int):
        super().__init__()
        self.in_dim, self.hidden, self.bins, self.out_dim = in_dim, hidden, bins, hidden
        self.net = nn.Sequential(
            nn.Linear(in_dim * (bins + 1), hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout),
        )
        # Quantile edges of each feature on the training split (set with the normalisation).
        self.register_buffer("edges", torch.linspace(0, 1, bins + 1).repeat(in_dim, 1))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        encoded = piecewise_linear(x, self.edges) * mask.repeat_interleave(self.bins, dim=1)
        return self.net(torch.cat([encoded, mask], dim=-1))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_dim}, hidden={self.hidden})"


class GiftSequenceEncoder(nn.Module):
    """BiLSTM over a donor's gifts, multi-head self-attention, masked mean.

    Windows arrive right-aligned (newest last); they are moved to the left and packed,
    so the LSTM reads exactly the donor's gifts and no padding, whatever else is in the
    batch (scores do not depend on batch composition). Rows without gifts produce a
    placeholder here; the fusion replaces it with the "missing" token.

    Shapes: x [N, W, F], mask [N, W] -> [N, 2 * hidden]
    """

    def __init__(self, in_dim: int, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.in_dim, self.hidden = in_dim, hidden
        self.out_dim = 2 * hidden
        self.lstm = nn.LSTM(in_dim, hidden, batch_first=True, bidirectional=True)
        # No attention dropout: on CPU, sampling masks of [N * heads, W, W] cost as much as the attention.
        self.attention = nn.MultiheadAttention(2 * hidden, heads, batch_first=True)
        self.norm = nn.LayerNorm(2 * hidden)
        self.out = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        N, W, _ = x.shape
        lengths = mask.sum(1).long()
        steps = lengths.clamp_min(1)
        # Only the batch's longest history needs computing: after left-alignment the
        # columns beyond it are padding in every row (masked keys, excluded from the mean).
        L = int(steps.max()) if N else 1
        # Left-align: position p of the output takes input (p + W - length) mod W.
        shift = (torch.arange(L, device=x.device).unsqueeze(0) + (W - lengths).unsqueeze(1)) % W
        left = torch.gather(x, 1, shift.unsqueeze(-1).expand(N, L, x.shape[-1]))
        packed = pack_padded_sequence(left, steps.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = self.lstm(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=L)
        valid = torch.arange(L, device=x.device).unsqueeze(0) < steps.unsqueeze(1)
        attended, _ = self.attention(states, states, states, key_padding_mask=~valid, need_weights=False)
        states = self.norm(states + attended)
        return self.out(masked_mean(states, valid.float(), dim=1))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_dim}, hidden={self.hidden})"


class TypedNeighbourSAGE(nn.Module):
    """One GraphSAGE layer (PyG `SAGEConv`, mean aggregation) per relationship type.

    The neighbour tensors are turned into a bipartite graph per type for the batch:
    every valid neighbour slot is a source node (its features: the neighbour's own
    state plus the edge's), every donor a destination node (its own node features),
    so SAGEConv computes W_root x_donor + W_neigh mean_j x_j. A type with no neighbours
    for a donor gets that type's learned "no neighbours" vector instead.

    Shapes: node [N, F_node], nbr [N, T, K, F_nbr], nbr_mask [N, T, K] -> [N, hidden]
    """

    def __init__(self, node_dim: int, nbr_dim: int, types: int, hidden: int, dropout: float):
        # Imported here: PyG takes seconds to import (it loads torch._dynamo), and only a
        # donor model with a network branch needs it, not every worker and command.
        from torch_geometric.nn import SAGEConv

        super().__init__()
        self.node_dim, self.nbr_dim, self.types, self.hidden = node_dim, nbr_dim, types, hidden
        self.out_dim = hidden
        per_type = max(hidden // 2, 8)
        self.convs = nn.ModuleList(SAGEConv((nbr_dim, node_dim), per_type, aggr="mean") for _ in range(types))
        self.norms = nn.ModuleList(nn.LayerNorm(per_type) for _ in range(types))
        self.empty = nn.Parameter(torch.zeros(types, per_type))
        self.out = nn.Sequential(nn.Linear(types * per_type, hidden), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, node: Tensor, nbr: Tensor, nbr_mask: Tensor) -> Tensor:
        N = node.shape[0]
        parts = []
        for k, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            valid = nbr_mask[:, k] > 0
            donor, _ = valid.nonzero(as_tuple=True)
            sources = nbr[:, k][valid]
            edge_index = torch.stack([torch.arange(len(donor), device=node.device), donor])
            h = torch.relu(norm(conv((sources, node), edge_index, size=(len(donor), N))))
            present = valid.any(1, keepdim=True)
            parts.append(torch.where(present, h, self.empty[k].expand_as(h)))
        return self.out(torch.cat(parts, dim=-1))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(node={self.node_dim}, nbr={self.nbr_dim}, types={self.types}, hidden={self.hidden})"


class CrossModalFusion(nn.Module):
    """Attention across modality tokens, with learned tokens for missing modalities.

    Shapes: parts list of M tensors [N, D_m], present [N, M] -> [N, fused]
    """

    def __init__(self, dims: list[int], width: int, heads: int, fused: int, dropout: float):
        super().__init__()
        self.width, self.fused_dim = width, fused
        self.project = nn.ModuleList(nn.Sequential(nn.Linear(d, width), nn.LayerNorm(width)) for d in dims)
        self.modality = nn.Parameter(torch.zeros(len(dims), width))  # which token is which
        self.missing = nn.Parameter(torch.zeros(len(dims), width))
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * width, width))
        self.norm2 = nn.LayerNorm(width)
        self.concat = nn.Sequential(nn.Linear(len(dims) * width, fused), nn.LayerNorm(fused), nn.ReLU(), nn.Dropout(dropout))
        # Feature-wise attention over the fused vector (a learned sigmoid gate), residual.
        self.refine = nn.Linear(fused, fused)
        self.norm3 = nn.LayerNorm(fused)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.modality, std=0.02)
        nn.init.normal_(self.missing, std=0.02)

    def forward(self, parts: list[Tensor], present: Tensor) -> Tensor:
        tokens = torch.stack([p(x) for p, x in zip(self.project, parts)], dim=1)  # [N, M, width]
        tokens = torch.where(present.unsqueeze(-1) > 0, tokens, self.missing.unsqueeze(0).expand_as(tokens))
        tokens = tokens + self.modality.unsqueeze(0)
        # Keys: present modalities only; a row with none present attends among its missing tokens.
        ignore = present <= 0
        ignore = ignore & ~ignore.all(dim=1, keepdim=True)
        attended, _ = self.attention(tokens, tokens, tokens, key_padding_mask=ignore, need_weights=False)
        tokens = self.norm1(tokens + attended)
        tokens = self.norm2(tokens + self.ffn(tokens))
        fused = self.concat(tokens.flatten(1))
        return self.norm3(fused + fused * torch.sigmoid(self.refine(fused)))


class CrossTargetHeads(nn.Module):
    """One 2-layer MLP per target; the hidden states attend to each other before the logits.

    Shapes: x [N, in_dim] -> logits [N, T]
    """

    def __init__(self, in_dim: int, targets: int, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.targets, self.hidden = targets, hidden
        self.first = nn.Linear(in_dim, targets * hidden)  # the T first layers, side by side
        self.target = nn.Parameter(torch.zeros(targets, hidden))
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.weight = nn.Parameter(torch.empty(targets, hidden))  # the T second layers
        self.bias = nn.Parameter(torch.zeros(targets))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.target, std=0.02)
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.first(x)).view(x.shape[0], self.targets, self.hidden) + self.target
        attended, _ = self.attention(h, h, h, need_weights=False)
        h = self.dropout(self.norm(h + attended))
        return (h * self.weight).sum(-1) + self.bias


class DonorModel(nn.Module):
    """Multi-target donor-segment scorer; forward returns logits [N, T] (T = len(spec.targets)).

    Args:
        spec: hyper-parameters; spec.dims must hold the feature widths.
    Shapes: tab, tab_mask [N, F_tab]; seq [N, W, F_gift], seq_mask [N, W]; node [N, F_node];
        nbr [N, 5, K, F_node + F_edge], nbr_mask [N, 5, K] -> [N, T]

    >>> torch.manual_seed(0) and None
    >>> dims = {"tab": 6, "gift": 3, "node": 4, "edge": 2, "window": 5, "neighbours": 2, "types": 5}
    >>> m = DonorModel(DonorModelSpec(tab_hidden=8, seq_hidden=4, seq_heads=2, graph_hidden=8,
    ...     fusion_width=8, fusion_heads=2, fused=8, head_hidden=8, target_heads=2, dims=dims))
    >>> m.score(m.empty_inputs(3)).shape  # no gifts, no neighbours: masks, not zeros
    torch.Size([3, 5])
    """

    def __init__(self, spec: DonorModelSpec):
        super().__init__()
        self.spec = spec
        d = spec.dims
        missing = {"tab", "gift", "node", "edge", "types"} - set(d)
        if missing:
            raise ValueError(f"spec.dims lacks {sorted(missing)}; fill it from the feature schema")
        dims = []
        self.tabular = self.sequence = self.network = None
        if "tabular" in spec.modalities:
            self.tabular = TabularEncoder(d["tab"], spec.tab_hidden, spec.dropout, spec.tab_bins)
            dims.append(self.tabular.out_dim)
        if "sequence" in spec.modalities:
            self.sequence = GiftSequenceEncoder(d["gift"], spec.seq_hidden, spec.seq_heads, spec.dropout)
            dims.append(self.sequence.out_dim)
        if "network" in spec.modalities:
            self.network = TypedNeighbourSAGE(d["node"], d["node"] + d["edge"], d["types"], spec.graph_hidden, spec.dropout)
            dims.append(self.network.out_dim)
        self.fusion = CrossModalFusion(dims, spec.fusion_width, spec.fusion_heads, spec.fused, spec.dropout)
        self.heads = CrossTargetHeads(spec.fused, len(spec.targets), spec.head_hidden, spec.target_heads, spec.dropout)
        # The tabular branch normalises by its quantile edges; the others by mean and std.
        for name, width in (("gift", d["gift"]), ("node", d["node"]), ("nbr", d["node"] + d["edge"])):
            self.register_buffer(f"{name}_mean", torch.zeros(width))
            self.register_buffer(f"{name}_std", torch.ones(width))

    def set_normalisation(self, stats: dict[str, tuple[Tensor, Tensor]], tab_quantiles: Tensor | None = None) -> None:
        """Per-feature mean and std from the training split (missing/padded entries excluded),
        and the tabular features' quantiles [F, tab_bins + 1] for the piecewise-linear encoding."""
        for name, (mean, std) in stats.items():
            if not hasattr(self, f"{name}_mean"):
                continue
            getattr(self, f"{name}_mean").copy_(mean)
            getattr(self, f"{name}_std").copy_(std.clamp_min(1e-2))
        if self.tabular is not None and tab_quantiles is not None:
            self.tabular.edges.copy_(tab_quantiles)

    def _norm(self, name: str, x: Tensor) -> Tensor:
        return ((x - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std")).clamp(-_CLIP, _CLIP)

    @staticmethod
    def present(inputs: dict[str, Tensor]) -> Tensor:
        """[N, 3] modality-present mask: tabular (always), sequence (any gift), network (any neighbour)."""
        seq = (inputs["seq_mask"].amax(1) > 0).float()
        net = (inputs["nbr_mask"].flatten(1).amax(1) > 0).float()
        return torch.stack([torch.ones_like(seq), seq, net], dim=1)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        parts, present = [], []
        flags = self.present(inputs)
        if self.tabular is not None:
            mask = inputs["tab_mask"]
            parts.append(self.tabular(inputs["tab"], mask))
            present.append(flags[:, 0])
        if self.sequence is not None:
            mask = inputs["seq_mask"]
            seq = self._norm("gift", inputs["seq"]) * mask.unsqueeze(-1)
            parts.append(self.sequence(seq, mask))
            present.append(flags[:, 1])
        if self.network is not None:
            mask = inputs["nbr_mask"]
            nbr = self._norm("nbr", inputs["nbr"]) * mask.unsqueeze(-1)
            parts.append(self.network(self._norm("node", inputs["node"]), nbr, mask))
            present.append(flags[:, 2])
        return self.heads(self.fusion(parts, torch.stack(present, dim=1)))

    @torch.inference_mode()
    def score(self, inputs: dict[str, Tensor]) -> Tensor:
        """Probabilities [N, T] in `spec.targets` order (eval mode, no autograd)."""
        self.eval()
        return torch.sigmoid(self.forward(inputs))

    def empty_inputs(self, n: int) -> dict[str, Tensor]:
        """Inputs of n donors the state knows nothing about (every modality missing)."""
        d = self.spec.dims
        W, K, T = d.get("window", 1), d.get("neighbours", 1), d["types"]
        return {
            "tab": torch.zeros(n, d["tab"]), "tab_mask": torch.zeros(n, d["tab"]),
            "seq": torch.zeros(n, W, d["gift"]), "seq_mask": torch.zeros(n, W),
            "node": torch.zeros(n, d["node"]),
            "nbr": torch.zeros(n, T, K, d["node"] + d["edge"]), "nbr_mask": torch.zeros(n, T, K),
        }

    def __repr__(self) -> str:
        branches = ", ".join(self.spec.modalities)
        return f"{type(self).__name__}({self.spec.name}: {branches} -> {len(self.spec.targets)} targets)"


def as_tensors(arrays: dict[str, np.ndarray], device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """DonorBatch.arrays() -> the model's input dict."""
    return {name: torch.as_tensor(arrays[name], device=device) for name in INPUTS}
