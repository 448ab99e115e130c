"""Helpers for the window/model/training tests (imported explicitly; not a pytest conftest)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

# the raw HAPT table beside the checkout (../shared from the repository root); optional
HAPT_PARQUET = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hapt" / "hapt_50hz.parquet"
)
T0 = datetime(2014, 1, 1, tzinfo=UTC)


def hapt_readings(path: Path = HAPT_PARQUET) -> pl.LazyFrame:
    """The bundled HAPT table in the readings contract (what the lake reader returns)."""
    lf = pl.scan_parquet(path)
    return lf.select(
        pl.format(
            "exp{}_user{}",
            pl.col("experiment").cast(pl.String).str.zfill(2),
            pl.col("user").cast(pl.String).str.zfill(2),
        ).alias("entity_id"),
        (
            pl.lit(T0).dt.cast_time_unit("us")
            + pl.duration(milliseconds=pl.col("sample").cast(pl.Int64) * 20)
        ).alias("timestamp"),
        *[
            pl.col(c).cast(pl.Float32)
            for c in ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
        ],
        pl.col("activity_id").cast(pl.Int64).alias("label"),
        pl.col("experiment").cast(pl.Int64),
        pl.col("user").cast(pl.Int64),
        pl.col("split").cast(pl.String),
        pl.col("activity").cast(pl.String),
    )


def make_readings(
    signals: dict[str, np.ndarray],
    labels: dict[str, np.ndarray] | None = None,
    step_ms: int = 1000,
    channels: tuple[str, ...] | None = None,
    extra: dict[str, dict[str, object]] | None = None,
    timestamps: dict[str, np.ndarray] | None = None,
) -> pl.DataFrame:
    """A tiny readings frame: signals[entity] is (T, C); timestamps are step_ms apart unless
    given (as integer milliseconds)."""
    frames = []
    for e, sig in signals.items():
        sig = np.asarray(sig, dtype=np.float32)
        if sig.ndim == 1:
            sig = sig[:, None]
        names = channels or tuple(f"c{i}" for i in range(sig.shape[1]))
        ms = timestamps[e] if timestamps else np.arange(len(sig)) * step_ms
        d = {
            "entity_id": [e] * len(sig),
            "timestamp": pl.Series(np.asarray(ms, dtype=np.int64) * 1000)
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC"),
        }
        for i, n in enumerate(names):
            d[n] = pl.Series(sig[:, i], dtype=pl.Float32)
        if labels is not None:
            d["label"] = pl.Series(np.asarray(labels[e]).tolist())
        for k, v in (extra or {}).get(e, {}).items():
            d[k] = [v] * len(sig)
        frames.append(pl.DataFrame(d))
    return pl.concat(frames, how="vertical")
