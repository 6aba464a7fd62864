"""Encoders of an account's recent transactions (a right-aligned, masked window).

Each takes windows [N, W, F] with a mask [N, W] and returns [N, out_dim]. The mask is
also fed as an input channel, so padding is never mistaken for a transaction of zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.nn.masked import masked_softmax


class BiLSTMAttention(nn.Module):
    """Bidirectional LSTM, then additive attention pooling over valid positions.

    Args:
        in_dim: features per window entry. hidden: LSTM units per direction.
    Shapes: x [N, W, in_dim], mask [N, W] -> [N, 2 * hidden]
    """

    def __init__(self, in_dim: int, hidden: int = 32):
        super().__init__()
        self.in_dim, self.hidden = in_dim, hidden
        self.out_dim = 2 * hidden
        self.lstm = nn.LSTM(in_dim + 1, hidden, batch_first=True, bidirectional=True)
        self.score = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        states, _ = self.lstm(torch.cat([x, mask.unsqueeze(-1)], dim=-1))
        weights = masked_softmax(self.score(states).squeeze(-1), mask)
        return (weights.unsqueeze(-1) * states).sum(1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_dim}, hidden={self.hidden})"


class LSTMCNN(nn.Module):
    """1-D convolutions pick local motifs (bursts, round trips), an LSTM reads their order.

    Shapes: x [N, W, in_dim], mask [N, W] -> [N, hidden]
    """

    def __init__(self, in_dim: int, hidden: int = 32, channels: int = 32, kernel: int = 3):
        super().__init__()
        self.in_dim, self.hidden = in_dim, hidden
        self.out_dim = hidden
        self.conv = nn.Sequential(
            nn.Conv1d(in_dim + 1, channels, kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel, padding=kernel // 2),
            nn.ReLU(),
        )
        self.lstm = nn.LSTM(channels, hidden, batch_first=True)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        z = torch.cat([x, mask.unsqueeze(-1)], dim=-1).transpose(1, 2)
        z = (self.conv(z) * mask.unsqueeze(1)).transpose(1, 2)
        _, (h, _) = self.lstm(z)
        return h[-1]  # windows are right-aligned: the last step is the newest transaction

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_dim}, hidden={self.hidden})"


class GRUEncoder(nn.Module):
    """A GRU whose final state summarises the window (newest transaction last).

    Shapes: x [N, W, in_dim], mask [N, W] -> [N, hidden]
    """

    def __init__(self, in_dim: int, hidden: int = 32):
        super().__init__()
        self.in_dim, self.hidden = in_dim, hidden
        self.out_dim = hidden
        self.gru = nn.GRU(in_dim + 1, hidden, batch_first=True)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        _, h = self.gru(torch.cat([x, mask.unsqueeze(-1)], dim=-1))
        return h[-1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_dim}, hidden={self.hidden})"


SEQUENCE_ENCODERS = {"bilstm": BiLSTMAttention, "lstm-cnn": LSTMCNN, "gru": GRUEncoder}


def sequence_encoder(name: str, in_dim: int, hidden: int) -> nn.Module:
    try:
        return SEQUENCE_ENCODERS[name](in_dim, hidden)
    except KeyError:
        raise ValueError(f"unknown sequence encoder {name!r}; valid: {', '.join(SEQUENCE_ENCODERS)}") from None
