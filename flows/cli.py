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

from cnnlstm.cli import ConfigOpt, SetOpt, _load, app, out

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
) -> None:
    """The main job: the pipeline flow (ingest data.landing -> train -> score) with a local
    Prefect API (unless PREFECT_API_URL is set), then a summary. Flow runs and MLflow runs that a
    killed earlier run left RUNNING are closed first (CRASHED, KILLED)."""
    cfg = _load(config, None)  # a config error exits 2 before any flow starts
    from cnnlstm.liveness import sweep_quietly

    with prefect_api():
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
            summary = pipeline_flow(str(config), out_dir=str(out_dir))
    out.rule("[bold]summary")
    out.print(_summary_text(summary, cfg, out_dir, config))


def _summary_text(s: dict, cfg, out_dir: Path, config: Path) -> str:
    i, t, sc = s["ingest"], s["train"], s["score"]
    lines = [
        f"[bold]ingest[/bold]   {i['accepted']:,} rows accepted, {i['quarantined']:,} quarantined, "
        f"{i['duplicates']:,} duplicates; {i['committed']} files committed, {i['skipped']} "
        f"already in the lake, {i['rejected']} rejected  -> {cfg.lake_uri}",
    ]
    from cnnlstm.tasks import make_task

    task = make_task(cfg.task, cfg.window)
    lines.append(
        f"[bold]train[/bold]    {task.kind}: weights of epoch {t['weights_epoch']} of "
        f"{t['epochs_run']} on {t['device']}  -> {out_dir}/"
    )
    for part in ("val", "test"):
        if part in t:
            lines += [f"           {line}" for line in task.summary_lines(part, t[part])]
    from cnnlstm.baseline import summary_lines

    lines += [f"           {line}" for line in summary_lines(task, t)]
    reg = t.get("registered_model")
    if reg:
        aliases = "champion, challenger" if reg["champion"] else "challenger"
        lines.append(
            f"[bold]model[/bold]    {reg['name']} v{reg['version']} ({aliases}): {reg['decision']}"
        )
    graded = ", ".join(
        f"{k} {v:.4f}" for k, v in (sc.get("metrics") or {}).items() if isinstance(v, float)
    )
    lines.append(
        f"[bold]score[/bold]    {sc['rows_written']:,} predictions by {sc['model_name']} "
        f"v{sc['model_version']} from {sc['files_scored']} new files "
        f"({sc['files_already_scored']} already scored)"
        + (f"; {graded} on {sc['labelled_rows']:,} labelled windows" if graded else "")
        + f"  -> {sc['output']}"
    )
    from rich.markup import escape

    from cnnlstm.drift import summary_line

    if drift := summary_line(sc.get("drift")):
        lines.append(f"           {escape(drift)}")
    lines += [
        "",
        "Look at it:",
        f"  MLflow UI:   mlflow ui --backend-store-uri {t.get('tracking_uri', 'sqlite:///mlflow.db')}"
        "   (runs, metrics, plots, registered models)",
        f"  Prefect UI:  PREFECT_HOME={os.environ.get('PREFECT_HOME', '~/.prefect')} prefect "
        "server start   (then open http://127.0.0.1:4200: flow runs)",
        f"  predictions: cnnlstm.predictions.scan('{sc['output']}')   (committed rows only; "
        "a directory glob also sees the files of a killed scorer)",
        f"  lake:        cnnlstm lake summary -c {config}   (rows, sources, quarantine)",
    ]
    return "\n".join(lines)


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="replaces each deployment's config")
    ] = None,
) -> None:
    """Run the scheduled deployments of deploy/prefect.yaml (ingest every 15 minutes, score
    hourly, retrain weekly) in this process, without a work pool. Needs a Prefect API that
    stays up (`prefect server start` elsewhere, PREFECT_API_URL set). Ctrl-C stops."""
    if config is not None:
        _load(config, None)
    from flows.serve import serve_all

    serve_all(str(config.resolve()) if config else None)


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
