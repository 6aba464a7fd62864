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


LABEL_DELAY_S = 7 * 24 * 3600.0  # fraud is confirmed days to weeks later (chargebacks, case reviews)


def river_prequential(x: np.ndarray, y: np.ndarray, names: list[str], times_s: np.ndarray,
                      label_delay_s: float = LABEL_DELAY_S) -> np.ndarray:
    """Scores of an online logistic regression that predicts each row, and learns a row's
    label only once `label_delay_s` of event time has passed since it, as a production
    system learns from confirmed fraud.

    Rows must be in time order (`times_s`: their event times, Unix seconds).
    """
    from river import compose, linear_model, optim, preprocessing

    model = compose.Pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(optimizer=optim.SGD(0.01), l2=1e-4),
    )
    scores = np.empty(len(y), dtype=np.float32)
    learned = 0  # rows before this one have been learnt from
    for i in range(len(y)):
        while learned < i and times_s[learned] + label_delay_s <= times_s[i]:
            model.learn_one(dict(zip(names, x[learned].tolist())), bool(y[learned]))
            learned += 1
        scores[i] = model.predict_proba_one(dict(zip(names, x[i].tolist()))).get(True, 0.0)
    return scores
