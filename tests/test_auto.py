"""`model: auto`: presets sized from the data, chosen on validation (never test), the winner
refitted on train + validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from test_tune import _sine_lab

from cnnlstm.auto import PRESET_NAMES, apply_preset, auto_select, presets, rotate_groups
from cnnlstm.config import config_from_dict
from cnnlstm.models import build_model
from cnnlstm.models.config import ModelConfig


def test_presets_are_sized_from_the_data():
    chans = [{"name": f"acc_{a}", "unit": "g"} for a in "xyz"]
    chans += [{"name": f"gyro_{a}", "unit": "rad/s"} for a in "xyz"] + [{"name": "temp"}]
    assert rotate_groups(chans) == [[0, 1, 2], [3, 4, 5]]
    assert rotate_groups([{"name": f"v_{a}", "unit": "V"} for a in "xyz"]) == []
    raw = {"window": {"size": 512}, "data": {"channels": chans}}
    p = presets(raw)
    assert set(p) == set(PRESET_NAMES)
    assert p["subseq"]["model"]["n_subsequences"] == 16  # chunks of 32 samples
    assert p["cnn-gru-short"]["model"]["conv"]["pool_size"] == 4  # 512 / 16 = 32 steps
    assert p["cnn-lstm"]["train"]["augment"]["rotate_groups"] == [[0, 1, 2], [3, 4, 5]]
    for name in PRESET_NAMES:  # every preset is a valid model config
        ModelConfig.model_validate(apply_preset(raw | {"model": {}}, name)["model"])
    assert ModelConfig.model_validate("auto").arch == "auto"
    with pytest.raises(ValueError, match="unknown"):
        apply_preset(raw, "nope")


@pytest.mark.parametrize(
    ("size", "two", "three"),
    [(128, 2, 2), (256, 2, 2), (512, 3, 2), (1024, 4, 3)],
)
def test_long_windows_pool_the_recurrent_presets_to_at_most_64_steps(size, two, three):
    """HAPT's 128 samples keep the default pooling; a 1,024-sample vibration window is pooled
    4x per block before the LSTM (64 steps, not 256) and 3x in the three-block preset."""
    p = presets({"window": {"size": size}, "data": {"channels": []}})
    conv2 = p["cnn-lstm"]["model"]["conv"]
    conv3 = p["multiscale-deep"]["model"]["conv"]
    assert (conv2["pool_size"], conv3["pool_size"]) == (two, three)
    assert size // two**2 <= 64 and size // three**3 <= 64
    for name in ("cnn-lstm", "multiscale-deep"):
        cfg = ModelConfig.model_validate(p[name]["model"])
        x = torch.zeros(2, 3, size)
        assert build_model(cfg, 3, 4)(x).shape == (2, 4)


def test_auto_chooses_the_best_validation_preset_and_refits_it(tmp_path: Path):
    cfg = config_from_dict(
        {
            "data": {
                "name": "auto",
                "entity": {"column": "entity_id"},
                "timestamp": {"column": "timestamp"},
                "channels": [{"name": "c0"}],
                "label": {"column": "label"},
            },
            "lake": {"uri": str(tmp_path / "lake")},
            "window": {
                "size": 32,
                "stride": 16,
                "split": {"method": "entity", "test_fraction": 0.25},
            },
            "model": {
                "arch": "auto",
                "auto": {"presets": ["cnn-gru-short", "minirocket"]},
                "minirocket": {"features": 840},
            },
            "train": {"epochs": 3, "batch_size": 16, "progress": False, "plots": False},
            "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "auto"},
        },
        base_dir=tmp_path,
    )
    final, s = auto_select(cfg, tmp_path / "out", readings=_sine_lab())
    values = {t["params"]["model.preset"]: t["value"] for t in s["trials"]}
    assert set(values) == {"cnn-gru-short", "minirocket"}
    assert s["preset"] == max(values, key=values.get)  # the best validation figure wins
    best = next(t for t in s["trials"] if t["number"] == s["best_trial"])
    assert final.model.arch == ("minirocket" if s["preset"] == "minirocket" else "serial")
    assert final.train.refit_full and final.train.epochs == best["best_epoch"]
    assert final.window.split.val_fraction == 0.2  # no validation configured: carved for the choice
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("auto").experiment_id])
    trials = [r for r in runs if "optuna.trial" in r.data.tags]
    assert len(trials) == 2
    for r in trials:  # the choice never evaluated a test window
        assert not [k for k in r.data.metrics if k.startswith(("test", "baseline"))]
