"""A small Optuna study on the tiny HAPT lake, tracked on a real MLflow server: one parent run
with one child run per trial, pruning wired to the validation curve, and a best config that
`cnnlstm train` accepts as is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from cli_app import app
from conftest_train import make_readings
from mlflow import MlflowClient
from mlflow_server import tiny_config
from typer.testing import CliRunner

from cnnlstm.config import ConfigError, config_from_dict, load_config
from cnnlstm.tune import apply_values, load_space, suggest, tune

ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ["mlflow_server"]  # session fixtures shared by all MLflow tests

SPACE = {
    "model.rnn.cell": {"choices": ["lstm", "gru"]},
    "model.rnn.hidden_size": {"choices": [8, 16]},
    "model.conv.channels": {"choices": [[8], [8, 8]]},
    "window.overlap": {"choices": [0.0, 0.5]},
    "train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
}


def test_tune_parent_children_and_trainable_best_config(hapt_lake, mlflow_server, tmp_path):
    cfg = tiny_config(tmp_path, hapt_lake, mlflow_server.uri, tracking={"experiment": "tune-test"})
    s = tune(cfg, n_trials=3, out_dir=tmp_path / "tune", space=SPACE)
    assert s["n_trials"] == 3 and s["states"].get("COMPLETE", 0) >= 1
    assert 0.0 <= s["best_value"] <= 1.0 and s["metric"] == "macro_f1"  # on validation

    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("tune-test")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == s["parent_run_id"]]
    assert [p.info.run_id for p in parents] == [s["parent_run_id"]]
    assert len(children) == 3
    assert parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["best_val_macro_f1"] == pytest.approx(s["best_value"])
    for c in children:  # each trial: its config and per-epoch validation curve
        assert c.info.status in ("FINISHED", "KILLED")
        assert c.data.params["model.rnn.cell"] in ("lstm", "gru")
        assert client.get_metric_history(c.info.run_id, "val_macro_f1")
        assert not [k for k in c.data.metrics if k.startswith("test")]  # test never touched
    best_child = [c for c in children if c.data.tags["optuna.trial"] == str(s["best_trial"])]
    assert best_child[0].data.params["model.rnn.cell"] == s["best_params"]["model.rnn.cell"]
    assert not client.search_registered_models("name='hapt-tiny-tune'")  # trials: no registry

    # the best config: the trial's values, absolute paths, trainable by `cnnlstm train`
    best = load_config(s["best_config"])
    assert best.model.rnn.cell == s["best_params"]["model.rnn.cell"]
    assert best.lake_uri == str(hapt_lake)
    assert best.window.stride in (64, 32)
    r = CliRunner().invoke(
        app,
        [
            "train",
            "--config",
            s["best_config"],
            "--out",
            str(tmp_path / "best"),
            "--set",
            "train.epochs=1",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["task"] == "classify"


def test_space_helpers():
    study = optuna.create_study()
    values = suggest(study.ask(), SPACE)
    assert values["model.conv.channels"] in ([8], [8, 8])
    raw = apply_values({"window": {"size": 64, "stride": 64}}, values)
    assert raw["window"]["stride"] == (64 if values["window.overlap"] == 0.0 else 32)
    assert raw["model"]["rnn"]["cell"] == values["model.rnn.cell"]
    assert "model.rnn.num_layers" in load_space(None)


def test_bad_space_is_a_config_error(tmp_path):
    p = tmp_path / "space.yaml"
    p.write_text("train.lr: {type: float, low: 1, high: 0}\n")
    with pytest.raises(ConfigError, match="low <= high"):
        load_space(p)
    with pytest.raises(ConfigError, match="not found"):
        load_space(tmp_path / "missing.yaml")


def test_tune_refuses_a_config_without_validation_data():
    """configs/hapt.yaml trains on all training users (no validation): nothing to choose on."""
    r = CliRunner().invoke(app, ["tune", "-c", str(ROOT / "configs" / "hapt.yaml"), "-n", "1"])
    assert r.exit_code == 2, r.output
    assert "window.split.val_fraction" in r.output and "val_folds" in r.output


def _sine_lab(n_ent=8, seed=0):
    rng = np.random.default_rng(seed)
    sigs, labs = {}, {}
    for i in range(n_ent):
        cls = rng.integers(0, 2, 12)
        lab = np.repeat(cls, 48)
        f = np.where(lab == 0, 0.05, 0.2)
        sigs[f"e{i}"] = np.sin(2 * np.pi * np.cumsum(f))[:, None] + 0.2 * rng.normal(
            size=(len(lab), 1)
        )
        labs[f"e{i}"] = lab
    return make_readings(sigs, labels=labs)


def test_tune_with_folds_chooses_the_best_validation_trial(tmp_path):
    """Two trials whose validation figures are known apart (a learning rate too small to learn
    anything in 8 epochs, and a working one), each trained on 2 folds: the study picks the one
    with the higher mean validation macro-F1, and the value is that mean over its fold runs."""
    cfg = config_from_dict(
        {
            "data": {
                "name": "folds",
                "entity": {"column": "entity_id"},
                "timestamp": {"column": "timestamp"},
                "channels": [{"name": "c0"}],
                "label": {"column": "label"},
            },
            "lake": {"uri": str(tmp_path / "lake")},
            "window": {
                "size": 32,
                "stride": 16,
                "split": {"method": "entity", "test_fraction": 0.25, "val_folds": 2},
            },
            "model": {"conv": {"channels": [8], "kernel_size": 3}, "rnn": {"hidden_size": 8}},
            "train": {"epochs": 8, "batch_size": 16, "progress": False, "plots": False},
            "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "folds"},
        },
        base_dir=tmp_path,
    )
    space = {"train.lr": {"choices": [1e-7, 1e-2]}}
    s = tune(cfg, n_trials=2, out_dir=tmp_path / "tune", space=space, readings=_sine_lab())
    values = {t["params"]["train.lr"]: t["value"] for t in s["trials"]}
    assert set(values) == {1e-7, 1e-2}  # the small grid is searched exhaustively
    assert s["best_params"]["train.lr"] == 1e-2 and s["best_value"] == max(values.values())
    assert values[1e-2] > values[1e-7] + 0.2
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("folds").experiment_id])
    for t in s["trials"]:
        folds = [r for r in runs if r.data.tags.get("optuna.trial") == str(t["number"])]
        assert sorted(r.data.tags["fold"] for r in folds) == ["0", "1"]
        got = np.mean([r.data.metrics["final_val_macro_f1"] for r in folds])
        assert got == pytest.approx(t["value"])
        for r in folds:
            assert not [k for k in r.data.metrics if k.startswith("test")]
