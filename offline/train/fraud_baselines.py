"""Non-neural models on the same rows, split and features as the neural models: the
flat as-of features of models.features.flat."""

from __future__ import annotations

import numpy as np

# The small search on validation: leaves x learning rate (measured on the AMLSim sample at
# 4 partitions, seed 0: the slower rate was better on validation at every width).
SEARCH = tuple((leaves, rate) for rate in (0.05, 0.02) for leaves in (31, 63, 127))


def train_lightgbm(x_train, y_train, x_val, y_val, seed: int = 0, rounds: int = 2000):
    """Gradient-boosted trees: for each setting of SEARCH, early stopping on validation
    average precision; the setting with the best validation AP wins. Returns (model,
    [{num_leaves, learning_rate, rounds, val_ap} per setting])."""
    import lightgbm as lgb
    from sklearn.metrics import average_precision_score

    best, best_ap, tried = None, -1.0, []
    for leaves, rate in SEARCH:
        model = lgb.LGBMClassifier(
            n_estimators=rounds,
            learning_rate=rate,
            num_leaves=leaves,
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
            callbacks=[lgb.early_stopping(100, verbose=False)],
        )
        scores = np.asarray(model.predict_proba(x_val))[:, 1]
        val_ap = float(average_precision_score(y_val, scores)) if y_val.any() else 0.0
        tried.append({"num_leaves": leaves, "learning_rate": rate, "rounds": int(model.best_iteration_ or rounds),
                      "val_ap": round(val_ap, 6)})
        if val_ap > best_ap:
            best, best_ap = model, val_ap
    return best, tried


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
