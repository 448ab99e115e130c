"""``cnnlstm models | promote | score | tune | reregister | fetch-model | export``: the
MLflow-facing commands.

Registered by cnnlstm.cli. Exit status: 0 success; 1 the job failed; 2 usage or config error
(bad config, unknown model/version/alias, channel mismatch, tracking server unreachable, a model
whose files do not match the hashes pinned in the registry or that has no pin: nothing is
scored).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
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
    from cnnlstm.model_trust import ModelTrustError
    from cnnlstm.registry import RegistryError
    from cnnlstm.score import ScoreError

    return ConfigError, RegistryError, ScoreError, TrackingUnavailableError, ModelTrustError


def _sweep(cfg) -> None:
    """End the experiment's runs that a killed process left RUNNING (cnnlstm.liveness)."""
    from cnnlstm.liveness import sweep_quietly

    sweep_quietly(cfg)


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
    from rich import box
    from rich.text import Text

    t = Table(title=f"{_name(cfg, name)} ({uri})", box=box.SIMPLE_HEAD, title_justify="left")
    for c in ("version", "aliases", "metric (val)", "run", "weights"):
        t.add_column(c, no_wrap=True)
    for r in rows:
        value = r["value"] or ""
        with contextlib.suppress(ValueError):
            value = f"{float(value):.4g}" if value else ""
        t.add_row(
            r["version"],
            ", ".join(r["aliases"]),
            f"{r['metric'] or ''} {value}".strip(),
            (r["run_id"] or "")[:8],
            (r["weights_sha256"] or "")[:8] or "unpinned",
        )
    console = Console()
    console.print(t)
    # the decisions are sentences: below the table, one paragraph per version, wrapped at words
    decisions = Table.grid(padding=(0, 2))
    decisions.add_column(no_wrap=True, style="bold")
    decisions.add_column(ratio=1)
    for r in rows:
        if r["decision"]:
            decisions.add_row(f"v{r['version']}", Text(r["decision"]))
    if decisions.row_count:
        console.print(decisions)


def promote(
    config: ConfigOpt,
    version: Annotated[str, typer.Argument(help="model version to point the alias at")],
    alias: Annotated[str, typer.Option("--alias", help="alias to move")] = "champion",
    name: NameOpt = None,
    json_out: JsonOpt = False,
    override: SetOpt = None,
) -> None:
    """Move an alias (default: champion) to a model version by hand; the decision tags of the
    versions concerned and of their training runs follow."""
    from cnnlstm.mlflow_tracker import use_tracking
    from cnnlstm.registry import promote_record

    cfg = _cfg(config, override)
    try:
        uri = use_tracking(cfg)
        rec = promote_record(_name(cfg, name), version, alias, uri)
    except _user_errors() as e:
        _fail(str(e))
    if json_out:
        _print_json(rec)
        return
    before = rec["before"]
    note = "" if rec["changed"] else " (already)"
    Console().print(
        f"{rec['name']}@{alias}: {'v' + before if before else '(none)'} -> v{version}{note}",
        highlight=False,
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
    allow_unpinned: Annotated[
        bool,
        typer.Option(
            "--allow-unpinned",
            help="load a model version that has no pinned hash (registered before pins; only "
            "its safetensors weights are read). Same as CNNLSTM_ALLOW_UNPINNED_MODELS=1. A "
            "hash mismatch is refused regardless.",
        ),
    ] = False,
    json_out: JsonOpt = False,
    override: SetOpt = None,
) -> None:
    """Score lake partitions not yet scored by the model version; write predictions Parquet.
    The model's files are checked against the hashes pinned in the registry first."""
    import yaml
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cnnlstm.score import score as run_score

    cfg = _cfg(config, override)
    _sweep(cfg)
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

        # with --json, stdout carries only the JSON: MLflow's "View run" lines go to stderr
        quiet = contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext()
        try:
            with quiet:
                rep = run_score(
                    cfg,
                    model_uri,
                    output,
                    batch_size,
                    filt,
                    device,
                    on_progress=tick,
                    allow_unpinned=allow_unpinned or None,
                )
        except _user_errors() as e:
            progress.stop()
            _fail(str(e))
    from cnnlstm.pipeline import scored_entities

    # files_scored counts lake files read (a file the where= filter leaves out is read and
    # marked scored, with no prediction); entities_scored: those that got predictions
    ents = scored_entities(rep.to_dict())
    if json_out:
        _print_json(rep.to_dict() | {"entities_scored": ents})
        return
    graded = ", ".join(f"{k} {v:.4f}" for k, v in rep.metrics.items() if isinstance(v, float))
    acc = f"; {graded} on {rep.labelled_rows:,} labelled windows" if graded else ""
    Console().print(
        f"scored with {rep.model_name} v{rep.model_version}: {rep.rows_written:,} predictions "
        f"for {ents:,} {'entity' if ents == 1 else 'entities'} ({rep.files_scored:,} new lake "
        f"files read, {rep.files_already_scored:,} already scored) -> {rep.output}{acc}",
        soft_wrap=True,
        highlight=False,
    )
    from cnnlstm.drift import summary_line

    if line := summary_line(rep.drift):
        Console().print(line, markup=False, highlight=False)


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
    _sweep(cfg)
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


def reregister(
    config: ConfigOpt,
    version: Annotated[str, typer.Argument(help="the unpinned model version to re-register")],
    name: NameOpt = None,
    json_out: JsonOpt = False,
    override: SetOpt = None,
) -> None:
    """Re-log an unpinned version's weights in today's format (no code in the artifact) and
    register them as a new, pinned version; no alias moves (then: cnnlstm promote). You vouch
    that the artifact store was not modified since that version was trained."""
    from cnnlstm.mlflow_tracker import use_tracking
    from cnnlstm.registry import reregister as do_reregister

    cfg = _cfg(config, override)
    try:
        uri = use_tracking(cfg)
        rec = do_reregister(_name(cfg, name), version, uri)
    except _user_errors() as e:
        _fail(str(e))
    if json_out:
        _print_json(rec)
        return
    Console().print(
        f"{rec['name']} v{rec['from_version']} -> v{rec['version']} (weights sha256 "
        f"{rec['weights_sha256']}); promote it: cnnlstm promote -c {config} {rec['version']}"
    )


def fetch_model(
    config: ConfigOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="folder to write the model to (new)")],
    model_uri: Annotated[
        str | None,
        typer.Option("--model", "-m", help="model URI (default: models:/<registered>@champion)"),
    ] = None,
    json_out: JsonOpt = False,
    override: SetOpt = None,
) -> None:
    """Download a model and check its files against the hashes pinned in the registry (or the
    run); the folder can then be served with `mlflow models serve -m FOLDER --env-manager local`
    without MLflow reading anything unchecked from the artifact store."""
    from cnnlstm.mlflow_tracker import use_tracking
    from cnnlstm.model_trust import fetch_verified
    from cnnlstm.registry import resolve
    from cnnlstm.score import default_model_uri

    cfg = _cfg(config, override)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        _fail(f"--out {out} exists and is not an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    # fetched beside the target and moved into place only when every file matched: a refused
    # model leaves nothing behind that could be served by mistake
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        try:
            uri = use_tracking(cfg)
            resolved = resolve(model_uri or default_model_uri(cfg), uri)
            model_dir, _, rec = fetch_verified(resolved.uri, tmp, uri, allow=False)
        except _user_errors() as e:
            _fail(str(e))
        if out.exists():
            out.rmdir()
        os.replace(model_dir, out)
    if json_out:
        _print_json(
            {
                "model_uri": resolved.uri,
                "requested_uri": resolved.requested,
                "path": str(out),
                "verified_against": rec.anchor,
                "weights_sha256": rec.weights_sha256,
            }
        )
        return
    Console().print(
        f"{resolved.uri} -> {out}: every file matches {rec.anchor} (weights sha256 "
        f"{rec.weights_sha256})"
    )


def export(
    config: ConfigOpt,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="file to write (e.g. model.onnx); its metadata goes to <out>.json"
        ),
    ],
    fmt: Annotated[str, typer.Option("--format", "-f", help="export format: onnx")] = "onnx",
    model_uri: Annotated[
        str | None,
        typer.Option("--model", "-m", help="model URI (default: models:/<registered>@champion)"),
    ] = None,
    opset: Annotated[int, typer.Option("--opset", min=13, help="ONNX opset")] = 17,
    no_check: Annotated[
        bool, typer.Option("--no-check", help="skip the ONNX Runtime comparison with torch")
    ] = False,
    allow_unpinned: Annotated[
        bool,
        typer.Option(
            "--allow-unpinned",
            help="load a model version that has no pinned hash (as cnnlstm score)",
        ),
    ] = False,
    json_out: JsonOpt = False,
    override: SetOpt = None,
) -> None:
    """Export a model's network for serving elsewhere: ONNX with a dynamic batch axis (and
    window length where the arch allows), inputs x (B, C, L) float32 and lengths (B,) int64,
    plus <out>.json (channels, normaliser, window, classes, task). The model is loaded as
    `cnnlstm score` loads it: its files checked against the hashes pinned in the registry."""
    from cnnlstm.export import FORMATS, ExportCheckError, ExportError, export_onnx
    from cnnlstm.mlflow_tracker import use_tracking
    from cnnlstm.registry import resolve
    from cnnlstm.score import default_model_uri, load_scoring_model

    cfg = _cfg(config, override)
    if fmt not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)} (got {fmt})")
    try:
        uri = use_tracking(cfg)
        resolved = resolve(model_uri or default_model_uri(cfg), uri)
        verified, model = load_scoring_model(resolved, "cpu", uri, allow_unpinned or None)
        rec = export_onnx(
            model,
            out,
            opset=opset,
            check=not no_check,
            source={
                "model_uri": resolved.uri,
                "requested_uri": resolved.requested,
                "model_name": resolved.name,
                "model_version": resolved.version,
                "weights_sha256": verified.weights_sha256,
                "verified_against": verified.anchor
                if verified.pinned
                else "nothing (unpinned, allowed)",
            },
        )
    except (*_user_errors(), ExportError) as e:
        _fail(str(e))
    except ExportCheckError as e:
        _fail(str(e), 1)
    if json_out:
        _print_json(rec | {"path": str(out), "metadata": f"{out}.json"})
        return
    chk = rec["check"]
    checked = (
        f"ONNX Runtime {chk['onnxruntime']} matches torch (max |diff| {chk['max_abs_diff']:.2g})"
        if "max_abs_diff" in chk
        else f"not checked: {chk.get('skipped')}"
    )
    Console().print(
        f"{resolved.uri} ({rec['arch']}) -> {out} + {out}.json; inputs "
        f"{', '.join(i['name'] + str(i['shape']) for i in rec['inputs'])}; {checked}"
    )


COMMANDS = {
    "models": models,
    "promote": promote,
    "score": score,
    "tune": tune,
    "reregister": reregister,
    "fetch-model": fetch_model,
    "export": export,
}
