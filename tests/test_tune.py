"""A small Optuna study on the tiny HAPT lake, tracked on a real MLflow server: one parent run
with one child run per trial, pruning wired to the validation curve, and a best config that
`cnnlstm train` accepts as is."""

from __future__ import annotations

import json

import optuna
import pytest
from cli_app import app
from mlflow import MlflowClient
from mlflow_server import tiny_config
from typer.testing import CliRunner

from cnnlstm.config import ConfigError, load_config
from cnnlstm.tune import apply_values, load_space, suggest, tune

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
    assert 0.0 <= s["best_value"] <= 1.0 and s["metric"] == "val_macro_f1"

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
    assert json.loads(r.stdout)["task"] == "classification"


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
