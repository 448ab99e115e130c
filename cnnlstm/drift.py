"""Drift monitoring: what is scored, compared with what the model was trained on.

At training time `fit_training_stats` summarises the training split's windows (per raw channel:
quantile bin edges with the training proportions, mean and standard deviation, and a small
seeded sample) and the model's predicted-class mix on those windows. The summary is the
optional ``training_stats`` field of the model artifact (`cnnlstm.artifact.ModelArtifact`): JSON
in the safetensors header, covered by the artifact's checksum and by the pinned file hashes.

After each scoring run `monitor_scoring` reads the readings that were scored (the lake files of
the run, the ``score.where`` filter applied) and the predictions it wrote, and computes per
channel the population stability index (PSI) over the training bins and the two-sample
Kolmogorov-Smirnov statistic against the training sample, plus the PSI of the predicted-class
mix. A channel is flagged when either figure exceeds its threshold (``score.drift``). The
figures go to ``drift.json`` beside the predictions (atomic, under the output lock), to MLflow as
metrics of the model version's monitoring run (``monitor-<model>-v<version>``, one step per
scoring run), and to the score report (``drift``). Reference: docs/mlflow.md, "Drift monitoring".

The thresholds are effect sizes, not significance tests: with the row counts of batch scoring any
difference is "significant", so a p-value would flag everything.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

N_BINS = 10  # quantile bins per channel (fewer when values repeat)
TRAIN_SAMPLE = 1000  # values per channel kept for the KS statistic (fewer with many channels)
SAMPLE_BUDGET = 50_000  # values over all channels at most
SCORED_SAMPLE = 10_000  # scored values per channel the KS statistic is computed on
MAX_WINDOWS = 20_000  # training windows summarised (a seeded subset beyond this)
EPS = 1e-4  # proportions are floored at this in the PSI (an empty bin would be infinite)
DRIFT_FILE = "drift.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChannelStats(_Strict):
    """One channel on the training windows. Bins: ``(-inf, e0]``, ``(e0, e1]``, ...,
    ``(e_last, inf)`` for the ascending, distinct inner ``edges`` (deciles of the training
    values, each one a value that occurs, so discrete channels get no empty in-between bins)."""

    edges: list[float]
    proportions: list[float] = Field(description="share of the training values per bin")
    mean: float
    std: float
    n: int = Field(description="training values summarised")
    sample: list[float] = Field(description="a seeded sample of the values (KS statistic)")


class ClassMix(_Strict):
    """The share of each predicted value (classes, anomaly flags) on the training windows."""

    column: str = "predicted"
    values: list[str]
    proportions: list[float]
    n: int


class TrainingStats(_Strict):
    """What scoring compares the scored data with (the model artifact's ``training_stats``)."""

    version: Literal[1] = 1
    source: str = "training split windows (valid samples, raw channels)"
    channels: dict[str, ChannelStats]
    predicted: ClassMix | None = None


# ---------------------------------------------------------------------------------------------
# the two figures


def psi(expected, actual, eps: float = EPS) -> float:
    """Population stability index of two distributions over the same bins (proportions or
    counts, each normalised to sum to 1): sum((a - e) * ln(a / e)), with every proportion
    floored at `eps` so that an empty bin counts as rare rather than infinite."""
    e = np.asarray(expected, np.float64)
    a = np.asarray(actual, np.float64)
    if e.shape != a.shape or e.ndim != 1 or len(e) == 0:
        raise ValueError(f"psi needs two equal-length 1-d distributions ({e.shape}, {a.shape})")
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("psi needs non-empty distributions")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_statistic(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest distance between the empirical CDFs
    of `a` and `b` (what ``scipy.stats.ks_2samp(a, b).statistic`` returns)."""
    a = np.sort(np.asarray(a, np.float64))
    b = np.sort(np.asarray(b, np.float64))
    if len(a) == 0 or len(b) == 0:
        raise ValueError("ks_statistic needs two non-empty samples")
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def bin_index(edges, values) -> np.ndarray:
    """The bin of each value for inner `edges` (a value on an edge belongs to the lower bin)."""
    return np.searchsorted(np.asarray(edges, np.float64), values, side="left")


# ---------------------------------------------------------------------------------------------
# training side


def _round(v: np.ndarray) -> list[float]:
    return [float(f"{x:.7g}") for x in v]


def channel_stats(values: np.ndarray, rng: np.random.Generator, n_sample: int) -> ChannelStats:
    """Bins, proportions, moments and a sample of one channel's (finite) training values."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return ChannelStats(edges=[], proportions=[1.0], mean=0.0, std=0.0, n=0, sample=[])
    # the k/N-th quantile as the smallest value whose CDF reaches it (integer arithmetic, so an
    # exact decile is not lost to rounding)
    ranks = [(k * len(v) + N_BINS - 1) // N_BINS - 1 for k in range(1, N_BINS)]
    edges = np.unique(np.sort(v)[ranks])
    counts = np.bincount(bin_index(edges, v), minlength=len(edges) + 1)
    sample = v if len(v) <= n_sample else rng.choice(v, n_sample, replace=False)
    return ChannelStats(
        edges=[float(e) for e in edges],
        proportions=[float(c) for c in counts / len(v)],
        mean=float(v.mean()),
        std=float(v.std()),
        n=int(len(v)),
        sample=_round(np.sort(sample)),
    )


def class_mix(values) -> ClassMix | None:
    """Shares of each value of a categorical prediction column (None for numbers)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f" or len(arr) == 0:
        return None
    vals, counts = np.unique(arr.astype(str), return_counts=True)
    return ClassMix(
        values=[str(v) for v in vals],
        proportions=[float(c) for c in counts / counts.sum()],
        n=int(counts.sum()),
    )


def summary_windows(n: int, seed: int) -> np.ndarray:
    """Indices of the training windows summarised: all, or a seeded subset of MAX_WINDOWS."""
    if n <= MAX_WINDOWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_WINDOWS, replace=False))


def fit_training_stats(
    windows, channels: list[str], seed: int = 0, predicted=None
) -> TrainingStats | None:
    """The training statistics of `windows` (a `cnnlstm.windows.Windows` of the training
    split, raw values, raw channels first): valid samples only (padding excluded). `predicted`:
    the prediction column's values on the same windows (`summary_windows` of them), if any."""
    n = len(windows)
    if n == 0:
        return None
    idx = summary_windows(n, seed)
    x = windows.subset(idx).x  # only the summarised windows are materialised
    lengths = np.asarray(windows.lengths)[idx]
    valid = np.arange(x.shape[-1])[None, :] < lengths[:, None]
    rng = np.random.default_rng(seed)
    n_sample = min(TRAIN_SAMPLE, max(100, SAMPLE_BUDGET // max(1, len(channels))))
    stats = {c: channel_stats(x[:, k, :][valid], rng, n_sample) for k, c in enumerate(channels)}
    mix = class_mix(predicted) if predicted is not None else None
    return TrainingStats(channels=stats, predicted=mix)


def predicted_values(task, outputs: np.ndarray, windows) -> np.ndarray | None:
    """The ``predicted`` column the task writes for these outputs, or None when it has none."""
    cols = task.prediction_columns(outputs, windows, None, None)
    col = cols.get("predicted")
    return None if col is None else col.to_numpy()


# ---------------------------------------------------------------------------------------------
# scoring side


class _ChannelAcc:
    """Streaming summary of one channel's scored values: bin counts over the training edges,
    moments, and a uniform sample (the SCORED_SAMPLE values with the smallest random keys)."""

    def __init__(self, edges: list[float]):
        self.edges = np.asarray(edges, np.float64)
        self.counts = np.zeros(len(edges) + 1, np.int64)
        self.n = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.values = np.zeros(0, np.float64)
        self.keys = np.zeros(0, np.float64)

    def add(self, v: np.ndarray, rng: np.random.Generator) -> None:
        v = np.asarray(v, np.float64)
        v = v[np.isfinite(v)]
        if not len(v):
            return
        self.counts += np.bincount(bin_index(self.edges, v), minlength=len(self.counts))
        self.n += len(v)
        self.total += float(v.sum())
        self.total_sq += float(np.square(v).sum())
        values = np.concatenate([self.values, v])
        keys = np.concatenate([self.keys, rng.random(len(v))])
        if len(values) > SCORED_SAMPLE:
            keep = np.argpartition(keys, SCORED_SAMPLE)[:SCORED_SAMPLE]
            values, keys = values[keep], keys[keep]
        self.values, self.keys = values, keys

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else float("nan")

    @property
    def std(self) -> float:
        if not self.n:
            return float("nan")
        return math.sqrt(max(self.total_sq / self.n - self.mean**2, 0.0))


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def compare_channel(ref: ChannelStats, acc: _ChannelAcc, dcfg) -> dict[str, Any]:
    """The figures of one channel and whether they are over the thresholds."""
    out: dict[str, Any] = {
        "rows": acc.n,
        "psi": None,
        "ks": None,
        "mean": _finite(acc.mean),
        "std": _finite(acc.std),
        "train_mean": ref.mean,
        "train_std": ref.std,
        "mean_shift_sd": None,
        "bins": {"edges": ref.edges, "train": ref.proportions},
        "flagged": False,
        "reasons": [],
    }
    if acc.n == 0 or ref.n == 0:
        out["reasons"] = ["no values to compare"]
        return out
    out["psi"] = psi(ref.proportions, acc.counts)
    out["bins"]["scored"] = [float(c) for c in acc.counts / acc.n]
    if ref.sample:
        out["ks"] = ks_statistic(ref.sample, acc.values)
    if ref.std > 0:
        out["mean_shift_sd"] = (acc.mean - ref.mean) / ref.std
    if acc.n < dcfg.min_rows:
        out["reasons"] = [f"too few rows to judge ({acc.n} < score.drift.min_rows {dcfg.min_rows})"]
        return out
    if out["psi"] > dcfg.psi_threshold:
        out["reasons"].append(f"psi {out['psi']:.3g} > {dcfg.psi_threshold:g}")
    if out["ks"] is not None and out["ks"] > dcfg.ks_threshold:
        out["reasons"].append(f"ks {out['ks']:.3g} > {dcfg.ks_threshold:g}")
    out["flagged"] = bool(out["reasons"])
    return out


def compare_mix(ref: ClassMix, scored: np.ndarray, dcfg) -> dict[str, Any]:
    """PSI of the scored predicted-value mix against training's (unseen values in one bin)."""
    vals, counts = np.unique(np.asarray(scored).astype(str), return_counts=True)
    got = dict(zip(vals.tolist(), counts.tolist(), strict=True))
    n = int(counts.sum())
    names = list(ref.values)
    actual = [got.get(v, 0) for v in names]
    expected = list(ref.proportions)
    other = n - sum(actual)
    if other:
        names.append("(other)")
        actual.append(other)
        expected.append(0.0)
    out: dict[str, Any] = {
        "column": ref.column,
        "windows": n,
        "psi": psi(expected, actual) if n else None,
        "train": dict(zip(names, expected, strict=True)),
        "scored": {k: (c / n if n else 0.0) for k, c in zip(names, actual, strict=True)},
        "flagged": False,
        "reasons": [],
    }
    if not n:
        out["reasons"] = ["no windows scored"]
    elif n < dcfg.min_windows:
        out["reasons"] = [f"too few windows to judge ({n} < score.drift.min_windows)"]
    elif out["psi"] > dcfg.psi_threshold:
        out["reasons"] = [f"psi {out['psi']:.3g} > {dcfg.psi_threshold:g}"]
        out["flagged"] = True
    return out


def compute_drift(
    stats: TrainingStats,
    frames,
    predicted: np.ndarray | None,
    dcfg,
    seed: int = 0,
) -> dict[str, Any]:
    """Per channel PSI and KS of the scored readings (an iterable of polars frames holding the
    channel columns) against `stats`, and the predicted mix's PSI."""
    rng = np.random.default_rng(seed)
    accs = {c: _ChannelAcc(s.edges) for c, s in stats.channels.items()}
    for df in frames:
        for c, acc in accs.items():
            if c in df.columns:
                acc.add(df[c].drop_nulls().cast(float).to_numpy(), rng)
    channels = {c: compare_channel(stats.channels[c], acc, dcfg) for c, acc in accs.items()}
    flagged = [c for c, r in channels.items() if r["flagged"]]
    mix = None
    if stats.predicted is not None and predicted is not None:
        mix = compare_mix(stats.predicted, predicted, dcfg)
    return {
        "thresholds": {
            "psi": dcfg.psi_threshold,
            "ks": dcfg.ks_threshold,
            "min_rows": dcfg.min_rows,
            "min_windows": dcfg.min_windows,
        },
        "rows": max((a.n for a in accs.values()), default=0),
        "channels": channels,
        "flagged_channels": flagged,
        "predicted": mix,
        "predicted_flagged": bool(mix and mix["flagged"]),
        "flagged": bool(flagged) or bool(mix and mix["flagged"]),
    }


def metric_key(name: str) -> str:
    """A name MLflow accepts as (part of) a metric key."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)


def drift_metrics(d: dict[str, Any]) -> dict[str, float]:
    """The figures as MLflow metrics: drift_psi/<channel>, drift_ks/<channel>, ..."""
    m: dict[str, float] = {
        "drift_rows": float(d["rows"]),
        "drift_flagged": float(d["flagged"]),
        "drift_flagged_channels": float(len(d["flagged_channels"])),
    }
    for c, r in d["channels"].items():
        for k in ("psi", "ks", "mean_shift_sd"):
            if r[k] is not None:
                m[f"drift_{k}/{metric_key(c)}"] = float(r[k])
    mix = d.get("predicted")
    if mix and mix["psi"] is not None:
        m["drift_psi/predicted"] = float(mix["psi"])
        m["drift_windows"] = float(mix["windows"])
    return m


# ---------------------------------------------------------------------------------------------
# after a scoring run


def _reading_frames(lake, files, channels: list[str], where: dict[str, Any]):
    import polars as pl

    for f in files:
        df = pl.read_parquet(lake.uri_of(f.path), columns=list(dict.fromkeys(channels + [*where])))
        for k, v in where.items():
            df = df.filter(pl.col(k) == v)
        yield df.select(channels)


def _scored_predicted(out, rels: list[str], column: str) -> np.ndarray:
    import polars as pl

    cols = []
    for rel in rels:
        df = pl.read_parquet(out.uri_of(rel))
        if column in df.columns:
            cols.append(df[column].cast(pl.String).to_numpy())
    return np.concatenate(cols) if cols else np.zeros(0, str)


def skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason, "flagged": False, "flagged_channels": []}


def monitor_scoring(cfg, rep, meta, lake, files, where, uri: str | None) -> dict[str, Any]:
    """Drift of one scoring run (`cnnlstm.score.score`): the readings of the lake `files` it
    scored (`where` applied) and the predictions it wrote (``rep.prediction_files``) against
    the model's training statistics (`meta.training_stats`). Writes ``drift.json`` beside the
    predictions and logs the figures to the model version's monitoring run; returns the
    report's ``drift`` entry (status, flagged channels, figures per channel)."""
    dcfg = cfg.score.drift
    if not dcfg.enabled:
        return skipped("score.drift.enabled is false")
    stats = getattr(meta, "training_stats", None)
    if stats is None:
        return skipped(
            "the model has no training statistics (trained before cnnlstm stored them): retrain"
            " it to monitor drift"
        )
    if not files or not rep.rows_read:
        return skipped("nothing new was scored")
    from cnnlstm.lake import Lake

    channels = [c for c in meta.channels if c in stats.channels]
    where = dict(where or {})
    predicted = None
    out = Lake(rep.output)
    if stats.predicted is not None:
        predicted = _scored_predicted(out, rep.prediction_files, stats.predicted.column)
    seed = int(cfg.train.seed)
    d = compute_drift(stats, _reading_frames(lake, files, channels, where), predicted, dcfg, seed)
    if d["rows"] == 0:
        return skipped("no scored readings (score.where matched no rows)")
    d = {
        "model_name": rep.model_name,
        "model_version": rep.model_version,
        "model_uri": rep.model_uri,
        "where": where,
        "scored_at": datetime.now(UTC).isoformat(),
        "files": len(files),
        "training_stats": stats.source,
    } | d
    d["mlflow_run_id"], d["mlflow_error"] = None, None
    try:
        d["mlflow_run_id"] = log_monitoring_run(cfg, d, uri)
    except Exception as e:  # the predictions are committed: report, do not fail the run
        log.warning("drift figures not logged to MLflow: %s", e)
        d["mlflow_error"] = str(e)
    with out.commit_lock():  # the lock keeps another scorer's temp sweep off our temp file
        out.write_json(d, DRIFT_FILE)
    d["file"] = out.uri_of(DRIFT_FILE)
    if d["flagged"]:  # info: the report, the CLI summary and the score flow say it louder
        log.info(
            "drift: %s v%s: flagged channels %s%s",
            rep.model_name,
            rep.model_version,
            ", ".join(d["flagged_channels"]) or "none",
            "; predicted mix flagged" if d["predicted_flagged"] else "",
        )
    mix = d["predicted"]
    return {
        "status": "ok",
        "flagged": d["flagged"],
        "flagged_channels": d["flagged_channels"],
        "predicted_flagged": d["predicted_flagged"],
        "rows": d["rows"],
        "channels": {
            c: {k: r[k] for k in ("psi", "ks", "mean_shift_sd", "flagged")}
            for c, r in d["channels"].items()
        },
        "predicted_psi": None if mix is None else mix["psi"],
        "file": d["file"],
        "mlflow_run_id": d["mlflow_run_id"],
        "mlflow_error": d["mlflow_error"],
    }


def summary_line(d: dict[str, Any] | None) -> str | None:
    """One line for the score summary: the flagged channels with their figures, or the
    largest figures when nothing is flagged, or why drift was not computed."""
    if not d:
        return None
    if d.get("status") != "ok":
        return f"drift: not computed ({d.get('reason')})"
    ch = d.get("channels") or {}

    def figs(r: dict[str, Any]) -> str:
        return ", ".join(f"{k} {r[k]:.3g}" for k in ("psi", "ks") if r.get(k) is not None)

    if d["flagged_channels"]:
        head = "drift FLAGGED: " + "; ".join(f"{c} ({figs(ch[c])})" for c in d["flagged_channels"])
    else:
        worst = max(ch, key=lambda c: ch[c].get("psi") or 0.0, default=None)
        head = f"drift: no channel flagged ({len(ch)} channels"
        head += f"; largest psi {worst}: {figs(ch[worst])})" if worst else ")"
    if d.get("predicted_psi") is not None:
        head += f"; predicted mix psi {d['predicted_psi']:.3g}"
        head += " FLAGGED" if d.get("predicted_flagged") else ""
    return head + f" -> {d['file']}"


MONITOR_TAG = "cnnlstm.monitor"
STEPS_TAG = "cnnlstm.monitor.observations"


def monitor_run_name(name: str, version: str) -> str:
    return f"monitor-{name}-v{version}"


def log_monitoring_run(cfg, d: dict[str, Any], uri: str | None) -> str:
    """Log the figures as metrics of the model version's monitoring run (created on first use
    in ``tracking.experiment``; each scoring run adds one step) and the whole record as an
    artifact ``drift/<step>.json``. Returns the run id."""
    from mlflow import MlflowClient

    from cnnlstm.liveness import owner_tags
    from cnnlstm.mlflow_tracker import ensure_experiment
    from cnnlstm.registry import _not_found

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name, version = str(d["model_name"]), str(d["model_version"])
    key = f"{name}/{version}"
    exp = ensure_experiment(cfg.tracking.experiment, uri, cfg)
    found = client.search_runs(
        [exp],
        filter_string=f"tags.`{MONITOR_TAG}` = '{key.replace(chr(39), '')}'",
        max_results=1,
    )
    owner = owner_tags()  # so a killed scorer's RUNNING run is ended by the next sweep
    if found:
        run_id = found[0].info.run_id
        step = int(found[0].data.tags.get(STEPS_TAG) or 0)
        for k, v in owner.items():
            client.set_tag(run_id, k, v)
        client.update_run(run_id, status="RUNNING")
    else:
        model_run = ""
        if d["model_uri"].startswith("models:/"):
            try:
                model_run = client.get_model_version(name, version).run_id or ""
            except Exception as e:  # a URI that is not a registry version
                if not _not_found(e):
                    raise
        tags = {
            MONITOR_TAG: key,
            "monitor.model_name": name,
            "monitor.model_version": version,
            "monitor.model_uri": d["model_uri"],
            "monitor.model_run_id": model_run,
            "mlflow.note.content": (
                f"Drift of the data scored by {name} v{version} against its training data, one "
                "step per scoring run (cnnlstm.drift; docs/mlflow.md, Drift monitoring)."
            ),
        }
        run = client.create_run(exp, run_name=monitor_run_name(name, version), tags=tags | owner)
        run_id, step = run.info.run_id, 0
    status = "FAILED"
    try:
        from mlflow.entities import Metric

        ts = int(datetime.now(UTC).timestamp() * 1000)
        metrics = [Metric(k, v, ts, step) for k, v in drift_metrics(d).items()]
        client.log_batch(run_id, metrics=metrics)
        client.log_dict(run_id, d | {"step": step}, f"drift/{step:06d}.json")
        client.set_tag(run_id, STEPS_TAG, str(step + 1))
        client.set_tag(run_id, "monitor.last_flagged_channels", ",".join(d["flagged_channels"]))
        status = "FINISHED"
    finally:
        # MLflow prints the run's URL to stdout (a server store): keep stdout for `--json`
        with contextlib.redirect_stdout(sys.stderr):
            client.set_terminated(run_id, status)
    return run_id
