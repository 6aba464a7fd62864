"""Baselines for the donor model, on the same split and the same features.

LightGBM: one binary classifier per target on a flat table read from the same donor
state (the tabular features with NaN for missing, which LightGBM routes natively, plus
per-type means of the neighbours' node vectors).

river: one online logistic regression per target over the same flat features, run
prequentially over donors in a stable order (each donor is scored, then learnt from),
which is how an online model would meet them. Missing values are left out of the
donor's feature dict and flagged by a `<name>:missing` indicator instead.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np


def fit_lightgbm(
    X: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, rounds: int, learning_rate: float,
    threads: int, seed: int = 0,
) -> tuple[object, int]:
    """One LightGBM classifier, early-stopped on the validation log-loss; (model, best rounds)."""
    import lightgbm as lgb

    params = {
        "objective": "binary",
        "learning_rate": learning_rate,
        "num_leaves": 31,
        "min_child_samples": 20,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "num_threads": threads,
        "seed": seed,
        "deterministic": True,
        "verbose": -1,
    }
    train_set = lgb.Dataset(X[train], y[train], free_raw_data=False)
    val_set = lgb.Dataset(X[val], y[val], reference=train_set)
    booster = lgb.train(params, train_set, num_boost_round=rounds, valid_sets=[val_set],
                        callbacks=[lgb.early_stopping(max(10, rounds // 20), verbose=False)])
    return booster, int(booster.best_iteration or rounds)


def stable_order(donor_ids: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random order of donors (by a hash of the id), the same in every run."""
    keys = [hashlib.blake2b(f"river:{d}".encode(), digest_size=8).digest() for d in donor_ids]
    return np.array(sorted(range(len(donor_ids)), key=keys.__getitem__), dtype=np.int64)


def river_prequential(X: np.ndarray, labels: np.ndarray, names: list[str], order: np.ndarray,
                      learning_rate: float = 0.01) -> np.ndarray:
    """Prequential scores [N, T]: each donor (in `order`) is scored by every target's
    model before the model learns its labels. Targets with NaN labels are not learnt."""
    from river import compose, linear_model, optim, preprocessing

    T = labels.shape[1]
    models = [
        compose.Pipeline(preprocessing.StandardScaler(),
                         linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), l2=1e-4))
        for _ in range(T)
    ]
    scores = np.zeros(labels.shape, dtype=np.float64)
    present = ~np.isnan(X)
    for i in order:
        x = {names[j]: float(X[i, j]) for j in np.flatnonzero(present[i])}
        x.update({f"{names[j]}:missing": 1.0 for j in np.flatnonzero(~present[i])})
        for t, model in enumerate(models):
            scores[i, t] = model.predict_proba_one(x).get(True, 0.0)
            if not math.isnan(labels[i, t]):
                model.learn_one(x, bool(labels[i, t]))
    return scores
