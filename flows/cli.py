"""The ``cnnlstm`` entry point: the library's commands plus those that need Prefect
(``run``, ``serve``, ``doctor``). Kept here so that the library never imports Prefect."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from cnnlstm.cli import ConfigOpt, SetOpt, _load, app, err, out

log = logging.getLogger("cnnlstm.flows")


def _local_prefect_home() -> Path:
    """Where the local API keeps its database: PREFECT_HOME, else ./.prefect (the project, not a
    ~/.prefect that another Prefect version may have migrated)."""
    if "PREFECT_HOME" not in os.environ:
        os.environ["PREFECT_HOME"] = str(Path.cwd() / ".prefect")
    return Path(os.environ["PREFECT_HOME"]).expanduser()


@contextlib.contextmanager
def prefect_api() -> Iterator[str | None]:
    """The Prefect API for this command: ``PREFECT_API_URL`` when set (a server elsewhere), else
    a local server started here that dies with this process (`flows.api_server`; Prefect's own
    temporary server outlives a SIGKILLed parent). Yields the URL of the local server, or None."""
    if os.environ.get("PREFECT_API_URL"):
        yield None
        return
    from flows.api_server import GuardedServer

    _local_prefect_home()
    server = GuardedServer().start()
    os.environ["PREFECT_API_URL"] = server.api_url  # read by Prefect when it is imported
    try:
        if "prefect" in sys.modules:  # imported already (in-process callers): its settings too
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                yield server.api_url
        else:
            yield server.api_url
    finally:
        _drain_prefect_workers()
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def _drain_prefect_workers() -> None:
    """Send the flow-run logs and events still queued before the server stops (as Prefect's test
    harness does), so that nothing is lost and no connection error is printed at exit."""
    if "prefect" not in sys.modules:
        return
    with contextlib.suppress(Exception):
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
    with contextlib.suppress(Exception):
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=10)


@app.command()
def run(
    config: ConfigOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="training output folder")] = Path(
        "runs/latest"
    ),
    json_out: Annotated[
        bool,
        typer.Option("--json", help="print the summary as one JSON document on stdout"),
    ] = False,
    override: SetOpt = None,
) -> None:
    """The main job: the pipeline flow (ingest data.landing -> train -> score) with a local
    Prefect API (unless PREFECT_API_URL is set), then a summary. A progress display per stage
    on stderr; Prefect's flow and task run lines are in the Prefect UI (and on stderr with -v).
    Training whose data, config and code are unchanged is reported up to date (no MLflow run,
    no model version). Flow runs and MLflow runs that a killed earlier run left RUNNING are
    closed first (CRASHED, KILLED)."""
    cfg = _load(config, override)  # a config error exits 2 before any flow starts
    from cnnlstm.liveness import sweep_quietly
    from cnnlstm.progress import RichReporter, reporting

    # the library's INFO records reach the flow-run logs (the Prefect UI); stderr shows them
    # only with -v (its handler's level)
    logging.getLogger("cnnlstm").setLevel(logging.INFO)
    # with --json, stdout carries the JSON document only: anything else printed goes to stderr
    quiet = contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext()
    with prefect_api(), quiet, reporting(None if json_out else RichReporter(err)):
        from prefect import tags

        from flows.liveness import owner_flow_tags, sweep_flow_runs
        from flows.pipeline import pipeline_flow

        try:
            for f in sweep_flow_runs():
                if f.action:
                    log.warning("%s", f.line())
        except Exception as e:  # never stop the pipeline for the sweep
            log.warning("Prefect flow-run sweep skipped: %s", e)
        sweep_quietly(cfg)
        with tags(*owner_flow_tags()):
            summary = pipeline_flow(
                str(config), out_dir=str(out_dir), overrides=list(override or []) or None
            )
    if json_out:
        doc = summary | {
            "config": str(config),
            "overrides": list(override or []),
            "out_dir": str(out_dir),
            "up_to_date": bool(summary["train"].get("up_to_date")),
        }
        sys.stdout.write(json.dumps(doc, indent=1, default=str) + "\n")
        return
    from rich.rule import Rule

    # a terminal (or COLUMNS) narrower than SUMMARY_WIDTH is followed; a pipe gets the full width
    sized = out.is_terminal or "COLUMNS" in os.environ
    width = min(out.width, SUMMARY_WIDTH) if sized else SUMMARY_WIDTH
    out.print(Rule("[bold]summary"), width=width)
    for line in _summary_lines(summary, cfg, out_dir, config, width):
        out.print(line, soft_wrap=True, highlight=False)


SUMMARY_WIDTH = 100  # the summary's lines fit this many columns (a long path may not)
LABEL = 9  # "ingest   "


def _wrap(label: str, text: str, width: int = SUMMARY_WIDTH, indent: int = 0):
    """`text` wrapped to `width` columns after a bold `label` column (continuation lines are
    indented past it); words (paths) are never broken."""
    import textwrap

    from rich.text import Text

    pad = " " * (LABEL + indent)
    lines = textwrap.wrap(
        text,
        width=max(width - LABEL - indent, 20),
        break_long_words=False,
        break_on_hyphens=False,
    ) or [""]
    first = Text.assemble((f"{label:<{LABEL}}", "bold"), " " * indent, lines[0])
    return [first] + [Text(pad + line) for line in lines[1:]]


def _summary_lines(s: dict, cfg, out_dir: Path, config: Path, width: int = SUMMARY_WIDTH):
    from flows.ingest import totals_line
    from flows.score import report_line
    from flows.train import result_line

    i, t, sc = s["ingest"], s["train"], s["score"]
    lines = _wrap("ingest", f"{totals_line(i)} -> {cfg.lake_uri}", width)
    from cnnlstm.tasks import make_task

    task = make_task(cfg.task, cfg.window)
    if t.get("up_to_date"):
        lines += _wrap("train", result_line(t) + " (same data, config and code)", width)
    else:
        lines += _wrap(
            "train",
            f"{task.kind}: weights of epoch {t['weights_epoch']} of {t['epochs_run']} on "
            f"{t['device']} -> {out_dir}/",
            width,
        )
    figures = []
    for part in ("val", "test"):
        if part in t:
            figures += task.summary_lines(part, t[part])
    from cnnlstm.baseline import summary_lines

    figures += summary_lines(task, t)
    for f in figures:
        lines += _wrap("", f.strip(), width, indent=2 * (len(f) - len(f.lstrip()) > 0) + 2)
    reg = t.get("registered_model")
    if reg:
        aliases = ", ".join(reg.get("aliases") or []) or "no alias"
        lines += _wrap("model", f"{reg['name']} v{reg['version']} ({aliases})", width)
        if reg.get("decision") and not t.get("up_to_date"):
            lines += _wrap("", reg["decision"], width, indent=2)
    lines += _wrap("score", report_line(sc) + f" -> {sc['output']}", width)
    graded = ", ".join(
        f"{k} {v:.4f}" for k, v in (sc.get("metrics") or {}).items() if isinstance(v, float)
    )
    if graded:
        lines += _wrap("", f"{graded} on {sc['labelled_rows']:,} labelled windows", width, 2)
    from cnnlstm.drift import summary_line

    if drift := summary_line(sc.get("drift")):
        lines += _wrap("", drift, width, indent=2)
    from rich.text import Text

    uri = t.get("tracking_uri", "sqlite:///mlflow.db")
    if uri.startswith("sqlite:///"):
        uri = "sqlite:///" + _here(uri[len("sqlite:///") :])
    home = _here(os.environ.get("PREFECT_HOME", "~/.prefect"))
    look = [
        ("MLflow UI", f"mlflow ui --backend-store-uri {uri}", "runs, metrics, plots, models"),
        ("Prefect UI", f"PREFECT_HOME={home} prefect server start", "http://127.0.0.1:4200"),
        (
            "predictions",
            f"cnnlstm.predictions.scan('{_here(sc['output'])}')",
            "committed rows only",
        ),
        ("lake", f"cnnlstm lake summary -c {_here(str(config))}", "rows, sources, quarantine"),
    ]
    lines += [Text(""), Text("Look at it:")]
    for name, how, what in look:
        if len(how) + len(what) + 19 <= width:
            lines.append(Text(f"  {name:<12} {how}   ({what})"))
        else:  # the command on a line of its own, to copy
            lines += [Text(f"  {name:<12} ({what})"), Text(f"    {how}")]
    return lines


def _here(path: str) -> str:
    """``path`` relative to the working directory when it lies inside it (shorter to copy;
    the commands of the summary run from here), else as it is (URIs, other folders)."""
    try:
        rel = Path(path).resolve().relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        return path
    return str(rel) if "://" not in path else path


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="replaces each deployment's config")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="print what is served as one JSON line, then serve")
    ] = False,
    override: SetOpt = None,
) -> None:
    """Run the scheduled deployments of deploy/prefect.yaml (ingest every 15 minutes, score
    hourly, retrain weekly) in this process, without a work pool. Needs a Prefect API that
    stays up (`prefect server start` elsewhere, PREFECT_API_URL set). Ctrl-C stops. --set
    values apply to every flow run served here (as CNNLSTM__SECTION__KEY environment values of
    this process, which every config load reads)."""
    if config is not None:
        _load(config, override)
    for key, value in _env_overrides(override):
        os.environ[key] = value
    from flows.serve import serve_all

    if json_out:
        from flows.serve import served_deployments

        names = [
            d.name for d in served_deployments(config=str(config.resolve()) if config else None)
        ]
        doc = {"serving": names, "config": str(config) if config else None}
        sys.stdout.write(json.dumps(doc | {"overrides": list(override or [])}) + "\n")
        sys.stdout.flush()

    serve_all(str(config.resolve()) if config else None)


def _env_overrides(items: list[str] | None) -> list[tuple[str, str]]:
    """``section.key=value`` -> (``CNNLSTM__SECTION__KEY``, value) (`cnnlstm.config` reads those
    as overrides); a malformed item exits 2."""
    from cnnlstm.config import ENV_PREFIX

    out = []
    for item in items or []:
        key, eq, value = item.partition("=")
        parts = key.strip().split(".")
        if not eq or not all(p.isidentifier() for p in parts):
            err.print(
                f"[red]config error:[/red] override {item!r} is not of the form section.key=value"
            )
            raise typer.Exit(2)
        out.append((ENV_PREFIX + "__".join(p.upper() for p in parts), value))
    return out


def _prefect_doctor(fix: bool):
    """(findings, a Check or None): the Prefect flow runs our killed processes left RUNNING."""
    from cnnlstm.doctor import Check

    if not os.environ.get("PREFECT_API_URL"):
        db = _local_prefect_home() / "prefect.db"
        if not db.is_file():
            return [], Check("prefect", "ok", f"no local Prefect database ({db}): nothing to sweep")
    try:
        with prefect_api():
            from flows.liveness import sweep_flow_runs

            return sweep_flow_runs(fix), None
    except Exception as e:
        return [], Check("prefect", "error", f"{type(e).__name__}: {e}")


@app.command()
def doctor(
    config: ConfigOpt,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix/--no-fix",
            help="end runs whose owner process is gone (MLflow: KILLED, Prefect: CRASHED)",
        ),
    ] = True,
    prefect: Annotated[
        bool,
        typer.Option(
            "--prefect/--no-prefect",
            help="also sweep Prefect flow runs (PREFECT_API_URL, else the local ./.prefect "
            "database, through a temporary local API)",
        ),
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="print a JSON report on stdout")] = False,
    override: SetOpt = None,
) -> None:
    """Find what killed processes left: MLflow runs and Prefect flow runs still RUNNING whose
    owner process is gone (ended KILLED / CRASHED unless --no-fix); and, report only, the lake
    (ledger readable, data files present, unlisted files), temp files, commit locks, and
    prediction files no watermark names. Exit 0 when nothing needs a look (after the fixes), 1
    otherwise, 2 for a config error."""
    from cnnlstm.doctor import checks, mlflow_sweep

    cfg = _load(config, override)
    mlflow_found, mlflow_problem = mlflow_sweep(cfg, fix)
    prefect_found, prefect_problem = _prefect_doctor(fix) if prefect else ([], None)
    report_checks = checks(cfg) + [c for c in (mlflow_problem, prefect_problem) if c]
    findings = mlflow_found + prefect_found
    needs_look = [
        f for f in findings if f.state == "unknown" or (f.state == "dead" and not f.action)
    ]
    needs_look += [c for c in report_checks if c.status in ("warn", "error")]
    if json_out:
        print(
            json.dumps(
                {
                    "mlflow": [f.to_dict() for f in mlflow_found],
                    "prefect": [f.to_dict() for f in prefect_found],
                    "checks": [c.to_dict() for c in report_checks],
                    "fixed": sum(1 for f in findings if f.action),
                    "needs_look": len(needs_look),
                },
                indent=1,
            )
        )
    else:
        _print_doctor(findings, report_checks, fix)
    raise typer.Exit(1 if needs_look else 0)


def _print_doctor(findings, report_checks, fix: bool) -> None:
    from rich.table import Table

    style = {"alive": "green", "dead": "red", "unknown": "yellow"}
    if findings:
        t = Table(title="runs left RUNNING", show_lines=False)
        for c in ("run", "name", "owner", "action"):
            t.add_column(c, overflow="fold")
        for f in findings:
            t.add_row(f"{f.kind} {f.id}", f.name, f"[{style[f.state]}]{f.reason}", f.action or "-")
        out.print(t)
    else:
        out.print("No MLflow run or Prefect flow run is left RUNNING.")
    t = Table(title="checks (report only)")
    for c in ("check", "status", "detail"):
        t.add_column(c, overflow="fold")
    cstyle = {"ok": "green", "info": "cyan", "warn": "yellow", "error": "red"}
    for c in report_checks:
        t.add_row(c.check, f"[{cstyle[c.status]}]{c.status}", c.detail)
    out.print(t)
    dead = [f for f in findings if f.state == "dead" and not f.action]
    if dead and not fix:
        out.print(f"{len(dead)} runs of gone processes left as they are (--no-fix).")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
