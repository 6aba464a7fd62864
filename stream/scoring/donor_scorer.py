"""The donor multi-target model being served: batched scoring (loading:
models.model_store; memberships: stream.scoring.segments; swapping: stream.scoring.served)."""

from __future__ import annotations

import numpy as np

from models.features.donors import DonorBatch
from models.model_store import LoadedDonorModel, donor_probabilities
from stream.scoring.served import ServedModel


class DonorScorer(ServedModel[LoadedDonorModel]):

    def score(self, model: LoadedDonorModel, batch: DonorBatch) -> np.ndarray:
        """Probabilities [N, targets] in `model.targets` order."""
        if len(batch) == 0:
            return np.zeros((0, len(model.targets)), dtype=np.float32)
        return donor_probabilities(model.model, batch, self.device)
