"""anomaly: is a window anomalous? Two methods.

- ``supervised``: a classifier of windows labelled anomalous (any labelled sample outside
  ``task.normal_labels``) vs normal; the anomaly score is its probability of "anomaly".
- ``reconstruction``: a CNN -> RNN reconstruction model (`cnnlstm.models.recon`) trained on the
  windows labelled normal (``train_on: normal``; unlabelled windows count as normal) or on all;
  the score is the window's mean squared reconstruction error (in normalised units).

Either way the flag is ``score > threshold``, the threshold chosen on validation: the one that
maximises F1 of the anomalous class when validation holds labelled anomalies, else the
``threshold_quantile`` of the validation scores (of the training scores without validation).
Metrics: F1, precision and recall of the anomalous class, PR-AUC, ROC-AUC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cnnlstm import labels
from cnnlstm.evaluate import best_f1_threshold, binary_metrics
from cnnlstm.tasks.base import Selection, Targets, Task, cross_entropy_loss, graded_rows


class Anomaly(Task):
    kind = "anomaly"
    metric_names = ("f1", "pr_auc", "roc_auc", "precision", "recall", "accuracy")
    epoch_metrics_names = ("val_pr_auc", "val_f1")
    calibrates = True

    @property
    def reconstruction(self) -> bool:
        return self.cfg.method == "reconstruction"

    @property
    def default_monitor(self) -> str:  # type: ignore[override]
        return "val_loss" if self.reconstruction else "val_pr_auc"

    # ---- data --------------------------------------------------------------------------------
    @classmethod
    def check_config(cls, window, refit_full) -> None:
        if refit_full:
            raise ValueError(
                "train.refit_full does not apply to task.kind anomaly: its threshold is chosen "
                "on validation data, which a refit would train on"
            )

    def targets(self, cut, classes=None) -> Targets:
        names = ["normal", "anomaly"]
        if cut.codes is None:
            if not self.reconstruction:
                labels.require_labels(cut)  # supervised: a clear error
            n = len(cut.starts)  # unlabelled: every window kept, y unknown (-1)
            return Targets(np.full(n, -1, np.int64), np.ones(n, bool), [0, 1], names)
        y, labelled = labels.any_positive(cut, set(self.cfg.normal_labels))
        if self.reconstruction:  # unlabelled windows stay (unknown, -1): they can be scored
            return Targets(np.where(labelled, y, -1), np.ones(len(y), bool), [0, 1], names)
        return Targets(y, labelled, [0, 1], names)

    def training_windows(self, w):
        if self.reconstruction and self.cfg.train_on == "normal":
            return w.subset(np.flatnonzero(w.y <= 0))
        return w

    def n_outputs(self, ws) -> int:
        return 2

    # ---- model -------------------------------------------------------------------------------
    def build_model(self, model_cfg, n_channels: int, n_outputs: int):
        if not self.reconstruction:
            return super().build_model(model_cfg, n_channels, n_outputs)
        from cnnlstm.models.recon import ReconCNNRNN

        return ReconCNNRNN(model_cfg, n_channels)

    def reduce(self, out, x, lengths):
        if not self.reconstruction:
            return out
        from cnnlstm.models.recon import window_error

        return window_error(out, x, lengths)

    def loss_fn(self, train_y, train_cfg):
        if self.reconstruction:
            from cnnlstm.models.recon import window_error

            def loss(out, x, lengths, y, train: bool = True):
                return window_error(out, x, lengths).mean()

            return loss
        return cross_entropy_loss(2, train_y, train_cfg)  # normal / anomaly

    def score(self, out: np.ndarray) -> np.ndarray:
        """Anomaly score per window (higher: more anomalous)."""
        if self.reconstruction:
            return np.asarray(out, np.float64).reshape(-1)
        from cnnlstm.tasks.classify import softmax

        return softmax(np.asarray(out))[:, 1].astype(np.float64) if len(out) else np.zeros(0)

    @property
    def threshold(self) -> float:
        return float(self.state.get("threshold", 0.5))

    def calibrate(self, val_out, val_w, train_out) -> None:
        if val_out is not None and len(val_out):
            s, y = self.score(val_out), val_w.y
            src = "validation"
        elif train_out is not None and len(train_out):
            s, y = self.score(train_out), np.full(len(train_out), -1)
            src = "training (no validation data)"
        else:
            return
        lab = y >= 0
        if lab.any() and len(np.unique(y[lab])) == 2:
            t = best_f1_threshold(y[lab], s[lab])
            how = f"F1-optimal on {src}"
        else:
            base = s[y <= 0] if (y <= 0).any() else s
            t = float(np.quantile(base, self.cfg.threshold_quantile))
            how = f"quantile {self.cfg.threshold_quantile:g} of {src} scores"
        self.state["threshold"] = t
        self.state["threshold_rule"] = how

    # ---- metrics -----------------------------------------------------------------------------
    def epoch_metrics(self, out, w) -> dict[str, float]:
        lab = w.y >= 0
        s = self.score(out)
        if not lab.any() or len(np.unique(w.y[lab])) < 2:
            return {}
        m = binary_metrics(w.y[lab], s[lab], best_f1_threshold(w.y[lab], s[lab]))
        return {"pr_auc": m["pr_auc"], "f1": m["f1"]}

    def evaluate(self, out, w) -> dict[str, Any]:
        lab = w.y >= 0
        s = self.score(out)
        m = binary_metrics(w.y[lab], s[lab], self.threshold)
        m["threshold_rule"] = self.state.get("threshold_rule", "default 0.5")
        m["flagged"] = int((s > self.threshold).sum())
        m["n_scored"] = int(len(s))
        return m

    @property
    def selection(self) -> Selection:
        return Selection("f1", True)

    def summary_lines(self, part, m) -> list[str]:
        return [
            f"{part}: F1 (anomalous) {m['f1']:.4f}  precision {m['precision']:.4f}  recall "
            f"{m['recall']:.4f}  PR-AUC {m['pr_auc']:.4f}  threshold {m['threshold']:.4g}  "
            f"(n={m['n']}, {m['n_anomalous']} anomalous)"
        ]

    # ---- predictions -------------------------------------------------------------------------
    def prediction_columns(self, out, w, truth, meta) -> dict[str, Any]:
        import polars as pl

        s = self.score(out)
        if truth is None:
            lab = [None] * len(w)
        else:  # -1: no label (null)
            t = np.asarray(truth, np.int64)
            lab = pl.Series(t, dtype=pl.Int64).scatter(np.flatnonzero(t < 0), None)
        return {
            "anomaly_score": pl.Series(s, dtype=pl.Float64),
            "predicted": pl.Series((s > self.threshold).astype(np.int64), dtype=pl.Int64),
            "label": pl.Series(lab, dtype=pl.Int64),
        }

    def signature_columns(self, meta):
        from mlflow.types import ColSpec

        return [ColSpec("long", "label", required=False)], [
            ColSpec("double", "anomaly_score"),
            ColSpec("long", "predicted"),
            ColSpec("long", "label", required=False),
        ]

    def prediction_metrics(self, df) -> dict[str, Any]:
        lab = graded_rows(df)
        if not lab.height:
            return {}
        m = binary_metrics(lab["label"].to_numpy(), lab["anomaly_score"].to_numpy(), self.threshold)
        return {"labelled_windows": lab.height, "f1": m["f1"], "pr_auc": m["pr_auc"]}

    def plots(self, out: Path, ctx) -> list[Path]:
        from cnnlstm import plots

        outs = ctx["outs"]
        part = "test" if "test" in outs else "val" if "val" in outs else None
        if part is None:
            return []
        w = ctx["prep"].parts[part]
        return [
            plots.plot_scores(
                self.score(outs[part]),
                w.y,
                self.threshold,
                out / f"anomaly_scores_{part}.png",
                f"{part}: anomaly scores ({self.cfg.method})",
            )
        ]
