"""Fraud training end to end on a tiny world: report, artifacts, exact reproduction, resume."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from models.artifacts import ArtifactError, latest_version, load_artifact
from models.model_store import load_fraud_model
from offline.evaluate import evaluate_fraud
from offline.generate.fraud_world import generate_fraud_world
from offline.train.fraud import train_fraud
from offline.train.loop import FitConfig
from tributary.cli import main

REQUIRED = {"pr_auc", "roc_auc", "f1", "precision", "recall", "recall_at_1pct_fpr", "threshold"}
TINY_FIT = FitConfig(epochs=2, patience=2, restart_epochs=1, batch_size=256)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fraud")
    generate_fraud_world(root / "world", accounts=1500, days=6, seed=3, progress=False)
    report = train_fraud(root / "world", root / "run", models=["graph-sage-d1", "fusion-gated", "lightgbm"],
                         progress=False, fit_override=TINY_FIT)
    return root, report


def test_report_has_every_model_and_metric(trained):
    root, report = trained
    on_disk = json.loads((root / "run" / "report" / "report.json").read_text())
    assert on_disk["dataset"] == "tributary-generate-fraud" and "by time" in on_disk["split"]
    assert set(on_disk["models"]) == {"graph-sage-d1", "fusion-gated", "lightgbm"}
    for metrics in on_disk["models"].values():
        assert REQUIRED <= set(metrics)
        assert 0 <= metrics["threshold"] <= 1
        # the world has account labels, so accounts are scored too (max over their transactions)
        assert REQUIRED <= set(metrics["accounts"]) and metrics["accounts"]["events"] > 100
    for plot in ("pr_curves.png", "roc_curves.png", "confusion_matrices.png", "comparison.png", "training_curves.png"):
        assert (root / "run" / "report" / plot).stat().st_size > 1000
    assert any("SYNTHETIC" in note for note in on_disk["notes"])


def test_artifact_manifest_carries_what_serving_needs(trained):
    root, _ = trained
    manifest, state = load_artifact(latest_version(root / "run" / "artifacts", "fusion-gated"))
    assert manifest.task == "fraud" and manifest.feature_schema_hash
    assert 0 < manifest.threshold < 1
    assert manifest.training_data["synthetic"] is True
    assert set(manifest.reference_distributions["scores"]) == {"fraud"}
    assert "log_amount" in manifest.reference_distributions["features"]
    assert len(manifest.normalisation["event_mean"]) == len(manifest.normalisation["event_std"]) > 10
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_saved_artifacts_reproduce_held_out_scores_exactly(trained, tmp_path):
    root, report = trained
    evaluate_fraud(root / "run", root / "world", tmp_path, progress=False)
    at_training = pq.read_table(root / "run" / "predictions.parquet").to_pydict()
    test_rows = {e: i for i, (e, s) in enumerate(zip(at_training["event_id"], at_training["split"])) if s == 2}
    reloaded = pq.read_table(tmp_path / "predictions.parquet").to_pydict()
    assert sorted(reloaded["event_id"]) == sorted(test_rows) and len(test_rows) > 100
    rows = [test_rows[e] for e in reloaded["event_id"]]
    for name in ("graph-sage-d1", "fusion-gated"):
        diff = np.abs(np.array(reloaded[name]) - np.array(at_training[name])[rows])
        assert diff.max() == 0.0, f"{name} scores differ by up to {diff.max()}"
    evaluated = json.loads((tmp_path / "report.json").read_text())["models"]["fusion-gated"]
    assert evaluated["pr_auc"] == report["models"]["fusion-gated"]["pr_auc"]


def test_evaluate_shows_alerts_per_day_against_precision_and_recall(trained, tmp_path):
    root, _ = trained
    manifest, _ = load_artifact(latest_version(root / "run" / "artifacts", "fusion-gated"))
    assert len(manifest.metrics["alert_budget"]["score_quantiles"]) == len(manifest.metrics["alert_budget"]["levels"])
    result = CliRunner().invoke(main, ["evaluate", "--model", str(root / "run"), "--data", str(root / "world"),
                                       "--out", str(tmp_path), "--alert-policy", "alerts_per_day=20"])
    assert result.exit_code == 0, result.output
    assert "alert policy alerts_per_day=20" in result.output and "alerts/day" in result.output
    budget = json.loads((tmp_path / "report.json").read_text())["alert_budget"]
    point = budget["at_policy"]["fusion-gated"]
    assert 0 <= point["threshold"] <= 1 and point["alerts_per_day"] >= 0
    curve = budget["curves"]["fusion-gated"]
    assert len(curve) > 10 and [p["alerts_per_day"] for p in curve] == sorted(p["alerts_per_day"] for p in curve)
    assert (tmp_path / "alerts_per_day.png").stat().st_size > 1000


def test_an_artifact_for_other_features_is_refused(trained, tmp_path):
    root, _ = trained
    path = latest_version(root / "run" / "artifacts", "graph-sage-d1")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["feature_schema_hash"] = "0000000000000000"
    copy = tmp_path / "graph-sage-d1" / "v1"
    copy.mkdir(parents=True)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / "weights.pt").write_bytes((path / "weights.pt").read_bytes())
    with pytest.raises(ArtifactError, match="Retrain"):
        load_fraud_model(copy)


def test_training_resumes_from_its_checkpoint(trained):
    root, report = trained
    checkpoint = root / "run" / "checkpoints" / "graph-sage-d1.pt"
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["epoch"] == 2 and len(saved["history"]) == 2  # the last completed epoch, 1-based
    before = checkpoint.stat().st_mtime_ns
    # A rerun with the same settings finds every epoch done: nothing is trained again,
    # the checkpoint is untouched and the best weights give the same held-out scores.
    again = train_fraud(root / "world", root / "run", models=["graph-sage-d1"], progress=False, fit_override=TINY_FIT)
    assert checkpoint.stat().st_mtime_ns == before
    assert again["models"]["graph-sage-d1"] == report["models"]["graph-sage-d1"]


@pytest.mark.parametrize("manifest, words", [
    (None, "no model artifacts"),
    ("{not json", "not a readable model artifact"),
    ('{"format_version": 99, "name": "x", "task": "fraud", "feature_schema": {}, "feature_schema_hash": "h"}',
     "artifact format 99"),
])
def test_evaluate_refuses_what_is_not_a_usable_artifact(tmp_path, manifest, words):

    if manifest is not None:
        version = tmp_path / "models" / "fusion-gated" / "v1"
        version.mkdir(parents=True)
        (version / "manifest.json").write_text(manifest)
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "world").mkdir()
    result = CliRunner().invoke(main, ["evaluate", "--model", str(tmp_path / "models"), "--data", str(tmp_path / "world")])
    assert result.exit_code == 1
    assert words in result.output and "Traceback" not in result.output
