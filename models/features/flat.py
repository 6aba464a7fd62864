"""The as-of features of one transaction (or donor) as one flat row, for gradient boosting and river.

Flattened from the same model inputs the neural models see (models.features.transactions):
the transaction's own features (the rich causal ones included), both accounts'
aggregates, neighbourhood aggregates (means over hop-1 and hop-2) and window summaries.
Training and the worker flatten with this one function, so a served tree model scores
exactly what it was trained on. Donors: the tabular features with NaN for missing (LightGBM
routes it natively), plus per-type means of the neighbours' node vectors.
"""

from __future__ import annotations

import numpy as np

from models.features.donors import NODE_FEATURES as DONOR_NODE_FEATURES
from models.features.donors import RELATIONSHIPS, TAB_FEATURES, DonorBatch
from models.features.transactions import EDGE_FEATURES, EVENT_FEATURES, NODE_FEATURES, SEQ_FEATURES

_SEQ_AMOUNT = SEQ_FEATURES.index("log_amount")
_SEQ_OUT = SEQ_FEATURES.index("outgoing")
_SEQ_GAP = SEQ_FEATURES.index("log_hours_since_previous")
_SEQ_WITH = SEQ_FEATURES.index("with_current_counterparty")
HOP_FEATURES = NODE_FEATURES + EDGE_FEATURES


def flat_feature_names() -> list[str]:
    names = [f"event.{n}" for n in EVENT_FEATURES]
    for side in ("src", "dst"):
        names += [f"{side}.{n}" for n in NODE_FEATURES]
        names += [f"{side}.hop1_mean.{n}" for n in HOP_FEATURES]
        names += [f"{side}.hop2_mean.{n}" for n in HOP_FEATURES]
        names += [f"{side}.hop1_count", f"{side}.hop2_count"]
        names += [f"{side}.window_{n}" for n in ("count", "mean_log_amount", "max_log_amount", "share_out",
                                                 "mean_log_gap", "share_with_counterparty")]
    return names


def flat_features(inputs: dict[str, np.ndarray]) -> np.ndarray:
    """[N, len(flat_feature_names())] float32 from the model-input arrays."""
    columns = [inputs["event"]]
    for side in (0, 1):
        hop1_mask = inputs["hop1_mask"][:, side]
        hop2_mask = inputs["hop2_mask"][:, side].reshape(len(hop1_mask), -1)
        hop2 = inputs["hop2"][:, side].reshape(len(hop1_mask), -1, len(HOP_FEATURES))
        seq_mask = inputs["seq_mask"][:, side]
        seq = inputs["seq"][:, side]
        count = seq_mask.sum(1)
        safe = np.maximum(count, 1)
        columns += [
            inputs["node"][:, side],
            _masked_mean(inputs["hop1"][:, side], hop1_mask),
            _masked_mean(hop2, hop2_mask),
            hop1_mask.sum(1, keepdims=True),
            hop2_mask.sum(1, keepdims=True),
            np.stack(
                [
                    count,
                    (seq[..., _SEQ_AMOUNT] * seq_mask).sum(1) / safe,
                    np.where(seq_mask > 0, seq[..., _SEQ_AMOUNT], 0).max(1),
                    (seq[..., _SEQ_OUT] * seq_mask).sum(1) / safe,
                    (seq[..., _SEQ_GAP] * seq_mask).sum(1) / safe,
                    (seq[..., _SEQ_WITH] * seq_mask).sum(1) / safe,
                ],
                axis=1,
            ),
        ]
    return np.concatenate(columns, axis=1).astype(np.float32)


def _masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)


def donor_flat_feature_names() -> list[str]:
    return list(TAB_FEATURES) + [f"nbr_mean_{r}_{f}" for r in RELATIONSHIPS for f in DONOR_NODE_FEATURES]


def donor_flat_features(batch: DonorBatch) -> np.ndarray:
    """[N, len(donor_flat_feature_names())] float32, NaN where a value is missing."""
    tab = np.where(batch.tab_mask > 0, batch.tab, np.nan)
    mask = batch.nbr_mask[..., None]
    count = mask.sum(axis=2)
    node = batch.nbr[..., : len(DONOR_NODE_FEATURES)]
    means = np.where(count > 0, (node * mask).sum(axis=2) / np.maximum(count, 1), np.nan)  # [N, 5, F_node]
    return np.concatenate([tab, means.reshape(len(batch), -1)], axis=1).astype(np.float32)
