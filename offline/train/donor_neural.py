"""Training a neural donor model: weighted multi-target focal loss, AdamW,
ReduceLROnPlateau, gradient clipping, an optional weight average, and early stopping on
the validation mean PR-AUC. Every epoch is checkpointed (signed with its run), and a
rerun resumes from the last checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from models.features.donors import (
    DonorBatch,
)
from models.nn.donor_model import INPUTS, DonorModel, DonorModelSpec
from models.progress import progress as progress_bar
from offline.train.common import MaskedMoments, focal_terms, run_signature
from offline.train.donor_data import FOCAL_ALPHA, FOCAL_GAMMA, TARGET_WEIGHTS, TEST, TRAIN, VALIDATION, DonorDataset
from offline.train.epochs import run_epochs


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
    moments = {name: MaskedMoments() for name in parts}
    for start in range(0, len(rows), chunk):
        b = batch.take(rows[start:start + chunk])
        for name, (values, mask) in parts.items():
            moments[name].add(getattr(b, values), getattr(b, mask) if mask else None)
    return {name: m.mean_std() for name, m in moments.items()}


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


def tensors_of(batch: DonorBatch) -> dict[str, torch.Tensor]:
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


class _NeuralTraining:
    """One epoch of a neural donor model's training, for offline.train.epochs."""

    def __init__(self, spec: DonorModelSpec, data: DonorDataset, profile: TrainProfile, device: torch.device,
                 seed: int, progress: bool):
        self.data, self.profile, self.device, self.progress = data, profile, device, progress
        self.amp = device.type == "cuda"  # mixed precision only where it pays and is safe
        self.train, self.val = data.index(TRAIN), data.index(VALIDATION)
        self.lengths = data.batch.seq_mask.sum(axis=1).astype(np.int64)
        self.tensors = tensors_of(data.batch)
        self.labels = torch.from_numpy(data.labels)
        torch.manual_seed(seed)
        model = DonorModel(spec)
        model.set_normalisation(normalisation_stats(data.batch, self.train),
                                tabular_quantiles(data.batch, self.train, spec.tab_bins))
        averaged = copy.deepcopy(model) if profile.ema else model  # what is evaluated and kept
        # Copied before moving: `.to()` re-packs an LSTM's weights into the one block cuDNN
        # needs, a deep copy of a CUDA model does not (cuDNN then re-packs them on every call).
        self.model, self.kept = model.to(device), averaged.to(device)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=profile.lr, weight_decay=profile.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="max", factor=0.5, patience=2)
        # Targets without a positive training donor cannot be learnt: masked out of the loss.
        weights = np.array([TARGET_WEIGHTS.get(t, 1.0) if data.labels[self.train, j].any() else 0.0
                            for j, t in enumerate(spec.targets)])
        self.weights = torch.tensor(weights / max(weights.sum(), 1e-12), dtype=torch.float32, device=device)
        self.generator = torch.Generator().manual_seed(seed)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        total, seen = 0.0, 0
        batches = _bucketed(self.train, self.lengths, self.profile.batch_size, self.generator)
        for rows in progress_bar(batches, desc=f"epoch {epoch}", unit="batch", leave=False, enabled=self.progress):
            inputs = _slice(self.tensors, rows, self.device)
            target = self.labels.index_select(0, torch.from_numpy(rows)).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.model(inputs)
            loss = focal_loss(logits.float(), target, self.weights)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.profile.clip)
            self.optimizer.step()
            if self.profile.ema:
                _ema_update(self.kept, self.model, self.profile.ema)
            total += float(loss.detach()) * len(rows)
            seen += len(rows)
        return {"train_loss": total / max(seen, 1)}

    def validate(self) -> float:
        scores = score_rows(self.kept, self.tensors, self.val, self.lengths, self.device)
        return _mean_pr_auc(self.data.labels[self.val], scores)

    def after_validation(self, metric: float) -> dict[str, float]:
        self.scheduler.step(metric)
        return {"lr": self.optimizer.param_groups[0]["lr"]}

    def state(self) -> dict:
        cuda = self.device.type == "cuda"
        return {"model": self.model.state_dict(), "averaged": self.kept.state_dict() if self.profile.ema else {},
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if cuda else []}

    def load_state(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.profile.ema:
            self.kept.load_state_dict(saved["averaged"])
        self.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if self.device.type == "cuda" and saved.get("cuda_rng"):
            torch.cuda.set_rng_state_all(saved["cuda_rng"])


def fit_neural(
    spec: DonorModelSpec, data: DonorDataset, profile: TrainProfile, checkpoint_dir: Path, progress: bool,
    seed: int = 0, epochs: int | None = None,
) -> NeuralResult:
    """Train one neural donor model with early stopping; resumes from checkpoint_dir/last.pt."""
    started = time.perf_counter()
    device = torch.device("cuda" if profile.use_gpu and torch.cuda.is_available() else "cpu")
    training = _NeuralTraining(spec, data, profile, device, seed, progress)
    signature = run_signature(
        # Not the epoch budget: a rerun with more epochs carries on where the last one stopped.
        spec=spec.to_dict(), profile={**asdict(profile), "epochs": None}, seed=seed,
        data=[len(data.donor_ids), list(data.targets), data.description["features_at"],
              hashlib.sha256(data.labels.tobytes()).hexdigest()])
    run = run_epochs(training, epochs if epochs is not None else profile.epochs, profile.patience,
                     checkpoint_dir / "last.pt", signature, spec.name, progress)
    model = training.kept.to("cpu")  # holding the best epoch's weights
    cpu, test = torch.device("cpu"), data.index(TEST)
    return NeuralResult(
        model=model, history=run.history, best_epoch=run.best_epoch,
        val_scores=score_rows(model, training.tensors, training.val, training.lengths, cpu),
        test_scores=score_rows(model, training.tensors, test, training.lengths, cpu),
        seconds=time.perf_counter() - started, resumed_from=run.resumed_from,
    )
