"""Gradient-boosted tree models of fraud and of donors, servable like the neural ones.

LightGBM over the flat as-of features (models.features.flat): one booster for fraud, one
per segment target for donors. They are stored in LightGBM's own text format, never
pickled, with each file's sha256 in the manifest (models.artifacts.save_model_text), and
score the same rows to the same float32 in training, in `tributary evaluate` and in the
worker: all three score through `predict`. Trees score on the CPU whatever device the
worker has.
"""

from __future__ import annotations

import numpy as np

from models.features.donors import DonorBatch
from models.features.flat import donor_flat_features, flat_feature_names, flat_features

FAMILY = "lightgbm"
FRAUD_FILE = "model.txt"


def _booster(text: str):
    """ValueError when the text is not a LightGBM model."""
    import lightgbm as lgb

    try:
        return lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as error:
        raise ValueError(str(error)) from None


class GbdtFraudModel:
    """A LightGBM booster behind the interface the served neural model has (`to`, `eval`)."""

    family = FAMILY

    def __init__(self, booster, threads: int = 1):
        self.booster = booster
        self.threads = threads  # the worker keeps a core for its event loop, as with torch
        self.feature_names = flat_feature_names()
        if booster.num_feature() != len(self.feature_names):
            raise ValueError(f"the booster has {booster.num_feature()} features, this code makes "
                             f"{len(self.feature_names)}: it was trained on other features")

    @classmethod
    def from_text(cls, text: str, threads: int = 1) -> GbdtFraudModel:
        """ValueError when the text is not a LightGBM model of these features."""
        return cls(_booster(text), threads)

    def to_text(self) -> str:
        return self.booster.model_to_string()

    def predict(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Fraud probability of each row of the model inputs, float32."""
        if len(arrays["event"]) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.booster.predict(flat_features(arrays), num_threads=self.threads).astype(np.float32)

    def contributions(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """[N, features + 1]: each flat feature's contribution to the raw score (log-odds),
        then the expected value (LightGBM's `pred_contrib`, TreeSHAP)."""
        return self.contributions_of_rows(flat_features(arrays))

    def contributions_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """`contributions` of rows already flattened (models.features.flat)."""
        return self.booster.predict(rows, pred_contrib=True, num_threads=self.threads)

    def to(self, device: object) -> GbdtFraudModel:
        return self  # the CPU, always

    def eval(self) -> GbdtFraudModel:
        return self


class GbdtDonorModel:
    """One LightGBM booster per segment target (None: a target with no positive in
    training, scored 0), behind the interface the served donor model has."""

    family = FAMILY

    def __init__(self, targets: tuple[str, ...], boosters: dict[str, object | None], threads: int = 1):
        self.targets = tuple(targets)
        self.boosters = boosters
        self.threads = threads

    @staticmethod
    def file_of(target: str) -> str:
        return f"model-{target}.txt"

    @classmethod
    def from_texts(cls, targets: tuple[str, ...], texts: dict[str, str], threads: int = 1) -> GbdtDonorModel:
        """ValueError when a text is not a LightGBM model."""
        return cls(targets, {t: _booster(texts[cls.file_of(t)]) if cls.file_of(t) in texts else None
                             for t in targets}, threads)

    def to_texts(self) -> dict[str, str]:
        return {self.file_of(t): b.model_to_string() for t, b in self.boosters.items()  # type: ignore[attr-defined]
                if b is not None}

    def predict(self, batch: DonorBatch) -> np.ndarray:
        """Probabilities [N, targets] in `targets` order, float32."""
        out = np.zeros((len(batch), len(self.targets)), dtype=np.float32)
        if len(batch) == 0:
            return out
        x = donor_flat_features(batch)
        for j, target in enumerate(self.targets):
            booster = self.boosters.get(target)
            if booster is not None:
                out[:, j] = booster.predict(x, num_threads=self.threads)  # type: ignore[attr-defined]
        return out

    def to(self, device: object) -> GbdtDonorModel:
        return self  # the CPU, always

    def eval(self) -> GbdtDonorModel:
        return self
