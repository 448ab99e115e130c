"""``cnnlstm train``: lake -> windows -> model -> checkpoint, plots and metrics in a folder.

Registered by cnnlstm.cli. Exit status: 0 trained; 1 training failed (diverged, no data);
2 config error.
"""

from __future__ import annotations

import contextlib
import json
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
    except ConfigError as e:
        err.print(f"[red]config error:[/red] {e}")
        raise typer.Exit(2) from None

    if track:  # end the runs a killed process left RUNNING (cnnlstm.liveness)
        from cnnlstm.liveness import sweep_quietly

        sweep_quietly(cfg)

    from cnnlstm.checkpoint import CheckpointError
    from cnnlstm.mlflow_tracker import TrackingUnavailableError
    from cnnlstm.train import TrainingDivergedError, train_from_config

    # with --json, stdout carries only the JSON: anything printed while training (MLflow's
    # "View run" lines, for one) goes to stderr
    quiet = contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext()
    try:
        with quiet:
            metrics = _train(cfg, out, resume, track, train_from_config)
    except ConfigError as e:
        err.print(f"[red]config error:[/red] {e}")
        raise typer.Exit(2) from None
    except TrackingUnavailableError as e:
        err.print(f"[red]tracking unavailable:[/red] {e}")
        raise typer.Exit(1) from None
    except (TrainingDivergedError, CheckpointError, ValueError) as e:
        err.print(f"[red]training failed:[/red] {e}")
        raise typer.Exit(1) from None
    if json_out:
        slim = {k: v for k, v in metrics.items() if k != "history"}
        sys.stdout.write(json.dumps(slim, indent=2) + "\n")
        return
    Console().print(_summary(metrics, out, cfg))


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
