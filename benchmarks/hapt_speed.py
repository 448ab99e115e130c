"""Time to accuracy on HAPT: the default config against the tutorial pipeline and MiniRocket.

    python benchmarks/hapt_speed.py [--seeds 0 1 2] [--contenders default tutorial minirocket]

Same windows for every contender: configs/hapt.yaml's data and window settings on the bundled
table (6 activities, 128 samples, training stride 32, test stride 64, the standard subject split:
21 training users, 9 test users), normalised on the training users. For each seed, in turn:

  default     configs/hapt.yaml's model and training settings through cnnlstm's own training
              loop (`cnnlstm.loop`): what `cnnlstm train -c configs/hapt.yaml` fits.
  tutorial    the naive pipeline of the tutorials (benchmarks/train_throughput.py): per-item
              Dataset + DataLoader, the window cut into 4 sub-sequences, a TimeDistributed CNN as
              a Python loop, a 2-layer LSTM of 128 read at its last step; Adam 1e-3, batch 64,
              `--tutorial-epochs` epochs, no augmentation.
  minirocket  MiniRocket (10,000 features) + RidgeClassifierCV from aeon (the `bench` extra:
              pip install -e '.[bench]'), the peer a practitioner tries first; where aeon is not
              installed, cnnlstm's own MiniRocket + ridge (`model.arch: minirocket`) on all
              training windows, labelled as such.

The epoch-based contenders are scored on the test users after every epoch *for this benchmark
only* (that time is not counted): "t93" is the training wall time until test accuracy first
reaches `--target` (0.93). Nothing here chooses a setting: the default's settings were chosen by
cross-validation over the training users (benchmarks/hapt_cv.py, docs/hapt_results.md).

Prints one line per (contender, seed), a summary with mean and range, the load average and the
thread count, and writes the rows as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
DEFAULT_PARQUET = ROOT.parent / "shared" / "data" / "hapt" / "hapt_50hz.parquet"


def load_windows(config: Path, parquet: Path, sets: list[str]):
    from train_hapt import hapt_readings

    from cnnlstm.config import load_config
    from cnnlstm.tasks import make_task
    from cnnlstm.train import prepare_data

    cfg = load_config(config, ["window.split.val_fraction=0", *sets])
    task = make_task(cfg.task, cfg.window)
    channels = [c.name for c in cfg.data.channels]
    prep = prepare_data(hapt_readings(parquet), channels, cfg.window, task)
    return cfg, prep


def _accuracy(model, b, task) -> float:
    from cnnlstm.loop import predict

    out, _ = predict(model, b, task)
    y = b.windows.y
    return (
        float((np.asarray(out).argmax(-1) == y).mean())
        if np.ndim(out) > 1
        else float((np.asarray(out) == y).mean())
    )


def run_default(cfg, prep, seed: int, target: float, threads: int) -> dict:
    from cnnlstm.loop import EarlyStopping, _Run, seed_everything, train_epoch
    from cnnlstm.train import batches

    torch.set_num_threads(threads)
    tc = cfg.train.model_copy(update={"seed": seed})
    seed_everything(seed, tc.deterministic)
    task = prep.task
    model = task.build_model(cfg.model, prep.parts["train"].x.shape[1], task.n_outputs(prep.ws))
    t0 = time.perf_counter()
    tb = batches(prep.parts["train"], prep, "cpu", tc.batch_size, shuffle=True, seed=seed)
    test_b = batches(prep.parts["test"], prep, "cpu", 512)
    loss_fn = task.loss_fn(tb.y, tc)
    stop = EarlyStopping("train_loss", False, None, False)
    run = _Run(model, tc, tc.epochs * tb.n_batches(), stop)
    fit_s = time.perf_counter() - t0
    curve, t_hit = [], None
    for epoch in range(tc.epochs):
        t1 = time.perf_counter()
        train_epoch(run, tb, loss_fn, epoch, None, lambda step, loss: None)
        fit_s += time.perf_counter() - t1
        acc = _accuracy(run.evaluated, test_b, task)  # benchmark only: not timed
        curve.append(round(acc, 4))
        if t_hit is None and acc >= target:
            t_hit = fit_s
    run.finish()
    acc = _accuracy(model, test_b, task)
    return {"fit_s": fit_s, "t_target_s": t_hit, "acc": acc, "curve": curve}


def run_tutorial(prep, seed: int, target: float, epochs: int, threads: int) -> dict:
    from train_throughput import NaiveCNNRNN, WindowDataset

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tr, te = prep.parts["train"], prep.parts["test"]
    xtr = prep.norm.apply(tr.x, tr.lengths).astype(np.float32)
    xte = torch.from_numpy(prep.norm.apply(te.x, te.lengths).astype(np.float32))
    c, k = xtr.shape[1], int(max(tr.y.max(), te.y.max())) + 1
    model = NaiveCNNRNN("lstm", channels=c, classes=k)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        WindowDataset(xtr, tr.y), batch_size=64, shuffle=True, generator=g
    )
    fit_s, curve, t_hit = 0.0, [], None
    for _ in range(epochs):
        t1 = time.perf_counter()
        model.train()
        for xb, yb in loader:
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        fit_s += time.perf_counter() - t1
        model.eval()
        with torch.inference_mode():  # benchmark only: not timed
            acc = float((model(xte).argmax(-1).numpy() == te.y).mean())
        curve.append(round(acc, 4))
        if t_hit is None and acc >= target:
            t_hit = fit_s
    return {"fit_s": fit_s, "t_target_s": t_hit, "acc": curve[-1], "curve": curve}


def run_minirocket(cfg, prep, seed: int, target: float, threads: int) -> dict:
    torch.set_num_threads(threads)
    tr, te = prep.parts["train"], prep.parts["test"]
    try:
        from aeon.transformations.collection.convolution_based import MiniRocket
    except ImportError:
        MiniRocket = None  # noqa: N806
    if MiniRocket is not None:
        from sklearn.linear_model import RidgeClassifierCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        xtr = prep.norm.apply(tr.x, tr.lengths).astype(np.float32)
        xte = prep.norm.apply(te.x, te.lengths).astype(np.float32)
        t0 = time.perf_counter()
        mr = MiniRocket(n_kernels=10_000, random_state=seed, n_jobs=threads)
        clf = make_pipeline(
            StandardScaler(with_mean=False), RidgeClassifierCV(alphas=np.logspace(-3, 3, 10))
        )
        clf.fit(mr.fit_transform(xtr), tr.y)
        fit_s = time.perf_counter() - t0
        acc = float((clf.predict(mr.transform(xte)) == te.y).mean())
        impl = "aeon MiniRocket + RidgeClassifierCV"
    else:
        from cnnlstm.baseline import fit_closed_form
        from cnnlstm.train import batches

        mcfg = cfg.model.model_copy(
            update={
                "arch": "minirocket",
                "minirocket": cfg.model.minirocket.model_copy(update={"max_windows": None}),
            }
        )
        model = prep.task.build_model(mcfg, tr.x.shape[1], prep.task.n_outputs(prep.ws))
        t0 = time.perf_counter()
        fit_closed_form(model, prep, "cpu", seed)
        fit_s = time.perf_counter() - t0
        acc = _accuracy(model, batches(te, prep, "cpu", 512), prep.task)
        impl = "cnnlstm MiniRocket + ridge (aeon not installed)"
    return {
        "fit_s": fit_s,
        "t_target_s": fit_s if acc >= target else None,
        "acc": acc,
        "impl": impl,
    }


def _fmt_s(v) -> str:
    return "never" if v is None else f"{v:7.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "hapt.yaml")
    ap.add_argument("--parquet", type=Path, default=DEFAULT_PARQUET)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--contenders",
        nargs="+",
        choices=["default", "tutorial", "minirocket"],
        default=["default", "tutorial", "minirocket"],
    )
    ap.add_argument("--target", type=float, default=0.93)
    ap.add_argument("--tutorial-epochs", type=int, default=25)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--set", action="append", default=[], help="config override (all contenders)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "hapt_speed.json")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    cfg, prep = load_windows(args.config, args.parquet, args.set)
    prep_s = time.perf_counter() - t0
    n = {k: len(v) for k, v in prep.parts.items()}
    cpu = platform.processor() or platform.machine()
    print(
        f"# hapt speed {datetime.now(UTC):%Y-%m-%d %H:%M} UTC | {cpu}, {os.cpu_count()} cores | "
        f"torch {torch.__version__} | "
        f"{args.threads} threads | load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"# windows: train {n['train']:,} test {n['test']:,} (prepared in {prep_s:.0f} s) | "
        f"target {args.target:.0%} | seeds {args.seeds}"
    )
    print(
        f"{'contender':<11} {'seed':>4} {'fit s':>8} {'t' + str(round(args.target * 100)):>8} "
        f"{'test acc':>9}  load"
    )
    rows = []
    for seed in args.seeds:  # interleaved: each seed runs every contender in turn
        for name in args.contenders:
            if name == "default":
                r = run_default(cfg, prep, seed, args.target, args.threads)
            elif name == "tutorial":
                r = run_tutorial(prep, seed, args.target, args.tutorial_epochs, args.threads)
            else:
                r = run_minirocket(cfg, prep, seed, args.target, args.threads)
            r |= {"contender": name, "seed": seed, "load": round(os.getloadavg()[0], 2)}
            rows.append(r)
            _save(args.out, rows, None)  # after every row: an interrupted run keeps its rows
            print(
                f"{name:<11} {seed:>4} {r['fit_s']:8.1f} {_fmt_s(r['t_target_s']):>8} "
                f"{r['acc']:9.4f}  {r['load']:.1f}" + (f"  ({r['impl']})" if "impl" in r else ""),
                flush=True,
            )
    print("# mean (min-max) over seeds")
    summ = {}
    for name in args.contenders:
        rs = [r for r in rows if r["contender"] == name]
        fit = [r["fit_s"] for r in rs]
        acc = [r["acc"] for r in rs]
        hit = [r["t_target_s"] for r in rs]
        t_hit = statistics.mean(hit) if all(h is not None for h in hit) else None
        summ[name] = {"fit_s": statistics.mean(fit), "acc": statistics.mean(acc), "t_target": t_hit}
        print(
            f"{name:<11} fit {statistics.mean(fit):7.1f} s ({min(fit):.1f}-{max(fit):.1f})  "
            f"t{round(args.target * 100)} {_fmt_s(t_hit)} s  acc {statistics.mean(acc):.4f} "
            f"({min(acc):.4f}-{max(acc):.4f})"
        )
    if {"default", "minirocket"} <= summ.keys():
        d, m = summ["default"], summ["minirocket"]
        print(
            f"# default fit {d['fit_s']:.0f} s (target <= 90 s and <= MiniRocket's "
            f"{m['fit_s']:.0f} s); accuracy {d['acc']:.4f} vs MiniRocket {m['acc']:.4f}"
        )
    if {"default", "tutorial"} <= summ.keys():
        d, t = summ["default"]["t_target"], summ["tutorial"]["t_target"]
        ratio = "n/a" if d is None or t is None else f"{d / t:.2f}"
        print(f"# time to {args.target:.0%}: default / tutorial = {ratio} (target <= 0.33)")
    _save(args.out, rows, summ)
    return 0


def _save(out: Path, rows: list[dict], summary: dict | None) -> None:
    """The rows (and the summary once every seed ran) as JSON, written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    tmp.replace(out)


if __name__ == "__main__":
    raise SystemExit(main())
