"""Metrics, from scikit-learn: accuracy, macro-F1, per-class precision/recall, confusion matrix;
F1 / PR-AUC of an anomalous class; MAE/RMSE (per horizon); pinball loss; entity-level answers
from window answers; the persistence baseline for forecasting. numpy in, JSON-ready dicts out.

Macro-F1 follows scikit-learn's definition: the mean over the classes that are true or
predicted at least once (a class predicted but never true counts with F1 0; a class neither
true nor predicted is left out).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _skm():
    """scikit-learn's metrics, imported on first use (the config layer imports this module)."""
    from sklearn import metrics

    return metrics


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) counts; rows are true classes, columns predictions."""
    skm = _skm()
    if n_classes == 0:
        return np.zeros((0, 0), np.int64)
    return skm.confusion_matrix(y_true, y_pred, labels=np.arange(n_classes)).astype(np.int64)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, class_names: list[str] | None = None
) -> dict[str, Any]:
    skm = _skm()
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    names = class_names or [str(i) for i in range(n_classes)]
    n = len(y_true)
    labels = np.arange(n_classes)
    if n:
        p, r, f, s = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, zero_division=0
        )
        acc = float(skm.accuracy_score(y_true, y_pred))
        macro = float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
    else:
        p = r = f = np.zeros(n_classes)
        s = np.zeros(n_classes, np.int64)
        acc = macro = float("nan")
    return {
        "n": n,
        "accuracy": acc,
        "macro_f1": macro,
        "per_class": {
            names[k]: {
                "precision": float(p[k]),
                "recall": float(r[k]),
                "f1": float(f[k]),
                "support": int(s[k]),
            }
            for k in range(n_classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, n_classes).tolist(),
        "class_names": names,
    }


def binary_metrics(y_true: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, Any]:
    """Anomaly metrics: F1, precision and recall of the anomalous class (1) at `threshold`
    (flag: score > threshold), PR-AUC (average precision) and ROC-AUC of the score."""
    skm = _skm()
    y = np.asarray(y_true, dtype=np.int64)
    s = np.asarray(score, dtype=np.float64)
    flag = (s > threshold).astype(np.int64)
    both = len(np.unique(y)) == 2
    out: dict[str, Any] = {
        "n": int(len(y)),
        "n_anomalous": int(y.sum()),
        "threshold": float(threshold),
        "f1": float(skm.f1_score(y, flag, pos_label=1, zero_division=0)) if len(y) else np.nan,
        "precision": float(skm.precision_score(y, flag, zero_division=0)) if len(y) else np.nan,
        "recall": float(skm.recall_score(y, flag, zero_division=0)) if len(y) else np.nan,
        "accuracy": float(skm.accuracy_score(y, flag)) if len(y) else np.nan,
        "pr_auc": float(skm.average_precision_score(y, s)) if both else float("nan"),
        "roc_auc": float(skm.roc_auc_score(y, s)) if both else float("nan"),
        "confusion_matrix": confusion_matrix(y, flag, 2).tolist() if len(y) else [],
    }
    return out


def best_f1_threshold(y_true: np.ndarray, score: np.ndarray) -> float:
    """The score threshold (flag: score > threshold) that maximises F1 of class 1."""
    skm = _skm()
    p, r, thr = skm.precision_recall_curve(np.asarray(y_true), np.asarray(score, np.float64))
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)[:-1]
    k = int(np.argmax(f1))
    # precision_recall_curve flags score >= thr[k]; the midpoint to the next lower score
    # flags the same windows with a strict ">"
    below = np.asarray(score)[np.asarray(score) < thr[k]]
    return float((thr[k] + below.max()) / 2) if len(below) else float(thr[k]) - 1e-12


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """y: (N, 1) regression or (N, H, K) forecasts; per-horizon errors averaged over targets."""
    skm = _skm()
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    out: dict[str, Any] = {"n": int(yt.shape[0])}
    if yt.size:
        out["mae"] = float(
            skm.mean_absolute_error(yt.reshape(len(yt), -1), yp.reshape(len(yp), -1))
        )
        out["rmse"] = float(
            np.sqrt(skm.mean_squared_error(yt.reshape(len(yt), -1), yp.reshape(len(yp), -1)))
        )
    else:
        out["mae"] = out["rmse"] = float("nan")
    if yt.ndim == 3:
        err = yp - yt
        out["mae_per_horizon"] = np.abs(err).mean(axis=(0, 2)).tolist()
        out["rmse_per_horizon"] = np.sqrt((err**2).mean(axis=(0, 2))).tolist()
    return out


def pinball(y_true: np.ndarray, q_pred: np.ndarray, quantiles: list[float]) -> dict[str, float]:
    """Mean pinball (quantile) loss per quantile; y (N, H, K), q_pred (N, H, K, Q)."""
    skm = _skm()
    out = {}
    for i, q in enumerate(quantiles):
        out[f"q{q:g}"] = float(
            skm.mean_pinball_loss(
                np.asarray(y_true, np.float64).ravel(),
                np.asarray(q_pred[..., i], np.float64).ravel(),
                alpha=q,
            )
        )
    return out


def entity_answers(
    entity: np.ndarray, probs: np.ndarray, how: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One answer per entity from its windows' class probabilities (N, K).

    vote: the class most windows predict (ties: the higher summed probability), confidence the
    share of windows that voted for it; mean_prob: the argmax of the mean probability,
    confidence that mean. Returns (entities, class index, confidence), entities sorted."""
    ents, inv = np.unique(np.asarray(entity).astype(str), return_inverse=True)
    k = probs.shape[1]
    psum = np.zeros((len(ents), k))
    np.add.at(psum, inv, probs)
    n = np.bincount(inv, minlength=len(ents)).astype(np.float64)
    if how == "vote":
        votes = np.zeros((len(ents), k))
        np.add.at(votes, (inv, probs.argmax(1)), 1.0)
        # ties broken by summed probability (a fraction < 1 never outweighs one vote)
        key = votes + psum / (n[:, None] + 1.0)
        idx = key.argmax(1)
        conf = votes[np.arange(len(ents)), idx] / n
    elif how == "mean_prob":
        mean = psum / n[:, None]
        idx = mean.argmax(1)
        conf = mean[np.arange(len(ents)), idx]
    else:
        raise ValueError(f"task.aggregate={how!r}: expected vote or mean_prob")
    return ents, idx.astype(np.int64), conf


def entity_truth(
    entity: np.ndarray, y: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The most frequent true class of each entity's windows (ties: the smaller index)."""
    ents, inv = np.unique(np.asarray(entity).astype(str), return_inverse=True)
    counts = np.zeros((len(ents), max(n_classes, 1)), np.int64)
    np.add.at(counts, (inv, np.asarray(y, np.int64)), 1)
    return ents, counts.argmax(1)


def persistence_forecast(
    x: np.ndarray, lengths: np.ndarray, target_idx: list[int], horizon: int
) -> np.ndarray:
    """The naive forecast: the last observed value repeated. x (N, C, L) -> (N, H, K)."""
    last = x[np.arange(len(x)), :, lengths - 1][:, target_idx]  # (N, K)
    return np.repeat(last[:, None, :], horizon, axis=1)
