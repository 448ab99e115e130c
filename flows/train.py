"""Train flow: lake -> windows -> model -> checkpoint, metrics and plots (-> MLflow).

A job already done (same lake fingerprint, resolved config and code: `cnnlstm.pipeline`) is
reported up to date: no MLflow run, no model version."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.logging import get_run_logger

from cnnlstm.config import load_config
from flows.common import RETRIES, run_name


@task(name="train-model", **RETRIES)
def train_task(
    config: str,
    out_dir: str,
    resume: bool,
    overrides: list[str] | None = None,
    skip_unchanged: bool = True,
) -> dict[str, Any]:
    """Returns the final metrics (small); the model and plots stay on disk / in MLflow."""
    from cnnlstm.pipeline import train_and_track

    return train_and_track(
        load_config(config, overrides),
        out_dir,
        resume="auto" if resume else False,
        skip_unchanged=skip_unchanged,
    )


def result_line(result: dict[str, Any]) -> str:
    """One line for a person: what training did, and the model version it left."""
    reg = result.get("registered_model") or {}
    model = (
        f"{reg['name']} v{reg['version']} ({', '.join(reg.get('aliases') or []) or 'no alias'})"
        if reg
        else "not registered"
    )
    if result.get("up_to_date"):
        return f"up to date: run {result.get('mlflow_run_id')}, model {model}"
    what = (
        f"{result.get('epochs_run', '?')} epochs on {result.get('device', '?')}, "
        f"run {result.get('mlflow_run_id')}"
    )
    if reg and not reg.get("registered", True):
        return f"{what}; {reg.get('decision')}"
    return f"{what}; model {model}" + (f": {reg['decision']}" if reg.get("decision") else "")


@flow(name="train", flow_run_name=run_name("train"), log_prints=True)
def train_flow(
    config: str,
    out_dir: str = "runs/latest",
    resume: bool = True,
    overrides: list[str] | None = None,
    skip_unchanged: bool = True,
) -> dict[str, Any]:
    """Train on the lake. ``resume`` picks up this out_dir's checkpoint after a crash (only a
    checkpoint of the same job: other data or config trains afresh). ``overrides``: config
    values as ``section.key=value``. ``skip_unchanged``: a job already done is reported up to
    date instead of trained again."""
    from cnnlstm.progress import current

    result = train_task(config, out_dir, resume, overrides, skip_unchanged)
    line = result_line(result)
    get_run_logger().info("train: %s", line)
    if (reporter := current()) is not None:
        reporter.finish("train", line)
    return result
