"""The fraud model being served: batched scoring and alert reasons (swapping: stream.scoring.served)."""

from __future__ import annotations

from typing import cast

import numpy as np
import torch

from models.contracts import AlertReason
from models.features.flat import flat_features
from models.features.patterns import patterns_of
from models.features.transactions import EVENT_FEATURES, NODE_FEATURES, TransactionBatch
from models.gbdt import GbdtFraudModel
from models.hybrid import HybridFraudModel, reason_name
from models.model_store import LoadedFraudModel
from models.nn.fraud_model import FraudModel
from models.nn.precision import differentiable_rnns
from stream.scoring.served import ServedModel

# Names of the inputs reasons are drawn from, in the order of the attribution vector.
REASON_FEATURES = (
    list(EVENT_FEATURES)
    + [f"source.{n}" for n in NODE_FEATURES]
    + [f"destination.{n}" for n in NODE_FEATURES]
)


class FraudScorer(ServedModel[LoadedFraudModel]):

    def score(self, model: LoadedFraudModel, inputs: dict[str, np.ndarray]) -> np.ndarray:
        if len(inputs["event"]) == 0:
            return np.zeros(0, dtype=np.float32)
        if isinstance(model.model, GbdtFraudModel):
            return model.model.predict(inputs)
        if isinstance(model.model, HybridFraudModel):
            return model.model.combine(model.model.trees.predict(inputs), self._net_scores(model.model.net, inputs))
        return self._net_scores(model.model, inputs)

    def _net_scores(self, net: FraudModel, inputs: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            return torch.sigmoid(net(tensors)).float().cpu().numpy()

    def reasons(self, model: LoadedFraudModel, inputs: dict[str, np.ndarray], top: int = 4) -> list[list[AlertReason]]:
        """Strongest contributions of the transaction's own and its two accounts' features
        to the score, for a few alerting rows: gradient x deviation from the training mean
        (neural), TreeSHAP (trees), both weighted by their share (hybrid)."""
        if len(inputs["event"]) == 0:
            return []
        if isinstance(model.model, GbdtFraudModel):
            return _tree_reasons(model.model, inputs, top)
        if isinstance(model.model, HybridFraudModel):
            return self._hybrid_reasons(model.model, inputs, top)
        return self._net_reasons(model.model, inputs, top)

    def _hybrid_reasons(self, hybrid: HybridFraudModel, inputs: dict[str, np.ndarray],
                        top: int) -> list[list[AlertReason]]:
        """Both components' reasons, each weighted by its share of the blended log-odds;
        a feature both weigh is one reason (its weights added), named as the trees name it."""
        every = 10**6  # all of each component's reasons: the merge keeps the strongest
        trees = _tree_reasons(hybrid.trees, inputs, every)
        nets = self._net_reasons(hybrid.net, inputs, every)
        out = []
        for tree_row, net_row in zip(trees, nets):
            merged: dict[str, AlertReason] = {}
            for reasons, share, rename in ((tree_row, hybrid.tree_weight, str),
                                           (net_row, 1.0 - hybrid.tree_weight, reason_name)):
                for reason in reasons:
                    name = rename(reason.name)
                    weight = share * reason.weight + (merged[name].weight if name in merged else 0.0)
                    merged[name] = AlertReason(kind="feature", name=name, value=reason.value, weight=round(weight, 6))
            out.append(sorted(merged.values(), key=lambda r: -abs(r.weight))[:top])
        return out

    def _net_reasons(self, net: FraudModel, inputs: dict[str, np.ndarray], top: int) -> list[list[AlertReason]]:
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in inputs.items()}
        tensors["event"].requires_grad_(True)
        tensors["node"].requires_grad_(True)
        with torch.enable_grad(), differentiable_rnns(net):  # cuDNN: RNN gradients in eval mode
            net(tensors).sum().backward()
        event_grad, node_grad = tensors["event"].grad, tensors["node"].grad
        assert event_grad is not None and node_grad is not None  # both required grad above
        event_mean, node_mean = cast(torch.Tensor, net.event_mean), cast(torch.Tensor, net.node_mean)
        event_attr = event_grad * (tensors["event"] - event_mean)
        node_attr = node_grad * (tensors["node"] - node_mean)
        attribution = torch.cat([event_attr, node_attr.flatten(1)], dim=1).detach().cpu().numpy()
        values = np.concatenate([inputs["event"], inputs["node"].reshape(len(inputs["node"]), -1)], axis=1)
        return _strongest(attribution, values, REASON_FEATURES, top)


def _tree_reasons(model: GbdtFraudModel, inputs: dict[str, np.ndarray], top: int) -> list[list[AlertReason]]:
    """The trees' own attribution: each flat feature's TreeSHAP contribution to the
    log-odds (LightGBM's pred_contrib), the strongest `top` of each row."""
    values = flat_features(inputs)
    contributions = model.contributions_of_rows(values)[:, :-1]  # the last column is the expected value
    return _strongest(contributions, values, model.feature_names, top)


def _strongest(attribution: np.ndarray, values: np.ndarray, names, top: int) -> list[list[AlertReason]]:
    """Per row, the `top` features of largest absolute attribution, as alert reasons."""
    out = []
    for row_attr, row_values in zip(attribution, values):
        strongest = np.argsort(-np.abs(row_attr))[:top]
        out.append([AlertReason(kind="feature", name=names[j], value=float(row_values[j]),
                                weight=round(float(row_attr[j]), 6)) for j in strongest])
    return out


def with_patterns(reasons: list[list[AlertReason]], inputs: dict[str, np.ndarray]) -> list[list[AlertReason]]:
    """Each alert's reasons, then the laundering patterns its transaction matches
    (models.features.patterns), for every model family alike."""
    return [row_reasons + [AlertReason(kind="pattern", name=name, value=evidence, weight=1.0)
                           for name, evidence in patterns_of(event)]
            for row_reasons, event in zip(reasons, inputs["event"])]


def take_rows(batch: TransactionBatch, rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in batch.arrays().items()}
