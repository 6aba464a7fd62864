"""Non-neural baselines on the same rows, split and features as the neural models.

Engineered as-of features are flattened from the same snapshot the neural models see:
the transaction's own features, both accounts' aggregates (velocity, amounts, in/out
counts), neighbourhood aggregates (means over hop-1 and hop-2) and window summaries.
"""

from __future__ import annotations

import numpy as np

from models.features.transactions import EDGE_FEATURES, EVENT_FEATURES, NODE_FEATURES, SEQ_FEATURES

_SEQ_AMOUNT = SEQ_FEATURES.index("log_amount")
_SEQ_OUT = SEQ_FEATURES.index("outgoing")
_SEQ_GAP = SEQ_FEATURES.index("log_hours_since_previous")
_SEQ_WITH = SEQ_FEATURES.index("with_current_counterparty")
HOP_FEATURES = NODE_FEATURES + EDGE_FEATURES


def flat_feature_names() -> list[str]:
    names = [f"event.{n}" for n in EVENT_FEATURES]
    for side in ("src", "dst"):
        names += [f"{side}.{n}" for n in NODE_FEATURES]
        names += [f"{side}.hop1_mean.{n}" for n in HOP_FEATURES]
        names += [f"{side}.hop2_mean.{n}" for n in HOP_FEATURES]
        names += [f"{side}.hop1_count", f"{side}.hop2_count"]
        names += [f"{side}.window_{n}" for n in ("count", "mean_log_amount", "max_log_amount", "share_out",
                                                 "mean_log_gap", "share_with_counterparty")]
    return names


def flat_features(inputs: dict[str, np.ndarray]) -> np.ndarray:
    """[N, len(flat_feature_names())] float32 from the model-input arrays."""
    columns = [inputs["event"]]
    for side in (0, 1):
        hop1_mask = inputs["hop1_mask"][:, side]
        hop2_mask = inputs["hop2_mask"][:, side].reshape(len(hop1_mask), -1)
        hop2 = inputs["hop2"][:, side].reshape(len(hop1_mask), -1, len(HOP_FEATURES))
        seq_mask = inputs["seq_mask"][:, side]
        seq = inputs["seq"][:, side]
        count = seq_mask.sum(1)
        safe = np.maximum(count, 1)
        columns += [
            inputs["node"][:, side],
            _masked_mean(inputs["hop1"][:, side], hop1_mask),
            _masked_mean(hop2, hop2_mask),
            hop1_mask.sum(1, keepdims=True),
            hop2_mask.sum(1, keepdims=True),
            np.stack(
                [
                    count,
                    (seq[..., _SEQ_AMOUNT] * seq_mask).sum(1) / safe,
                    np.where(seq_mask > 0, seq[..., _SEQ_AMOUNT], 0).max(1),
                    (seq[..., _SEQ_OUT] * seq_mask).sum(1) / safe,
                    (seq[..., _SEQ_GAP] * seq_mask).sum(1) / safe,
                    (seq[..., _SEQ_WITH] * seq_mask).sum(1) / safe,
                ],
                axis=1,
            ),
        ]
    return np.concatenate(columns, axis=1).astype(np.float32)


def _masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)


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
