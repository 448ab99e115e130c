"""Metrics: accuracy, macro-F1, per-class precision/recall, confusion matrix; MAE/RMSE per
horizon; the persistence baseline for forecasting. Plain numpy in, JSON-ready dicts out."""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) counts; rows are true classes, columns predictions."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, class_names: list[str] | None = None
) -> dict[str, Any]:
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1)
    predicted = cm.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0  # macro over classes that occur in y_true
    names = class_names or [str(i) for i in range(n_classes)]
    n = int(cm.sum())
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": {
            names[k]: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k in range(n_classes)
        },
        "confusion_matrix": cm.tolist(),
        "class_names": names,
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """y: (N, 1) regression or (N, H, K) forecasts; per-horizon errors averaged over targets."""
    err = np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    out: dict[str, Any] = {
        "n": int(err.shape[0]),
        "mae": float(np.abs(err).mean()) if err.size else float("nan"),
        "rmse": float(np.sqrt((err**2).mean())) if err.size else float("nan"),
    }
    if err.ndim == 3:
        out["mae_per_horizon"] = np.abs(err).mean(axis=(0, 2)).tolist()
        out["rmse_per_horizon"] = np.sqrt((err**2).mean(axis=(0, 2))).tolist()
    return out


def persistence_forecast(
    x: np.ndarray, lengths: np.ndarray, target_idx: list[int], horizon: int
) -> np.ndarray:
    """The naive forecast: the last observed value repeated. x (N, C, L) -> (N, H, K)."""
    last = x[np.arange(len(x)), :, lengths - 1][:, target_idx]  # (N, K)
    return np.repeat(last[:, None, :], horizon, axis=1)
