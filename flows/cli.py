"""The ``cnnlstm`` entry point: the library's commands plus those that run Prefect flows
(``run``, ``serve``). Kept here so that the library never imports Prefect."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cnnlstm.cli import ConfigOpt, _load, app, out


@app.command()
def run(
    config: ConfigOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="training output folder")] = Path(
        "runs/latest"
    ),
) -> None:
    """The main job: the pipeline flow (ingest data.landing -> train -> score) with Prefect's
    ephemeral API, then a summary."""
    cfg = _load(config, None)  # a config error exits 2 before any flow starts
    if "PREFECT_API_URL" not in os.environ and "PREFECT_HOME" not in os.environ:
        # the ephemeral API keeps its database in the project (./.prefect), not in a ~/.prefect
        # that another Prefect version may have migrated
        os.environ["PREFECT_HOME"] = str(Path.cwd() / ".prefect")
    from flows.pipeline import pipeline_flow

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
    lines += [
        "",
        "Look at it:",
        f"  MLflow UI:   mlflow ui --backend-store-uri {t.get('tracking_uri', 'sqlite:///mlflow.db')}"
        "   (runs, metrics, plots, registered models)",
        f"  Prefect UI:  PREFECT_HOME={os.environ.get('PREFECT_HOME', '~/.prefect')} prefect "
        "server start   (then open http://127.0.0.1:4200: flow runs)",
        f"  predictions: polars.scan_parquet('{sc['output']}/**/*.parquet')",
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
