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

import copy
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from sklearn.metrics import average_precision_score
from tqdm import tqdm

from models import drift_reference
from models.artifacts import ArtifactManifest, normalisation_summary, save_artifact
from models.contracts import Segment
from models.drift_reference import uniform_histogram
from models.features.donor_state import donor_state_time
from models.features.donors import (
    F_EDGE,
    F_GIFT,
    F_NODE,
    F_TAB,
    N_RELATIONSHIP_TYPES,
    TAB_FEATURES,
    DonorBatch,
    DonorFeatureConfig,
    DonorFeaturizer,
)
from models.nn.donor_model import INPUTS, MODALITIES, DonorModel, DonorModelSpec
from models.worlds import World, WorldError, WorldKind, open_world
from offline.evaluation.metrics import binary_metrics, choose_threshold
from offline.evaluation.report import ScoredModel, nan_to_none, write_donor_report
from offline.train.common import focal_terms, run_signature
from offline.train.donor_baselines import (
    fit_lightgbm,
    flat_feature_names,
    flat_features,
    river_prequential,
    stable_order,
)
from offline.train.donor_replay import donor_state_at

# Loss weights per segment, from the design; renormalised over the targets a world has.
TARGET_WEIGHTS = {
    Segment.HIGH_ENGAGEMENT.value: 0.25,
    Segment.NETWORK_INFLUENCE.value: 0.20,
    Segment.GIVING_CONSISTENCY.value: 0.20,
    Segment.HIGH_VALUE.value: 0.20,
    Segment.RECENT_ENGAGEMENT.value: 0.15,
}
RESPONSE_TARGET = "responded"
FOCAL_ALPHA, FOCAL_GAMMA = 0.75, 2.0
SPLIT = (0.70, 0.15)  # train, validation; the rest is test
TRAIN, VALIDATION, TEST = 0, 1, 2
NEURAL = {
    "multitarget": MODALITIES,
    "multitarget-tabular-only": ("tabular",),
    "multitarget-sequence-only": ("sequence",),
    "multitarget-network-only": ("network",),
}
BASELINES = ("lightgbm", "river-logreg")
ALL_MODELS = (*NEURAL, *BASELINES)
# Tabular features whose training distributions go into the artifact for the drift monitor.
REFERENCE_FEATURES = (
    "log_gift_count", "log_gift_total", "log_days_since_last_gift", "months_with_gift_prev12", "log_amount_365d",
    "log_event_attendance_12m", "wealth_index", "log_referral_count", "log_degree_total",
)  # fmt: skip


@dataclass(frozen=True)
class TrainProfile:
    """How hard to train. quick: CPU, minutes, half the design widths. full: design widths, GPU if present."""

    name: str
    widths: dict = field(default_factory=dict)  # DonorModelSpec overrides
    epochs: int = 20
    patience: int = 5
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    clip: float = 1.0
    lgbm_rounds: int = 1000
    lgbm_lr: float = 0.05
    use_gpu: bool = False
    # Exponential moving average of the weights, per step (0: off). Validation, early
    # stopping and the saved model use the averaged weights, which are less noisy than
    # any single step's on a few thousand donors.
    ema: float = 0.0


PROFILES = {
    "quick": TrainProfile(
        "quick",
        widths=dict(tab_hidden=128, seq_hidden=64, graph_hidden=64, fusion_width=128, fused=256, head_hidden=64),
        epochs=20, patience=5, lr=2e-3, ema=0.99, lgbm_rounds=1000, lgbm_lr=0.05,
    ),
    "full": TrainProfile("full", widths={}, epochs=60, patience=10, lr=1e-3, ema=0.99, lgbm_rounds=3000, lgbm_lr=0.02,
                         use_gpu=True),
}


# --- data -----------------------------------------------------------------------------------------


@dataclass
class DonorDataset:
    """Features, labels and split of the labelled donors of one world."""

    donor_ids: np.ndarray  # object array of str
    targets: tuple[str, ...]
    labels: np.ndarray  # [N, T] float32 (0/1)
    batch: DonorBatch
    split: np.ndarray  # [N] TRAIN / VALIDATION / TEST
    at: datetime
    split_desc: str
    notes: list[str]
    description: dict  # what goes into the artifact's training_data

    def index(self, part: int) -> np.ndarray:
        return np.flatnonzero(self.split == part)


def split_of(donor_ids) -> np.ndarray:
    """TRAIN / VALIDATION / TEST per donor from a hash of its id: stable across runs and worlds."""
    u = np.array([int.from_bytes(hashlib.blake2b(f"split:{d}".encode(), digest_size=8).digest(), "little") / 2.0**64
                  for d in donor_ids])
    return np.where(u < SPLIT[0], TRAIN, np.where(u < SPLIT[0] + SPLIT[1], VALIDATION, TEST)).astype(np.int8)


def load_donor_dataset(world: World, config: DonorFeatureConfig = DonorFeatureConfig()) -> DonorDataset:
    """Targets from the world's label files, features from the state at the cut-off."""
    m = world.manifest
    if m.kind is not WorldKind.DONORS:
        raise WorldError(f"{world.root} is a {m.kind.value} world; `train donors` needs a donor world")
    notes: list[str] = []
    if world.has_labels("donor_targets"):
        table = world.read_labels("donor_targets")
        offered = m.parameters.get("targets_available") or list(TARGET_WEIGHTS)
        unavailable = [t for t in TARGET_WEIGHTS if t not in offered]
        if unavailable:
            notes.append(f"Targets this data set cannot define (world parameters `targets_available`): "
                         f"{', '.join(unavailable)}; they are not trained and left out of the report.")
        targets = [t for t in TARGET_WEIGHTS if t in offered]
        if m.cutoff is None:
            raise WorldError(f"{world.root} has donor_targets but no cut-off in {world.root / 'world.json'}")
        at, inclusive = m.cutoff, False
    elif world.has_labels("donor_response"):
        table = world.read_labels("donor_response")
        targets = [RESPONSE_TARGET]
        if m.cutoff is not None:
            at, inclusive = m.cutoff, False
        elif m.time_range is not None:
            at, inclusive = m.time_range[1], True
            notes.append(f"The world has no cut-off: features are read at its last event ({at.isoformat()}), "
                         "i.e. the profile snapshot the response label refers to.")
        else:
            raise WorldError(f"{world.root} has no events to read features from")
    else:
        raise WorldError(f"{world.root} has neither donor_targets nor donor_response labels; nothing to train on")

    ids = np.array(table.column("donor_id").to_pylist(), dtype=object)
    labels = np.stack([np.asarray(table.column(t).fill_null(False), dtype=np.float32) for t in targets], axis=1)
    empty = [t for j, t in enumerate(targets) if not labels[:, j].any()]
    if empty:
        notes.append(f"Targets with no positive donor in this world: {', '.join(empty)}; not trained, not reported.")
        keep = [j for j, t in enumerate(targets) if t not in empty]
        targets, labels = [targets[j] for j in keep], labels[:, keep]
    if not targets:
        raise WorldError(f"{world.root}: no target has a positive donor; nothing to train")

    state = donor_state_at(world, at, config, inclusive=inclusive)
    if not inclusive:
        # The guard the targets rely on: nothing at or after the cut-off was read.
        assert state.watermark < donor_state_time(at), "an event at or after the cut-off reached the features"
    batch = DonorFeaturizer(state, config).featurize(ids.tolist(), at)
    split = split_of(ids)
    modalities = batch.modality_mask().mean(axis=0)
    if m.cutoff is not None:
        split_desc = (f"random 70/15/15 split of donors by id hash; features from events before the cut-off "
                      f"{m.cutoff.date()}, targets on [{m.cutoff.date()}, {m.horizon.date() if m.horizon else '?'}), "
                      "so the temporal split is the cut-off itself")
    else:
        split_desc = "random 70/15/15 split of donors by id hash (no cut-off: one snapshot and its response)"
    description = {
        "world": str(world.root),
        "source": m.source,
        "synthetic": m.synthetic,
        "seed": m.seed,
        "cutoff": m.cutoff.isoformat() if m.cutoff else None,
        "horizon": m.horizon.isoformat() if m.horizon else None,
        "features_at": at.isoformat(),
        "donors": int(len(ids)),
        "donors_in_state": len(state),
        "split": {name: int((split == part).sum())
                  for part, name in ((TRAIN, "train"), (VALIDATION, "validation"), (TEST, "test"))},
        "positives": {t: int(labels[:, j].sum()) for j, t in enumerate(targets)},
        "modality_share": {name: round(float(v), 4) for name, v in zip(MODALITIES, modalities)},
        "event_counts": dict(m.counts),
    }
    return DonorDataset(ids, tuple(targets), labels, batch, split, at, split_desc, notes, description)


# --- neural training --------------------------------------------------------------------------------


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
               alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Weighted sum over targets of the mean binary focal loss; weights [T] sum to 1 (0 = masked out)."""
    return (focal_terms(logits, labels, alpha, gamma).mean(0) * weights).sum()


def normalisation_stats(batch: DonorBatch, rows: np.ndarray, chunk: int = 8192) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Mean and std per feature of the gift, node and neighbour inputs over the training rows,
    counting only present entries (the tabular branch uses `tabular_quantiles`).

    Accumulated in chunks of rows (float64 sums), so a 500k-donor world needs no copy of its inputs.
    """
    parts = {"gift": ("seq", "seq_mask"), "node": ("node", None), "nbr": ("nbr", "nbr_mask")}
    sums = {name: [0.0, 0.0, 0.0] for name in parts}  # count, sum, sum of squares per feature
    for start in range(0, len(rows), chunk):
        b = batch.take(rows[start:start + chunk])
        for name, (values, mask) in parts.items():
            v = getattr(b, values)
            v = v.reshape(-1, v.shape[-1]).astype(np.float64)
            w = np.ones((len(v), 1)) if mask is None else getattr(b, mask).reshape(len(v), -1).astype(np.float64)
            acc = sums[name]
            acc[0] = acc[0] + w.sum(0)
            acc[1] = acc[1] + (v * w).sum(0)
            acc[2] = acc[2] + (v * v * w).sum(0)
    stats = {}
    for name, (n, total, squares) in sums.items():
        n = np.broadcast_to(np.asarray(n, dtype=np.float64), np.shape(total))
        mean = total / np.maximum(n, 1)
        std = np.where(n > 1, np.sqrt(np.maximum(squares / np.maximum(n, 1) - mean**2, 0.0)), 1.0)
        stats[name] = (torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32))
    return stats


def tabular_quantiles(batch: DonorBatch, rows: np.ndarray, bins: int, sample: int = 100_000, seed: int = 0) -> torch.Tensor:
    """[F_tab, bins + 1] quantiles of each tabular feature's present training values (a fixed sample of rows)."""
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, sample, replace=False))
    values = np.where(batch.tab_mask[rows] > 0, batch.tab[rows], np.nan).astype(np.float64)
    levels = np.linspace(0.0, 1.0, bins + 1)
    edges = np.zeros((values.shape[1], bins + 1))
    for j in range(values.shape[1]):
        present = values[:, j][~np.isnan(values[:, j])]
        edges[j] = np.quantile(present, levels) if len(present) else levels
    return torch.tensor(edges, dtype=torch.float32)


def _tensors(batch: DonorBatch) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(batch.arrays()[name])) for name in INPUTS}


def _slice(tensors: dict[str, torch.Tensor], rows: np.ndarray, device) -> dict[str, torch.Tensor]:
    index = torch.from_numpy(rows)
    return {k: v.index_select(0, index).to(device, non_blocking=True) for k, v in tensors.items()}


def _bucketed(rows: np.ndarray, lengths: np.ndarray, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    """Shuffled batches of donors with similar history lengths.

    The sequence branch computes up to the longest history in a batch, so mixing one
    50-gift donor into every batch would make every batch cost 50 steps; sorting within
    shuffled chunks of 32 batches keeps batches random but their lengths alike.
    """
    perm = rows[torch.randperm(len(rows), generator=generator).numpy()]
    chunk = 32 * batch_size
    batches = []
    for start in range(0, len(perm), chunk):
        part = perm[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    batches = [b for b in batches if len(b) > 1]  # batch norm needs two rows to train on
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def score_rows(model: DonorModel, tensors: dict[str, torch.Tensor], rows: np.ndarray, lengths: np.ndarray,
               device, batch_size: int = 1024) -> np.ndarray:
    """Probabilities [len(rows), T] in `rows` order, scored in length-sorted batches."""
    order = np.argsort(lengths[rows], kind="stable")
    out = np.zeros((len(rows), len(model.spec.targets)), dtype=np.float32)
    for start in range(0, len(rows), batch_size):
        pick = order[start:start + batch_size]
        out[pick] = model.score(_slice(tensors, rows[pick], device)).float().cpu().numpy()
    return out


@torch.no_grad()
def _ema_update(averaged: DonorModel, model: DonorModel, decay: float) -> None:
    """averaged <- decay * averaged + (1 - decay) * model; buffers (normalisation, batch-norm stats) copied."""
    for a, p in zip(averaged.parameters(), model.parameters()):
        a.lerp_(p, 1.0 - decay)
    for a, b in zip(averaged.buffers(), model.buffers()):
        a.copy_(b)


def _mean_pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    values = [average_precision_score(labels[:, t], scores[:, t]) for t in range(labels.shape[1])
              if 0 < labels[:, t].sum() < len(labels)]
    return float(np.mean(values)) if values else float("nan")


@dataclass
class NeuralResult:
    model: DonorModel
    history: list[dict]
    best_epoch: int
    val_scores: np.ndarray
    test_scores: np.ndarray
    seconds: float
    resumed_from: int | None


def fit_neural(
    spec: DonorModelSpec, data: DonorDataset, profile: TrainProfile, checkpoint_dir: Path, progress: bool,
    seed: int = 0, epochs: int | None = None,
) -> NeuralResult:
    """Train one neural donor model with early stopping; resumes from checkpoint_dir/last.pt."""
    started = time.perf_counter()
    device = torch.device("cuda" if profile.use_gpu and torch.cuda.is_available() else "cpu")
    amp = device.type == "cuda"  # mixed precision only where it pays and is safe
    epochs = epochs if epochs is not None else profile.epochs
    train, val, test = data.index(TRAIN), data.index(VALIDATION), data.index(TEST)
    lengths = data.batch.seq_mask.sum(axis=1).astype(np.int64)
    tensors = _tensors(data.batch)
    labels = torch.from_numpy(data.labels)

    torch.manual_seed(seed)
    model = DonorModel(spec)
    model.set_normalisation(normalisation_stats(data.batch, train), tabular_quantiles(data.batch, train, spec.tab_bins))
    averaged = copy.deepcopy(model) if profile.ema else model  # what is evaluated and kept
    # Copied before moving: `.to()` re-packs an LSTM's weights into the one block cuDNN
    # needs, a deep copy of a CUDA model does not (cuDNN then re-packs them on every call).
    model.to(device)
    averaged.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=profile.lr, weight_decay=profile.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
    # Targets without a positive training donor cannot be learnt: masked out of the loss.
    weights = np.array([TARGET_WEIGHTS.get(t, 1.0) if data.labels[train, j].any() else 0.0
                        for j, t in enumerate(spec.targets)])
    weights = torch.tensor(weights / max(weights.sum(), 1e-12), dtype=torch.float32, device=device)
    generator = torch.Generator().manual_seed(seed)

    signature = run_signature(
        # Not the epoch budget: a rerun with more epochs carries on where the last one stopped.
        spec=spec.to_dict(), profile={**asdict(profile), "epochs": None}, seed=seed,
        data=[len(data.donor_ids), list(data.targets), data.description["features_at"],
              hashlib.sha256(data.labels.tobytes()).hexdigest()])
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    last = checkpoint_dir / "last.pt"
    history: list[dict] = []
    best_metric, best_epoch, bad_epochs, start_epoch = -math.inf, 0, 0, 1
    best_state = copy.deepcopy(model.state_dict())
    stopped, finished, resumed_from = False, False, None
    if last.exists():
        # Onto the CPU, whatever the training device: the RNG states must stay CPU tensors
        # (set_state refuses CUDA ones), and load_state_dict moves the weights and optimizer
        # state to the model's device.
        saved = torch.load(last, map_location="cpu", weights_only=True)
        if saved.get("signature") == signature:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            if profile.ema:
                averaged.load_state_dict(saved["averaged"])
            generator.set_state(saved["generator"])
            torch.set_rng_state(saved["torch_rng"])
            if device.type == "cuda" and saved.get("cuda_rng"):
                torch.cuda.set_rng_state_all(saved["cuda_rng"])
            history, best_state = saved["history"], saved["best_state"]
            best_metric, best_epoch, bad_epochs = saved["best_metric"], saved["best_epoch"], saved["bad_epochs"]
            start_epoch, stopped, resumed_from = saved["epoch"] + 1, saved["stopped"], saved["epoch"]
            finished = stopped or saved["epoch"] >= epochs

    bar = tqdm(range(start_epoch, epochs + 1), desc=spec.name, unit="epoch", disable=not progress or finished,
               file=sys.stderr, initial=start_epoch - 1, total=epochs)
    for epoch in bar if not finished else []:
        model.train()
        batches = _bucketed(train, lengths, profile.batch_size, generator)
        total, seen = 0.0, 0
        for rows in tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not progress, file=sys.stderr):
            inputs = _slice(tensors, rows, device)
            target = labels.index_select(0, torch.from_numpy(rows)).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(inputs)
            loss = focal_loss(logits.float(), target, weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), profile.clip)
            optimizer.step()
            if profile.ema:
                _ema_update(averaged, model, profile.ema)
            total += float(loss.detach()) * len(rows)
            seen += len(rows)
        val_scores = score_rows(averaged, tensors, val, lengths, device)
        metric = _mean_pr_auc(data.labels[val], val_scores)
        metric = -math.inf if math.isnan(metric) else metric
        scheduler.step(metric)
        history.append({"epoch": epoch, "train_loss": total / max(seen, 1),
                        "val_pr_auc": metric if math.isfinite(metric) else math.nan, "lr": optimizer.param_groups[0]["lr"]})
        if metric > best_metric:
            best_metric, best_epoch, bad_epochs = metric, epoch, 0
            best_state = copy.deepcopy(averaged.state_dict())
        else:
            bad_epochs += 1
        stopped = bad_epochs >= profile.patience
        finished = stopped or epoch >= epochs
        bar.set_postfix(loss=f"{history[-1]['train_loss']:.4f}", val_pr_auc=f"{metric:.4f}", best=best_epoch)
        torch.save(
            {"signature": signature, "epoch": epoch, "stopped": stopped, "model": model.state_dict(),
             "averaged": averaged.state_dict() if profile.ema else {},
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else [], "history": history,
             "best_state": best_state, "best_metric": best_metric, "best_epoch": best_epoch, "bad_epochs": bad_epochs},
            last.with_suffix(".tmp"),
        )
        last.with_suffix(".tmp").replace(last)  # a crash mid-write leaves the previous checkpoint
        if finished:
            break
    bar.close()

    model.load_state_dict(best_state)
    model.to("cpu")
    cpu = torch.device("cpu")
    return NeuralResult(
        model=model, history=history, best_epoch=best_epoch,
        val_scores=score_rows(model, tensors, val, lengths, cpu),
        test_scores=score_rows(model, tensors, test, lengths, cpu),
        seconds=time.perf_counter() - started, resumed_from=resumed_from,
    )


# --- the command ----------------------------------------------------------------------------------------


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
) -> dict:
    """Train the donor models on a world and write artifacts, checkpoints and the report.

    Args:
        world_dir: a donor world (generated, or imported from CDNOW / pva97nk).
        out_dir: where artifacts/, checkpoints/, report/ and predictions.parquet go.
        profile: "quick" (CPU, minutes, half widths) or "full" (design widths, GPU if any).
        models: subset of ALL_MODELS to train (default all); "multitarget" writes the artifact.
        epochs: override the profile's maximum epochs (tests use 1-2).
    Returns the report dict (as written to report/report.json).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    chosen = list(models) if models else list(ALL_MODELS)
    unknown = [m for m in chosen if m not in ALL_MODELS]
    if unknown:
        raise ValueError(f"unknown donor models {unknown}; valid: {', '.join(ALL_MODELS)}")
    prof = PROFILES[profile]
    world_dir, out_dir = Path(world_dir), Path(out_dir)
    world = open_world(world_dir)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    data = load_donor_dataset(world, config)
    timings["features"] = round(time.perf_counter() - started, 2)
    notes = list(data.notes)
    targets = data.targets
    train, val, test = data.index(TRAIN), data.index(VALIDATION), data.index(TEST)
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
        X, names = flat_features(data.batch), flat_feature_names()
    if "lightgbm" in chosen:
        t0 = time.perf_counter()
        val_s, test_s, rounds = np.zeros((len(val), len(targets))), np.zeros((len(test), len(targets))), {}
        for j, target in enumerate(targets):
            y = data.labels[:, j]
            if not y[train].any():
                continue
            booster, rounds[target] = fit_lightgbm(X, y, train, val, prof.lgbm_rounds, prof.lgbm_lr,
                                                   threads=torch.get_num_threads(), seed=seed)
            val_s[:, j] = booster.predict(X[val], num_iteration=rounds[target])
            test_s[:, j] = booster.predict(X[test], num_iteration=rounds[target])
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

    notes.append("Thresholds per target maximise F1 on the validation donors; metrics are on the test donors.")
    notes.append(f"Loss: focal (alpha {FOCAL_ALPHA}, gamma {FOCAL_GAMMA}) per target, weighted "
                 + ", ".join(f"{t} {TARGET_WEIGHTS.get(t, 1.0)}" for t in targets) + " (renormalised to sum 1).")
    dataset_name = f"{world.manifest.source} ({'synthetic' if world.manifest.synthetic else 'real'}, {world_dir.name})"
    report = write_donor_report(out_dir / "report", dataset_name, data.split_desc, results, notes)
    report["timings_s"] = timings
    (out_dir / "report" / "report.json").write_text(
        json.dumps(nan_to_none(report), indent=2) + "\n")  # with timings
    _write_predictions(out_dir / "predictions.parquet", data, scores)

    if multitarget is not None:
        report["artifact"] = str(_save(out_dir, data, multitarget, thresholds["multitarget"], report, prof, config, seed))
        (out_dir / "report" / "report.json").write_text(json.dumps(nan_to_none(report), indent=2) + "\n")
    return report


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
          profile: TrainProfile, config: DonorFeatureConfig, seed: int) -> Path:
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
        },
        feature_schema=config.schema(),
        feature_schema_hash=config.schema_hash(),
        threshold=thresholds,
        metrics=nan_to_none({"test": report["models"]["multitarget"], "validation": validation,
                              "history": result.history}),
        training_data=data.description,
        reference_distributions=reference_distributions(data, result.val_scores),
        normalisation=normalisation_summary(result.model),
    )
    return save_artifact(out_dir / "artifacts", manifest, result.model.state_dict())


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

