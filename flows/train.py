"""Train flow: lake -> windows -> model -> checkpoint, metrics and plots (-> MLflow)."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.logging import get_run_logger

from cnnlstm.config import load_config
from flows.common import RETRIES, run_name


@task(name="train-model", **RETRIES)
def train_task(config: str, out_dir: str, resume: bool) -> dict[str, Any]:
    """Returns the final metrics (small); the model and plots stay on disk / in MLflow."""
    from cnnlstm.pipeline import train_and_track

    return train_and_track(load_config(config), out_dir, resume=resume)


@flow(name="train", flow_run_name=run_name("train"), log_prints=True)
def train_flow(config: str, out_dir: str = "runs/latest", resume: bool = True) -> dict[str, Any]:
    """Train on the lake. ``resume`` picks up this out_dir's checkpoint after a crash."""
    result = train_task(config, out_dir, resume)
    get_run_logger().info("train result: %s", {k: v for k, v in result.items() if k != "history"})
    return result
