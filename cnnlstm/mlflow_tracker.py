"""The MLflow side of the tracking seam (`cnnlstm.tracking.Tracker`).

Per run: the resolved config as flattened params and as ``config/config.yaml``; per-epoch metrics
with their step; device, versions and git commit as tags; the plots; the normalisation statistics
and label map (``preprocessing/``); dataset lineage (``mlflow.log_input`` of the lake files with a
content fingerprint, and ``lineage/lake_files.json``); the model as a pyfunc that takes raw
readings (`log_model`, called by `cnnlstm.pipeline`, not by the tracker). The tracker only
tracks: registering and promoting are explicit steps of `cnnlstm.pipeline` (`cnnlstm.registry`).

Where runs go: ``MLFLOW_TRACKING_URI``, else ``tracking.uri``, else
``sqlite:///<project>/mlflow.db``; a sqlite store keeps artifacts in ``mlartifacts/`` beside the
file (``<project>``: the folder above the config holding ``pyproject.toml`` or ``.git``, else the
config's folder). A server that does not answer fails at
``start_run`` with `TrackingUnavailableError` (nothing is buffered).

Run status: FINISHED, FAILED on an exception, KILLED on SIGTERM (a handler installed for the
run's lifetime ends the run, then exits with status 143). Only SIGKILL can leave a run RUNNING:
each run carries its owner process and a heartbeat as tags, and the next command's sweep
(`cnnlstm.liveness`) ends such a run KILLED.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnlstm.liveness import heartbeats, owner_tags
from cnnlstm.tracking import Tracker, flatten_params

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"


class TrackingUnavailableError(RuntimeError):
    """The tracking server cannot be reached (raised before training starts)."""


# ---------------------------------------------------------------------------------------------
# where runs go


def project_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above `start` with pyproject.toml or .git (else `start`)."""
    p = Path(start or Path.cwd()).resolve()
    for d in (p, *p.parents):
        if (d / "pyproject.toml").is_file() or (d / ".git").exists():
            return d
    return p


def tracking_uri(cfg=None) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if cfg is not None and cfg.tracking.uri:
        uri = cfg.tracking.uri
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            # a relative sqlite path is relative to the config file, like every other path
            uri = "sqlite:///" + cfg.resolve_path(uri[len("sqlite:///") :])
        return uri
    root = project_root(cfg.base_dir if cfg is not None else None)
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_root(uri: str, cfg=None) -> str | None:
    """Where new experiments keep artifacts: ``mlartifacts/`` beside a sqlite file; None (the
    server's choice) for servers; ``tracking.artifact_location`` wins (e.g. s3://...)."""
    if cfg is not None and cfg.tracking.artifact_location:
        return cfg.tracking.artifact_location
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()
    return None


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (seconds, not MLflow's minutes of retries) when a server does not answer."""
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            r = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        except requests.RequestException as e:
            raise TrackingUnavailableError(
                f"MLflow tracking server {uri} is not reachable ({type(e).__name__}). Start it "
                "(`mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri "
                "sqlite:///mlflow.db`), or unset MLFLOW_TRACKING_URI / tracking.uri to track "
                "into the local sqlite file"
            ) from None
        if r.status_code >= 500:
            raise TrackingUnavailableError(
                f"MLflow tracking server {uri} answered {r.status_code} on /health"
            )
    elif uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)


def use_tracking(cfg=None, uri: str | None = None) -> str:
    """Point MLflow (this process) at the configured store, checked. Returns the URI."""
    import mlflow

    uri = uri or tracking_uri(cfg)
    check_tracking(uri)
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; put the user's value back, or
    # the next config in this process (tests, notebooks, tuning) would be overridden by it
    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    return uri


def ensure_experiment(name: str, uri: str, cfg=None) -> str:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise ValueError(
                f"MLflow experiment {name!r} is deleted: restore it or set "
                "tracking.experiment to another name"
            )
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root(uri, cfg))
    except MlflowException:  # created meanwhile by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


# ---------------------------------------------------------------------------------------------
# tags and lineage


def runtime_tags(root: Path | None = None) -> dict[str, str]:
    import mlflow
    import numpy as np
    import polars as pl
    import torch

    import cnnlstm

    tags = {
        "versions.python": platform.python_version(),
        "versions.torch": torch.__version__,
        "versions.mlflow": mlflow.__version__,
        "versions.numpy": np.__version__,
        "versions.polars": pl.__version__,
        "versions.cnnlstm": cnnlstm.__version__,
        "host.platform": platform.platform(),
        "host.cpus": str(os.cpu_count()),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if torch.cuda.is_available():
        tags["device.name"] = torch.cuda.get_device_name(0)
        tags["versions.cuda"] = str(torch.version.cuda)
    root = root or project_root()
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        tags |= {
            "git.commit": commit,
            "mlflow.source.git.commit": commit,
            "git.dirty": str(bool(dirty)).lower(),
        }
    except (OSError, subprocess.SubprocessError):
        tags["git.commit"] = "unknown"
    return tags


def lake_lineage(lake_uri: str, records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The committed lake files (from the ledger) and a SHA-256 fingerprint over their paths,
    row counts and content hashes: same fingerprint, same training data.

    Each file's content hash is the one its ledger record holds (the ingest hashes the bytes
    as it writes them); only a file whose record has none (written before the hashes were
    recorded) is read and hashed here, so on object storage lineage downloads nothing. The
    fingerprint is the same either way. ``hashed_here`` counts the files read.
    ``records``: the ledger records, when the caller has them already."""
    from cnnlstm.lake import Lake

    lake = Lake(lake_uri)
    files = sorted(lake.data_files(records), key=lambda f: f.path)
    h = hashlib.sha256()
    listed = []
    hashed_here = 0
    for f in files:
        digest = f.sha256
        if digest is None:
            digest = lake.file_sha256(f.path)
            hashed_here += 1
        h.update(f"{f.path}\t{f.rows}\t{digest}\n".encode())
        listed.append(
            {
                "path": f.path,
                "entity_id": f.entity_id,
                "date": f.date,
                "rows": f.rows,
                "sha256": digest,
            }
        )
    if hashed_here:
        log.info(
            "lineage: %d of %d lake files had no hash in the ledger and were read to hash them",
            hashed_here,
            len(files),
        )
    return {
        "lake": lake_uri,
        "fingerprint": h.hexdigest(),
        "files": listed,
        "n_files": len(listed),
        "rows": sum(f["rows"] for f in listed),
        "hashed_here": hashed_here,
    }


def _dataset(cfg, lineage: dict[str, Any]):
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    cols = [ColSpec("string", "entity_id"), ColSpec("datetime", "timestamp")]
    cols += [ColSpec("float", c) for c in cfg.data.channel_names]
    kinds = {"string": "string", "int": "long", "float": "double", "bool": "boolean"}
    if cfg.data.label is not None:
        cols.append(ColSpec(kinds[cfg.data.label.dtype], "label"))
    cols += [ColSpec(kinds[t], n) for n, t in cfg.data.metadata_types().items()]
    try:
        if "://" not in lineage["lake"] or lineage["lake"].startswith("file://"):
            # say it is a local folder: MLflow registers two local source types (for the "" and
            # "file" schemes) and warns that a local path "can be interpreted in multiple ways"
            from mlflow.data.dataset_source_registry import get_dataset_source_from_json

            source = get_dataset_source_from_json(json.dumps({"uri": lineage["lake"]}), "local")
        else:
            source = resolve_dataset_source(lineage["lake"])
    except Exception:  # no registered source type for this URI scheme
        from mlflow.data.http_dataset_source import HTTPDatasetSource

        source = HTTPDatasetSource(lineage["lake"])
    # the tracking store keeps at most 36 characters of digest; the full one is a run tag
    return MetaDataset(
        source, name=cfg.data.name, digest=lineage["fingerprint"][:32], schema=Schema(cols)
    )


# ---------------------------------------------------------------------------------------------
# the tracker


_PARAM_MAX = 6000  # MLflow's limit on a param value; the full config is config/config.yaml


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= _PARAM_MAX else s[: _PARAM_MAX - 20] + "...(truncated)"


class MlflowTracker(Tracker):
    """MLflow backend of the tracking seam.

    cfg: the resolved `cnnlstm.config.Config` (config, lineage); optional.
    log_weights: also log model.safetensors as a plain artifact (off: the pyfunc model that
        `log_model` logs carries the weights; tuning trials keep none).
    nested: start the run under the active run (tuning trials).
    on_metrics: called as on_metrics(metrics, step) after per-epoch metrics are logged; may
        raise to stop training (Optuna pruning).
    """

    def __init__(
        self,
        cfg=None,
        *,
        uri: str | None = None,
        experiment: str | None = None,
        log_weights: bool = False,
        nested: bool = False,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
        on_metrics: Callable[[dict[str, float], int | None], None] | None = None,
        handle_sigterm: bool = True,
    ):
        self.cfg = cfg
        self.uri = uri or tracking_uri(cfg)
        self.experiment = experiment or (cfg.tracking.experiment if cfg is not None else "cnnlstm")
        self.log_weights = log_weights
        self.nested = nested
        self.run_name = run_name
        self.extra_tags = dict(tags or {})
        self.on_metrics = on_metrics
        self.handle_sigterm = handle_sigterm
        self.run_id: str | None = None
        self.final_metrics: dict[str, float] = {}
        self._params: dict[str, str] = {}
        self._curves: set[str] = set()
        self.status_override: str | None = None  # e.g. KILLED for a pruned tuning trial
        self._killed = False
        self._prev_handler = None

    # ---- lifecycle ---------------------------------------------------------------------------
    def start_run(self, name: str | None = None, tags: dict[str, str] | None = None) -> None:
        import mlflow

        from cnnlstm.config import dump_config

        use_tracking(self.cfg, self.uri)
        exp_id = ensure_experiment(self.experiment, self.uri, self.cfg)
        root = project_root(self.cfg.base_dir if self.cfg is not None else None)
        # owner (host, pid, process start) and heartbeat: a SIGKILLed run is found and ended
        # KILLED by the next command (cnnlstm.liveness)
        all_tags = runtime_tags(root) | owner_tags() | (tags or {}) | self.extra_tags
        run = mlflow.start_run(
            experiment_id=exp_id, run_name=self.run_name or name, nested=self.nested, tags=all_tags
        )
        self.run_id = run.info.run_id
        heartbeats.add(self.uri, self.run_id)
        self._install_sigterm()
        if self.cfg is None:
            return
        try:
            self.log_params(flatten_params(self.cfg.model_dump(mode="json")))
            mlflow.log_text(dump_config(self.cfg), "config/config.yaml")
            self._log_lineage()
        except BaseException:
            self.end_run("FAILED")
            raise

    def _log_lineage(self) -> None:
        import mlflow

        from cnnlstm.lake import Lake

        lake_uri = self.cfg.lake_uri
        records = Lake(lake_uri).records()
        if not records:
            mlflow.set_tag("lake.lineage", "unavailable: no committed lake files")
            return
        lin = lake_lineage(lake_uri, records)
        mlflow.log_dict(lin, "lineage/lake_files.json")
        mlflow.set_tags(
            {
                "lake.uri": lake_uri,
                "lake.fingerprint": lin["fingerprint"],
                "lake.files": str(lin["n_files"]),
                "lake.rows": str(lin["rows"]),
            }
        )
        mlflow.log_input(
            _dataset(self.cfg, lin),
            context="training",
            tags={"files": str(lin["n_files"]), "rows": str(lin["rows"])},
        )

    def end_run(self, status: str = "FINISHED") -> None:
        import mlflow

        if self.run_id is None:
            return
        if self._killed:
            status = "KILLED"
        elif self.status_override is not None:
            status = self.status_override
        try:
            active = mlflow.active_run()
            if active is not None and active.info.run_id == self.run_id:
                mlflow.end_run(status)
            else:
                mlflow.MlflowClient(self.uri).set_terminated(self.run_id, status)
        finally:
            heartbeats.remove(self.run_id)
            self._restore_sigterm()

    # ---- SIGTERM -----------------------------------------------------------------------------
    def _install_sigterm(self) -> None:
        if not self.handle_sigterm or threading.current_thread() is not threading.main_thread():
            return

        def on_term(signum, frame):
            if self._killed:
                return
            self._killed = True
            log.warning("SIGTERM: ending MLflow run %s as KILLED", self.run_id)
            # SystemExit unwinds through training's finally -> end_run(KILLED) -> exit 143
            raise SystemExit(128 + signal.SIGTERM)

        self._prev_handler = signal.signal(signal.SIGTERM, on_term)

    def _restore_sigterm(self) -> None:
        if self._prev_handler is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self._prev_handler)
            self._prev_handler = None

    # ---- logging -----------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        new = {}
        for k, v in params.items():
            sv = _param_value(v)
            if k in self._params:  # MLflow refuses a changed value; the first one stands
                if self._params[k] != sv:
                    log.warning("param %s already logged as %s (not %s)", k, self._params[k], sv)
                continue
            new[k] = sv
        if new:
            self._params |= new
            items = list(new.items())
            for i in range(0, len(items), 100):  # the REST API takes 100 params per batch
                mlflow.log_params(dict(items[i : i + 100]))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import mlflow

        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        if step is None:
            # end-of-run values (e.g. val_accuracy of the restored best weights) must not land on
            # a per-epoch curve as an extra point: those that share a curve's name get "final_"
            self.final_metrics |= clean
            mlflow.log_metrics(
                {f"final_{k}" if k in self._curves else k: v for k, v in clean.items()}
            )
        else:
            self._curves |= set(clean)
            mlflow.log_metrics(clean, step=step)
        if self.on_metrics is not None:
            self.on_metrics(clean, step)

    def set_tags(self, tags: dict[str, str]) -> None:
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        import mlflow

        path = Path(path)
        if path.name == MODEL_FILE and not self.log_weights:
            return  # the pyfunc model (`log_model`) carries the weights
        mlflow.log_artifact(str(path), artifact_path)


def log_model(weights: str | Path):
    """Log model.safetensors into the active run as the pyfunc model that takes raw readings,
    with its preprocessing as readable JSON (``preprocessing/``). Returns MLflow's ModelInfo."""
    import mlflow

    from cnnlstm.checkpoint import read_model_file
    from cnnlstm.pyfunc import log_pyfunc_model

    _, meta = read_model_file(weights)
    mlflow.log_dict({"channels": meta.channels, **meta.normalizer}, "preprocessing/normalizer.json")
    mlflow.log_dict(
        {
            "task": meta.task,
            "task_state": meta.task_state,
            "classes": [
                {"index": i, "value": v, "name": n}
                for i, (v, n) in enumerate(zip(meta.classes, meta.class_names, strict=False))
            ],
        },
        "preprocessing/label_map.json",
    )
    mlflow.log_dict(meta.window, "preprocessing/window.json")
    info = log_pyfunc_model(weights, name="model")
    mlflow.set_tag("model.uri", info.model_uri)
    return info
