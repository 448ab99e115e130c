"""Hyperparameter search: an Optuna study over a declared search space.

Honest selection: tuning needs validation data (``window.split.val_fraction`` > 0 or
``window.split.val_folds``) and refuses to run without it (`ConfigError`, CLI exit 2). The
objective is the task's selection metric (`cnnlstm.tasks.Task.selection`: classify macro-F1,
regress/forecast RMSE, anomaly F1) of the trial's final model on the validation windows; with
``val_folds`` every trial is trained once per fold and the objective is the mean over folds.
Test windows are never evaluated in a trial, and ``train.refit_full`` is off inside trials.

Each trial run is tracked as an MLflow child run under one parent run (the lake is read once);
the per-epoch validation figure is reported to Optuna through the tracker's ``on_metrics`` hook,
so weak trials are pruned on the validation curve (pruned runs end KILLED with the tag
``optuna.state=PRUNED``). A small all-categorical space is searched exhaustively. The best
trial's config is written as YAML that ``cnnlstm train --config`` accepts (paths made absolute).

The search space is a mapping of dotted config keys to specs (YAML or dict)::

    model.rnn.cell:        {choices: [lstm, gru]}
    model.rnn.num_layers:  {type: int, low: 1, high: 2}
    train.lr:              {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    model.conv.channels:   {choices: [[32, 32], [64, 64]]}
    window.overlap:        {choices: [0.0, 0.5]}   # pseudo key: stride = size * (1 - overlap)
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "window.size": {"choices": [64, 128, 192]},
    "window.overlap": {"choices": [0.0, 0.5, 0.75]},
    "model.conv.channels": {"choices": [[32, 32], [64, 64], [32, 64, 64]]},
    "model.conv.kernel_size": {"choices": [3, 5, 7]},
    "model.rnn.cell": {"choices": ["lstm", "gru"]},
    "model.rnn.num_layers": {"type": "int", "low": 1, "high": 2},
    "model.rnn.hidden_size": {"choices": [32, 64, 128]},
    "train.lr": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
    "train.lr_rnn": {"type": "float", "low": 1e-4, "high": 5e-3, "log": True},
    "model.conv.dropout": {"type": "float", "low": 0.0, "high": 0.4},
    "model.head.dropout": {"type": "float", "low": 0.0, "high": 0.5},
}


def load_space(path: str | Path | None) -> dict[str, dict[str, Any]]:
    from cnnlstm.config import ConfigError

    if path is None:
        return copy.deepcopy(DEFAULT_SPACE)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"search space file not found: {p}")
    space = yaml.safe_load(p.read_text()) or {}
    validate_space(space)
    return space


def validate_space(space: dict[str, Any]) -> None:
    from cnnlstm.config import ConfigError

    if not isinstance(space, dict) or not space:
        raise ConfigError("search space must be a non-empty mapping of config keys to specs")
    for key, spec in space.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"search space {key}: spec must be a mapping")
        kind = spec.get("type", "categorical" if "choices" in spec else None)
        if kind == "categorical":
            if not spec.get("choices"):
                raise ConfigError(f"search space {key}: choices is empty")
        elif kind in ("int", "float"):
            if "low" not in spec or "high" not in spec or spec["low"] > spec["high"]:
                raise ConfigError(f"search space {key}: {kind} needs low <= high")
        else:
            raise ConfigError(f"search space {key}: type must be categorical, int or float")


def suggest(trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Values for one trial, by dotted key (list choices go through Optuna as JSON strings)."""
    out = {}
    for key, spec in space.items():
        kind = spec.get("type", "categorical")
        if kind == "int":
            out[key] = trial.suggest_int(
                key,
                int(spec["low"]),
                int(spec["high"]),
                step=int(spec.get("step", 1)),
                log=spec.get("log", False),
            )
        elif kind == "float":
            out[key] = trial.suggest_float(
                key, float(spec["low"]), float(spec["high"]), log=spec.get("log", False)
            )
        else:
            choices = spec["choices"]
            if any(isinstance(c, list | dict) for c in choices):
                out[key] = json.loads(
                    trial.suggest_categorical(key, [json.dumps(c) for c in choices])
                )
            else:
                out[key] = trial.suggest_categorical(key, choices)
    return out


def apply_values(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A config dict with dotted-key values set (window.overlap sets window.stride)."""
    raw = copy.deepcopy(raw)
    overlap = None
    for key, v in values.items():
        if key == "model.preset":  # pseudo key: a whole preset of cnnlstm.auto
            from cnnlstm.auto import apply_preset

            raw = apply_preset(raw, v)
            continue
        if key == "window.overlap":
            overlap = float(v)
            continue
        node = raw
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = v
    if overlap is not None:
        size = int(raw["window"]["size"])
        raw["window"]["stride"] = max(1, round(size * (1 - overlap)))
    return raw


class _StopStudy(RuntimeError):
    """Carries a ConfigError out of Optuna (which would record a ValueError as a failed trial)."""


def require_validation(cfg) -> None:
    """Tuning chooses on validation data only: refuse a config without it."""
    from cnnlstm.config import ConfigError

    sp = cfg.window.split
    if sp.val_folds is None and sp.val_fraction == 0:
        raise ConfigError(
            "cnnlstm tune needs validation data to choose on, and this config has none: set "
            "window.split.val_fraction > 0 (e.g. --set window.split.val_fraction=0.2) or "
            "window.split.val_folds (e.g. --set window.split.val_folds=3). Choosing on a "
            "training loss or on test data would not be honest"
        )


def objective_of(cfg) -> tuple[str, str]:
    """(validation metric optimised, optuna direction): the task's selection metric."""
    from cnnlstm.tasks import make_task

    sel = make_task(cfg.task, cfg.window).selection
    return sel.metric, "maximize" if sel.greater_is_better else "minimize"


def _sampler(space: dict[str, dict[str, Any]], n_trials: int, seed: int):
    import optuna

    sizes = [
        len(s["choices"]) for s in space.values() if s.get("type", "categorical") == "categorical"
    ]
    if len(sizes) == len(space) and math.prod(sizes) <= n_trials:
        # small grid: try every point. Optuna marks this sampler experimental (a warning on
        # every tune); it is the right tool here and its interface is pinned by our tests
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.BruteForceSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def portable_config(cfg) -> dict[str, Any]:
    """The resolved config with local paths made absolute (trainable from any folder)."""
    raw = cfg.model_dump(mode="json")
    raw["lake"]["uri"] = cfg.lake_uri
    if raw["data"].get("landing"):
        raw["data"]["landing"] = cfg.resolve_path(raw["data"]["landing"])
    if raw["tracking"].get("uri", "") and raw["tracking"]["uri"].startswith("sqlite:///"):
        from cnnlstm.mlflow_tracker import tracking_uri

        raw["tracking"]["uri"] = tracking_uri(cfg)
    raw["score"]["output"] = cfg.resolve_path(raw["score"]["output"])
    return raw


def tune(
    cfg,
    n_trials: int = 20,
    out_dir: str | Path = "runs/tune",
    space: dict[str, dict[str, Any]] | None = None,
    timeout_s: float | None = None,
    readings=None,
    seed: int | None = None,
    prune: bool = True,
) -> dict[str, Any]:
    """Run the study; returns a summary (best value, params, config path, trial states)."""
    import numpy as np
    import optuna

    from cnnlstm.config import ConfigError, config_from_dict
    from cnnlstm.mlflow_tracker import MlflowTracker
    from cnnlstm.train import run_tags, train_from_config

    require_validation(cfg)
    space = copy.deepcopy(space or DEFAULT_SPACE)
    validate_space(space)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = portable_config(cfg)
    metric, direction = objective_of(cfg)
    folds = cfg.window.split.val_folds
    if readings is None:
        from cnnlstm.lake import scan_readings

        readings = scan_readings(cfg.lake_uri).collect()

    parent = MlflowTracker(cfg, run_name=f"tune-{cfg.data.name}", tags={"optuna.study": "parent"})
    parent.start_run(tags=run_tags(cfg))
    import mlflow

    status = "FAILED"
    t0 = time.perf_counter()
    try:
        mlflow.log_dict(space, "tune/search_space.json")
        parent.log_params(
            {
                "tune.n_trials": n_trials,
                "tune.metric": f"val_{metric}",
                "tune.direction": direction,
                "tune.val_folds": folds,
                "tune.timeout_s": timeout_s,
            }
        )
        seed_ = cfg.train.seed if seed is None else seed
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
            if prune
            else optuna.pruners.NopPruner()
        )
        study = optuna.create_study(
            direction=direction,
            sampler=_sampler(space, n_trials, seed_),
            pruner=pruner,
            study_name=f"cnnlstm-{cfg.data.name}",
        )

        def objective(trial: optuna.Trial) -> float:
            try:
                return run_trial(trial)
            except ConfigError as e:  # a user mistake stops the study (not a failed trial)
                raise _StopStudy(e) from e

        def run_trial(trial: optuna.Trial) -> float:
            values = suggest(trial, space)
            raw = apply_values(base, values)
            raw.setdefault("train", {})["refit_full"] = False  # a refit would train on val
            raw["train"]["baseline"] = "off"  # trials compare configs, not against a baseline
            try:
                tcfg = config_from_dict(raw, source=f"trial {trial.number}")
            except ConfigError as e:  # an invalid combination: not a result, skip it
                trial.set_user_attr("invalid", str(e))
                raise optuna.TrialPruned(f"invalid config: {e}") from None
            trial.set_user_attr(
                "config", config_from_dict(apply_values(base, values)).model_dump(mode="json")
            )
            per_fold = []
            for k in range(folds or 1):
                fcfg = tcfg
                if folds:
                    fcfg = tcfg.model_copy(deep=True)
                    fcfg.window.split.val_fold = k
                tracker = _trial_tracker(fcfg, trial, k if folds else None, metric)
                m = train_from_config(
                    fcfg,
                    out / f"trial_{trial.number:03d}" / (f"fold_{k}" if folds else ""),
                    readings=readings,
                    tracker=tracker,
                    evaluate_test=False,
                )
                if "val" not in m:
                    raise ConfigError(
                        f"trial {trial.number}: no validation windows (window.split gives none); "
                        "raise window.split.val_fraction or use val_folds"
                    )
                v = m["val"].get(metric)
                if v is None or not math.isfinite(v):
                    raise ValueError(f"trial {trial.number}: validation {metric} is {v}")
                per_fold.append(float(v))
                if k == 0:
                    trial.set_user_attr("best_epoch", int(m["best_epoch"]))
                mlflow.MlflowClient(tracker.uri).set_tag(tracker.run_id, "optuna.state", "COMPLETE")
            trial.set_user_attr("val_per_fold", per_fold)
            return float(np.mean(per_fold))

        def _trial_tracker(fcfg, trial, fold, metric):
            def on_metrics(metrics: dict[str, float], step: int | None) -> None:
                key = f"val_{metric}"
                if step is None or key not in metrics or (fold or 0) != 0:
                    return
                trial.report(metrics[key], step)
                if trial.should_prune():
                    tracker.set_tags({"optuna.state": "PRUNED"})
                    tracker.status_override = "KILLED"
                    raise optuna.TrialPruned(f"pruned at epoch {step}")

            name = f"trial-{trial.number:03d}" + ("" if fold is None else f"-fold{fold}")
            tracker = MlflowTracker(
                fcfg,
                nested=True,
                run_name=name,
                on_metrics=on_metrics,
                tags={"optuna.trial": str(trial.number)}
                | ({} if fold is None else {"fold": str(fold)}),
            )
            return tracker

        try:
            study.optimize(
                objective,
                n_trials=n_trials,
                timeout=timeout_s,
                catch=(ValueError,),  # a failed trial (e.g. diverged) is recorded; go on
                gc_after_trial=True,
            )
        except _StopStudy as e:
            raise e.args[0] from None
        states: dict[str, int] = {}
        for t in study.trials:
            states[t.state.name] = states.get(t.state.name, 0) + 1
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        summary: dict[str, Any] = {
            "metric": metric,
            "direction": direction,
            "states": states,
            "n_trials": len(study.trials),
            "parent_run_id": parent.run_id,
            "seconds": None,
        }
        if not done:
            raise RuntimeError(f"no trial completed ({states}); widen the space or add trials")
        best = study.best_trial
        best_cfg = config_from_dict(best.user_attrs["config"])
        best_path = out / "best.yaml"
        best_raw = portable_config(best_cfg) | {"lake": base["lake"]}
        best_path.write_text(
            f"# best of {len(study.trials)} trials: validation {metric} {best.value:.6g}"
            f" (trial {best.number}, MLflow parent run {parent.run_id})\n"
            + yaml.safe_dump(best_raw, sort_keys=False)
        )
        mlflow.log_artifact(str(best_path), "tune")
        parent.log_metrics(
            {
                f"best_val_{metric}": float(best.value),
                "trials_complete": float(states.get("COMPLETE", 0)),
                "trials_pruned": float(states.get("PRUNED", 0)),
            }
        )
        parent.set_tags({"optuna.best_trial": str(best.number)})
        mlflow.log_dict({k: v for k, v in best.params.items()}, "tune/best_params.json")
        summary |= {
            "best_value": float(best.value),
            "best_trial": best.number,
            "best_params": best.params,
            "best_config": str(best_path),
            "trials": [
                {
                    "number": t.number,
                    "state": t.state.name,
                    "value": t.value,
                    "params": t.params,
                    "val_per_fold": t.user_attrs.get("val_per_fold"),
                    "best_epoch": t.user_attrs.get("best_epoch"),
                }
                for t in study.trials
            ],
            "seconds": time.perf_counter() - t0,
        }
        (out / "study.json").write_text(json.dumps(summary, indent=1, default=str))
        status = "FINISHED"
        return summary
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        parent.end_run(status)
