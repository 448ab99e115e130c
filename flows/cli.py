"""The ``cnnlstm`` entry point: the library's commands plus those that run Prefect flows
(``run``, ``serve``). Kept here so that the library never imports Prefect."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnlstm.cli import ConfigOpt, _load, app, err, out


@app.command()
def run(
    config: ConfigOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="training output folder")] = Path(
        "runs/latest"
    ),
) -> None:
    """The main job: the pipeline flow (ingest data.landing -> train -> score) with Prefect's
    ephemeral API, then a summary."""
    _load(config, None)  # config errors: exit 2 before any flow starts
    from flows.pipeline import pipeline_flow

    summary = pipeline_flow(str(config), out_dir=str(out_dir))
    out.rule("[bold]summary")
    out.print_json(data=summary)
    err.print(
        "Look: [bold]mlflow ui --backend-store-uri sqlite:///mlflow.db[/bold] (runs, models), "
        "[bold]prefect server start[/bold] (flow runs)."
    )


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
