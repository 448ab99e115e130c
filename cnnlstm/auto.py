"""``model: auto``: a small, documented set of model presets sized from the data, chosen on
validation data within a time budget, the winner refitted on all training data.

The presets (``PRESET_NAMES``; docs/training.md) are sized from the window length L, the
number of channels and the channel units (inertial triples get rotation augmentation):

- ``cnn-lstm``: the default serial CNN -> LSTM (two conv blocks, pooled 4x, LSTM 128; long
  windows pooled more: at most 64 steps).
- ``cnn-gru-short``: a light conv front end pooled to at most ~32 steps, then a GRU 64.
- ``multiscale-deep``: three conv blocks (kernels 7, 5, 3) pooled 8x before an LSTM 128, with
  label smoothing (windows over 512 samples pooled more: at most 64 steps).
- ``subseq``: the sub-sequence layout (L split into chunks of ~32 samples, the conv stack per
  chunk, a GRU over the chunks).
- ``minirocket``: MiniRocket + ridge (`cnnlstm.baseline`).

Selection reuses `cnnlstm.tune` (one trial per preset, MLflow child runs, the task's validation
metric, with ``val_folds`` the mean over folds; trials never evaluate test windows). A config
without validation data gets ``window.split.val_fraction: 0.2`` for the selection (training
entities only: the test split is untouched). The winner is then trained with
``train.refit_full`` for the trial's best epoch count: selected on validation, refitted on
train + validation.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PRESET_NAMES = ("cnn-lstm", "cnn-gru-short", "multiscale-deep", "subseq", "minirocket")
INERTIAL_UNITS = {"g", "m/s2", "m/s^2", "m/s²", "rad/s", "deg/s", "dps", "°/s"}


def rotate_groups(channels: list[dict[str, Any]]) -> list[list[int]]:
    """Index triples of consecutive channels with one inertial unit whose names end in x, y, z
    (acc_x, acc_y, acc_z): rotated together by the augmentation."""
    groups = []
    for i in range(len(channels) - 2):
        trio = channels[i : i + 3]
        units = {c.get("unit") for c in trio}
        ends = [str(c["name"]).lower()[-1:] for c in trio]
        fresh = not groups or groups[-1][-1] < i
        if fresh and len(units) == 1 and units <= INERTIAL_UNITS and ends == ["x", "y", "z"]:
            groups.append([i, i + 1, i + 2])
    return groups


def presets(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> {"model": ..., "train": {...overrides}} for the config dict ``raw``."""
    length = int(raw["window"]["size"])
    groups = rotate_groups(raw["data"].get("channels") or [])
    aug: dict[str, Any] = {"jitter": 0.05}
    if groups:
        aug |= {"rotate_deg": 30.0, "rotate_groups": groups}
    pool_short = max(2, math.ceil(math.sqrt(max(1.0, length / 32))))
    # long windows (vibration at kHz rates: up to 1,024 samples): pool more, so that the
    # recurrence runs over at most 64 steps (an LSTM over 256 steps is most of a CPU epoch);
    # 2 up to L = 256 (two blocks) and L = 512 (three blocks), as before
    pool_two = max(2, math.ceil(math.sqrt(length / 64)))
    pool_three = max(2, math.ceil((length / 64) ** (1 / 3) - 1e-9))
    return {
        "cnn-lstm": {
            "model": {
                "arch": "serial",
                "conv": {"channels": [64, 64], "kernel_size": 5, "pool_size": pool_two},
                "rnn": {"cell": "lstm", "hidden_size": 128},
                "pooling": "mean",
            },
            "train": {"augment": aug},
        },
        "cnn-gru-short": {
            "model": {
                "arch": "serial",
                "conv": {"channels": [32, 64], "kernel_size": 5, "pool_size": pool_short},
                "rnn": {"cell": "gru", "hidden_size": 64},
                "pooling": "mean",
            },
            "train": {"augment": aug, "label_smoothing": 0.05},
        },
        "multiscale-deep": {
            "model": {
                "arch": "serial",
                "conv": {
                    "channels": [64, 64, 128],
                    "kernel_size": [7, 5, 3],
                    "pool_size": pool_three,
                },
                "rnn": {"cell": "lstm", "hidden_size": 128},
                "pooling": "mean",
            },
            "train": {"augment": aug, "label_smoothing": 0.1},
        },
        "subseq": {
            "model": {
                "arch": "subseq",
                "n_subsequences": max(2, length // 32),
                "conv": {"channels": [64, 64], "kernel_size": 5, "pool_size": 2},
                "rnn": {"cell": "gru", "hidden_size": 128},
            },
            "train": {"augment": aug},
        },
        "minirocket": {"model": {"arch": "minirocket"}, "train": {}},
    }


def apply_preset(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """``raw`` with the model section replaced by preset ``name`` and its train overrides."""
    table = presets(raw)
    if name not in table:
        raise ValueError(f"model preset {name!r} is unknown (one of {list(table)})")
    raw = copy.deepcopy(raw)
    keep = {
        k: raw.get("model", {}).get(k) for k in ("auto", "minirocket") if k in raw.get("model", {})
    }
    raw["model"] = copy.deepcopy(table[name]["model"]) | keep
    train = raw.setdefault("train", {})
    for k, v in table[name]["train"].items():
        train[k] = v
    return raw


def auto_select(
    cfg, out_dir: str | Path, budget_s: float | None = None, readings=None
) -> tuple[Any, dict[str, Any]]:
    """Choose a preset on validation data (`cnnlstm.tune`), within ``budget_s`` seconds; returns
    (the winner's config, refitted on train + validation for its best epoch count; the study
    summary)."""
    from cnnlstm.config import config_from_dict
    from cnnlstm.tune import portable_config, tune

    ac = cfg.model.auto
    names = list(ac.presets or PRESET_NAMES)
    raw = portable_config(cfg)
    sp = raw["window"]["split"]
    if not sp.get("val_folds") and not sp.get("val_fraction"):
        sp["val_fraction"] = 0.2
        log.info("model: auto chooses on validation: window.split.val_fraction=0.2 for the choice")
    base = config_from_dict(raw, source="model: auto")
    budget = budget_s if budget_s is not None else ac.budget_s
    summary = tune(
        base,
        n_trials=len(names),
        out_dir=Path(out_dir) / "auto",
        space={"model.preset": {"choices": names}},
        timeout_s=budget,
        readings=readings,
        prune=False,  # presets learn at different speeds: compare finished runs only
    )
    best = next(t for t in summary["trials"] if t["number"] == summary["best_trial"])
    final = apply_preset(portable_config(cfg), best["params"]["model.preset"])
    final["model"].pop("auto", None)
    # selected on validation; now trained on train + validation for the epochs it needed
    epochs = best.get("best_epoch") or final["train"].get("epochs") or 1
    final["train"] |= {"refit_full": True, "epochs": int(max(1, epochs))}
    final["window"]["split"] = sp
    summary["preset"] = best["params"]["model.preset"]
    log.info(
        "model: auto chose %s (validation %s %.4g)",
        summary["preset"],
        summary["metric"],
        summary["best_value"],
    )
    return config_from_dict(final, source=f"model: auto -> {summary['preset']}"), summary
