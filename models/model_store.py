"""Trained models as they are served and evaluated: rebuilt from an artifact version.

One way for every task. The manifest says which task a version is for and which
feature configuration it was trained on; the weights are loaded only once the feature
schema's hash equals what this code computes for that configuration (an artifact built
for other features would score silently wrong), then the module is rebuilt from its
hyper-parameters, in eval mode on the CPU. Artifacts themselves (layout, saving,
versions, installing) are models.artifacts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from models.artifacts import ArtifactError, ArtifactManifest, load_artifact, load_model_text, read_manifest
from models.donor_hybrid import HybridDonorModel
from models.features.donor_schema import DonorFeatureConfig
from models.features.donors import DonorBatch
from models.features.transactions import TransactionFeatureConfig
from models.gbdt import FRAUD_FILE, GbdtDonorModel, GbdtFraudModel
from models.hybrid import FAMILY as HYBRID
from models.hybrid import HybridFraudModel
from models.nn.donor_model import DonorModel, DonorModelSpec, as_tensors
from models.nn.fraud_model import FraudModel, FraudModelSpec

Module = TypeVar("Module", bound=nn.Module)


@dataclass(frozen=True)
class LoadedFraudModel:
    manifest: ArtifactManifest
    model: FraudModel | GbdtFraudModel | HybridFraudModel  # a neural model, trees, or both blended
    features: TransactionFeatureConfig
    threshold: float

    @property
    def version(self) -> str:
        return self.manifest.version


@dataclass(frozen=True)
class LoadedDonorModel:
    manifest: ArtifactManifest
    model: DonorModel | GbdtDonorModel | HybridDonorModel  # the network, a booster per target, or both blended
    features: DonorFeatureConfig
    thresholds: dict[str, float]  # per target

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def margins(self) -> dict[str, float]:
        """Per target, the margin around its threshold that memberships keep (0: none)."""
        return {t: float(m) for t, m in (self.manifest.hyperparameters.get("hysteresis") or {}).items()}

    @property
    def targets(self) -> tuple[str, ...]:
        if isinstance(self.model, DonorModel):
            return tuple(self.model.spec.targets)
        return self.model.targets


def donor_probabilities(model: DonorModel | GbdtDonorModel | HybridDonorModel, batch: DonorBatch,
                        device: str | torch.device = "cpu") -> np.ndarray:
    """[N, targets] float32 probabilities of any donor family (the worker's and offline's one way)."""
    if isinstance(model, GbdtDonorModel):
        return model.predict(batch)
    if isinstance(model, HybridDonorModel):  # each component as it scores alone, then the blend
        if len(batch) == 0:
            return np.zeros((0, len(model.targets)), dtype=np.float32)
        return model.combine(model.trees.predict(batch), donor_probabilities(model.net, batch, device))
    with torch.inference_mode():
        return model.score(as_tensors(batch.arrays(), device)).float().cpu().numpy()


def _rebuild(path: str | Path, task: str, features_of: Callable[[dict], Any],
             build: Callable[[dict], Module]) -> tuple[ArtifactManifest, Module, Any]:
    """Manifest, module (weights loaded, eval mode) and feature configuration of a version."""
    path = Path(path)
    manifest, features = _task_and_features(path, task, features_of)  # the weights are loaded once, below
    try:
        model = build(manifest.hyperparameters)
    except (KeyError, TypeError) as error:
        raise ArtifactError(f"{path}: manifest lacks what is needed to rebuild the model ({error})") from None
    manifest, state = load_artifact(path, expected_schema_hash=features.schema_hash())
    model.load_state_dict(state)
    model.eval()
    return manifest, model, features


def _rebuild_trees(path: str | Path, task: str, features_of: Callable[[dict], Any],
                   build: Callable[[dict, dict[str, str]], Any]) -> tuple[ArtifactManifest, Any, Any]:
    """Manifest, tree model and feature configuration of a version kept as model texts
    (`build(hyperparameters, texts)`; the texts are read once their checksums hold)."""
    path = Path(path)
    manifest, features = _task_and_features(path, task, features_of)
    manifest, texts = load_model_text(path, expected_schema_hash=features.schema_hash())
    try:
        model = build(manifest.hyperparameters, texts)
    except (ValueError, KeyError) as error:
        raise ArtifactError(f"{path}: not a usable LightGBM model ({error}); retrain it with "
                            f"`tributary train {task}`") from None
    return manifest, model, features


def _task_and_features(path: Path, task: str, features_of: Callable[[dict], Any]) -> tuple[ArtifactManifest, Any]:
    manifest = read_manifest(path)
    if manifest.task != task:
        raise ArtifactError(f"{path} is a {manifest.task} model, not a {task} model")
    try:
        return manifest, features_of(manifest.feature_schema)
    except (KeyError, TypeError) as error:
        raise ArtifactError(f"{path}: manifest lacks what is needed to rebuild the model ({error})") from None


def _fraud_features(schema: dict) -> TransactionFeatureConfig:
    return TransactionFeatureConfig(**schema["config"])


def _fraud_module(hyperparameters: dict) -> FraudModel:
    spec = FraudModelSpec(**hyperparameters["model"])
    d = spec.dims
    return FraudModel(spec, d["event"], d["seq"], d["node"], d["edge"])


def load_fraud_model(path: str | Path) -> LoadedFraudModel:
    """A neural fraud model, a tree model (its manifest names a model text, not weights),
    or a hybrid of both (a model text and weights)."""
    model: FraudModel | GbdtFraudModel | HybridFraudModel
    if read_manifest(path).hyperparameters.get("family") == HYBRID:
        manifest, model, features = _rebuild_hybrid(path)
    elif read_manifest(path).model_file:
        manifest, model, features = _rebuild_trees(path, "fraud", _fraud_features,
                                                   lambda _, texts: GbdtFraudModel.from_text(texts[FRAUD_FILE]))
    else:
        manifest, model, features = _rebuild(path, "fraud", _fraud_features, _fraud_module)
    return LoadedFraudModel(manifest, model, features, float(manifest.threshold))  # type: ignore[arg-type]


def _rebuild_hybrid(path: str | Path) -> tuple[ArtifactManifest, HybridFraudModel, TransactionFeatureConfig]:
    """The trees (their text checked against the manifest) and the neural module (its
    weights), blended with the manifest's weight."""
    manifest, trees, features = _rebuild_trees(path, "fraud", _fraud_features,
                                               lambda _, texts: GbdtFraudModel.from_text(texts[FRAUD_FILE]))
    hyperparameters = manifest.hyperparameters
    _, net, _ = _rebuild(path, "fraud", _fraud_features, lambda h: _fraud_module(h["neural"]))
    try:
        return manifest, HybridFraudModel(trees, net, float(hyperparameters["tree_weight"])), features
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactError(f"{path}: not a usable hybrid model ({error}); retrain it with "
                            "`tributary train fraud --model hybrid`") from None


def _donor_trees(hyperparameters: dict, texts: dict[str, str]) -> GbdtDonorModel:
    return GbdtDonorModel.from_texts(tuple(hyperparameters["targets"]), texts)


def _donor_module(hyperparameters: dict) -> DonorModel:
    return DonorModel(DonorModelSpec.from_dict(hyperparameters["model"]))


def load_donor_model(path: str | Path) -> LoadedDonorModel:
    """The multi-target network, a tree model (its manifest names model texts, not
    weights), or a hybrid of both (model texts and weights)."""
    model: DonorModel | GbdtDonorModel | HybridDonorModel
    stored = read_manifest(path)  # which family; the loaders below check it before reading any model file
    if stored.hyperparameters.get("family") == HYBRID:
        manifest, trees, features = _rebuild_trees(path, "donors", DonorFeatureConfig.from_schema, _donor_trees)
        _, net, _ = _rebuild(path, "donors", DonorFeatureConfig.from_schema, _donor_module)
        try:
            model = HybridDonorModel(trees, net, manifest.hyperparameters["tree_weights"])
        except (KeyError, TypeError, ValueError) as error:
            raise ArtifactError(f"{path}: not a usable hybrid model ({error}); retrain it with "
                                "`tributary train donors --model hybrid`") from None
    elif stored.model_file:
        manifest, model, features = _rebuild_trees(path, "donors", DonorFeatureConfig.from_schema, _donor_trees)
    else:
        manifest, model, features = _rebuild(path, "donors", DonorFeatureConfig.from_schema, _donor_module)
    thresholds = manifest.threshold if isinstance(manifest.threshold, dict) else {}
    loaded = LoadedDonorModel(manifest, model, features, {})
    missing = [t for t in loaded.targets if t not in thresholds]
    if missing:
        raise ArtifactError(f"{path}: no threshold for targets {missing}; retrain it with `tributary train donors`")
    return LoadedDonorModel(manifest, model, features, {t: float(thresholds[t]) for t in loaded.targets})
