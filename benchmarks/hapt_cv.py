"""Choose HAPT training settings by cross-validation over the training users only.

    python benchmarks/hapt_cv.py --variants benchmarks/hapt_cv_variants.yaml --folds 3 --jobs 2

A 4-user validation set cannot tell settings 1-2 points apart (docs/hapt_results.md), so this
deals the 21 standard *training* users into `--folds` folds by user (`window.split.val_folds`)
and, for each variant and fold, trains on the other folds for exactly `train.epochs` epochs and
keeps the final weights (what `train.refit_full` does on all 21 users), then scores the held-out
fold. The 9 test users are filtered out before windowing: their windows are never built here,
so nothing in this script can look at test.

Each (variant, fold) run is one process with one torch thread; `--jobs` run at once. Results
are appended as JSON lines to `--out`/results.jsonl (one line per fold, with the per-epoch
validation curve) and summarised per variant at the end: mean and pooled held-out accuracy and
macro-F1 of the final epoch, and the mean curve's best epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PARQUET = ROOT.parent / "shared" / "data" / "hapt" / "hapt_50hz.parquet"

CV_OVERRIDES = [  # fixed-epoch runs with final weights, no selection inside a fold
    "train.refit_full=false",
    "train.restore_best=false",
    "train.patience=null",
    "train.plots=false",
    "train.progress=false",
    "train.num_threads=1",
    "train.baseline=off",  # the MiniRocket baseline is not a variant: not fitted per fold
]


def _readings(parquet: Path):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import polars as pl
    from train_hapt import hapt_readings

    return hapt_readings(parquet).filter(pl.col("split") == "train")  # test users never loaded


def _die_with_parent() -> None:
    """Pool workers exit when the driver is killed (Linux prctl PR_SET_PDEATHSIG), so an
    interrupted study leaves no orphan training runs behind on the CPU."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def run_fold(
    config: str, name: str, overrides: list[str], fold: int, folds: int, parquet: str, out: str
) -> dict:
    from cnnlstm.config import load_config
    from cnnlstm.train import train_from_config

    sets = [
        *overrides,
        *CV_OVERRIDES,
        f"window.split.val_folds={folds}",
        f"window.split.val_fold={fold}",
    ]
    cfg = load_config(Path(config), sets)
    t0 = time.perf_counter()
    m = train_from_config(cfg, Path(out) / name / f"fold{fold}", readings=_readings(Path(parquet)))
    curve = [
        {"epoch": i + 1, "acc": h.get("val_accuracy"), "f1": h.get("val_macro_f1")}
        for i, h in enumerate(m["history"])
    ]
    return {
        "variant": name,
        "overrides": overrides,
        "fold": fold,
        "folds": folds,
        "n_windows": m["n_windows"],
        "acc": m["val"]["accuracy"],
        "f1": m["val"]["macro_f1"],
        "n": m["val"]["n"],
        "confusion_matrix": m["val"]["confusion_matrix"],
        "curve": curve,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def summarise(rows: list[dict]) -> list[dict]:
    import numpy as np

    out = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        rs = sorted((r for r in rows if r["variant"] == name), key=lambda r: r["fold"])
        n = np.array([r["n"] for r in rs], dtype=float)
        acc = np.array([r["acc"] for r in rs])
        f1 = np.array([r["f1"] for r in rs])
        curves = [[p["f1"] for p in r["curve"]] for r in rs]
        k = min(len(c) for c in curves)
        mean_curve = np.mean([c[:k] for c in curves], axis=0)
        out.append(
            {
                "variant": name,
                "folds_done": len(rs),
                "mean_acc": round(float(acc.mean()), 4),
                "pooled_acc": round(float((acc * n).sum() / n.sum()), 4),
                "mean_f1": round(float(f1.mean()), 4),
                "min_fold_acc": round(float(acc.min()), 4),
                "best_epoch_mean_curve": int(mean_curve.argmax()) + 1,
                "best_mean_curve_f1": round(float(mean_curve.max()), 4),
                "minutes_per_fold": round(float(np.mean([r["seconds"] for r in rs])) / 60, 1),
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "hapt.yaml"))
    ap.add_argument("--variants", type=Path, help="YAML: {name: [override, ...]}")
    ap.add_argument("--name", default="base", help="variant name when --variants is not given")
    ap.add_argument("--set", action="append", default=[], help="override for --name")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2)))
    ap.add_argument("--parquet", default=str(DEFAULT_PARQUET))
    ap.add_argument("--out", default=str(ROOT / "runs" / "cv"))
    ap.add_argument("--summary", action="store_true", help="only summarise --out/results.jsonl")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    if not args.summary:
        variants = (
            yaml.safe_load(args.variants.read_text()) if args.variants else {args.name: args.set}
        )
        tasks = [(n, list(o or []), f) for n, o in variants.items() for f in range(args.folds)]
        ctx = get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=_die_with_parent) as pool:
            futs = {
                pool.submit(run_fold, args.config, n, o, f, args.folds, args.parquet, str(out)): (
                    n,
                    f,
                )
                for n, o, f in tasks
            }
            for fut in as_completed(futs):
                r = fut.result()
                with results.open("a") as fh:
                    fh.write(json.dumps(r) + "\n")
                print(
                    f"{r['variant']:<24} fold {r['fold']}: acc {r['acc']:.4f} f1 {r['f1']:.4f} "
                    f"({r['seconds']:.0f} s)",
                    flush=True,
                )
    rows = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
    for s in summarise(rows):
        print(json.dumps(s))


if __name__ == "__main__":
    main()
