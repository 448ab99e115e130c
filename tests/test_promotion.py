"""Honest promotion, against a real MLflow registry (SQLite store): the champion is chosen on
validation metrics only (test metrics are logged and ignored), and two versions evaluated on
different validation data are compared only after re-evaluating the champion."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from conftest_train import make_readings
from mlflow import MlflowClient

from cnnlstm.config import config_from_dict
from cnnlstm.mlflow_tracker import log_model, use_tracking
from cnnlstm.registry import CHAMPION, Evaluation, register


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from cnnlstm.train import train_from_config

    d = tmp_path_factory.mktemp("weights")
    rng = np.random.default_rng(0)
    sigs = {f"e{i}": rng.normal(size=(200, 1)) for i in range(4)}
    labs = {f"e{i}": np.repeat([0, 1], 100) for i in range(4)}
    cfg = config_from_dict(
        {
            "data": {
                "entity": {"column": "entity_id"},
                "timestamp": {"column": "timestamp"},
                "channels": [{"name": "c0"}],
                "label": {"column": "label"},
            },
            "lake": {"uri": str(d / "lake")},
            "window": {"size": 16, "stride": 16, "split": {"method": "entity"}},
            "model": {"conv": {"channels": [4], "kernel_size": 3}, "rnn": {"hidden_size": 4}},
            "train": {"epochs": 1, "progress": False, "plots": False},
        },
        base_dir=d,
    )
    train_from_config(cfg, d / "run", readings=make_readings(sigs, labels=labs))
    return d / "run" / "model.safetensors"


def test_promotion_uses_validation_only_and_same_data(weights, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    use_tracking(uri=uri)
    mlflow.set_experiment("promotion")
    client = MlflowClient(uri)
    calls = []

    def version(val, test, fp, reevaluate=None):
        with mlflow.start_run() as run:
            mlflow.log_metrics({"val_macro_f1": val, "test_macro_f1": test})
            info = log_model(weights)
            ev = Evaluation("macro_f1", True, val, fp)
            return register("m", info.model_uri, run.info.run_id, ev, reevaluate, uri)

    def champion():
        return str(client.get_model_version_by_alias("m", CHAMPION).version)

    r1 = version(0.70, 0.99, "A")
    assert r1["champion"] and champion() == "1"
    # better on test, worse on validation: not promoted (test never decides)
    r2 = version(0.60, 1.00, "A")
    assert not r2["champion"] and champion() == "1"
    assert "0.6 does not beat champion v1 (0.7)" in r2["decision"]
    # worse on test, better on validation, same validation windows: promoted
    r3 = version(0.80, 0.10, "A")
    assert r3["champion"] and champion() == "3"
    assert r3["compared_on"] == "the same validation windows"
    # validated on other data: no comparison without re-evaluating the champion
    r4 = version(0.95, 0.95, "B")
    assert not r4["champion"] and champion() == "3"
    assert "other validation data" in r4["decision"]

    # with a re-evaluation: the champion's figure on the challenger's data decides
    def reeval(value):
        def f(mv):
            calls.append(str(mv.version))
            return value

        return f

    r5 = version(0.95, 0.0, "B", reeval(0.97))
    assert not r5["champion"] and r5["champion_value"] == 0.97 and calls == ["3"]
    assert "re-evaluated" in r5["compared_on"]
    r6 = version(0.95, 0.0, "B", reeval(0.50))
    assert r6["champion"] and champion() == "6"
    mv6 = client.get_model_version("m", "6")
    assert mv6.tags["cnnlstm.eval_fingerprint"] == "B"
    assert mv6.tags["cnnlstm.champion_value"] == "0.5"
    assert client.get_run(mv6.run_id).data.tags["registry.compared_on"] == r6["compared_on"]
    # no validation metric at all: kept as challenger
    with mlflow.start_run() as run:
        info = log_model(weights)
        r7 = register("m", info.model_uri, run.info.run_id, None, None, uri)
    assert not r7["champion"] and "no validation metric" in r7["decision"]
