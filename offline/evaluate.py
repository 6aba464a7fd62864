"""`tributary evaluate`: score a world with saved artifacts and report, exactly as trained.

The model directory may be one artifact version (`.../<model>/<version>`), one model
(`.../<model>`: its latest version), or a `tributary train` output (every model under
`artifacts/`, latest versions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.alert_policy import AlertPolicy, AlertPolicyError
from models.artifacts import (
    DEFAULT_DONOR_MODEL,
    DEFAULT_FRAUD_MODEL,
    MANIFEST,
    SERVED,
    ArtifactError,
    latest_version,
    served_entry,
    served_root,
)
from models.features.partitioning import DEFAULT_PARTITIONS, PartitionOf
from models.model_store import load_fraud_model
from models.worlds import open_world
from offline.evaluation.alert_budget import budget_curve, plot_budget_curves, served_at_budget
from offline.evaluation.report import ScoredModel, write_fraud_report, write_report_json
from offline.train.fraud_data import TEST, load_fraud_dataset
from offline.train.loop import predict


def artifact_dirs(model_dir: Path) -> list[Path]:
    if (model_dir / MANIFEST).exists():
        return [model_dir]
    root = model_dir / "artifacts" if (model_dir / "artifacts").is_dir() else model_dir
    versions = [latest_version(root, d.name) for d in sorted(root.iterdir()) if d.is_dir() and any(d.glob(f"*/{MANIFEST}"))]
    if not versions and any(model_dir.glob(f"*/{MANIFEST}")):
        versions = [latest_version(model_dir.parent, model_dir.name)]
    if not versions:
        raise ArtifactError(f"no model artifacts under {model_dir}; train some with `tributary train fraud --out DIR`")
    return versions


def artifact_task(model_dir: Path) -> str:
    """fraud | donors: the task of the artifacts under `model_dir` (they must agree)."""
    from models.artifacts import read_manifest

    tasks = {read_manifest(path).task for path in artifact_dirs(model_dir)}
    if len(tasks) != 1:
        raise ArtifactError(f"{model_dir} holds models for {sorted(tasks)}; point --model at one task's models")
    return tasks.pop()


def evaluate(model_dir: Path, world_dir: Path, out: Path, split: str = "test", progress: bool = True,
             policy: AlertPolicy | None = None, partitions: int = DEFAULT_PARTITIONS) -> dict:
    """Evaluate every artifact under `model_dir` on `world_dir`; fraud or donor models alike,
    scored as a worker with `partitions` input partitions serves them."""
    if artifact_task(model_dir) == "donors":
        return evaluate_donors(model_dir, world_dir, out, split, partitions)
    return evaluate_fraud(model_dir, world_dir, out, split, progress, policy, partitions)


def evaluate_donors(model_dir: Path, world_dir: Path, out: Path, split: str = "test",
                    partitions: int = DEFAULT_PARTITIONS) -> dict:
    """Per-target metrics of every donor artifact on `world_dir`: its test donors (the same
    id-hash split as training), or all labelled donors, with the features a worker with
    `partitions` input partitions reads."""
    import torch

    from models.donor_hybrid import HybridDonorModel
    from models.features.donors import DonorFeatureConfig
    from models.gbdt import GbdtDonorModel
    from models.model_store import load_donor_model
    from offline.evaluation.report import write_donor_report
    from offline.train.donor_data import TEST as DONOR_TEST
    from offline.train.donor_data import load_donor_dataset
    from offline.train.donor_neural import score_rows, tensors_of

    world = open_world(world_dir)
    results, notes = {}, []
    for path in artifact_dirs(model_dir):
        loaded = load_donor_model(path)
        model, thresholds, manifest = loaded.model, loaded.thresholds, loaded.manifest
        data = load_donor_dataset(world, DonorFeatureConfig.from_schema(manifest.feature_schema), partitions)
        rows = data.index(DONOR_TEST) if split == "test" else np.arange(len(data.donor_ids))
        if isinstance(model, GbdtDonorModel):
            scores = model.predict(data.batch.take(rows))
        else:  # the network, alone or as the hybrid's component, in batches of similar history length
            lengths = data.batch.seq_mask.sum(axis=1).astype(np.int64)
            net = model.net if isinstance(model, HybridDonorModel) else model
            scores = score_rows(net, tensors_of(data.batch), rows, lengths, torch.device("cpu"))
            if isinstance(model, HybridDonorModel):
                scores = model.combine(model.trees.predict(data.batch.take(rows)), scores)
        targets = list(loaded.targets)
        results[manifest.name] = {
            t: ScoredModel(data.labels[rows, data.targets.index(t)], scores[:, j], thresholds[t])
            for j, t in enumerate(targets) if t in data.targets
        }
        notes.append(f"{manifest.name}: artifact version {manifest.version}")
        notes += data.notes
    if world.manifest.synthetic:
        notes.append("SYNTHETIC data: results describe the generator's donors, not real ones.")
    description = data.split_desc if split == "test" else "every labelled donor"
    report = write_donor_report(out, world.manifest.source, description, results, notes)
    report["served"] = _served(model_dir, "donors", DEFAULT_DONOR_MODEL)
    report["partitions"] = partitions
    write_report_json(out / "report.json", report)
    return report


def _served(model_dir: Path, task: str, default: str) -> dict:
    """What a worker serves from `model_dir` by default: the recorded validation winner."""
    return served_entry(served_root(model_dir), task) or {
        "model": default, "chosen_by": f"the default: no {SERVED} under {served_root(model_dir)}"}


def evaluate_fraud(model_dir: Path, world_dir: Path, out: Path, split: str = "test", progress: bool = True,
                   policy: AlertPolicy | None = None, partitions: int = DEFAULT_PARTITIONS) -> dict:
    """Metrics of every fraud artifact under `model_dir` on `world_dir` (its test period, or
    all of it); with `policy`, also what that alert policy gives each model."""
    loaded = [load_fraud_model(path) for path in artifact_dirs(model_dir)]
    configs = {m.features for m in loaded}
    if len(configs) != 1:
        raise ArtifactError("these artifacts were trained with different feature settings; evaluate them one at a time")
    shares = (0.6, 0.2) if split == "test" else (0.0, 0.0)
    world = open_world(world_dir)
    data = load_fraud_dataset(world, configs.pop(), split_shares=shares, train_negative_share=0.0, progress=progress,
                              partitions=partitions)
    inputs, labels = data.part(TEST)
    results = {m.manifest.name: ScoredModel(labels, predict(m.model, inputs), m.threshold) for m in loaded}
    description = "the test period (last 20% of the stream by time)" if split == "test" else "every transaction"
    notes = [f"{name}: artifact version {m.version}" for name, m in zip(results, loaded)]
    notes.append(f"scores are those a worker with {partitions} input partition(s) serves")
    if world.manifest.synthetic:
        notes.append("SYNTHETIC data: results describe the generator's planted patterns, not real fraud.")
    report = write_fraud_report(out, world.manifest.source, description, results, notes)
    _write_predictions(out, data.event_ids[data.split == TEST], labels, results)
    report["partitions"] = partitions
    report["served"] = _served(model_dir, "fraud", DEFAULT_FRAUD_MODEL)
    test = data.split == TEST
    served_partitions = PartitionOf(partitions)(list(data.sources[test]))
    report["alert_budget"] = _alert_budget(out, world.manifest.source, data.times[test], labels, results,
                                           {m.manifest.name: m.manifest.metrics for m in loaded}, policy,
                                           served_partitions, partitions)
    write_report_json(out / "report.json", report)
    return report


def _alert_budget(out: Path, dataset: str, times: np.ndarray, labels: np.ndarray, results: dict[str, ScoredModel],
                  metrics: dict[str, dict], policy: AlertPolicy | None, partition_ids: np.ndarray,
                  partitions: int) -> dict:
    """Alerts per day against precision and recall (a plot, at fixed thresholds), and the
    chosen policy's point as a worker with `partitions` partitions serves it."""
    days = max(float(times.max() - times.min()) / 86_400.0, 1 / 24) if len(times) else 1.0
    curves = {name: budget_curve(r.scores, labels, days, metrics[name]) for name, r in results.items()}
    plot_budget_curves(out / "alerts_per_day.png", curves, f"Alerts per day against precision and recall, {dataset}")
    chosen = {}
    if policy is not None:
        for name, r in results.items():
            try:
                chosen[name] = served_at_budget(r.scores, labels, days, times, partition_ids, partitions,
                                                metrics[name], policy)
            except AlertPolicyError as error:
                chosen[name] = {"policy": str(policy), "error": str(error)}
    return {"days": days, "policy": str(policy) if policy else None, "at_policy": chosen, "curves": curves}


def _write_predictions(out: Path, event_ids: np.ndarray, labels: np.ndarray, results: dict[str, ScoredModel]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"event_id": event_ids, "label": labels, **{name: r.scores for name, r in results.items()}}
    pq.write_table(pa.table(columns), out / "predictions.parquet")
