"""The whole pipeline: ingest -> train -> score, as one flow of sub-flows. Re-running resumes:
ingest adds nothing twice, training that has nothing new to learn from (same data, config and
code) is reported up to date, an interrupted training resumes from its checkpoint, scoring skips
files already scored."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import run_name
from flows.ingest import ingest_flow
from flows.score import score_flow
from flows.train import train_flow


@flow(name="pipeline", flow_run_name=run_name("pipeline"), log_prints=True)
def pipeline_flow(
    config: str,
    out_dir: str = "runs/latest",
    score_where: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """``overrides``: config values as ``section.key=value`` (``cnnlstm run --set``), for every
    stage."""
    ingest = ingest_flow(config, overrides=overrides)
    train = train_flow(config, out_dir=out_dir, resume=True, overrides=overrides)
    score = score_flow(config, where=score_where, overrides=overrides)
    return {"ingest": ingest["totals"], "train": train, "score": score}
