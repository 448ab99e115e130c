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


def _collect(batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for x, _, y in batches:
        xs.append(x.detach().float().cpu())
        ys.append(y.detach().cpu())
    return torch.cat(xs), torch.cat(ys)


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


def fit_minirocket(model: MiniRocketRidge, train_batches, seed: int = 0) -> BaselineFit:
    """Fit the transform and the ridge read-out on the training batches (normalised windows,
    encoded targets: class indices for classification, floats for regression)."""
    from sklearn.linear_model import RidgeClassifierCV, RidgeCV

    t0 = time.perf_counter()
    x, y = _collect(train_batches)
    if x.shape[0] < 2:
        raise ValueError("MiniRocket needs at least 2 training windows")
    cap = model.max_windows
    if cap is not None and x.shape[0] > cap:  # a seeded random subset, in window order
        keep = np.sort(np.random.default_rng(seed).choice(x.shape[0], cap, replace=False))
        log.info("MiniRocket fits on %d of %d training windows (max_windows)", cap, x.shape[0])
        x, y = x[torch.from_numpy(keep)], y[torch.from_numpy(keep)]
    fit_transform(model, x, seed)
    feats = _features(model, x)
    scale = feats.std(0)
    scale[scale == 0] = 1.0
    z = feats / scale
    n_out = int(np.prod(model.out_shape))
    weight = np.zeros((n_out, z.shape[1]), dtype=np.float32)
    bias = np.zeros(n_out, dtype=np.float32)
    if not y.is_floating_point():  # classification: class indices 0..K-1
        yy = y.numpy().reshape(-1)
        clf = RidgeClassifierCV(alphas=ALPHAS).fit(z, yy)
        classes = clf.classes_.astype(int)
        coef = np.atleast_2d(clf.coef_)
        icpt = np.atleast_1d(clf.intercept_)
        bias[:] = -10.0  # classes never seen in training: never predicted
        if len(classes) == 2:  # one decision function: class 1 if > 0
            weight[classes[1]], bias[classes[1]] = coef[0] / 2, icpt[0] / 2
            weight[classes[0]], bias[classes[0]] = -coef[0] / 2, -icpt[0] / 2
        elif len(classes) == 1:
            bias[classes[0]] = 0.0
        else:
            weight[classes], bias[classes] = coef, icpt
        alpha, kind = float(getattr(clf, "alpha_", np.nan)), "classifier"
    else:
        yy = y.numpy().reshape(len(y), -1).astype(np.float64)
        if yy.shape[1] != n_out:
            raise ValueError(f"targets have {yy.shape[1]} values per window, the model {n_out}")
        reg = RidgeCV(alphas=ALPHAS).fit(z, yy)
        weight[:], bias[:] = np.atleast_2d(reg.coef_), np.atleast_1d(reg.intercept_)
        alpha, kind = float(np.atleast_1d(reg.alpha_)[0]), "regressor"
    model.weight = torch.from_numpy(weight / scale[None, :])
    model.bias = torch.from_numpy(bias)
    model.temperature = torch.ones(())
    if kind == "classifier":
        with torch.no_grad():
            scores = torch.from_numpy(feats) @ model.weight.T + model.bias
        model.temperature = torch.tensor(_fit_temperature(scores, y.reshape(-1).long()))
    secs = time.perf_counter() - t0
    log.info(
        "MiniRocket + ridge: %d windows, %d features, alpha %.3g, %.1f s",
        len(x),
        z.shape[1],
        alpha,
        secs,
    )
    return BaselineFit(secs, len(x), int(z.shape[1]), alpha, kind)


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
