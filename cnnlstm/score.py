"""Batch scoring: lake partitions not yet scored by a model version -> predictions Parquet.

Layout under the output folder (``score.output``, relative to the config)::

    date=YYYY-MM-DD/<model>-v<version>-<key16>.parquet   one row per window (Predictions schema)
    _watermark/<model>/v<version>.json                   lake files scored by that version
    _staging/<attempt>/                                  a scoring attempt's plan and staged files
    _tmp/, _locks/                                       temp files; the commit lock

Three steps, which `score` runs in one process and the score flow (flows/score.py) runs with
the middle one fanned out over the flow's task runner (threads or Dask):

- `plan_scoring`: resolve the model URI to one registry version (a missing alias or a deleted
  version fails here), load it (its files checked against the hashes pinned in the registry,
  `cnnlstm.model_trust`: no code from the artifact runs, nothing is unpickled), check its
  channels against the config and the lake schema (Parquet footers only) - all before any data
  is read, so a mistake (or a model whose files do not match their pin) writes 0 rows. Then,
  under the output's commit lock: remove what killed scorers left (files of the version that no
  watermark lists, temp files, staging folders of dead attempts), and plan the ledger's data
  files minus the watermark: grouped by entity, packed into parts of about
  ``score.files_per_batch`` files. The plan is written to ``_staging/<attempt>/plan.json``.
- `score_part` (one per part; pure apart from its staging folder): read the part's files, window
  and score each entity group with the model verified against the plan's weights hash, write
  the prediction files (temp file, footer check, rename) under ``_staging/<attempt>/``; returns
  their names and row counts. Parts share nothing, so they run in parallel.
- `commit_scoring`, once, under the lock: re-read the watermark, move the staged files into
  ``date=*/`` (groups another attempt committed meanwhile are dropped) and write the watermark
  (one atomic JSON write: the commit). A failed part means no commit (`abort_scoring` removes
  the staging folder): nothing of that attempt becomes visible.

A re-run scores nothing; a new version has its own watermark and files. File names derive from
(model, version, filter, entity, date, source files), so a re-run after a crash rewrites the
same names. Readers: `cnnlstm.predictions.scan` (lazy) or `read_predictions`, which trust the
watermarks; a glob over ``date=*/`` also sees the files of a scorer killed inside its commit
until the next scorer removes them (staged files are never under ``date=*/``).

Windows never span two scoring groups: a window crossing from an already-scored partition into a
new one (e.g. over midnight) is not scored. Each group is scored per entity with the model's own
windowing, so windows equal training's for whole entities.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

WATERMARK = "_watermark"
STAGING = "_staging"  # _staging/<attempt>/: the plan and the parts' files until the commit
PLAN_FILE = "plan.json"
# a staging folder older than this (or whose planning process on this machine is gone) belongs
# to an attempt that can no longer commit: the next plan removes it
STAGING_TTL_S = 24 * 3600


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
    weights_sha256: str = ""  # of the weights scored with, as checked against the pin
    verified_against: str = ""  # the trust anchor (registry version, run) of that hash
    drift: dict[str, Any] = field(default_factory=dict)  # cnnlstm.drift.monitor_scoring
    attempt: str = ""  # the scoring attempt (plan) this report commits
    parts: int = 0  # score tasks of the attempt
    groups_already_committed: int = 0  # committed by another attempt meanwhile: dropped

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


def load_scoring_model(
    resolved, device: str = "auto", tracking: str | None = None, allow_unpinned: bool | None = None
):
    """(what was verified, the CnnLstmModel): the model's files are downloaded, checked against
    the hashes pinned in the registry (or the run) and only then built; no code from the
    artifact runs, nothing is unpickled (`cnnlstm.model_trust`). A mismatch or a missing pin
    raises `cnnlstm.model_trust.ModelTrustError`."""
    from mlflow.exceptions import MlflowException

    from cnnlstm.checkpoint import CheckpointError
    from cnnlstm.model_trust import ModelTrustError, load_verified

    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        model, verified = load_verified(resolved.uri, device, tracking, allow_unpinned)
    except ModelTrustError as e:
        if resolved.requested == resolved.uri:
            raise
        raise ModelTrustError(f"{resolved.requested}: {e}") from None
    except MlflowException as e:
        raise ScoreError(
            f"cannot load {resolved.requested} ({resolved.uri}): {e.message}"
        ) from None
    except CheckpointError as e:
        raise ScoreError(f"cannot load {resolved.requested} ({resolved.uri}): {e}") from None
    return verified, model


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


# ---------------------------------------------------------------------------------------------
# plan -> score (one task per part, staged) -> commit (the watermark, once)


@dataclass
class ScorePlan:
    """One scoring attempt, decided before any data is read (`plan_scoring`): the model version
    and the hash of the weights it was verified with, the lake files not yet scored, grouped by
    entity and packed into parts of about ``score.files_per_batch`` files (one `score_part` task
    each), and the staging folder of the attempt (``_staging/<attempt>/``). Saved as JSON beside
    the staged files (``plan.json``) so that a score task in another process (a Dask worker)
    reads it by (output, attempt): `load_plan`."""

    attempt: str
    output: str
    lake_uri: str
    model_name: str
    model_version: str
    model_uri: str  # the resolved version, e.g. models:/hapt/3 (never a moving alias)
    requested_uri: str
    tracking_uri: str | None
    weights_sha256: str  # every part scores with exactly these weights (checked)
    verified_against: str
    allow_unpinned: bool | None
    device: str
    batch_size: int
    where: dict[str, Any]
    meta: dict[str, Any]  # the model's metadata (ModelArtifact): task, channels, normaliser
    files_total: int
    files_already_scored: int
    orphans_removed: int
    # part -> entity groups -> lake files (DataFile fields: path, entity_id, date, rows)
    parts: list[list[list[dict[str, Any]]]]
    created_at: float  # unix time
    owner: dict[str, str] = field(default_factory=dict)  # the planning process (liveness tags)

    @property
    def staging(self) -> str:
        return f"{STAGING}/{self.attempt}"

    @property
    def n_parts(self) -> int:
        return len(self.parts)

    @property
    def n_files(self) -> int:
        return sum(len(g) for part in self.parts for g in part)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScorePlan:
        return cls(**d)


@dataclass
class PartResult:
    """What one `score_part` staged: per entity group, its lake files, windows and staged
    prediction files (path relative to the output folder, the same in staging and once
    committed) with their row counts. Plain data (JSON) for the commit."""

    index: int
    attempt: str
    scored_at: str
    groups: list[dict[str, Any]] = field(default_factory=list)
    worker: str = ""  # host:pid of the process that scored it

    @property
    def rows_written(self) -> int:
        return sum(f["rows"] for g in self.groups for f in g["predictions"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | PartResult) -> PartResult:
        return d if isinstance(d, PartResult) else cls(**d)


def _worker() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _join(uri: str, rel: str) -> str:
    return f"{uri.rstrip('/')}/{rel}"


def load_plan(output: str, attempt: str) -> ScorePlan:
    """The plan of a scoring attempt, from ``<output>/_staging/<attempt>/plan.json``."""
    from cnnlstm.lake import Lake

    out = Lake(output)
    return ScorePlan.from_dict(out._read_json(out.abs(f"{STAGING}/{attempt}/{PLAN_FILE}")))


def _sweep_staging(out, attempt: str) -> int:
    """Remove the staging folders of attempts that can no longer commit: their planning process
    is gone (same machine), or they are older than `STAGING_TTL_S`, or they have no readable
    plan. Called under the output's commit lock. Returns how many were removed."""
    from cnnlstm.liveness import Owner, judge

    n = 0
    now = time.time()
    me = Owner.current()
    for d in out.fs.glob(out.abs(f"{STAGING}/*")):
        name = d.rstrip("/").rsplit("/", 1)[-1]
        if name == attempt:
            continue
        try:
            p = out._read_json(f"{d.rstrip('/')}/{PLAN_FILE}")
            age = now - float(p["created_at"])
            owner = Owner.from_tags(p.get("owner") or {})
            gone = (
                owner is not None and owner.same_machine(me) and judge(owner, None).state == "dead"
            )
            stale = gone or age > STAGING_TTL_S
        except Exception:  # noqa: BLE001 - no readable plan: nothing can commit it
            stale = True
        if stale:
            out.fs.rm(d, recursive=True)
            n += 1
    return n


def plan_scoring(
    cfg,
    model_uri: str | None = None,
    output: str | None = None,
    batch_size: int | None = None,
    where: dict[str, Any] | None = None,
    device: str | None = None,
    tracking: str | None = None,
    allow_unpinned: bool | None = None,
):
    """(ScorePlan, the verified CnnLstmModel). Resolves the model URI to one version, loads it
    through the verified path (`load_scoring_model`: its files checked against their pin before
    it is built), checks its channels against the config and the lake schema - all before any
    data is read. Then, under the output's commit lock: removes what killed scorers left
    (prediction files no watermark names, temp files, staging folders of dead attempts), reads
    the watermark and plans the unscored lake files into parts; the plan is written to
    ``_staging/<attempt>/plan.json``."""
    from cnnlstm.lake import Lake
    from cnnlstm.liveness import Owner
    from cnnlstm.mlflow_tracker import use_tracking
    from cnnlstm.registry import RegistryError, resolve

    created = time.time()
    uri = use_tracking(cfg, tracking)
    requested = model_uri or default_model_uri(cfg)
    try:
        resolved = resolve(requested, uri)
    except RegistryError as e:
        raise ScoreError(str(e)) from None
    device = device or cfg.score.device
    verified, model = load_scoring_model(resolved, device, uri, allow_unpinned)
    meta = model.meta
    where = dict(cfg.score.where if where is None else where)

    lake = Lake(cfg.lake_uri)
    files = lake.data_files()
    _check_channels(cfg, meta, lake, files, where)
    out_uri = cfg.resolve_path(output or cfg.score.output)
    out = Lake(out_uri)
    attempt = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
    with out.commit_lock():
        wm = read_watermark(out, resolved.name, resolved.version, where)
        listed = _listed_predictions(out, resolved.name, resolved.version)
        orphans = _remove_orphans(out, resolved.name, resolved.version, listed)
        if out.fs.exists(out.abs("_tmp")):
            out.clean_tmp()  # temp files of a killed scorer (we hold the lock)
        out.fs.makedirs(out.abs("_tmp"), exist_ok=True)
        _sweep_staging(out, attempt)
        todo = [f for f in files if f.path not in wm["files"]]
        plan = ScorePlan(
            attempt=attempt,
            output=out_uri,
            lake_uri=cfg.lake_uri,
            model_name=resolved.name,
            model_version=resolved.version,
            model_uri=resolved.uri,
            requested_uri=requested,
            tracking_uri=uri,
            weights_sha256=verified.weights_sha256,
            verified_against=(
                verified.anchor if verified.pinned else "nothing (unpinned, allowed)"
            ),
            allow_unpinned=allow_unpinned,
            device=device,
            batch_size=batch_size or cfg.score.batch_size,
            where=where,
            meta=meta.model_dump(mode="json"),
            files_total=len(files),
            files_already_scored=len(files) - len(todo),
            orphans_removed=orphans,
            parts=[
                [[asdict(f) for f in group] for group in part]
                for part in _groups(todo, cfg.score.files_per_batch)
            ],
            created_at=created,
            owner=Owner.current().tags(),
        )
        out.write_json(plan.to_dict(), f"{plan.staging}/{PLAN_FILE}")
    _remember_model(plan, model)
    return plan, model


_MODELS: dict[tuple, Any] = {}  # verified models of this process, by plan (`plan_model`)
_MODELS_GUARD = threading.Lock()


def _model_key(plan: ScorePlan) -> tuple:
    return (plan.model_uri, plan.tracking_uri, plan.weights_sha256, plan.device)


def _remember_model(plan: ScorePlan, model) -> None:
    with _MODELS_GUARD:
        if len(_MODELS) >= 4:
            _MODELS.clear()
        _MODELS[_model_key(plan)] = model


def plan_model(plan: ScorePlan):
    """The plan's model in this process: loaded once per process (threads share it) through
    the verified path - its files checked against their pin before it is built - and accepted
    only if its weights are the very ones the plan was verified with."""
    from cnnlstm.mlflow_tracker import use_tracking
    from cnnlstm.model_trust import ModelTrustError
    from cnnlstm.registry import ResolvedModel

    key = _model_key(plan)
    with _MODELS_GUARD:
        model = _MODELS.get(key)
        if model is not None:
            return model
        if plan.tracking_uri:
            # MLflow resolves a models:/ URI for download with the process's registry URI
            # whatever URI is passed (ModelsArtifactRepository): a fresh worker process must
            # point MLflow at the plan's store first
            use_tracking(uri=plan.tracking_uri)
        resolved = ResolvedModel(
            plan.model_uri, plan.model_name, plan.model_version, plan.requested_uri
        )
        verified, model = load_scoring_model(
            resolved, plan.device, plan.tracking_uri, plan.allow_unpinned
        )
        if verified.weights_sha256 != plan.weights_sha256:
            raise ModelTrustError(
                f"{plan.model_uri}: the weights loaded now (sha256 {verified.weights_sha256}) are "
                f"not those planned with (sha256 {plan.weights_sha256}); nothing was scored"
            )
        if len(_MODELS) >= 4:
            _MODELS.clear()
        _MODELS[key] = model
        return model


def _group_key(plan: ScorePlan, paths: list[str]) -> str:
    return hashlib.sha256(
        "\n".join([plan.model_name, plan.model_version, _where_key(plan.where)] + paths).encode()
    ).hexdigest()[:16]


def score_part(plan: ScorePlan, index: int, model=None) -> PartResult:
    """Score part `index` of the plan: read its lake files (one entity group at a time), window
    and score them, and write the prediction files to the attempt's staging folder (atomic
    writes; names derive from model, version, filter and source files). Touches nothing
    outside ``_staging/<attempt>/``, commits nothing, so parts run in parallel (threads, Dask
    workers) and a retried part rewrites the same names. ``model``: the verified model when the
    caller has it (else `plan_model`)."""
    from cnnlstm.lake import Lake

    model = model if model is not None else plan_model(plan)
    lake = Lake(plan.lake_uri)
    stage = Lake(_join(plan.output, plan.staging))
    stage.fs.makedirs(stage.abs("_tmp"), exist_ok=True)
    scored_at = datetime.now(UTC)
    res = PartResult(index, plan.attempt, scored_at.isoformat(), worker=_worker())
    for group in plan.parts[index]:
        paths = [f["path"] for f in group]
        df = pl.concat([pl.read_parquet(lake.uri_of(p)) for p in paths], how="diagonal_relaxed")
        rows_read = df.height
        for k, v in plan.where.items():
            df = df.filter(pl.col(k) == v)
        pred = model.predict_frame(df, plan.batch_size) if df.height else pl.DataFrame()
        written: list[dict[str, Any]] = []
        if pred.height:
            pred = pred.with_columns(
                pl.lit(plan.model_name).alias("model_name"),
                pl.lit(plan.model_version).alias("model_version"),
                pl.lit(scored_at).dt.cast_time_unit("us").alias("scored_at"),
            )
            model.task.validate_predictions(pred)
            key = _group_key(plan, paths)
            dates = pred["window_start"].dt.date().cast(pl.String)
            for d in sorted(dates.unique().to_list()):
                rel = (
                    f"date={d}/{_safe(plan.model_name)}-v{_safe(plan.model_version)}-"
                    f"{_safe(group[0]['entity_id'])[:40]}-{key}.parquet"
                )
                written.append(
                    {"rel": rel, "rows": stage.write_parquet(pred.filter(dates == d), rel)}
                )
        res.groups.append(
            {"files": paths, "rows_read": rows_read, "windows": pred.height, "predictions": written}
        )
    return res


def abort_scoring(plan: ScorePlan) -> None:
    """Drop an attempt that will not commit: its staging folder (plan and staged files) is
    removed. Nothing it staged was ever visible to readers."""
    from cnnlstm.lake import Lake

    _remove_staging(Lake(plan.output), plan.staging)


def _remove_staging(out, staging: str) -> None:
    with contextlib.suppress(FileNotFoundError, OSError):
        out.fs.rm(out.abs(staging), recursive=True)


def _move_staged(out, staging: str, rel: str) -> None:
    """Staged file -> its place under ``date=*/`` (a rename on a local disk). A file already
    moved by an earlier try of this commit (staged copy gone, final one there) is fine."""
    src = f"{staging}/{rel}"
    if not out.fs.exists(out.abs(src)) and out.fs.exists(out.abs(rel)):
        return
    out._commit_tmp(src, rel)


def commit_scoring(cfg, plan: ScorePlan, parts: list[PartResult | dict[str, Any]]) -> ScoreReport:
    """Commit an attempt once every part is scored: under the output's commit lock, re-read the
    watermark (another scorer may have committed some of these files meanwhile: their staged
    files are dropped, never written twice), move the staged prediction files into place, and
    write the watermark once - one atomic JSON write, the commit. Files no watermark names are
    never read by `cnnlstm.predictions.scan`. Then the task's metrics over the committed
    labelled rows. Returns the report."""
    from cnnlstm.artifact import ModelArtifact
    from cnnlstm.lake import DataFile, Lake, _scan

    results = sorted((PartResult.from_dict(r) for r in parts), key=lambda r: r.index)
    got = [r.index for r in results]
    if got != list(range(plan.n_parts)) or any(r.attempt != plan.attempt for r in results):
        raise ScoreError(
            f"scoring attempt {plan.attempt} commits only with the result of each of its "
            f"{plan.n_parts} parts, once (got parts {got}); nothing was committed"
        )
    out = Lake(plan.output)
    rep = ScoreReport(
        plan.model_name,
        plan.model_version,
        plan.model_uri,
        plan.requested_uri,
        plan.output,
        files_total=plan.files_total,
        files_already_scored=plan.files_already_scored,
        orphans_removed=plan.orphans_removed,
        weights_sha256=plan.weights_sha256,
        verified_against=plan.verified_against,
        attempt=plan.attempt,
        parts=plan.n_parts,
    )
    info = {f["path"]: f for part in plan.parts for g in part for f in g}
    todo: list[DataFile] = []  # the lake files this commit marks as scored
    try:
        with out.commit_lock():
            wm = read_watermark(out, plan.model_name, plan.model_version, plan.where)
            for r in results:
                for g in r.groups:
                    if any(p in wm["files"] for p in g["files"]):
                        rep.groups_already_committed += 1  # by another attempt meanwhile
                        continue
                    rels = [f["rel"] for f in g["predictions"]]
                    for rel in rels:
                        _move_staged(out, plan.staging, rel)
                    for i, p in enumerate(g["files"]):
                        f = info[p]
                        wm["files"][p] = {
                            "rows": f["rows"],
                            "entity_id": f["entity_id"],
                            "date": f["date"],
                            "windows": g["windows"] if i == 0 else 0,
                            "predictions": rels if i == 0 else [],
                            "scored_at": r.scored_at,
                        }
                        todo.append(DataFile(**f))
                    rep.rows_read += g["rows_read"]
                    rep.windows += g["windows"]
                    rep.rows_written += sum(f["rows"] for f in g["predictions"])
                    rep.prediction_files += rels
            if todo:
                wm |= {"model_uri": plan.model_uri, "updated_at": datetime.now(UTC).isoformat()}
                out.write_json(wm, watermark_rel(plan.model_name, plan.model_version, plan.where))
            _remove_staging(out, plan.staging)  # moved out, or not needed
    except Exception:
        _remove_staging(out, plan.staging)
        raise
    rep.files_scored = len(todo)
    meta = ModelArtifact.model_validate(plan.meta)
    task = meta.make_task()
    lf = _scan(out, rep.prediction_files)
    if lf is not None and "label" in lf.collect_schema().names():
        lab = lf.filter(pl.col("label").is_not_null()).collect()
        if lab.height:
            rep.labelled_rows = lab.height
            rep.metrics = task.prediction_metrics(lab)
            rep.accuracy = rep.metrics.get("accuracy")
    lake, where, uri = Lake(plan.lake_uri), plan.where, plan.tracking_uri
    from cnnlstm.drift import monitor_scoring  # after the commit: drift.json, monitoring run

    rep.drift = monitor_scoring(cfg, rep, meta, lake, todo, where, uri)
    rep.seconds = time.time() - plan.created_at
    return rep


def score(
    cfg,
    model_uri: str | None = None,
    output: str | None = None,
    batch_size: int | None = None,
    where: dict[str, Any] | None = None,
    device: str | None = None,
    tracking: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    allow_unpinned: bool | None = None,
) -> ScoreReport:
    """Score the lake's unscored files with one model version in this process; returns the
    report: `plan_scoring` (the model verified against its pinned hashes first;
    `allow_unpinned`, default ``CNNLSTM_ALLOW_UNPINNED_MODELS``, lets a model without a pin
    load), `score_part` for each part in turn, `commit_scoring`. The score flow runs the same
    three steps with the parts in parallel (flows/score.py). ``on_progress(done, total)``
    counts lake files."""
    plan, model = plan_scoring(
        cfg, model_uri, output, batch_size, where, device, tracking, allow_unpinned
    )
    total, done = plan.n_files, 0
    if on_progress:
        on_progress(0, total)
    results = []
    try:
        for i in range(plan.n_parts):
            results.append(score_part(plan, i, model))
            done += sum(len(g) for g in plan.parts[i])
            if on_progress:
                on_progress(done, total)
    except Exception:
        abort_scoring(plan)
        raise
    return commit_scoring(cfg, plan, results)


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
