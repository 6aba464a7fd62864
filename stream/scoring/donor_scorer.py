"""The donor multi-target model being served: loading and batched scoring (memberships:
stream.scoring.segments; swapping: stream.scoring.served)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.artifacts import ArtifactManifest
from models.features.donors import DonorBatch, DonorFeatureConfig
from models.nn.donor_model import DonorModel, as_tensors, load_donor_model
from stream.scoring.served import ServedModel


@dataclass(frozen=True)
class LoadedDonorModel:
    manifest: ArtifactManifest
    model: DonorModel
    features: DonorFeatureConfig
    thresholds: dict[str, float]  # per target

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.model.spec.targets)


def load_served_donor_model(path: str | Path) -> LoadedDonorModel:
    model, thresholds, manifest = load_donor_model(path)
    features = DonorFeatureConfig.from_schema(manifest.feature_schema)
    missing = [t for t in model.spec.targets if t not in thresholds]
    if missing:
        from models.artifacts import ArtifactError

        raise ArtifactError(f"{path}: no threshold for targets {missing}; retrain it with `tributary train donors`")
    return LoadedDonorModel(manifest, model, features, {t: float(thresholds[t]) for t in model.spec.targets})


class DonorScorer(ServedModel[LoadedDonorModel]):

    def score(self, model: LoadedDonorModel, batch: DonorBatch) -> np.ndarray:
        """Probabilities [N, targets] in `model.targets` order."""
        if len(batch) == 0:
            return np.zeros((0, len(model.targets)), dtype=np.float32)
        return model.model.score(as_tensors(batch.arrays(), self.device)).float().cpu().numpy()
