"""Reproduce the HAPT accuracy numbers (docs/hapt_results.md).

    python benchmarks/train_hapt.py --config configs/hapt.yaml --out runs/hapt6
    python benchmarks/train_hapt.py --config configs/hapt_12class.yaml --out runs/hapt12

Reads the lake named by the config when it has been ingested (`cnnlstm ingest`); with
``--parquet`` it reads the bundled table directly (same readings contract, no ingest needed).
Prints one JSON line with accuracy, macro-F1, wall time and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import torch

from cnnlstm.config import load_config
from cnnlstm.train import train_from_config

CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")


def hapt_readings(path: Path) -> pl.LazyFrame:
    """The bundled HAPT parquet in the readings contract (what the lake reader returns)."""
    t0 = datetime(1970, 1, 1, tzinfo=UTC)  # as configs/hapt.yaml: the source has no clock
    zfill = lambda c: pl.col(c).cast(pl.String).str.zfill(2)  # noqa: E731
    return pl.scan_parquet(path).select(
        pl.format("exp{}_user{}", zfill("experiment"), zfill("user")).alias("entity_id"),
        (
            pl.lit(t0).dt.cast_time_unit("us")
            + pl.duration(milliseconds=pl.col("sample").cast(pl.Int64) * 20)
        ).alias("timestamp"),
        *[pl.col(c).cast(pl.Float32) for c in CHANNELS],
        pl.col("activity_id").cast(pl.Int64).alias("label"),
        pl.col("experiment").cast(pl.Int64),
        pl.col("user").cast(pl.Int64),
        pl.col("split").cast(pl.String),
        pl.col("activity").cast(pl.String),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("configs/hapt.yaml"))
    ap.add_argument("--out", type=Path, default=Path("runs/hapt"))
    ap.add_argument(
        "--parquet", type=Path, default=None, help="read this HAPT parquet instead of the lake"
    )
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    args = ap.parse_args()

    t0 = time.perf_counter()
    cfg = load_config(args.config, args.set)
    readings = hapt_readings(args.parquet) if args.parquet else None
    m = train_from_config(cfg, args.out, readings=readings)
    wall = time.perf_counter() - t0
    summary = {
        "config": str(args.config),
        "overrides": args.set,
        "test_accuracy": m["test"]["accuracy"],
        "test_macro_f1": m["test"]["macro_f1"],
        "val_accuracy": m.get("val", {}).get("accuracy"),
        "val_macro_f1": m.get("val", {}).get("macro_f1"),
        "n_windows": m["n_windows"],
        "best_epoch": m["best_epoch"],
        "epochs_run": m["epochs_run"],
        "refit_full": m.get("refit_full", False),
        "refit_fit_seconds": round(m["refit"]["fit_seconds"], 1) if "refit" in m else None,
        "wall_seconds": round(wall, 1),
        "fit_seconds": round(m["fit_seconds"], 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "device": m["device"],
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
