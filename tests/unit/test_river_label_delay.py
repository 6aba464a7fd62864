"""The online baseline learns a label only after the label delay, as production does."""

from __future__ import annotations

import numpy as np

from offline.train.fraud_baselines import river_prequential


def stream(n=200):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = x[:, 0] > 0.5
    return x, y, np.arange(n) * 3600.0  # one transaction an hour


def test_nothing_is_learnt_before_the_first_label_arrives():
    x, y, times = stream()  # 200 hours; the first label is known 7 days (168 h) after its transaction
    scores = river_prequential(x, y, ["a", "b"], times)
    week = 7 * 24
    assert np.unique(scores[:week]).size == 1  # no label has arrived: one score for all
    assert np.unique(scores[week:]).size > 1


def test_a_shorter_delay_learns_sooner_and_separates_the_classes():
    x, y, times = stream()
    scores = river_prequential(x, y, ["a", "b"], times, label_delay_s=3600.0)
    late = slice(100, None)
    assert scores[late][y[late]].mean() > scores[late][~y[late]].mean() + 0.1
