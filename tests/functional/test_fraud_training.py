"""Fraud training end to end on a tiny world: report, artifacts, exact reproduction, resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from models.artifacts import ArtifactError, latest_version, load_artifact, read_manifest, record_served, served_name
from models.features.flat import flat_feature_names
from models.gbdt import GbdtFraudModel
from models.hybrid import WEIGHTS as HYBRID_WEIGHTS
from models.hybrid import HybridFraudModel, blend
from models.model_store import load_fraud_model
from models.worlds import open_world
from offline.evaluate import evaluate_fraud
from offline.generate.fraud_world import generate_fraud_world
from offline.train.common import TrainingInputError
from offline.train.fraud import train_fraud
from offline.train.fraud_data import load_fraud_dataset
from offline.train.loop import FitConfig
from stream.scoring.fraud_scorer import FraudScorer
from tributary.cli import main

REQUIRED = {"pr_auc", "roc_auc", "f1", "precision", "recall", "recall_at_1pct_fpr", "threshold"}
TINY_FIT = FitConfig(epochs=2, patience=2, restart_epochs=1, batch_size=256)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fraud")
    generate_fraud_world(root / "world", accounts=1500, days=6, seed=3, progress=False)
    report = train_fraud(root / "world", root / "run", models=["graph-sage-d1", "fusion-gated", "lightgbm", "hybrid"],
                         progress=False, fit_override=TINY_FIT)
    return root, report


def test_report_has_every_model_and_metric(trained):
    root, report = trained
    on_disk = json.loads((root / "run" / "report" / "report.json").read_text())
    assert on_disk["dataset"] == "tributary-generate-fraud" and "by time" in on_disk["split"]
    assert set(on_disk["models"]) == {"graph-sage-d1", "fusion-gated", "lightgbm", "hybrid"}
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
    for name in ("graph-sage-d1", "fusion-gated", "lightgbm", "hybrid"):
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
    low, high = point["threshold_range"]  # the budget as a worker serves it: per partition, moving
    assert 0 <= low <= high <= 1 and point["alerts_per_day"] >= 0
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


def test_the_validation_winner_is_recorded_and_served_by_default(trained, tmp_path):
    root, report = trained
    served = report["served"]
    assert served["chosen_by"] == "validation PR-AUC" and served["trained_on"]["partitions"] == 4
    ranked = served["validation_pr_auc"]
    assert set(ranked) == {"graph-sage-d1", "fusion-gated", "lightgbm", "hybrid"}
    assert served["model"] == max(ranked, key=ranked.get)
    on_disk = json.loads((root / "run" / "artifacts" / "served.json").read_text())["fraud"]
    assert on_disk["model"] == served["model"] and on_disk["version"] == latest_version(
        root / "run" / "artifacts", served["model"]).name
    assert served_name(root / "run" / "artifacts", "fraud", "fusion-gated") == served["model"]
    evaluated = CliRunner().invoke(main, ["evaluate", "--model", str(root / "run"), "--data", str(root / "world"),
                                          "--out", str(tmp_path), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output[evaluated.output.index("{"):])["served"]["model"] == served["model"]


def test_retraining_one_model_keeps_the_others_in_the_running(tmp_path):
    versions = {"a": "v1", "b": "v1"}
    on = {"world": "w", "partitions": 4}
    assert record_served(tmp_path, "fraud", {"a": 0.8, "b": 0.7}, versions, on)["model"] == "a"
    assert record_served(tmp_path, "fraud", {"b": 0.75}, {"b": "v2"}, on)["model"] == "a"  # a is still better
    entry = record_served(tmp_path, "fraud", {"b": 0.9}, {"b": "v3"}, on)
    assert entry["model"] == "b" and entry["version"] == "v3"
    other_world = record_served(tmp_path, "fraud", {"a": 0.1}, {"a": "v4"}, {"world": "x", "partitions": 4})
    assert other_world["validation_pr_auc"] == {"a": 0.1}  # figures of other data are not compared


def test_the_tree_model_is_kept_as_lightgbm_text_with_its_checksum(trained, tmp_path):
    root, _ = trained
    path = latest_version(root / "run" / "artifacts", "lightgbm")
    manifest = read_manifest(path)
    assert manifest.model_file["format"] == "lightgbm-text" and not (path / "weights.pt").exists()
    assert manifest.model_file["files"]["model.txt"] == hashlib.sha256((path / "model.txt").read_bytes()).hexdigest()
    assert 0 < manifest.threshold < 1 and manifest.metrics["alert_budget"] and manifest.reference_distributions
    loaded = load_fraud_model(path)
    assert isinstance(loaded.model, GbdtFraudModel)
    _refused_once_its_trees_change(path, tmp_path)


def _refused_once_its_trees_change(path, tmp_path):
    copy = tmp_path / path.parent.name / "v1"
    shutil.copytree(path, copy)
    (copy / "model.txt").write_text((path / "model.txt").read_text().replace("Tree=0", "Tree=0 ", 1))
    with pytest.raises(ArtifactError, match="sha256"):
        load_fraud_model(copy)


def test_tree_alerts_carry_the_trees_own_contributions(trained):
    root, _ = trained
    loaded = load_fraud_model(latest_version(root / "run" / "artifacts", "lightgbm"))
    data = load_fraud_dataset(open_world(root / "world"), loaded.features, train_negative_share=0.0, progress=False)
    inputs = {k: v[:3] for k, v in data.inputs.arrays().items()}
    scorer = FraudScorer(loaded)
    scores = scorer.score(loaded, inputs)
    reasons = scorer.reasons(loaded, inputs)
    contributions = loaded.model.contributions(inputs)
    # TreeSHAP: the contributions and the expected value add up to the raw score (log-odds).
    assert np.allclose(1 / (1 + np.exp(-contributions.sum(1))), scores, atol=1e-5)
    for row, row_reasons in enumerate(reasons):
        assert len(row_reasons) == 4 and all(r.name in flat_feature_names() for r in row_reasons)
        weights = [abs(r.weight) for r in row_reasons]
        assert weights == sorted(weights, reverse=True)
        assert weights[0] == pytest.approx(np.abs(contributions[row, :-1]).max(), abs=1e-6)


def test_the_hybrid_blends_the_trees_with_the_best_neural_model_of_its_run(trained, tmp_path):
    root, report = trained
    path = latest_version(root / "run" / "artifacts", "hybrid")
    manifest = read_manifest(path)
    validation = report["served"]["validation_pr_auc"]
    best_net = max(("graph-sage-d1", "fusion-gated"), key=validation.get)
    components = manifest.hyperparameters["components"]
    assert components["neural"]["model"] == best_net and components["trees"]["model"] == "lightgbm"
    assert components["trees"]["version"] == latest_version(root / "run" / "artifacts", "lightgbm").name
    weight = manifest.hyperparameters["tree_weight"]
    by_weight = manifest.hyperparameters["validation_pr_auc_by_weight"]
    assert weight in HYBRID_WEIGHTS and by_weight[str(weight)] == max(by_weight.values())
    assert validation["hybrid"] == pytest.approx(by_weight[str(weight)], abs=1e-6)

    loaded = load_fraud_model(path)
    assert isinstance(loaded.model, HybridFraudModel) and loaded.model.tree_weight == weight
    assert loaded.model.trees.to_text() == (latest_version(root / "run" / "artifacts", "lightgbm") / "model.txt").read_text()
    # Both files are the hybrid's own: a changed model text is refused, as for the trees alone.
    _refused_once_its_trees_change(path, tmp_path)


def test_hybrid_alerts_weigh_both_components_reasons_by_their_share(trained):
    root, _ = trained
    loaded = load_fraud_model(latest_version(root / "run" / "artifacts", "hybrid"))
    hybrid = loaded.model
    data = load_fraud_dataset(open_world(root / "world"), loaded.features, train_negative_share=0.0, progress=False)
    inputs = {k: v[:3] for k, v in data.inputs.arrays().items()}
    scorer = FraudScorer(loaded)
    reasons = scorer.reasons(loaded, inputs)
    tree_weights = hybrid.trees.contributions(inputs)[:, :-1] * hybrid.tree_weight
    names = flat_feature_names()
    for row, row_reasons in enumerate(reasons):
        assert len(row_reasons) == 4 and all(r.name in names for r in row_reasons)
        weights = [abs(r.weight) for r in row_reasons]
        assert weights == sorted(weights, reverse=True)
        # A feature only the trees see (a neighbourhood mean) weighs its tree share alone.
        for reason in row_reasons:
            if ".hop" in reason.name or ".window_" in reason.name:
                assert reason.weight == pytest.approx(tree_weights[row, names.index(reason.name)], abs=1e-5)
    assert scorer.score(loaded, inputs) == pytest.approx(
        blend(hybrid.trees.predict(inputs), scorer.score(_alone(loaded, hybrid.net), inputs), hybrid.tree_weight))


def _alone(loaded, module):
    return dataclasses.replace(loaded, model=module)


def test_a_hybrid_without_its_components_is_refused_in_one_line(tmp_path):
    with pytest.raises(TrainingInputError, match="--model hybrid --model lightgbm --model fusion-gated"):
        train_fraud(tmp_path / "world", tmp_path / "run", models=["hybrid", "lightgbm"], progress=False)


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


def test_a_damaged_served_record_is_replaced_by_the_next_choice(tmp_path):
    (tmp_path / "served.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="damaged"):
        served_name(tmp_path, "fraud", "fusion-gated")
    entry = record_served(tmp_path, "fraud", {"a": 0.5}, {"a": "v1"}, {"world": "w", "partitions": 4})
    assert entry["model"] == "a" and served_name(tmp_path, "fraud", "fusion-gated") == "a"
