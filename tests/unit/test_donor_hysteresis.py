"""The margin around a segment threshold: chosen on validation, trading churn for F1."""

from __future__ import annotations

import numpy as np

from offline.train.donor_hysteresis import GRID, ValidationGifts, choose_margins


class Paths(ValidationGifts):
    """Score paths given directly, as a model would give them."""

    def __init__(self, paths):
        super().__init__([f"d{i}" for i in range(len(paths))], [], None, months=1.0)
        self._paths = [np.array(p, dtype=np.float32).reshape(-1, 1) for p in paths]

    def paths(self, model):
        return self._paths


def test_a_wavering_donor_costs_churn_that_a_margin_removes_without_losing_f1():
    wavering = [0.48, 0.53, 0.49, 0.52, 0.47, 0.56]  # around 0.5: in, out, in, out, in
    gifts = Paths([wavering, [0.9, 0.95], [0.1, 0.2], [0.2, 0.9]])
    labels = np.array([[1], [1], [0], [1]])
    margins, table = choose_margins(gifts, None, ("high_value",), {"high_value": 0.5}, labels)
    rows = {r["margin"]: r for r in table["high_value"]}
    assert rows[0.0]["churn_per_donor_month"] == (5 + 1 + 0 + 1) / 4  # five changes of the wavering donor
    assert rows[0.05]["churn_per_donor_month"] == (1 + 1 + 0 + 1) / 4 and rows[0.05]["f1"] == rows[0.0]["f1"] == 1.0
    assert rows[0.1]["f1"] < 1.0  # the wavering donor never reaches 0.6: a positive lost
    assert margins["high_value"] == 0.05 == max(m for m in GRID if rows[m]["f1"] >= rows[0.0]["f1"] - 0.01)


def test_a_margin_that_costs_f1_is_not_chosen():
    gifts = Paths([[0.56], [0.58], [0.2]])  # positives just above the threshold
    labels = np.array([[1], [1], [0]])
    margins, _ = choose_margins(gifts, None, ("high_value",), {"high_value": 0.5}, labels)
    assert margins["high_value"] == 0.05  # 0.1 would keep both positives out
