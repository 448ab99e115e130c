"""Frame CNN -> RNN for image sequences (video, thermal arrays, spectrogram frames)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlstm.models.config import ModelConfig
from cnnlstm.models.layers import Head, SeqEncoder, masked_mean
from cnnlstm.models.serial import _numel


class FrameCNNRNN(nn.Module):
    """Windows x (B, C, L) whose C channels are the pixels of one frame per time step (C =
    planes * height * width, `FrameConfig`) -> frames (B, L, planes, H, W) -> folded into the
    batch (B*L, planes, H, W) -> 2-D conv stack -> global average (B*L, F) -> (B, L, F) -> RNN
    over time (lengths = valid frames) -> head. A (B, T, planes, H, W) tensor is taken as it is.
    Padded frames change nothing: each frame is convolved on its own, and the RNN and the
    pooling read only the valid ones."""

    def __init__(self, cfg: ModelConfig, n_channels: int, out_shape: tuple[int, ...]):
        super().__init__()
        self.out_shape = out_shape
        h, w = cfg.frame.height, cfg.frame.width
        if h is None or w is None:
            raise ValueError("model.arch frame needs model.frame.height and model.frame.width")
        if n_channels % (h * w):
            raise ValueError(
                f"model.arch frame: {n_channels} input channels are not whole frames of "
                f"model.frame.height x width = {h} x {w} pixels (a multiple of {h * w})"
            )
        self.frame_shape = (n_channels // (h * w), h, w)  # (planes, H, W)
        k = cfg.frame.kernel_size
        chans = [self.frame_shape[0], *cfg.frame.channels]
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

    def clips(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, L) windows -> (B, L, planes, H, W) frames; 5-D input is checked and kept."""
        if x.ndim == 3 and x.shape[1] == _numel(self.frame_shape):
            B, _, L = x.shape
            return x.transpose(1, 2).reshape(B, L, *self.frame_shape)
        if x.ndim == 5 and tuple(x.shape[2:]) == self.frame_shape:
            return x
        p, h, w = self.frame_shape
        raise ValueError(
            f"arch=frame expects windows (B, {p * h * w}, L) or frames (B, T, {p}, {h}, {w}), "
            f"got {tuple(x.shape)}"
        )

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        x = self.clips(x)
        B, T = x.shape[:2]
        f = self.cnn(x.flatten(0, 1))  # (B*T, F, h, w)
        return F.adaptive_avg_pool2d(f, 1).flatten(1).view(B, T, -1)  # (B, T, F)

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return masked_mean(self._frames(x), lengths, dim=1)  # (B, F)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        z = self.rnn(self._frames(x), lengths)  # (B, D)
        return self.head(z).view(-1, *self.out_shape)
