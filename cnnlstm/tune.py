"""Hyperparameter search: an Optuna study over a declared search space.

Each trial is a full `train_from_config` run on the same readings (the lake is read once), tracked
as an MLflow child run under one parent run; the per-epoch validation metric is reported to Optuna
through the tracker's ``on_metrics`` hook, so weak trials are pruned on the validation curve
(pruned runs end KILLED with the tag ``optuna.state=PRUNED``). The objective is the trial's best
value of ``train.monitor`` (auto: validation macro-F1 for classification, validation loss
otherwise). The best trial's config is written as YAML that ``cnnlstm train --config`` accepts
(paths made absolute).

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
import time
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


def monitor_of(cfg) -> tuple[str, str]:
    """(per-epoch metric optimised, optuna direction)."""
    m = cfg.train.monitor
    if m == "auto":
        m = "val_macro_f1" if cfg.window.task == "classification" else "val_loss"
    return m, "maximize" if m in ("val_macro_f1", "val_accuracy") else "minimize"


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
) -> dict[str, Any]:
    """Run the study; returns a summary (best value, params, config path, trial states)."""
    import optuna

    from cnnlstm.config import ConfigError, config_from_dict
    from cnnlstm.mlflow_tracker import MlflowTracker
    from cnnlstm.train import train_from_config

    space = copy.deepcopy(space or DEFAULT_SPACE)
    validate_space(space)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = portable_config(cfg)
    metric, direction = monitor_of(cfg)
    if readings is None:
        from cnnlstm.lake import scan_readings

        readings = scan_readings(cfg.lake_uri).collect()

    parent = MlflowTracker(
        cfg,
        log_model=False,
        register=False,
        run_name=f"tune-{cfg.data.name}",
        tags={"optuna.study": "parent"},
    )
    parent.start_run(tags={"task": cfg.window.task, "arch": cfg.model.arch})
    import mlflow

    status = "FAILED"
    t0 = time.perf_counter()
    try:
        mlflow.log_dict(space, "tune/search_space.json")
        parent.log_params(
            {
                "tune.n_trials": n_trials,
                "tune.metric": metric,
                "tune.direction": direction,
                "tune.timeout_s": timeout_s,
            }
        )
        sampler = optuna.samplers.TPESampler(seed=cfg.train.seed if seed is None else seed)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        study = optuna.create_study(
            direction=direction,
            sampler=sampler,
            pruner=pruner,
            study_name=f"cnnlstm-{cfg.data.name}",
        )

        def objective(trial: optuna.Trial) -> float:
            values = suggest(trial, space)
            try:
                tcfg = config_from_dict(apply_values(base, values), source=f"trial {trial.number}")
            except ConfigError as e:  # an invalid combination: not a result, skip it
                trial.set_user_attr("invalid", str(e))
                raise optuna.TrialPruned(f"invalid config: {e}") from None
            trial.set_user_attr("config", tcfg.model_dump(mode="json"))

            def on_metrics(metrics: dict[str, float], step: int | None) -> None:
                if step is None or metric not in metrics:
                    return
                trial.report(metrics[metric], step)
                if trial.should_prune():
                    tracker.set_tags({"optuna.state": "PRUNED"})
                    tracker.status_override = "KILLED"
                    raise optuna.TrialPruned(f"pruned at epoch {step}")

            tracker = MlflowTracker(
                tcfg,
                log_model=False,
                register=False,
                nested=True,
                run_name=f"trial-{trial.number:03d}",
                on_metrics=on_metrics,
                tags={"optuna.trial": str(trial.number)},
            )
            m = train_from_config(
                tcfg, out / f"trial_{trial.number:03d}", readings=readings, tracker=tracker
            )
            mlflow.MlflowClient(tracker.uri).set_tag(tracker.run_id, "optuna.state", "COMPLETE")
            return float(m["best_score"])

        study.optimize(
            objective,
            n_trials=n_trials,
            timeout=timeout_s,
            catch=(ValueError,),
            gc_after_trial=True,
        )
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
            f"# best of {len(study.trials)} trials: {metric} {best.value:.6g}"
            f" (trial {best.number}, MLflow parent run {parent.run_id})\n"
            + yaml.safe_dump(best_raw, sort_keys=False)
        )
        mlflow.log_artifact(str(best_path), "tune")
        parent.log_metrics(
            {
                f"best_{metric}": float(best.value),
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
