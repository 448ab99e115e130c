"""The model as MLflow sees it: a pyfunc that takes RAW readings and returns one row per window.

Input (pandas for MLflow, polars for `predict_frame`): ``entity_id``, ``timestamp`` (UTC; MLflow's
signature takes timezone-naive datetimes, read as UTC) and the model's channel columns; an
optional ``label`` column adds the window's true label. The stored windowing and normalisation
(checkpoint metadata, read by `cnnlstm.checkpoint`) are applied here through `cnnlstm.windows`, so
scoring never re-derives preprocessing.

Output: ``entity_id``, ``window_start``, ``window_end`` (UTC), then the task's columns
(`cnnlstm.tasks`, docs/tasks.md):

- classify: ``predicted`` (the class value), ``predicted_name``, ``probability`` (of the
  predicted class), one ``prob_<class>`` column per class, ``label`` (the true class value by
  the stored label strategy; null when the input has no labels or the window has none), and with
  ``task.aggregate`` the entity's answer ``entity_predicted`` and ``entity_confidence``;
- regress: ``predicted`` and ``label`` in the target's units;
- forecast: ``pred_h<step>_<channel>`` per horizon step and target channel (and
  ``..._q<level>`` per quantile);
- anomaly: ``anomaly_score``, ``predicted`` (1: anomalous) and ``label``.

The model is logged with ``loader_module="cnnlstm.pyfunc_loader"`` (a module of the installed
package, which MLflow imports; `cnnlstm.pyfunc_loader`) and the safetensors weights as its
``data``: the artifact holds no python file, no copy of the package and no pickle, so loading runs
only installed code and scoring can run with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``. The
files' hashes are pinned in the run, the logged model and the registry (`cnnlstm.model_trust`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    import pandas as pd

from cnnlstm.artifact import ModelArtifact

DEVICE_ENV = "CNNLSTM_DEVICE"


def _device(name: str | None):
    import torch

    name = name or os.environ.get(DEVICE_ENV) or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class CnnLstmModel:
    """Raw readings -> per-window predictions (see the module docstring). Not an MLflow
    ``PythonModel``: MLflow reaches it through `cnnlstm.pyfunc_loader` (``predict(context,
    model_input, params)`` keeps PythonModel's signature)."""

    def __init__(self, model=None, meta: ModelArtifact | None = None, device=None):
        self.model, self.meta, self.device = model, meta, device
        self.task = meta.make_task() if meta is not None else None

    @classmethod
    def from_file(cls, path: str | Path, device: str | None = None) -> CnnLstmModel:
        """Direct use without MLflow (tests, benchmarks)."""
        from cnnlstm.checkpoint import load_model

        dev = _device(device)
        model, meta = load_model(path, dev)
        return cls(model, meta, dev)

    @classmethod
    def from_bytes(
        cls, raw: bytes, device: str | None = None, name: str = "<model bytes>"
    ) -> CnnLstmModel:
        """From the bytes of a model.safetensors already read (and hash-checked) by the caller:
        the bytes checked are the bytes parsed (`cnnlstm.model_trust`, `cnnlstm.pyfunc_loader`).
        """
        from cnnlstm.checkpoint import build_model, read_model_bytes

        dev = _device(device)
        model, meta = build_model(*read_model_bytes(raw, name), dev)
        return cls(model, meta, dev)

    # ---- MLflow entry point ------------------------------------------------------------------
    def predict(
        self,
        context: Any,
        model_input: pd.DataFrame | pl.DataFrame | dict[str, list[Any]],
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        import pandas as pd

        params = params or {}
        if isinstance(model_input, pd.DataFrame):
            df = _from_pandas(model_input)
        elif isinstance(model_input, pl.DataFrame):
            df = model_input
        else:
            df = pl.DataFrame(pd.DataFrame(model_input))
        out = self.predict_frame(df, int(params.get("batch_size") or 4096))
        return out.to_pandas()

    # ---- the work ----------------------------------------------------------------------------
    @property
    def channels(self) -> list[str]:
        return list(self.meta.channels)

    def windows(self, df: pl.DataFrame):
        """(every window, the true target of each or None) of raw readings: cut once with the
        stored config; when the input has labels, the task labels that same cut (a window the
        label rules leave out, e.g. below window.min_purity, is scored with no true label)."""
        return make_windows(self.meta, self.task, df)

    def predict_frame(self, df: pl.DataFrame, batch_size: int = 4096) -> pl.DataFrame:
        """Raw readings (polars) -> predictions (polars), one row per window."""
        # a target derived from the time to each entity's end (window.target_from_end) is no
        # truth for readings that do not end at the event (machines in service): not derived
        w, truth = make_windows(self.meta, self.task, df, derive_truth=False)
        out = self.forward(w, w.lengths, batch_size)
        return format_predictions(self.meta, self.task, w, out, truth)

    def evaluate_frame(self, df: pl.DataFrame, batch_size: int = 4096) -> dict[str, Any]:
        """The task's metrics of this model on labelled raw readings (what the registry uses to
        re-evaluate a champion on a challenger's validation data)."""
        w, truth = self.windows(df)
        if truth is None:
            raise ValueError("evaluate_frame needs readings with labels / targets")
        keep = _has_truth(truth)
        out = self.forward(w, w.lengths, batch_size)
        graded = w.subset(np.flatnonzero(keep))
        graded.y = truth[keep]
        return self.task.evaluate(out[keep], graded)

    def forward(self, x, lengths: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Normalise and run the network on windows, dense ``(N, C, L)`` or a
        `cnnlstm.windows.Windows` view (gathered one batch at a time, so the overlapping windows
        are never all materialised): the task's per-window outputs.

        One input buffer of ``batch_size`` windows on the model's device is reused by every batch
        (normalised in place: the same float32 ``(x - center) / scale`` as training's
        `cnnlstm.windows.Normalizer`, padding kept at zero), and the outputs are written into one
        preallocated array; the forward runs under ``torch.inference_mode()``."""
        import torch

        n = len(lengths)
        if n == 0:
            shape = (
                (0, self.meta.n_outputs)
                if self.task.horizon is None
                else (0, self.task.horizon, self.meta.n_outputs)
            )
            return np.zeros(shape, np.float32)
        norm = self.meta.norm()
        dev = self.device if self.device is not None else torch.device("cpu")
        if isinstance(x, np.ndarray):
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))  # no copy
            batch = lambda i, k: xt[i : i + k]  # noqa: E731
            C, L = xt.shape[1], xt.shape[2]
        else:  # a Windows view: gather each batch from the shared stream rows
            batch = lambda i, k: torch.from_numpy(x.gather(slice(i, i + k)))  # noqa: E731
            _, C, L = x.shape
        lt = torch.from_numpy(np.ascontiguousarray(lengths, dtype=np.int64))
        short = lengths < L  # windows with padding (masked after normalisation)
        center = torch.from_numpy(norm.center).to(dev).view(1, -1, 1)
        scale = torch.from_numpy(norm.scale).to(dev).view(1, -1, 1)
        bs = max(1, min(int(batch_size), n))
        buf = torch.empty((bs, C, L), dtype=torch.float32, device=dev)
        pos = torch.arange(L, device=dev)
        out: np.ndarray | None = None
        with torch.inference_mode():
            for i in range(0, n, bs):
                k = min(bs, n - i)
                xb = buf[:k]
                torch.sub(batch(i, k).to(dev, non_blocking=True), center, out=xb)
                xb.div_(scale)
                lb = None
                if short[i : i + k].any():
                    lb = lt[i : i + k].to(dev)
                    xb.mul_((pos[None, :] < lb[:, None])[:, None, :])
                r = self.task.reduce(self.model(xb, lb).float(), xb, lb).float()
                if out is None:
                    out = np.empty((n, *r.shape[1:]), np.float32)
                out[i : i + k] = r.cpu().numpy()
        return out


# ---------------------------------------------------------------------------------------------
# windows and output (module functions: scoring and the benchmark use them directly)


def _from_pandas(pdf) -> pl.DataFrame:
    import pandas as pd

    if "timestamp" in pdf and not pd.api.types.is_datetime64_any_dtype(pdf["timestamp"]):
        pdf = pdf.assign(timestamp=pd.to_datetime(pdf["timestamp"], utc=True, format="mixed"))
    return pl.from_pandas(pdf)  # (the caller's frame is never modified: no copy needed)


def _clean_input(meta: ModelArtifact, df: pl.DataFrame) -> pl.DataFrame:
    channels = list(meta.channels)
    missing = [c for c in ("entity_id", "timestamp", *channels) if c not in df.columns]
    if missing:
        raise ValueError(
            f"readings lack the model's columns {missing}; the model expects "
            f"entity_id, timestamp and channels {channels}"
        )
    ts = df["timestamp"]
    if ts.dtype == pl.Datetime:
        tz = ts.dtype.time_zone
        ts = ts.dt.replace_time_zone("UTC") if tz is None else ts.dt.convert_time_zone("UTC")
        ts = ts.dt.cast_time_unit("us")
    elif ts.dtype == pl.String:
        ts = ts.str.to_datetime(time_unit="us", time_zone="UTC")
    else:
        raise ValueError(f"timestamp must be a datetime (got {ts.dtype})")
    cols = [
        pl.col("entity_id").cast(pl.String),
        ts.alias("timestamp"),
        *[pl.col(c).cast(pl.Float32) for c in channels],
    ]
    if "label" in df.columns:
        cols.append(pl.col("label"))
    target = meta.window.get("target_column")
    if target and target in df.columns and target not in channels:
        cols.append(pl.col(target))
    return df.select(cols)


def _has_truth(truth: np.ndarray) -> np.ndarray:
    t = np.asarray(truth)
    if t.dtype.kind == "f":
        return np.isfinite(t.reshape(len(t), -1)).all(1)
    return t >= 0


def make_windows(meta: ModelArtifact, task, df: pl.DataFrame, derive_truth: bool = True):
    """Every window of the readings (cut once, with the stored window config) and the true
    target of each by the task's label rules (-1 / NaN where a window has none), or None when
    the input carries no labels or targets (or, with ``derive_truth`` false, when the target
    would only be derived from the time to each entity's end: ``window.target_from_end``)."""
    from cnnlstm.windows import cut_windows

    df = _clean_input(meta, df)
    wcfg = meta.window_config().model_copy(update={"label_names_column": None})
    if not derive_truth and wcfg.target_from_end is not None:
        wcfg = wcfg.model_copy(update={"target_from_end": None})
    cut = cut_windows(df, list(meta.channels), wcfg, horizon=task.horizon_rows)
    w = cut.windows
    if not task.has_truth(cut):  # no labels / target column in the input: nothing to grade
        return w, None
    t = task.targets(cut, list(meta.classes) or None)
    y = t.y
    if y.dtype.kind == "f":
        truth = np.where(t.keep.reshape((-1,) + (1,) * (y.ndim - 1)), y, np.nan)
    else:
        truth = np.where(t.keep, y, -1)
    return w, truth


def format_predictions(meta: ModelArtifact, task, w, out: np.ndarray, truth) -> pl.DataFrame:
    """The output frame of `CnnLstmModel.predict_frame`: the window columns, then the task's."""
    cols: dict[str, Any] = {
        "entity_id": pl.Series("entity_id", w.entity.astype(str), pl.String),
        "window_start": pl.Series(w.start, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        "window_end": pl.Series(w.end, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
    }
    return pl.DataFrame(cols | task.prediction_columns(out, w, truth, meta))


# ---------------------------------------------------------------------------------------------
# signature, input example, logging


def signature(meta: ModelArtifact):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    task = meta.make_task()
    extra_in, task_out = task.signature_columns(meta)
    inputs = [
        ColSpec("string", "entity_id"),
        ColSpec("datetime", "timestamp"),
        *[ColSpec("float", c) for c in meta.channels],
        *extra_in,
    ]
    outputs = [
        ColSpec("string", "entity_id"),
        ColSpec("datetime", "window_start"),
        ColSpec("datetime", "window_end"),
        *task_out,
    ]
    params = ParamSchema([ParamSpec("batch_size", "long", 4096)])
    return ModelSignature(Schema(inputs), Schema(outputs), params)


def input_example(meta: ModelArtifact, n_windows: int = 2):
    """A small raw-readings frame (pandas) long enough for `n_windows` windows: channel values
    around the stored normalisation centre, timestamps at the stored rate (or 50 Hz)."""
    import pandas as pd

    w = meta.window
    need = w["size"] + meta.make_task().horizon_rows
    n = need + (n_windows - 1) * w["stride"]
    rate = w.get("sample_rate_hz") or 50.0
    rng = np.random.default_rng(0)
    center = np.asarray(meta.normalizer["center"], np.float32)
    scale = np.asarray(meta.normalizer["scale"], np.float32)
    # MLflow's datetime columns are timezone-naive: timestamps are UTC by contract
    # (starting off the whole second keeps every JSON timestamp in one format, which the REST
    # input parser needs)
    ts = pd.Timestamp("2024-01-01 00:00:00.001") + pd.to_timedelta(np.arange(n) / rate, unit="s")
    data: dict[str, Any] = {"entity_id": ["example"] * n, "timestamp": ts.as_unit("us")}
    for k, c in enumerate(meta.channels):
        data[c] = (center[k] + scale[k] * rng.standard_normal(n)).astype(np.float32)
    return pd.DataFrame(data)


def pip_requirements() -> list[str]:
    """Pinned to what is running (explicit: MLflow's inference would load the model)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in (
        "mlflow",
        "torch",
        "numpy",
        "pandas",
        "polars",
        "safetensors",
        "pydantic",
        "pyyaml",
    ):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            out.append(pkg)
    return out


def log_pyfunc_model(weights: str | Path, name: str = "model", **kw):
    """Log model.safetensors as a pyfunc model whose loader is the installed
    `cnnlstm.pyfunc_loader` (no code in the artifact, nothing pickled), then pin the logged files'
    hashes as tags of the logged model and of the active run (`cnnlstm.model_trust`). Loading it
    needs the cnnlstm package installed. Returns MLflow's ModelInfo."""
    import mlflow.pyfunc

    from cnnlstm.checkpoint import read_model_file
    from cnnlstm.model_trust import LOADER_MODULE, pin_logged_model

    _, meta = read_model_file(weights)
    if meta.model.get("arch") == "frame":
        raise ValueError("frame models take image sequences, not readings: no pyfunc for them")
    info = mlflow.pyfunc.log_model(
        name=name,
        loader_module=LOADER_MODULE,
        data_path=str(weights),
        signature=signature(meta),
        input_example=input_example(meta),
        pip_requirements=pip_requirements(),
        model_config={"device": "auto"},
        **kw,
    )
    pin_logged_model(info, weights, name)
    return info
