"""The stages as plain functions with their default wiring, used by the CLI and by the Prefect
flows alike. No orchestration here: each function is one stage.

Training a tracked model is four explicit steps in one MLflow run: train (the tracker logs
params, curves, plots, metrics), log the pyfunc model, register it, and promote it when it wins
on validation data (`cnnlstm.registry`).

A training job is identified by three things, recorded as tags of its MLflow run (`job_tags`):
the lake's fingerprint (``cnnlstm.job.data``: the committed lake files), the resolved config
without what cannot change the model (``cnnlstm.job.config``: no paths, scoring, runner or
display settings) and the code (``cnnlstm.job.code``: package version and a hash of the
package's sources); ``cnnlstm.job`` hashes the three. With ``skip_unchanged`` a finished run
of the same job (and its registered version) is reported as up to date instead of training
again: no MLflow run, no model version.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal

from cnnlstm.config import Config

log = logging.getLogger("cnnlstm.pipeline")

JOB_TAG = "cnnlstm.job"
JOB_MARKER = "job.json"  # in the training output folder: which job its checkpoint belongs to


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


# ---------------------------------------------------------------------------------------------
# what a training job is: data, config, code


def code_version() -> str:
    """The package version and a hash of the package's Python sources (a changed checkout, git
    or not, is other code): ``0.1.0+src.<16 hex>``."""
    import cnnlstm

    root = Path(cnnlstm.__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return f"{cnnlstm.__version__}+src.{h.hexdigest()[:16]}"


def config_key(cfg: Config) -> str:
    """sha256 of the resolved config without what cannot change the trained model: where the
    lake and the tracking store are (the data fingerprint covers the data), the landing
    selection, scoring, the runner, and ``train.progress``."""
    raw = cfg.model_dump(mode="json")
    for section in ("lake", "score", "runner"):
        raw.pop(section, None)
    for key in ("landing", "include", "exclude", "follow_symlinks"):
        raw.get("data", {}).pop(key, None)
    raw.get("train", {}).pop("progress", None)
    for key in ("uri", "artifact_location"):
        raw.get("tracking", {}).pop(key, None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()


def data_fingerprint(cfg: Config) -> str:
    """The lake's fingerprint over its committed files (`cnnlstm.mlflow_tracker.lake_lineage`,
    the ``lake.fingerprint`` of training runs); ``empty`` for a lake with none."""
    from cnnlstm.lake import Lake
    from cnnlstm.mlflow_tracker import lake_lineage

    if not Lake(cfg.lake_uri).records():
        return "empty"
    return lake_lineage(cfg.lake_uri)["fingerprint"]


def job_tags(cfg: Config) -> dict[str, str]:
    """The tags that say which job a training run is (see the module docstring)."""
    tags = {
        "cnnlstm.job.data": data_fingerprint(cfg),
        "cnnlstm.job.config": config_key(cfg),
        "cnnlstm.job.code": code_version(),
    }
    joined = "\n".join(f"{k}={v}" for k, v in sorted(tags.items()))
    return tags | {JOB_TAG: hashlib.sha256(joined.encode()).hexdigest()}


def find_unchanged(cfg: Config, job: dict[str, str], uri: str):
    """The newest FINISHED run of the config's experiment with the same job tag whose
    registered version still exists (when the config registers models), or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None or exp.lifecycle_stage == "deleted":
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{JOB_TAG}` = '{job[JOB_TAG]}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    for run in runs:
        if not cfg.tracking.register_model:
            return run
        tags = run.data.tags
        name, version = tags.get("registry.model"), tags.get("registry.version")
        if name != registered_name(cfg) or not version:
            continue
        try:
            client.get_model_version(name, version)
        except MlflowException:  # deleted since: train again
            continue
        return run
    return None


def _up_to_date(cfg: Config, run, uri: str, job: dict[str, str]) -> dict[str, Any]:
    """What `train_and_track` returns for a job already done by `run`: that run's metrics
    (its metrics.json), ids, and its registered version as the registry has it now."""
    import tempfile

    from mlflow import MlflowClient

    from cnnlstm.registry import CHAMPION, DECISION_TAG, _aliases

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_id = run.info.run_id
    metrics: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="cnnlstm-metrics-") as d:
            path = client.download_artifacts(run_id, "metrics.json", d)
            metrics = json.loads(Path(path).read_text())
    except Exception as e:  # the summary then has fewer figures; nothing else depends on it
        log.warning("metrics.json of run %s not read: %s", run_id, e)
    out = {k: v for k, v in metrics.items() if k != "history"}
    tags = run.data.tags
    out |= {
        "up_to_date": True,
        "mlflow_run_id": run_id,
        "tracking_uri": uri,
        "model_uri": tags.get("model.uri"),
        "job": job,
    }
    name, version = tags.get("registry.model"), tags.get("registry.version")
    if name and version:
        aliases = sorted(a for a, v in _aliases(client, name).items() if v == version)
        mv = client.get_model_version(name, version)
        out["registered_model"] = {
            "name": name,
            "version": version,
            "registered": False,
            "champion": CHAMPION in aliases,
            "aliases": aliases,
            "decision": (mv.tags or {}).get(DECISION_TAG) or "",
            "weights_sha256": (mv.tags or {}).get("cnnlstm.weights_sha256"),
        }
    return out


def _resume_for(out_dir: Path, job: dict[str, str], cfg: Config, resume: bool | str) -> bool:
    """``resume="auto"``: resume only a checkpoint of this same job (`JOB_MARKER`), so that new
    data or another config starts afresh instead of failing on the old checkpoint."""
    if resume != "auto":
        return bool(resume)
    try:
        marker = json.loads((out_dir / JOB_MARKER).read_text())
    except (OSError, ValueError):
        return False
    same = marker.get("job") == job[JOB_TAG]
    if not same and (out_dir / "checkpoint").exists():
        log.info("%s holds a checkpoint of another job: training afresh", out_dir)
    return same


def _write_marker(out_dir: Path, job: dict[str, str], cfg: Config, state: str, run_id) -> None:
    from cnnlstm.checkpoint import atomic_write_bytes

    out_dir.mkdir(parents=True, exist_ok=True)
    marker = {
        "job": job[JOB_TAG],
        "state": state,
        "mlflow_run_id": run_id,
    }
    atomic_write_bytes(out_dir / JOB_MARKER, json.dumps(marker, indent=1).encode())


# ---------------------------------------------------------------------------------------------
# progress (cnnlstm.progress): epochs, elapsed, time left, the validation figure


def _epoch_reporter(cfg: Config, reporter):
    """An ``on_metrics`` callback for the tracker that reports each epoch to `reporter`."""
    from cnnlstm.tasks import make_task

    total = cfg.train.epochs
    try:
        monitor = (
            "val_"
            + make_task(cfg.task, cfg.window).selection_for(cfg.tracking.champion_metric).metric
        )
    except Exception:
        monitor = "val_loss"

    after = "refit on train + validation" if cfg.train.refit_full else "evaluation"
    if cfg.train.baseline != "off" and cfg.model.arch != "minirocket":
        after += ", MiniRocket baseline"

    def on_metrics(metrics: dict[str, float], step: int | None) -> None:
        if step is None:
            return
        refit = any(k.startswith("refit_") for k in metrics)
        stage = "refit" if refit else "train"
        m = {k.removeprefix("refit_"): v for k, v in metrics.items()}
        shown = [f"loss {m['train_loss']:.4f}"] if "train_loss" in m else []
        for k in (monitor, "val_loss"):
            if k in m:
                shown.append(f"{k} {m[k]:.4f}")
                break
        if step + 1 >= total and stage == "train":
            shown.append("then: " + after)
        reporter.update(stage, completed=step + 1, total=total, text="  ".join(shown))

    return on_metrics


def train_and_track(
    cfg: Config,
    out_dir: str | Path,
    resume: bool | Literal["auto"] = False,
    skip_unchanged: bool = False,
) -> dict[str, Any]:
    """Train on the lake, tracked in MLflow (run, metrics, plots, lineage), log the pyfunc
    model, register it (alias challenger) and promote it to champion when it wins on validation
    data. Returns the final metrics (without the per-epoch history, which is in
    ``out_dir/metrics.json``) and the registration.

    The run carries the job tags (`job_tags`). ``skip_unchanged``: when a finished run of the
    same job exists (with its registered version), nothing is trained, logged or registered;
    the result is that run's (``up_to_date: True``). ``resume``: True resumes out_dir's
    checkpoint (it must be of the same config), "auto" resumes it only when it belongs to the
    same job (else trains afresh)."""
    from cnnlstm import progress, registry
    from cnnlstm.mlflow_tracker import MlflowTracker, log_model, use_tracking
    from cnnlstm.train import run_tags, train_from_config

    out_dir = Path(out_dir)
    job = job_tags(cfg)
    reporter = progress.current()
    if skip_unchanged:
        uri = use_tracking(cfg)
        done = find_unchanged(cfg, job, uri)
        if done is not None:
            log.info("up to date: run %s (same data, config and code)", done.info.run_id)
            return _up_to_date(cfg, done, uri, job)
    if reporter is not None and cfg.train.progress:  # one display: the reporter's
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"progress": False})})
    resume = _resume_for(out_dir, job, cfg, resume)
    chosen = None
    if cfg.model.arch == "auto":  # choose a preset on validation first (child runs of a study)
        from cnnlstm.auto import auto_select

        cfg, chosen = auto_select(cfg, out_dir)
    on_metrics = _epoch_reporter(cfg, reporter) if reporter is not None else None
    if reporter is not None:
        reporter.start("train", total=cfg.train.epochs, unit="epochs", text="preparing windows")
    tracker = MlflowTracker(cfg, on_metrics=on_metrics)
    with tracker.run(name=cfg.data.name, tags=run_tags(cfg) | job):
        _write_marker(out_dir, job, cfg, "training", tracker.run_id)
        metrics = train_from_config(cfg, out_dir, resume=resume, tracker=tracker)
        if reporter is not None:
            reporter.update("train", text="logging and registering the model")
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
            if registration.get("registered", True):
                from cnnlstm.model_card import describe  # the version's description: its card

                describe(cfg, metrics, registration, tracker.run_id, tracker.uri)
        _write_marker(out_dir, job, cfg, "done", tracker.run_id)
    out = {k: v for k, v in metrics.items() if k != "history"}
    out["up_to_date"] = False
    out["mlflow_run_id"] = tracker.run_id
    out["tracking_uri"] = tracker.uri
    out["model_uri"] = info.model_uri
    out["job"] = job
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


def scored_entities(report: dict[str, Any]) -> int:
    """How many entities (recordings) a scoring report wrote predictions for: a lake file of
    an entity the ``where`` filter leaves out counts as scored, with no prediction."""
    from cnnlstm.lake import Lake, _scan

    files = report.get("prediction_files") or []
    if not files:
        return 0
    lf = _scan(Lake(report["output"]), files)
    if lf is None:
        return 0
    return int(lf.select("entity_id").unique().collect().height)
