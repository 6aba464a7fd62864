"""The BiLSTM encoder's inference path skips padding; it must give what the full window gives."""

from __future__ import annotations

import pytest
import torch

from models.nn.sequence import BiLSTMAttention

W, F = 50, 12


def windows(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-aligned windows (newest last) with the given numbers of transactions; padding is zeros."""
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.arange(W) >= W - torch.tensor(lengths).unsqueeze(1)).float()
    x = torch.randn(len(lengths), W, F, generator=generator) * mask.unsqueeze(-1)
    return x, mask


def full_window(encoder: BiLSTMAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    states, _ = encoder.lstm(torch.cat([x, mask.unsqueeze(-1)], dim=-1))
    return encoder._pool(states, mask)


def encoder(seed: int = 1) -> BiLSTMAttention:
    torch.manual_seed(seed)
    model = BiLSTMAttention(F, hidden=32).eval()
    with torch.no_grad():  # biases far from zero, so padding steps really move the state
        model.lstm.bias_ih_l0.add_(0.5)
    return model


def test_trimmed_inference_equals_the_full_window_for_every_length():
    model = encoder()
    x, mask = windows(list(range(W + 1)) * 3)
    with torch.inference_mode():
        assert model._forward_trimmed(x, mask) is not None
        fast = model(x, mask)
        slow = full_window(model, x, mask)
    assert (fast - slow).abs().max().item() <= 1e-6
    assert torch.all(fast[0] == 0) and torch.any(slow[1] != 0)  # no transactions: zero weights, zero output


def test_a_window_gets_the_same_encoding_whatever_batch_it_is_in():
    model = encoder()
    x, mask = windows([3, 17, 50, 0, 9, 33, 1], seed=2)
    with torch.inference_mode():
        together = model(x, mask)
        alone = torch.cat([model(x[i:i + 1], mask[i:i + 1]) for i in range(len(x))])
    assert (together - alone).abs().max().item() <= 1e-6


def test_masks_that_are_not_a_right_aligned_run_take_the_full_path():
    model = encoder()
    x, mask = windows([5, 12])
    mask[0, W - 3] = 0  # a hole inside the run
    with torch.inference_mode():
        assert model._forward_trimmed(x, mask) is None
        assert torch.equal(model(x, mask), full_window(model, x, mask))


def test_the_padding_states_follow_weight_updates():
    model = encoder()
    x, mask = windows([4, 20, 0, 50], seed=3)
    with torch.inference_mode():
        before = model(x, mask)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    full_window(model, x, mask).sum().backward()
    optimiser.step()  # in place, as in training between two validation passes
    model.eval()
    with torch.inference_mode():
        after = model(x, mask)
        expected = full_window(model, x, mask)
    assert (after - before).abs().max().item() > 1e-3
    assert (after - expected).abs().max().item() <= 1e-6


def test_training_and_gradients_use_the_full_window():
    model = encoder().train()
    x, mask = windows([4, 20])
    model._forward_trimmed = None  # would raise if called
    model(x, mask).sum().backward()
    assert model.lstm.weight_hh_l0.grad is not None


def test_on_a_gpu_the_full_window_is_used(monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = encoder().to("cuda")
    monkeypatch.setattr(model, "_forward_trimmed", None)  # would raise if called
    x, mask = windows([3, 50])
    with torch.inference_mode():
        assert model(x.cuda(), mask.cuda()).shape == (2, 64)
