"""``cnnlstm train``: lake -> windows -> model -> checkpoint, plots and metrics in a folder.

Registered by cnnlstm.cli. Exit status: 0 trained; 1 training failed (diverged, no data);
2 config error.

``--nproc N`` trains data-parallel in N local worker processes (`cnnlstm.ddp`; one per GPU on
CUDA). Under ``torchrun`` (RANK and WORLD_SIZE set) the command is one of those workers itself:
``torchrun --standalone --nproc-per-node N -m cnnlstm.cli train -c cfg.yaml``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def train_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML config file")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("runs/latest"),
    resume: Annotated[bool, typer.Option("--resume", help="continue from out/checkpoint")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print final metrics as JSON")] = False,
    override: Annotated[
        list[str] | None, typer.Option("--set", help="override a config value: section.key=value")
    ] = None,
    track: Annotated[
        bool, typer.Option("--track/--no-track", help="track the run in MLflow and register")
    ] = True,
    auto: Annotated[
        bool, typer.Option("--auto", help="model: auto - choose a preset on validation data")
    ] = False,
    budget: Annotated[
        str | None, typer.Option("--budget", help="time for --auto's choice, e.g. 10m, 1h, 600s")
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            help="train data-parallel (DDP) in N local processes, one per GPU on CUDA; "
            "train.batch_size is the global batch and must divide by N",
        ),
    ] = 1,
) -> None:
    """Train and evaluate a model; write model.safetensors, metrics.json, plots/ and
    checkpoint/ under --out."""
    from cnnlstm.config import ConfigError, load_config

    err = Console(stderr=True)
    try:
        extra = ["model.arch=auto"] if auto else []
        if budget is not None:
            extra.append(f"model.auto.budget_s={_seconds(budget)}")
        cfg = load_config(config, [*(override or []), *extra])
        if cfg.model.arch == "auto" and not track:
            raise ConfigError("model: auto tracks each preset as an MLflow run: drop --no-track")
        from cnnlstm import ddp

        worker = ddp.launched()  # one of torchrun's processes
        if worker and nproc > 1:
            raise ConfigError("--nproc starts the processes itself: not under torchrun")
        if worker:
            ddp.check_config(cfg, int(os.environ["WORLD_SIZE"]))
        if nproc > 1:
            ddp.check_config(cfg, nproc)
            _check_gpus(cfg, nproc)
    except ConfigError as e:
        err.print(f"[red]config error:[/red] {e}")
        raise typer.Exit(2) from None

    rank0 = not worker or int(os.environ.get("RANK", "0")) == 0
    if track and rank0:  # end the runs a killed process left RUNNING (cnnlstm.liveness)
        from cnnlstm.liveness import sweep_quietly

        sweep_quietly(cfg)
    if nproc > 1:
        metrics = _launch(cfg, out, resume, track, json_out, nproc, err)
    elif worker:  # a failure exits non-zero, so that torchrun stops the other ranks
        metrics = _reporting(err, _ddp_worker, cfg, out, resume, track, json_out)
        if metrics is None:  # ranks > 0: rank 0 reports
            return
    else:
        from cnnlstm.train import train_from_config

        # with --json, stdout carries only the JSON: anything printed while training (MLflow's
        # "View run" lines, for one) goes to stderr
        quiet = contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext()
        with quiet:
            metrics = _reporting(err, _train, cfg, out, resume, track, train_from_config)
    if json_out:
        slim = {k: v for k, v in metrics.items() if k != "history"}
        sys.stdout.write(json.dumps(slim, indent=2) + "\n")
        return
    Console().print(_summary(metrics, out, cfg))


def _reporting(err, fn, *args):
    """``fn(*args)``; its failures exit with the command's status and a one-line reason."""
    from cnnlstm.checkpoint import CheckpointError
    from cnnlstm.config import ConfigError
    from cnnlstm.mlflow_tracker import TrackingUnavailableError
    from cnnlstm.train import TrainingDivergedError

    try:
        return fn(*args)
    except ConfigError as e:
        err.print(f"[red]config error:[/red] {e}")
        raise typer.Exit(2) from None
    except TrackingUnavailableError as e:
        err.print(f"[red]tracking unavailable:[/red] {e}")
        raise typer.Exit(1) from None
    except (TrainingDivergedError, CheckpointError, ValueError) as e:
        err.print(f"[red]training failed:[/red] {e}")
        raise typer.Exit(1) from None


def _check_gpus(cfg, nproc: int) -> None:
    """On CUDA, one process per GPU."""
    from cnnlstm.config import ConfigError
    from cnnlstm.loop import select_device

    try:
        device = select_device(cfg.train.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    import torch

    if device.type == "cuda" and torch.cuda.device_count() < nproc:
        raise ConfigError(
            f"--nproc {nproc} needs {nproc} GPUs (one per process); this machine has "
            f"{torch.cuda.device_count()}"
        )
    if device.type == "mps":
        raise ConfigError("--nproc needs CUDA GPUs or the CPU (train.device=cpu), not MPS")


def _launch(cfg, out: Path, resume: bool, track: bool, json_out: bool, nproc: int, err) -> dict:
    """Start `nproc` workers (`cnnlstm.ddp.launch`); rank 0's metrics, or exit 1 when a worker
    failed (all are stopped then)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from cnnlstm import ddp

    try:
        results = ddp.launch(nproc, _ddp_worker, cfg, out, resume, track, json_out)
    except ChildFailedError as e:
        err.print(f"[red]training failed:[/red] {ddp.failure_message(e)}")
        raise typer.Exit(1) from None
    return results[0]


def _ddp_worker(cfg, out: Path, resume: bool, track: bool, json_out: bool) -> dict | None:
    """One rank of a data-parallel run: join the process group, train (rank 0 tracked, as a
    single process would be), leave. Returns rank 0's metrics; None on the other ranks. An
    error propagates, so that the launcher stops every rank (no rank waits for ever)."""
    from cnnlstm import ddp
    from cnnlstm.loop import select_device
    from cnnlstm.train import train_from_config

    dist = ddp.init(select_device(cfg.train.device).type)
    quiet = contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext()
    try:
        with quiet:
            metrics = _train(cfg, out, resume, track and dist.main, train_from_config)
    finally:
        ddp.shutdown()
    return metrics if dist.main else None


def _train(cfg, out: Path, resume: bool, track: bool, train_from_config) -> dict:
    if not track:
        return train_from_config(cfg, out, resume=resume)
    from cnnlstm.pipeline import train_and_track  # the one place that wires tracker + registry

    return train_and_track(cfg, out, resume=resume)


def _seconds(text: str) -> float:
    """'10m' -> 600.0 ('s', 'm', 'h'; a bare number is seconds)."""
    from cnnlstm.config import ConfigError

    t = text.strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600}.get(t[-1:])
    try:
        value = float(t[:-1] if mult else t) * (mult or 1)
    except ValueError:
        raise ConfigError(f"--budget {text!r}: write e.g. 600s, 10m or 1h") from None
    if value <= 0:
        raise ConfigError(f"--budget {text!r} must be positive")
    return value


def _summary(m: dict, out: Path, cfg) -> str:
    lines = [
        f"[bold]trained[/bold] {m['task']} on {m['device']}: weights of epoch "
        f"{m['weights_epoch']} of {m['epochs_run']}"
        f"{' (refit on train + val)' if m.get('refit_full') else ''} ({m['wall_seconds']:.0f} s)"
    ]
    from cnnlstm.tasks import make_task

    task = make_task(cfg.task, cfg.window)
    for part in ("val", "test"):
        if part in m:
            lines += [f"  {line}" for line in task.summary_lines(part, m[part])]
    from cnnlstm.baseline import summary_lines

    lines += [f"  {line}" for line in summary_lines(task, m)]
    lines.append(f"  outputs: {out}/model.safetensors, metrics.json, plots/")
    if "registered_model" in m:
        r = m["registered_model"]
        lines.append(
            f"  MLflow run {m.get('mlflow_run_id')}: registered {r['name']} "
            f"v{r['version']} - {r['decision']}"
        )
    return "\n".join(lines)
