"""Parallel (multimodal) fusion: a CNN branch and an RNN branch, fused by concat or attention."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlstm.models.config import ModelConfig
from cnnlstm.models.layers import ConvStack, Head, SeqEncoder, masked_mean
from cnnlstm.models.serial import _numel


class ParallelCNNRNN(nn.Module):
    """CNN branch: x (B, C1, L) -> conv stack -> mean over time (B, F).
    RNN branch: x2 (B, C2, L2) -> (B, L2, C2) -> RNN -> pooled (B, D). When x2 is not given it is
    a channel subset of x, average-pooled by `rnn_downsample` (a lower-rate view of the stream).
    Fusion: concat -> (B, F + D); attention -> both projected to (B, 2, d), softmax-weighted sum
    (B, d). Then the head."""

    def __init__(
        self,
        cfg: ModelConfig,
        n_channels: int,
        out_shape: tuple[int, ...],
        n_channels2: int | None = None,
    ):
        super().__init__()
        p = cfg.parallel
        self.out_shape = out_shape
        for name, idx in (("cnn_inputs", p.cnn_inputs), ("rnn_inputs", p.rnn_inputs)):
            if idx is not None and (not idx or max(idx) >= n_channels or min(idx) < 0):
                raise ValueError(
                    f"model.parallel.{name} {idx} out of range for {n_channels} channels"
                )
        self.register_buffer(
            "cnn_idx", torch.tensor(p.cnn_inputs or range(n_channels)), persistent=False
        )
        self.register_buffer(
            "rnn_idx", torch.tensor(p.rnn_inputs or range(n_channels)), persistent=False
        )
        self.down = p.rnn_downsample
        c2 = n_channels2 if n_channels2 is not None else len(self.rnn_idx)
        self.cnn = ConvStack(len(self.cnn_idx), cfg.conv)
        self.rnn = SeqEncoder(c2, cfg.rnn, cfg.pooling)
        self.fusion_kind = p.fusion
        d_cnn, d_rnn = self.cnn.out_channels, self.rnn.out_dim
        if p.fusion == "attention":
            self.proj_cnn = nn.Linear(d_cnn, p.fusion_dim)
            self.proj_rnn = nn.Linear(d_rnn, p.fusion_dim)
            self.fuse_score = nn.Sequential(
                nn.Linear(p.fusion_dim, p.fusion_dim),
                nn.Tanh(),
                nn.Linear(p.fusion_dim, 1, bias=False),
            )
            d = p.fusion_dim
        else:
            d = d_cnn + d_rnn
        self.head = Head(d, _numel(out_shape), cfg.head)

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        f, ln = self.cnn(x.index_select(1, self.cnn_idx), lengths)
        return masked_mean(f, ln, dim=2)  # (B, F)

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        x2: torch.Tensor | None = None,
        lengths2: torch.Tensor | None = None,
    ):
        a = self.features(x, lengths)  # (B, F)
        if x2 is None:
            x2, lengths2 = x.index_select(1, self.rnn_idx), lengths  # (B, C2, L)
            if self.down > 1 and x2.shape[-1] >= self.down:
                x2 = F.avg_pool1d(x2, self.down)  # (B, C2, L // down)
                if lengths2 is not None:
                    lengths2 = torch.clamp(lengths2 // self.down, min=1)
        b = self.rnn(x2.transpose(1, 2), lengths2)  # (B, D)
        if self.fusion_kind == "attention":
            tok = torch.stack([self.proj_cnn(a), self.proj_rnn(b)], dim=1)  # (B, 2, d)
            w = torch.softmax(self.fuse_score(tok).squeeze(-1), dim=1)  # (B, 2)
            z = torch.einsum("bm,bmd->bd", w, tok)  # (B, d)
        else:
            z = torch.cat([a, b], dim=1)  # (B, F + D)
        return self.head(z).view(-1, *self.out_shape)
