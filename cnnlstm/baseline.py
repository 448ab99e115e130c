"""Fitting MiniRocket + ridge (`cnnlstm.models.minirocket`) on a split's windows.

Used two ways: as the model of a run (``model.arch: minirocket``) and as the baseline every
training run fits beside its model (``train.baseline``), on the same windows, split and
normalisation, so a user sees whether the CNN-RNN earned its place on their data.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cnnlstm.models.minirocket import N_KERNELS, MiniRocketRidge, fit_dilations, quantiles

log = logging.getLogger(__name__)

ALPHAS = np.logspace(-3, 3, 10)


@dataclass
class BaselineFit:
    seconds: float
    n_windows: int
    n_features: int
    alpha: float
    kind: str  # "classifier" | "regressor"


def applicable(task) -> str | None:
    """None when MiniRocket + ridge can stand in for the task's model, else why not."""
    return task.baseline_unsupported()


def _capped(n: int, cap: int | None, seed: int) -> np.ndarray | None:
    """The positions (in batch order) of the windows fitted on: a seeded random subset, in
    window order, when there are more than `cap`; None: all."""
    if cap is None or n <= cap:
        return None
    log.info("MiniRocket fits on %d of %d training windows (max_windows)", cap, n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def _collect(batches, cap: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of the windows fitted on. From a `cnnlstm.windows.Batches`, only those windows
    are gathered (the same ones, in the same order, as concatenating its batches and
    subsetting); any other iterable of (x, lengths, y) batches is concatenated first."""
    if hasattr(batches, "take") and hasattr(batches, "order"):
        order = batches.order()
        keep = _capped(len(order), cap, seed)
        if keep is not None:
            order = order[torch.from_numpy(keep)]
        x, _, y = batches.take(order)
        return x.detach().float().cpu(), y.detach().cpu()
    xs, ys = [], []
    for x, _, y in batches:
        xs.append(x.detach().float().cpu())
        ys.append(y.detach().cpu())
    x, y = torch.cat(xs), torch.cat(ys)
    keep = _capped(x.shape[0], cap, seed)
    if keep is not None:
        x, y = x[torch.from_numpy(keep)], y[torch.from_numpy(keep)]
    return x, y


def _features(model: MiniRocketRidge, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    out = np.empty((x.shape[0], int(model.biases.numel())), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch):
            out[i : i + batch] = model.features(x[i : i + batch]).numpy()
    return out


def fit_transform(model: MiniRocketRidge, x: torch.Tensor, seed: int) -> None:
    """Dilations, channel subsets and biases from the training windows x (N, C, L)."""
    rng = np.random.default_rng(seed)
    n, c, length = x.shape
    dil, per_dil = fit_dilations(length, model.n_features, model.max_dilations)
    n_dil = len(dil)
    # channels per (dilation, kernel): 2 ** U(0, log2(min(C, 9) + 1)), as in the reference
    max_exp = math.log2(min(c, 9) + 1)
    n_ch = np.floor(2 ** rng.uniform(0, max_exp, n_dil * N_KERNELS)).astype(np.int64)
    mask = np.zeros((n_dil * N_KERNELS, c), dtype=np.float32)
    for j, k in enumerate(n_ch):
        mask[j, rng.choice(c, size=min(int(k), c), replace=False)] = 1.0
    model.dilations = torch.as_tensor(dil)
    model.features_per_dilation = torch.as_tensor(per_dil)
    model.channel_mask = torch.from_numpy(mask.reshape(n_dil, N_KERNELS, c))
    q = torch.as_tensor(quantiles(int(N_KERNELS * per_dil.sum())), dtype=torch.float32)
    biases, start = [], 0
    with torch.inference_mode():
        for i, (d, f) in enumerate(zip(dil.tolist(), per_dil.tolist(), strict=True)):
            pick = torch.as_tensor(rng.integers(0, n, N_KERNELS))
            out = model._conv(x[pick], int(d), model.channel_mask[i])  # (84, 84, L)
            own = out[torch.arange(N_KERNELS), torch.arange(N_KERNELS)]  # kernel k on window k
            for k in range(N_KERNELS):
                biases.append(torch.quantile(own[k], q[start : start + f]))
                start += f
    model.biases = torch.cat(biases)


def _fit_temperature(scores: torch.Tensor, y: torch.Tensor) -> float:
    """One scale for the ridge scores so that softmax gives calibrated-ish probabilities
    (minimum cross-entropy on the training windows)."""
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=50)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(scores * log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.1, 1000.0))


def _column_std(z: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """``z.std(0)`` a block of columns at a time (no full-size temporary)."""
    return np.concatenate([z[:, a : a + chunk].std(0) for a in range(0, z.shape[1], chunk)])


class FeatureMatrix:
    """Standardised features (n, p): ``feats / scale``, float32, read a block of columns or rows
    at a time. MiniRocket's features are proportions over the window (at most L + 1 values per
    column), so when no column has more than 256 distinct values they are kept as uint8 codes
    into per-column tables of their standardised values: exactly the same float32 values in a
    quarter of the memory. Otherwise (or ``compact=False``) they are standardised in place.
    Hand `feats` over: the caller should not keep it. ``scale=None``: `feats` are already
    standardised (used as they are)."""

    def __init__(self, feats: np.ndarray, scale: np.ndarray | None, compact: bool = True):
        n, p = feats.shape
        self.shape = (n, p)
        self.dense: np.ndarray | None = None
        self.codes: np.ndarray | None = None
        self.table: np.ndarray | None = None
        compact = compact and scale is not None
        codes = np.empty((n, p), np.uint8) if compact else None
        table = np.zeros((p, 256), np.float32) if compact else None
        for j in range(p if compact else 0):
            values, inverse = np.unique(feats[:, j], return_inverse=True)
            if len(values) > 256:
                codes = table = None
                break
            codes[:, j], table[j, : len(values)] = inverse.reshape(-1), values
        if codes is not None:
            self.codes, self.table = codes, table / scale[:, None]
        elif scale is None:
            self.dense = feats
        else:
            self.dense = np.divide(feats, scale, out=feats)  # in place: no second copy

    @property
    def nbytes(self) -> int:
        if self.dense is not None:
            return self.dense.nbytes
        return self.codes.nbytes + self.table.nbytes

    def cols(self, a: int, b: int) -> np.ndarray:
        """Columns a:b, (n, b - a) float32."""
        if self.dense is not None:
            return self.dense[:, a:b]
        b = min(b, self.shape[1])
        return self.table[np.arange(a, b)[None, :], self.codes[:, a:b]]

    def rows(self, a: int, b: int) -> np.ndarray:
        """Rows a:b, (b - a, p) float32."""
        if self.dense is not None:
            return self.dense[a:b]
        return self.table[np.arange(self.shape[1])[None, :], self.codes[a:b]]


def _binarize(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """+1 / -1 targets per class, as sklearn's ``LabelBinarizer(pos_label=1, neg_label=-1)``
    (what RidgeClassifierCV regresses on): one column for two classes (+1: the second), all
    -1 for a single class."""
    if len(classes) < 2:
        return np.full((len(y), 1), -1.0)
    out = np.full((len(y), len(classes)), -1.0)
    out[np.arange(len(y)), np.searchsorted(classes, y)] = 1.0
    return out[:, 1:] if len(classes) == 2 else out


def ridge_gcv(z, y: np.ndarray, alphas=ALPHAS, chunk: int = 1024):
    """Ridge regression with an unpenalised intercept, alpha chosen among `alphas` by efficient
    leave-one-out (the smallest mean squared leave-one-out error over every target; the first
    alpha on a tie): what sklearn's RidgeCV / RidgeClassifierCV compute with their default
    scoring (``_RidgeGCV``: the eigen-decomposition of the Gram matrix X X' when n <= p, of the
    covariance X' X otherwise), without their float64 copies of the features. `z` (n, p), a
    float32 array or a `FeatureMatrix`, is read a block of columns (or rows) at a time; only
    the n x n (p x p) matrix and its eigenvectors are float64, because the small alphas act
    on its small eigenvalues. Returns (alpha, coef (k, p) float64, intercept (k,) float64)."""
    from scipy.linalg import eigh
    from scipy.linalg.blas import dsyrk

    if isinstance(z, np.ndarray):
        z = FeatureMatrix(z, None)
    n, p = z.shape
    y = np.asarray(y, np.float64).reshape(n, -1)
    k = y.shape[1]
    alphas = np.asarray(alphas, np.float64)
    starts_p, starts_n = range(0, p, chunk), range(0, n, chunk)
    x_mean = np.concatenate([z.cols(a, a + chunk).mean(0, dtype=np.float64) for a in starts_p])
    y_mean = y.mean(0)
    yc = y - y_mean
    b1 = np.column_stack([yc, np.ones(n)])  # the targets and the intercept's column

    def centred_cols(a: int) -> np.ndarray:  # (n, <=chunk) float64, Fortran order (BLAS)
        block = z.cols(a, a + chunk)
        out = np.empty(block.shape, np.float64, order="F")
        return np.subtract(block, x_mean[a : a + chunk], out=out)

    def centred_rows(a: int) -> np.ndarray:  # (<=chunk, p) float64
        return z.rows(a, a + chunk).astype(np.float64) - x_mean

    sse = np.zeros(len(alphas))
    if n <= p:  # Gram: K = Xc Xc' (n x n)
        gram = np.zeros((n, n), np.float64, order="F")
        for a in starts_p:  # upper triangle, in place
            gram = dsyrk(1.0, centred_cols(a), beta=1.0, c=gram, overwrite_c=1)
        evals, q = eigh(gram, lower=False, overwrite_a=True, check_finite=False, driver="evr")
        del gram
        qb = q.T @ b1  # (n, k + 1)
        inv = 1.0 / (evals[None, :] + alphas[:, None])  # (A, n)
        dual = np.empty((len(alphas), n, k))
        for a in starts_n:
            qr = q[a : a + chunk]
            diag = (qr * qr) @ inv.T  # (b, A): the diagonal of G^-1
            for j in range(len(alphas)):
                cb = qr @ (inv[j][:, None] * qb)  # (b, k + 1)
                d = diag[:, j] - cb[:, k] / n  # the intercept's correction
                dual[j, a : a + len(qr)] = cb[:, :k]
                sse[j] += float(((cb[:, :k] / d[:, None]) ** 2).sum())
        del q
        best = _first_best(sse)
        coef = np.concatenate([centred_cols(a).T @ dual[best] for a in starts_p])  # (p, k)
    else:  # covariance: C = Xc' Xc (p x p)
        cov = np.zeros((p, p), np.float64, order="F")
        xtb = np.zeros((p, k + 1))
        for a in starts_n:
            xr = centred_rows(a)
            cov = dsyrk(1.0, xr.T, beta=1.0, c=cov, overwrite_c=1)
            xtb += xr.T @ b1[a : a + len(xr)]
        evals, v = eigh(cov, lower=False, overwrite_a=True, check_finite=False, driver="evr")
        del cov
        w = v.T @ xtb  # (p, k + 1)
        inv = 1.0 / (evals[None, :] + alphas[:, None])  # (A, p)
        for a in starts_n:
            xv = centred_rows(a) @ v  # (b, p)
            diag = (xv * xv) @ inv.T  # (b, A): the diagonal of X H^-1 X'
            for j in range(len(alphas)):
                h = xv @ (inv[j][:, None] * w)  # (b, k + 1)
                num = yc[a : a + len(xv)] - h[:, :k]
                d = 1.0 - diag[:, j] - (1.0 - h[:, k]) / n
                sse[j] += float(((num / d[:, None]) ** 2).sum())
        best = _first_best(sse)
        coef = v @ (inv[best][:, None] * w[:, :k])  # (p, k)
    intercept = y_mean - x_mean @ coef
    return float(alphas[best]), coef.T, intercept


def _first_best(sse: np.ndarray) -> int:
    """The first index with the highest score -sse (a tie or NaN keeps the earlier one)."""
    best = 0
    for j in range(1, len(sse)):
        if -sse[j] > -sse[best]:
            best = j
    return best


def fit_minirocket(model: MiniRocketRidge, train_batches, seed: int = 0) -> BaselineFit:
    """Fit the transform and the ridge read-out on the training batches (normalised windows,
    encoded targets: class indices for classification, floats for regression). From a
    `cnnlstm.windows.Batches`, only the (at most ``max_windows``) windows fitted on are
    gathered; the standardised features are held compactly (`FeatureMatrix`) and the ridge
    (`ridge_gcv`) reads them in blocks."""
    t0 = time.perf_counter()
    x, y = _collect(train_batches, model.max_windows, seed)
    if x.shape[0] < 2:
        raise ValueError("MiniRocket needs at least 2 training windows")
    fit_transform(model, x, seed)
    feats = _features(model, x)
    n_windows = len(x)
    del x
    scale = _column_std(feats)
    scale[scale == 0] = 1.0
    z = FeatureMatrix(feats, scale)
    del feats
    n_feat = z.shape[1]
    n_out = int(np.prod(model.out_shape))
    weight = np.zeros((n_out, n_feat), dtype=np.float32)
    bias = np.zeros(n_out, dtype=np.float32)
    if not y.is_floating_point():  # classification: class indices 0..K-1
        yy = y.numpy().reshape(-1)
        labels = np.unique(yy)
        alpha, coef, icpt = ridge_gcv(z, _binarize(yy, labels), ALPHAS)
        classes = labels.astype(int)
        bias[:] = -10.0  # classes never seen in training: never predicted
        if len(classes) == 2:  # one decision function: class 1 if > 0
            weight[classes[1]], bias[classes[1]] = coef[0] / 2, icpt[0] / 2
            weight[classes[0]], bias[classes[0]] = -coef[0] / 2, -icpt[0] / 2
        elif len(classes) == 1:
            bias[classes[0]] = 0.0
        else:
            weight[classes], bias[classes] = coef, icpt
        kind = "classifier"
    else:
        yy = y.numpy().reshape(len(y), -1).astype(np.float64)
        if yy.shape[1] != n_out:
            raise ValueError(f"targets have {yy.shape[1]} values per window, the model {n_out}")
        alpha, coef, icpt = ridge_gcv(z, yy, ALPHAS)
        weight[:], bias[:] = coef, icpt
        kind = "regressor"
    model.weight = torch.from_numpy(weight / scale[None, :])
    model.bias = torch.from_numpy(bias)
    model.temperature = torch.ones(())
    if kind == "classifier":
        with torch.no_grad():  # the training scores: standardised features, their weights
            w = torch.from_numpy(weight)
            scores = model.bias.expand(n_windows, n_out).clone()
            for a in range(0, n_feat, 1024):
                scores += torch.from_numpy(z.cols(a, a + 1024)) @ w[:, a : a + 1024].T
        model.temperature = torch.tensor(_fit_temperature(scores, y.reshape(-1).long()))
    secs = time.perf_counter() - t0
    log.info(
        "MiniRocket + ridge: %d windows, %d features, alpha %.3g, %.1f s",
        n_windows,
        n_feat,
        alpha,
        secs,
    )
    return BaselineFit(secs, n_windows, n_feat, alpha, kind)


# ------------------------------------------------------------------------------------------------
# inside a training run


def baseline_config(cfg):
    """The run's config with the model swapped for MiniRocket + ridge."""
    from cnnlstm.models.config import ModelConfig

    model = ModelConfig(arch="minirocket", minirocket=cfg.model.minirocket)
    return cfg.model_copy(update={"model": model})


def _fit_on(cfg, prep, windows, n_in: int, n_out: int, device) -> tuple[Any, BaselineFit]:
    from cnnlstm.train import batches

    model = prep.task.build_model(cfg.model, n_in, n_out)
    fit = fit_minirocket(model, batches(windows, prep, "cpu", 512), cfg.train.seed)
    return model.to(device).eval(), fit


def fit_closed_form(model, prep, device, seed: int):
    """``model.arch: minirocket`` as the run's model: fitted once on the training windows; a
    FitResult with no epochs."""
    from cnnlstm.loop import FitResult
    from cnnlstm.train import batches

    fit_minirocket(model.cpu(), batches(prep.parts["train"], prep, "cpu", 512), seed)
    model.to(device).eval()
    return FitResult(
        history=[], best_epoch=0, best_score=float("nan"), monitor="none", stopped_early=False
    )


def _better(a: float | None, b: float | None, greater: bool) -> bool:
    """a strictly better than b (a missing or NaN figure never wins)."""
    if a is None or not np.isfinite(a):
        return False
    if b is None or not np.isfinite(b):
        return True
    return a > b if greater else a < b


@dataclass
class Rival:
    """The baseline fitted beside a run's model on the same windows: its figures go to
    ``metrics["baseline"]`` (and MLflow as ``baseline/...``); with ``train.baseline: compete``
    the better of the two on validation is the run's model."""

    cfg: Any
    model: Any
    n_in: int
    n_out: int
    device: Any
    info: dict[str, Any]
    outs: dict[str, np.ndarray]

    @classmethod
    def start(cls, cfg, prep, n_in, n_out, device, metrics) -> Rival | None:
        """Fit on the training split and evaluate on validation (before any refit)."""
        from cnnlstm.train import _outputs

        task = prep.task
        why = applicable(task)
        if why is not None:
            metrics["baseline"] = {"model": "minirocket", "skipped": why}
            log.info("baseline skipped: %s", why)
            return None
        bcfg = baseline_config(cfg)
        model, fit = _fit_on(bcfg, prep, prep.parts["train"], n_in, n_out, device)
        info: dict[str, Any] = {
            "model": "minirocket",
            "features": fit.n_features,
            "alpha": fit.alpha,
            "windows": fit.n_windows,
            "fit_seconds": fit.seconds,
        }
        outs: dict[str, np.ndarray] = {}
        if len(prep.parts["val"]):
            outs["val"] = _outputs(model, prep.parts["val"], prep, device, None)
            info["val"] = task.evaluate(outs["val"], prep.parts["val"])
            v = info["val"].get(task.selection.metric)
            info["evaluation"] = {
                **metrics["evaluation"],
                "value": None if v is None or not np.isfinite(v) else float(v),
            }
        mode = cfg.train.baseline
        if mode == "compete":
            if "evaluation" not in info:
                info["note"] = "compete needs validation windows: reported only"
                log.warning("train.baseline=compete: no validation windows, the model is kept")
            else:
                sel = task.selection
                won = _better(
                    info["evaluation"]["value"],
                    metrics["evaluation"]["value"],
                    sel.greater_is_better,
                )
                metrics["chosen"] = "baseline" if won else "model"
        metrics["baseline"] = info
        return cls(bcfg, model, n_in, n_out, device, info, outs)

    def refit(self, prep) -> None:
        """train.refit_full: fit again on train + validation entities (the refit's statistics)."""
        self.model, fit = _fit_on(
            self.cfg, prep, prep.train_full, self.n_in, self.n_out, self.device
        )
        self.info["refit"] = {"windows": fit.n_windows, "fit_seconds": fit.seconds}

    def finish(self, prep, evaluate_test: bool, out, tracker, metrics) -> None:
        """Test figures, the MLflow metrics (``baseline/...``), and with compete the swap of
        the run's figures when the baseline won (the model's go to ``metrics["cnnrnn"]``)."""
        from cnnlstm.train import evaluate_split

        task = prep.task
        if evaluate_test and len(prep.parts["test"]):
            self.info["test"], self.outs["test"] = evaluate_split(
                self.model, prep.parts["test"], prep, self.device, 512
            )
        flat: dict[str, float] = {"baseline/fit_seconds": float(self.info["fit_seconds"])}
        for part in ("val", "test"):
            if part in self.info:
                flat |= {
                    f"baseline/{k}": v for k, v in task.flat_metrics(part, self.info[part]).items()
                }
        tracker.log_metrics(flat)
        if metrics.get("chosen") == "baseline":
            metrics["cnnrnn"] = {
                k: metrics[k] for k in ("val", "test", "evaluation") if k in metrics
            }
            for k in ("val", "test", "evaluation"):
                if k in self.info:
                    metrics[k] = self.info[k]
            tracker.set_tags({"chosen_model": "minirocket"})
            log.info("train.baseline=compete: MiniRocket + ridge won on validation and is kept")


def summary_lines(task, m: dict[str, Any]) -> list[str]:
    """The baseline's lines of a run summary (after the model's), and which one was kept."""
    b = m.get("baseline")
    if not b:
        return []
    if "skipped" in b:
        return [f"baseline (MiniRocket + ridge): skipped - {b['skipped']}"]
    lines = [f"baseline MiniRocket + ridge ({b['fit_seconds']:.0f} s fit):"]
    for part in ("val", "test"):
        if part in b:
            lines += [f"  {line}" for line in task.summary_lines(part, b[part])]
    chosen = m.get("chosen")
    if chosen == "baseline":
        lines.append("kept: the baseline (better on validation; train.baseline=compete)")
    elif chosen == "model":
        lines.append("kept: the model (at least as good on validation; train.baseline=compete)")
    return lines
