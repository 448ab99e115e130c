"""The stages as plain functions with their default wiring (MLflow tracker, registry), used by
the CLI and by the Prefect flows alike. No orchestration here: each function is one stage."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cnnlstm.config import Config

log = logging.getLogger("cnnlstm.pipeline")


def train_and_track(cfg: Config, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train on the lake, tracked in MLflow (run, metrics, plots, lineage, model), register the
    model (alias challenger; champion if it wins). Returns the final metrics (without the
    per-epoch history, which is in ``out_dir/metrics.json``) and the registration."""
    from cnnlstm.mlflow_tracker import MlflowTracker
    from cnnlstm.train import train_from_config

    tracker = MlflowTracker(cfg)
    metrics = train_from_config(cfg, Path(out_dir), resume=resume, tracker=tracker)
    out = {k: v for k, v in metrics.items() if k != "history"}
    out["mlflow_run_id"] = tracker.run_id
    out["tracking_uri"] = tracker.uri
    if tracker.registration:
        out["registered_model"] = tracker.registration
    return out


def score_lake(
    cfg: Config, model_uri: str | None = None, where: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Score the lake files not yet scored by the model (default ``models:/NAME@champion``);
    returns the report (rows written, files, accuracy where labels exist)."""
    from cnnlstm.score import score

    return score(cfg, model_uri=model_uri, where=where).to_dict()
