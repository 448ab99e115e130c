"""Training throughput (windows/s): the naive tutorial pipeline against our default path, measured
in the same run, same data, same batch size; LSTM and GRU.

    .venv/bin/python benchmarks/train_throughput.py [--batch-sizes 256 1024] [--cells lstm gru]
        [--steps N] [--warmup N] [--repeats 5] [--n-windows 65536] [--amp] [--device auto|cpu|cuda]

Reference config (issue 6): 9 channels x 128 steps, 6 classes, synthetic random data.

(a) naive: the design source's layout - the window cut into 4 sub-sequences of 32 steps, a
    TimeDistributed-style CNN (conv 64 k5 -> ReLU -> max-pool 2 -> conv 64 k5 -> ReLU -> max-pool
    2 -> flatten) applied in a Python ``for t in range(S)`` loop, the per-step features stacked
    and read by a 2-layer LSTM/GRU of 128, a linear head; fed by a per-item
    ``torch.utils.data.Dataset`` through a ``DataLoader`` (4 workers, shuffled, default collate).
(b) default: ``cnnlstm.models.build_model`` with a ``ModelConfig`` of the same sizes (serial
    arch: conv blocks 64-64, kernel 5, batch-norm, max-pool 2; 2-layer LSTM/GRU of 128 over the
    32 conv steps; mean pooling; linear head), the data as one contiguous tensor on the device,
    each batch gathered by a random index (no DataLoader), AdamW (fused on CUDA).
    ``--archs serial subseq`` adds the ``subseq`` arch: the naive model's layout (4 sub-sequences,
    the RNN over 4 steps) with the sub-sequences folded into the batch, one CNN call - the same
    work as (a) without the Python loop and the DataLoader, where ``serial`` runs the RNN over all
    32 conv steps (8x the RNN steps of (a)). Ratios are default / naive.

Both train with AdamW + cross-entropy; a step is load batch -> forward -> backward -> optimizer.
GPU-ready: picks CUDA when present (cudnn.benchmark on), ``--amp`` = bf16 autocast. The numbers in
docs/train_throughput.md were measured on CPU only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
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

C, T, K = 9, 128, 6  # channels, steps, classes
S = 4  # naive pipeline: sub-sequences per window (32 steps each)


class NaiveCNNRNN(nn.Module):
    """The tutorial model: a TimeDistributed CNN as a Python loop over sub-sequences."""

    def __init__(
        self, cell: str, filters: int = 64, k: int = 5, hidden: int = 128, channels=C, classes=K
    ):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv1d(channels, filters, k, padding=k // 2),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(filters, filters, k, padding=k // 2),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Dropout(0.1),
            nn.Flatten(),
        )
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(filters * (T // S // 4), hidden, num_layers=2, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, C, T)
        sub = x.shape[-1] // S
        feats = []
        for t in range(S):  # "TimeDistributed": one CNN call per sub-sequence
            feats.append(self.cnn(x[:, :, t * sub : (t + 1) * sub]))
        out, _ = self.rnn(torch.stack(feats, dim=1))  # (B, S, F) -> (B, S, H)
        return self.head(out[:, -1])


class WindowDataset(torch.utils.data.Dataset):
    """Per-item access, as the tutorials do it: one (window, label) pair per __getitem__."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return torch.from_numpy(self.x[i]), int(self.y[i])


def default_model(cell: str, arch: str = "serial") -> nn.Module:
    from cnnlstm.models import ModelConfig, build_model

    cfg = ModelConfig.model_validate(
        {
            "arch": arch,
            "n_subsequences": S,
            "conv": {"channels": [64, 64], "kernel_size": 5, "pool": "max", "pool_size": 2},
            "rnn": {"cell": cell, "hidden_size": 128, "num_layers": 2},
        }
    )
    return build_model(cfg, C, K)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _optimizer(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(model.parameters(), lr=1e-3, **fused)


def _step(model, opt, xb, yb, device, amp: bool) -> None:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        loss = nn.functional.cross_entropy(model(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bench_naive(x_np, y_np, cell, bs, steps, warmup, device, amp, workers) -> float:
    torch.manual_seed(0)
    model = NaiveCNNRNN(cell).to(device).train()
    opt = _optimizer(model, device)
    loader = torch.utils.data.DataLoader(
        WindowDataset(x_np, y_np),
        batch_size=bs,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
    )
    it = iter(loader)  # worker start-up is not timed
    for _ in range(warmup):
        xb, yb = next(it)
        _step(model, opt, xb.to(device), yb.to(device), device, amp)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        xb, yb = next(it)
        _step(
            model,
            opt,
            xb.to(device, non_blocking=True),
            yb.to(device, non_blocking=True),
            device,
            amp,
        )
    _sync(device)
    dt_s = time.perf_counter() - t0
    del it, loader
    return steps * bs / dt_s


def bench_default(x_dev, y_dev, cell, bs, steps, warmup, device, amp, arch="serial") -> float:
    torch.manual_seed(0)
    model = default_model(cell, arch).to(device).train()
    opt = _optimizer(model, device)
    n = x_dev.shape[0]
    g = torch.Generator(device=device).manual_seed(0)

    def batch():
        idx = torch.randint(0, n, (bs,), device=device, generator=g)
        return x_dev.index_select(0, idx), y_dev.index_select(0, idx)

    for _ in range(warmup):
        _step(model, opt, *batch(), device, amp)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        _step(model, opt, *batch(), device, amp)
    _sync(device)
    return steps * bs / (time.perf_counter() - t0)


def pick_device(name: str) -> torch.device:
    """auto: CUDA when present (cuDNN autotuning on), else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def _device_line(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return (
            f"cuda: {p.name} ({p.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}"
        )
    return (
        f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=None,
        help="default: 256 1024 on CPU, 1024 2048 4096 8192 16384 on CUDA",
    )
    ap.add_argument("--cells", nargs="+", choices=["lstm", "gru"], default=["lstm", "gru"])
    ap.add_argument(
        "--pipelines", nargs="+", choices=["naive", "default"], default=["naive", "default"]
    )
    ap.add_argument(
        "--archs",
        nargs="+",
        choices=["serial", "subseq"],
        default=["serial"],
        help="default-path models: serial (the reference) and/or subseq (the naive "
        "model's layout, sub-sequences folded into the batch instead of a loop)",
    )
    ap.add_argument("--steps", type=int, default=None, help="timed steps (CPU 3, CUDA 30)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (CPU 1, CUDA 10)")
    ap.add_argument("--n-windows", type=int, default=65_536)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats per cell")
    ap.add_argument("--workers", type=int, default=4, help="naive DataLoader workers")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (both pipelines)")
    args = ap.parse_args()
    # the naive pipeline has 4 loader workers even where torch suggests fewer
    warnings.filterwarnings("ignore", message="This DataLoader will create")

    device = pick_device(args.device)
    gpu = device.type == "cuda"
    sizes = args.batch_sizes or ([1024, 2048, 4096, 8192, 16384] if gpu else [256, 1024])
    steps = args.steps or (30 if gpu else 3)
    warmup = args.warmup if args.warmup is not None else (10 if gpu else 1)
    if max(sizes) > args.n_windows:
        ap.error(f"--n-windows {args.n_windows} is smaller than batch {max(sizes)}")

    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((args.n_windows, C, T), dtype=np.float32)
    y_np = rng.integers(0, K, args.n_windows).astype(np.int64)
    x_dev = torch.from_numpy(x_np).to(device)
    y_dev = torch.from_numpy(y_np).to(device)

    print(
        f"# train throughput {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC | torch "
        f"{torch.__version__} | {_device_line(device)}"
    )
    print(
        f"# {C} ch x {T} steps, {K} classes, {args.n_windows:,} synthetic windows | "
        f"{'bf16 autocast' if args.amp else 'fp32'} | {warmup} warm-up + {steps} timed steps "
        f"| naive DataLoader workers {args.workers} | {args.repeats} interleaved repeats, "
        f"median (min-max) | load {os.getloadavg()[0]:.2f}"
    )
    archs = args.archs if "default" in args.pipelines else []
    head = f"{'cell':<5} {'batch':>6} {'naive w/s':>24}"
    for arch in archs:
        head += f" {arch + ' w/s':>24} {'ratio':>7}"
    print(head)
    best: dict[tuple[str, str], tuple[float, int]] = {}
    for cell in args.cells:
        for bs in sizes:
            # interleaved repeats: naive, each arch, then again, so drift hits all alike
            got: dict[str, list[float]] = {"naive": [], **{a: [] for a in archs}}
            for _ in range(args.repeats):
                if "naive" in args.pipelines:
                    got["naive"].append(
                        bench_naive(
                            x_np, y_np, cell, bs, steps, warmup, device, args.amp, args.workers
                        )
                    )
                for arch in archs:
                    got[arch].append(
                        bench_default(x_dev, y_dev, cell, bs, steps, warmup, device, args.amp, arch)
                    )
            naive = statistics.median(got["naive"]) if got["naive"] else None
            line = f"{cell:<5} {bs:>6} {_fmt(got['naive']):>24}"
            for arch in archs:
                wps = statistics.median(got[arch])
                if wps > best.get((cell, arch), (0.0, 0))[0]:
                    best[(cell, arch)] = (wps, bs)
                ratio = f"{wps / naive:6.2f}x" if naive else "      -"
                line += f" {_fmt(got[arch]):>24} {ratio:>7}"
            print(line, flush=True)
    for (cell, arch), (wps, bs) in best.items():
        print(f"best default {arch} {cell}: {wps:,.0f} windows/s (median) at batch {bs}")
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


def _fmt(vals: list[float]) -> str:
    """median (min-max) windows/s."""
    if not vals:
        return "-"
    return f"{statistics.median(vals):,.0f} ({min(vals):,.0f}-{max(vals):,.0f})"


if __name__ == "__main__":
    main()
