"""The training engine: lake -> windows -> model -> checkpoint, metrics and plots.

`fit` is the loop (read it top to bottom): AdamW with per-part learning rates (CNN, RNN, head),
a per-step LR schedule, gradient clipping, bf16 autocast on CUDA, early stopping with
best-weights restore, a NaN/inf guard, and a checkpoint per epoch that resumes exactly (model,
optimizer, scheduler, RNG states, epoch, early-stopping state; bitwise on CPU).
`train_from_config` wires it to a `Config`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnlstm.checkpoint import atomic_write_bytes, load_state, save_model, save_state
from cnnlstm.evaluate import (
    classification_metrics,
    persistence_forecast,
    regression_metrics,
)
from cnnlstm.models import build_model, param_groups
from cnnlstm.tracking import Tracker, flatten_params
from cnnlstm.train_config import TrainConfig
from cnnlstm.window_config import WindowConfig
from cnnlstm.windows import (
    Batches,
    Normalizer,
    Windows,
    WindowSet,
    build_windows,
    fit_normalizer,
    plan_split,
    split_windows,
)

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
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


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


# --------------------------------------------------------------------------------------------
# data


@dataclass
class Prepared:
    ws: WindowSet  # all windows at the evaluation stride (the class map, entity metadata)
    parts: dict[str, Windows]  # train / val / test (train at train_stride when set)
    norm: Normalizer
    target_idx: list[int] = field(default_factory=list)
    train_full: Windows | None = None  # train + val entities at the training stride (refit)


def prepare_data(
    readings, channels: list[str], wcfg: WindowConfig, refit: bool = False
) -> Prepared:
    """Windows, split (no leakage), and normalisation fitted on the training split only.
    ``refit`` also keeps ``train_full``: the training and validation entities' windows at the
    training stride (for `train.refit_full`; test entities never enter it)."""
    ent_cols = [
        c
        for c in (
            wcfg.split.column if wcfg.split.method == "column" else None,
            wcfg.split.val_group_column,
        )
        if c
    ]
    ws = build_windows(readings, channels, wcfg, entity_columns=ent_cols)
    if len(ws.windows) == 0:
        raise ValueError("no windows: streams shorter than window.size, or no labelled windows")
    plan = plan_split(ws, wcfg.split)
    parts = split_windows(ws, plan)
    dense = ws
    if wcfg.train_stride and wcfg.train_stride != wcfg.stride:
        dense = build_windows(
            readings,
            channels,
            wcfg,
            stride=wcfg.train_stride,
            entity_columns=ent_cols,
            classes=ws.classes or None,
        )
        parts["train"] = dense.windows.subset(np.flatnonzero(plan.assign(dense.windows) == 0))
    if len(parts["train"]) == 0:
        raise ValueError("the training split is empty (check window.split)")
    train_full = None
    if refit:
        train_full = dense.windows.subset(
            np.flatnonzero(np.isin(plan.assign(dense.windows), (0, 1)))
        )
    target_idx = [channels.index(c) for c in ws.target_channels]
    norm = fit_normalizer(parts["train"], wcfg.normalize, ws.task, target_idx or None)
    return Prepared(ws, parts, norm, target_idx, train_full)


# --------------------------------------------------------------------------------------------
# the loop


def _loss(out: torch.Tensor, y: torch.Tensor, task: str, weight, smoothing: float):
    if task == "classification":
        return F.cross_entropy(out.float(), y, weight=weight, label_smoothing=smoothing)
    return F.mse_loss(out.float(), y)


@torch.no_grad()
def predict(model: torch.nn.Module, batches: Batches, amp_dtype=None) -> np.ndarray:
    """Raw model outputs for every window, in order: (N, K) or (N, H, K)."""
    model.eval()
    outs = []
    for x, ln, _ in batches:
        ctx = torch.autocast("cuda", dtype=amp_dtype) if amp_dtype else nullcontext()
        with ctx:
            outs.append(model(x, ln).float().cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0,), np.float32)


def _val_metrics(model, batches: Batches, task: str, n_classes: int, weight, amp_dtype):
    out = predict(model, batches, amp_dtype)
    y = batches.y.cpu()
    if len(y) == 0:
        return {}
    loss = float(
        _loss(torch.from_numpy(out), y, task, None if weight is None else weight.cpu(), 0.0)
    )
    if task == "classification":
        m = classification_metrics(y.numpy(), out.argmax(1), n_classes)
        return {"val_loss": loss, "val_accuracy": m["accuracy"], "val_macro_f1": m["macro_f1"]}
    return {"val_loss": loss, "val_rmse": float(np.sqrt(((out - y.numpy()) ** 2).mean()))}


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    best_score: float
    monitor: str
    stopped_early: bool
    restored: bool = False  # the best epoch's weights were loaded back at the end


def _config_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def fit(
    model: torch.nn.Module,
    train: Batches,
    val: Batches | None,
    cfg: TrainConfig,
    task: str,
    n_classes: int = 0,
    ckpt_path: str | Path | None = None,
    resume: bool = False,
    tracker: Tracker | None = None,
    config_hash: str = "",
    interrupt_after_epoch: int | None = None,
) -> FitResult:
    """Train `model` in place (best weights restored at the end when cfg.restore_best).

    interrupt_after_epoch: raise KeyboardInterrupt after that epoch's checkpoint (tests).
    """
    tracker = tracker or Tracker()
    device = train.device
    amp_dtype = torch.bfloat16 if device.type == "cuda" and cfg.amp != "off" else None
    if cfg.amp == "bf16" and device.type != "cuda":
        log.info("train.amp=bf16 applies on CUDA only; training in float32")
    weight = None
    if task == "classification":
        if cfg.class_weights == "balanced":
            counts = torch.bincount(train.y.cpu(), minlength=n_classes).double()
            weight = (counts.sum() / (n_classes * counts.clamp(min=1))).float().to(device)
        elif isinstance(cfg.class_weights, list):
            if len(cfg.class_weights) != n_classes:
                raise ValueError(
                    f"train.class_weights needs {n_classes} values, got {len(cfg.class_weights)}"
                )
            weight = torch.tensor(cfg.class_weights, dtype=torch.float32, device=device)
    monitor = cfg.monitor
    if monitor == "auto":
        monitor = "val_macro_f1" if task == "classification" else "val_loss"
    if val is None or len(val) == 0:
        monitor = "train_loss"
    if monitor in ("val_macro_f1", "val_accuracy") and task != "classification":
        raise ValueError(f"train.monitor={monitor} needs a classification task")
    if monitor == "val_rmse" and task == "classification":
        raise ValueError("train.monitor=val_rmse needs a regression or forecast task")
    sign = 1.0 if monitor in ("val_macro_f1", "val_accuracy") else -1.0  # higher is better

    opt = make_optimizer(model, cfg)
    ema = (
        torch.optim.swa_utils.AveragedModel(
            model,
            multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay),
            use_buffers=True,
        )
        if cfg.ema_decay
        else None
    )
    evaluated = ema.module if ema is not None else model  # what validation and `best` see
    steps_per_epoch = train.n_batches()
    sched = make_scheduler(opt, cfg, cfg.epochs * steps_per_epoch)
    history: list[dict[str, float]] = []
    best = {"score": -math.inf, "epoch": -1, "bad": 0, "state": None}
    start_epoch, stopped = 0, False

    if resume and ckpt_path and Path(ckpt_path).is_file():
        st = load_state(ckpt_path)
        if st.get("config_hash") != config_hash:
            raise ValueError(
                f"--resume: {ckpt_path} was written by a different config; "
                "use a new output folder or the same config"
            )
        model.load_state_dict(st["model"])
        if ema is not None:
            ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        history = st["history"]
        best = st["best"]
        start_epoch, stopped = st["epoch"] + 1, st["stopped"]
        _set_rng_state(st["rng"])  # last, after everything that might draw random numbers
        log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)

    progress = _progress(cfg.progress)
    with progress:
        task_id = progress.add_task("train", total=(cfg.epochs - start_epoch) * steps_per_epoch)
        for epoch in range(start_epoch, cfg.epochs):
            if stopped:
                break
            model.train()
            train.set_epoch(epoch)
            tot = torch.zeros((), device=device)
            n_seen = 0
            for step, (x, ln, y) in enumerate(train):
                x = _augment(x, ln, cfg, train.norm)
                ctx = torch.autocast("cuda", dtype=amp_dtype) if amp_dtype else nullcontext()
                with ctx:
                    out = model(x, ln)
                loss = _loss(out, y, task, weight, cfg.label_smoothing)
                if (device.type != "cuda" or step % 50 == 0) and not torch.isfinite(loss):
                    raise TrainingDivergedError(
                        f"loss is {loss.item()} at epoch {epoch} step {step}; stopped before "
                        f"checkpointing (last good checkpoint kept: {ckpt_path}). Lower "
                        "train.lr, set train.grad_clip, or check the inputs for extreme values"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    if device.type != "cuda" and not torch.isfinite(gn):
                        raise TrainingDivergedError(
                            f"gradient norm is {gn.item()} at epoch {epoch} step {step}; "
                            f"last good checkpoint kept: {ckpt_path}"
                        )
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update_parameters(model)
                tot += loss.detach() * len(y)
                n_seen += len(y)
                progress.update(
                    task_id,
                    advance=1,
                    description=f"epoch {epoch + 1}/{cfg.epochs} loss {loss.item():.4f}"
                    if step % 10 == 0
                    else None,
                )
            train_loss = float(tot) / max(n_seen, 1)
            if not math.isfinite(train_loss) or not all(
                torch.isfinite(p).all() for p in model.parameters()
            ):
                raise TrainingDivergedError(
                    f"loss/weights became non-finite in epoch {epoch}; last good checkpoint "
                    f"kept: {ckpt_path}"
                )
            row = {"epoch": epoch, "train_loss": train_loss, "lr": opt.param_groups[0]["lr"]}
            if val is not None and len(val):
                row |= _val_metrics(evaluated, val, task, n_classes, weight, amp_dtype)
            score = sign * row[monitor]
            if score > best["score"]:
                best = {
                    "score": score,
                    "epoch": epoch,
                    "bad": 0,
                    "state": {
                        k: v.detach().cpu().clone() for k, v in evaluated.state_dict().items()
                    },
                }
            else:
                best["bad"] += 1
                if cfg.patience is not None and best["bad"] >= cfg.patience:
                    stopped = True
            history.append(row)
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            # "*" marks the best epoch so far only where its weights will be restored
            progress.console.print(
                _fmt_row(row, monitor, best["epoch"] if cfg.restore_best else -1)
            )
            last = epoch == cfg.epochs - 1 or stopped
            if ckpt_path and ((epoch + 1) % cfg.checkpoint_every == 0 or last):
                save_state(
                    ckpt_path,
                    {
                        "epoch": epoch,
                        "stopped": stopped,
                        "model": model.state_dict(),
                        **({"ema": ema.state_dict()} if ema is not None else {}),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "history": history,
                        "best": best,
                        "rng": _rng_state(),
                        "config_hash": config_hash,
                    },
                )
            if interrupt_after_epoch is not None and epoch == interrupt_after_epoch:
                raise KeyboardInterrupt(f"interrupted after epoch {epoch}")

    restored = bool(cfg.restore_best and best["state"] is not None)
    if restored:
        model.load_state_dict(best["state"])
    elif ema is not None:  # the final model is the average
        model.load_state_dict(ema.module.state_dict())
    return FitResult(history, best["epoch"], sign * best["score"], monitor, stopped, restored)


def _rotations(n: int, max_deg: float, device) -> torch.Tensor:
    """(n, 3, 3) rotations about uniform random axes by angles uniform in +-max_deg."""
    axis = torch.nn.functional.normalize(torch.randn(n, 3, device=device), dim=1)
    ang = (torch.rand(n, device=device) * 2 - 1) * math.radians(max_deg)
    k = torch.zeros(n, 3, 3, device=device)  # cross-product matrix of the axis
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    s, c = torch.sin(ang)[:, None, None], torch.cos(ang)[:, None, None]
    return torch.eye(3, device=device) + s * k + (1 - c) * (k @ k)  # Rodrigues


def _augment(
    x: torch.Tensor, lengths: torch.Tensor | None, cfg: TrainConfig, norm: Normalizer | None = None
) -> torch.Tensor:
    """Rotation (in raw units: 3-axis sensors turned a little), gain and noise on a (B, C, L)
    batch; padding stays zero. Draws from the torch RNG, whose state the checkpoint keeps, so
    resumed runs see the same draws."""
    a = cfg.augment
    if not (a.scale or a.jitter or a.rotate_deg) or x.ndim != 3:
        return x
    if a.rotate_deg:
        center = torch.zeros(x.shape[1], device=x.device)
        scale = torch.ones(x.shape[1], device=x.device)
        if norm is not None:
            center = torch.as_tensor(norm.center, device=x.device)
            scale = torch.as_tensor(norm.scale, device=x.device)
        raw = x * scale[None, :, None] + center[None, :, None]  # (B, C, L)
        r = _rotations(x.shape[0], a.rotate_deg, x.device) if a.rotate_together else None
        for g in a.rotate_groups:  # a loop over sensor triples, not over samples
            rg = r if r is not None else _rotations(x.shape[0], a.rotate_deg, x.device)
            raw[:, g] = rg @ raw[:, g]  # (B, 3, 3) @ (B, 3, L)
        x = (raw - center[None, :, None]) / scale[None, :, None]
    if a.scale:
        x = x * (1 + a.scale * torch.randn(x.shape[0], x.shape[1], 1, device=x.device))
    if a.jitter:
        x = x + a.jitter * torch.randn_like(x)
    if lengths is not None:
        x = x * (torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None])[:, None]
    return x


def _fmt_row(row: dict[str, float], monitor: str, best_epoch: int) -> str:
    parts = [f"epoch {row['epoch'] + 1:3d}"] + [
        f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "lr")
    ]
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


# --------------------------------------------------------------------------------------------
# evaluation of a trained model on a split


def evaluate_split(
    model, w: Windows, prep: Prepared, device, batch_size: int, amp_dtype=None
) -> tuple[dict[str, Any], np.ndarray]:
    b = Batches(w, prep.norm, device, batch_size)
    out = predict(model, b, amp_dtype)
    ws = prep.ws
    if ws.task == "classification":
        pred = out.argmax(1) if len(out) else np.zeros(0, np.int64)
        return classification_metrics(w.y, pred, len(ws.classes), ws.class_names), pred
    pred = prep.norm.invert_y(out)
    m = regression_metrics(w.y, pred)
    if ws.task == "forecast" and len(w):
        base = persistence_forecast(w.x, w.lengths, prep.target_idx, w.y.shape[1])
        m["persistence"] = regression_metrics(w.y, base)
    return m, pred


# --------------------------------------------------------------------------------------------
# config -> trained model, checkpoint, metrics, plots


def train_from_config(
    cfg, out_dir: str | Path, resume: bool = False, readings=None, tracker: Tracker | None = None
) -> dict[str, Any]:
    """Run the whole stage for a `cnnlstm.config.Config`; returns the metrics (also written to
    out_dir/metrics.json). Reads the lake unless `readings` (a polars frame) is given."""
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tc: TrainConfig = cfg.train
    tracker = tracker or Tracker()
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    seed_everything(tc.seed, tc.deterministic)
    device = select_device(tc.device)

    if readings is None:
        from cnnlstm.lake import scan_readings

        readings = scan_readings(cfg.lake_uri)
    channels = cfg.data.channel_names
    prep = prepare_data(readings, channels, cfg.window, refit=tc.refit_full)
    ws = prep.ws
    horizon = cfg.window.horizon if ws.task == "forecast" else None
    n_in = len(ws.channels)  # the raw channels plus any window.derived ones
    model = build_model(cfg.model, n_in, ws.n_outputs, horizon).to(device)

    config_dump = {k: cfg.model_dump(mode="json")[k] for k in ("window", "model", "train")}
    chash = _config_hash(config_dump, channels, {k: len(v) for k, v in prep.parts.items()})
    tracker.start_run(name=cfg.data.name, tags={"task": ws.task, "arch": cfg.model.arch})
    status = "FAILED"
    try:
        tracker.log_params(flatten_params(config_dump) | {"data.name": cfg.data.name})
        n_windows = {k: len(v) for k, v in prep.parts.items()}
        log.info("windows: %s; classes: %s; device %s", n_windows, ws.class_names, device)
        train_b = Batches(
            prep.parts["train"], prep.norm, device, tc.batch_size, shuffle=True, seed=tc.seed
        )
        val_b = (
            Batches(prep.parts["val"], prep.norm, device, max(tc.batch_size, 512))
            if len(prep.parts["val"])
            else None
        )
        t_fit = time.perf_counter()
        res = fit(
            model,
            train_b,
            val_b,
            tc,
            ws.task,
            len(ws.classes),
            out / "checkpoint" / "last.ckpt",
            resume,
            tracker,
            chash,
        )
        fit_s = time.perf_counter() - t_fit

        amp_dtype = torch.bfloat16 if device.type == "cuda" and tc.amp != "off" else None
        metrics: dict[str, Any] = {
            "task": ws.task,
            "device": str(device),
            "torch": torch.__version__,
            "n_windows": n_windows,
            "classes": [str(c) for c in ws.classes],
            "class_names": ws.class_names,
            "best_epoch": res.best_epoch + 1,
            "epochs_run": len(res.history),
            # the epoch whose weights are saved (the refit's last epoch after a refit)
            "weights_epoch": res.best_epoch + 1 if res.restored else len(res.history),
            "stopped_early": res.stopped_early,
            "monitor": res.monitor,
            "best_score": res.best_score,
            "fit_seconds": fit_s,
            "refit_full": bool(tc.refit_full and len(prep.parts["val"])),
        }
        preds = {}
        if len(prep.parts["val"]):  # the selection model (before any refit)
            metrics["val"], preds["val"] = evaluate_split(
                model, prep.parts["val"], prep, device, 512, amp_dtype
            )
        if tc.refit_full and len(prep.parts["val"]):
            model, prep, metrics["refit"] = _refit_full(
                cfg, prep, n_in, horizon, device, out, resume, tracker, chash
            )
            n_windows["train_full"] = metrics["refit"]["windows"]
            metrics["weights_epoch"] = metrics["refit"]["epochs"]
        if len(prep.parts["test"]):
            metrics["test"], preds["test"] = evaluate_split(
                model, prep.parts["test"], prep, device, 512, amp_dtype
            )
        metrics["history"] = res.history

        meta = {
            "model": cfg.model.model_dump(mode="json"),
            "n_channels": n_in,
            "input_channels": ws.channels,
            "n_outputs": ws.n_outputs,
            "horizon": horizon,
            "task": ws.task,
            "channels": channels,
            "window": cfg.window.model_dump(mode="json"),
            "normalizer": prep.norm.to_dict(),
            "classes": ws.classes,
            "class_names": ws.class_names,
            "target_channels": ws.target_channels,
        }
        save_model(out / "model.safetensors", model.cpu(), meta)
        model.to(device)
        if tc.plots:
            from cnnlstm import plots

            for p in plots.training_plots(
                out, model, res, prep, metrics, preds, device, tc.embedding_points, tc.seed
            ):
                tracker.log_artifact(p, "plots")
        metrics["wall_seconds"] = time.perf_counter() - t_start
        atomic_write_bytes(out / "metrics.json", json.dumps(metrics, indent=2).encode())
        tracker.log_metrics(_flat_final(metrics))
        tracker.log_artifact(out / "metrics.json")
        tracker.log_artifact(out / "model.safetensors", "model")
        status = "FINISHED"
        return metrics
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end_run(status)


class _Prefixed(Tracker):
    """Forwards per-epoch metrics of the refit under a prefix (so they do not mix with the
    selection run's curves); everything else is left to the caller."""

    def __init__(self, inner: Tracker, prefix: str):
        self.inner, self.prefix = inner, prefix

    def log_metrics(self, metrics, step=None):
        self.inner.log_metrics({self.prefix + k: v for k, v in metrics.items()}, step=step)


def _refit_full(
    cfg,
    prep: Prepared,
    n_in: int,
    horizon,
    device,
    out: Path,
    resume: bool,
    tracker: Tracker,
    chash: str,
):
    """`train.refit_full`: after selection on validation, a fresh model (same seed) trained on
    all training entities (train + val) for exactly `train.epochs` epochs, no early stopping,
    final weights kept; normalisation refitted on those entities. Test entities never enter."""
    tc: TrainConfig = cfg.train
    full = prep.train_full
    norm = fit_normalizer(full, cfg.window.normalize, prep.ws.task, prep.target_idx or None)
    seed_everything(tc.seed, tc.deterministic)
    model = build_model(cfg.model, n_in, prep.ws.n_outputs, horizon).to(device)
    rcfg = tc.model_copy(update={"patience": None, "restore_best": False})
    batches = Batches(full, norm, device, tc.batch_size, shuffle=True, seed=tc.seed)
    t0 = time.perf_counter()
    res = fit(
        model,
        batches,
        None,
        rcfg,
        prep.ws.task,
        len(prep.ws.classes),
        out / "checkpoint" / "refit.ckpt",
        resume,
        _Prefixed(tracker, "refit_"),
        chash + ":refit",
    )
    info = {
        "windows": len(full),
        "epochs": len(res.history),
        "fit_seconds": time.perf_counter() - t0,
        "history": res.history,
    }
    return model, Prepared(prep.ws, prep.parts, norm, prep.target_idx, full), info


def _flat_final(m: dict[str, Any]) -> dict[str, float]:
    out = {}
    for part in ("val", "test"):
        for k in ("accuracy", "macro_f1", "mae", "rmse"):
            if part in m and k in m[part]:
                out[f"{part}_{k}"] = float(m[part][k])
    return out


def train_windows(
    prep: Prepared,
    model_cfg,
    train_cfg: TrainConfig,
    device="cpu",
    ckpt_path=None,
    resume=False,
    **kw,
):
    """Library shortcut used by tests and notebooks: prepared windows -> (model, FitResult)."""
    ws = prep.ws
    horizon = None
    if ws.task == "forecast":
        horizon = prep.parts["train"].y.shape[1]
    model = build_model(model_cfg, prep.parts["train"].x.shape[1], ws.n_outputs, horizon)
    dev = torch.device(device)
    model.to(dev)
    tb = Batches(
        prep.parts["train"], prep.norm, dev, train_cfg.batch_size, shuffle=True, seed=train_cfg.seed
    )
    vb = Batches(prep.parts["val"], prep.norm, dev, 512) if len(prep.parts["val"]) else None
    res = fit(model, tb, vb, train_cfg, ws.task, len(ws.classes), ckpt_path, resume, **kw)
    return model, res
