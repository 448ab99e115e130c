"""Building blocks shared by the architectures: a masked 1-D conv stack, an RNN sequence encoder
with last/mean/attention pooling, and the output head.

Padding contract: positions at or beyond ``lengths`` are zero on input and are re-zeroed after
every conv block, so (in eval mode) a padded window gives exactly the output of the unpadded one;
the RNN reads packed sequences.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cnnlstm.models.config import ConvConfig, HeadConfig, RNNConfig


def time_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]  # (B, T)


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, dilation: int, cfg: ConvConfig):
        super().__init__()
        pad = dilation * (k - 1) // 2  # "same" length for odd k
        if cfg.separable:
            self.conv = nn.Sequential(
                nn.Conv1d(c_in, c_in, k, padding=pad, dilation=dilation, groups=c_in, bias=False),
                nn.Conv1d(c_in, c_out, 1, bias=cfg.norm == "none"),
            )
        else:
            self.conv = nn.Conv1d(
                c_in, c_out, k, padding=pad, dilation=dilation, bias=cfg.norm == "none"
            )
        self.norm_kind = cfg.norm
        self.norm = {
            "batch": nn.BatchNorm1d(c_out),
            "layer": nn.LayerNorm(c_out),
            "none": nn.Identity(),
        }[cfg.norm]
        self.pool_size = cfg.pool_size if cfg.pool != "none" else 1
        self.pool = cfg.pool
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None):
        # x: (B, C_in, L) -> (B, C_out, L // pool)
        x = self.conv(x)
        if self.norm_kind == "layer":
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)  # per time step, over channels
        else:
            x = self.norm(x)
        x = F.relu(x)
        if self.pool_size > 1 and x.shape[-1] >= self.pool_size:
            pool = F.max_pool1d if self.pool == "max" else F.avg_pool1d
            x = pool(x, self.pool_size)
            if lengths is not None:
                lengths = torch.clamp(lengths // self.pool_size, min=1)
        x = self.drop(x)
        if lengths is not None:
            x = x * time_mask(lengths, x.shape[-1])[:, None, :]
        return x, lengths


class ConvStack(nn.Module):
    def __init__(self, c_in: int, cfg: ConvConfig):
        super().__init__()
        ks, ds = cfg.per_layer("kernel_size"), cfg.per_layer("dilation")
        chans = [c_in, *cfg.channels]
        self.blocks = nn.ModuleList(
            ConvBlock(chans[i], chans[i + 1], ks[i], ds[i], cfg) for i in range(len(ks))
        )
        self.out_channels = chans[-1]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        # x: (B, C, L) -> (B, F, L'), lengths' (B,) or None
        if lengths is not None:  # whatever sits in the padding must not reach the convolutions
            x = x * time_mask(lengths, x.shape[-1])[:, None, :]
        for block in self.blocks:
            x, lengths = block(x, lengths)
        return x, lengths


def masked_mean(x: torch.Tensor, lengths: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Mean over `dim` (a time axis) of the valid positions only."""
    if lengths is None:
        return x.mean(dim)
    T = x.shape[dim]
    m = time_mask(lengths, T).to(x.dtype)  # (B, T)
    shape = [1] * x.ndim
    shape[0], shape[dim] = x.shape[0], T
    m = m.view(shape)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1)


class AttentionPool(nn.Module):
    """Additive attention over time: softmax(v . tanh(W h_t)) weighted sum; padding masked."""

    def __init__(self, d: int):
        super().__init__()
        self.proj = nn.Linear(d, d)
        self.score = nn.Linear(d, 1, bias=False)

    def forward(self, h: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        # h: (B, T, D) -> (B, D)
        s = self.score(torch.tanh(self.proj(h))).squeeze(-1)  # (B, T)
        if lengths is not None:
            s = s.masked_fill(~time_mask(lengths, h.shape[1]), float("-inf"))
        a = torch.softmax(s, dim=1)
        return torch.einsum("bt,btd->bd", a, h)


class SeqEncoder(nn.Module):
    """LSTM/GRU over (B, T, F) features, pooled to (B, D) by last step, mean or attention."""

    def __init__(self, d_in: int, cfg: RNNConfig, pooling: str):
        super().__init__()
        cell = nn.LSTM if cfg.cell == "lstm" else nn.GRU
        self.rnn = cell(
            d_in,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.dirs = 2 if cfg.bidirectional else 1
        self.out_dim = cfg.hidden_size * self.dirs
        self.pooling = pooling
        self.attn = AttentionPool(self.out_dim) if pooling == "attention" else None

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # seq: (B, T, F) -> (B, D)
        T = seq.shape[1]
        if lengths is not None:
            packed = pack_padded_sequence(
                seq, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            out, h = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, D)
        else:
            out, h = self.rnn(seq)  # out: (B, T, D)
        if self.pooling == "last":
            h_n = h[0] if isinstance(h, tuple) else h  # (layers * dirs, B, H)
            return h_n[-self.dirs :].transpose(0, 1).reshape(seq.shape[0], -1)  # (B, D)
        if self.pooling == "mean":
            return masked_mean(out, lengths, dim=1)
        return self.attn(out, lengths)


class Head(nn.Module):
    def __init__(self, d_in: int, n_out: int, cfg: HeadConfig):
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(cfg.dropout)]
        if cfg.hidden:
            layers += [nn.Linear(d_in, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            d_in = cfg.hidden
        layers.append(nn.Linear(d_in, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
