"""Lake rows -> labelled windows -> splits -> normalised tensors.

Per entity, in time order: optional resampling to a fixed rate, gap detection (a step over the
tolerance starts a new piece; no window spans a gap), optional derived channels computed per
piece before windowing (gravity by a Butterworth low-pass, body = raw - gravity), sliding
windows of ``size`` samples every ``stride`` samples, a label strategy, padding of short
pieces (lengths kept) or dropping them.
Everything is materialised with index arithmetic and one gather (no Python loop per window).

Shapes: ``x`` is float32 ``(N, C, L)``; ``lengths`` ``(N,)``; ``y`` is int64 ``(N,)`` for
classification, float32 ``(N, 1)`` for regression, float32 ``(N, H, K)`` for forecasting;
``entity``, ``start``, ``end`` (UTC microseconds, ``end`` inclusive and covering forecast targets)
say where each window came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from cnnlstm.window_config import SplitConfig, WindowConfig

PARTS = ("train", "val", "test")


@dataclass
class Windows:
    x: np.ndarray  # (N, C, L) float32, zero beyond lengths
    lengths: np.ndarray  # (N,) int64
    y: np.ndarray  # (N,) int64 | (N, 1) float32 | (N, H, K) float32
    entity: np.ndarray  # (N,) str
    start: np.ndarray  # (N,) int64 us, first sample
    end: np.ndarray  # (N,) int64 us, last sample used (incl. forecast targets)

    def __len__(self) -> int:
        return len(self.lengths)

    def subset(self, idx: np.ndarray) -> Windows:
        return Windows(
            self.x[idx],
            self.lengths[idx],
            self.y[idx],
            self.entity[idx],
            self.start[idx],
            self.end[idx],
        )


@dataclass
class WindowSet:
    """Windows plus what is needed to interpret them (and to rebuild them at scoring time)."""

    windows: Windows
    channels: list[str]
    task: str  # classification | regression | forecast
    classes: list[Any] = field(default_factory=list)  # class index -> original label value
    class_names: list[str] = field(default_factory=list)
    entity_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_channels: list[str] = field(default_factory=list)

    @property
    def n_outputs(self) -> int:
        if self.task == "classification":
            return len(self.classes)
        if self.task == "forecast":
            return len(self.target_channels)
        return 1


# ---------------------------------------------------------------------------------------------
# streams: sort, resample, split at gaps


def _collect(readings: pl.LazyFrame | pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    lf = readings.lazy() if isinstance(readings, pl.DataFrame) else readings
    have = lf.collect_schema().names()
    missing = [c for c in columns if c not in have]
    if missing:
        raise ValueError(f"readings lack columns {missing} (have {have})")
    return lf.select(columns).sort("entity_id", "timestamp").collect()


def _timestamps_us(s: pl.Series) -> np.ndarray:
    if s.dtype == pl.Datetime:
        return s.dt.cast_time_unit("us").cast(pl.Int64).to_numpy()
    return s.cast(pl.Int64).to_numpy()


def _segments(ent: np.ndarray, ts: np.ndarray, tol_us: float | None) -> np.ndarray:
    """Piece id per row: a new piece where the entity changes or the time step exceeds tol."""
    new = np.ones(len(ts), dtype=bool)
    if len(ts) > 1:
        dt = np.diff(ts)
        same = ent[1:] == ent[:-1]
        if tol_us is None:
            steps = dt[same & (dt > 0)]
            tol_us = 1.5 * float(np.median(steps)) if len(steps) else math.inf
        new[1:] = ~same | (dt > tol_us)
    return np.cumsum(new) - 1


def _resample(seg, ts, x, extra, rate_hz):
    """Linear resampling of channels onto a regular grid per piece; other columns take the value
    of the last reading at or before each grid instant. Loops over pieces only."""
    step = 1e6 / rate_hz
    bounds = np.flatnonzero(np.diff(seg)) + 1
    starts = np.r_[0, bounds]
    ends = np.r_[bounds, len(seg)]
    out_ts, out_x, out_seg, out_idx = [], [], [], []
    for s, e in zip(starts, ends, strict=True):
        t = ts[s:e]
        grid = t[0] + np.arange(int((t[-1] - t[0]) // step) + 1) * step
        out_ts.append(grid.astype(np.int64))
        out_x.append(np.stack([np.interp(grid, t, x[s:e, c]) for c in range(x.shape[1])], 1))
        out_seg.append(np.full(len(grid), seg[s]))
        out_idx.append(s + np.searchsorted(t, grid, side="right") - 1)
    idx = np.concatenate(out_idx)
    return (
        np.concatenate(out_seg),
        np.concatenate(out_ts),
        np.concatenate(out_x).astype(np.float32),
        {k: v[idx] for k, v in extra.items()},
        idx,
    )


def _window_starts(seg: np.ndarray, need: int, stride: int, pad: bool, min_len: int):
    """Start row and valid length of every window; ``need`` = size (+ horizon for forecasts).

    Returns (starts, n_valid) where n_valid counts rows covered including forecast targets.
    """
    bounds = np.flatnonzero(np.diff(seg)) + 1
    off = np.r_[0, bounds].astype(np.int64)
    n = np.diff(np.r_[off, len(seg)]).astype(np.int64)
    k = np.where(n >= need, (n - need) // stride + 1, 0)
    if pad:  # one padded window for a piece shorter than need (but at least min_len)
        k = np.where((n < need) & (n >= min_len), 1, k)
    total = int(k.sum())
    first = np.repeat(np.cumsum(k) - k, k)
    starts = np.repeat(off, k) + stride * (np.arange(total) - first)
    valid = np.minimum(np.repeat(n, k) - (starts - np.repeat(off, k)), need)
    return starts, valid


def _pieces(seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bounds = np.flatnonzero(np.diff(seg)) + 1
    return np.r_[0, bounds].astype(np.int64), np.r_[bounds, len(seg)].astype(np.int64)


def stream_rate_hz(ts: np.ndarray, seg: np.ndarray) -> float:
    """Sampling rate from the median time step within pieces (timestamps in microseconds)."""
    if len(ts) < 2:
        raise ValueError("cannot infer the sampling rate from fewer than two readings")
    dt = np.diff(ts)[(np.diff(seg) == 0)]
    dt = dt[dt > 0]
    if not len(dt):
        raise ValueError("cannot infer the sampling rate: no positive time step within a piece")
    return 1e6 / float(np.median(dt))


def derived_names(channels: list[str], cfg: WindowConfig) -> list[str]:
    """Names of the channels `cfg.derived` appends, in order (e.g. acc_x_gravity, acc_x_body)."""
    src = list(cfg.derived_from or channels[:3])
    return [f"{c}_{kind}" for kind in cfg.derived for c in src]


def derive_channels(
    x: np.ndarray, seg: np.ndarray, ts: np.ndarray, channels: list[str], cfg: WindowConfig
) -> np.ndarray:
    """(T, C) stream rows -> (T, C + D): the raw channels followed by `derived_names`.

    gravity: a Butterworth low-pass (`gravity_order`, `gravity_cutoff_hz`) of each
    `derived_from` channel, run per piece (entity stream between gaps), zero-phase
    (forward-backward) or causal from a steady state at the first sample; body: raw - gravity.
    The rate is `sample_rate_hz` when set, else the median step of the readings. Loops over
    pieces only. Training, scoring and the pyfunc all reach this through `build_windows`, with
    the window config stored in the checkpoint, so the transform is the same everywhere.
    """
    if not cfg.derived:
        return x
    from scipy.signal import butter, sosfilt, sosfilt_zi, sosfiltfilt

    src = list(cfg.derived_from or channels[:3])
    bad = [c for c in src if c not in channels]
    if bad:
        raise ValueError(f"window.derived_from {bad} are not channels {channels}")
    if len(channels) < 1 or (cfg.derived_from is None and len(channels) < 3):
        raise ValueError("window.derived needs window.derived_from when there are < 3 channels")
    rate = cfg.sample_rate_hz or stream_rate_hz(ts, seg)
    if cfg.gravity_cutoff_hz >= rate / 2:
        raise ValueError(
            f"window.gravity_cutoff_hz {cfg.gravity_cutoff_hz} must be below the "
            f"Nyquist frequency {rate / 2:g} Hz"
        )
    sos = butter(cfg.gravity_order, cfg.gravity_cutoff_hz, btype="low", fs=rate, output="sos")
    idx = [channels.index(c) for c in src]
    v = x[:, idx].astype(np.float64)
    grav = np.empty_like(v)
    zi = sosfilt_zi(sos)  # (sections, 2): the state of a unit step held forever
    # scipy's default sosfiltfilt pad length (shortened for short pieces)
    padlen = 3 * (2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum())))
    for s, e in zip(*_pieces(seg), strict=True):
        p = v[s:e]
        if cfg.gravity_zero_phase:
            grav[s:e] = sosfiltfilt(sos, p, axis=0, padlen=min(padlen, len(p) - 1))
        else:
            grav[s:e], _ = sosfilt(sos, p, axis=0, zi=zi[:, :, None] * p[0][None, None, :])
    parts = [x]
    for kind in cfg.derived:
        parts.append((grav if kind == "gravity" else v - grav).astype(np.float32))
    return np.concatenate(parts, axis=1)


# ---------------------------------------------------------------------------------------------
# labels


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


def _build_classes(values: list[Any], cfg: WindowConfig) -> list[Any]:
    drop = set(cfg.drop_labels)
    if cfg.classes is not None:
        missing = [c for c in cfg.classes if c not in set(values)]
        if missing:
            raise ValueError(f"window.classes: values {missing} never occur in the label column")
        return list(cfg.classes)
    return [v for v in values if v not in drop]


# ---------------------------------------------------------------------------------------------
# the main entry point


def build_windows(
    readings: pl.LazyFrame | pl.DataFrame,
    channels: list[str],
    cfg: WindowConfig,
    *,
    stride: int | None = None,
    entity_columns: list[str] | None = None,
    classes: list[Any] | None = None,
) -> WindowSet:
    """Cut readings (the lake contract) into windows. ``stride`` overrides cfg.stride; ``classes``
    fixes the class list (so a second window set, e.g. a denser training set, shares the map);
    ``entity_columns`` are metadata columns kept once per entity (first value)."""
    if not channels:
        raise ValueError("channels is empty")
    if cfg.size < 1:
        raise ValueError("window.size must be >= 1")
    stride = stride or cfg.stride
    task = cfg.task
    need_label = cfg.label in ("last", "majority", "any_positive", "entity")
    ent_cols = [c for c in dict.fromkeys(entity_columns or []) if c not in ("entity_id",)]
    cols = ["entity_id", "timestamp", *channels]
    if need_label:
        cols.append("label")
    if cfg.label_names_column:
        cols.append(cfg.label_names_column)
    if cfg.target_column and cfg.target_column not in cols:
        cols.append(cfg.target_column)
    cols += [c for c in ent_cols if c not in cols]
    df = _collect(readings, cols)
    if df.height == 0:
        raise ValueError("no readings to window (check the lake, entities and time range)")

    ent = df["entity_id"].cast(pl.String).to_numpy()
    ts = _timestamps_us(df["timestamp"])
    x = df.select(channels).to_numpy().astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("readings hold NaN/inf or nulls in channel columns")
    uniq_ent, ent_codes = np.unique(ent, return_inverse=True)

    # label values -> codes over all distinct values (-1: null)
    extra: dict[str, np.ndarray] = {"ent": ent_codes}
    values: list[Any] = []
    if need_label:
        lab = df["label"]
        values = sorted(lab.drop_nulls().unique().to_list())
        lut = {v: i for i, v in enumerate(values)}
        codes = lab.replace_strict(lut, default=-1, return_dtype=pl.Int64).to_numpy()
        extra["code"] = codes
    if cfg.target_column:
        extra["target"] = df[cfg.target_column].cast(pl.Float64).to_numpy()

    tol = None if cfg.gap_tolerance_s is None else cfg.gap_tolerance_s * 1e6
    seg = _segments(ent, ts, tol)
    if cfg.sample_rate_hz is not None:
        seg, ts, x, extra, _ = _resample(seg, ts, x, extra, cfg.sample_rate_hz)
        ent_codes = extra["ent"]
    x = derive_channels(x, seg, ts, list(channels), cfg)  # (T, C + D); a no-op without derived

    # windows: start row + valid rows; forecast windows need `horizon` more rows after the input
    h = cfg.horizon if task == "forecast" else 0
    starts, valid = _window_starts(
        seg, cfg.size + h, stride, cfg.short == "pad", cfg.min_length + h
    )
    lengths = valid - h  # input samples per window
    L = cfg.size
    pos = np.arange(L)
    mask = pos[None, :] < lengths[:, None]  # (N, L)
    idx = starts[:, None] + np.minimum(pos[None, :], lengths[:, None] - 1)  # (N, L) row gather
    xw = x[idx]  # (N, L, C)
    xw[~mask] = 0.0
    xw = np.ascontiguousarray(xw.transpose(0, 2, 1))  # (N, C, L)
    last = starts + lengths - 1  # row of the last input sample

    keep = np.ones(len(starts), dtype=bool)
    class_list: list[Any] = []
    target_channels: list[str] = []
    if task == "classification":
        if cfg.label == "any_positive":
            negative = set(cfg.drop_labels) or {0}
            pos_lut = np.array([v not in negative for v in values], dtype=bool)
            c = extra["code"][idx]
            y = ((c >= 0) & pos_lut[np.maximum(c, 0)] & mask).any(1).astype(np.int64)
            class_list = classes if classes is not None else [0, 1]
        else:
            class_list = classes if classes is not None else _build_classes(values, cfg)
            to_class = np.array(
                [class_list.index(v) if v in class_list else -1 for v in values] + [-1],
                dtype=np.int64,
            )  # index -1 (null) -> -1
            if cfg.label == "last":
                code = extra["code"][last]
            elif cfg.label == "majority":
                code, purity = _majority(extra["code"][idx], mask, len(values))
                keep &= purity >= cfg.min_purity
            else:  # entity: the majority label of the whole entity
                ent_major = _entity_majority(ent_codes, extra["code"], len(uniq_ent), len(values))
                code = ent_major[ent_codes[starts]]
            y = to_class[code]
            keep &= y >= 0
    elif task == "regression":
        y = extra["target"][last].astype(np.float32)[:, None]  # (N, 1)
        keep &= np.isfinite(y[:, 0])
    else:
        target_channels = list(cfg.target_channels or channels)
        bad = [c for c in target_channels if c not in channels]
        if bad:
            raise ValueError(f"window.target_channels {bad} are not channels")
        tc = np.array([channels.index(c) for c in target_channels])
        tidx = last[:, None] + 1 + np.arange(h)[None, :]  # (N, H)
        y = x[tidx][:, :, tc].astype(np.float32)  # (N, H, K)

    end_row = last + h
    w = Windows(
        x=xw,
        lengths=lengths.astype(np.int64),
        y=y,
        entity=uniq_ent[ent_codes[starts]],
        start=ts[starts],
        end=ts[end_row],
    ).subset(np.flatnonzero(keep))

    names: list[str] = [str(c) for c in class_list]
    if task == "classification" and cfg.label_names_column and cfg.label != "any_positive":
        pairs = df.select(pl.col("label"), pl.col(cfg.label_names_column).cast(pl.String)).unique(
            "label", keep="first"
        )
        lut_names = dict(
            zip(pairs["label"].to_list(), pairs[cfg.label_names_column].to_list(), strict=True)
        )
        names = [str(lut_names.get(c, c)) for c in class_list]
    elif cfg.label == "any_positive":
        names = ["normal", "anomaly"]

    meta: dict[str, dict[str, Any]] = {}
    if ent_cols:
        first = df.group_by("entity_id", maintain_order=True).agg(pl.col(ent_cols).first())
        for row in first.iter_rows(named=True):
            meta[str(row.pop("entity_id"))] = row
    all_channels = list(channels) + derived_names(list(channels), cfg)
    return WindowSet(w, all_channels, task, class_list, names, meta, target_channels)


def _entity_majority(ent_codes, codes, n_ent, n_values):
    """Most frequent label code per entity (-1 when it has none)."""
    out = np.full(n_ent, -1, dtype=np.int64)
    counts = np.zeros((n_ent, max(n_values, 1)), dtype=np.int64)
    ok = codes >= 0
    np.add.at(counts, (ent_codes[ok], codes[ok]), 1)
    has = counts.sum(1) > 0
    out[has] = counts[has].argmax(1)
    return out


# ---------------------------------------------------------------------------------------------
# splits


@dataclass
class SplitPlan:
    """Which part each entity (or each entity's time span) belongs to."""

    method: str
    entity_part: dict[str, int] = field(default_factory=dict)  # 0 train, 1 val, 2 test
    cuts: dict[str, tuple[int, int]] = field(default_factory=dict)  # time: entity -> (t1, t2)
    purge_us: int = 0

    def assign(self, w: Windows) -> np.ndarray:
        """Part code per window: 0 train, 1 val, 2 test, -1 dropped (purged)."""
        if self.method != "time":
            return np.array([self.entity_part.get(e, -1) for e in w.entity], dtype=np.int64)
        t1 = np.array([self.cuts[e][0] for e in w.entity], dtype=np.int64)
        t2 = np.array([self.cuts[e][1] for e in w.entity], dtype=np.int64)
        part = np.full(len(w), -1, dtype=np.int64)
        part[w.end < t1] = 0
        part[(w.start >= t1 + self.purge_us) & (w.end < t2)] = 1
        part[w.start >= t2 + self.purge_us] = 2
        return part


def plan_split(ws: WindowSet, cfg: SplitConfig) -> SplitPlan:
    w = ws.windows
    entities = sorted(set(w.entity.tolist()))
    rng = np.random.default_rng(cfg.seed)
    if cfg.method == "time":
        cuts = {}
        for e in entities:  # a loop over entities, not windows
            sel = w.entity == e
            t0, t_end = int(w.start[sel].min()), int(w.end[sel].max())
            span = t_end - t0 + 1
            cuts[e] = (
                t0 + int(span * (1 - cfg.val_fraction - cfg.test_fraction)),
                t0 + int(span * (1 - cfg.test_fraction)),
            )
        return SplitPlan("time", cuts=cuts, purge_us=int(cfg.purge_s * 1e6))

    part: dict[str, int] = {}
    if cfg.method == "column":
        missing = [e for e in entities if cfg.column not in ws.entity_meta.get(e, {})]
        if missing:
            raise ValueError(f"window.split.column {cfg.column!r} is not known for {missing[:3]}")
        test_vals = {str(v) for v in cfg.test_values}
        rest = []
        for e in entities:
            if str(ws.entity_meta[e][cfg.column]) in test_vals:
                part[e] = 2
            else:
                rest.append(e)
        if not rest:
            raise ValueError("window.split: every entity is in the test split")
        val_frac = cfg.val_fraction
    else:
        order = list(rng.permutation(entities))
        n_test = int(round(len(order) * cfg.test_fraction))
        if cfg.test_fraction > 0 and len(order) > 2:
            n_test = max(n_test, 1)
        for e in order[:n_test]:
            part[e] = 2
        rest = sorted(order[n_test:])
        val_frac = cfg.val_fraction / max(1e-9, 1 - cfg.test_fraction)

    # validation carved from the training entities, by entity or by a group column
    if cfg.val_group_column:
        groups = sorted({str(ws.entity_meta.get(e, {}).get(cfg.val_group_column)) for e in rest})
    else:
        groups = sorted(rest)
    groups = list(rng.permutation(groups))
    if cfg.val_folds:  # cross-validation: fold k = every val_folds-th group of the shuffle
        if len(groups) < cfg.val_folds:
            raise ValueError(
                f"window.split.val_folds={cfg.val_folds} but only {len(groups)} training groups"
            )
        val_groups = set(groups[cfg.val_fold :: cfg.val_folds])
    else:
        n_val = int(round(len(groups) * val_frac))
        if val_frac > 0 and len(groups) > 1:
            n_val = min(max(n_val, 1), len(groups) - 1)
        val_groups = set(groups[:n_val])
    for e in rest:
        g = str(ws.entity_meta.get(e, {}).get(cfg.val_group_column)) if cfg.val_group_column else e
        part[e] = 1 if g in val_groups else 0
    return SplitPlan(cfg.method, entity_part=part)


def split_windows(ws: WindowSet, plan: SplitPlan) -> dict[str, Windows]:
    part = plan.assign(ws.windows)
    return {name: ws.windows.subset(np.flatnonzero(part == i)) for i, name in enumerate(PARTS)}


# ---------------------------------------------------------------------------------------------
# normalisation (fitted on the training split only)


@dataclass
class Normalizer:
    """Per-channel ``(x - center) / scale``; padding stays zero. For forecasting the targets are
    scaled with their channels' statistics; for regression with the target's own."""

    center: np.ndarray  # (C,)
    scale: np.ndarray  # (C,)
    y_center: np.ndarray | None = None  # (K,) for regression/forecast targets
    y_scale: np.ndarray | None = None

    def apply(self, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        out = (x - self.center[None, :, None]) / self.scale[None, :, None]
        mask = np.arange(x.shape[-1])[None, :] < lengths[:, None]  # (N, L)
        return (out * mask[:, None, :]).astype(np.float32)

    def apply_y(self, y: np.ndarray) -> np.ndarray:
        if self.y_center is None or y.dtype.kind in "iu":
            return y
        return ((y - self.y_center) / self.y_scale).astype(np.float32)

    def invert_y(self, y: np.ndarray) -> np.ndarray:
        if self.y_center is None or y.dtype.kind in "iu":
            return y
        return (y * self.y_scale + self.y_center).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        d = {"center": self.center.tolist(), "scale": self.scale.tolist()}
        if self.y_center is not None:
            d |= {"y_center": self.y_center.tolist(), "y_scale": self.y_scale.tolist()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        def arr(k):
            return None if d.get(k) is None else np.asarray(d[k], dtype=np.float32)

        return cls(arr("center"), arr("scale"), arr("y_center"), arr("y_scale"))


def _center_scale(v: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Column statistics of (M, K) values; a constant column gets scale 1 (never NaN)."""
    if method == "none" or len(v) == 0:
        return np.zeros(v.shape[1], np.float32), np.ones(v.shape[1], np.float32)
    if method == "robust":
        q1, med, q3 = np.percentile(v, [25, 50, 75], axis=0)
        center, scale = med, (q3 - q1) / 1.349
    else:
        center, scale = v.mean(0, dtype=np.float64), v.std(0, dtype=np.float64)
    scale = np.where(
        np.isfinite(scale) & (scale > 1e-8 * np.maximum(1, np.abs(center))), scale, 1.0
    )
    return center.astype(np.float32), scale.astype(np.float32)


def fit_normalizer(
    train: Windows,
    method: str = "standard",
    task: str = "classification",
    target_idx: list[int] | None = None,
) -> Normalizer:
    """Fit on the training windows' valid samples only."""
    if len(train) == 0:
        raise ValueError("cannot fit normalisation statistics: the training split is empty")
    mask = np.arange(train.x.shape[-1])[None, :] < train.lengths[:, None]  # (N, L)
    v = train.x.transpose(0, 2, 1)[mask]  # (M, C) valid samples
    center, scale = _center_scale(v, method)
    norm = Normalizer(center, scale)
    if task == "forecast":
        ti = target_idx if target_idx is not None else list(range(len(center)))
        norm.y_center, norm.y_scale = center[ti], scale[ti]
    elif task == "regression":
        yc, ys = _center_scale(train.y.reshape(len(train), -1).astype(np.float64), "standard")
        norm.y_center, norm.y_scale = yc, ys
    return norm


# ---------------------------------------------------------------------------------------------
# torch side: a Dataset, and a batcher that keeps a split on one device


def to_tensors(w: Windows, norm: Normalizer | None):
    import torch

    x = norm.apply(w.x, w.lengths) if norm is not None else w.x
    y = norm.apply_y(w.y) if norm is not None else w.y
    return (
        torch.from_numpy(np.ascontiguousarray(x)),
        torch.from_numpy(w.lengths),
        torch.from_numpy(np.ascontiguousarray(y)),
    )


def WindowDataset(w: Windows, norm: Normalizer | None = None):  # noqa: N802 - a Dataset factory
    """A map-style torch Dataset of (x (C, L), length, y) for use with a DataLoader."""
    from torch.utils.data import TensorDataset

    return TensorDataset(*to_tensors(w, norm))


def fits_on_device(nbytes: int, device: Any, fraction: float = 0.5) -> bool:
    """Whether a split of nbytes may live on the device (CUDA: under `fraction` of free memory)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return nbytes < fraction * free
    return dev.type == "cpu" or nbytes < 2 * 1024**3


class Batches:
    """A split as tensors, moved to `device` once when it fits (GPU-resident path); each epoch
    gathers batches by index from a permutation seeded by (seed, epoch), so the order is a pure
    function of the epoch (exact resume) and there is no worker or host copy per batch."""

    def __init__(
        self,
        w: Windows,
        norm: Normalizer | None,
        device: Any,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ):
        import torch

        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.x, self.lengths, self.y = to_tensors(w, norm)
        self.norm = norm
        self.device = torch.device(device)
        nbytes = sum(t.numel() * t.element_size() for t in (self.x, self.lengths, self.y))
        self.resident = fits_on_device(nbytes, self.device)
        if self.resident:
            self.x, self.lengths, self.y = (t.to(self.device) for t in self._all())
        elif self.device.type == "cuda":
            self.x, self.lengths, self.y = (t.pin_memory() for t in self._all())
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last = drop_last
        self.epoch = 0
        self.full_length = bool((self.lengths == self.x.shape[-1]).all()) if len(self) else True

    def _all(self):
        return self.x, self.lengths, self.y

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def n_batches(self) -> int:
        n = len(self)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        import torch

        n = len(self)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        order = order.to(self.x.device)
        for b in range(self.n_batches()):
            i = order[b * self.batch_size : (b + 1) * self.batch_size]
            x, ln, y = self.x[i], self.lengths[i], self.y[i]
            if not self.resident:
                nb = self.device.type == "cuda"
                x, ln, y = (t.to(self.device, non_blocking=nb) for t in (x, ln, y))
            yield x, (None if self.full_length else ln), y
