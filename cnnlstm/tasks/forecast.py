"""forecast: the next ``window.horizon`` values of ``window.target_channels`` after each window
(multi-horizon). With ``task.quantiles`` the model predicts those quantiles (pinball loss),
ordered by construction (the lowest plus non-negative steps); the point forecast is the median.
Targets are scaled with their channels' input statistics; every figure is in channel units."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnlstm import labels
from cnnlstm.evaluate import persistence_forecast, pinball, regression_metrics
from cnnlstm.tasks.base import Selection, Targets, Task, mse_loss


class Forecast(Task):
    kind = "forecast"
    metric_names = ("rmse", "mae")
    epoch_metrics_names = ("val_rmse", "val_mae")
    default_monitor = "val_loss"

    @property
    def horizon_rows(self) -> int:
        return self.window.horizon

    @property
    def horizon(self) -> int:
        return self.window.horizon

    @property
    def quantiles(self) -> list[float] | None:
        q = self.cfg.quantiles
        return None if q is None else sorted(set(q) | {0.5})

    @classmethod
    def check_config(cls, window, refit_full) -> None:
        if window.label != "forecast":
            raise ValueError("task.kind=forecast needs window.label: forecast")

    def has_truth(self, cut) -> bool:
        return True  # the future values are in the readings themselves

    def targets(self, cut, classes=None) -> Targets:
        tch = list(self.window.target_channels or cut.raw_channels)
        y, keep = labels.future_values(cut, tch)
        return Targets(y, keep, target_channels=tch)

    def baseline_unsupported(self) -> str | None:
        if self.quantiles:
            return "quantile forecasts: a ridge read-out gives one value per step"
        return super().baseline_unsupported()

    def n_outputs(self, ws) -> int:
        k = len(ws.target_channels)
        return k * len(self.quantiles) if self.quantiles else k

    def fit_state(self, train, ws, norm) -> None:
        idx = [ws.channels.index(c) for c in ws.target_channels]
        self.state["target_channels"] = list(ws.target_channels)
        self.state["target_idx"] = idx
        self.state["y_center"] = np.asarray(norm.center)[idx].tolist()
        self.state["y_scale"] = np.asarray(norm.scale)[idx].tolist()
        self.state["quantiles"] = self.quantiles

    def encode_y(self, y):
        c, s = np.asarray(self.state["y_center"]), np.asarray(self.state["y_scale"])
        return ((y - c) / s).astype(np.float32)

    def _unscale(self, v):
        c, s = np.asarray(self.state["y_center"]), np.asarray(self.state["y_scale"])
        if v.ndim == 4:  # (N, H, K, Q)
            return (v * s[None, None, :, None] + c[None, None, :, None]).astype(np.float32)
        return (v * s + c).astype(np.float32)

    # ---- model -------------------------------------------------------------------------------
    def reduce(self, out, x, lengths):
        """(B, H, K*Q) -> ordered quantiles (B, H, K, Q): the first plus cumulative softplus."""
        q = self.quantiles
        if not q:
            return out
        import torch.nn.functional as F

        b, h, _ = out.shape
        z = out.view(b, h, -1, len(q))
        steps = F.softplus(z[..., 1:])
        return z[..., :1] + F.pad(steps.cumsum(-1), (1, 0))

    def loss_fn(self, train_y, train_cfg):
        q = self.quantiles
        if not q:
            return mse_loss
        import torch

        levels = torch.tensor(q, dtype=torch.float32)

        def pinball_loss(out, x, lengths, y, train: bool = True):
            qs = self.reduce(out, x, lengths).float()  # (B, H, K, Q)
            d = y.unsqueeze(-1) - qs
            lv = levels.to(out.device)
            return torch.maximum(lv * d, (lv - 1) * d).mean()

        return pinball_loss

    def point(self, out: np.ndarray) -> np.ndarray:
        """The point forecast in channel units, (N, H, K)."""
        v = self._unscale(np.asarray(out))
        if self.quantiles:
            return v[..., self.quantiles.index(0.5)]
        return v

    # ---- metrics -----------------------------------------------------------------------------
    def epoch_metrics(self, out, w) -> dict[str, float]:
        m = regression_metrics(w.y, self.point(out))
        return {"rmse": m["rmse"], "mae": m["mae"]}

    def evaluate(self, out, w) -> dict[str, Any]:
        m = regression_metrics(w.y, self.point(out))
        if len(w):
            base = persistence_forecast(w.x, w.lengths, self.state["target_idx"], w.y.shape[1])
            m["persistence"] = regression_metrics(w.y, base)
            if self.quantiles:
                qv = self._unscale(np.asarray(out))
                m["pinball"] = pinball(w.y, qv, self.quantiles)
                lo, hi = qv[..., 0], qv[..., -1]
                m["coverage"] = float(((w.y >= lo) & (w.y <= hi)).mean())
                m["quantiles"] = self.quantiles
        return m

    @property
    def selection(self) -> Selection:
        return Selection("rmse", False)

    def summary_lines(self, part, m) -> list[str]:
        extra = ""
        if "persistence" in m:
            extra = f"  (persistence RMSE {m['persistence']['rmse']:.4f})"
        if "coverage" in m:
            q = m["quantiles"]
            extra += f"  {q[0]:g}-{q[-1]:g} interval holds {m['coverage']:.1%}"
        return [f"{part}: MAE {m['mae']:.4f}  RMSE {m['rmse']:.4f}{extra}  (n={m['n']})"]

    # ---- predictions -------------------------------------------------------------------------
    def prediction_columns(self, out, w, truth, meta) -> dict[str, Any]:
        import polars as pl

        cols: dict[str, Any] = {}
        point = self.point(out) if len(out) else np.zeros((0, self.horizon, 0))
        qv = self._unscale(np.asarray(out)) if self.quantiles and len(out) else None
        tch = self.state["target_channels"]
        for h in range(self.horizon):
            for k, ch in enumerate(tch):
                cols[f"pred_h{h + 1}_{ch}"] = pl.Series(
                    point[:, h, k] if len(out) else [], dtype=pl.Float64
                )
                for i, q in enumerate(self.quantiles or []):
                    cols[f"pred_h{h + 1}_{ch}_q{q:g}"] = pl.Series(
                        qv[:, h, k, i] if qv is not None else [], dtype=pl.Float64
                    )
        return cols

    def signature_columns(self, meta):
        from mlflow.types import ColSpec

        outs = []
        for h in range(self.horizon):
            for c in self.state["target_channels"]:
                outs.append(ColSpec("double", f"pred_h{h + 1}_{c}"))
                for q in self.quantiles or []:
                    outs.append(ColSpec("double", f"pred_h{h + 1}_{c}_q{q:g}"))
        return [], outs
