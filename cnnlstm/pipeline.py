"""The stages as plain functions with their default wiring, used by the CLI and by the Prefect
flows alike. No orchestration here: each function is one stage.

Training a tracked model is four explicit steps in one MLflow run: train (the tracker logs
params, curves, plots, metrics), log the pyfunc model, register it, and promote it when it wins
on validation data (`cnnlstm.registry`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cnnlstm.config import Config

log = logging.getLogger("cnnlstm.pipeline")


def registered_name(cfg: Config) -> str:
    return cfg.tracking.registered_model or cfg.data.name


def evaluation_of(cfg: Config, metrics: dict[str, Any]):
    """The run's validation evaluation as the registry compares it (None: no validation)."""
    from cnnlstm.registry import Evaluation
    from cnnlstm.tasks import make_task

    ev = metrics.get("evaluation")
    if not ev:
        return None
    sel = make_task(cfg.task, cfg.window).selection_for(cfg.tracking.champion_metric)
    gib = (
        sel.greater_is_better
        if cfg.tracking.greater_is_better is None
        else (cfg.tracking.greater_is_better)
    )
    value = metrics["val"].get(sel.metric)
    if value is not None and not isinstance(value, int | float):
        raise ValueError(f"tracking.champion_metric={sel.metric} is not a number in the metrics")
    return Evaluation(
        sel.metric,
        gib,
        None if value is None else float(value),
        ev["fingerprint"],
        ev["spans"],
    )


def champion_reevaluator(cfg: Config, ev, uri: str):
    """A callback for the registry: the champion's validation metric on this run's validation
    readings (the lake rows of the validation windows' entities and spans)."""

    def reevaluate(mv) -> float | None:
        import polars as pl

        from cnnlstm.lake import scan_readings
        from cnnlstm.model_trust import ModelTrustError
        from cnnlstm.registry import ResolvedModel
        from cnnlstm.score import load_scoring_model

        spans = ev.spans
        if not spans:
            return None
        resolved = ResolvedModel(
            f"models:/{mv.name}/{mv.version}", mv.name, str(mv.version), "champion"
        )
        try:  # verified against the champion's pinned hashes before it is built
            _, model = load_scoring_model(resolved, "cpu", uri)
        except ModelTrustError as e:
            log.error("champion v%s is not re-evaluated: %s", mv.version, e)
            return None
        except Exception as e:  # e.g. an artifact of an older format
            log.warning("could not re-evaluate champion v%s: %s", mv.version, e)
            return None
        span = pl.LazyFrame(
            {
                "entity_id": list(spans),
                "_t0": [v[0] for v in spans.values()],
                "_t1": [v[1] for v in spans.values()],
            },
            schema={"entity_id": pl.String, "_t0": pl.Int64, "_t1": pl.Int64},
        )
        t = pl.col("timestamp").dt.epoch("us")
        readings = (
            scan_readings(cfg.lake_uri)
            .join(span, on="entity_id")
            .filter(t.is_between(pl.col("_t0"), pl.col("_t1")))
            .drop("_t0", "_t1")
            .collect()
        )
        try:
            m = model.evaluate_frame(readings)
        except Exception as e:  # e.g. other channels
            log.warning("could not re-evaluate champion v%s: %s", mv.version, e)
            return None
        v = m.get(ev.metric)
        return None if v is None else float(v)

    return reevaluate


def train_and_track(cfg: Config, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train on the lake, tracked in MLflow (run, metrics, plots, lineage), log the pyfunc
    model, register it (alias challenger) and promote it to champion when it wins on validation
    data. Returns the final metrics (without the per-epoch history, which is in
    ``out_dir/metrics.json``) and the registration."""
    from cnnlstm import registry
    from cnnlstm.mlflow_tracker import MlflowTracker, log_model
    from cnnlstm.train import run_tags, train_from_config

    out_dir = Path(out_dir)
    chosen = None
    if cfg.model.arch == "auto":  # choose a preset on validation first (child runs of a study)
        from cnnlstm.auto import auto_select

        cfg, chosen = auto_select(cfg, out_dir)
    tracker = MlflowTracker(cfg)
    with tracker.run(name=cfg.data.name, tags=run_tags(cfg)):
        metrics = train_from_config(cfg, out_dir, resume=resume, tracker=tracker)
        info = log_model(out_dir / "model.safetensors")
        registration = None
        if cfg.tracking.register_model:
            ev = evaluation_of(cfg, metrics)
            registration = registry.register(
                registered_name(cfg),
                info.model_uri,
                tracker.run_id,
                ev,
                champion_reevaluator(cfg, ev, tracker.uri) if ev is not None else None,
                tracker.uri,
            )
            from cnnlstm.model_card import describe  # the version's description: its card

            describe(cfg, metrics, registration, tracker.run_id, tracker.uri)
    out = {k: v for k, v in metrics.items() if k != "history"}
    out["mlflow_run_id"] = tracker.run_id
    out["tracking_uri"] = tracker.uri
    out["model_uri"] = info.model_uri
    if registration:
        out["registered_model"] = registration
    if chosen is not None:
        out["auto"] = {
            k: chosen.get(k) for k in ("preset", "metric", "best_value", "parent_run_id", "trials")
        }
    return out


def score_lake(
    cfg: Config, model_uri: str | None = None, where: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Score the lake files not yet scored by the model (default ``models:/NAME@champion``);
    returns the report (rows written, files, the task's metrics where labels exist)."""
    from cnnlstm.score import score

    return score(cfg, model_uri=model_uri, where=where).to_dict()
