"""The task seam: one object per task kind owns its targets, loss, metrics, selection metric
and direction, prediction columns and plots. Everything else (windows, the loop, the run,
scoring, the registry, the CLI) asks the task instead of branching on its kind.

Adding a kind: one module with a `Task` subclass, one line in `cnnlstm.tasks.KINDS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cnnlstm.tasks.config import TaskConfig
from cnnlstm.window_config import WindowConfig


@dataclass
class Targets:
    """What a task makes of a cut: y per window, which windows have one, and the label map."""

    y: np.ndarray
    keep: np.ndarray
    classes: list[Any] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    target_channels: list[str] = field(default_factory=list)


@dataclass
class Selection:
    """The metric runs are compared on (always on validation data) and its direction."""

    metric: str  # a key of the task's metrics dict, e.g. macro_f1, rmse, f1
    greater_is_better: bool

    def better(self, new: float | None, old: float | None) -> bool:
        if new is None or np.isnan(new):
            return False
        if old is None or np.isnan(old):
            return True
        return new > old if self.greater_is_better else new < old


class Task:
    """Base of the task kinds. Subclasses set `kind` and override what differs."""

    kind: ClassVar[str] = ""
    epoch_metrics_names: ClassVar[tuple[str, ...]] = ()  # besides val_loss, per epoch
    metric_names: ClassVar[tuple[str, ...]] = ()  # scalar metrics a run can be compared on
    default_monitor: ClassVar[str] = "val_loss"
    calibrates: ClassVar[bool] = False  # chooses something on validation outputs after training

    def __init__(self, cfg: TaskConfig, window: WindowConfig, state: dict[str, Any] | None = None):
        self.cfg = cfg
        self.window = window
        self.state: dict[str, Any] = dict(state or {})  # fitted on training data, in the artifact

    # ---- config ------------------------------------------------------------------------------
    @classmethod
    def check_config(cls, window: WindowConfig, refit_full: bool) -> None:
        """What this kind needs of the other sections (raise ValueError naming them)."""

    def config_dump(self) -> dict[str, Any]:
        return self.cfg.model_dump(mode="json") | {"kind": self.kind}

    @property
    def horizon_rows(self) -> int:
        """Rows after each window's input that belong to it (forecast targets)."""
        return 0

    @property
    def horizon(self) -> int | None:
        """Output steps of a multi-horizon model (None: one output vector)."""
        return None

    # ---- data --------------------------------------------------------------------------------
    def targets(self, cut, classes: list[Any] | None = None) -> Targets:
        raise NotImplementedError

    def has_truth(self, cut) -> bool:
        """Whether the cut carries what `targets` grades against (a label column)."""
        return cut.codes is not None

    def training_windows(self, w):
        """The training windows the loss sees (anomaly reconstruction: normal ones only)."""
        return w

    def fit_state(self, train, ws, norm) -> None:
        """Fit what the task learns from the training split (target transforms)."""

    def encode_y(self, y: np.ndarray) -> np.ndarray:
        """Targets as the loss sees them."""
        return y

    def n_outputs(self, ws) -> int:
        return 1

    # ---- model -------------------------------------------------------------------------------
    def baseline_unsupported(self) -> str | None:
        """Why the MiniRocket + ridge baseline (`cnnlstm.baseline`) cannot stand in for this
        task's model, or None. A task that calibrates on validation outputs cannot share them."""
        if self.calibrates:
            return "the task calibrates on validation outputs (a threshold)"
        return None

    def build_model(self, model_cfg, n_channels: int, n_outputs: int):
        from cnnlstm.models import build_model

        return build_model(model_cfg, n_channels, n_outputs, self.horizon)

    def reduce(self, out, x, lengths):
        """Per-window outputs from the network's output (and its input): what predictions and
        metrics are made of. Identity for predictors; a score for reconstructions."""
        return out

    def loss_fn(self, train_y, train_cfg):
        """A callable (out, x, lengths, y) -> scalar loss, set up from the training targets."""
        raise NotImplementedError

    def check_monitor(self, monitor: str) -> str:
        """The per-epoch metric early stopping watches; validated for this task."""
        if monitor == "auto":
            return self.default_monitor
        allowed = ("val_loss", *self.epoch_metrics_names)
        if monitor not in allowed:
            raise ValueError(
                f"train.monitor={monitor} does not apply to task {self.kind} (one of {allowed})"
            )
        return monitor

    @staticmethod
    def monitor_greater_is_better(monitor: str) -> bool:
        return not monitor.endswith(("loss", "rmse", "mae", "pinball"))

    # ---- metrics -----------------------------------------------------------------------------
    def epoch_metrics(self, out: np.ndarray, w) -> dict[str, float]:
        """Validation figures per epoch from reduced outputs (names without the val_ prefix),
        in the target's units."""
        return {}

    def evaluate(self, out: np.ndarray, w) -> dict[str, Any]:
        """Full metrics of reduced outputs on labelled windows, in the target's units."""
        raise NotImplementedError

    def calibrate(self, val_out: np.ndarray | None, val_w, train_out: np.ndarray | None) -> None:
        """Choose what is chosen after training on validation outputs (anomaly thresholds)."""

    @property
    def selection(self) -> Selection:
        raise NotImplementedError

    def selection_for(self, metric: str) -> Selection:
        """A named metric of this task as a selection rule (tracking.champion_metric)."""
        if metric == "auto":
            return self.selection
        if metric.startswith("test"):
            raise ValueError(
                f"tracking.champion_metric={metric}: test metrics are never used to choose; "
                f"name a validation metric of the task ({', '.join(self.metric_names)}) or auto"
            )
        name = metric.removeprefix("val_")
        if name not in self.metric_names:
            raise ValueError(
                f"tracking.champion_metric={metric} is not a metric of task {self.kind} "
                f"(one of {', '.join(self.metric_names)}, or auto)"
            )
        return Selection(name, self.monitor_greater_is_better(name))

    def summary_lines(self, part: str, m: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def flat_metrics(self, part: str, m: dict[str, Any]) -> dict[str, float]:
        """Scalar metrics of one part for the tracker (e.g. test_accuracy)."""
        out = {}
        for k, v in m.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "n":
                out[f"{part}_{k}"] = float(v)
            elif isinstance(v, dict) and k in ("entity", "all_windows", "persistence"):
                for k2, v2 in v.items():
                    if isinstance(v2, int | float) and not isinstance(v2, bool) and k2 != "n":
                        out[f"{part}_{k}_{k2}"] = float(v2)
        return out

    # ---- predictions -------------------------------------------------------------------------
    def prediction_columns(self, out: np.ndarray, w, truth, meta) -> dict[str, Any]:
        """Task columns of the predictions frame (polars Series by name); `truth` is the true
        y per window (None where the input has none)."""
        raise NotImplementedError

    def signature_columns(self, meta) -> tuple[list, list]:
        """(extra input ColSpecs, output ColSpecs after entity_id/window_start/window_end)."""
        raise NotImplementedError

    def validate_predictions(self, df) -> None:
        from schemas.predictions import validate_predictions

        validate_predictions(df)

    def prediction_metrics(self, df) -> dict[str, Any]:
        """Metrics of scored rows that carry a true label (batch scoring's report)."""
        return {}

    # ---- plots -------------------------------------------------------------------------------
    def plots(self, out: Path, ctx: dict[str, Any]) -> list[Path]:
        """Task plots beside the curves; ctx: model, prep, metrics, preds, device, n_points,
        seed."""
        return []


def graded_rows(df, column: str = "label"):
    """Rows of a predictions frame with a true label."""
    import polars as pl

    if column not in df.columns:
        return df.head(0)
    return df.filter(pl.col(column).is_not_null())


def mlflow_type(dt) -> str:
    import polars as pl

    return "long" if dt == pl.Int64 else "string"


def cross_entropy_loss(n_classes: int, train_y, train_cfg):
    """Cross-entropy (out, x, lengths, y) -> loss with train.class_weights (balanced: from the
    training targets' counts, or a list) and train.label_smoothing (training batches only)."""
    import torch
    import torch.nn.functional as F

    weight = None
    cw = train_cfg.class_weights
    if cw == "balanced":
        counts = torch.bincount(torch.as_tensor(train_y).cpu(), minlength=n_classes).double()
        weight = (counts.sum() / (n_classes * counts.clamp(min=1))).float()
    elif isinstance(cw, list):
        if len(cw) != n_classes:
            raise ValueError(f"train.class_weights needs {n_classes} values, got {len(cw)}")
        weight = torch.tensor(cw, dtype=torch.float32)
    smoothing = train_cfg.label_smoothing
    cache: dict[Any, Any] = {}

    def loss(out, x, lengths, y, train: bool = True):
        w = None if weight is None else cache.setdefault(out.device, weight.to(out.device))
        return F.cross_entropy(
            out.float(), y, weight=w, label_smoothing=smoothing if train else 0.0
        )

    return loss


def mse_loss(out, x, lengths, y, train: bool = True):
    import torch.nn.functional as F

    return F.mse_loss(out.float(), y)
