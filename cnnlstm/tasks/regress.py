"""regress: one number per window, the target column at the window's end (remaining useful
life, a process value). Target transforms (clip/cap, log1p, standardise) are fitted on the
training split and inverted in every metric and prediction: all figures are in the target's
units. ``evaluate_at: last`` grades only each entity's last window (the RUL protocol)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cnnlstm import labels
from cnnlstm.evaluate import regression_metrics
from cnnlstm.tasks.base import Selection, Targets, Task, graded_rows, mse_loss


def last_per_entity(entity: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Index of each entity's last window (the latest start), in entity order."""
    ent = np.asarray(entity).astype(str)
    order = np.lexsort((start, ent))  # by entity, then start
    last = np.r_[ent[order][1:] != ent[order][:-1], True]
    return np.sort(order[last])


class Regress(Task):
    kind = "regress"
    metric_names = ("rmse", "mae")
    epoch_metrics_names = ("val_rmse", "val_mae")
    default_monitor = "val_rmse"

    @classmethod
    def check_config(cls, window, refit_full) -> None:
        if not window.target:
            raise ValueError(
                "task.kind=regress needs window.target_column (the value regressed) or "
                "window.target_from_end"
            )

    def has_truth(self, cut) -> bool:
        return cut.target is not None

    def targets(self, cut, classes=None) -> Targets:
        y, keep = labels.end_target(cut, self.window.target)
        return Targets(y, keep)

    # ---- the target transform ----------------------------------------------------------------
    def _pre(self, y: np.ndarray) -> np.ndarray:
        t = self.cfg.target
        v = np.asarray(y, np.float64)
        if t.clip_min is not None or t.clip_max is not None:
            v = np.clip(v, t.clip_min, t.clip_max)
        if t.log1p:
            v = np.log1p(v)
        return v

    def fit_state(self, train, ws, norm) -> None:
        from cnnlstm.windows import center_scale

        v = self._pre(train.y.reshape(len(train), -1))
        if self.cfg.target.standardize:
            c, s = center_scale(v, "standard")
        else:
            c, s = np.zeros(v.shape[1], np.float32), np.ones(v.shape[1], np.float32)
        self.state["y_center"], self.state["y_scale"] = c.tolist(), s.tolist()

    def encode_y(self, y: np.ndarray) -> np.ndarray:
        c = np.asarray(self.state["y_center"])
        s = np.asarray(self.state["y_scale"])
        return ((self._pre(y) - c) / s).astype(np.float32)

    def decode(self, out: np.ndarray) -> np.ndarray:
        """Model outputs -> the target's units (N, 1)."""
        c = np.asarray(self.state["y_center"])
        s = np.asarray(self.state["y_scale"])
        v = np.asarray(out, np.float64).reshape(len(out), -1) * s + c
        if self.cfg.target.log1p:
            v = np.expm1(v)
        return v.astype(np.float32)

    # ---- model and metrics -------------------------------------------------------------------
    def loss_fn(self, train_y, train_cfg):
        return mse_loss

    def graded(self, w) -> np.ndarray:
        """Indices of the windows graded (all, or each entity's last)."""
        if self.cfg.evaluate_at == "last":
            return last_per_entity(w.entity, w.start)
        return np.arange(len(w))

    def epoch_metrics(self, out, w) -> dict[str, float]:
        g = self.graded(w)
        m = regression_metrics(w.y[g], self.decode(out)[g])
        return {"rmse": m["rmse"], "mae": m["mae"]}

    def evaluate(self, out, w) -> dict[str, Any]:
        pred = self.decode(out)
        g = self.graded(w)
        m = regression_metrics(w.y[g], pred[g]) | {"evaluate_at": self.cfg.evaluate_at}
        if self.cfg.evaluate_at == "last":
            m["all_windows"] = regression_metrics(w.y, pred)
        return m

    @property
    def selection(self) -> Selection:
        return Selection("rmse", False)

    def summary_lines(self, part, m) -> list[str]:
        at = " at each entity's last window" if m.get("evaluate_at") == "last" else ""
        return [f"{part}: MAE {m['mae']:.4f}  RMSE {m['rmse']:.4f}{at}  (n={m['n']})"]

    # ---- predictions -------------------------------------------------------------------------
    def prediction_columns(self, out, w, truth, meta) -> dict[str, Any]:
        import polars as pl

        pred = self.decode(out)
        if truth is None:
            lab = [None] * len(w)
        else:
            t = np.asarray(truth, np.float64).reshape(len(w), -1)[:, 0]
            lab = pl.Series(np.where(np.isfinite(t), t, np.nan), dtype=pl.Float64).fill_nan(None)
        return {
            "predicted": pl.Series(pred[:, 0] if len(pred) else [], dtype=pl.Float64),
            "label": pl.Series(lab, dtype=pl.Float64),
        }

    def signature_columns(self, meta):
        from mlflow.types import ColSpec

        inputs = []
        target = self.window.target_column
        if target and target not in meta.channels:
            inputs.append(ColSpec("double", target, required=False))
        return inputs, [ColSpec("double", "predicted"), ColSpec("double", "label", required=False)]

    def prediction_metrics(self, df) -> dict[str, Any]:
        lab = graded_rows(df)
        if not lab.height:
            return {}
        if self.cfg.evaluate_at == "last":
            lab = lab.sort("window_start").group_by("entity_id").last()
        m = regression_metrics(
            lab["label"].to_numpy()[:, None], lab["predicted"].to_numpy()[:, None]
        )
        return {"labelled_windows": lab.height, "mae": m["mae"], "rmse": m["rmse"]}

    def plots(self, out: Path, ctx) -> list[Path]:
        from cnnlstm import plots

        part = "test" if "test" in ctx["outs"] else "val" if "val" in ctx["outs"] else None
        if part is None:
            return []
        w = ctx["prep"].parts[part]
        g = self.graded(w)
        return [
            plots.plot_predicted_vs_true(
                w.y[g, 0],
                self.decode(ctx["outs"][part])[g, 0],
                out / f"predicted_vs_true_{part}.png",
                f"{part}: predicted vs true ({self.window.target})",
            )
        ]
