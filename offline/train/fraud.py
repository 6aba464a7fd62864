"""`tributary train fraud`: every fraud model and baseline on one world, one split, one report.

Output directory:
    artifacts/<model>/<version>/   servable models (manifest.json + weights.pt)
    checkpoints/<model>.pt         per-epoch training state; a rerun resumes from it
    report/                        report.json, comparison.{md,csv}, plots
    predictions.parquet            validation and test scores of every model, per event
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from models import drift_reference
from models.alert_policy import budget_reference
from models.artifacts import ArtifactManifest, normalisation_summary, record_served, save_artifact, save_model_text
from models.drift_reference import quantile_histogram
from models.features.flat import flat_feature_names, flat_features
from models.features.partitioning import DEFAULT_PARTITIONS
from models.features.transactions import (
    EVENT_FEATURES,
    F_EDGE,
    F_EVENT,
    F_NODE,
    F_SEQ,
    TransactionFeatureConfig,
)
from models.gbdt import FAMILY as GBDT
from models.gbdt import FRAUD_FILE, GbdtFraudModel
from models.hybrid import FAMILY as HYBRID
from models.hybrid import blend
from models.nn.fraud_model import FraudModel, FraudModelSpec
from models.worlds import World, open_world
from offline.evaluation.metrics import average_precision, choose_threshold
from offline.evaluation.report import ScoredModel, write_fraud_report, write_report_json
from offline.train.common import MaskedMoments, TrainingInputError, check_model_names, check_trainable, choose_blend_weight
from offline.train.fraud_baselines import LABEL_DELAY_S, river_prequential, train_lightgbm
from offline.train.fraud_data import TEST, TRAIN, VALIDATION, FraudDataset, account_scores, load_fraud_dataset
from offline.train.loop import FitConfig, fit_binary, predict

# Event features whose live distribution the drift monitor compares with training's.
DRIFT_FEATURES = (
    "log_amount",
    "source_log_hours_since_last",
    "destination_log_hours_since_last",
    "amount_vs_source_mean_out",
    "pair_count_in_window",
)


@dataclass(frozen=True)
class Profile:
    fit: FitConfig
    graph_hidden: int
    sequence_hidden: int
    fusion_hidden: int
    train_negative_share: float
    features: TransactionFeatureConfig = field(default_factory=TransactionFeatureConfig)


PROFILES = {
    # Small widths and few epochs: everything trains on a laptop CPU in minutes.
    "quick": Profile(FitConfig(epochs=6, patience=3, restart_epochs=3), 32, 24, 48, 0.25),
    "full": Profile(FitConfig(epochs=20, patience=5, restart_epochs=5), 64, 32, 64, 0.3),
}


def model_specs(profile: Profile) -> list[FraudModelSpec]:
    g, s, f = profile.graph_hidden, profile.sequence_hidden, profile.fusion_hidden
    specs = [
        FraudModelSpec("graph-sage-d1", graph_depth=1, graph_hidden=g // 2, sequence=None, fusion_hidden=f),
        FraudModelSpec("graph-sage-d2", graph_depth=2, graph_hidden=g, sequence=None, fusion_hidden=f),
        FraudModelSpec("sequence-bilstm", graph_depth=None, sequence="bilstm", sequence_hidden=s, fusion_hidden=f),
        FraudModelSpec("sequence-lstm-cnn", graph_depth=None, sequence="lstm-cnn", sequence_hidden=s, fusion_hidden=f),
        FraudModelSpec("sequence-gru", graph_depth=None, sequence="gru", sequence_hidden=s, fusion_hidden=f),
        FraudModelSpec("tabular-mlp", graph_depth=None, sequence=None, fusion_hidden=f),
    ]
    for strategy in ("concat", "attention", "gated", "cross-attention"):
        specs.append(FraudModelSpec(f"fusion-{strategy}", graph_depth=2, graph_hidden=g, sequence="bilstm",
                                    sequence_hidden=s, fusion=strategy, fusion_hidden=f))
    dims = {"event": F_EVENT, "seq": F_SEQ, "node": F_NODE, "edge": F_EDGE}
    return [replace(spec, dims=dims) for spec in specs]


def build_model(spec: FraudModelSpec) -> FraudModel:
    d = spec.dims or {"event": F_EVENT, "seq": F_SEQ, "node": F_NODE, "edge": F_EDGE}
    return FraudModel(spec, d["event"], d["seq"], d["node"], d["edge"])


def normalisation_stats(train: dict[str, np.ndarray]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-feature mean/std over valid (unmasked) positions of the training split."""

    def stats(values: np.ndarray, mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        moments = MaskedMoments()
        moments.add(values, mask)
        return moments.mean_std()

    hops = np.concatenate([train["hop1"].reshape(-1, train["hop1"].shape[-1]),
                           train["hop2"].reshape(-1, train["hop2"].shape[-1])])
    hop_mask = np.concatenate([train["hop1_mask"].reshape(-1), train["hop2_mask"].reshape(-1)])
    return {
        "event": stats(train["event"], None),
        "seq": stats(train["seq"], train["seq_mask"]),
        "node": stats(train["node"], None),
        "hop": stats(hops, hop_mask),
    }


def reference_distributions(val: dict[str, np.ndarray], scores: np.ndarray, bins: int = 10) -> dict:
    """Decile bins of the score and key event features on validation data, for the
    worker's PSI monitor (models.drift_reference)."""
    features = {name: quantile_histogram(val["event"][:, EVENT_FEATURES.index(name)], bins) for name in DRIFT_FEATURES}
    return drift_reference.build({"fraud": quantile_histogram(scores, bins)}, features)


def train_fraud(
    world_dir: Path,
    out_dir: Path,
    profile: str = "quick",
    models: list[str] | None = None,
    progress: bool = True,
    fit_override: FitConfig | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    seed: int | None = None,
) -> dict:
    """Train and evaluate every fraud model (or those named in `models`) on the features a
    worker with `partitions` input partitions serves; return the report. `seed` (default:
    the fit configuration's) seeds initialisation, batch order, the training negatives'
    subsample and LightGBM."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    chosen = PROFILES[profile]
    neural_names = [spec.name for spec in model_specs(chosen)]
    check_model_names(models, neural_names + [GBDT, HYBRID, "river-logreg"], "fraud")
    if models is not None and HYBRID in models and (GBDT not in models or not set(models) & set(neural_names)):
        raise TrainingInputError(f"the {HYBRID} model blends {GBDT} with the best neural model of the same run: "
                                 f"name them too, e.g. --model {HYBRID} --model {GBDT} --model fusion-gated")
    fit = fit_override or chosen.fit
    if seed is not None:
        fit = replace(fit, seed=seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    world = open_world(world_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    data = load_fraud_dataset(world, chosen.features, train_negative_share=chosen.train_negative_share, progress=progress,
                              partitions=partitions, seed=fit.seed)
    _say(progress, f"features for {data.total_events:,} transactions in {time.monotonic() - started:.0f} s; "
                   f"{data.describe()}")
    periods = {name: (int((data.split == code).sum()), int(data.labels[data.split == code].sum()))
               for name, code in (("training", TRAIN), ("validation", VALIDATION), ("test", TEST))}
    check_trainable(Path(world_dir).name, f"{data.total_events:,} transactions", periods, "by time (60/20/20)",
                    "transactions (fraud or not)", "Label the fraud in it (the import's label column), or use a longer world.")
    train, y_train = data.part(TRAIN)
    val, y_val = data.part(VALIDATION)
    test, y_test = data.part(TEST)
    norm = normalisation_stats(train)
    training_data = _training_data(world, data, fit.seed)

    specs = [s for s in model_specs(chosen) if models is None or s.name in models]
    results: dict[str, ScoredModel] = {}
    validation: dict[str, float] = {}  # PR-AUC on the validation period of each servable model
    versions: dict[str, str] = {}  # the artifact version each servable model was saved as
    predictions = {"event_id": data.event_ids[data.split != TRAIN], "split": data.split[data.split != TRAIN],
                   "label": data.labels[data.split != TRAIN]}
    best_net: _Component | None = None  # the neural model with the best validation PR-AUC, for the hybrid
    for spec in specs:
        torch.manual_seed(fit.seed)
        model = build_model(spec).to(device)
        model.set_normalisation(norm)
        history = fit_binary(model, train, y_train, val, y_val, fit, out_dir / "checkpoints" / f"{spec.name}.pt",
                             progress=progress, label=spec.name)
        val_scores, test_scores = predict(model, val), predict(model, test)
        threshold = choose_threshold(y_val, val_scores)
        results[spec.name] = ScoredModel(y_test, test_scores, threshold, history)
        validation[spec.name] = average_precision(y_val, val_scores)
        metrics = results[spec.name].metrics()
        manifest = _manifest(spec.name, {"model": spec.to_dict(), "fit": fit.to_dict(), "profile": profile}, chosen,
                             threshold, metrics, val, val_scores, data, training_data,
                             val_pr_auc_best=max(h["val_pr_auc"] for h in history) if history else None)
        path = save_artifact(out_dir / "artifacts", manifest.model_copy(update={"normalisation": normalisation_summary(model)}),
                             model.state_dict())
        versions[spec.name] = manifest.version
        predictions[spec.name] = np.concatenate([val_scores, test_scores])
        if best_net is None or validation[spec.name] > validation[best_net.name]:
            best_net = _Component(spec.name, manifest.version, model, val_scores, test_scores,
                                  manifest.hyperparameters)
        _say(progress, f"{spec.name}: test PR-AUC {metrics['pr_auc']:.4f} F1 {metrics['f1']:.4f} -> {path}")

    if models is None or "lightgbm" in models:
        classifier, search = train_lightgbm(flat_features(train), y_train, flat_features(val), y_val, seed=fit.seed)
        # Scored through the text it is saved as, so these are the scores the worker gives.
        trees = GbdtFraudModel.from_text(classifier.booster_.model_to_string(
            num_iteration=classifier.best_iteration_ or None), threads=2)
        val_scores, test_scores = trees.predict(val), trees.predict(test)
        threshold = choose_threshold(y_val, val_scores)
        results[GBDT] = ScoredModel(y_test, test_scores, threshold)
        validation[GBDT] = average_precision(y_val, val_scores)
        metrics = results[GBDT].metrics()
        params = {k: v for k, v in classifier.get_params().items() if isinstance(v, (int, float, str, bool, type(None)))}
        manifest = _manifest(GBDT, {"family": GBDT, "params": params, "trees": trees.booster.num_trees(),
                                    "search": search, "profile": profile},
                             chosen, threshold, metrics, val, val_scores, data, training_data)
        path = save_model_text(out_dir / "artifacts", manifest, {FRAUD_FILE: trees.to_text()}, "lightgbm-text")
        versions[GBDT] = manifest.version
        predictions[GBDT] = np.concatenate([val_scores, test_scores])
        _say(progress, f"{GBDT}: test PR-AUC {metrics['pr_auc']:.4f} F1 {metrics['f1']:.4f} -> {path}")
        if (models is None or HYBRID in models) and best_net is not None:
            trees_part = _Component(GBDT, manifest.version, trees, val_scores, test_scores, manifest.hyperparameters)
            hybrid_val, hybrid_test, hyperparameters = _fit_hybrid(trees_part, best_net, y_val, profile)
            threshold = choose_threshold(y_val, hybrid_val)
            results[HYBRID] = ScoredModel(y_test, hybrid_test, threshold)
            validation[HYBRID] = average_precision(y_val, hybrid_val)
            metrics = results[HYBRID].metrics()
            manifest = _manifest(HYBRID, hyperparameters, chosen, threshold, metrics, val, hybrid_val, data,
                                 training_data).model_copy(update={"normalisation": normalisation_summary(best_net.model)})
            path = save_model_text(out_dir / "artifacts", manifest, {FRAUD_FILE: trees.to_text()}, "lightgbm-text",
                                   state_dict=best_net.model.state_dict())
            versions[HYBRID] = manifest.version
            predictions[HYBRID] = np.concatenate([hybrid_val, hybrid_test])
            _say(progress, f"{HYBRID} ({GBDT} x {hyperparameters['tree_weight']} + {best_net.name}): test PR-AUC "
                           f"{metrics['pr_auc']:.4f} F1 {metrics['f1']:.4f} -> {path}")
    if models is None or "river-logreg" in models:
        everything = flat_features(data.inputs.arrays())
        scores = river_prequential(everything, data.labels, flat_feature_names(), data.times)
        val_mask, test_mask = data.split == VALIDATION, data.split == TEST
        results["river-logreg"] = ScoredModel(y_test, scores[test_mask], choose_threshold(y_val, scores[val_mask]))
        predictions["river-logreg"] = np.concatenate([scores[val_mask], scores[test_mask]])
        _say(progress, f"river-logreg: test PR-AUC {results['river-logreg'].metrics()['pr_auc']:.4f}")

    pq.write_table(pa.table(predictions), out_dir / "predictions.parquet")
    account_results = _account_level(world, data, predictions, [n for n in results])
    notes = _notes(world, data)
    split = (f"by time: train before {_iso(data.boundaries[0])}, validation to {_iso(data.boundaries[1])}, "
             f"test after (test: {int((data.split == TEST).sum()):,} transactions, {int(y_test.sum()):,} fraud)")
    report = write_fraud_report(out_dir / "report", world.manifest.source, split, results, notes)
    report["training_seed"] = fit.seed
    if validation:
        report["served"] = record_served(out_dir / "artifacts", "fraud", validation, versions,
                                         {"world": str(world.root), "partitions": data.partitions})
    write_report_json(out_dir / "report" / "report.json", report)
    if validation:
        _say(progress, f"served by default: {report['served']['model']} (best validation PR-AUC at "
                       f"{data.partitions} partition(s))")
    if account_results:
        accounts = write_fraud_report(
            out_dir / "report" / "accounts", world.manifest.source,
            "per account: highest transaction score in the test period vs. the account label "
            "(threshold chosen the same way on the validation period)", account_results, notes,
        )
        for name, metrics in accounts["models"].items():
            report["models"][name]["accounts"] = metrics
        write_report_json(out_dir / "report" / "report.json", report)
    _say(progress, f"report in {out_dir / 'report'} ({time.monotonic() - started:.0f} s in all)")
    return report


@dataclass(frozen=True)
class _Component:
    """A model of this run that a hybrid can be made of, with its scores."""

    name: str
    version: str
    model: Any  # FraudModel | GbdtFraudModel
    val_scores: np.ndarray
    test_scores: np.ndarray
    hyperparameters: dict


def _fit_hybrid(trees: _Component, net: _Component, y_val: np.ndarray, profile: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """The blend weight with the best validation PR-AUC (models.hybrid.WEIGHTS); its
    validation and test scores, and the hybrid's hyper-parameters."""
    weight, by_weight = choose_blend_weight(y_val, trees.val_scores, net.val_scores)
    hyperparameters = {"family": HYBRID, "tree_weight": weight, "neural": net.hyperparameters,
                       "trees": trees.hyperparameters, "profile": profile,
                       "components": {"trees": {"model": trees.name, "version": trees.version},
                                      "neural": {"model": net.name, "version": net.version}},
                       "validation_pr_auc_by_weight": by_weight}
    return (blend(trees.val_scores, net.val_scores, weight), blend(trees.test_scores, net.test_scores, weight),
            hyperparameters)


def _manifest(name: str, hyperparameters: dict, chosen: Profile, threshold: float, metrics: dict,
              val: dict[str, np.ndarray], val_scores: np.ndarray, data: FraudDataset, training_data: dict,
              val_pr_auc_best: float | None = None) -> ArtifactManifest:
    return ArtifactManifest(
        name=name,
        task="fraud",
        hyperparameters=hyperparameters,
        feature_schema=chosen.features.schema(),
        feature_schema_hash=chosen.features.schema_hash(),
        threshold=threshold,
        metrics={"test": metrics, "val_pr_auc": average_precision(data.labels[data.split == VALIDATION], val_scores),
                 "val_pr_auc_best": val_pr_auc_best,
                 "alert_budget": budget_reference(val_scores, data.boundaries[1] - data.boundaries[0])},
        training_data=training_data,
        reference_distributions=reference_distributions(val, val_scores),
    )


def _account_level(world: World, data: FraudDataset, predictions: dict, names: list[str]) -> dict[str, ScoredModel]:
    """Per-account scores for worlds with account labels (AMLSim's labels are per account)."""
    if not world.has_labels("accounts"):
        return {}
    table = world.read_labels("accounts")
    is_fraud = dict(zip(table.column("account_id").to_pylist(), table.column("is_fraud").to_pylist()))
    rows = data.split != TRAIN
    out = {}
    for name in names:
        per_split = {}
        for code in (VALIDATION, TEST):
            mask = data.split[rows] == code
            best = account_scores(data.sources[rows][mask], data.destinations[rows][mask], predictions[name][mask])
            per_split[code] = (np.array([bool(is_fraud.get(a, False)) for a in best]), np.array(list(best.values())))
        (y_val, s_val), (y_test, s_test) = per_split[VALIDATION], per_split[TEST]
        out[name] = ScoredModel(y_test, s_test, choose_threshold(y_val, s_val))
    return out


def _training_data(world: World, data: FraudDataset, seed: int) -> dict:
    return {
        "world": str(world.root),
        "source": world.manifest.source,
        "synthetic": world.manifest.synthetic,
        "seed": world.manifest.seed,
        "partitions": data.partitions,
        "training_seed": seed,
        "split": data.describe(),
    }


def _notes(world: World, data: FraudDataset) -> list[str]:
    notes = [
        "Features of every event come only from events before it (the worker's feature code, run in event order).",
        f"Features are those a worker with {data.partitions} input partition(s) serves: every worker merges all "
        "partitions into one graph, so each transaction sees every account's history before it.",
        "The served model (\"served\") is the one with the best validation PR-AUC; the test period chooses nothing.",
        "Training negatives are subsampled; validation and test keep every transaction and the true fraud rate.",
        "Thresholds are chosen on validation (max F1) and applied unchanged to test.",
        f"river-logreg is online over the same rows in time order: it predicts each one, and learns a label only "
        f"{LABEL_DELAY_S / 86400:.0f} days of event time after its transaction, as confirmed fraud arrives.",
    ]
    if world.manifest.synthetic:
        notes.append("SYNTHETIC data: results describe the generator's planted patterns, not real fraud.")
    notes += [f"data set note: {n}" for n in world.manifest.notes]
    return notes


def _iso(unix_s: float) -> str:
    return np.datetime64(int(unix_s), "s").astype(str) + "Z"


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)
