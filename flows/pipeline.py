"""The whole pipeline: ingest -> train (tracked, registered) -> score, as one flow of
sub-flows. Re-running a failed pipeline resumes: ingest adds nothing twice, training resumes
from its checkpoint, scoring skips files already scored."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import run_name
from flows.ingest import ingest_flow
from flows.score import score_flow
from flows.train import train_flow


@flow(name="pipeline", flow_run_name=run_name("pipeline"), log_prints=True)
def pipeline_flow(
    config: str, out_dir: str = "runs/latest", score_where: dict[str, Any] | None = None
) -> dict[str, Any]:
    ingest = ingest_flow(config)
    train = train_flow(config, out_dir=out_dir, resume=True)
    score = score_flow(config, where=score_where)
    return {"ingest": ingest["totals"], "train": train, "score": score}
