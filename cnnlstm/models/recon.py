"""Reconstruction model of the CNN -> RNN family (unsupervised anomaly detection). Architecture
only: the anomaly task scores a window by how badly it is reconstructed."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlstm.models.config import ModelConfig
from cnnlstm.models.layers import ConvStack, time_mask


class ReconCNNRNN(nn.Module):
    """x (B, C, L) -> conv stack (B, F, L') -> RNN over L' steps (B, L', H) -> per-step linear
    (B, L', F) -> upsampled to L (B, F, L) -> 1x1 conv -> reconstruction (B, C, L).

    The pooled conv stack and the RNN's hidden size are the bottleneck: what recurs in normal
    windows is reconstructed, what does not (spikes, bursts, stuck sensors) is not."""

    def __init__(self, cfg: ModelConfig, n_channels: int):
        super().__init__()
        self.cnn = ConvStack(n_channels, cfg.conv)
        r = cfg.rnn
        cell = nn.LSTM if r.cell == "lstm" else nn.GRU
        self.rnn = cell(
            self.cnn.out_channels,
            r.hidden_size,
            num_layers=r.num_layers,
            batch_first=True,
            bidirectional=r.bidirectional,
            dropout=r.dropout if r.num_layers > 1 else 0.0,
        )
        d = r.hidden_size * (2 if r.bidirectional else 1)
        self.head = nn.Linear(d, self.cnn.out_channels)
        self.out = nn.Conv1d(self.cnn.out_channels, n_channels, 1)

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        f, _ = self.cnn(x, lengths)
        return f.mean(2)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        L = x.shape[-1]
        f, _ = self.cnn(x, lengths)  # (B, F, L')
        h, _ = self.rnn(f.transpose(1, 2))  # (B, L', H)
        z = self.head(h).transpose(1, 2)  # (B, F, L')
        z = F.interpolate(z, size=L, mode="linear", align_corners=False)  # (B, F, L)
        rec = self.out(F.relu(z))  # (B, C, L)
        if lengths is not None:
            rec = rec * time_mask(lengths, L)[:, None, :]
        return rec


def window_error(rec: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Mean squared reconstruction error per window over its valid samples: (B,)."""
    se = (rec.float() - x.float()) ** 2  # (B, C, L)
    if lengths is None:
        return se.mean((1, 2))
    m = time_mask(lengths, x.shape[-1])[:, None, :].to(se.dtype)
    return (se * m).sum((1, 2)) / (m.sum((1, 2)) * x.shape[1]).clamp(min=1)
