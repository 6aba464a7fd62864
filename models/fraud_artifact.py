"""Loading a trained fraud model for scoring (evaluation and the streaming worker)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.artifacts import ArtifactError, ArtifactManifest, load_artifact, read_manifest
from models.features.transactions import TransactionFeatureConfig
from models.nn.fraud_model import FraudModel, FraudModelSpec


@dataclass(frozen=True)
class LoadedFraudModel:
    manifest: ArtifactManifest
    model: FraudModel
    features: TransactionFeatureConfig
    threshold: float

    @property
    def version(self) -> str:
        return self.manifest.version


def load_fraud_model(path: str | Path) -> LoadedFraudModel:
    """Rebuild a fraud model from an artifact version directory, in eval mode on the CPU.

    The feature configuration (window, fan-outs) comes from the artifact; its schema hash
    must equal what this code computes for that configuration, or the artifact is refused.
    """
    path = Path(path)
    manifest = read_manifest(path)  # weights are loaded once, below, after the schema check
    if manifest.task != "fraud":
        raise ArtifactError(f"{path} is a {manifest.task} model, not a fraud model")
    try:
        features = TransactionFeatureConfig(**manifest.feature_schema["config"])
        spec = FraudModelSpec(**manifest.hyperparameters["model"])
    except (KeyError, TypeError) as error:
        raise ArtifactError(f"{path}: manifest lacks what is needed to rebuild the model ({error})") from None
    manifest, state = load_artifact(path, expected_schema_hash=features.schema_hash())
    d = spec.dims
    model = FraudModel(spec, d["event"], d["seq"], d["node"], d["edge"])
    model.load_state_dict(state)
    model.eval()
    return LoadedFraudModel(manifest, model, features, float(manifest.threshold))
