"""The GPU path against the naive tutorial pipeline: training windows/s, one table.

    bash benchmarks/gpu.sh                       # on a machine with CUDA
    bash benchmarks/gpu.sh --device cpu --steps 2 --repeats 1   # smoke test (the suite runs it)

Needs torch and numpy, plus pydantic for the model config (no polars, prefect or mlflow), so it
runs on a bare GPU box. Reference windows as in benchmarks/train_throughput.py: 9 channels x 128
steps, 6 classes, synthetic. Per batch size, the variants are measured interleaved (naive, then
each default variant, then again) `--repeats` times; each cell prints the median windows/s and
its min-max, so a slow outlier on one variant cannot rank it.

Variants:
  naive   the tutorial pipeline: per-item Dataset + DataLoader (4 workers), TimeDistributed CNN
          as a Python loop, fp32, host-to-device copy per batch.
  fp32    ours: the windows resident on the device, each batch gathered by index (no loader),
          fused AdamW on CUDA, fp32: what `cnnlstm train` runs with train.amp=off.
  bf16    as fp32 under bf16 autocast: what `cnnlstm train` runs on CUDA by default.
  graph   as bf16 with the step compiled by torch.compile(mode="reduce-overhead") (CUDA graphs):
          `--compile`; the first steps (compilation) are untimed warm-up.

Targets (issue 13, on an H100/H200): bf16 >= 10x naive at batch 1024, and >= 1,000,000 windows/s
at the best batch size. `--arch` picks the default-path model (serial: the issue-6 reference
CNN -> 2-layer LSTM over 32 conv steps; subseq: 4 sub-sequences folded into the batch).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_throughput import (  # noqa: E402
    C,
    K,
    NaiveCNNRNN,
    T,
    WindowDataset,
    _device_line,
    _sync,
    default_model,
    pick_device,
)


def _opt(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")


def _make_step(model, opt, amp: bool, device: torch.device):
    def step(xb, yb):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


class Naive:
    name = "naive"

    def __init__(self, x_np, y_np, cell, bs, device, workers):
        torch.manual_seed(0)
        self.device = device
        self.model = NaiveCNNRNN(cell).to(device).train()
        self.step = _make_step(self.model, _opt(self.model, device), False, device)
        self.loader = torch.utils.data.DataLoader(
            WindowDataset(x_np, y_np),
            batch_size=bs,
            shuffle=True,
            num_workers=workers,
            drop_last=True,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
        )
        self.it = iter(self.loader)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            try:
                xb, yb = next(self.it)
            except StopIteration:
                self.it = iter(self.loader)
                xb, yb = next(self.it)
            self.step(xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True))


class Resident:
    """Our path: data on the device, index-gathered batches, fused AdamW, optional bf16/graph."""

    def __init__(self, name, x_dev, y_dev, cell, arch, bs, device, amp, compiled):
        torch.manual_seed(0)
        self.name, self.x, self.y, self.bs = name, x_dev, y_dev, bs
        self.model = default_model(cell, arch).to(device).train()
        step = _make_step(self.model, _opt(self.model, device), amp, device)
        self.step = torch.compile(step, mode="reduce-overhead") if compiled else step
        self.g = torch.Generator(device=device).manual_seed(0)
        self.device = device

    def run(self, steps: int) -> None:
        n = self.x.shape[0]
        for _ in range(steps):
            idx = torch.randint(0, n, (self.bs,), device=self.device, generator=self.g)
            self.step(self.x.index_select(0, idx), self.y.index_select(0, idx))


def _timed(v, steps: int, bs: int, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    v.run(steps)
    _sync(device)
    return steps * bs / (time.perf_counter() - t0)


def _cell(vals: list[float]) -> str:
    if not vals:
        return "-"
    med = statistics.median(vals)
    return f"{med:,.0f} ({min(vals):,.0f}-{max(vals):,.0f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per repeat (CUDA 30)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (CUDA 10)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats per cell")
    ap.add_argument("--n-windows", type=int, default=None, help="default: 4x the largest batch")
    ap.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    ap.add_argument("--arch", choices=["serial", "subseq"], default="serial")
    ap.add_argument("--workers", type=int, default=4, help="naive DataLoader workers")
    ap.add_argument("--compile", action="store_true", help="add the CUDA-graph variant")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message="This DataLoader will create")

    device = pick_device(args.device)
    gpu = device.type == "cuda"
    sizes = args.batch_sizes or ([1024, 4096, 16384, 32768] if gpu else [256])
    steps = args.steps or (30 if gpu else 3)
    warmup = args.warmup if args.warmup is not None else (10 if gpu else 1)
    n = args.n_windows or 4 * max(sizes)
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((n, C, T), dtype=np.float32)
    y_np = rng.integers(0, K, n).astype(np.int64)
    x_dev, y_dev = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    workers = args.workers if gpu or args.steps is None or args.steps > 2 else 0

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"# gpu bench {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC | torch {torch.__version__} | "
        f"{_device_line(device)} | load {load[0]:.2f}"
    )
    print(
        f"# {C} ch x {T} steps, {K} classes, {n:,} synthetic windows | {args.arch} "
        f"{args.cell} | {warmup} warm-up + {steps} timed steps x {args.repeats} interleaved "
        f"repeats | naive loader workers {workers} | windows/s median (min-max)"
    )
    names = ["naive", "fp32"] + (["bf16"] if gpu else []) + (["graph"] if args.compile else [])
    print(f"{'batch':>6} " + " ".join(f"{v:>28}" for v in names) + f" {'best/naive':>10}")
    best = (0.0, 0, "")
    for bs in sizes:
        variants = [Naive(x_np, y_np, args.cell, bs, device, workers)]
        variants.append(Resident("fp32", x_dev, y_dev, args.cell, args.arch, bs, device, False, 0))
        if gpu:
            variants.append(
                Resident("bf16", x_dev, y_dev, args.cell, args.arch, bs, device, True, False)
            )
        if args.compile:
            variants.append(
                Resident("graph", x_dev, y_dev, args.cell, args.arch, bs, device, gpu, True)
            )
        for v in variants:
            v.run(warmup)
        got: dict[str, list[float]] = {v.name: [] for v in variants}
        for _ in range(args.repeats):
            for v in variants:
                got[v.name].append(_timed(v, steps, bs, device))
        med = {k: statistics.median(vs) for k, vs in got.items()}
        top = max((k for k in med if k != "naive"), key=med.get)
        if med[top] > best[0]:
            best = (med[top], bs, top)
        ratio = med[top] / med["naive"]
        print(f"{bs:>6} " + " ".join(f"{_cell(got[k]):>28}" for k in names) + f" {ratio:>9.2f}x")
        del variants
    print(f"best: {best[0]:,.0f} windows/s ({best[2]}, batch {best[1]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
