"""``cnnlstm models | promote | score | tune``: the MLflow-facing commands.

Registered by cnnlstm.cli. Exit status: 0 success; 1 the job failed; 2 usage or config error
(bad config, unknown model/version/alias, channel mismatch, tracking server unreachable).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

err = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML config file")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override a config value: section.key=value")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print a JSON report on stdout")]
NameOpt = Annotated[
    str | None,
    typer.Option(
        "--name", help="registered model (default: tracking.registered_model or data.name)"
    ),
]


def _fail(msg: str, code: int = 2):
    err.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(code)


def _cfg(config: Path, override: list[str] | None):
    from cnnlstm.cli import _load  # one place turns a config error into exit status 2

    return _load(config, override)


def _user_errors() -> tuple[type[BaseException], ...]:
    from cnnlstm.config import ConfigError
    from cnnlstm.mlflow_tracker import TrackingUnavailableError
    from cnnlstm.registry import RegistryError
    from cnnlstm.score import ScoreError

    return ConfigError, RegistryError, ScoreError, TrackingUnavailableError


def _name(cfg, name: str | None) -> str:
    return name or cfg.tracking.registered_model or cfg.data.name


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=1, default=str) + "\n")


def models(
    config: ConfigOpt, name: NameOpt = None, json_out: JsonOpt = False, override: SetOpt = None
) -> None:
    """List the registered model's versions with their aliases and the champion metric."""
    from rich.table import Table

    from cnnlstm.mlflow_tracker import use_tracking
    from cnnlstm.registry import list_versions

    cfg = _cfg(config, override)
    try:
        uri = use_tracking(cfg)
        rows = list_versions(_name(cfg, name), uri)
    except _user_errors() as e:
        _fail(str(e))
    if json_out:
        _print_json({"name": _name(cfg, name), "tracking_uri": uri, "versions": rows})
        return
    t = Table(title=f"{_name(cfg, name)} ({uri})")
    for c in ("version", "aliases", "metric", "value", "run", "decision"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(
            r["version"],
            ", ".join(r["aliases"]),
            r["metric"] or "",
            r["value"] or "",
            (r["run_id"] or "")[:12],
            r["decision"] or "",
        )
    Console().print(t)


def promote(
    config: ConfigOpt,
    version: Annotated[str, typer.Argument(help="model version to point the alias at")],
    alias: Annotated[str, typer.Option("--alias", help="alias to move")] = "champion",
    name: NameOpt = None,
    override: SetOpt = None,
) -> None:
    """Move an alias (default: champion) to a model version by hand."""
    from cnnlstm.mlflow_tracker import use_tracking
    from cnnlstm.registry import promote as do_promote

    cfg = _cfg(config, override)
    try:
        uri = use_tracking(cfg)
        before = do_promote(_name(cfg, name), version, alias, uri)
    except _user_errors() as e:
        _fail(str(e))
    Console().print(
        f"{_name(cfg, name)}@{alias}: {'v' + before if before else '(none)'} -> v{version}"
    )


def score(
    config: ConfigOpt,
    model_uri: Annotated[
        str | None,
        typer.Option("--model", "-m", help="model URI (default: models:/<registered>@champion)"),
    ] = None,
    output: Annotated[str | None, typer.Option("--out", "-o", help="predictions folder")] = None,
    where: Annotated[
        list[str] | None, typer.Option("--where", help="score rows with column=value only")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda")] = None,
    json_out: JsonOpt = False,
    override: SetOpt = None,
) -> None:
    """Score lake partitions not yet scored by the model version; write predictions Parquet."""
    import yaml
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cnnlstm.score import score as run_score

    cfg = _cfg(config, override)
    filt = None
    if where:
        filt = {}
        for item in where:
            if "=" not in item:
                _fail(f"--where {item!r} is not of the form column=value")
            k, _, v = item.partition("=")
            filt[k.strip()] = yaml.safe_load(v)
    if device not in (None, "auto", "cpu", "cuda"):
        _fail(f"--device must be auto, cpu or cuda (got {device})")
    with Progress(
        TextColumn("[bold]score"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=json_out,
    ) as progress:
        task = progress.add_task("", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            rep = run_score(cfg, model_uri, output, batch_size, filt, device, on_progress=tick)
        except _user_errors() as e:
            progress.stop()
            _fail(str(e))
    if json_out:
        _print_json(rep.to_dict())
        return
    graded = ", ".join(f"{k} {v:.4f}" for k, v in rep.metrics.items() if isinstance(v, float))
    acc = f"; {graded} on {rep.labelled_rows} labelled windows" if graded else ""
    Console().print(
        f"scored with {rep.model_name} v{rep.model_version}: {rep.files_scored} new lake files "
        f"({rep.files_already_scored} already scored), {rep.rows_written} predictions -> "
        f"{rep.output}{acc}"
    )


def tune(
    config: ConfigOpt,
    n_trials: Annotated[int, typer.Option("--trials", "-n", min=1)] = 20,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("runs/tune"),
    space: Annotated[
        Path | None, typer.Option("--space", help="search space YAML (default: built in)")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="stop starting trials after (s)")
    ] = None,
    json_out: JsonOpt = False,
    override: SetOpt = None,
) -> None:
    """Optuna search (pruned on the validation curve); trials are MLflow child runs; the best
    config is written to OUT/best.yaml, trainable with `cnnlstm train --config`."""
    from cnnlstm.tune import load_space
    from cnnlstm.tune import tune as run_tune

    cfg = _cfg(config, override)
    try:
        summary = run_tune(cfg, n_trials, out, load_space(space), timeout)
    except _user_errors() as e:
        _fail(str(e))
    except RuntimeError as e:
        _fail(str(e), 1)
    if json_out:
        _print_json(summary)
        return
    Console().print(
        f"best {summary['metric']} {summary['best_value']:.4f} (trial "
        f"{summary['best_trial']}; {summary['states']}); config: "
        f"{summary['best_config']}"
    )


COMMANDS = {"models": models, "promote": promote, "score": score, "tune": tune}
