"""The CUDA paths of serving and training: what can be checked on the CPU is checked here,
the rest runs where a GPU is present (skipped otherwise).

Found on an H100: alert reasons failed on CUDA (cuDNN computes RNN gradients only in
training mode), cuDNN's TF32 moved CUDA scores up to 2e-4 from the CPU's, and a donor
training run resumed on CUDA failed on its RNG states (loaded onto the GPU).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from models.features.transactions import EVENT_FEATURES, F_EDGE, F_EVENT, F_NODE, F_SEQ, TransactionFeatureConfig
from models.model_store import load_fraud_model
from models.nn.precision import differentiable_rnns, exact_float32
from stream.scoring.fraud_scorer import FraudScorer
from tests.serving_helpers import untrained_fraud_artifact

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def fraud_inputs(n: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    c, rng = TransactionFeatureConfig(), np.random.default_rng(seed)
    shapes = {
        "event": (n, F_EVENT), "seq": (n, 2, c.window, F_SEQ), "node": (n, 2, F_NODE),
        "hop1": (n, 2, c.fanout1, F_NODE + F_EDGE), "hop2": (n, 2, c.fanout1, c.fanout2, F_NODE + F_EDGE),
    }
    out = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    for k in ("seq", "hop1", "hop2"):
        out[f"{k}_mask"] = (rng.random(shapes[k][:-1]) < 0.6).astype(np.float32)
    return out


def test_differentiable_rnns_switches_only_the_rnns_and_restores_eval_mode():
    model = nn.ModuleDict({"rnn": nn.GRU(3, 4), "drop": nn.Dropout(0.5), "deep": nn.LSTM(3, 4, num_layers=2)}).eval()
    with differentiable_rnns(model):
        assert model["rnn"].training and model["deep"].training  # no dropout between layers: same output
        assert not model["drop"].training
    assert not any(m.training for m in model.modules())

    with_dropout = nn.ModuleDict({"deep": nn.LSTM(3, 4, num_layers=2, dropout=0.3)}).eval()
    with differentiable_rnns(with_dropout):
        assert not with_dropout["deep"].training  # its output would change: cuDNN is switched off instead
    assert torch.backends.cudnn.enabled


def test_reasons_are_plain_gradients_and_leave_the_model_in_eval_mode(tmp_path):
    loaded = load_fraud_model(untrained_fraud_artifact(tmp_path))
    inputs = fraud_inputs()
    reasons = FraudScorer(loaded).reasons(loaded, inputs)
    assert not any(m.training for m in loaded.model.modules())

    net = loaded.model  # the same attribution, computed without the scorer
    x = {k: torch.from_numpy(v) for k, v in inputs.items()}
    x["event"].requires_grad_(True)
    net(x).sum().backward()
    expected = (x["event"].grad * (x["event"] - net.event_mean)).detach().numpy()
    first = {r.name: r.weight for r in reasons[0] if "." not in r.name}
    assert first
    for name, weight in first.items():
        assert weight == pytest.approx(float(expected[0, EVENT_FEATURES.index(name)]), abs=1e-6)


def test_exact_float32_leaves_the_cpu_alone():
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    exact_float32("cpu")
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


@pytest.mark.slow
def test_donor_training_resumes_from_a_checkpoint_read_onto_the_cpu(tmp_path, monkeypatch):
    """RNG states in a checkpoint must stay CPU tensors, whatever device trains."""
    from offline.generate.donor_world import generate_donor_world
    from offline.train.donors import train_donors

    generate_donor_world(tmp_path / "world", donors=300, seed=5, progress=False)
    train_donors(tmp_path / "world", tmp_path / "out", progress=False, epochs=1, models=["multitarget"])
    load, seen = torch.load, []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("map_location"))
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    report = train_donors(tmp_path / "world", tmp_path / "out", progress=False, epochs=2, models=["multitarget"])
    assert any("resumed from the checkpoint of epoch 1" in n for n in report["notes"])
    assert seen and all(torch.device(m) == torch.device("cpu") for m in seen)


# --- with a GPU ----------------------------------------------------------------------------------


@cuda
def test_scores_on_cuda_are_within_parity_of_the_cpu(tmp_path):
    from offline.generate.donor_world import generate_donor_world
    from offline.generate.fraud_world import generate_fraud_world
    from tributary.bench_model import (
        _copy,
        _donor_model,
        _DonorScorerAdapter,
        _fraud_model,
        _FraudScorerAdapter,
        score_all,
    )

    generate_fraud_world(tmp_path / "fw", accounts=800, days=5, seed=2, progress=False)
    generate_donor_world(tmp_path / "dw", donors=600, seed=2, progress=False)
    for (loaded, inputs, *_), adapter in (
        (_fraud_model(tmp_path / "fw", None, "fusion-gated", "quick", tmp_path), _FraudScorerAdapter),
        (_donor_model(tmp_path / "dw", None, "quick", tmp_path), _DonorScorerAdapter),
    ):
        on_cpu = score_all(adapter(_copy(loaded), torch.device("cpu")), inputs)
        on_cuda = score_all(adapter(_copy(loaded), torch.device("cuda")), inputs)
        assert np.abs(on_cuda - on_cpu).max() <= 1e-5


@cuda
def test_reasons_on_cuda_equal_the_reasons_on_the_cpu(tmp_path):
    path = untrained_fraud_artifact(tmp_path)
    inputs = fraud_inputs(8)
    on_cpu, on_cuda = (FraudScorer(loaded, device).reasons(loaded, inputs)
                       for loaded, device in ((load_fraud_model(path), "cpu"), (load_fraud_model(path), "cuda")))
    on_cpu, on_cuda = list(on_cpu), list(on_cuda)
    assert [[r.name for r in row] for row in on_cuda] == [[r.name for r in row] for row in on_cpu]
    assert max(abs(a.weight - b.weight) for x, y in zip(on_cpu, on_cuda) for a, b in zip(x, y)) < 1e-4


@cuda
def test_donor_training_on_cuda_resumes_and_keeps_lstm_weights_packed(tmp_path, monkeypatch):
    from offline.generate.donor_world import generate_donor_world
    from offline.train import donors

    monkeypatch.setitem(donors.PROFILES, "gpu", replace(donors.PROFILES["quick"], name="gpu", use_gpu=True))
    generate_donor_world(tmp_path / "world", donors=400, seed=5, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        donors.train_donors(tmp_path / "world", tmp_path / "out", "gpu", False, epochs=1, models=["multitarget"])
        report = donors.train_donors(tmp_path / "world", tmp_path / "out", "gpu", False, epochs=2, models=["multitarget"])
    assert any("resumed from the checkpoint of epoch 1" in n for n in report["notes"])
    assert not [w for w in caught if "contiguous chunk of memory" in str(w.message)]
