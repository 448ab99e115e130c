"""The ``cnnlstm`` command line.

Exit status (all commands): 0 success; 1 the job ran but something needs a look (ingest:
rows quarantined or files rejected); 2 usage or config error; 3 an infrastructure failure (ingest:
the lake could not be written or locked - disk full, read-only, lock timeout; nothing was marked
as bad data: run again).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cnnlstm.config import ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
err = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML config file")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override a config value: section.key=value")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print a JSON report on stdout")]


def _load(config: Path, overrides: list[str] | None):
    try:
        return load_config(config, overrides or [])
    except ConfigError as e:
        err.print(f"[red]config error:[/red] {e}")
        raise typer.Exit(2) from None


@app.callback()
def _main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="log progress (INFO), Prefect's flow and task run lines too"
        ),
    ] = False,
) -> None:
    setup_logging(verbose)


def setup_logging(verbose: bool) -> None:
    """Log records on stderr: warnings and errors, or everything from INFO with -v. The level
    is set on the handler too: Prefect's loggers (flow and task run states, "Finished in state
    Completed()") log INFO whatever the root level, and reach the Prefect API (the UI) through
    their own handler either way. MLflow's own INFO lines and download progress bars are off
    unless -v (the commands show their own progress)."""
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for h in logging.getLogger().handlers:
        if type(h) is logging.StreamHandler:
            h.setLevel(level)
    logging.getLogger("mlflow").setLevel(level)  # if imported already; else by its variable:
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", logging.getLevelName(level))
    if not verbose:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@app.command()
def ingest(
    paths: Annotated[
        list[str], typer.Argument(help="files, folders or globs (CSV, CSV.gz, Parquet)")
    ],
    config: ConfigOpt,
    json_out: JsonOpt = False,
    reprocess: Annotated[
        bool,
        typer.Option(
            "--reprocess",
            help="read files already in the lake again under the current config and replace "
            "their rows (after a config fix)",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="read, validate and account for every row, but write nothing"
        ),
    ] = False,
    override: SetOpt = None,
) -> None:
    """Land sensor files in the lake: validated, partitioned, idempotent.

    Exit 0 when every row went in clean, 1 when rows were quarantined or files rejected,
    2 for usage or config errors, 3 when the lake could not be written (disk full, read-only,
    lock timeout: run again)."""
    from cnnlstm.lake import expand_sources

    cfg = _load(config, override)
    try:
        n = len(expand_sources(paths, cfg.data.include, cfg.data.exclude, cfg.data.follow_symlinks))
    except FileNotFoundError as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    with Progress(
        TextColumn("[bold]ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=True,
        disable=json_out or n < 2,
    ) as progress:
        task = progress.add_task("", total=n)

        def tick(rep):
            progress.update(task, advance=1, description=rep.name)

        report = _run_ingest(cfg, paths, on_file=tick, reprocess=reprocess, dry_run=dry_run)
    if json_out:
        print(json.dumps(report.to_dict() | {"dry_run": dry_run}, indent=1))
    else:
        _print_ingest(report, dry_run)
    raise typer.Exit(_ingest_status(report))


def _run_ingest(cfg, paths, **kw):
    """`cnnlstm.ingest.ingest`; a lake that cannot be used at all exits 3, a label table
    (data.label.table) that cannot be read 2."""
    from cnnlstm.ingest import ingest as run_ingest
    from cnnlstm.lake import LakeError, LakeUnavailable

    try:
        return run_ingest(cfg, paths, **kw)
    except (LakeUnavailable, LakeError) as e:
        err.print(f"[red]lake error:[/red] {e}")
        raise typer.Exit(3) from None
    except ConfigError as e:
        err.print(f"[red]config error:[/red] {e}")
        raise typer.Exit(2) from None


def _ingest_status(report, complete: bool = True) -> int:
    """3 a file failed on the lake (run again), 1 rows quarantined or files rejected, else 0."""
    if report.failed:
        return 3
    return 0 if report.clean and complete else 1


def _print_ingest(report, dry_run: bool = False) -> None:
    """The files that were read (committed, rejected, ...) as a table; files already in the lake
    in one line. A run that added nothing prints one line."""
    from rich import box

    tot = report.totals()
    done = " (dry run: nothing written)" if dry_run else ""
    shown = [f for f in report.files if f.outcome != "skipped"]
    if not shown:
        n = tot["skipped"]
        out.print(
            f"Nothing new{done}: {n:,} file{'s' if n != 1 else ''} already in the lake "
            f"(skipped, same content), 0 rows added -> {report.lake}",
            soft_wrap=True,
            highlight=False,
        )
        return
    t = Table(title=f"ingest -> {report.lake}{done}", box=box.SIMPLE_HEAD, title_justify="left")
    for c, j in (
        ("file", "left"),
        ("outcome", "left"),
        ("read", "right"),
        ("accepted", "right"),
        ("quarant.", "right"),
        ("dupl.", "right"),
    ):
        t.add_column(c, justify=j, overflow="fold", no_wrap=j == "right")
    t.add_column("reason / notes", overflow="fold", ratio=1)
    style = {"committed": "green", "skipped": "dim", "rejected": "red", "failed": "bold magenta"}
    style["retry"] = "yellow"  # the file changed while it was read: not committed
    for f in shown:
        t.add_row(
            f.name,
            f"[{style[f.outcome]}]{f.outcome}",
            f"{f.rows_read:,}",
            f"{f.accepted:,}",
            f"{f.quarantined:,}" if not f.quarantined else f"[yellow]{f.quarantined:,}",
            f"{f.duplicates:,}",
            f.reason or "; ".join(f.notes),
        )
    t.add_section()
    t.add_row(
        "total",
        "",
        f"{tot['rows_read']:,}",
        f"{tot['accepted']:,}",
        f"{tot['quarantined']:,}",
        f"{tot['duplicates']:,}",
        "",
    )
    out.print(t)
    more = " (already in the lake, same content)" if tot["skipped"] else ""
    out.print(
        f"files: {tot['committed']} committed, {tot['skipped']} skipped{more}, "
        f"{tot['rejected']} rejected",
        soft_wrap=True,
    )
    if not report.clean:
        out.print(
            "[yellow]Some rows were quarantined or files rejected:[/yellow] see the reasons "
            "above, `cnnlstm lake quarantine` and the ledger under _ledger/."
        )


@app.command("init")
def init_cmd(
    landing: Annotated[Path, typer.Argument(help="the folder of landing files to sample")],
    output: Annotated[Path, typer.Option("--output", "-o", help="config file to write")] = Path(
        "config.yaml"
    ),
    name: Annotated[str | None, typer.Option(help="data.name (default: the folder's)")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite the output file")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Draft a commented config from a sample of LANDING's files: dialect, path columns,
    timestamp, channels, label, entity, metadata. Undecided keys are marked TODO."""
    from cnnlstm.init import InitError, write_config

    try:
        d = write_config(landing, output, name=name, force=force)
    except (InitError, ConfigError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    if json_out:
        print(json.dumps({"output": str(output), "notes": d.notes, "todos": d.todos}, indent=1))
        return
    out.print(f"wrote {output}: {d.notes[0]}")
    for t in d.todos:
        out.print(f"[yellow]TODO[/yellow] {t}")
    out.print(f"next: read the TODOs, then `cnnlstm ingest {landing} -c {output} --dry-run`")


lake_app = typer.Typer(help="Inspect the lake.", no_args_is_help=True)
app.add_typer(lake_app, name="lake")


@lake_app.command("summary")
def lake_summary_cmd(config: ConfigOpt, json_out: JsonOpt = False, override: SetOpt = None) -> None:
    """Sources, rows, entities and quarantined rows in the lake (a table; --json: JSON)."""
    from cnnlstm.lake import lake_summary

    cfg = _load(config, override)
    s = lake_summary(cfg.lake_uri)
    if json_out:
        print(json.dumps(s, indent=1))
        return
    t = Table(title=f"lake {s['lake']}", show_header=False, title_justify="left")
    t.add_column("what")
    t.add_column("count", justify="right")
    for key, label in (
        ("sources", "source files in the ledger"),
        ("data_files", "data files"),
        ("rows", "rows"),
        ("entities", "entities"),
        ("quarantined", "rows quarantined"),
        ("rejected_sources", "files rejected"),
    ):
        t.add_row(label, f"{s[key]:,}")
    out.print(t)


@lake_app.command("quarantine")
def lake_quarantine_cmd(
    config: ConfigOpt,
    limit: Annotated[int, typer.Option(help="rows to show")] = 20,
    replay: Annotated[
        bool,
        typer.Option(
            "--replay",
            help="re-read the source files that have quarantined rows under the current config "
            "(their rows are replaced; files no longer on disk are listed)",
        ),
    ] = False,
    json_out: JsonOpt = False,
    override: SetOpt = None,
) -> None:
    """Quarantined rows with their reason, source file and row number."""
    import polars as pl

    from cnnlstm.lake import scan_quarantine

    cfg = _load(config, override)
    if replay:
        _replay(cfg, json_out)
        return
    lf = scan_quarantine(cfg.lake_uri)
    if json_out:
        cols = ("source_file", "source_row", "reason", "raw")
        rows = [] if lf is None else lf.select(cols).head(limit).collect().to_dicts()
        print(json.dumps({"lake": cfg.lake_uri, "rows": rows}, indent=1, default=str))
        return
    if lf is None:
        out.print("No quarantined rows.")
        return
    with pl.Config(fmt_str_lengths=80, tbl_rows=limit):
        out.print(lf.select("source_file", "source_row", "reason", "raw").head(limit).collect())


def _replay(cfg, json_out: bool = False) -> None:
    from cnnlstm.lake import Lake, source_exists

    recs = [r for r in Lake(cfg.lake_uri).records() if r.get("quarantined")]
    sources = sorted({r["source"] for r in recs})
    here = [s for s in sources if source_exists(s)]
    gone = sorted(set(sources) - set(here))
    for s in gone:
        err.print(f"[yellow]not on disk any more, not replayed:[/yellow] {s}")
    if not here:
        if json_out:
            print(json.dumps({"replayed": None, "not_on_disk": gone}, indent=1))
        else:
            out.print("No quarantined rows to replay.")
        raise typer.Exit(0 if not sources else 1)
    report = _run_ingest(cfg, here, reprocess=True)
    if json_out:
        print(json.dumps({"replayed": report.to_dict(), "not_on_disk": gone}, indent=1))
    else:
        _print_ingest(report)
    raise typer.Exit(_ingest_status(report, complete=len(here) == len(sources)))


def _register_stage_commands() -> None:
    from cnnlstm.cli_mlflow import COMMANDS
    from cnnlstm.cli_train import train_command

    app.command("train")(train_command)
    for name, fn in COMMANDS.items():
        app.command(name)(fn)


_register_stage_commands()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
