"""PNG plots of a training run (matplotlib Agg, no display): loss and metric curves with the
epoch where overfitting starts, the confusion matrix, and t-SNE / PCA of the CNN features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def overfit_epoch(train_loss: list[float], val_loss: list[float], patience: int = 2) -> int | None:
    """First epoch after which validation loss rises for `patience` epochs in a row while the
    training loss keeps falling (index into the lists), or None."""
    best = int(np.argmin(val_loss)) if val_loss else None
    if best is None or best >= len(val_loss) - patience:
        return None
    if all(train_loss[i] <= train_loss[best] + 1e-12 for i in range(best + 1, len(train_loss))):
        return best
    return None


def plot_curves(history: list[dict[str, float]], path: Path, best_epoch: int | None = None) -> Path:
    ep = [h["epoch"] + 1 for h in history]
    metric_keys = [k for k in history[0] if k.startswith("val_") and k != "val_loss"]
    fig, axes = plt.subplots(
        1, 2 if metric_keys else 1, figsize=(11 if metric_keys else 6, 4), squeeze=False
    )
    ax = axes[0, 0]
    tl = [h["train_loss"] for h in history]
    ax.plot(ep, tl, label="train loss")
    vl = [h["val_loss"] for h in history if "val_loss" in h]
    if vl:
        ax.plot(ep, vl, label="val loss")
        of = overfit_epoch(tl, vl)
        if of is not None:
            for a in axes[0]:
                a.axvline(of + 1, color="red", ls="--", lw=1, label="overfitting starts")
    if best_epoch is not None:
        for a in axes[0]:
            a.axvline(best_epoch, color="green", ls=":", lw=1, label="best (restored)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    if metric_keys:
        ax2 = axes[0, 1]
        for k in metric_keys:
            ax2.plot(ep, [h[k] for h in history], label=k)
        ax2.set_xlabel("epoch")
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(cm: list[list[int]], names: list[str], path: Path, title: str = "") -> Path:
    cm_a = np.asarray(cm, dtype=np.float64)
    norm = cm_a / np.maximum(cm_a.sum(1, keepdims=True), 1)
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 0.8 + 0.6 * k))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            if cm_a[i, j]:
                ax.text(
                    j,
                    i,
                    int(cm_a[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_embeddings(
    feats: np.ndarray, labels: np.ndarray, names: list[str], out: Path, seed: int = 0
) -> list[Path]:
    """PCA and t-SNE of (N, F) features coloured by class."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    paths = []
    emb = {"pca": PCA(n_components=2, random_state=seed).fit_transform(feats)}
    if len(feats) > 10:
        emb["tsne"] = TSNE(
            n_components=2, perplexity=min(30, len(feats) // 4), init="pca", random_state=seed
        ).fit_transform(feats)
    for kind, z in emb.items():
        fig, ax = plt.subplots(figsize=(6.5, 5))
        for k, name in enumerate(names):
            sel = labels == k
            if sel.any():
                ax.scatter(z[sel, 0], z[sel, 1], s=5, label=name, alpha=0.7)
        ax.legend(fontsize=7, markerscale=3)
        ax.set_title(f"{kind.upper()} of CNN features (test windows)")
        fig.tight_layout()
        p = out / f"features_{kind}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def feature_embeddings(
    model, w, norm, device, n_points: int, seed: int, names: list[str], out: Path
) -> list[Path]:
    """PCA / t-SNE of the CNN features of up to `n_points` windows of `w`, by true class."""
    import torch

    from cnnlstm.windows import Batches

    if not n_points or len(w) <= 2 or not hasattr(model, "features"):
        return []
    idx = np.random.default_rng(seed).permutation(len(w))[:n_points]
    sub = w.subset(np.sort(idx))
    feats = []
    model.eval()
    with torch.no_grad():
        for x, ln, _ in Batches(sub, norm, device, 512):
            feats.append(model.features(x, ln).float().cpu())
    return plot_embeddings(torch.cat(feats).numpy(), sub.y, names, out, seed)


def plot_predicted_vs_true(y: np.ndarray, pred: np.ndarray, path: Path, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(y, pred, s=6, alpha=0.5)
    lo = float(min(np.min(y), np.min(pred))) if len(y) else 0.0
    hi = float(max(np.max(y), np.max(pred))) if len(y) else 1.0
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="perfect")
    return _finish(fig, ax, path, "true", "predicted", title)


def plot_scores(
    score: np.ndarray, y: np.ndarray, threshold: float, path: Path, title: str = ""
) -> Path:
    """Histogram of anomaly scores by true class (unlabelled windows apart), threshold marked."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    bins = np.histogram_bin_edges(score, bins=50) if len(score) else 10
    for val, name in ((0, "normal"), (1, "anomalous"), (-1, "unlabelled")):
        sel = y == val
        if sel.any():
            ax.hist(score[sel], bins=bins, alpha=0.6, label=name)
    ax.axvline(threshold, color="red", ls="--", lw=1, label=f"threshold {threshold:.3g}")
    ax.set_yscale("log")
    return _finish(fig, ax, path, "anomaly score", "windows", title)


def _finish(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_plots(out_dir: Path, res, task, ctx: dict[str, Any]) -> list[Path]:
    """All plots of a run under out_dir/plots (the curves, then the task's own); returns their
    paths."""
    out = Path(out_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    # mark the best epoch only where its weights are the ones kept; a closed-form fit
    # (model.arch=minirocket) has no epochs, so no curves
    paths = (
        [plot_curves(res.history, out / "curves.png", res.best_epoch + 1 if res.restored else None)]
        if res.history
        else []
    )
    return paths + task.plots(out, ctx)
