"""`tributary train donors`: the multi-target donor-segment model, its baselines, the report.

What happens, in order:
  1. Targets come from the world: `donor_targets` gives the segments the data set has
     (all five for the synthetic world, `targets_available` for CDNOW), `donor_response`
     gives one target, `responded` (pva97nk).
  2. Features of the labelled donors are read from a donor state replayed up to the
     cut-off (events strictly before it; asserted), with the same code the worker runs.
     A world with no cut-off (pva97nk's single snapshot) is read at its last event.
  3. Donors are split 70/15/15 by a hash of their id. The targets already lie in the
     future window [cutoff, horizon), so the temporal split is the cut-off itself.
  4. Neural models (the multi-target model and its single-modality variants) train with
     a weighted focal loss, AdamW, ReduceLROnPlateau, gradient clipping and early
     stopping on the validation mean PR-AUC; every epoch is checkpointed, and a rerun
     resumes from the last checkpoint. LightGBM and a prequential river model use the
     same split and features.
  5. Per-target thresholds maximise F1 on validation; test metrics go into the report,
     the multi-target model into a versioned artifact.

Output directory: artifacts/multitarget/<version>/, checkpoints/<model>/last.pt,
report/ (report.json, tables, plots), predictions.parquet (validation and test scores).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from models import drift_reference, strict_json
from models.artifacts import ArtifactManifest, normalisation_summary, record_served, save_artifact, save_model_text
from models.donor_hybrid import HybridDonorModel
from models.drift_reference import uniform_histogram
from models.features.donors import (
    F_EDGE,
    F_GIFT,
    F_NODE,
    F_TAB,
    N_RELATIONSHIP_TYPES,
    TAB_FEATURES,
    DonorFeatureConfig,
)
from models.features.flat import donor_flat_feature_names, donor_flat_features
from models.features.partitioning import DEFAULT_PARTITIONS
from models.gbdt import GbdtDonorModel
from models.hybrid import FAMILY as HYBRID
from models.hybrid import WEIGHTS as HYBRID_WEIGHTS
from models.nn.donor_model import MODALITIES, DonorModelSpec
from models.strict_json import finite_or_none
from models.worlds import open_world
from offline.evaluation.metrics import average_precision, binary_metrics, choose_threshold
from offline.evaluation.report import ScoredModel, write_donor_report
from offline.train.common import TrainingInputError, check_model_names, check_trainable, choose_blend_weight
from offline.train.donor_baselines import fit_lightgbm, river_prequential, stable_order
from offline.train.donor_data import (
    FOCAL_ALPHA,
    FOCAL_GAMMA,
    TARGET_WEIGHTS,
    TEST,
    TRAIN,
    VALIDATION,
    DonorDataset,
    load_donor_dataset,
)
from offline.train.donor_hysteresis import F1_TOLERANCE, GRID, choose_margins, validation_gifts
from offline.train.donor_neural import PROFILES, NeuralResult, TrainProfile, fit_neural

NEURAL = {
    "multitarget": MODALITIES,
    "multitarget-tabular-only": ("tabular",),
    "multitarget-sequence-only": ("sequence",),
    "multitarget-network-only": ("network",),
}
BASELINES = ("lightgbm", "river-logreg")
ALL_MODELS = (*NEURAL, *BASELINES, HYBRID)
# Tabular features whose training distributions go into the artifact for the drift monitor.
REFERENCE_FEATURES = (
    "log_gift_count", "log_gift_total", "log_days_since_last_gift", "months_with_gift_prev12", "log_amount_365d",
    "log_event_attendance_12m", "wealth_index", "log_referral_count", "log_degree_total",
)  # fmt: skip


def train_donors(
    world_dir: Path,
    out_dir: Path,
    profile: str = "quick",
    progress: bool = True,
    *,
    models: list[str] | None = None,
    epochs: int | None = None,
    seed: int = 0,
    config: DonorFeatureConfig = DonorFeatureConfig(),
    partitions: int = DEFAULT_PARTITIONS,
) -> dict:
    """Train the donor models on a world and write artifacts, checkpoints and the report.

    Args:
        world_dir: a donor world (generated, or imported from CDNOW / pva97nk).
        out_dir: where artifacts/, checkpoints/, report/ and predictions.parquet go.
        profile: "quick" (CPU, minutes, half widths) or "full" (design widths, GPU if any).
        models: subset of ALL_MODELS to train (default all); "multitarget" writes the artifact.
        epochs: override the profile's maximum epochs (tests use 1-2).
        partitions: input partitions of the worker that will serve the models: features,
            metrics and the served choice are those of that worker's per-partition state.
    Returns the report dict (as written to report/report.json).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    check_model_names(models, list(ALL_MODELS), "donor")
    if models and HYBRID in models and not {"multitarget", "lightgbm"} <= set(models):
        raise TrainingInputError(f"the {HYBRID} donor model blends lightgbm with multitarget of the same run: name "
                                 f"them too, e.g. --model {HYBRID} --model lightgbm --model multitarget")
    chosen = list(models) if models else list(ALL_MODELS)
    prof = PROFILES[profile]
    world_dir, out_dir = Path(world_dir), Path(out_dir)
    world = open_world(world_dir)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    data = load_donor_dataset(world, config, partitions)
    timings["features"] = round(time.perf_counter() - started, 2)
    notes = list(data.notes)
    targets = data.targets
    train, val, test = data.index(TRAIN), data.index(VALIDATION), data.index(TEST)
    periods = {name: (data.labels[rows].size, int(data.labels[rows].sum()))
               for name, rows in (("training", train), ("validation", val), ("test", test))}
    check_trainable(world_dir.name, f"{len(data.donor_ids):,} labelled donors", periods, "by donor id (70/15/15)",
                    "segment labels (in any target)", "Use a world with more labelled donors.")
    dims = {"tab": F_TAB, "gift": F_GIFT, "node": F_NODE, "edge": F_EDGE, "window": config.window,
            "neighbours": config.neighbours, "types": N_RELATIONSHIP_TYPES}
    present = data.batch.modality_mask().max(axis=0)
    absent = [name for name, p in zip(MODALITIES, present) if p == 0]
    if absent:
        variants = [f"multitarget-{a}-only" for a in absent]
        notes.append(f"This world has no {' and no '.join(absent)} data for any labelled donor: the multi-target "
                     f"model sees {'that modality' if len(absent) == 1 else 'those modalities'} as missing (learned "
                     f"missing tokens), and {' and '.join(variants)} {'is' if len(variants) == 1 else 'are'} not trained.")
    if profile == "quick":
        notes.append("Profile quick: neural widths halved from the design (tabular 128, sequence 2x64, network 64, "
                     f"fusion 128 -> 256, heads 64), at most {epochs or prof.epochs} epochs on "
                     f"{'CUDA' if prof.use_gpu and torch.cuda.is_available() else 'CPU'}; the full profile uses the "
                     "design widths (256, 2x128, 128, 256 -> 512, 128).")
    notes.append(f"Neural models: AdamW (lr {prof.lr}), ReduceLROnPlateau, gradient clipping at {prof.clip}, weight "
                 f"EMA {prof.ema}, early stopping on validation mean PR-AUC (patience {prof.patience}); the best "
                 "epoch's averaged weights are kept.")

    results: dict[str, dict[str, ScoredModel]] = {}
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    thresholds: dict[str, dict[str, float]] = {}
    multitarget: NeuralResult | None = None
    for name, modalities in NEURAL.items():
        if name not in chosen:
            continue
        if len(modalities) == 1 and modalities[0] in absent:
            continue
        spec = DonorModelSpec(name=name, targets=targets, modalities=modalities, dims=dims, **prof.widths)
        result = fit_neural(spec, data, prof, out_dir / "checkpoints" / name, progress, seed=seed, epochs=epochs)
        timings[name] = round(result.seconds, 2)
        if result.resumed_from is not None:
            notes.append(f"{name}: resumed from the checkpoint of epoch {result.resumed_from}.")
        scores[name] = (result.val_scores, result.test_scores)
        if name == "multitarget":
            multitarget = result
        results[name], thresholds[name] = _scored(data, result.val_scores, result.test_scores, result.history)

    X = names = None
    if "lightgbm" in chosen or "river-logreg" in chosen:
        X, names = donor_flat_features(data.batch), donor_flat_feature_names()
    trees: GbdtDonorModel | None = None
    if "lightgbm" in chosen:
        t0 = time.perf_counter()
        boosters: dict[str, object | None] = {}
        rounds = {}
        for j, target in enumerate(targets):
            y = data.labels[:, j]
            boosters[target] = None
            if not y[train].any():
                continue
            booster, rounds[target] = fit_lightgbm(X, y, train, val, prof.lgbm_rounds, prof.lgbm_lr,
                                                   threads=torch.get_num_threads(), seed=seed)
            boosters[target] = booster
        # Scored through the texts they are saved as, so these are the scores the worker gives.
        texts = {GbdtDonorModel.file_of(t): b.model_to_string(num_iteration=rounds[t])  # type: ignore[attr-defined]
                 for t, b in boosters.items() if b is not None}
        trees = GbdtDonorModel.from_texts(tuple(targets), texts, threads=torch.get_num_threads())
        val_s, test_s = trees.predict(data.batch.take(val)), trees.predict(data.batch.take(test))
        timings["lightgbm"] = round(time.perf_counter() - t0, 2)
        scores["lightgbm"] = (val_s, test_s)
        results["lightgbm"], thresholds["lightgbm"] = _scored(data, val_s, test_s, [])
        notes.append(f"lightgbm: one booster per target on {len(names)} flat features from the same state "
                     f"(tabular with NaN for missing + per-type neighbour means), early-stopped on validation "
                     f"log-loss; rounds {rounds}.")
    if "river-logreg" in chosen:
        t0 = time.perf_counter()
        order = stable_order(data.donor_ids)
        prequential = river_prequential(X, data.labels.astype(np.float64), names, order)
        timings["river-logreg"] = round(time.perf_counter() - t0, 2)
        scores["river-logreg"] = (prequential[val], prequential[test])
        results["river-logreg"], thresholds["river-logreg"] = _scored(data, prequential[val], prequential[test], [])
        notes.append("river-logreg: river StandardScaler + LogisticRegression per target, prequential over all "
                     "labelled donors in a fixed hash order (score each donor, then learn its labels); its validation "
                     "and test numbers are its prequential scores on those donors, so it never saw a donor's labels "
                     "before scoring it.")

    hybrid: HybridDonorModel | None = None
    hybrid_weights: dict[str, dict[str, float]] = {}  # per target, validation PR-AUC by the trees' weight
    if HYBRID in chosen and trees is not None and multitarget is not None:
        hybrid, scores[HYBRID], hybrid_weights = _fit_hybrid(data, trees, multitarget, scores["lightgbm"],
                                                             scores["multitarget"])
        results[HYBRID], thresholds[HYBRID] = _scored(data, *scores[HYBRID], [])
        notes.append(f"{HYBRID}: per target, lightgbm and multitarget blended in log-odds, the trees' weight chosen "
                     f"from {list(HYBRID_WEIGHTS)} on validation PR-AUC: {hybrid.tree_weights}.")
    notes.append("Thresholds per target maximise F1 on the validation donors; metrics are on the test donors.")
    notes.append(f"Loss: focal (alpha {FOCAL_ALPHA}, gamma {FOCAL_GAMMA}) per target, weighted "
                 + ", ".join(f"{t} {TARGET_WEIGHTS.get(t, 1.0)}" for t in targets) + " (renormalised to sum 1).")
    dataset_name = f"{world.manifest.source} ({'synthetic' if world.manifest.synthetic else 'real'}, {world_dir.name})"
    report = write_donor_report(out_dir / "report", dataset_name, data.split_desc, results, notes)
    report["timings_s"] = timings
    report["training_seed"] = seed
    (out_dir / "report" / "report.json").write_text(
        strict_json.dumps(report) + "\n")  # with timings
    _write_predictions(out_dir / "predictions.parquet", data, scores)

    servable = {name: model for name, model in (("multitarget", multitarget.model if multitarget else None),
                                                 ("lightgbm", trees), (HYBRID, hybrid)) if model is not None}
    margins = _hysteresis(world, data, config, servable, thresholds, report, notes)
    versions: dict[str, str] = {}
    if multitarget is not None:
        saved = _save(out_dir, data, multitarget, thresholds["multitarget"], report, prof, config, seed,
                      margins.get("multitarget", {}))
        report["artifact"], versions["multitarget"] = str(saved), saved.name
    if trees is not None:
        saved = _save_trees(out_dir, data, trees, thresholds["lightgbm"], report, scores["lightgbm"][0], config, seed,
                            margins.get("lightgbm", {}))
        report["artifacts"] = {"lightgbm": str(saved)}
        versions["lightgbm"] = saved.name
    if hybrid is not None and multitarget is not None:
        saved = _save_hybrid(out_dir, data, hybrid, multitarget, thresholds[HYBRID], report, scores[HYBRID][0], config,
                             seed, margins.get(HYBRID, {}), versions, hybrid_weights)
        report["artifacts"][HYBRID] = str(saved)
        versions[HYBRID] = saved.name
    if versions:
        validation = {name: _mean_pr_auc(data, scores[name][0]) for name in versions}
        report["served"] = record_served(out_dir / "artifacts", "donors", validation, versions,
                                         {"world": str(world.root), "partitions": data.partitions})
    (out_dir / "report" / "report.json").write_text(strict_json.dumps(report) + "\n")
    return report


def _hysteresis(world, data: DonorDataset, config: DonorFeatureConfig, servable: dict, thresholds: dict,
                report: dict, notes: list[str]) -> dict[str, dict[str, float]]:
    """Per servable model, the margins its memberships keep (offline.train.donor_hysteresis),
    with the churn and F1 of every margin tried in report["hysteresis"]."""
    if not servable or world.manifest.cutoff is None:
        return {}
    val = data.index(VALIDATION)
    gifts = validation_gifts(world, config, data.donor_ids[val], data.partitions)
    if not gifts.owners:
        return {}  # no validation donor gives before the cut-off: nothing to rescore, nothing to flip
    chosen, report["hysteresis"] = {}, {}
    for name, model in servable.items():
        chosen[name], table = choose_margins(gifts, model, tuple(data.targets), thresholds[name], data.labels[val])
        report["hysteresis"][name] = {"margins": chosen[name], "per_margin": table}
    notes.append(f"Segment memberships keep a margin around each threshold, chosen on the validation donors: the "
                 f"largest of {list(GRID)} whose F1 at the cut-off is within {F1_TOLERANCE} of no margin's, with "
                 "memberships stepped at every gift before the cut-off as a worker does; report.json 'hysteresis' "
                 "gives churn (changes per donor per month) and F1 for each.")
    return chosen


def _fit_hybrid(data: DonorDataset, trees: GbdtDonorModel, net: NeuralResult, tree_scores: tuple, net_scores: tuple
                ) -> tuple[HybridDonorModel, tuple[np.ndarray, np.ndarray], dict[str, dict[str, float]]]:
    """Per target, the trees' weight with the best validation PR-AUC (ties: the even
    blend); the hybrid, its validation and test scores, and every weight's PR-AUC."""
    val = data.index(VALIDATION)
    weights, by_weight = {}, {}
    for j, target in enumerate(data.targets):
        weights[target], by_weight[target] = choose_blend_weight(data.labels[val, j], tree_scores[0][:, j],
                                                                 net_scores[0][:, j])
    hybrid = HybridDonorModel(trees, net.model, weights)
    return hybrid, (hybrid.combine(tree_scores[0], net_scores[0]), hybrid.combine(tree_scores[1], net_scores[1])), \
        by_weight


def _mean_pr_auc(data: DonorDataset, val_scores: np.ndarray) -> float:
    """Mean over targets of the validation PR-AUC: what the served donor model is chosen by."""
    val = data.index(VALIDATION)
    values = [average_precision(data.labels[val, j], val_scores[:, j]) for j in range(len(data.targets))]
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")


def _scored(data: DonorDataset, val_scores: np.ndarray, test_scores: np.ndarray, history: list[dict]
            ) -> tuple[dict[str, ScoredModel], dict[str, float]]:
    val, test = data.index(VALIDATION), data.index(TEST)
    out, thresholds = {}, {}
    for j, target in enumerate(data.targets):
        threshold = choose_threshold(data.labels[val, j], val_scores[:, j])
        thresholds[target] = threshold
        out[target] = ScoredModel(data.labels[test, j], test_scores[:, j], threshold, history)
    return out, thresholds


def reference_distributions(data: DonorDataset, val_scores: np.ndarray) -> dict:
    """10-bin histograms for the worker's PSI monitors (models.drift_reference): key
    tabular features on training donors (present values only), each target's score on
    validation."""
    train = data.index(TRAIN)
    features = {}
    for name in REFERENCE_FEATURES:
        j = TAB_FEATURES.index(name)
        features[name] = uniform_histogram(data.batch.tab[train, j][data.batch.tab_mask[train, j] > 0])
    scores = {t: uniform_histogram(val_scores[:, j], lo=0.0, hi=1.0) for j, t in enumerate(data.targets)}
    return drift_reference.build(scores, features)


def _save(out_dir: Path, data: DonorDataset, result: NeuralResult, thresholds: dict[str, float], report: dict,
          profile: TrainProfile, config: DonorFeatureConfig, seed: int, margins: dict[str, float]) -> Path:
    val = data.index(VALIDATION)
    validation = {t: binary_metrics(data.labels[val, j], result.val_scores[:, j], thresholds[t])
                  for j, t in enumerate(data.targets)}
    manifest = ArtifactManifest(
        name="multitarget",
        task="donors",
        hyperparameters={
            "model": result.model.spec.to_dict(),
            "training": {**asdict(profile), "seed": seed, "best_epoch": result.best_epoch,
                         "epochs_run": len(result.history)},
            "loss": {"kind": "focal", "alpha": FOCAL_ALPHA, "gamma": FOCAL_GAMMA,
                     "target_weights": {t: TARGET_WEIGHTS.get(t, 1.0) for t in data.targets}},
            "targets": list(data.targets),
            "hysteresis": margins,
        },
        feature_schema=config.schema(),
        feature_schema_hash=config.schema_hash(),
        threshold=thresholds,
        metrics=finite_or_none({"test": report["models"]["multitarget"], "validation": validation,
                              "history": result.history}),
        training_data=data.description,
        reference_distributions=reference_distributions(data, result.val_scores),
        normalisation=normalisation_summary(result.model),
    )
    return save_artifact(out_dir / "artifacts", manifest, result.model.state_dict())


def _save_trees(out_dir: Path, data: DonorDataset, trees: GbdtDonorModel, thresholds: dict[str, float], report: dict,
                val_scores: np.ndarray, config: DonorFeatureConfig, seed: int, margins: dict[str, float]) -> Path:
    val = data.index(VALIDATION)
    validation = {t: binary_metrics(data.labels[val, j], val_scores[:, j], thresholds[t])
                  for j, t in enumerate(data.targets)}
    manifest = ArtifactManifest(
        name="lightgbm",
        task="donors",
        hyperparameters={"family": "lightgbm", "targets": list(data.targets), "seed": seed, "hysteresis": margins,
                         "trees": {t: b.num_trees() for t, b in trees.boosters.items() if b is not None}},  # type: ignore[attr-defined]
        feature_schema=config.schema(),
        feature_schema_hash=config.schema_hash(),
        threshold=thresholds,
        metrics=finite_or_none({"test": report["models"]["lightgbm"], "validation": validation}),
        training_data=data.description,
        reference_distributions=reference_distributions(data, val_scores),
    )
    return save_model_text(out_dir / "artifacts", manifest, trees.to_texts(), "lightgbm-text")


def _save_hybrid(out_dir: Path, data: DonorDataset, hybrid: HybridDonorModel, net: NeuralResult,
                 thresholds: dict[str, float], report: dict, val_scores: np.ndarray, config: DonorFeatureConfig,
                 seed: int, margins: dict[str, float], versions: dict[str, str], by_weight: dict) -> Path:
    """One artifact: the trees' texts and the network's weights, with the weights per target."""
    val = data.index(VALIDATION)
    validation = {t: binary_metrics(data.labels[val, j], val_scores[:, j], thresholds[t])
                  for j, t in enumerate(data.targets)}
    manifest = ArtifactManifest(
        name=HYBRID,
        task="donors",
        hyperparameters={"family": HYBRID, "targets": list(data.targets), "seed": seed, "hysteresis": margins,
                         "tree_weights": hybrid.tree_weights, "model": net.model.spec.to_dict(),
                         "components": {"trees": {"model": "lightgbm", "version": versions.get("lightgbm")},
                                        "neural": {"model": "multitarget", "version": versions.get("multitarget")}},
                         "validation_pr_auc_by_weight": by_weight},
        feature_schema=config.schema(),
        feature_schema_hash=config.schema_hash(),
        threshold=thresholds,
        metrics=finite_or_none({"test": report["models"][HYBRID], "validation": validation}),
        training_data=data.description,
        reference_distributions=reference_distributions(data, val_scores),
        normalisation=normalisation_summary(net.model),
    )
    return save_model_text(out_dir / "artifacts", manifest, hybrid.trees.to_texts(), "lightgbm-text",
                           state_dict=net.model.state_dict())


def _write_predictions(path: Path, data: DonorDataset, scores: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Validation and test scores of every model, one row per donor (for error analysis and audits)."""
    rows = np.concatenate([data.index(VALIDATION), data.index(TEST)])
    columns = {
        "donor_id": pa.array(data.donor_ids[rows].tolist(), pa.string()),
        "split": pa.array(np.where(data.split[rows] == VALIDATION, "validation", "test").tolist(), pa.string()),
    }
    for j, t in enumerate(data.targets):
        columns[f"label:{t}"] = pa.array(data.labels[rows, j].astype(bool))
    for name, (val_s, test_s) in scores.items():
        both = np.concatenate([val_s, test_s])
        for j, t in enumerate(data.targets):
            columns[f"{name}:{t}"] = pa.array(both[:, j].astype(np.float32))
    pq.write_table(pa.table(columns), path)

