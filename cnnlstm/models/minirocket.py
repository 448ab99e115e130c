"""MiniRocket features + a ridge read-out, as a torch module (``model.arch: minirocket``).

MiniRocket (Dempster, Schmidt, Webb, "MiniRocket: A Very Fast (Almost) Deterministic Transform
for Time Series Classification", KDD 2021) convolves each window with 84 fixed kernels of length
9 (weights -1, with three positions at 2) at a set of dilations, on a random subset of the
channels per (kernel, dilation), and keeps the proportion of positive values (PPV) of the
output minus a bias per feature; the biases are quantiles of the convolution output of a random
training window. A ridge model on the features (what sklearn's ``RidgeClassifierCV`` /
``RidgeCV`` fit, its regularisation chosen by efficient leave-one-out on the training windows;
computed by `cnnlstm.baseline.ridge_gcv` without their float64 copies) reads them out.

Everything fitted is a buffer, so the model is saved as safetensors and rebuilt like the
CNN-RNN family (no pickle); its forward returns the task's encoded outputs (class scores,
targets), so evaluation, scoring and the MLflow pyfunc treat it like any other arch.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn

KERNEL_LENGTH = 9
# the 84 kernels: every choice of 3 of the 9 positions that get weight 2 (the others -1)
COMBINATIONS = np.array(list(itertools.combinations(range(KERNEL_LENGTH), 3)), dtype=np.int64)
N_KERNELS = len(COMBINATIONS)  # 84


def fit_dilations(
    length: int, n_features: int, max_dilations: int
) -> tuple[np.ndarray, np.ndarray]:
    """(dilations, features per dilation), exponentially spaced up to the window's reach, as in
    the reference implementation."""
    per_kernel = max(1, n_features // N_KERNELS)
    true_max = min(per_kernel, max_dilations)
    multiplier = per_kernel / true_max
    max_exponent = math.log2(max(1.0, (length - 1) / (KERNEL_LENGTH - 1)))
    dil, counts = np.unique(
        np.floor(np.logspace(0, max_exponent, true_max, base=2)).astype(np.int64),
        return_counts=True,
    )
    per_dil = (counts * multiplier).astype(np.int64)
    remainder = per_kernel - int(per_dil.sum())
    i = 0
    while remainder > 0:
        per_dil[i] += 1
        remainder -= 1
        i = (i + 1) % len(per_dil)
    return dil, per_dil


def quantiles(n: int) -> np.ndarray:
    """Low-discrepancy quantiles (the golden-ratio sequence) of the reference implementation."""
    return np.array([(k * ((math.sqrt(5) + 1) / 2)) % 1 for k in range(1, n + 1)])


class MiniRocketRidge(nn.Module):
    """x (B, C, L) -> PPV features (B, F) -> ridge read-out (B, *out_shape). Unfitted until
    :func:`cnnlstm.baseline.fit_minirocket` (or ``load_state_dict``) sets its buffers."""

    def __init__(self, n_channels: int, out_shape: tuple[int, ...], cfg: Any = None):
        super().__init__()
        self.n_channels = n_channels
        self.out_shape = out_shape
        self.n_features = getattr(cfg, "features", 10_000)
        self.max_dilations = getattr(cfg, "max_dilations", 32)
        self.max_windows = getattr(cfg, "max_windows", None)
        w = -torch.ones(N_KERNELS, 1, KERNEL_LENGTH)
        for k, idx in enumerate(COMBINATIONS):
            w[k, 0, idx] = 2.0
        self.register_buffer("kernels", w, persistent=False)  # fixed: not part of the artifact
        self.register_buffer("positions", torch.from_numpy(COMBINATIONS), persistent=False)
        empty = torch.zeros(0)
        # per dilation d: channel mask (84, C), biases (84, f_d); flattened in the state dict
        self.register_buffer("dilations", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("features_per_dilation", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("channel_mask", empty.clone())  # (n_dil, 84, C)
        self.register_buffer("biases", empty.clone())  # (sum_d 84 * f_d,)
        self.register_buffer("weight", empty.clone())  # (n_out, F): ridge coef / feature scale
        self.register_buffer("bias", empty.clone())  # (n_out,)
        self.register_buffer("temperature", torch.ones(()))  # scores -> logits (classification)

    # ---- state: buffers whose shapes are known only once fitted -------------------------------
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        names = {n for n, _ in self.named_buffers() if n not in ("kernels", "positions")}
        missing = names - set(state_dict)
        extra = set(state_dict) - names
        if strict and (missing or extra):
            raise RuntimeError(
                f"MiniRocketRidge state dict: missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        for n in names & set(state_dict):
            setattr(self, n, state_dict[n].detach().clone().to(getattr(self, n).device))
        return nn.modules.module._IncompatibleKeys(sorted(missing), sorted(extra))

    @property
    def fitted(self) -> bool:
        return self.weight.numel() > 0

    # ---- transform ----------------------------------------------------------------------------
    def _conv(self, x: torch.Tensor, d: int, mask: torch.Tensor) -> torch.Tensor:
        """(B, C, L) -> (B, 84, L): each kernel at dilation d ("same" zero padding) on the sum of
        its channels. The kernel is -1 everywhere and 2 at three positions, so its output is
        3 x (the three positions' sum) - (all nine positions' sum): shifted adds and one gather,
        much faster on a CPU than a depthwise dilated convolution."""
        b, _, n = x.shape
        xs = torch.matmul(mask.to(x.dtype), x)  # (B, 84, L): the conv is linear in channels
        pad = (KERNEL_LENGTH - 1) * d // 2
        xp = nn.functional.pad(xs, (pad, pad))
        # the nine positions' sum: a box filter along each residue class mod d, by cumsum
        # ceil((n + 2 pad) / d) + 1, written without negative floor division: traced for ONNX,
        # a floor division becomes Div, which truncates, and -(-a // d) would be off by one
        m_len = (n + 2 * pad + d - 1) // d + 1
        cum = nn.functional.pad(xp, (d, m_len * d - xp.shape[-1] - d))
        cum = cum.view(b, N_KERNELS, m_len, d).cumsum(2).view(b, N_KERNELS, m_len * d)
        total = cum[..., KERNEL_LENGTH * d : KERNEL_LENGTH * d + n] - cum[..., :n]
        idx = (self.positions.to(x.device) * d).view(N_KERNELS, 3, 1) + torch.arange(
            n, device=x.device
        )
        three = xp.gather(2, idx.view(1, N_KERNELS, 3 * n).expand(b, -1, -1))
        return 3 * three.view(b, N_KERNELS, 3, n).sum(2) - total

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, L) -> (B, F) proportions of positive values (padding counts as zeros)."""
        feats = []
        start = 0
        b, _, n = x.shape
        for i, (d, f) in enumerate(
            zip(self.dilations.tolist(), self.features_per_dilation.tolist(), strict=True)
        ):
            c = self._conv(x, d, self.channel_mask[i])  # (B, 84, L)
            bias = self.biases[start : start + N_KERNELS * f].view(N_KERNELS, f)
            start += N_KERNELS * f
            pad = (KERNEL_LENGTH - 1) * d // 2
            ppv = torch.empty(b, N_KERNELS, f, device=x.device)
            # alternate kernels count over the padded output or only its valid part (reference):
            # kernel k uses the valid part when k + i is odd
            inner = c[..., pad : n - pad] if n > 2 * pad else c
            for first, part in ((i % 2, c), (1 - i % 2, inner)):
                cs, bs = part[:, first::2], bias[first::2]
                for j in range(f):  # a loop over the few biases beats one 4-d comparison
                    ppv[:, first::2, j] = (cs > bs[:, j : j + 1]).sum(-1).float() / cs.shape[-1]
            feats.append(ppv.reshape(b, -1))
        return torch.cat(feats, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if not self.fitted:
            raise RuntimeError("MiniRocketRidge is not fitted (cnnlstm.baseline.fit_minirocket)")
        z = self.features(x.float()) @ self.weight.T + self.bias
        return (z * self.temperature).view(-1, *self.out_shape)
