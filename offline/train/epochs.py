"""The one training loop: epochs, validation, early stopping, signed checkpoints, resuming.

Both trainers (the fraud models, offline/train/loop.py; the donor models,
offline/train/donor_neural.py) run their epochs here and plug in what differs: how an
epoch trains (batching, loss, scheduler steps, weight averaging), how a model is
validated (higher is better), and what else a checkpoint must hold (optimizer,
scheduler, random generators). After every epoch the checkpoint is written whole (to a
temporary name, then renamed); a rerun resumes from it only when it carries the
signature of the same run (offline.train.common.run_signature), and the epoch budget
is not part of it: a rerun with more epochs carries on where the last one stopped.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm


class EpochTraining(Protocol):
    """What a trainer plugs into the loop."""

    kept: nn.Module  # the module whose best validation state is kept (the averaged one, if any)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch (1-based); what to record of it (at least train_loss)."""

    def validate(self) -> float:
        """The validation metric of `kept` now; higher is better, NaN counts as the worst."""

    def after_validation(self, metric: float) -> dict[str, float]:
        """React to the epoch's metric (a plateau scheduler); more to record."""

    def state(self) -> dict[str, Any]:
        """What else the checkpoint must hold to resume exactly (optimizer, scheduler, RNGs)."""

    def load_state(self, saved: dict[str, Any]) -> None: ...


@dataclass
class Run:
    """Where a run stands; what a checkpoint holds besides the trainer's own state."""

    history: list[dict] = field(default_factory=list)
    best_metric: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    epoch: int = 0  # the last completed epoch
    stopped: bool = False  # stopped early
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    resumed_from: int | None = None


def run_epochs(training: EpochTraining, epochs: int, patience: int, checkpoint: Path | None, signature: str,
               label: str, progress: bool, say: Callable[[str], None] | None = None) -> Run:
    """Train up to `epochs` epochs, stopping after `patience` epochs without a better
    metric; leaves `training.kept` holding the best epoch's weights."""
    say = say or (lambda text: tqdm.write(text, file=sys.stderr))
    run = Run(best_state=copy.deepcopy(training.kept.state_dict()))
    saved = _resumable(checkpoint, signature, label, say)
    if saved is not None:
        training.load_state(saved)
        run = Run(saved["history"], saved["best_metric"], saved["best_epoch"], saved["bad_epochs"], saved["epoch"],
                  saved["stopped"], saved["best_state"], resumed_from=saved["epoch"])
    for epoch in range(run.epoch + 1, epochs + 1):
        if run.stopped:
            break
        began = time.monotonic()
        record = {"epoch": epoch, **training.train_epoch(epoch)}
        metric = training.validate()
        metric = -math.inf if math.isnan(metric) else metric
        record["val_pr_auc"] = metric if math.isfinite(metric) else math.nan
        record.update(training.after_validation(metric))
        record["seconds"] = round(time.monotonic() - began, 2)
        run.history.append(record)
        if metric > run.best_metric:
            run.best_metric, run.best_epoch, run.bad_epochs = metric, epoch, 0
            run.best_state = copy.deepcopy(training.kept.state_dict())
        else:
            run.bad_epochs += 1
        run.epoch, run.stopped = epoch, run.bad_epochs >= patience
        if progress:
            say(f"{label}: epoch {epoch} loss {record['train_loss']:.4f} val PR-AUC {metric:.4f}"
                f"{' (best)' if run.best_epoch == epoch else ''}")
        if checkpoint is not None:
            _save(checkpoint, signature, run, training.state())
    training.kept.load_state_dict(run.best_state)
    return run


def _resumable(checkpoint: Path | None, signature: str, label: str, say: Callable[[str], None]) -> dict | None:
    if checkpoint is None or not checkpoint.exists():
        return None
    # Onto the CPU, whatever the training device: RNG states must stay CPU tensors, and
    # load_state_dict moves weights and optimizer state to the model's device.
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if saved.get("signature") != signature:
        say(f"{label}: {checkpoint} is the checkpoint of another run (model, settings or data differ); "
            "training from the start")
        return None
    return saved


def _save(checkpoint: Path, signature: str, run: Run, state: dict[str, Any]) -> None:
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    partial = checkpoint.with_suffix(".tmp")
    torch.save({"signature": signature, "history": run.history, "best_metric": run.best_metric,
                "best_epoch": run.best_epoch, "bad_epochs": run.bad_epochs, "epoch": run.epoch,
                "stopped": run.stopped, "best_state": run.best_state, **state}, partial)
    partial.replace(checkpoint)  # a crash mid-write leaves the previous checkpoint
