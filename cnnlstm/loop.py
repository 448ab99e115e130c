"""The training loop: AdamW with per-part learning rates (CNN, RNN, head), a per-step LR
schedule, gradient clipping, bf16 autocast on CUDA, early stopping on a validation figure of the
task's own kind with best-weights restore, an EMA of weights, a NaN/inf guard, and a checkpoint
per epoch that resumes exactly (model, optimizer, scheduler, RNG states, epoch, early-stopping
state; bitwise on CPU). What is learned and graded comes from the task (`cnnlstm.tasks`).
Data-parallel over several processes when `fit` is given a process group (`cnnlstm.ddp`):
each rank trains on its slice of every global batch, rank 0 alone validates, tracks, prints
and checkpoints. Config: `cnnlstm.train_config.TrainConfig` (``train``)."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlstm import ddp
from cnnlstm.augment import augment
from cnnlstm.checkpoint import load_state, save_state
from cnnlstm.models import param_groups
from cnnlstm.tasks import Task
from cnnlstm.tracking import Tracker
from cnnlstm.train_config import TrainConfig
from cnnlstm.windows import Batches

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN/inf; the last good checkpoint is kept."""


# --------------------------------------------------------------------------------------------
# setup


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but CUDA is not available")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("train.device=mps but MPS is not available")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuplify(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    lrs = {"cnn": cfg.lr_cnn or cfg.lr, "rnn": cfg.lr_rnn or cfg.lr, "head": cfg.lr_head or cfg.lr}
    groups = [
        {"params": ps, "lr": lrs[name], "name": name}
        for name, ps in param_groups(model).items()
        if ps
    ]
    # one fused kernel per step on CUDA (the GPU path); the default for-each form elsewhere
    cuda = any(p.is_cuda for g in groups for p in g["params"])
    fused = {"fused": True} if cuda else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """Stepped once per batch."""
    total_steps = max(total_steps, 1)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=[g["lr"] for g in opt.param_groups],
            total_steps=total_steps,
            pct_start=cfg.warmup_frac,
            anneal_strategy="cos",
        )
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


@torch.no_grad()
def predict(model: torch.nn.Module, batches: Batches, task: Task, loss_fn=None, amp_dtype=None):
    """The task's per-window outputs (`Task.reduce` of the network's output) for every window,
    in order, and the mean loss when `loss_fn` is given: (outputs, loss or None)."""
    model.eval()
    outs, tot, n = [], 0.0, 0
    for x, ln, y in batches:
        ctx = torch.autocast("cuda", dtype=amp_dtype) if amp_dtype else nullcontext()
        with ctx:
            out = model(x, ln)
        if loss_fn is not None:
            tot += float(loss_fn(out.float(), x, ln, y, train=False)) * len(y)
            n += len(y)
        outs.append(task.reduce(out.float(), x, ln).float().cpu())
    res = torch.cat(outs).numpy() if outs else np.zeros((0,), np.float32)
    return res, (tot / n if n else None)


def val_metrics(model, batches: Batches, task: Task, loss_fn, amp_dtype=None) -> dict[str, float]:
    """val_loss (the training objective, in the model's units) and the task's validation
    figures (in the target's units) of one pass over the validation batches."""
    if len(batches) == 0:
        return {}
    out, loss = predict(model, batches, task, loss_fn, amp_dtype)
    figures = task.epoch_metrics(out, batches.windows)
    return {"val_loss": loss} | {f"val_{k}": v for k, v in figures.items()}


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    best_score: float
    monitor: str
    stopped_early: bool
    restored: bool = False  # the best epoch's weights were loaded back at the end


class EarlyStopping:
    """Tracks the best epoch by a monitored figure (its direction from the task) and keeps its
    weights; ``stopped`` after `patience` epochs without improvement."""

    def __init__(self, monitor: str, greater_is_better: bool, patience: int | None, auto: bool):
        self.monitor, self.sign = monitor, 1.0 if greater_is_better else -1.0
        self.patience, self.auto = patience, auto
        self.best: dict[str, Any] = {"score": -math.inf, "epoch": -1, "bad": 0, "state": None}
        self.stopped = False

    def update(self, row: dict[str, float], epoch: int, evaluated: torch.nn.Module) -> None:
        if self.monitor not in row:
            if not self.auto:
                raise ValueError(
                    f"train.monitor={self.monitor}: the validation data gives no such figure "
                    "(e.g. F1 and PR-AUC need labelled anomalies in validation); use val_loss"
                )
            log.info("no %s on this validation data: early stopping on val_loss", self.monitor)
            self.monitor, self.sign = "val_loss", -1.0
        score = self.sign * row[self.monitor]
        if score > self.best["score"]:
            state = {k: v.detach().cpu().clone() for k, v in evaluated.state_dict().items()}
            self.best = {"score": score, "epoch": epoch, "bad": 0, "state": state}
        else:
            self.best["bad"] += 1
            if self.patience is not None and self.best["bad"] >= self.patience:
                self.stopped = True

    @property
    def best_score(self) -> float:
        return self.sign * self.best["score"]


class _Run:
    """What a training run carries between epochs, and its checkpoint (exact resume). Under
    DDP (`dist`), `net` is the DistributedDataParallel wrapper the training steps go through;
    `model` (what is saved, averaged and validated) is always the bare module."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, total_steps: int, stop, dist=None):
        self.model, self.cfg, self.stop, self.dist = model, cfg, stop, dist
        self.net: torch.nn.Module = model
        self.opt = make_optimizer(model, cfg)
        self.ema = (
            torch.optim.swa_utils.AveragedModel(
                model,
                multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay),
                use_buffers=True,
            )
            if cfg.ema_decay
            else None
        )
        self.sched = make_scheduler(self.opt, cfg, total_steps)
        self.history: list[dict[str, float]] = []
        self.start_epoch = 0
        self.resumed = False

    @property
    def evaluated(self) -> torch.nn.Module:
        """What validation and the best weights see: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def save(self, path, epoch: int, config_hash: str) -> None:
        """Write the checkpoint; under DDP every rank calls this (their RNG states are
        gathered: each rank's augmentation and dropout streams resume exactly) and rank 0
        writes."""
        rng = _rng_state()
        per_rank = ddp.all_gather(rng) if self.dist is not None else None
        if self.dist is not None and not self.dist.main:
            return
        save_state(
            path,
            {
                "epoch": epoch,
                "stopped": self.stop.stopped,
                "model": self.model.state_dict(),
                **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "history": self.history,
                "best": self.stop.best,
                "rng": rng,
                **({"rng_ranks": per_rank} if per_rank is not None else {}),
                "config_hash": config_hash,
            },
        )

    def load(self, path, config_hash: str) -> None:
        st = load_state(path)
        if st.get("config_hash") != config_hash:
            raise ValueError(
                f"--resume: {path} was written by a different config; "
                "use a new output folder or the same config"
            )
        self.model.load_state_dict(st["model"])
        if self.ema is not None:
            self.ema.load_state_dict(st["ema"])
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        self.history = st["history"]
        self.stop.best, self.stop.stopped = st["best"], st["stopped"]
        self.start_epoch, self.resumed = st["epoch"] + 1, True
        # last, after everything that might draw random numbers
        ranks = st.get("rng_ranks")
        world = self.dist.world if self.dist is not None else 1
        if self.dist is not None and ranks and len(ranks) == world:
            _set_rng_state(ranks[self.dist.rank])
        else:
            _set_rng_state(st["rng"])  # rank 0's (or the single process's) streams
            if self.dist is not None or ranks:
                log.warning(
                    "%s was written by %d process(es), resumed by %d: random augmentation and "
                    "dropout draw other numbers than the uninterrupted run would",
                    path,
                    len(ranks or [None]),
                    world,
                )
            if self.dist is not None:
                ddp.seed_rank(self.cfg.seed + self.start_epoch, self.dist)
        log.info("resumed from %s at epoch %d", path, self.start_epoch)

    def finish(self) -> bool:
        """Load the weights kept: the best epoch's (restore_best), else the EMA's, else the
        last. Returns whether the best epoch's weights were restored."""
        restored = bool(self.cfg.restore_best and self.stop.best["state"] is not None)
        if restored:
            self.model.load_state_dict(self.stop.best["state"])
        elif self.ema is not None:  # the final model is the average
            self.model.load_state_dict(self.ema.module.state_dict())
        return restored


def train_epoch(
    run: _Run, train: Batches, loss_fn, epoch: int, amp_dtype, on_step, shards=None
) -> float:
    """One pass over the training batches (augment, forward, loss, backward, clip, step,
    schedule, EMA); returns the mean training loss. Raises TrainingDivergedError on a
    non-finite loss or gradient norm. Under DDP `shards` (`ddp.RankBatches`) gives this rank's
    slice of each global batch, the backward pass averages the gradients over the ranks, and
    the returned loss is the mean over all ranks' windows."""
    model, cfg, device = run.model, run.cfg, train.device
    run.net.train()
    if shards is None:
        train.set_epoch(epoch)
        steps = ((x, ln, y, None) for x, ln, y in train)
    else:
        steps = shards.epoch(epoch)
    tot = torch.zeros((), device=device)
    n_seen = 0
    for step, (x, ln, y, weight) in enumerate(steps):
        x = augment(x, ln, cfg.augment, train.norm)
        with torch.autocast("cuda", dtype=amp_dtype) if amp_dtype else nullcontext():
            out = run.net(x, ln)
        loss = loss_fn(out, x, ln, y)
        if (device.type != "cuda" or step % 50 == 0) and not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"loss is {loss.item()} at epoch {epoch} step {step}; stopped before "
                "checkpointing (the last good checkpoint is kept). Lower train.lr, set "
                "train.grad_clip, or check the inputs for extreme values"
            )
        run.opt.zero_grad(set_to_none=True)
        # DDP: this rank's share of the global batch (1.0 unless the last batch is uneven)
        (loss if weight is None or weight == 1.0 else loss * weight).backward()
        if cfg.grad_clip:
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if device.type != "cuda" and not torch.isfinite(gn):
                raise TrainingDivergedError(
                    f"gradient norm is {gn.item()} at epoch {epoch} step {step}; the last good "
                    "checkpoint is kept"
                )
        run.opt.step()
        run.sched.step()
        if run.ema is not None:
            run.ema.update_parameters(model)
        n = len(y) if weight is None or weight > 0 else 0  # weight 0: a stand-in window
        tot += loss.detach() * n
        n_seen += n
        on_step(step, loss)
    if shards is not None:  # the mean over every rank's windows
        both = ddp.sum_(torch.stack([tot.float(), torch.tensor(float(n_seen), device=device)]))
        tot, n_seen = both[0], int(both[1].item())
    train_loss = float(tot) / max(n_seen, 1)
    if not math.isfinite(train_loss) or not all(
        torch.isfinite(p).all() for p in model.parameters()
    ):
        raise TrainingDivergedError(
            f"loss/weights became non-finite in epoch {epoch}; the last good checkpoint is kept"
        )
    return train_loss


def fit(
    model: torch.nn.Module,
    train: Batches,
    val: Batches | None,
    cfg: TrainConfig,
    task: Task,
    ckpt_path: str | Path | None = None,
    resume: bool = False,
    tracker: Tracker | None = None,
    config_hash: str = "",
    interrupt_after_epoch: int | None = None,
    dist: ddp.Dist | None = None,
) -> FitResult:
    """Train `model` in place; returns the history and which epoch's weights were kept.

    Per epoch: train, validate (the task's figures), early-stopping bookkeeping, log, print,
    checkpoint. interrupt_after_epoch: raise KeyboardInterrupt after that epoch's checkpoint
    (tests). dist: this rank of a DDP process group (`cnnlstm.ddp`; every rank calls `fit`
    with the same data and config): the ranks train on their slices of each global batch of
    ``train.batch_size``; rank 0 alone validates, decides early stopping (broadcast to the
    others), logs, prints and writes the checkpoint; every rank resumes from it.
    """
    tracker = tracker or Tracker()
    amp_dtype = torch.bfloat16 if train.device.type == "cuda" and cfg.amp != "off" else None
    if cfg.amp == "bf16" and train.device.type != "cuda":
        log.info("train.amp=bf16 applies on CUDA only; training in float32")
    loss_fn = task.loss_fn(train.y, cfg)
    has_val = val is not None and len(val) > 0
    monitor = task.check_monitor(cfg.monitor) if has_val else "train_loss"
    stop = EarlyStopping(
        monitor, task.monitor_greater_is_better(monitor), cfg.patience, cfg.monitor == "auto"
    )
    steps = train.n_batches()
    run = _Run(model, cfg, cfg.epochs * steps, stop, dist)
    if resume and ckpt_path and Path(ckpt_path).is_file():
        run.load(ckpt_path, config_hash)
    main = dist is None or dist.main
    shards = None
    if dist is not None:
        if cfg.batch_size % dist.world:
            raise ValueError(
                f"train.batch_size={cfg.batch_size} does not split evenly over {dist.world} ranks"
            )
        starts = ddp.all_gather(run.start_epoch)
        if len(set(starts)) > 1:
            raise ValueError(
                f"the ranks would start at epochs {starts}: the checkpoint {ckpt_path} is not "
                "the same file for every rank (put --out on storage that all nodes share)"
            )
        if not run.resumed:
            ddp.seed_rank(cfg.seed, dist)
        run.net = ddp.wrap(model, dist, train.device)
        shards = ddp.RankBatches(train, dist)

    progress = _progress(cfg.progress and main)
    t_start = time.perf_counter()
    with progress:
        bar = progress.add_task("train", total=(cfg.epochs - run.start_epoch) * steps)
        for epoch in range(run.start_epoch, cfg.epochs):
            if stop.stopped:
                break

            def on_step(step, loss, epoch=epoch):
                text = f"epoch {epoch + 1}/{cfg.epochs} loss {loss.item():.4f}"
                progress.update(bar, advance=1, description=text if step % 10 == 0 else None)

            train_loss = train_epoch(run, train, loss_fn, epoch, amp_dtype, on_step, shards)
            row = {"epoch": epoch, "train_loss": train_loss, "lr": run.opt.param_groups[0]["lr"]}
            if main:  # under DDP: rank 0 validates and decides; the others wait for its word
                if has_val:
                    row |= val_metrics(run.evaluated, val, task, loss_fn, amp_dtype)
                stop.update(row, epoch, run.evaluated)
            if dist is not None:
                stop.stopped = ddp.broadcast(stop.stopped)
            run.history.append(row)
            if main:
                tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
                # "*" marks the best epoch so far only where its weights will be restored
                mark = stop.best["epoch"] if cfg.restore_best else -1
                spent = time.perf_counter() - t_start
                eta = spent / (epoch + 1 - run.start_epoch) * (cfg.epochs - epoch - 1)
                progress.console.print(_fmt_row(row, stop.monitor, mark, cfg.epochs, spent, eta))
            last = epoch == cfg.epochs - 1 or stop.stopped
            if ckpt_path and ((epoch + 1) % cfg.checkpoint_every == 0 or last):
                run.save(ckpt_path, epoch, config_hash)
            if interrupt_after_epoch is not None and epoch == interrupt_after_epoch:
                raise KeyboardInterrupt(f"interrupted after epoch {epoch}")

    restored = run.finish()
    return FitResult(
        run.history, stop.best["epoch"], stop.best_score, stop.monitor, stop.stopped, restored
    )


def _clock(s: float) -> str:
    m, s = divmod(round(s), 60)
    return f"{m}:{s:02d}"


def _fmt_row(
    row: dict[str, float],
    monitor: str,
    best_epoch: int,
    epochs: int | None = None,
    spent: float | None = None,
    eta: float | None = None,
) -> str:
    """One line per epoch: ``epoch 3/25 | train_loss ... | val_... | 0:41 elapsed, 5:12 left``
    ("*": the best epoch so far, where its weights are the ones kept)."""
    of = f"/{epochs}" if epochs else ""
    parts = [f"epoch {row['epoch'] + 1:3d}{of}"] + [
        f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "lr")
    ]
    if spent is not None:
        parts.append(f"{_clock(spent)} elapsed" + (f", {_clock(eta)} left" if eta else ""))
    return " | ".join(parts) + (" *" if best_epoch == row["epoch"] else "")


class _NoProgress:
    def __init__(self):
        from rich.console import Console

        self.console = Console(stderr=True, quiet=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass


def _progress(enabled: bool):
    if not enabled:
        return _NoProgress()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
