"""Lake rows -> labelled windows -> splits -> normalised batches.

Per entity, in time order: gap detection (a step over the tolerance starts a new piece; no
window spans a gap; the default tolerance is robust to routine jitter), null channel values
filled per piece (``window.impute``; a run of nulls longer than the tolerance cuts like a gap),
optional resampling to a fixed rate, optional derived channels computed per piece before
windowing (gravity by a Butterworth low-pass, body = raw - gravity), sliding windows of
``size`` samples every ``stride`` samples (padding of short pieces, lengths kept, or dropping
them; windows under ``window.min_observed`` observed values dropped), a label strategy.
`describe_streams` / `StreamStats` say what this made of a set of readings (and why no window
came out).

Windows are views: the stream rows (every sample once, float32 ``(T, C)``, raw then derived
channels) plus each window's first row and length. Overlapping windows share their samples;
a window's ``(C, L)`` array exists only when gathered by index arithmetic (`Windows.gather`,
`Batches.take`: one batch at a time), never as a copy of every overlapping window.
``Windows.x`` materialises all of them, for small sets (subset first).

`cut_windows` cuts every window and keeps the per-row arrays label strategies read;
`build_windows` adds what a task (`cnnlstm.tasks`) asks for as ``y`` and keeps the windows that
have it (`build_window_sets`: at several strides from one read of the readings). Scoring cuts
once and labels the same cut.

Shapes: gathered ``x`` is float32 ``(N, C, L)``, zero beyond ``lengths`` ``(N,)``; ``y`` as the
task defines it (int64 ``(N,)`` class indices, float32 ``(N, 1)`` targets, float32 ``(N, H, K)``
futures); ``entity``, ``start``, ``end`` (UTC microseconds, ``end`` inclusive and covering
forecast targets) say where each window came from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from cnnlstm.window_config import SplitConfig, WindowConfig

PARTS = ("train", "val", "test")


class Windows:
    """Windows as views over stream rows: window i is ``rows[first[i] : first[i] + lengths[i]]``
    (samples x channels), zero beyond its length up to ``size`` samples. Every subset of one cut
    shares ``rows``, so a sample is stored once however many windows overlap it. `gather`
    materialises the windows at some indices (``(n, C, L)`` float32), ``x`` all of them (for
    small sets: subset first). A dense ``x`` ``(N, C, L)`` is accepted too (hand-made windows):
    it becomes rows of its own."""

    def __init__(
        self,
        x: np.ndarray | None = None,
        lengths: np.ndarray | None = None,
        y: np.ndarray | None = None,
        entity: np.ndarray | None = None,
        start: np.ndarray | None = None,
        end: np.ndarray | None = None,
        tags: dict[str, np.ndarray] | None = None,
        *,
        rows: np.ndarray | None = None,
        first: np.ndarray | None = None,
        size: int | None = None,
    ):
        if x is not None:
            if rows is not None or first is not None:
                raise ValueError("Windows: give x or rows + first, not both")
            x = np.asarray(x, np.float32)
            n, c, size = x.shape
            rows = x.transpose(0, 2, 1).reshape(n * size, c)
            first = np.arange(n, dtype=np.int64) * size
        if rows is None or first is None or size is None:
            raise ValueError("Windows needs x, or rows, first and size")
        self.rows = np.ascontiguousarray(rows, np.float32)  # (T, C) shared stream samples
        self.first = np.asarray(first, np.int64)  # (N,) row of each window's first sample
        self.size = int(size)  # L
        self.lengths = np.asarray(lengths, np.int64)  # (N,) valid samples
        self.y = y  # (N,) int64 | (N, 1) float32 | (N, H, K) float32
        self.entity = entity  # (N,) str
        self.start = start  # (N,) int64 us, first sample
        self.end = end  # (N,) int64 us, last sample used (incl. forecast targets)
        # per-window values of row-level columns (window.split.column): the value when the
        # window's first and last rows agree, else None (a window straddling two files)
        self.tags: dict[str, np.ndarray] = dict(tags or {})

    def __len__(self) -> int:
        return len(self.lengths)

    def __repr__(self) -> str:
        return (
            f"Windows(n={len(self)}, channels={self.n_channels}, size={self.size}, "
            f"rows={len(self.rows)})"
        )

    @property
    def n_channels(self) -> int:
        return int(self.rows.shape[1])

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape ``x`` would have: (N, C, L)."""
        return (len(self), self.n_channels, self.size)

    def gather(self, idx) -> np.ndarray:
        """The windows at `idx` as float32 ``(n, C, L)``, zero beyond their lengths."""
        return gather_windows(self.rows, self.first[idx], self.lengths[idx], self.size)

    @property
    def x(self) -> np.ndarray:
        """Every window, materialised ``(N, C, L)``: for small sets (subset first)."""
        return self.gather(slice(None))

    def subset(self, idx: np.ndarray) -> Windows:
        """The windows at `idx`: a view over the same rows."""
        return Windows(
            None,
            self.lengths[idx],
            self.y[idx],
            self.entity[idx],
            self.start[idx],
            self.end[idx],
            {k: v[idx] for k, v in self.tags.items()},
            rows=self.rows,
            first=self.first[idx],
            size=self.size,
        )


def gather_windows(rows: np.ndarray, first: np.ndarray, lengths: np.ndarray, size: int):
    """``(n, C, L)`` float32 windows of `size` samples from (T, C) rows by index arithmetic:
    row ``first + j`` at position j below the length, zero beyond (the gather repeats the last
    valid row there, so it never reads past a piece's end)."""
    pos = np.arange(size)
    ln = np.asarray(lengths, np.int64)
    idx = np.asarray(first, np.int64)[:, None] + np.minimum(pos[None, :], ln[:, None] - 1)
    xw = rows[np.maximum(idx, 0)]  # (n, L, C)
    xw[pos[None, :] >= ln[:, None]] = 0.0
    return np.ascontiguousarray(xw.transpose(0, 2, 1), np.float32)


@dataclass
class WindowSet:
    """Windows plus what is needed to interpret them (and to rebuild them at scoring time)."""

    windows: Windows
    channels: list[str]
    classes: list[Any] = field(default_factory=list)  # class index -> original label value
    class_names: list[str] = field(default_factory=list)
    entity_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_channels: list[str] = field(default_factory=list)
    stats: StreamStats | None = None  # what the cut made of the readings (diagnostics)


# ---------------------------------------------------------------------------------------------
# streams: sort, split at gaps, fill nulls, resample


def _collect(readings: pl.LazyFrame | pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    lf = readings.lazy() if isinstance(readings, pl.DataFrame) else readings
    have = lf.collect_schema().names()
    missing = [c for c in columns if c not in have]
    if missing:
        raise ValueError(f"readings lack columns {missing} (have {have})")
    # sort only when not in order already (lake files are, in entity then time order): a sort
    # holds a second copy of every column read
    df = readings.select(columns) if isinstance(readings, pl.DataFrame) else lf.select(columns)
    if isinstance(df, pl.LazyFrame):
        df = df.collect()
    return df if _in_entity_time_order(df) else df.sort("entity_id", "timestamp")


def _in_entity_time_order(df: pl.DataFrame) -> bool:
    """Rows already sorted by entity, then time (what lake files and a scorer's concatenation of
    one entity's files hold): an O(n) check instead of an O(n log n) sort."""
    ent, ts = df["entity_id"], df["timestamp"]
    if ent.null_count() or ts.null_count() or not ent.is_sorted():
        return False
    t = ts.to_physical()
    return bool(((t.diff() >= 0) | (ent != ent.shift())).fill_null(True).all())


def _timestamps_us(s: pl.Series) -> np.ndarray:
    if s.dtype == pl.Datetime:
        return s.dt.cast_time_unit("us").cast(pl.Int64).to_numpy()
    return s.cast(pl.Int64).to_numpy()


def _iso(us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))).isoformat()


def _steps(ent: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The positive time steps within entities (rows sorted by entity, then time), in us."""
    if len(ts) < 2:
        return np.zeros(0, np.int64)
    dt = np.diff(ts)
    return dt[(ent[1:] == ent[:-1]) & (dt > 0)]


def default_gap_tolerance_us(steps: np.ndarray) -> float:
    """The gap tolerance when window.gap_tolerance_s is unset: 1.5x the 90th percentile of the
    positive within-entity time steps, at most 10x the median step. Routine jitter (a 1 Hz log
    with frequent 2 s steps) does not cut, a dropout of minutes does, and a regular stream gets
    exactly 1.5x its step. inf when there is no step."""
    if not len(steps):
        return math.inf
    p90 = float(np.percentile(steps, 90))
    med = float(np.median(steps))
    return min(1.5 * p90, 10.0 * med)


def _segments(ent: np.ndarray, ts: np.ndarray, tol_us: float | None) -> np.ndarray:
    """Piece id per row: a new piece where the entity changes or the time step exceeds tol
    (None: `default_gap_tolerance_us` of the steps)."""
    new = np.ones(len(ts), dtype=bool)
    if len(ts) > 1:
        if tol_us is None:
            tol_us = default_gap_tolerance_us(_steps(ent, ts))
        new[1:] = (ent[1:] != ent[:-1]) | (np.diff(ts) > tol_us)
    return np.cumsum(new) - 1


def _row_bounds(seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first and the last row of its piece."""
    starts, ends = _pieces(seg)
    pid = np.repeat(np.arange(len(starts)), ends - starts)
    return starts[pid], ends[pid] - 1


def _neighbours(obs: np.ndarray, first: np.ndarray, last: np.ndarray):
    """Per row, the previous (at or before) and next (at or after) observed row of its piece;
    -1 where there is none. Vectorised over rows (running max / min of the observed indices)."""
    n = len(obs)
    i = np.arange(n)
    prev = np.maximum.accumulate(np.where(obs, i, -1)) if n else i
    nxt = np.minimum.accumulate(np.where(obs, i, n)[::-1])[::-1] if n else i
    return np.where(prev >= first, prev, -1), np.where(nxt <= last, nxt, -1)


def _long_null_runs(null: np.ndarray, ts, first, last, tol_us: float) -> np.ndarray:
    """Rows of the runs of nulls (one channel) whose time span, from the run's first to its
    last row, exceeds the tolerance."""
    prev, nxt = _neighbours(~null, first, last)
    r = np.flatnonzero(null)
    run_first = np.where(prev[r] >= 0, prev[r] + 1, first[r])
    run_last = np.where(nxt[r] >= 0, nxt[r] - 1, last[r])
    out = np.zeros(len(null), dtype=bool)
    out[r] = ts[run_last] - ts[run_first] > tol_us
    return out


def _fill(v: np.ndarray, null: np.ndarray, ts, first, last, method: str) -> np.ndarray:
    """One channel with its nulls filled within pieces (each piece has an observed value)."""
    out = v.copy()
    r = np.flatnonzero(null)
    if method == "zero":
        out[r] = 0.0
        return out
    prev, nxt = _neighbours(~null, first, last)
    p, n = prev[r], nxt[r]
    if method == "ffill":  # the last observed value; leading nulls take the first observed
        out[r] = v[np.where(p >= 0, p, n)]
        return out
    # linear in time between the neighbouring observed values; at the ends the nearest one
    a, b = np.where(p >= 0, p, n), np.where(n >= 0, n, p)
    span = (ts[b] - ts[a]).astype(np.float64)
    w = np.divide((ts[r] - ts[a]).astype(np.float64), span, out=np.zeros(len(r)), where=span > 0)
    va, vb = v[a].astype(np.float64), v[b].astype(np.float64)
    out[r] = (va + w * (vb - va)).astype(v.dtype)
    return out


def _handle_nulls(seg, ts, x, null, method: str, tol_us: float, stats: StreamStats):
    """(rows kept, their piece ids, channels filled, observed mask). Runs of nulls spanning more
    than the tolerance are dropped and cut the stream like a time gap; then pieces with a
    channel never observed are dropped; then each channel's nulls are filled (`_fill`). Loops
    over channels only."""
    first, last = _row_bounds(seg)
    drop = np.zeros(len(ts), dtype=bool)
    for c in np.flatnonzero(null.any(0)):
        drop |= _long_null_runs(null[:, c], ts, first, last, tol_us)
    keep = np.flatnonzero(~drop)
    new = np.ones(len(keep), dtype=bool)  # a piece starts where dropped rows lie in between
    new[1:] = (seg[keep[1:]] != seg[keep[:-1]]) | (np.diff(keep) > 1)
    obs = ~null[keep]
    if len(keep):
        starts = np.flatnonzero(new)
        n_obs = np.add.reduceat(obs.astype(np.int64), starts, axis=0)  # (P, C)
        bad = (n_obs == 0).any(1)
        ok = ~np.repeat(bad, np.diff(np.r_[starts, len(keep)]))
        stats.unobserved_pieces = int(bad.sum())
        stats.unobserved_rows = int((~ok).sum())
        keep, new, obs = keep[ok], new[ok], obs[ok]
    stats.null_run_rows = int(drop.sum())
    seg = np.cumsum(new) - 1
    ts, x = ts[keep], x[keep]
    first, last = _row_bounds(seg)
    for c in np.flatnonzero(~obs.all(0)):
        x[:, c] = _fill(x[:, c], ~obs[:, c], ts, first, last, method)
    return keep, seg, x, obs


def _resample(seg, ts, x, extra, rate_hz, obs=None):
    """Linear resampling of channels onto a regular grid per piece; other columns take the value
    of the last reading at or before each grid instant; a grid value is observed when the
    readings on both sides of it are (or the reading it falls on is). Loops over pieces only."""
    step = 1e6 / rate_hz
    bounds = np.flatnonzero(np.diff(seg)) + 1
    starts = np.r_[0, bounds]
    ends = np.r_[bounds, len(seg)]
    out_ts, out_x, out_seg, out_idx, out_obs = [], [], [], [], []
    for s, e in zip(starts, ends, strict=True):
        t = ts[s:e]
        grid = t[0] + np.arange(int((t[-1] - t[0]) // step) + 1) * step
        out_ts.append(grid.astype(np.int64))
        out_x.append(np.stack([np.interp(grid, t, x[s:e, c]) for c in range(x.shape[1])], 1))
        out_seg.append(np.full(len(grid), seg[s]))
        out_idx.append(s + np.searchsorted(t, grid, side="right") - 1)
        if obs is not None:
            o = obs[s:e].astype(np.float64)
            out_obs.append(
                np.stack([np.interp(grid, t, o[:, c]) >= 1.0 for c in range(x.shape[1])], 1)
            )
    idx = np.concatenate(out_idx)
    return (
        np.concatenate(out_seg),
        np.concatenate(out_ts),
        np.concatenate(out_x).astype(np.float32),
        {k: v[idx] for k, v in extra.items()},
        np.concatenate(out_obs) if obs is not None else None,
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
# the main entry points: cut (every window, no labels) and label (what the task asks for)


def _num(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:,.6g}"


@dataclass
class StreamStats:
    """What windowing made of a set of readings (`describe_streams`, `Cut.stats`,
    `WindowSet.stats`), for reports and for the error raised when no window comes out. Times in
    seconds; piece lengths in samples as windowed (after resampling when sample_rate_hz is
    set)."""

    n_entities: int
    n_rows: int
    step_median_s: float  # positive time steps within entities (nan: none)
    step_p90_s: float
    step_max_s: float
    gap_tolerance_s: float  # the tolerance used (inf: no step to derive one from)
    tolerance_default: bool  # derived from the steps (window.gap_tolerance_s unset)
    n_gap_steps: int = 0  # steps over the tolerance (each starts a new piece)
    gap_step_median_s: float = math.nan  # the median of those steps
    null_rows: int = 0  # rows with a null channel value
    null_run_rows: int = 0  # dropped: in a run of nulls spanning more than the tolerance
    unobserved_pieces: int = 0  # dropped: a channel never observed in the piece
    unobserved_rows: int = 0
    n_pieces: int = 0
    piece_len_min: int = 0
    piece_len_median: float = 0.0
    piece_len_p90: float = 0.0
    piece_len_max: int = 0
    window_size: int = 0
    horizon: int = 0  # rows after each window (forecast targets)
    n_windows_cut: int = 0  # before window.min_observed
    n_low_observed: int = 0  # dropped by window.min_observed
    observed_max: float = math.nan  # the highest observed share of a cut window
    n_windows: int = 0  # after window.min_observed
    n_unlabelled: int | None = None  # of n_windows, those without a target (build_windows)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def explain(self, cfg: WindowConfig) -> str:
        """Why no window came out and which setting to change (the no-windows error)."""
        tol = (
            "no step"
            if not np.isfinite(self.gap_tolerance_s)
            else f"{_num(self.gap_tolerance_s)} s"
        )
        how = (
            "the default: 1.5x the 90th-percentile step, at most 10x the median"
            if self.tolerance_default
            else "window.gap_tolerance_s"
        )
        need = self.window_size + self.horizon
        lines = [
            f"no windows: {self.n_entities:,} {'entity' if self.n_entities == 1 else 'entities'}, "
            f"{self.n_rows:,} rows; time steps within "
            f"entities: median {_num(self.step_median_s)} s, 90th percentile "
            f"{_num(self.step_p90_s)} s, max {_num(self.step_max_s)} s",
            f"gap rule: a step over {tol} ({how}) starts a new piece; {self.n_gap_steps:,} steps "
            f"did (median {_num(self.gap_step_median_s)} s); {self.n_pieces:,} pieces, lengths "
            f"(samples) min {self.piece_len_min:,}, median {_num(self.piece_len_median)}, 90th "
            f"percentile {_num(self.piece_len_p90)}, max {self.piece_len_max:,}",
        ]
        if self.null_rows:
            lines.append(
                f"nulls: {self.null_rows:,} rows had a null channel value; "
                f"{self.null_run_rows:,} rows dropped in runs of nulls spanning more than the "
                f"gap tolerance, {self.unobserved_pieces:,} pieces ({self.unobserved_rows:,} "
                "rows) dropped for a channel never observed in them"
            )
        size = f"window.size {self.window_size}" + (
            f" + horizon {self.horizon}" if self.horizon else ""
        )
        text = (
            f"windows: {self.n_windows_cut:,} cut (a window needs {need} rows: {size}; "
            f"window.short: {cfg.short})"
        )
        if cfg.min_observed > 0:
            text += f", {self.n_low_observed:,} dropped by window.min_observed {cfg.min_observed:g}"
        if self.n_unlabelled is not None and self.n_windows:
            text += f", {self.n_unlabelled:,} of {self.n_windows:,} without a label for the task"
        lines.append(text)

        if self.n_windows_cut == 0:
            fixes = []
            if self.n_gap_steps:
                fixes.append(
                    "raise window.gap_tolerance_s above the steps that should not cut (those over "
                    f"{tol} have median {_num(self.gap_step_median_s)} s)"
                )
            if cfg.short == "drop":
                fixes.append(
                    "set window.short: pad with window.min_length (at most "
                    f"{max(self.piece_len_max - self.horizon, 1):,} here) to pad short pieces"
                )
            else:
                fixes.append(f"lower window.min_length (now {cfg.min_length})")
            fixes.append(
                f"use a smaller window.size (the longest piece has {self.piece_len_max:,} samples)"
            )
            if self.null_run_rows:
                fixes.append(
                    "a larger window.gap_tolerance_s also fills longer runs of nulls (they cut "
                    "the stream and dropped rows above)"
                )
            lines.append("to get windows: " + "; or ".join(fixes))
        elif self.n_windows == 0:
            lines.append(
                f"to get windows: lower window.min_observed (now {cfg.min_observed:g}; the best "
                f"window has {_num(self.observed_max)} of its values observed)"
            )
        elif self.n_unlabelled:
            lines.append(
                f"to get windows, fix the labels: {self.n_unlabelled:,} of {self.n_windows:,} "
                "windows had no label the task uses (null labels, under window.min_purity, or "
                "values outside window.classes / in window.drop_labels; data.label names the "
                "column, window.label the strategy)"
            )
        return "\n".join(lines)


@dataclass
class Cut:
    """Every window of a set of readings, before any labelling, plus the per-row arrays that
    label strategies read. ``windows.y`` is empty here; a task fills it."""

    windows: Windows
    channels: list[str]  # raw channels, then derived ones
    raw_channels: list[str]
    rows: np.ndarray  # (T, C + D) the stream rows the windows view (``windows.rows``)
    starts: np.ndarray  # (N,) row of each window's first sample
    last: np.ndarray  # (N,) row of each window's last input sample
    ent_codes: np.ndarray  # (T,) entity code per row
    n_entities: int
    codes: np.ndarray | None = None  # (T,) label code per row (-1: null); None: no label column
    values: list[Any] = field(default_factory=list)  # label code -> label value
    label_names: dict[Any, str] = field(default_factory=dict)  # label value -> readable name
    target: np.ndarray | None = None  # (T,) float64 of window.target_column
    entity_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    horizon: int = 0  # rows after each window that belong to it (forecast targets)
    # (N,) share of observed (not imputed) values over each window's valid samples and raw
    # channels (1 without nulls)
    observed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    stats: StreamStats | None = None

    @property
    def idx(self) -> np.ndarray:
        """(N, L) row of each window position (repeats the last row past lengths); computed on
        demand (label strategies), not kept."""
        return _row_index(self.starts, self.windows.lengths, self.windows.size)

    @property
    def mask(self) -> np.ndarray:
        """(N, L) valid positions; computed on demand."""
        return np.arange(self.windows.size)[None, :] < self.windows.lengths[:, None]


def _row_index(starts: np.ndarray, lengths: np.ndarray, size: int) -> np.ndarray:
    pos = np.arange(size)
    return starts[:, None] + np.minimum(pos[None, :], lengths[:, None] - 1)


@dataclass
class _Streams:
    """Rows in entity, time order, split into pieces, nulls filled, resampled."""

    uniq_ent: np.ndarray
    seg: np.ndarray  # (T,) piece id
    ts: np.ndarray  # (T,) us
    x: np.ndarray  # (T, C) raw channels, float32, no nulls
    obs: np.ndarray | None  # (T, C) observed (not imputed); None: every value observed
    extra: dict[str, np.ndarray]  # per-row columns: ent, code (labels), target, tag:<column>
    values: list[Any]  # label code -> value
    stats: StreamStats
    tag_values: dict[str, np.ndarray] = field(default_factory=dict)  # tag code -> value


def _read(readings, channels: list[str], cfg: WindowConfig, entity_columns: list[str] | None):
    """The readings' columns windowing needs, sorted by entity and time; and the entity-level
    metadata columns."""
    if not channels:
        raise ValueError("channels is empty")
    if cfg.size < 1:
        raise ValueError("window.size must be >= 1")
    lf = readings.lazy() if isinstance(readings, pl.DataFrame) else readings
    have = set(lf.collect_schema().names())
    ent_cols = [c for c in dict.fromkeys(entity_columns or []) if c not in ("entity_id",)]
    cols = ["entity_id", "timestamp", *channels]
    if "label" in have:
        cols.append("label")
    if cfg.label_names_column and cfg.label_names_column in have:
        cols.append(cfg.label_names_column)
    if cfg.target_column and cfg.target_column not in cols and cfg.target_column in have:
        cols.append(cfg.target_column)
    cols += [c for c in ent_cols if c not in cols]
    df = _collect(readings, cols)
    if df.height == 0:
        raise ValueError("no readings to window (check the lake, entities and time range)")
    return df, ent_cols


def _null_error(null: np.ndarray, ent: np.ndarray, ts: np.ndarray, channels: list[str]):
    rows = np.flatnonzero(null.any(1))
    r = int(rows[0])
    per = ", ".join(f"{channels[c]} {int(n):,}" for c, n in enumerate(null.sum(0)) if n)
    return ValueError(
        f"readings hold nulls in channel columns: {len(rows):,} rows (null values per channel: "
        f"{per}), e.g. entity {str(ent[r])!r} at {_iso(ts[r])}, channel "
        f"{channels[int(np.argmax(null[r]))]!r}. Set window.impute (linear, ffill or zero) to "
        "fill them; runs of nulls spanning more than the gap tolerance are then cut out like "
        "time gaps"
    )


def _entity_codes(s: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(distinct entity ids in sorted order, code per row) - ``np.unique(..., return_inverse=True)``
    of the ids as strings, without sorting a numpy object array (the rows come sorted by entity:
    then the codes are run ids, computed by polars)."""
    s = s.cast(pl.String)
    if s.null_count() == 0 and s.is_sorted():
        return s.unique(maintain_order=True).to_numpy(), s.rle_id().to_numpy().astype(np.int64)
    return np.unique(s.to_numpy(), return_inverse=True)


def _streams(
    df: pl.DataFrame, channels: list[str], cfg: WindowConfig, row_columns: list[str] = ()
) -> _Streams:
    uniq_ent, ent_codes = _entity_codes(df["entity_id"])
    ent = uniq_ent[ent_codes]  # (T,) entity per row (object array), for messages
    ts = _timestamps_us(df["timestamp"])
    x = np.asarray(df.select(pl.col(channels).cast(pl.Float32)).to_numpy(), np.float32)
    null = None
    if sum(df.select(pl.col(channels).null_count()).row(0)):
        null = df.select(pl.col(channels).is_null()).to_numpy()  # (T, C)
    bad = ~np.isfinite(x) if null is None else ~np.isfinite(x) & ~null
    if bad.any():
        r = int(np.flatnonzero(bad.any(1))[0])
        raise ValueError(
            f"readings hold NaN/inf in channel columns ({int(bad.sum()):,} values), e.g. entity "
            f"{str(ent[r])!r} at {_iso(ts[r])}, channel {channels[int(np.argmax(bad[r]))]!r}"
        )

    # label values -> codes over all distinct values (-1: null)
    extra: dict[str, np.ndarray] = {"ent": ent_codes}
    values: list[Any] = []
    if "label" in df.columns:
        lab = df["label"]
        values = sorted(lab.drop_nulls().unique().to_list())
        lut = {v: i for i, v in enumerate(values)}
        extra["code"] = lab.replace_strict(lut, default=-1, return_dtype=pl.Int64).to_numpy()
    if cfg.target_from_end is not None:  # derived: from each row to its entity's last row
        if cfg.target_from_end == "seconds":
            left = (pl.col("timestamp").max().over("entity_id") - pl.col("timestamp")).dt
            expr = left.total_microseconds().cast(pl.Float64) / 1e6
        else:  # rows after this one in the entity's stream (sorted by time)
            expr = pl.len().over("entity_id") - 1 - pl.int_range(pl.len()).over("entity_id")
        extra["target"] = df.select(expr.cast(pl.Float64)).to_series().to_numpy()
    elif cfg.target_column and cfg.target_column in df.columns:
        extra["target"] = df[cfg.target_column].cast(pl.Float64).to_numpy()
    tag_values: dict[str, np.ndarray] = {}
    for c in row_columns:  # codes (-1: null), carried through null cuts and resampling
        col = df[c].cast(pl.String)
        uniq = col.drop_nulls().unique(maintain_order=True).to_list()
        tag_values[c] = np.array(uniq, dtype=object)
        lut = {v: i for i, v in enumerate(uniq)}
        extra[f"tag:{c}"] = col.replace_strict(lut, default=-1, return_dtype=pl.Int32).to_numpy()

    # gaps: a step over the tolerance starts a new piece
    steps = _steps(ent_codes, ts)
    default = cfg.gap_tolerance_s is None
    tol = default_gap_tolerance_us(steps) if default else cfg.gap_tolerance_s * 1e6
    seg = _segments(ent_codes, ts, tol)
    cutting = steps[steps > tol]
    q = np.percentile(steps, [50, 90, 100]) / 1e6 if len(steps) else np.full(3, math.nan)
    stats = StreamStats(
        n_entities=len(uniq_ent),
        n_rows=len(ts),
        step_median_s=float(q[0]),
        step_p90_s=float(q[1]),
        step_max_s=float(q[2]),
        gap_tolerance_s=tol / 1e6,
        tolerance_default=default,
        n_gap_steps=len(cutting),
        gap_step_median_s=float(np.median(cutting)) / 1e6 if len(cutting) else math.nan,
    )

    # nulls: an error, or filled (long runs cut out, pieces with a channel never seen dropped)
    obs = None
    if null is not None:
        if cfg.impute == "none":
            raise _null_error(null, ent, ts, channels)
        stats.null_rows = int(null.any(1).sum())
        keep, seg, x, obs = _handle_nulls(seg, ts, x, null, cfg.impute, tol, stats)
        ts = ts[keep]
        extra = {k: v[keep] for k, v in extra.items()}
    if cfg.sample_rate_hz is not None and len(ts):
        seg, ts, x, extra, obs = _resample(seg, ts, x, extra, cfg.sample_rate_hz, obs)

    starts, ends = _pieces(seg) if len(seg) else (np.zeros(0, np.int64),) * 2
    n = ends - starts
    stats.n_pieces = len(n)
    if len(n):
        stats.piece_len_min, stats.piece_len_max = int(n.min()), int(n.max())
        stats.piece_len_median, stats.piece_len_p90 = (float(v) for v in np.percentile(n, [50, 90]))
    return _Streams(uniq_ent, seg, ts, x, obs, extra, values, stats, tag_values)


def _cut_index(s: _Streams, cfg: WindowConfig, stride: int, h: int, st: StreamStats):
    """(starts, lengths, observed) of the windows kept: every window of every piece
    (`_window_starts`) whose observed share is at least window.min_observed. Fills the window
    counts of `st`."""
    starts, valid = _window_starts(
        s.seg, cfg.size + h, stride, cfg.short == "pad", cfg.min_length + h
    )
    lengths = valid - h  # input samples per window
    if s.obs is None:
        observed = np.ones(len(starts))
    else:  # share of observed raw-channel values over the valid samples
        per_row = s.obs.mean(1)
        idx = _row_index(starts, lengths, cfg.size)
        mask = np.arange(cfg.size)[None, :] < lengths[:, None]
        observed = (per_row[idx] * mask).sum(1) / np.maximum(lengths, 1)
        del idx, mask
    st.window_size, st.horizon, st.n_windows_cut = cfg.size, h, len(starts)
    st.observed_max = float(observed.max()) if len(observed) else math.nan
    if cfg.min_observed > 0:
        keep = observed >= cfg.min_observed - 1e-9
        starts, lengths, observed = starts[keep], lengths[keep], observed[keep]
    st.n_low_observed = st.n_windows_cut - len(starts)
    st.n_windows = len(starts)
    return starts, lengths, observed.astype(np.float32)


def describe_streams(
    readings: pl.LazyFrame | pl.DataFrame,
    channels: list[str],
    cfg: WindowConfig,
    *,
    stride: int | None = None,
    horizon: int = 0,
) -> StreamStats:
    """What windowing makes of the readings, without gathering a window: entities, rows, the
    time steps, the gap tolerance and the pieces, nulls filled or dropped, windows cut and
    dropped by window.min_observed (labels are not looked at: `build_windows` adds
    ``n_unlabelled``). `StreamStats.explain` turns it into advice."""
    df, _ = _read(readings, channels, cfg, None)
    s = _streams(df, list(channels), cfg)
    del df
    _cut_index(s, cfg, stride or cfg.stride, horizon, s.stats)
    return s.stats


@dataclass
class _Source:
    """What every cut of one set of readings shares: the streams, the window rows (raw then
    derived channels, float32 (T, C + D), C-contiguous), label names and entity metadata."""

    streams: _Streams
    rows: np.ndarray
    channels: list[str]
    row_columns: list[str]
    label_names: dict[Any, str]
    entity_meta: dict[str, dict[str, Any]]


def _source(
    readings,
    channels: list[str],
    cfg: WindowConfig,
    entity_columns: list[str] | None,
    row_columns: list[str] | None,
) -> _Source:
    """Read the readings once (the columns windowing needs) and make the streams and window
    rows; the frame itself is let go before any window is cut."""
    row_cols = [c for c in row_columns or [] if c in (entity_columns or [])]
    df, ent_cols = _read(readings, channels, cfg, entity_columns)
    s = _streams(df, list(channels), cfg, row_cols)
    names: dict[Any, str] = {}
    if cfg.label_names_column and cfg.label_names_column in df.columns and "label" in df.columns:
        pairs = df.select(pl.col("label"), pl.col(cfg.label_names_column).cast(pl.String)).unique(
            "label", keep="first"
        )
        names = dict(
            zip(pairs["label"].to_list(), pairs[cfg.label_names_column].to_list(), strict=True)
        )
    meta: dict[str, dict[str, Any]] = {}
    if ent_cols:
        first = df.group_by("entity_id", maintain_order=True).agg(pl.col(ent_cols).first())
        for row in first.iter_rows(named=True):
            meta[str(row.pop("entity_id"))] = row
    del df
    if len(s.ts):  # derived channels: a no-op without window.derived
        x = derive_channels(s.x, s.seg, s.ts, list(channels), cfg)
    else:
        x = np.zeros((0, len(channels) + len(derived_names(list(channels), cfg))), np.float32)
    x = np.ascontiguousarray(x, np.float32)
    s.x = x[:, : len(channels)]  # a view: the raw channels are the rows' first columns
    return _Source(s, x, list(channels) + derived_names(list(channels), cfg), row_cols, names, meta)


def _cut(src: _Source, cfg: WindowConfig, stride: int, horizon: int) -> Cut:
    """Every window of the source at `stride` (views over its rows); `horizon` more rows after
    the input belong to each window (forecast targets)."""
    s, h = src.streams, horizon
    stats = replace(s.stats)  # the stream figures, plus this cut's window counts
    starts, lengths, observed = _cut_index(s, cfg, stride, h, stats)
    last = starts + lengths - 1  # row of the last input sample
    ts, extra, ent_codes = s.ts, s.extra, s.extra["ent"]
    w = Windows(
        None,
        lengths.astype(np.int64),
        np.zeros(len(starts), np.int64),
        s.uniq_ent[ent_codes[starts]],
        ts[starts],
        ts[last + h],
        {c: _window_tag(extra[f"tag:{c}"], s.tag_values[c], starts, last) for c in src.row_columns},
        rows=src.rows,
        first=starts,
        size=cfg.size,
    )
    return Cut(
        windows=w,
        channels=list(src.channels),
        raw_channels=src.channels[: s.x.shape[1]],
        rows=w.rows,
        starts=starts,
        last=last,
        ent_codes=ent_codes,
        n_entities=len(s.uniq_ent),
        codes=extra.get("code"),
        values=s.values,
        label_names=src.label_names,
        target=extra.get("target"),
        entity_meta=src.entity_meta,
        horizon=h,
        observed=observed,
        stats=stats,
    )


def cut_windows(
    readings: pl.LazyFrame | pl.DataFrame,
    channels: list[str],
    cfg: WindowConfig,
    *,
    stride: int | None = None,
    horizon: int = 0,
    entity_columns: list[str] | None = None,
    row_columns: list[str] | None = None,
) -> Cut:
    """Cut readings (the lake contract) into every window (``stride`` overrides cfg.stride;
    ``horizon`` rows after the input are kept for forecast targets). An optional ``label``
    column and ``window.target_column`` are read along for labelling; ``entity_columns`` are
    metadata columns kept once per entity (first value). Null channel values are filled as
    window.impute says, and windows under window.min_observed are not cut. The windows are
    views over the stream rows (`Windows`)."""
    src = _source(readings, channels, cfg, entity_columns, row_columns)
    return _cut(src, cfg, stride or cfg.stride, horizon)


def _window_tag(codes: np.ndarray, values: np.ndarray, starts, last) -> np.ndarray:
    """Per window: the row value when its first and last rows agree, else None."""
    a, b = codes[starts], codes[last]
    out = np.full(len(starts), None, dtype=object)
    same = (a == b) & (a >= 0)
    out[same] = values[a[same]]
    return out


def build_windows(
    readings: pl.LazyFrame | pl.DataFrame,
    channels: list[str],
    cfg: WindowConfig,
    task=None,
    *,
    stride: int | None = None,
    entity_columns: list[str] | None = None,
    classes: list[Any] | None = None,
) -> WindowSet:
    """Cut and label: the windows that carry a target for `task` (a `cnnlstm.tasks.Task`;
    default: the kind window.label implies). ``classes`` fixes the class list (so a second
    window set, e.g. a denser training set, shares the map). ``stats`` on the result says what
    the cut made of the readings (`StreamStats`, with ``n_unlabelled`` filled in)."""
    return build_window_sets(
        readings,
        channels,
        cfg,
        task,
        strides=[stride or cfg.stride],
        entity_columns=entity_columns,
        classes=classes,
    )[0]


def build_window_sets(
    readings: pl.LazyFrame | pl.DataFrame,
    channels: list[str],
    cfg: WindowConfig,
    task=None,
    *,
    strides: list[int],
    entity_columns: list[str] | None = None,
    classes: list[Any] | None = None,
) -> list[WindowSet]:
    """`build_windows` at each of `strides`, from one read of the readings: the window sets
    share the stream rows (views). The first set's classes fix the later sets' class map
    (as ``classes`` does), so a denser training set labels like the evaluation set."""
    if task is None:
        from cnnlstm.tasks import make_task

        task = make_task(None, cfg)
    src = _source(
        readings,
        channels,
        cfg,
        entity_columns,
        [cfg.split.column] if cfg.split.method == "column" else None,
    )
    out: list[WindowSet] = []
    for stride in strides:
        cut = _cut(src, cfg, stride, task.horizon_rows)
        t = task.targets(cut, classes)
        w = cut.windows
        w.y = t.y
        keep = np.flatnonzero(t.keep)
        if cut.stats is not None:
            cut.stats.n_unlabelled = len(w) - len(keep)
        out.append(
            WindowSet(
                w.subset(keep),
                cut.channels,
                t.classes,
                t.class_names,
                cut.entity_meta,
                t.target_channels,
                cut.stats,
            )
        )
        if classes is None:
            classes = t.classes or None
    return out


# ---------------------------------------------------------------------------------------------
# splits


@dataclass
class SplitPlan:
    """Which part each entity (or each entity's time span) belongs to."""

    method: str
    entity_part: dict[str, int] = field(default_factory=dict)  # 0 train, 1 val, 2 test
    column: str | None = None  # method column: windows whose own value is a test value are test
    test_values: set[str] = field(default_factory=set)
    cuts: dict[str, tuple[int, int]] = field(default_factory=dict)  # time: entity -> (t1, t2)
    purge_us: int = 0

    def assign(self, w: Windows) -> np.ndarray:
        """Part code per window: 0 train, 1 val, 2 test, -1 dropped (purged)."""
        if self.method != "time":
            part = np.array([self.entity_part.get(e, -1) for e in w.entity], dtype=np.int64)
            if self.column is not None and self.column in w.tags:
                # one entity whose files are train and test (a path column): per window
                tag = w.tags[self.column]
                test = np.array([v is not None and v in self.test_values for v in tag], bool)
                part = np.where(test, 2, np.where(part == 2, -1, part))
                part[np.array([v is None for v in tag], bool)] = -1  # straddles two files
            return part
        t1 = np.array([self.cuts[e][0] for e in w.entity], dtype=np.int64)
        t2 = np.array([self.cuts[e][1] for e in w.entity], dtype=np.int64)
        part = np.full(len(w), -1, dtype=np.int64)
        part[w.end < t1] = 0
        part[(w.start >= t1 + self.purge_us) & (w.end < t2)] = 1
        part[w.start >= t2 + self.purge_us] = 2
        return part


def _entity_classes(w: Windows) -> dict[str, int] | None:
    """Each entity's most frequent window class (classification windows: integer ``y``)."""
    if w.y is None or np.asarray(w.y).ndim != 1 or np.asarray(w.y).dtype.kind not in "iu":
        return None
    df = pl.DataFrame({"e": w.entity.astype(str), "y": np.asarray(w.y, np.int64)})
    top = df.group_by("e", "y").len().sort(["e", "len", "y"], descending=[False, True, False])
    top = top.unique("e", keep="first", maintain_order=True)
    return dict(zip(top["e"].to_list(), top["y"].to_list(), strict=True))


def _stratified(order: list, strata: dict[str, int], rng) -> list:
    """``order`` (already shuffled) re-ordered so that any prefix holds each class's entities
    in proportion: an entity's key is its place within its class over the class size (plus a
    random fraction of one place), so the first k of n take about k/n of every class."""
    by: dict[Any, list] = {}
    for e in order:
        by.setdefault(strata.get(str(e)), []).append(e)
    keyed = []
    for members in by.values():
        n = len(members)
        for i, e in enumerate(members):
            keyed.append(((i + float(rng.random())) / n, str(e), e))
    return [e for *_, e in sorted(keyed)]


def plan_split(ws: WindowSet, cfg: SplitConfig) -> SplitPlan:
    w = ws.windows
    entities = sorted(set(w.entity.tolist()))
    rng = np.random.default_rng(cfg.seed)
    strata = None
    if cfg.stratify and cfg.method != "time":
        strata = _entity_classes(w)
        if strata is None:
            raise ValueError("window.split.stratify needs class labels (a classification task)")
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
        tag = w.tags.get(cfg.column)
        all_test: dict[str, bool] = {}
        if tag is not None:  # an entity is test when all its windows are
            known = np.array([v is not None for v in tag], bool)
            t = np.array([v in test_vals for v in tag], bool)
            g = (
                pl.DataFrame({"e": w.entity.astype(str)[known], "t": t[known]})
                .group_by("e")
                .agg(pl.col("t").all())
            )
            all_test = dict(zip(g["e"].to_list(), g["t"].to_list(), strict=True))
        rest = []
        for e in entities:
            if tag is not None:
                is_test = all_test.get(e, False)
            else:
                is_test = str(ws.entity_meta[e][cfg.column]) in test_vals
            if is_test:
                part[e] = 2
            else:
                rest.append(e)
        if not rest:
            raise ValueError("window.split: every entity is in the test split")
        val_frac = cfg.val_fraction
    else:
        order = list(rng.permutation(entities))
        if strata is not None:  # window.split.stratify: each class's entities in proportion
            order = _stratified(order, strata, rng)
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
    if strata is not None and not cfg.val_group_column:
        groups = _stratified(groups, strata, rng)
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
    if cfg.method == "column" and cfg.column in w.tags:
        return SplitPlan(
            cfg.method,
            entity_part=part,
            column=cfg.column,
            test_values={str(v) for v in cfg.test_values},
        )
    return SplitPlan(cfg.method, entity_part=part)


def split_windows(ws: WindowSet, plan: SplitPlan) -> dict[str, Windows]:
    part = plan.assign(ws.windows)
    return {name: ws.windows.subset(np.flatnonzero(part == i)) for i, name in enumerate(PARTS)}


# ---------------------------------------------------------------------------------------------
# normalisation (fitted on the training split only)


@dataclass
class Normalizer:
    """Per-channel ``(x - center) / scale`` of the inputs; padding stays zero. Targets are the
    task's business (`cnnlstm.tasks`)."""

    center: np.ndarray  # (C,)
    scale: np.ndarray  # (C,)

    def apply(self, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Dense windows ``(N, C, L)`` -> normalised float32, zero beyond lengths."""
        out = (x - self.center[None, :, None]) / self.scale[None, :, None]
        mask = np.arange(x.shape[-1])[None, :] < lengths[:, None]  # (N, L)
        return (out * mask[:, None, :]).astype(np.float32)

    def apply_rows(self, rows: np.ndarray) -> np.ndarray:
        """Stream rows ``(T, C)`` -> normalised float32: the same arithmetic as `apply`, once
        per sample instead of once per window that overlaps it."""
        return ((rows - self.center[None, :]) / self.scale[None, :]).astype(np.float32)

    def pad_values(self, n_channels: int) -> np.ndarray:
        """What `apply` leaves beyond a window's length, per channel (a zero; its sign as
        ``((0 - center) / scale) * 0`` gives it, so gathered batches equal `apply`'s bit for
        bit)."""
        zero = np.zeros((1, n_channels), np.float32)
        out = (zero - self.center[None, :]) / self.scale[None, :]
        return (out * np.zeros((1, n_channels), bool)).astype(np.float32)[0]

    def to_dict(self) -> dict[str, Any]:
        return {"center": self.center.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        return cls(np.asarray(d["center"], np.float32), np.asarray(d["scale"], np.float32))


def center_scale(v: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Column statistics of (M, K) values; a constant column gets scale 1 (never NaN)."""
    if method == "none" or len(v) == 0:
        return np.zeros(v.shape[1], np.float32), np.ones(v.shape[1], np.float32)
    if method == "robust":
        q1, med, q3 = np.percentile(v, [25, 50, 75], axis=0)
        center, scale = med, (q3 - q1) / 1.349
    else:
        center, scale = v.mean(0, dtype=np.float64), v.std(0, dtype=np.float64)
    return _finite_scale(center, scale)


def _finite_scale(center, scale) -> tuple[np.ndarray, np.ndarray]:
    scale = np.where(
        np.isfinite(scale) & (scale > 1e-8 * np.maximum(1, np.abs(center))), scale, 1.0
    )
    return np.asarray(center).astype(np.float32), np.asarray(scale).astype(np.float32)


def coverage(first: np.ndarray, lengths: np.ndarray, n_rows: int) -> np.ndarray:
    """(T,) how many windows cover each row with a valid sample (padding excluded)."""
    end = np.asarray(first, np.int64) + np.asarray(lengths, np.int64)
    d = np.bincount(first, minlength=n_rows + 1) - np.bincount(end, minlength=n_rows + 1)
    return np.cumsum(d[:n_rows])


def weighted_center_scale(rows: np.ndarray, counts: np.ndarray, method: str):
    """`center_scale` of the values each row holds, every row repeated ``counts`` times (the
    valid samples of overlapping windows), without repeating them: weighted mean and standard
    deviation (float64); robust: the order statistics of one channel's repeated values at a
    time (exactly `np.percentile`'s)."""
    keep = np.flatnonzero(counts > 0)
    v, w = rows[keep], counts[keep].astype(np.int64)
    n_ch = rows.shape[1]
    if method == "none" or not len(v):
        return np.zeros(n_ch, np.float32), np.ones(n_ch, np.float32)
    if method == "robust":
        q = np.stack([np.percentile(np.repeat(v[:, k], w), [25, 50, 75]) for k in range(n_ch)])
        center, scale = q[:, 1], (q[:, 2] - q[:, 0]) / 1.349
        return _finite_scale(center, scale)
    total = float(w.sum())
    v64 = v.astype(np.float64)
    center = (w @ v64) / total
    v64 -= center
    np.square(v64, out=v64)
    scale = np.sqrt((w @ v64) / total)
    return _finite_scale(center, scale)


def fit_normalizer(train: Windows, method: str = "standard") -> Normalizer:
    """Fit on the training windows' valid samples only: each sample counted once per window
    that holds it (as if every window were materialised), from the stream rows."""
    if len(train) == 0:
        raise ValueError("cannot fit normalisation statistics: the training split is empty")
    counts = coverage(train.first, train.lengths, len(train.rows))
    center, scale = weighted_center_scale(train.rows, counts, method)
    return Normalizer(center, scale)


# ---------------------------------------------------------------------------------------------
# torch side: a Dataset, and a batcher that keeps a split on one device


def to_tensors(w: Windows, norm: Normalizer | None, encode_y=None):
    """(x normalised, lengths, y encoded for training by the task's `encode_y`) as tensors."""
    import torch

    x = norm.apply(w.x, w.lengths) if norm is not None else w.x
    y = encode_y(w.y) if encode_y is not None else w.y
    return (
        torch.from_numpy(np.ascontiguousarray(x)),
        torch.from_numpy(w.lengths),
        torch.from_numpy(np.ascontiguousarray(y)),
    )


def WindowDataset(w: Windows, norm: Normalizer | None = None, encode_y=None):  # noqa: N802
    """A map-style torch Dataset of (x (C, L), length, y) for use with a DataLoader."""
    from torch.utils.data import TensorDataset

    return TensorDataset(*to_tensors(w, norm, encode_y))


def fits_on_device(nbytes: int, device: Any, fraction: float = 0.5) -> bool:
    """Whether a split of nbytes may live on the device (CUDA: under `fraction` of free memory)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return nbytes < fraction * free
    return dev.type == "cpu" or nbytes < 2 * 1024**3


class Batches:
    """A split as views, moved to `device` once when it fits (GPU-resident path): the stream
    rows its windows use, normalised once (float32 (T', C)), each window's first row, length
    and encoded target. Each epoch gathers batches by index arithmetic from a permutation
    seeded by (seed, epoch), so the order is a pure function of the epoch (exact resume), no
    copy of every overlapping window exists, and there is no worker or host copy per batch."""

    def __init__(
        self,
        w: Windows,
        norm: Normalizer | None,
        device: Any,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        encode_y=None,
    ):
        import torch

        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        rows, first = used_rows(w.rows, w.first, w.lengths)
        if norm is not None:
            rows, pad = norm.apply_rows(rows), norm.pad_values(w.n_channels)
        else:
            pad = np.zeros(w.n_channels, np.float32)
        y = encode_y(w.y) if encode_y is not None else w.y
        rows = np.ascontiguousarray(rows, np.float32)
        if not rows.flags.writeable:  # read-only (e.g. from Arrow): torch needs its own copy
            rows = rows.copy()
        self.rows = torch.from_numpy(rows)
        self.first = torch.from_numpy(first)
        self.lengths = torch.from_numpy(w.lengths)
        self.y = torch.from_numpy(np.ascontiguousarray(y))
        self.pad = torch.from_numpy(pad)[:, None]  # (C, 1)
        self.size = w.size
        self.windows = w  # the source windows (raw targets, entities) for metrics
        self.norm = norm
        self.device = torch.device(device)
        nbytes = sum(t.numel() * t.element_size() for t in self._all())
        self.resident = fits_on_device(nbytes, self.device)
        if self.resident:
            self.rows, self.first, self.lengths, self.y, self.pad = (
                t.to(self.device) for t in self._all()
            )
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last = drop_last
        self.epoch = 0
        self.full_length = bool((self.lengths == self.size).all()) if len(self) else True

    def _all(self):
        return self.rows, self.first, self.lengths, self.y, self.pad

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def n_batches(self) -> int:
        n = len(self)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int | None = None):
        """The window order of an epoch (a pure function of seed and epoch): a permutation when
        shuffling, else 0..N-1. Distributed training slices it per rank (`cnnlstm.ddp`)."""
        import torch

        n = len(self)
        if not self.shuffle:
            return torch.arange(n)
        e = self.epoch if epoch is None else epoch
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
        return torch.randperm(n, generator=g)

    def gather(self, first, lengths):
        """(n, C, L) float32 windows from their first rows and lengths, on the rows' device:
        one gather of ``first + min(j, length - 1)`` per position and channel, the padding
        value beyond each length."""
        import torch

        dev = self.rows.device
        n_ch, size = self.rows.shape[1], self.size
        pos = torch.arange(size, device=dev)
        r = first[:, None] + torch.minimum(pos[None, :], (lengths[:, None] - 1).clamp_min(0))
        flat = r[:, None, :] * n_ch + torch.arange(n_ch, device=dev)[None, :, None]
        x = self.rows.reshape(-1)[flat]  # (n, C, L)
        if not self.full_length:
            x = torch.where((pos[None, :] < lengths[:, None])[:, None, :], x, self.pad)
        return x

    def take(self, i):
        """The batch of windows at indices `i` (a 1-D index tensor): (x, lengths or None, y) on
        the device."""
        i = i.to(self.first.device)
        ln, y = self.lengths[i], self.y[i]
        x = self.gather(self.first[i], ln)
        if not self.resident:
            x, ln, y = (t.to(self.device) for t in (x, ln, y))
        return x, (None if self.full_length else ln), y

    def __iter__(self):
        order = self.order()
        for b in range(self.n_batches()):
            yield self.take(order[b * self.batch_size : (b + 1) * self.batch_size])


def used_rows(rows: np.ndarray, first: np.ndarray, lengths: np.ndarray):
    """(the rows some window holds a valid sample of, each window's first row among them): a
    split keeps only its own entities' samples. No copy when every row is used."""
    first = np.asarray(first, np.int64)
    used = coverage(first, lengths, len(rows)) > 0
    if used.all():
        return rows, first
    new = np.cumsum(used) - 1
    return rows[used], new[first].astype(np.int64)
