"""Training-batch augmentation: random 3-D rotations of sensor triples (in raw units), per-window
gain and additive noise. Config: `cnnlstm.train_config.AugmentConfig` (``train.augment``)."""

from __future__ import annotations

import math

import torch

from cnnlstm.train_config import AugmentConfig
from cnnlstm.windows import Normalizer


def rotations(n: int, max_deg: float, device) -> torch.Tensor:
    """(n, 3, 3) rotations about uniform random axes by angles uniform in +-max_deg."""
    axis = torch.nn.functional.normalize(torch.randn(n, 3, device=device), dim=1)
    ang = (torch.rand(n, device=device) * 2 - 1) * math.radians(max_deg)
    k = torch.zeros(n, 3, 3, device=device)  # cross-product matrix of the axis
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    s, c = torch.sin(ang)[:, None, None], torch.cos(ang)[:, None, None]
    return torch.eye(3, device=device) + s * k + (1 - c) * (k @ k)  # Rodrigues


def augment(
    x: torch.Tensor,
    lengths: torch.Tensor | None,
    a: AugmentConfig,
    norm: Normalizer | None = None,
) -> torch.Tensor:
    """Rotation (in raw units: 3-axis sensors turned a little), gain and noise on a (B, C, L)
    batch; padding stays zero. Draws from the torch RNG, whose state the checkpoint keeps, so
    resumed runs see the same draws."""
    if not (a.scale or a.jitter or a.rotate_deg) or x.ndim != 3:
        return x
    if a.rotate_deg:
        center = torch.zeros(x.shape[1], device=x.device)
        scale = torch.ones(x.shape[1], device=x.device)
        if norm is not None:
            center = torch.as_tensor(norm.center, device=x.device)
            scale = torch.as_tensor(norm.scale, device=x.device)
        raw = x * scale[None, :, None] + center[None, :, None]  # (B, C, L)
        r = rotations(x.shape[0], a.rotate_deg, x.device) if a.rotate_together else None
        for g in a.rotate_groups:  # a loop over sensor triples, not over samples
            rg = r if r is not None else rotations(x.shape[0], a.rotate_deg, x.device)
            raw[:, g] = rg @ raw[:, g]  # (B, 3, 3) @ (B, 3, L)
        x = (raw - center[None, :, None]) / scale[None, :, None]
    if a.scale:
        x = x * (1 + a.scale * torch.randn(x.shape[0], x.shape[1], 1, device=x.device))
    if a.jitter:
        x = x + a.jitter * torch.randn_like(x)
    if lengths is not None:
        x = x * (torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None])[:, None]
    return x
