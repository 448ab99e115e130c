"""Serial CNN -> RNN (the main mode) and its sub-sequence layout. Architecture only."""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnlstm.models.config import ModelConfig
from cnnlstm.models.layers import ConvStack, Head, SeqEncoder, masked_mean


class SerialCNNRNN(nn.Module):
    """x (B, C, L) -> conv stack (B, F, L') -> RNN over L' steps -> pooled (B, D) -> head."""

    def __init__(self, cfg: ModelConfig, n_channels: int, out_shape: tuple[int, ...]):
        super().__init__()
        self.out_shape = out_shape
        self.cnn = ConvStack(n_channels, cfg.conv)
        self.rnn = SeqEncoder(self.cnn.out_channels, cfg.rnn, cfg.pooling)
        self.head = Head(self.rnn.out_dim, _numel(out_shape), cfg.head)

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """CNN features averaged over time: (B, F) (for t-SNE/PCA plots)."""
        f, ln = self.cnn(x, lengths)
        return masked_mean(f, ln, dim=2)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        f, ln = self.cnn(x, lengths)  # (B, F, L')
        z = self.rnn(f.transpose(1, 2), ln)  # (B, L', F) -> (B, D)
        return self.head(z).view(-1, *self.out_shape)  # (B, *out_shape)


class SubseqCNNRNN(nn.Module):
    """x (B, C, L) -> S sub-sequences of L/S samples folded into the batch (B*S, C, L/S) -> the
    same conv stack on each -> mean over time (B*S, F) -> (B, S, F) -> RNN over S -> head."""

    def __init__(self, cfg: ModelConfig, n_channels: int, out_shape: tuple[int, ...]):
        super().__init__()
        self.out_shape = out_shape
        self.S = cfg.n_subsequences
        self.cnn = ConvStack(n_channels, cfg.conv)
        self.rnn = SeqEncoder(self.cnn.out_channels, cfg.rnn, cfg.pooling)
        self.head = Head(self.rnn.out_dim, _numel(out_shape), cfg.head)

    def _fold(self, x, lengths):
        B, C, L = x.shape
        if L % self.S:
            raise ValueError(f"model.n_subsequences={self.S} must divide the window size {L}")
        sub = L // self.S
        xs = x.view(B, C, self.S, sub).permute(0, 2, 1, 3).reshape(B * self.S, C, sub)
        if lengths is None:
            return xs, None, None, sub
        offs = torch.arange(self.S, device=lengths.device) * sub  # (S,)
        sub_len = (lengths[:, None] - offs[None, :]).clamp(1, sub).reshape(-1)  # (B*S,)
        n_sub = (lengths + sub - 1) // sub  # (B,) sub-sequences holding data
        return xs, sub_len, n_sub, sub

    def _sub_features(self, x, lengths):
        B = x.shape[0]
        xs, sub_len, n_sub, _ = self._fold(x, lengths)
        f, ln = self.cnn(xs, sub_len)  # (B*S, F, l')
        return masked_mean(f, ln, dim=2).view(B, self.S, -1), n_sub  # (B, S, F)

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        f, n_sub = self._sub_features(x, lengths)
        return masked_mean(f, n_sub, dim=1)  # (B, F)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        f, n_sub = self._sub_features(x, lengths)  # (B, S, F)
        z = self.rnn(f, n_sub)  # (B, D)
        return self.head(z).view(-1, *self.out_shape)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
