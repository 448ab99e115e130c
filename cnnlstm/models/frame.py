"""Frame CNN -> RNN for image sequences (video, thermal cameras, spectrogram frames)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlstm.models.config import ModelConfig
from cnnlstm.models.layers import Head, SeqEncoder, masked_mean
from cnnlstm.models.serial import _numel


class FrameCNNRNN(nn.Module):
    """x (B, T, C, H, W) -> frames folded into the batch (B*T, C, H, W) -> 2-D conv stack ->
    global average (B*T, F) -> (B, T, F) -> RNN over T (lengths = valid frames) -> head."""

    def __init__(self, cfg: ModelConfig, n_channels: int, out_shape: tuple[int, ...]):
        super().__init__()
        self.out_shape = out_shape
        k = cfg.frame.kernel_size
        chans = [n_channels, *cfg.frame.channels]
        layers: list[nn.Module] = []
        for i in range(len(chans) - 1):
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], k, padding=k // 2, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
        self.cnn = nn.Sequential(*layers)
        self.rnn = SeqEncoder(chans[-1], cfg.rnn, cfg.pooling)
        self.head = Head(self.rnn.out_dim, _numel(out_shape), cfg.head)

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"arch=frame expects x of shape (B, T, C, H, W), got {tuple(x.shape)}")
        B, T = x.shape[:2]
        f = self.cnn(x.flatten(0, 1))  # (B*T, F, h, w)
        return F.adaptive_avg_pool2d(f, 1).flatten(1).view(B, T, -1)  # (B, T, F)

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return masked_mean(self._frames(x), lengths, dim=1)  # (B, F)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        z = self.rnn(self._frames(x), lengths)  # (B, D)
        return self.head(z).view(-1, *self.out_shape)
