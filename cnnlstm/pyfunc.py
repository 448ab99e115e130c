"""The model as MLflow sees it: a pyfunc that takes RAW readings and returns one row per window.

Input (pandas for MLflow, polars for `predict_frame`): ``entity_id``, ``timestamp`` (UTC; MLflow's
signature takes timezone-naive datetimes, read as UTC) and the model's channel columns; an
optional ``label`` column adds the window's true label. The stored windowing and normalisation
(checkpoint metadata, read by `cnnlstm.checkpoint`) are applied here through `cnnlstm.windows`, so
scoring never re-derives preprocessing.

Output: ``entity_id``, ``window_start``, ``window_end`` (UTC), then by task

- classification: ``predicted`` (the class value), ``predicted_name``, ``probability`` (of the
  predicted class), one ``prob_<class>`` column per class, and ``label`` (the true class value by
  the stored label strategy; null when the input has no labels or the window has none);
- regression: ``predicted`` (float) and ``label`` (the true target when the input has it);
- forecast: ``pred_h<step>_<channel>`` per horizon step and target channel.

The model is logged as *models from code* (a three-line loader file, no cloudpickle) with the
weights as a safetensors artifact: nothing is unpickled at load time, so scoring can run with
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import polars as pl

WEIGHTS = "weights"  # artifact key of model.safetensors
DEVICE_ENV = "CNNLSTM_DEVICE"

_LOADER = """\
# models-from-code entry point written by cnnlstm.pyfunc.log_pyfunc_model (no pickle)
from mlflow.models import set_model

from cnnlstm.pyfunc import CnnLstmModel

set_model(CnnLstmModel())
"""


def _device(name: str | None):
    import torch

    name = name or os.environ.get(DEVICE_ENV) or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class CnnLstmModel(mlflow.pyfunc.PythonModel):
    """Raw readings -> per-window predictions (see the module docstring)."""

    def __init__(self, model=None, meta: dict[str, Any] | None = None, device=None):
        self.model, self.meta, self.device = model, meta, device

    @classmethod
    def from_file(cls, path: str | Path, device: str | None = None) -> CnnLstmModel:
        """Direct use without MLflow (tests, benchmarks)."""
        from cnnlstm.checkpoint import load_model

        dev = _device(device)
        model, meta = load_model(path, dev)
        return cls(model, meta, dev)

    def load_context(self, context) -> None:
        from cnnlstm.checkpoint import load_model

        cfg = context.model_config or {}
        self.device = _device(cfg.get("device"))
        self.model, self.meta = load_model(context.artifacts[WEIGHTS], self.device)

    # ---- MLflow entry point ------------------------------------------------------------------
    def predict(self, context, model_input, params=None):
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
        return list(self.meta["channels"])

    def windows(self, df: pl.DataFrame):
        """(all windows, true labels or None) of raw readings, with the stored config."""
        return make_windows(self.meta, df)

    def predict_frame(self, df: pl.DataFrame, batch_size: int = 4096) -> pl.DataFrame:
        """Raw readings (polars) -> predictions (polars), one row per window."""
        w, y_true = self.windows(df)
        out = self.forward(w.x, w.lengths, batch_size)
        return format_predictions(self.meta, w, out, y_true)

    def forward(self, x: np.ndarray, lengths: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Normalise and run the network on (N, C, L) windows: raw outputs (N, K) / (N, H, K)."""
        import torch

        from cnnlstm.windows import Normalizer

        norm = Normalizer.from_dict(self.meta["normalizer"])
        L = x.shape[-1] if x.ndim == 3 else 0
        outs = []
        with torch.inference_mode():
            for i in range(0, len(lengths), batch_size):
                ln = lengths[i : i + batch_size]
                xb = torch.from_numpy(norm.apply(x[i : i + batch_size], ln)).to(self.device)
                lb = None if bool((ln == L).all()) else torch.from_numpy(ln).to(self.device)
                outs.append(self.model(xb, lb).float().cpu())
        if not outs:
            shape = (
                (0, self.meta["n_outputs"])
                if self.meta.get("horizon") is None
                else (0, self.meta["horizon"], self.meta["n_outputs"])
            )
            return np.zeros(shape, np.float32)
        return torch.cat(outs).numpy()


# ---------------------------------------------------------------------------------------------
# windows and output (module functions: scoring and the benchmark use them directly)


def _from_pandas(pdf) -> pl.DataFrame:
    import pandas as pd

    pdf = pdf.copy()
    if "timestamp" in pdf and not pd.api.types.is_datetime64_any_dtype(pdf["timestamp"]):
        pdf["timestamp"] = pd.to_datetime(pdf["timestamp"], utc=True, format="mixed")
    return pl.from_pandas(pdf)


def _clean_input(meta: dict[str, Any], df: pl.DataFrame) -> pl.DataFrame:
    channels = list(meta["channels"])
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
    target = meta["window"].get("target_column")
    if target and target in df.columns and target not in channels:
        cols.append(pl.col(target))
    return df.select(cols)


def make_windows(meta: dict[str, Any], df: pl.DataFrame):
    """Every window of the readings with the stored window config, plus the true label of each
    (or None). Label-driven filtering (purity, dropped classes) only decides the *true label*; every
    window is scored. Classification windows are cut once with a constant stand-in label (so no
    window is dropped) and, when a ``label`` column is present, once more with the real labels to
    find each window's true label by the stored strategy (joined on entity and start)."""
    from cnnlstm.window_config import WindowConfig
    from cnnlstm.windows import build_windows

    df = _clean_input(meta, df)
    wcfg = WindowConfig.model_validate(meta["window"] | {"label_names_column": None})
    channels = list(meta["channels"])
    classes = meta.get("classes") or None
    task = meta["task"]
    if task == "forecast":
        return build_windows(df, channels, wcfg).windows, None
    if task == "regression":
        target = wcfg.target_column
        has = target in df.columns
        stand_in = df.with_columns(pl.lit(0.0).alias(target))
        w = build_windows(stand_in, channels, wcfg).windows
        if not has:
            return w, None
        lab = build_windows(df, channels, wcfg).windows
        return w, _join_truth(w, lab, lab.y[:, 0])
    has = "label" in df.columns
    stand_in = df.with_columns(pl.lit(classes[0]).alias("label"))
    w = build_windows(stand_in, channels, wcfg, classes=classes).windows
    if not has:
        return w, None
    lab = build_windows(df, channels, wcfg, classes=classes).windows
    values = np.array(classes, dtype=object)
    return w, _join_truth(w, lab, values[lab.y])


def _join_truth(w, lab, truth: np.ndarray) -> np.ndarray:
    """truth (of the labelled windows `lab`) placed on the windows `w` by (entity, start)."""
    key = {
        (e, s): i
        for i, (e, s) in enumerate(zip(lab.entity.tolist(), lab.start.tolist(), strict=True))
    }
    out = np.full(len(w), None, dtype=object)
    for j, k in enumerate(zip(w.entity.tolist(), w.start.tolist(), strict=True)):
        i = key.get(k)
        if i is not None:
            out[j] = truth[i]
    return out


def _class_dtype(classes: list[Any]) -> pl.DataType:
    return (
        pl.Int64
        if all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
        else pl.String
    )


def format_predictions(meta: dict[str, Any], w, out: np.ndarray, y_true) -> pl.DataFrame:
    """The output frame of `CnnLstmModel.predict_frame`."""
    cols: dict[str, Any] = {
        "entity_id": pl.Series("entity_id", w.entity.astype(str), pl.String),
        "window_start": pl.Series(w.start, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        "window_end": pl.Series(w.end, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
    }
    task = meta["task"]
    if task == "classification":
        import torch

        classes = list(meta["classes"])
        dt = _class_dtype(classes)
        conv = int if dt == pl.Int64 else str
        idx = out.argmax(1) if len(out) else np.zeros(0, np.int64)
        prob = (
            torch.softmax(torch.from_numpy(out), 1).numpy()
            if len(out)
            else np.zeros((0, len(classes)), np.float32)
        )
        names = list(meta.get("class_names") or [str(c) for c in classes])
        cols["predicted"] = pl.Series([conv(classes[i]) for i in idx], dtype=dt)
        cols["predicted_name"] = pl.Series([names[i] for i in idx], dtype=pl.String)
        cols["probability"] = pl.Series(prob.max(1) if len(prob) else [], dtype=pl.Float32)
        for k, c in enumerate(classes):
            cols[f"prob_{c}"] = pl.Series(prob[:, k], dtype=pl.Float32)
        lab = (
            [None] * len(w) if y_true is None else [None if v is None else conv(v) for v in y_true]
        )
        cols["label"] = pl.Series(lab, dtype=dt)
    elif task == "regression":
        from cnnlstm.windows import Normalizer

        pred = Normalizer.from_dict(meta["normalizer"]).invert_y(out.astype(np.float32))
        cols["predicted"] = pl.Series(pred.reshape(len(w), -1)[:, 0], dtype=pl.Float64)
        lab = [None] * len(w) if y_true is None else list(y_true)
        cols["label"] = pl.Series(lab, dtype=pl.Float64)
    else:
        from cnnlstm.windows import Normalizer

        pred = Normalizer.from_dict(meta["normalizer"]).invert_y(out.astype(np.float32))
        for h in range(pred.shape[1] if pred.ndim == 3 else 0):
            for k, ch in enumerate(meta.get("target_channels") or meta["channels"]):
                cols[f"pred_h{h + 1}_{ch}"] = pl.Series(pred[:, h, k], dtype=pl.Float64)
    return pl.DataFrame(cols)


# ---------------------------------------------------------------------------------------------
# signature, input example, logging


def _mlflow_type(dt: pl.DataType) -> str:
    return "long" if dt == pl.Int64 else "string"


def signature(meta: dict[str, Any]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    ch = list(meta["channels"])
    inputs = [
        ColSpec("string", "entity_id"),
        ColSpec("datetime", "timestamp"),
        *[ColSpec("float", c) for c in ch],
    ]
    outputs = [
        ColSpec("string", "entity_id"),
        ColSpec("datetime", "window_start"),
        ColSpec("datetime", "window_end"),
    ]
    if meta["task"] == "classification":
        t = _mlflow_type(_class_dtype(list(meta["classes"])))
        inputs.append(ColSpec(t, "label", required=False))
        outputs += [
            ColSpec(t, "predicted"),
            ColSpec("string", "predicted_name"),
            ColSpec("float", "probability"),
            *[ColSpec("float", f"prob_{c}") for c in meta["classes"]],
            ColSpec(t, "label", required=False),
        ]
    elif meta["task"] == "regression":
        outputs += [ColSpec("double", "predicted"), ColSpec("double", "label", required=False)]
        target = meta["window"].get("target_column")
        if target and target not in ch:
            inputs.append(ColSpec("double", target, required=False))
    else:
        for h in range(meta.get("horizon") or 1):
            for c in meta.get("target_channels") or ch:
                outputs.append(ColSpec("double", f"pred_h{h + 1}_{c}"))
    params = ParamSchema([ParamSpec("batch_size", "long", 4096)])
    return ModelSignature(Schema(inputs), Schema(outputs), params)


def input_example(meta: dict[str, Any], n_windows: int = 2):
    """A small raw-readings frame (pandas) long enough for `n_windows` windows: channel values
    around the stored normalisation centre, timestamps at the stored rate (or 50 Hz)."""
    import pandas as pd

    w = meta["window"]
    need = w["size"] + (w.get("horizon", 1) if meta["task"] == "forecast" else 0)
    n = need + (n_windows - 1) * w["stride"]
    rate = w.get("sample_rate_hz") or 50.0
    rng = np.random.default_rng(0)
    center = np.asarray(meta["normalizer"]["center"], np.float32)
    scale = np.asarray(meta["normalizer"]["scale"], np.float32)
    # MLflow's datetime columns are timezone-naive: timestamps are UTC by contract
    # (starting off the whole second keeps every JSON timestamp in one format, which the REST
    # input parser needs)
    ts = pd.Timestamp("2024-01-01 00:00:00.001") + pd.to_timedelta(np.arange(n) / rate, unit="s")
    data: dict[str, Any] = {"entity_id": ["example"] * n, "timestamp": ts.as_unit("us")}
    for k, c in enumerate(meta["channels"]):
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


def log_pyfunc_model(
    weights: str | Path, name: str = "model", tmp_dir: str | Path | None = None, **kw
):
    """Log model.safetensors as a pyfunc model (models from code; the cnnlstm package goes with
    it as code, so the model serves without this project installed). Returns MLflow's ModelInfo.
    """
    import tempfile

    from cnnlstm.checkpoint import read_model_file

    _, meta = read_model_file(weights)
    if meta["model"].get("arch") == "frame":
        raise ValueError("frame models take image sequences, not readings: no pyfunc for them")
    pkg = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(dir=tmp_dir) as d:
        loader = Path(d) / "cnnlstm_model.py"
        loader.write_text(_LOADER)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(loader),
            artifacts={WEIGHTS: str(weights)},
            code_paths=[str(pkg)],
            signature=signature(meta),
            input_example=input_example(meta),
            pip_requirements=pip_requirements(),
            model_config={"device": "auto"},
            **kw,
        )
