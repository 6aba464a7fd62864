"""The fraud training loop resumes only from a checkpoint of the same run."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from offline.train.loop import FitConfig, fit_binary


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, inputs):
        return self.linear(inputs["x"]).squeeze(-1)


def data(seed=0, n=200):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return {"x": x}, (x[:, 0] > 0.5)


def fit(checkpoint, epochs, lr=1e-2, seed=0):
    torch.manual_seed(0)
    (train, y_train), (val, y_val) = data(seed), data(seed + 1)
    history = fit_binary(Tiny(), train, y_train, val, y_val, FitConfig(epochs=epochs, lr=lr, patience=10),
                      checkpoint, progress=False, label="tiny")
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_a_rerun_with_more_epochs_resumes_its_own_checkpoint(tmp_path):
    checkpoint = tmp_path / "tiny.pt"
    assert [h["epoch"] for h in fit(checkpoint, epochs=2)] == [1, 2]
    assert [h["epoch"] for h in fit(checkpoint, epochs=4)] == [1, 2, 3, 4]  # epochs 1-2 from the checkpoint


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path):
    for other in ({"lr": 1e-3}, {"seed": 5}):  # other settings, other data
        checkpoint = tmp_path / f"tiny-{list(other)[0]}.pt"
        base = fit(checkpoint, epochs=2)
        rerun = fit(checkpoint, epochs=2, **other)
        # Resumed, it would have nothing left to train and return the base run's history.
        assert [h["train_loss"] for h in rerun] != [h["train_loss"] for h in base], other
        assert rerun == fit(tmp_path / f"fresh-{list(other)[0]}.pt", epochs=2, **other)  # as from the start
