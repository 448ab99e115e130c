"""Batch scoring: lake partitions not yet scored by a model version -> predictions Parquet.

Layout under the output folder (``score.output``, relative to the config)::

    date=YYYY-MM-DD/<model>-v<version>-<key16>.parquet   one row per window (Predictions schema)
    _watermark/<model>/v<version>.json                   lake files scored by that version
    _tmp/, _locks/                                       temp files; one scorer at a time

Order of work: resolve the model URI to one registry version (a missing alias or a deleted
version fails here), load it (pyfunc, no pickle), check its channels against the config and the
lake schema (Parquet footers only) - all before any data is read, so a mistake writes 0 rows. Then
the ledger's data files minus the watermark, grouped by entity and read a few files at a time;
each group's windows are written (temp file, footer check, rename) and then the watermark is
updated (atomic JSON). A re-run scores nothing; a new version has its own watermark and files.
File names derive from (model, version, entity, date, source files), so a re-run after a crash
rewrites the same names; files of the version that no watermark lists (a crash between the two
writes) are removed under the lock before scoring. Readers: `read_predictions` (trusts the
watermarks), or any Parquet reader over ``date=*/`` while no scorer runs.

Windows never span two scoring groups: a window crossing from an already-scored partition into a
new one (e.g. over midnight) is not scored. Each group is scored per entity with the model's own
windowing, so windows equal training's for whole entities.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

WATERMARK = "_watermark"


class ScoreError(ValueError):
    """A user-facing scoring problem, raised before any data is read (CLI exit 2)."""


@dataclass
class ScoreReport:
    model_name: str
    model_version: str
    model_uri: str
    requested_uri: str
    output: str
    files_total: int = 0
    files_already_scored: int = 0
    files_scored: int = 0
    rows_read: int = 0
    windows: int = 0
    rows_written: int = 0
    prediction_files: list[str] = field(default_factory=list)
    orphans_removed: int = 0
    accuracy: float | None = None  # classify: of the rows written that carry a true label
    labelled_rows: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)  # the task's, on labelled rows
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80] or "model"


def default_model_uri(cfg) -> str:
    if cfg.score.model_uri:
        return cfg.score.model_uri
    return f"models:/{cfg.tracking.registered_model or cfg.data.name}@champion"


def _where_key(where: dict[str, Any] | None) -> str:
    if not where:
        return ""
    canon = "\n".join(f"{k}={v!r}" for k, v in sorted(where.items()))
    return ".where-" + hashlib.sha256(canon.encode()).hexdigest()[:8]


def watermark_rel(name: str, version: str, where: dict[str, Any] | None = None) -> str:
    """One watermark per (model, version, row filter): a filtered run marks files as scored for
    that filter only."""
    return f"{WATERMARK}/{_safe(name)}/v{_safe(version)}{_where_key(where)}.json"


def read_watermark(out, name: str, version: str, where: dict[str, Any] | None = None):
    rel = watermark_rel(name, version, where)
    if not out.fs.exists(out.abs(rel)):
        return {"model_name": name, "model_version": version, "where": where or {}, "files": {}}
    return out._read_json(out.abs(rel))


def _listed_predictions(out, name: str, version: str) -> set[str]:
    """Prediction files that any watermark of this version lists."""
    base = f"{WATERMARK}/{_safe(name)}/v{_safe(version)}"
    paths = out.fs.glob(out.abs(base + ".json")) + out.fs.glob(out.abs(base + ".where-*.json"))
    return {
        p
        for path in paths
        for v in out._read_json(path)["files"].values()
        for p in v.get("predictions", [])
    }


def load_scoring_model(resolved, device: str = "auto"):
    """The pyfunc (no pickle) and its CnnLstmModel."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from cnnlstm.pyfunc import CnnLstmModel

    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        pm = mlflow.pyfunc.load_model(resolved.uri, model_config={"device": device})
    except MlflowException as e:
        raise ScoreError(
            f"cannot load {resolved.requested} ({resolved.uri}): {e.message}"
        ) from None
    inner = pm.unwrap_python_model()
    if not isinstance(inner, CnnLstmModel) and type(inner).__name__ != "CnnLstmModel":
        raise ScoreError(f"{resolved.requested} is not a cnnlstm model")
    return pm, inner


def _check_channels(cfg, meta: dict[str, Any], lake, files, where: dict[str, Any]) -> None:
    import pyarrow.parquet as pq

    need = list(meta.channels)
    cfg_missing = [c for c in need if c not in cfg.data.channel_names]
    if cfg_missing:
        raise ScoreError(
            f"channel mismatch: the model needs {need}; the config's data.channels "
            f"are {cfg.data.channel_names} (missing {cfg_missing})"
        )
    if not files:
        return
    with lake.fs.open(lake.abs(files[0].path), "rb") as f:
        names = pq.read_schema(f).names
    missing = [c for c in need + list(where) if c not in names]
    if missing:
        raise ScoreError(
            f"the lake's files lack columns {missing} that the model or "
            f"score.where need (file {files[0].path} has {names})"
        )


def _groups(files, per_batch: int):
    """Unscored files grouped by entity, entities packed into batches of ~per_batch files."""
    by_ent: dict[str, list] = {}
    for f in sorted(files, key=lambda f: (f.entity_id, f.date, f.path)):
        by_ent.setdefault(f.entity_id, []).append(f)
    batch: list[list] = []
    n = 0
    for group in by_ent.values():
        if batch and n + len(group) > per_batch:
            yield batch
            batch, n = [], 0
        batch.append(group)
        n += len(group)
    if batch:
        yield batch


def _remove_orphans(out, name: str, version: str, listed: set[str]) -> int:
    prefix = f"{_safe(name)}-v{_safe(version)}-"
    n = 0
    for p in out.fs.glob(out.abs("date=*/*.parquet")):
        rel = p[len(out.root) + 1 :] if p.startswith(out.root) else p
        if rel.rsplit("/", 1)[-1].startswith(prefix) and rel not in listed:
            out.fs.rm(p)
            n += 1
    return n


def score(
    cfg,
    model_uri: str | None = None,
    output: str | None = None,
    batch_size: int | None = None,
    where: dict[str, Any] | None = None,
    device: str | None = None,
    tracking: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ScoreReport:
    """Score the lake's unscored files with one model version; returns the report."""
    from cnnlstm.lake import Lake
    from cnnlstm.mlflow_tracker import use_tracking
    from cnnlstm.registry import RegistryError, resolve

    t0 = time.perf_counter()
    uri = use_tracking(cfg, tracking)
    requested = model_uri or default_model_uri(cfg)
    try:
        resolved = resolve(requested, uri)
    except RegistryError as e:
        raise ScoreError(str(e)) from None
    _, model = load_scoring_model(resolved, device or cfg.score.device)
    meta = model.meta
    where = dict(cfg.score.where if where is None else where)
    batch_size = batch_size or cfg.score.batch_size

    lake = Lake(cfg.lake_uri)
    files = lake.data_files()
    _check_channels(cfg, meta, lake, files, where)
    out_uri = cfg.resolve_path(output or cfg.score.output)
    out = Lake(out_uri)
    rep = ScoreReport(
        resolved.name, resolved.version, resolved.uri, requested, out_uri, files_total=len(files)
    )
    graded: list[pl.DataFrame] = []  # labelled prediction rows, for the task's metrics
    with out.commit_lock():
        wm = read_watermark(out, resolved.name, resolved.version, where)
        listed = _listed_predictions(out, resolved.name, resolved.version)
        rep.orphans_removed = _remove_orphans(out, resolved.name, resolved.version, listed)
        if out.fs.exists(out.abs("_tmp")):
            out.clean_tmp()  # temp files of a killed scorer (we hold the lock)
        out.fs.makedirs(out.abs("_tmp"), exist_ok=True)
        todo = [f for f in files if f.path not in wm["files"]]
        rep.files_already_scored = len(files) - len(todo)
        done = 0
        if on_progress:
            on_progress(0, len(todo))
        for batch in _groups(todo, cfg.score.files_per_batch):
            scored_at = datetime.now(UTC)
            for group in batch:
                df = pl.concat(
                    [pl.read_parquet(lake.uri_of(f.path)) for f in group], how="diagonal_relaxed"
                )
                rep.rows_read += df.height
                for k, v in where.items():
                    df = df.filter(pl.col(k) == v)
                pred = model.predict_frame(df, batch_size) if df.height else pl.DataFrame()
                rep.windows += pred.height
                written = []
                if pred.height:
                    pred = pred.with_columns(
                        pl.lit(resolved.name).alias("model_name"),
                        pl.lit(resolved.version).alias("model_version"),
                        pl.lit(scored_at).dt.cast_time_unit("us").alias("scored_at"),
                    )
                    model.task.validate_predictions(pred)
                    if "label" in pred.columns and pred["label"].null_count() < pred.height:
                        lab = pred.filter(pl.col("label").is_not_null())
                        rep.labelled_rows += lab.height
                        graded.append(lab)
                    key = hashlib.sha256(
                        "\n".join(
                            [resolved.name, resolved.version, _where_key(where)]
                            + [f.path for f in group]
                        ).encode()
                    ).hexdigest()[:16]
                    dates = pred["window_start"].dt.date().cast(pl.String)
                    for d in sorted(dates.unique().to_list()):
                        part = pred.filter(dates == d)
                        rel = (
                            f"date={d}/{_safe(resolved.name)}-v{_safe(resolved.version)}-"
                            f"{_safe(group[0].entity_id)[:40]}-{key}.parquet"
                        )
                        rep.rows_written += out.write_parquet(part, rel)
                        written.append(rel)
                rep.prediction_files += written
                for i, f in enumerate(group):
                    wm["files"][f.path] = {
                        "rows": f.rows,
                        "entity_id": f.entity_id,
                        "date": f.date,
                        "windows": pred.height if i == 0 else 0,
                        "predictions": written if i == 0 else [],
                        "scored_at": scored_at.isoformat(),
                    }
            wm |= {"model_uri": resolved.uri, "updated_at": datetime.now(UTC).isoformat()}
            out.write_json(wm, watermark_rel(resolved.name, resolved.version, where))
            done += sum(len(g) for g in batch)
            rep.files_scored = done
            if on_progress:
                on_progress(done, len(todo))
    if graded:
        rep.metrics = model.task.prediction_metrics(pl.concat(graded, how="diagonal_relaxed"))
        rep.accuracy = rep.metrics.get("accuracy")
    rep.seconds = time.perf_counter() - t0
    return rep


def read_predictions(
    output: str, model_name: str | None = None, model_version: str | None = None
) -> pl.DataFrame:
    """Predictions listed by the watermarks (optionally one model / version)."""
    from cnnlstm.lake import Lake

    out = Lake(output)
    paths = []
    for p in sorted(out.fs.glob(out.abs(f"{WATERMARK}/*/*.json"))):
        wm = out._read_json(p)
        if model_name is not None and wm.get("model_name") != model_name:
            continue
        if model_version is not None and str(wm.get("model_version")) != str(model_version):
            continue
        paths += [r for v in wm["files"].values() for r in v.get("predictions", [])]
    if not paths:
        return pl.DataFrame()
    return pl.concat(
        [pl.read_parquet(out.uri_of(r)) for r in sorted(set(paths))], how="diagonal_relaxed"
    )
