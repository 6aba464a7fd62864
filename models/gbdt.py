"""A gradient-boosted tree model of fraud, servable like the neural ones.

LightGBM over the flat as-of features (models.features.flat). It is stored in LightGBM's
own text format, never pickled, with the text's sha256 in the manifest
(models.artifacts.save_model_text), and scores the same rows to the same float32 in
training, in `tributary evaluate` and in the worker: all three score through `predict`.
Trees score on the CPU whatever device the worker has.
"""

from __future__ import annotations

import numpy as np

from models.features.flat import flat_feature_names, flat_features

FAMILY = "lightgbm"


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
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as error:
            raise ValueError(str(error)) from None
        return cls(booster, threads)

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
        return self.booster.predict(flat_features(arrays), pred_contrib=True, num_threads=self.threads)

    def to(self, device: object) -> GbdtFraudModel:
        return self  # the CPU, always

    def eval(self) -> GbdtFraudModel:
        return self
