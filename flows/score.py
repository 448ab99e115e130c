"""Score flow: the registry's champion -> lake files not yet scored -> predictions Parquet."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.logging import get_run_logger

from cnnlstm.config import load_config
from flows.common import RETRIES, run_name


@task(name="score-lake", **RETRIES)
def score_task(config: str, model_uri: str | None, where: dict[str, Any] | None) -> dict[str, Any]:
    from cnnlstm.pipeline import score_lake

    return score_lake(load_config(config), model_uri=model_uri, where=where)


@flow(name="score", flow_run_name=run_name("score"), log_prints=True)
def score_flow(
    config: str, model_uri: str | None = None, where: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Score with ``model_uri`` (default ``models:/<registered model>@champion``); ``where``
    selects lake rows by metadata column (e.g. ``{"split": "test"}``). Idempotent: files already
    scored by this model version are skipped (a watermark beside the predictions)."""
    report = score_task(config, model_uri, where)
    get_run_logger().info(
        "scored %s v%s: %d rows written from %d new files (%d already scored)",
        report["model_name"],
        report["model_version"],
        report["rows_written"],
        report["files_scored"],
        report["files_already_scored"],
    )
    return report
