"""The drift monitors of one served model version, built from its artifact's references.

A model version and its monitors are swapped together (stream.scoring.served): a batch
scored by version A is observed by version A's monitors, against A's references.
- fraud: one monitor of the fraud score, with PSI of key event features;
- donors: one monitor per target's score ("high_value:adwin:score"), and one of the key
  tabular features (missing values left out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from models import drift_reference
from models.contracts import DriftReport
from models.features.donors import TAB_FEATURES
from models.features.transactions import EVENT_FEATURES
from stream.monitoring.drift import DriftMonitor

if TYPE_CHECKING:  # the scorers import this module
    from models.model_store import LoadedDonorModel, LoadedFraudModel


class ModelMonitors:
    """Monitors fed together: each watches one score column (None: scores are one-dimensional)."""

    def __init__(self, monitors: list[tuple[DriftMonitor, int | None]]):
        self._monitors = monitors

    def observe(self, scores: np.ndarray, features: np.ndarray) -> list[DriftReport]:
        reports = []
        for monitor, column in self._monitors:
            reports += monitor.observe(scores if column is None else scores[:, column], features)
        return reports

    def statistics(self) -> dict[tuple[str, str], float]:
        """(model name, monitor) -> the latest statistic, for metrics."""
        return {(m.model_name, name): value for m, _ in self._monitors for name, value in m.latest.items()}


def fraud_monitors(loaded: LoadedFraudModel, window: int, psi_threshold: float) -> ModelMonitors:
    references = drift_reference.read(loaded.manifest.reference_distributions)
    monitor = DriftMonitor(references.scores.get("fraud"), references.features,
                           {name: i for i, name in enumerate(EVENT_FEATURES)}, loaded.manifest.name, loaded.version,
                           window=window, psi_threshold=psi_threshold)
    return ModelMonitors([(monitor, None)])


def donor_monitors(loaded: LoadedDonorModel, window: int, psi_threshold: float) -> ModelMonitors:
    references = drift_reference.read(loaded.manifest.reference_distributions)
    name, version = loaded.manifest.name, loaded.version
    monitors: list[tuple[DriftMonitor, int | None]] = [
        (DriftMonitor(references.scores.get(target), {}, {}, name, version, window=window,
                      psi_threshold=psi_threshold, prefix=f"{target}:"), j)
        for j, target in enumerate(loaded.targets)
    ]
    if references.features:
        features = DriftMonitor(None, references.features, {n: i for i, n in enumerate(TAB_FEATURES)}, name, version,
                                window=window, psi_threshold=psi_threshold, watch_scores=False)
        monitors.append((features, 0))
    return ModelMonitors(monitors)
