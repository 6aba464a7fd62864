"""Drift monitors fire on shifted streams and stay quiet on stable ones."""

from __future__ import annotations

import numpy as np

from models import drift_reference
from models.contracts import DriftKind
from stream.monitoring.drift import DriftMonitor, psi

REFERENCES = drift_reference.read({
    "format": 2,
    "scores": {"fraud": {"edges": [0.1, 0.2, 0.5], "shares": [0.25, 0.25, 0.25, 0.25]}},
    "features": {"log_amount": {"edges": [3.0, 4.0, 5.0], "shares": [0.25, 0.25, 0.25, 0.25]}},
})


def monitor(window=2000):
    return DriftMonitor(REFERENCES.scores["fraud"], REFERENCES.features, {"log_amount": 0}, "fusion-gated", "v1",
                        window=window)


def stable(rng, n):
    scores = rng.choice([0.05, 0.15, 0.3, 0.7], n)
    amounts = rng.choice([2.5, 3.5, 4.5, 5.5], n)
    return scores, amounts[:, None]


def test_stable_stream_raises_nothing():
    rng = np.random.default_rng(0)
    m = monitor()
    reports = []
    for _ in range(5):
        reports += m.observe(*stable(rng, 1000))
    assert [r for r in reports if r.kind is DriftKind.PSI] == []
    assert m.latest["psi:score"] < 0.05 and m.latest["psi:log_amount"] < 0.05


def test_a_shift_in_amounts_is_reported_by_psi():
    rng = np.random.default_rng(1)
    m = monitor()
    m.observe(*stable(rng, 2000))
    scores, _ = stable(rng, 2000)
    reports = m.observe(scores, np.full((2000, 1), 6.0))  # every amount in the top bin
    psi_reports = [r for r in reports if r.monitor == "psi:log_amount"]
    assert len(psi_reports) == 1 and psi_reports[0].statistic > 0.2
    assert psi_reports[0].model_version == "v1"


def test_a_jump_in_scores_is_detected_by_adwin():
    rng = np.random.default_rng(2)
    m = monitor(window=10**9)
    m.observe(rng.normal(0.1, 0.02, 3000).clip(0, 1), np.zeros((3000, 1)))
    reports = m.observe(rng.normal(0.6, 0.02, 500).clip(0, 1), np.zeros((500, 1)))
    assert any(r.kind is DriftKind.ADWIN for r in reports)


def test_psi_of_identical_distributions_is_zero():
    assert psi(np.array([0.2, 0.8]), np.array([0.2, 0.8])) == 0.0


def test_missing_feature_values_count_neither_way():
    m = DriftMonitor(None, REFERENCES.features, {"log_amount": 0}, "multitarget", "v1", window=1000, watch_scores=False)
    amounts = np.random.default_rng(3).choice([2.5, 3.5, 4.5, 5.5, np.nan], 1000)
    assert m.observe(np.zeros(1000), amounts[:, None]) == [] and m.latest["psi:log_amount"] < 0.05
    assert set(m.latest) == {"psi:log_amount"}  # no score detectors on a features-only monitor


def test_both_earlier_reference_layouts_are_read():
    fraud = drift_reference.read({"score": {"edges": [0.5], "shares": [0.4, 0.6]},
                                  "log_amount": {"edges": [1.0], "shares": [0.5, 0.5]}})
    assert fraud.scores["fraud"].shares.tolist() == [0.4, 0.6] and set(fraud.features) == {"log_amount"}
    donors = drift_reference.read({"scores": {"high_value": {"edges": [0.0, 0.5, 1.0], "counts": [1, 3]}},
                                   "features": {"wealth_index": {"edges": [], "counts": []}}, "modality_share": {}})
    assert donors.scores["high_value"].edges.tolist() == [0.5] and donors.scores["high_value"].shares.tolist() == [0.25, 0.75]
    assert donors.features == {}  # a feature without values has no reference
