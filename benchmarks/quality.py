"""`model: auto` against the MiniRocket + ridge baseline, side by side, over seeds.

    python benchmarks/quality.py --generated                  # generated tasks (minutes)
    python benchmarks/quality.py --hapt --seeds 0 1 2   # HAPT 6 and 12 classes (hours, 2 cores)
    python benchmarks/quality.py --hapt --tasks hapt6 --budget 3600

For each task and seed: `cnnlstm.auto.auto_select` chooses a preset on validation data (never
test), the winner is refitted on train + validation and evaluated once on test; the same run fits
the baseline on the same windows (`train.baseline: report`). Prints one row per (task, seed):
the chosen preset, both test figures (the task's selection metric), the fit times, then the means;
results go to benchmarks/results/quality-<date>.json (for BENCHMARKS.md).

Generated tasks: `freq` (the class sets a sine frequency: a shape), `level` (the class sets the
signal's level under unit noise: MiniRocket's zero-sum kernels are blind to it) and `rul`
(regression of a decaying amplitude).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
HAPT_PARQUET = ROOT.parent / "shared" / "data" / "hapt" / "hapt_50hz.parquet"


def _frame(sigs: dict, labs: dict | None, extra: dict | None = None) -> pl.DataFrame:
    frames = []
    for e, sig in sigs.items():
        d = {
            "entity_id": [e] * len(sig),
            "timestamp": pl.Series(np.arange(len(sig), dtype=np.int64) * 1_000_000)
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC"),
        }
        for i in range(sig.shape[1]):
            d[f"c{i}"] = pl.Series(sig[:, i], dtype=pl.Float32)
        if labs is not None:
            d["label"] = labs[e]
        for k, v in (extra or {}).get(e, {}).items():
            d[k] = v
        frames.append(pl.DataFrame(d))
    return pl.concat(frames)


def generated(name: str, seed: int) -> tuple[pl.DataFrame, dict]:
    rng = np.random.default_rng(seed)
    n_ent, seg, n_seg = 16, 128, 12
    sigs, labs, extra = {}, {}, {}
    for i in range(n_ent):
        cls = rng.integers(1, 4, n_seg)
        lab = np.repeat(cls, seg)
        if name == "freq":
            f = np.array([{1: 0.03, 2: 0.06, 3: 0.12}[c] for c in lab])
            x0 = np.sin(2 * np.pi * np.cumsum(f) + rng.uniform(0, 6)) + 0.3 * rng.normal(
                size=len(lab)
            )
        elif name == "level":
            x0 = (lab - 2.0) * 0.5 + rng.normal(size=len(lab))
        else:  # rul: amplitude decays to failure
            n = seg * n_seg
            life = np.arange(n)[::-1].astype(float)
            x0 = (0.2 + life / n) * np.sin(np.arange(n) * 0.3) + 0.1 * rng.normal(size=n)
            extra[f"e{i}"] = {"rul": life.tolist()}
        sigs[f"e{i}"] = np.stack([x0, rng.normal(size=len(x0))], 1)
        labs[f"e{i}"] = lab.tolist()
    window = {"size": 64, "stride": 32, "split": {"method": "entity", "test_fraction": 0.25}}
    raw: dict = {
        "data": {
            "name": name,
            "entity": {"column": "entity_id"},
            "timestamp": {"column": "timestamp"},
            "channels": [{"name": "c0"}, {"name": "c1"}],
        },
        "window": window,
    }
    if name == "rul":
        raw["data"]["columns"] = {"rul": "float"}
        raw["window"] |= {"label": "regression_end", "target_column": "rul"}
        raw["task"] = {"kind": "regress"}
        return _frame(sigs, None, extra), raw
    raw["data"]["label"] = {"column": "label"}
    return _frame(sigs, labs), raw


def hapt(name: str) -> tuple[pl.LazyFrame, dict]:
    import sys

    import yaml

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_hapt import hapt_readings  # type: ignore[import-not-found]

    conf = "configs/hapt.yaml" if name == "hapt6" else "configs/hapt_12class.yaml"
    raw = yaml.safe_load((ROOT / conf).read_text())
    raw["data"].pop("landing", None)
    return hapt_readings(HAPT_PARQUET), raw


def run_one(task: str, seed: int, budget: float | None, epochs: int | None) -> dict:
    from cnnlstm.auto import auto_select
    from cnnlstm.config import config_from_dict
    from cnnlstm.mlflow_tracker import MlflowTracker
    from cnnlstm.train import train_from_config

    readings, raw = hapt(task) if task.startswith("hapt") else generated(task, seed)
    with tempfile.TemporaryDirectory() as tmp:
        raw = raw | {
            "lake": {"uri": f"{tmp}/lake"},
            "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db", "experiment": task},
            "model": {"arch": "auto", "auto": {"budget_s": budget}},
        }
        raw["train"] = (raw.get("train") or {}) | {
            "seed": seed,
            "progress": False,
            "plots": False,
            "baseline": "report",
        }
        if epochs:
            raw["train"]["epochs"] = epochs
        cfg = config_from_dict(raw, base_dir=Path(tmp))
        frame = readings.collect() if isinstance(readings, pl.LazyFrame) else readings
        t0 = time.perf_counter()
        final, study = auto_select(cfg, Path(tmp) / "out", readings=frame)
        tracker = MlflowTracker(final)
        with tracker.run(name="final"):
            m = train_from_config(final, Path(tmp) / "final", readings=frame, tracker=tracker)
        wall = time.perf_counter() - t0
    metric = study["metric"]
    b = m.get("baseline", {})
    same = study["preset"] == "minirocket"  # the chosen model is the baseline: no second copy
    return {
        "task": task,
        "seed": seed,
        "metric": metric,
        "preset": study["preset"],
        "val_per_preset": {t["params"]["model.preset"]: t["value"] for t in study["trials"]},
        "auto_test": m["test"].get(metric),
        "baseline_test": m["test"].get(metric) if same else (b.get("test") or {}).get(metric),
        "baseline_is_model": same,
        # classification: accuracy too (the HAPT figure), beside the selection metric
        "auto_test_accuracy": m["test"].get("accuracy"),
        "baseline_test_accuracy": m["test"].get("accuracy")
        if same
        else (b.get("test") or {}).get("accuracy"),
        "auto_seconds": wall,
        "baseline_fit_seconds": m.get("fit_seconds") if same else b.get("fit_seconds"),
    }


def _run_job(job: tuple[str, int, float | None, int | None, int]) -> dict:
    import torch

    task, seed, budget, epochs, threads = job
    torch.set_num_threads(threads)
    return run_one(task, seed, budget, epochs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--generated", action="store_true")
    ap.add_argument("--hapt", action="store_true")
    ap.add_argument("--tasks", nargs="*", default=None)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--budget", type=float, default=None, help="seconds for each auto choice")
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    ap.add_argument(
        "--jobs", type=int, default=1, help="(task, seed) runs at a time, cores/jobs threads each"
    )
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default: dated file)")
    args = ap.parse_args()
    tasks = args.tasks or (
        (["freq", "level", "rul"] if args.generated or not args.hapt else [])
        + (["hapt6", "hapt12"] if args.hapt else [])
    )
    import torch

    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    jobs = [(t, s, args.budget, args.epochs, threads) for t in tasks for s in args.seeds]
    rows = []
    print(
        f"{'task':<8}{'seed':>5}  {'preset':<16}{'metric':<10}{'auto test':>10}"
        f"{'baseline':>10}{'auto s':>9}{'base s':>8}"
    )
    if args.jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"))
        results = pool.map(_run_job, jobs)
    else:
        results = map(_run_job, jobs)
    for r in results:
        rows.append(r)
        print(
            f"{r['task']:<8}{r['seed']:>5}  {r['preset']:<16}{r['metric']:<10}"
            f"{r['auto_test']:>10.4f}{(r['baseline_test'] or float('nan')):>10.4f}"
            f"{r['auto_seconds']:>9.0f}{(r['baseline_fit_seconds'] or float('nan')):>8.1f}"
            + ("  (baseline = the chosen model)" if r["baseline_is_model"] else ""),
            flush=True,
        )
    for t in tasks:
        rs = [r for r in rows if r["task"] == t]
        a = np.mean([r["auto_test"] for r in rs])
        b = np.mean([r["baseline_test"] for r in rs if r["baseline_test"] is not None] or [np.nan])
        print(f"mean {t}: auto {a:.4f}  baseline {b:.4f}  ({rs[0]['metric']}, {len(rs)} seeds)")
        acc = [(r["auto_test_accuracy"], r["baseline_test_accuracy"]) for r in rs]
        if all(x is not None and y is not None for x, y in acc):
            print(
                f"mean {t}: auto accuracy {np.mean([x for x, _ in acc]):.4f}  baseline accuracy "
                f"{np.mean([y for _, y in acc]):.4f}"
            )
    stamp = f"{datetime.now(UTC):%Y-%m-%d}-{'-'.join(tasks)}"
    out = args.out or ROOT / "benchmarks" / "results" / f"quality-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "jobs": args.jobs,
        "threads_per_job": threads,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "card": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out} ({meta})")


if __name__ == "__main__":
    main()
