"""The donor model and `train_donors`: missing modalities, batch invariance, the report,
the artifact round trip, resuming, and the real-data shapes (gifts only, profiles only)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from models.artifacts import load_artifact
from models.donor_hybrid import HybridDonorModel
from models.features.donors import F_EDGE, F_GIFT, F_NODE, F_TAB, DonorBatch, DonorFeatureConfig, DonorFeaturizer
from models.features.partitioning import DEFAULT_PARTITIONS, kafka_partition
from models.gbdt import GbdtDonorModel
from models.model_store import donor_probabilities, load_donor_model
from models.nn.donor_model import DonorModel, DonorModelSpec, as_tensors
from models.worlds import open_world
from offline.generate.donor_world import generate_donor_world
from offline.importers.cdnow import import_cdnow
from offline.importers.pva97nk import import_pva97nk
from offline.train.common import TrainingInputError
from offline.train.donor_neural import focal_loss
from offline.train.donor_replay import donor_states_at
from offline.train.donors import ALL_MODELS, train_donors

DIMS = {"tab": F_TAB, "gift": F_GIFT, "node": F_NODE, "edge": F_EDGE, "window": 6, "neighbours": 3, "types": 5}
TINY = dict(tab_hidden=16, seq_hidden=8, seq_heads=2, graph_hidden=16, fusion_width=16, fusion_heads=4, fused=16,
            head_hidden=8, target_heads=2)
SEGMENTS = ("high_engagement", "network_influence", "giving_consistency", "high_value", "recent_engagement")


def model(modalities=("tabular", "sequence", "network"), targets=SEGMENTS) -> DonorModel:
    torch.manual_seed(0)
    return DonorModel(DonorModelSpec(targets=targets, modalities=modalities, dims=DIMS, **TINY)).eval()


def random_inputs(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = model().empty_inputs(n)
    lengths = torch.randint(0, 7, (n,), generator=g)
    inputs["seq_mask"] = (torch.arange(6).unsqueeze(0) >= 6 - lengths.unsqueeze(1)).float()
    inputs["seq"] = torch.randn(n, 6, F_GIFT, generator=g) * inputs["seq_mask"].unsqueeze(-1)
    inputs["nbr_mask"] = (torch.rand(n, 5, 3, generator=g) < 0.3).float()
    inputs["nbr"] = torch.randn(n, 5, 3, F_NODE + F_EDGE, generator=g) * inputs["nbr_mask"].unsqueeze(-1)
    inputs["tab_mask"] = (torch.rand(n, F_TAB, generator=g) < 0.8).float()
    inputs["tab"] = torch.randn(n, F_TAB, generator=g) * inputs["tab_mask"]
    inputs["node"] = torch.randn(n, F_NODE, generator=g)
    return inputs


@pytest.mark.parametrize("modalities", [("tabular", "sequence", "network"), ("tabular",), ("sequence",), ("network",)])
def test_forward_and_backward_with_every_modality_missing(modalities):
    m = model(modalities).train()
    inputs = m.empty_inputs(4)
    logits = m(inputs)
    assert logits.shape == (4, 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    assert torch.isfinite(m.score(inputs)).all()


def test_values_under_a_zero_mask_are_ignored():
    """Missing means missing: whatever sits under a zero mask cannot move a score."""
    m = model()
    inputs = random_inputs(8)
    noisy = {k: v.clone() for k, v in inputs.items()}
    for values, mask in (("seq", "seq_mask"), ("nbr", "nbr_mask"), ("tab", "tab_mask")):
        hidden = (noisy[mask] == 0).unsqueeze(-1) if values != "tab" else noisy[mask] == 0
        noisy[values] = torch.where(hidden, torch.full_like(noisy[values], 123.0), noisy[values])
    torch.testing.assert_close(m.score(inputs), m.score(noisy), rtol=0, atol=1e-6)
    # ... while a donor with gifts and one without are told apart by the mask, not by zeros.
    assert DonorModel.present(inputs)[:, 1].tolist() == (inputs["seq_mask"].sum(1) > 0).float().tolist()


def test_scores_do_not_depend_on_the_rest_of_the_batch():
    m = model()
    inputs = random_inputs(12)
    together = m.score(inputs)
    alone = torch.cat([m.score({k: v[i:i + 1] for k, v in inputs.items()}) for i in range(12)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)


def test_focal_loss_ignores_targets_with_zero_weight():
    logits = torch.randn(6, 3)
    labels = torch.randint(0, 2, (6, 3)).float()
    flipped = labels.clone()
    flipped[:, 2] = 1 - flipped[:, 2]
    weights = torch.tensor([0.5, 0.5, 0.0])
    assert focal_loss(logits, labels, weights) == focal_loss(logits, flipped, weights)
    assert focal_loss(logits, labels, torch.tensor([0.4, 0.3, 0.3])) > 0


# --- train_donors on small worlds ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    world = tmp_path_factory.mktemp("world")
    generate_donor_world(world, donors=500, seed=11, progress=False)
    out = tmp_path_factory.mktemp("out")
    report = train_donors(world, out, profile="quick", progress=False, epochs=2)
    return world, out, report


def test_report_has_every_model_and_target(trained):
    _, out, report = trained
    written = json.loads((out / "report" / "report.json").read_text())
    assert written["task"] == "donors" and "cut-off" in written["split"] and written["notes"]
    assert set(written["models"]) == set(ALL_MODELS)
    for name, m in written["models"].items():
        assert set(m["targets"]) == set(SEGMENTS), name
        assert 0.0 <= m["mean_f1"] <= 1.0
        for metrics in m["targets"].values():
            assert {"f1", "pr_auc", "roc_auc", "precision", "recall", "threshold"} <= set(metrics)
    assert (out / "report" / "comparison.md").exists() and (out / "report" / "comparison.png").exists()
    assert report["models"]["multitarget"]["mean_f1"] == written["models"]["multitarget"]["mean_f1"]


def test_artifact_reloads_and_reproduces_held_out_scores(trained):
    world_dir, out, report = trained
    versions = list((out / "artifacts" / "multitarget").iterdir())
    assert len(versions) == 1
    config = DonorFeatureConfig()
    manifest, state = load_artifact(versions[0], expected_schema_hash=config.schema_hash())
    assert manifest.task == "donors" and set(manifest.threshold) == set(SEGMENTS)
    assert manifest.training_data["synthetic"] is True and manifest.training_data["cutoff"]
    assert set(manifest.reference_distributions["scores"]) == set(SEGMENTS)
    assert len(manifest.reference_distributions["features"]["log_gift_count"]["shares"]) == 10

    # What a worker does: load the artifact, read donors from the state, score.
    loaded = load_donor_model(versions[0])
    net, thresholds = loaded.model, loaded.thresholds
    predictions = pq.read_table(out / "predictions.parquet")  # pyarrow only: pandas is no dependency
    test = predictions.filter(pc.equal(predictions["split"], "test"))
    world = open_world(world_dir)
    # Trained for the default partition count: each donor as its home partition's state holds it.
    partitions = manifest.training_data["partitions"]
    assert partitions == DEFAULT_PARTITIONS > 1
    states = donor_states_at(world, world.manifest.cutoff, partitions=partitions)
    batch = DonorBatch.concat([
        DonorFeaturizer(states[kafka_partition(d.encode(), partitions)], config).featurize([d], world.manifest.cutoff)
        for d in test["donor_id"].to_pylist()])
    scores = net.score(as_tensors(batch.arrays())).numpy()
    expected = np.stack([test[f"multitarget:{t}"].to_numpy() for t in net.spec.targets], axis=1)
    assert np.abs(scores - expected).max() <= 1e-6
    assert thresholds == manifest.threshold


def test_the_hybrid_reloads_and_gives_the_worker_the_blend_training_chose(trained):
    """One artifact holds both components; served through the worker's one way
    (donor_probabilities) it reproduces the held-out scores training wrote."""
    world_dir, out, report = trained
    path = next((out / "artifacts" / "hybrid").iterdir())
    loaded = load_donor_model(path)
    hybrid = loaded.model
    assert isinstance(hybrid, HybridDonorModel) and loaded.targets == tuple(SEGMENTS)
    manifest = loaded.manifest
    assert set(manifest.model_file["files"]) == {GbdtDonorModel.file_of(t) for t in SEGMENTS}
    for target, weight in hybrid.tree_weights.items():  # each target's weight: its best on validation
        tried = manifest.hyperparameters["validation_pr_auc_by_weight"][target]
        assert 0.0 < weight < 1.0 and tried[str(weight)] == max(tried.values())
    assert manifest.hyperparameters["components"]["neural"]["version"] == report["served"]["versions"]["multitarget"]

    predictions = pq.read_table(out / "predictions.parquet")
    test = predictions.filter(pc.equal(predictions["split"], "test"))
    world, partitions = open_world(world_dir), manifest.training_data["partitions"]
    states = donor_states_at(world, world.manifest.cutoff, partitions=partitions)
    batch = DonorBatch.concat([
        DonorFeaturizer(states[kafka_partition(d.encode(), partitions)], loaded.features).featurize(
            [d], world.manifest.cutoff) for d in test["donor_id"].to_pylist()])
    served = donor_probabilities(hybrid, batch)
    expected = np.stack([test[f"hybrid:{t}"].to_numpy() for t in SEGMENTS], axis=1)
    assert np.abs(served - expected).max() <= 1e-6
    # A blend, not a copy of either component.
    for component in ("lightgbm", "multitarget"):
        assert np.abs(expected - np.stack([test[f"{component}:{t}"].to_numpy() for t in SEGMENTS], axis=1)).max() > 1e-3


def test_the_hybrid_needs_both_components_in_the_run(tmp_path):
    with pytest.raises(TrainingInputError, match="--model hybrid --model lightgbm --model multitarget"):
        train_donors(tmp_path / "nowhere", tmp_path / "out", progress=False, models=["hybrid", "lightgbm"])


def test_a_second_run_resumes_from_the_checkpoint(trained):
    world_dir, out, _ = trained
    report = train_donors(world_dir, out, profile="quick", progress=False, epochs=3, models=["multitarget"])
    assert any("resumed from the checkpoint of epoch 2" in note for note in report["notes"])
    saved = torch.load(out / "checkpoints" / "multitarget" / "last.pt", weights_only=True)
    assert [h["epoch"] for h in saved["history"]] == [1, 2, 3]


def _cdnow_file(path, customers: int = 400, seed: int = 3):
    rng = np.random.default_rng(seed)
    lines = []
    for c in range(1, customers + 1):
        days = np.sort(rng.integers(0, 540, 1 + rng.poisson(3)))
        for day in days:
            date = np.datetime64("1997-01-01") + int(day)
            lines.append(f" {c:05d} {str(date).replace('-', '')}  1   {rng.lognormal(3, 0.7):.2f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _pva_file(path, donors: int = 400, seed: int = 4):
    rng = np.random.default_rng(seed)
    rows = ["TargetB,ID,TargetD,GiftCntAll,GiftAvgAll,GiftTimeLast,GiftTimeFirst,PromCnt12,DemCluster,DemAge,DemHomeOwner,"
            "DemMedHomeValue"]
    for i in range(donors):
        count = 1 + rng.poisson(5)
        responded = int(rng.random() < 0.3 + 0.04 * min(count, 10))
        age = "" if rng.random() < 0.2 else str(rng.integers(20, 90))
        rows.append(f"{responded},{i:08d},{'10' if responded else ''},{count},{rng.lognormal(2.5, 0.5):.2f},"
                    f"{rng.integers(4, 30)},{rng.integers(30, 200)},{rng.integers(5, 30)},{rng.integers(0, 54):02d},"
                    f"{age},{'H' if rng.random() < 0.5 else 'U'},{rng.integers(0, 300_000)}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_gifts_only_world_trains_the_targets_it_has(tmp_path):
    world = tmp_path / "cdnow"
    import_cdnow(_cdnow_file(tmp_path / "cdnow.txt"), world, progress=False)
    report = train_donors(world, tmp_path / "out", progress=False, epochs=1,
                          models=["multitarget", "multitarget-network-only", "lightgbm"])
    available = ["giving_consistency", "high_value", "recent_engagement"]
    assert set(report["models"]) == {"multitarget", "lightgbm"}  # no network: no network-only model
    assert all(list(m["targets"]) == available for m in report["models"].values())
    notes = " ".join(report["notes"])
    assert "high_engagement" in notes and "no network" in notes
    manifest, _ = load_artifact(next((tmp_path / "out" / "artifacts" / "multitarget").iterdir()))
    assert manifest.hyperparameters["targets"] == available
    assert manifest.training_data["modality_share"]["network"] == 0.0


def test_a_profiles_only_world_trains_its_response_label(tmp_path):
    world = tmp_path / "pva"
    import_pva97nk(_pva_file(tmp_path / "pva.csv"), world, progress=False)
    report = train_donors(world, tmp_path / "out", progress=False, epochs=1,
                          models=["multitarget", "multitarget-sequence-only", "lightgbm", "river-logreg"])
    assert set(report["models"]) == {"multitarget", "lightgbm", "river-logreg"}
    assert all(list(m["targets"]) == ["responded"] for m in report["models"].values())
    assert "no cut-off" in report["split"]
    assert report["models"]["lightgbm"]["targets"]["responded"]["roc_auc"] > 0.5


def test_tributary_evaluate_reproduces_the_training_report(trained, tmp_path):
    """`tributary evaluate` on a donor model: same test donors, same thresholds, same numbers."""
    import json

    from click.testing import CliRunner

    from tributary.cli import main

    world, out, _ = trained
    # The report on disk belongs to the latest artifact (another test may have retrained).
    report = json.loads((out / "report" / "report.json").read_text())
    result = CliRunner().invoke(main, ["evaluate", "--model", str(out), "--data", str(world),
                                       "--out", str(tmp_path / "eval"), "--json", "--threads", "1"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.output)
    assert evaluated["task"] == "donors"
    for target, metrics in report["models"]["multitarget"]["targets"].items():
        again = evaluated["models"]["multitarget"]["targets"][target]
        assert again["f1"] == metrics["f1"] and again["pr_auc"] == metrics["pr_auc"], target
    first = trained[2]  # the hybrid of the fixture's run is the newest hybrid
    for target, metrics in first["models"]["hybrid"]["targets"].items():
        again = evaluated["models"]["hybrid"]["targets"][target]
        assert again["f1"] == metrics["f1"] and again["pr_auc"] == metrics["pr_auc"], target


def test_the_tree_model_is_saved_served_by_choice_and_reproduced_by_evaluate(trained, tmp_path):
    import json

    from click.testing import CliRunner

    from models.artifacts import latest_version, read_manifest
    from models.gbdt import GbdtDonorModel
    from tributary.cli import main

    world, out, report = trained
    path = latest_version(out / "artifacts", "lightgbm")
    manifest = read_manifest(path)
    assert manifest.model_file["format"] == "lightgbm-text"
    assert set(manifest.model_file["files"]) == {f"model-{t}.txt" for t in SEGMENTS}
    loaded = load_donor_model(path)
    assert isinstance(loaded.model, GbdtDonorModel) and loaded.targets == tuple(SEGMENTS)
    assert set(loaded.thresholds) == set(SEGMENTS) and manifest.reference_distributions["scores"]
    # The membership margins chosen on validation, kept in the artifact the worker reads them from.
    assert set(loaded.margins) == set(SEGMENTS) and all(0 <= m <= 0.15 for m in loaded.margins.values())
    chosen = report["hysteresis"]["lightgbm"]
    assert chosen["margins"] == loaded.margins
    for target, rows in chosen["per_margin"].items():
        assert rows[0]["margin"] == 0.0 and all(r["churn_per_donor_month"] >= 0 for r in rows)
        assert next(r for r in rows if r["margin"] == loaded.margins[target])["f1"] >= rows[0]["f1"] - 0.01

    served = report["served"]
    assert set(served["validation_pr_auc"]) == {"multitarget", "lightgbm", "hybrid"}
    assert served["model"] == max(served["validation_pr_auc"], key=served["validation_pr_auc"].get)

    result = CliRunner().invoke(main, ["evaluate", "--model", str(out), "--data", str(world),
                                       "--out", str(tmp_path / "eval"), "--json", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["served"]["model"] == served["model"]  # what a worker serves from there
    evaluated = json.loads(result.output)["models"]["lightgbm"]["targets"]
    for target, metrics in report["models"]["lightgbm"]["targets"].items():
        assert evaluated[target]["pr_auc"] == metrics["pr_auc"] and evaluated[target]["f1"] == metrics["f1"], target
