"""Non-neural models on the same rows, split and features as the neural models: the
flat as-of features of models.features.flat."""

from __future__ import annotations

import numpy as np


def train_lightgbm(x_train, y_train, x_val, y_val, seed: int = 0, rounds: int = 600):
    """Gradient-boosted trees with early stopping on validation average precision."""
    import lightgbm as lgb

    model = lgb.LGBMClassifier(
        n_estimators=rounds,
        learning_rate=0.05,
        num_leaves=63,
        min_child_samples=20,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        random_state=seed,
        n_jobs=2,
        verbose=-1,
    )
    model.fit(
        x_train, y_train, eval_X=(x_val,), eval_y=(y_val,), eval_metric="average_precision",
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )
    return model


def river_prequential(x: np.ndarray, y: np.ndarray, names: list[str]) -> np.ndarray:
    """Scores of an online logistic regression that predicts each row, then learns it.

    Rows must be in time order. Labels are assumed to arrive right after each event,
    which is optimistic for fraud (chargebacks take weeks); the report says so.
    """
    from river import compose, linear_model, optim, preprocessing

    model = compose.Pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(optimizer=optim.SGD(0.01), l2=1e-4),
    )
    scores = np.empty(len(y), dtype=np.float32)
    for i in range(len(y)):
        row = dict(zip(names, x[i].tolist()))
        scores[i] = model.predict_proba_one(row).get(True, 0.0)
        model.learn_one(row, bool(y[i]))
    return scores
