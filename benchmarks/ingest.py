"""Ingest throughput against raw polars, measured in the same run.

Generates a CSV of N rows x 9 float channels over E entities (default 5,000,000 x 9 over 50
entities, ~0.6 GB), then times, each in a fresh subprocess (so peak RSS is per variant):

- raw:  ``pl.read_csv(path).write_parquet(out)``  - the floor any ingest pays
- ours: ``cnnlstm.ingest.ingest`` - hash, parse, map, validate (pandera), dedup, partition by
        entity/date, atomic writes, ledger

and prints rows/s, the ratio ours/raw (target >= 0.75) and peak memory.

    python benchmarks/ingest.py [--rows 5000000] [--entities 50] [--repeat 3] [--ts epoch_ms|iso]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

WORK = Path(__file__).resolve().parent / "_work"
CHANNELS = [f"ch{i}" for i in range(9)]


def generate(path: Path, rows: int, entities: int, ts: str) -> None:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(0)
    per = rows // entities
    ent = np.repeat(np.arange(entities), per)
    t_ms = 1_700_000_000_000 + np.tile(np.arange(per, dtype=np.int64) * 10, entities)  # 100 Hz
    cols = {"device": pl.Series([f"dev-{i:03d}" for i in ent])}
    if ts == "iso":
        cols["time"] = pl.Series(t_ms).cast(pl.Datetime("ms")).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
    else:
        cols["time"] = pl.Series(t_ms)
    for c in CHANNELS:
        cols[c] = pl.Series(rng.normal(0, 1, per * entities).astype(np.float32))
    cols["label"] = pl.Series(rng.integers(0, 5, per * entities))
    pl.DataFrame(cols).write_csv(path)


def config(lake: Path, ts: str):
    from cnnlstm.config import config_from_dict

    return config_from_dict(
        {
            "data": {
                "name": "bench",
                "entity": {"column": "device"},
                "timestamp": {"column": "time", "format": "iso" if ts == "iso" else "epoch_ms"},
                "channels": [{"name": c, "min": -100, "max": 100} for c in CHANNELS],
                "label": {"column": "label", "dtype": "int"},
            },
            "lake": {"uri": str(lake)},
        }
    )


def run_variant(variant: str, csv: Path, ts: str) -> dict:
    out = WORK / f"out-{variant}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # imports outside the timed region: we measure the work, not interpreter start-up
    import polars as pl

    from cnnlstm.ingest import ingest

    t0 = time.perf_counter()
    if variant == "raw":
        df = pl.read_csv(csv)
        df.write_parquet(out / "raw.parquet")
        rows = df.height
    else:
        rep = ingest(config(out / "lake", ts), [str(csv)])
        f = rep.files[0]
        assert f.outcome == "committed" and f.quarantined == 0, f
        rows = f.accepted
    secs = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "rows": rows, "seconds": secs, "peak_rss_mb": rss_mb}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--entities", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ts", choices=["epoch_ms", "iso"], default="epoch_ms")
    ap.add_argument("--_variant")
    ap.add_argument("--_csv")
    a = ap.parse_args()
    if a._variant:  # child process
        print(json.dumps(run_variant(a._variant, Path(a._csv), a.ts)))
        return

    WORK.mkdir(exist_ok=True)
    csv = WORK / f"bench-{a.rows}-{a.entities}-{a.ts}.csv"
    if not csv.exists():
        print(f"generating {csv.name} ...", flush=True)
        generate(csv, a.rows, a.entities, a.ts)
    size_mb = csv.stat().st_size / 1e6
    print(
        f"{a.rows:,} rows x {len(CHANNELS)} channels, {a.entities} entities, {size_mb:.0f} MB CSV"
    )

    results: dict[str, list[dict]] = {"raw": [], "ours": []}
    for _ in range(a.repeat):  # interleave, so drift hits both alike
        for v in ("raw", "ours"):
            cmd = [sys.executable, __file__, "--_variant", v, "--_csv", str(csv), "--ts", a.ts]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[v].append(json.loads(res.stdout.strip().splitlines()[-1]))
    summary = {}
    for v, rs in results.items():
        secs = statistics.median(r["seconds"] for r in rs)
        summary[v] = {
            "median_s": secs,
            "rows_per_s": rs[0]["rows"] / secs,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
        }
        print(
            f"{v:5s} median {secs:6.2f} s  {summary[v]['rows_per_s']:>12,.0f} rows/s  "
            f"peak RSS {summary[v]['peak_rss_mb']:,.0f} MB  (runs: "
            + ", ".join(f"{r['seconds']:.2f}" for r in rs)
            + ")"
        )
    ratio = summary["ours"]["rows_per_s"] / summary["raw"]["rows_per_s"]
    print(f"ratio ours/raw throughput: {ratio:.2f}  (target >= 0.75)")
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, "
        f"python {platform.python_version()}, "
        f"date {datetime.now(UTC).date()}"
    )
    shutil.rmtree(WORK / "out-raw", ignore_errors=True)
    shutil.rmtree(WORK / "out-ours", ignore_errors=True)


if __name__ == "__main__":
    main()
