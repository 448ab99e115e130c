"""Label strategies: what each window of a `cnnlstm.windows.Cut` is labelled with.

Separate from cutting, so scoring cuts a stream once and labels that same cut when the input
carries labels. Each function returns ``(y, keep)``: one value per window and whether the
window has one (windows without are left out of training and grading, never out of scoring).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnlstm.window_config import WindowConfig
from cnnlstm.windows import Cut


def _majority(codes: np.ndarray, mask: np.ndarray, n_values: int):
    """Most frequent code per row of (N, L) codes (ignoring mask=False and code -1) and its share
    of the valid positions. Ties go to the smaller code."""
    counts = np.zeros((codes.shape[0], max(n_values, 1)), dtype=np.int64)
    for v in range(n_values):  # loop over label values (a handful), vectorised over windows
        counts[:, v] = ((codes == v) & mask).sum(1)
    best = counts.argmax(1)
    purity = counts.max(1) / np.maximum(mask.sum(1), 1)
    best = np.where(counts.max(1) > 0, best, -1)
    return best, purity


def _entity_majority(ent_codes, codes, n_ent, n_values):
    """Most frequent label code per entity (-1 when it has none)."""
    out = np.full(n_ent, -1, dtype=np.int64)
    counts = np.zeros((n_ent, max(n_values, 1)), dtype=np.int64)
    ok = codes >= 0
    np.add.at(counts, (ent_codes[ok], codes[ok]), 1)
    has = counts.sum(1) > 0
    out[has] = counts[has].argmax(1)
    return out


def require_labels(cut: Cut) -> np.ndarray:
    if cut.codes is None:
        raise ValueError(
            "the readings have no label column: set data.label in the config (or use a task "
            "that needs none: forecast, or anomaly with method reconstruction)"
        )
    return cut.codes


def class_list(cut: Cut, cfg: WindowConfig, fixed: list[Any] | None = None) -> list[Any]:
    """The classes, in order: `fixed`, else window.classes, else every label value seen minus
    window.drop_labels."""
    if fixed is not None:
        return list(fixed)
    values = cut.values
    if cfg.classes is not None:
        missing = [c for c in cfg.classes if c not in set(values)]
        if missing:
            raise ValueError(f"window.classes: values {missing} never occur in the label column")
        return list(cfg.classes)
    drop = set(cfg.drop_labels)
    return [v for v in values if v not in drop]


def class_names(cut: Cut, classes: list[Any]) -> list[str]:
    return [str(cut.label_names.get(c, c)) for c in classes]


def class_labels(cut: Cut, cfg: WindowConfig, classes: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Class index per window by window.label: ``last`` (the last input sample's label),
    ``majority`` (the most frequent, kept when its share >= window.min_purity) or ``entity``
    (the entity's most frequent label)."""
    codes = require_labels(cut)
    values = cut.values
    to_class = np.array(
        [classes.index(v) if v in classes else -1 for v in values] + [-1], dtype=np.int64
    )  # index -1 (null) -> -1
    keep = np.ones(len(cut.starts), dtype=bool)
    if cfg.label == "last":
        code = codes[cut.last]
    elif cfg.label == "majority":
        code, purity = _majority(codes[cut.idx], cut.mask, len(values))
        keep &= purity >= cfg.min_purity
    elif cfg.label == "entity":
        ent_major = _entity_majority(cut.ent_codes, codes, cut.n_entities, len(values))
        code = ent_major[cut.ent_codes[cut.starts]]
    else:
        raise ValueError(f"window.label={cfg.label} does not give class labels")
    y = to_class[code]
    return y, keep & (y >= 0)


def any_positive(cut: Cut, negative: set[Any]) -> tuple[np.ndarray, np.ndarray]:
    """1 when any labelled sample of the window has a value outside `negative`, else 0; windows
    with no labelled sample have no label."""
    codes = require_labels(cut)
    pos_lut = np.array([v not in negative for v in cut.values] + [False], dtype=bool)
    c = codes[cut.idx]  # (N, L)
    labelled = ((c >= 0) & cut.mask).any(1)
    y = (pos_lut[c] & (c >= 0) & cut.mask).any(1).astype(np.int64)
    return y, labelled


def end_target(cut: Cut, column: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The target column's value at the window's last input sample, (N, 1) float32."""
    if cut.target is None:
        raise ValueError(
            f"the readings have no target column {column!r} (window.target_column; declare it "
            "in data.columns so ingest keeps it)"
        )
    y = cut.target[cut.last].astype(np.float32)[:, None]
    return y, np.isfinite(y[:, 0])


def future_values(cut: Cut, target_channels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The next `cut.horizon` rows of the target channels after each window, (N, H, K)."""
    bad = [c for c in target_channels if c not in cut.channels]
    if bad:
        raise ValueError(f"window.target_channels {bad} are not channels")
    tc = np.array([cut.channels.index(c) for c in target_channels])
    tidx = cut.last[:, None] + 1 + np.arange(cut.horizon)[None, :]  # (N, H)
    y = cut.rows[tidx][:, :, tc].astype(np.float32)
    return y, np.ones(len(y), dtype=bool)
