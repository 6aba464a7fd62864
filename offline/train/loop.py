"""Training a binary scorer on in-memory arrays: focal loss, AdamW, warm restarts, early stopping.

Written for imbalanced problems: the loss is focal (down-weights easy negatives) with a
class weight, model selection uses validation PR-AUC (accuracy and ROC-AUC flatter
rare-class models), and the best epoch's weights are kept, not the last. Training can
resume from the checkpoint written after every epoch.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch import Tensor, nn
from tqdm import tqdm

from offline.train.common import focal_terms, run_signature


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
def predict(model: nn.Module, arrays: dict[str, np.ndarray], batch_size: int = 2048,
            device: torch.device | None = None) -> np.ndarray:
    """Probabilities for every row of `arrays`, in order (eval mode)."""
    device = device or next(model.parameters()).device
    model.eval()
    n = len(next(iter(arrays.values())))
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, batch_size):
        index = slice(start, min(start + batch_size, n))
        out[index] = torch.sigmoid(model(to_tensors(arrays, index, device))).float().cpu().numpy()
    return out


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
    device = next(model.parameters()).device
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=max(1, config.restart_epochs))
    use_amp = device.type == "cuda"  # mixed precision pays off on GPUs only
    history: list[dict] = []
    best_score, best_state, stale, start_epoch = -math.inf, copy.deepcopy(model.state_dict()), 0, 0

    # Not the epoch budget: a rerun with more epochs carries on where the last one stopped.
    signature = run_signature(config={**config.to_dict(), "epochs": None}, label=label,
                              shapes={name: list(p.shape) for name, p in model.state_dict().items()},
                              data=[len(y_train), int(y_train.sum()), len(y_val), int(y_val.sum())])
    saved = torch.load(checkpoint, map_location=device, weights_only=True) if checkpoint and checkpoint.exists() else None
    if saved is not None and saved.get("signature") != signature:
        tqdm.write(f"{label}: {checkpoint} is the checkpoint of another run (model, settings or data differ); "
                   "training from the start", file=sys.stderr)
        saved = None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        history, best_score, stale = saved["history"], saved["best_score"], saved["stale"]
        best_state, start_epoch = saved["best_state"], saved["epoch"] + 1
        rng = np.random.default_rng([config.seed, start_epoch])

    y_train_t = y_train.astype(np.float32)
    n = len(y_train_t)
    steps = math.ceil(n / config.batch_size)
    for epoch in range(start_epoch, config.epochs):
        if stale >= config.patience:
            break
        started = time.monotonic()
        model.train()
        order = rng.permutation(n)
        total = 0.0
        bar = tqdm(range(steps), desc=f"{label} epoch {epoch + 1}/{config.epochs}", unit="batch",
                   disable=not progress, leave=False, file=sys.stderr)
        for step in bar:
            index = order[step * config.batch_size:(step + 1) * config.batch_size]
            inputs = to_tensors(train, index, device)
            target = torch.from_numpy(y_train_t[index]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(inputs)
            loss = focal_terms(logits.float(), target, config.focal_alpha, config.focal_gamma).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            scheduler.step(epoch + step / steps)
            total += loss.item() * len(index)
        val_scores = predict(model, val, device=device)
        val_pr_auc = float(average_precision_score(y_val, val_scores)) if y_val.any() else 0.0
        history.append({"epoch": epoch + 1, "train_loss": total / n, "val_pr_auc": val_pr_auc,
                        "seconds": round(time.monotonic() - started, 2)})
        if val_pr_auc > best_score:
            best_score, best_state, stale = val_pr_auc, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        if progress:
            tqdm.write(f"{label}: epoch {epoch + 1} loss {total / n:.4f} val PR-AUC {val_pr_auc:.4f}"
                       f"{' (best)' if stale == 0 else ''}", file=sys.stderr)
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"signature": signature, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "history": history, "best_score": best_score,
                        "stale": stale, "best_state": best_state, "epoch": epoch}, checkpoint)
    model.load_state_dict(best_state)
    return history
