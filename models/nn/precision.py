"""Numerics that serving on a GPU must share with the CPU.

On CUDA, torch lets cuDNN use TF32 (a 10-bit mantissa) for float32 RNNs and
convolutions by default. Measured on an H100 with the served models, that moves scores
by up to ~6e-5 (fraud) and ~2e-4 (donors) from the CPU's, more than the 1e-5 parity the
worker promises against offline scoring; with TF32 off the difference is below 2e-6.
The models are small, so exact float32 costs nothing noticeable.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def exact_float32(device: torch.device | str) -> None:
    """On CUDA, make float32 mean float32 for this process: no TF32 in cuDNN or in matmuls.

    Process-wide (torch's switches are global); a no-op on the CPU.
    """
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


@contextmanager
def differentiable_rnns(model: nn.Module):
    """Let gradients flow through the model's RNNs while it stays in eval mode.

    cuDNN computes an RNN's backward pass only in training mode ("cudnn RNN backward can
    only be called in training mode"). An RNN without dropout between layers computes
    exactly the same in either mode, so those RNNs are switched to training mode for the
    block and back afterwards; the rest of the model (dropout, batch norm) stays in eval
    mode. Should an RNN have active inter-layer dropout, cuDNN is switched off instead.
    """
    rnns = [m for m in model.modules() if isinstance(m, nn.RNNBase) and not m.training]
    if any(m.dropout > 0 and m.num_layers > 1 for m in rnns):
        with torch.backends.cudnn.flags(enabled=False):
            yield
        return
    for m in rnns:
        m.train()
    try:
        yield
    finally:
        for m in rnns:
            m.eval()
