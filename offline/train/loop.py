"""Training a binary scorer on in-memory arrays: focal loss, AdamW, warm restarts, early stopping.

Written for imbalanced problems: the loss is focal (down-weights easy negatives) with a
class weight, model selection uses validation PR-AUC (accuracy and ROC-AUC flatter
rare-class models), and the best epoch's weights are kept, not the last. Training can
resume from the checkpoint written after every epoch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch import Tensor, nn

from models.gbdt import GbdtFraudModel
from models.hybrid import HybridFraudModel
from models.progress import progress as progress_bar
from offline.train.common import focal_terms, run_signature
from offline.train.epochs import run_epochs


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 8
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 3  # epochs without a better validation PR-AUC before stopping
    focal_alpha: float = 0.75  # weight of the positive class
    focal_gamma: float = 2.0
    clip_norm: float = 1.0
    restart_epochs: int = 4  # cosine annealing period before the first warm restart
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def to_tensors(arrays: dict[str, np.ndarray], index, device: torch.device) -> dict[str, Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v[index])).to(device, non_blocking=True) for k, v in arrays.items()}


@torch.inference_mode()
def predict(model: nn.Module | GbdtFraudModel | HybridFraudModel, arrays: dict[str, np.ndarray],
            batch_size: int = 2048, device: torch.device | None = None) -> np.ndarray:
    """Probabilities for every row of `arrays`, in order (eval mode); a tree model scores
    them as the worker does (models.gbdt), a hybrid blends its two components' scores."""
    if isinstance(model, GbdtFraudModel):
        return model.predict(arrays)
    if isinstance(model, HybridFraudModel):
        return model.combine(model.trees.predict(arrays), predict(model.net, arrays, batch_size, device))
    device = device or next(model.parameters()).device
    model.eval()
    n = len(next(iter(arrays.values())))
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, batch_size):
        index = slice(start, min(start + batch_size, n))
        out[index] = torch.sigmoid(model(to_tensors(arrays, index, device))).float().cpu().numpy()
    return out


class _BinaryTraining:
    """One epoch of the fraud models' training, for offline.train.epochs."""

    def __init__(self, model: nn.Module, train: dict[str, np.ndarray], y_train: np.ndarray,
                 val: dict[str, np.ndarray], y_val: np.ndarray, config: FitConfig, progress: bool, label: str):
        self.kept = self.model = model
        self.device = next(model.parameters()).device
        self.train, self.y_train = train, y_train.astype(np.float32)
        self.val, self.y_val = val, y_val
        self.config, self.progress, self.label = config, progress, label
        self.rng = np.random.default_rng(config.seed)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            self.optimizer, T_0=max(1, config.restart_epochs))
        self.amp = self.device.type == "cuda"  # mixed precision pays off on GPUs only

    def train_epoch(self, epoch: int) -> dict[str, float]:
        config, n = self.config, len(self.y_train)
        steps = math.ceil(n / config.batch_size)
        self.model.train()
        order = self.rng.permutation(n)
        total = 0.0
        bar = progress_bar(range(steps), desc=f"{self.label} epoch {epoch}/{config.epochs}", unit="batch",
                           enabled=self.progress, leave=False)
        for step in bar:
            index = order[step * config.batch_size:(step + 1) * config.batch_size]
            inputs = to_tensors(self.train, index, self.device)
            target = torch.from_numpy(self.y_train[index]).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.model(inputs)
            loss = focal_terms(logits.float(), target, config.focal_alpha, config.focal_gamma).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_norm)
            self.optimizer.step()
            self.scheduler.step(epoch - 1 + step / steps)
            total += loss.item() * len(index)
        return {"train_loss": total / n}

    def validate(self) -> float:
        scores = predict(self.model, self.val, device=self.device)
        return float(average_precision_score(self.y_val, scores)) if self.y_val.any() else 0.0

    def after_validation(self, metric: float) -> dict[str, float]:
        return {}

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": self.rng.bit_generator.state}

    def load_state(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.rng.bit_generator.state = saved["rng"]


def fit_binary(
    model: nn.Module,
    train: dict[str, np.ndarray],
    y_train: np.ndarray,
    val: dict[str, np.ndarray],
    y_val: np.ndarray,
    config: FitConfig,
    checkpoint: Path | None = None,
    progress: bool = True,
    label: str = "model",
) -> list[dict]:
    """Train `model` in place; leaves it holding the best validation epoch's weights.

    Returns the history: one dict per epoch with train_loss, val_pr_auc and seconds.
    If `checkpoint` holds this run (same model shape, settings and data), training
    resumes after its last completed epoch; a checkpoint of another run is not used.
    """
    torch.manual_seed(config.seed)
    training = _BinaryTraining(model, train, y_train, val, y_val, config, progress, label)
    # Not the epoch budget: a rerun with more epochs carries on where the last one stopped.
    signature = run_signature(config={**config.to_dict(), "epochs": None}, label=label,
                              shapes={name: list(p.shape) for name, p in model.state_dict().items()},
                              data=[len(y_train), int(y_train.sum()), len(y_val), int(y_val.sum())])
    return run_epochs(training, config.epochs, config.patience, checkpoint, signature, label, progress).history
