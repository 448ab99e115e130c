"""The training run: lake -> windows -> fit -> evaluate -> model artifact, metrics and plots.

`train_from_config` reads top to bottom: the task (`cnnlstm.tasks`) says what the windows are
labelled with and how they are graded; the loop (`cnnlstm.loop`) trains, stopping early on a
validation figure of the task's own kind; validation outputs calibrate what the task chooses
after training (an anomaly threshold); `train.refit_full` (`cnnlstm.refit`) then trains on
train + validation; test windows are scored once, at the end, and never choose anything.
Logging the MLflow model, registering and promoting are separate steps (`cnnlstm.pipeline`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlstm.artifact import ModelArtifact
from cnnlstm.checkpoint import atomic_write_bytes, save_model
from cnnlstm.loop import (
    FitResult,
    TrainingDivergedError,
    fit,
    predict,
    seed_everything,
    select_device,
)
from cnnlstm.tasks import Task, make_task
from cnnlstm.tracking import Tracker, flatten_params
from cnnlstm.train_config import TrainConfig
from cnnlstm.window_config import WindowConfig
from cnnlstm.windows import (
    Batches,
    Normalizer,
    Windows,
    WindowSet,
    build_window_sets,
    fit_normalizer,
    plan_split,
    split_windows,
)

__all__ = [
    "FitResult",
    "Prepared",
    "TrainingDivergedError",
    "evaluate_split",
    "prepare_data",
    "seed_everything",
    "train_from_config",
    "train_windows",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# data


@dataclass
class Prepared:
    ws: WindowSet  # all windows at the evaluation stride (the class map, entity metadata)
    parts: dict[str, Windows]  # train / val / test (train at train_stride when set)
    norm: Normalizer
    task: Task
    train_full: Windows | None = None  # train + val entities at the training stride (refit)


def prepare_data(
    readings,
    channels: list[str],
    wcfg: WindowConfig,
    task: Task | None = None,
    refit: bool = False,
) -> Prepared:
    """Windows labelled for `task`, split (no leakage), and normalisation and the task's own
    statistics fitted on the training split only. ``refit`` also keeps ``train_full``: the
    training and validation entities' windows at the training stride (for
    `train.refit_full`; test entities never enter it). `task` defaults to the kind
    window.label implies."""
    task = task or make_task(None, wcfg)
    ent_cols = [
        c
        for c in (
            wcfg.split.column if wcfg.split.method == "column" else None,
            wcfg.split.val_group_column,
        )
        if c
    ]
    # one read of the readings; the windows at both strides are views over the same rows
    strides = [wcfg.stride]
    if wcfg.train_stride and wcfg.train_stride != wcfg.stride:
        strides.append(wcfg.train_stride)
    sets = build_window_sets(
        readings, channels, wcfg, task, strides=strides, entity_columns=ent_cols
    )
    ws, dense = sets[0], sets[-1]
    if len(ws.windows) == 0:  # say why: the time steps, the pieces, the labels, what to change
        if ws.stats is None:
            raise ValueError("no windows: streams shorter than window.size, or no labelled windows")
        raise ValueError(ws.stats.explain(wcfg))
    plan = plan_split(ws, wcfg.split)
    parts = split_windows(ws, plan)
    if dense is not ws:
        parts["train"] = dense.windows.subset(np.flatnonzero(plan.assign(dense.windows) == 0))
    parts["train"] = task.training_windows(parts["train"])
    if len(parts["train"]) == 0:
        raise ValueError("the training split is empty (check window.split)")
    train_full = None
    if refit:
        train_full = task.training_windows(
            dense.windows.subset(np.flatnonzero(np.isin(plan.assign(dense.windows), (0, 1))))
        )
    norm = fit_normalizer(parts["train"], wcfg.normalize)
    task.fit_state(parts["train"], ws, norm)
    return Prepared(ws, parts, norm, task, train_full)


def batches(w: Windows, prep: Prepared, device, batch_size: int, **kw) -> Batches:
    return Batches(w, prep.norm, device, batch_size, encode_y=prep.task.encode_y, **kw)


def fingerprint(w: Windows) -> str:
    """SHA-256 of what a part is graded on: each window's entity, span and true target."""
    h = hashlib.sha256()
    ent = w.entity.astype(str)
    order = np.lexsort((w.start, ent))
    h.update("\n".join(ent[order]).encode())
    for arr in (w.start[order], w.end[order], np.asarray(w.y)[order]):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def spans(w: Windows) -> dict[str, list[int]]:
    """Per entity, the first start and last end (UTC us) of its windows in `w`."""
    ents, inv = np.unique(w.entity.astype(str), return_inverse=True)
    lo = np.full(len(ents), np.iinfo(np.int64).max)
    hi = np.full(len(ents), np.iinfo(np.int64).min)
    np.minimum.at(lo, inv, w.start)
    np.maximum.at(hi, inv, w.end)
    return {str(e): [int(a), int(b)] for e, a, b in zip(ents, lo, hi, strict=True)}


def data_summary(prep: Prepared) -> dict[str, Any]:
    """Entities (in all, per split) and the time range of the windows (the model card)."""
    from datetime import UTC, datetime

    w = prep.ws.windows

    def iso(us: int) -> str:
        return datetime.fromtimestamp(us / 1e6, UTC).isoformat().replace("+00:00", "Z")

    out: dict[str, Any] = {
        "entities": int(len(np.unique(w.entity.astype(str)))) if len(w) else 0,
        "entities_per_split": {
            k: int(len(np.unique(v.entity.astype(str)))) for k, v in prep.parts.items()
        },
    }
    if len(w):
        out["time_range"] = [iso(int(w.start.min())), iso(int(w.end.max()))]
    return out


def hardware_info(device) -> dict[str, Any]:
    """Where the model was trained: device (and GPU name), CPU model and cores, torch."""
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    out: dict[str, Any] = {
        "device": str(device),
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if torch.device(device).type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


# --------------------------------------------------------------------------------------------
# evaluation of a trained model on a split


def evaluate_split(
    model, w: Windows, prep: Prepared, device, batch_size: int, amp_dtype=None
) -> tuple[dict[str, Any], np.ndarray]:
    """(the task's metrics, in the target's units; the task's per-window outputs)."""
    out, _ = predict(model, batches(w, prep, device, batch_size), prep.task, None, amp_dtype)
    return prep.task.evaluate(out, w), out


def _outputs(model, w, prep, device, amp_dtype) -> np.ndarray:
    return predict(model, batches(w, prep, device, 512), prep.task, None, amp_dtype)[0]


# --------------------------------------------------------------------------------------------
# config -> trained model, checkpoint, metrics, plots


def config_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def run_tags(cfg) -> dict[str, str]:
    task = make_task(cfg.task, cfg.window)
    return {"task": task.kind, "arch": cfg.model.arch}


def train_from_config(
    cfg,
    out_dir: str | Path,
    resume: bool = False,
    readings=None,
    tracker: Tracker | None = None,
    evaluate_test: bool = True,
) -> dict[str, Any]:
    """Run the whole stage for a `cnnlstm.config.Config`; returns the metrics (also written to
    out_dir/metrics.json). Reads the lake unless `readings` (a polars frame) is given. Opens
    and ends a tracker run unless the caller already holds one open (`Tracker.run`).
    ``evaluate_test=False`` never touches the test windows (tuning trials)."""
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tc: TrainConfig = cfg.train
    tracker = tracker or Tracker()
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    seed_everything(tc.seed, tc.deterministic)
    device = select_device(tc.device)
    from cnnlstm import ddp

    dist = ddp.current()  # a rank of `cnnlstm train --nproc N` / torchrun (cnnlstm.ddp)
    if dist is not None:
        ddp.check_config(cfg, dist.world)
        device = ddp.rank_device(device, dist)
        if not dist.main:
            tracker = Tracker()  # rank 0 alone tracks, evaluates and writes the outputs

    if readings is None:
        from cnnlstm.lake import scan_readings

        readings = scan_readings(cfg.lake_uri)
    channels = cfg.data.channel_names
    task = make_task(cfg.task, cfg.window)
    prep = prepare_data(readings, channels, cfg.window, task, refit=tc.refit_full)
    ws = prep.ws
    n_in = len(ws.channels)  # the raw channels plus any window.derived ones
    n_out = task.n_outputs(ws)
    model = task.build_model(cfg.model, n_in, n_out).to(device)

    sections = ("window", "model", "train", "task")
    config_dump = {k: cfg.model_dump(mode="json")[k] for k in sections}
    # train.progress is display only: a checkpoint resumes with the display on or off
    hashed = config_dump | {
        "train": {k: v for k, v in config_dump["train"].items() if k != "progress"}
    }
    chash = config_hash(hashed, channels, {k: len(v) for k, v in prep.parts.items()})
    owned = not tracker.in_run
    with tracker.run(name=cfg.data.name, tags=run_tags(cfg)) if owned else nullcontext():
        tracker.log_params(flatten_params(config_dump) | {"data.name": cfg.data.name})
        n_windows = {k: len(v) for k, v in prep.parts.items()}
        if not evaluate_test:
            n_windows.pop("test")
        log.info("windows: %s; classes: %s; device %s", n_windows, ws.class_names, device)
        train_b = batches(
            prep.parts["train"], prep, device, tc.batch_size, shuffle=True, seed=tc.seed
        )
        has_val = len(prep.parts["val"]) > 0
        val_b = (
            batches(prep.parts["val"], prep, device, max(tc.batch_size, 512)) if has_val else None
        )
        t_fit = time.perf_counter()
        if cfg.model.arch == "minirocket":  # closed form: no epochs, no checkpoints
            from cnnlstm.baseline import fit_closed_form

            res = fit_closed_form(model, prep, device, tc.seed)
        else:
            res = fit(
                model,
                train_b,
                val_b,
                tc,
                task,
                out / "checkpoint" / "last.ckpt",
                resume,
                tracker,
                chash,
                dist=dist,
            )
        fit_s = time.perf_counter() - t_fit
        if dist is not None and not dist.main:
            return {}  # the other ranks are done: rank 0 evaluates, saves and tracks

        amp_dtype = torch.bfloat16 if device.type == "cuda" and tc.amp != "off" else None
        outs: dict[str, np.ndarray] = {}
        if has_val:
            outs["val"] = _outputs(model, prep.parts["val"], prep, device, amp_dtype)
        # chosen after training, on validation (never on test): e.g. the anomaly threshold
        if task.calibrates:
            train_out = None
            if not has_val:
                train_out = _outputs(model, prep.parts["train"], prep, device, amp_dtype)
            task.calibrate(outs.get("val"), prep.parts["val"], train_out)
        metrics: dict[str, Any] = {
            "task": task.kind,
            "device": str(device),
            "processes": dist.world if dist is not None else 1,  # data-parallel ranks
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
            "refit_full": bool(tc.refit_full and has_val),
            "data": data_summary(prep),
            "hardware": hardware_info(device),
        }
        sel = task.selection
        if has_val:  # the selection model's validation figures (before any refit)
            metrics["val"] = task.evaluate(outs["val"], prep.parts["val"])
            v = metrics["val"].get(sel.metric)
            metrics["evaluation"] = {
                "part": "val",
                "metric": sel.metric,
                "greater_is_better": sel.greater_is_better,
                "value": None if v is None or not np.isfinite(v) else float(v),
                "fingerprint": fingerprint(prep.parts["val"]),
                "spans": spans(prep.parts["val"]),
                "windows": len(prep.parts["val"]),
            }
        rival = None  # the MiniRocket + ridge baseline (train.baseline), fitted like the model
        if tc.baseline != "off" and cfg.model.arch != "minirocket":
            from cnnlstm.baseline import Rival

            rival = Rival.start(cfg, prep, n_in, n_out, device, metrics)
        if tc.refit_full and has_val:
            from cnnlstm.refit import refit_full

            model, prep, metrics["refit"] = refit_full(
                cfg, prep, n_in, n_out, device, out, resume, tracker, chash
            )
            n_windows["train_full"] = metrics["refit"]["windows"]
            metrics["weights_epoch"] = metrics["refit"]["epochs"]
            if rival is not None:
                rival.refit(prep)
        if evaluate_test and len(prep.parts["test"]):
            metrics["test"], outs["test"] = evaluate_split(
                model, prep.parts["test"], prep, device, 512, amp_dtype
            )
        metrics["history"] = res.history
        saved_cfg = cfg
        if rival is not None:
            rival.finish(prep, evaluate_test, out, tracker, metrics)
            if metrics.get("chosen") == "baseline":  # train.baseline=compete, won on validation
                model, saved_cfg = rival.model, rival.cfg
                outs = rival.outs  # the plots show what was kept

        meta = artifact(saved_cfg, prep, n_in, n_out, model=model, device=device)
        save_model(out / "model.safetensors", model.cpu(), meta)
        model.to(device)
        if tc.plots:
            from cnnlstm import plots

            ctx = {
                "model": model,
                "prep": prep,
                "metrics": metrics,
                "outs": outs,
                "device": device,
                "n_points": tc.embedding_points,
                "seed": tc.seed,
            }
            for p in plots.training_plots(out, res, task, ctx):
                tracker.log_artifact(p, "plots")
        metrics["wall_seconds"] = time.perf_counter() - t_start
        atomic_write_bytes(out / "metrics.json", json.dumps(metrics, indent=2).encode())
        final: dict[str, float] = {}
        for part in ("val", "test"):
            if part in metrics:
                final |= task.flat_metrics(part, metrics[part])
        tracker.log_metrics(final)
        tracker.log_artifact(out / "metrics.json")
        tracker.log_artifact(out / "model.safetensors", "model")
        return metrics


def artifact(cfg, prep: Prepared, n_in: int, n_out: int, model=None, device=None) -> ModelArtifact:
    """The typed metadata stored with the weights. With the trained `model`, the training
    statistics (`training_stats`) include its predicted-class mix on the training windows."""
    ws = prep.ws
    window = cfg.window.model_dump(mode="json")
    stats = ws.stats
    if window.get("gap_tolerance_s") is None and stats is not None:
        # the tolerance derived from the training streams, so scoring cuts the same way
        tol = stats.gap_tolerance_s
        window["gap_tolerance_s"] = float(tol) if math.isfinite(tol) else None
    return ModelArtifact(
        task=prep.task.config_dump(),
        task_state=prep.task.state,
        model=cfg.model.model_dump(mode="json"),
        window=window,
        channels=list(cfg.data.channel_names),
        input_channels=list(ws.channels),
        n_channels=n_in,
        n_outputs=n_out,
        normalizer=prep.norm.to_dict(),
        classes=list(ws.classes),
        class_names=list(ws.class_names),
        target_channels=list(ws.target_channels),
        training_stats=training_stats(cfg, prep, model, device),
    )


def training_stats(cfg, prep: Prepared, model=None, device=None):
    """What drift monitoring compares scored data with (`cnnlstm.drift`): per raw channel the
    training split's quantile bins, moments and a seeded sample; with the model, the mix of
    its predictions on (a seeded subset of at most `drift.MAX_WINDOWS` of) those windows."""
    from cnnlstm import drift

    w = prep.parts["train"]
    seed = cfg.train.seed
    predicted = None
    if model is not None and len(w):
        sub = w.subset(drift.summary_windows(len(w), seed))
        outs = _outputs(model, sub, prep, torch.device(device or "cpu"), None)
        predicted = drift.predicted_values(prep.task, outs, sub)
    return drift.fit_training_stats(w, list(cfg.data.channel_names), seed, predicted)


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
    task = prep.task
    model = task.build_model(model_cfg, prep.parts["train"].n_channels, task.n_outputs(prep.ws))
    dev = torch.device(device)
    model.to(dev)
    tb = batches(
        prep.parts["train"], prep, dev, train_cfg.batch_size, shuffle=True, seed=train_cfg.seed
    )
    vb = batches(prep.parts["val"], prep, dev, 512) if len(prep.parts["val"]) else None
    res = fit(model, tb, vb, train_cfg, task, ckpt_path, resume, **kw)
    return model, res
