"""Registry and batch scoring against a real MLflow server: champion/challenger by the configured
metric, promotion by hand, scoring the held-back HAPT recording with models:/NAME@champion
(accuracy equal to the run's test accuracy; a re-run writes 0 rows; a new version writes its own
set), and the mistakes that must fail before any data is read."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml
from cli_app import app
from mlflow import MlflowClient
from mlflow_server import (
    Trained,
    tiny_config,
    train_tracked,
)
from typer.testing import CliRunner

from cnnlstm.registry import CHAMPION, list_versions, promote
from cnnlstm.score import ScoreError, read_predictions, score
from schemas.predictions import validate_class_predictions

pytest_plugins = ["mlflow_server"]  # session fixtures shared by all MLflow tests


def _cli(*args: str):
    r = CliRunner().invoke(app, list(args))
    return r


def _write_cfg(cfg, path) -> str:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return str(path)


def _parquet_files(out) -> list:
    return sorted(p for p in out.rglob("*.parquet") if "_tmp" not in p.parts)


@pytest.fixture(scope="module")
def v2(trained_v1, tmp_path_factory) -> Trained:
    """A second version (another seed, one epoch), same validation windows as v1: registered
    as challenger; champion only if it beats v1 on validation macro-F1."""
    d = tmp_path_factory.mktemp("v2")
    cfg = tiny_config(
        d, trained_v1.cfg.lake_uri, trained_v1.cfg.tracking.uri, train={"epochs": 1, "seed": 7}
    )
    return train_tracked(cfg, d / "run")


def test_score_champion_matches_run_accuracy_and_is_idempotent(trained_v1, mlflow_server, tmp_path):
    client = MlflowClient(mlflow_server.uri)
    out = tmp_path / "pred"
    cfg_path = _write_cfg(trained_v1.cfg, tmp_path / "c.yaml")
    r = _cli(
        "score",
        "-c",
        cfg_path,
        "--model",
        "models:/hapt-tiny/1",
        "--out",
        str(out),
        "--where",
        "split=test",
        "--json",
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["model_name"] == "hapt-tiny" and rep["model_version"] == "1"
    n_test = trained_v1.metrics["n_windows"]["test"]
    assert rep["rows_written"] == n_test and rep["files_scored"] == 4
    pred = read_predictions(str(out))
    assert pred.height == n_test
    validate_class_predictions(pred)
    assert set(pred["model_name"]) == {"hapt-tiny"} and set(pred["model_version"]) == {"1"}
    assert set(pred["entity_id"]) == {"exp03_user02"}
    # same windows, same numbers: accuracy from the predictions file == the run's test accuracy
    acc = (pred["predicted"] == pred["label"]).mean()
    logged = client.get_run(trained_v1.run_id).data.metrics["test_accuracy"]
    assert acc == pytest.approx(logged, abs=1e-12) and rep["accuracy"] == pytest.approx(logged)
    # partitioned by date, file by file in the Parquet layout users read
    files = _parquet_files(out)
    assert files and all(p.parent.name.startswith("date=") for p in files)
    assert pl.read_parquet(files).height == n_test

    again = score(trained_v1.cfg, "models:/hapt-tiny/1", str(out), where={"split": "test"})
    assert again.rows_written == 0 and again.files_already_scored == 4
    assert _parquet_files(out) == files


def test_registry_champion_challenger_and_promotion(trained_v1, v2, mlflow_server, tmp_path):
    client = MlflowClient(mlflow_server.uri)
    uri = mlflow_server.uri
    v1v, v2v = trained_v1.registration["version"], v2.registration["version"]
    assert int(v2v) == int(v1v) + 1
    mv2 = client.get_model_version("hapt-tiny", v2v)
    assert "challenger" in mv2.aliases
    assert "challenger" not in client.get_model_version("hapt-tiny", v1v).aliases
    a1 = client.get_run(trained_v1.run_id).data.metrics["val_macro_f1"]
    a2 = client.get_run(v2.run_id).data.metrics["val_macro_f1"]
    champ = client.get_model_version_by_alias("hapt-tiny", CHAMPION).version
    assert champ == (v2v if a2 > a1 else v1v)
    # the comparison is recorded on the version and on the run: same validation windows
    assert mv2.tags["cnnlstm.compared_to"] == v1v
    assert mv2.tags["cnnlstm.metric"] == "macro_f1"
    assert mv2.tags["cnnlstm.compared_on"] == "the same validation windows"
    assert (
        mv2.tags["cnnlstm.eval_fingerprint"]
        == client.get_model_version("hapt-tiny", v1v).tags["cnnlstm.eval_fingerprint"]
    )
    assert float(mv2.tags["cnnlstm.champion_value"]) == pytest.approx(a1)
    assert float(mv2.tags["cnnlstm.metric_value"]) == pytest.approx(a2)
    run_tags = client.get_run(v2.run_id).data.tags
    assert run_tags["registry.decision"] == mv2.tags["cnnlstm.decision"]
    assert run_tags["registry.version"] == v2v

    # promote by hand (CLI), both ways, and list versions with aliases
    cfg_path = _write_cfg(v2.cfg, tmp_path / "c.yaml")
    other = v1v if champ == v2v else v2v
    r = _cli("promote", "-c", cfg_path, other)
    assert r.exit_code == 0, r.output
    assert client.get_model_version_by_alias("hapt-tiny", CHAMPION).version == other
    rows = {r["version"]: r for r in list_versions("hapt-tiny", uri)}
    assert CHAMPION in rows[other]["aliases"] and "challenger" in rows[v2v]["aliases"]
    r = _cli("models", "-c", cfg_path, "--json")
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)["versions"]
    assert {v["version"] for v in listed} >= {v1v, v2v}
    assert _cli("promote", "-c", cfg_path, "999").exit_code == 2
    assert _cli("models", "-c", cfg_path, "--name", "no-such-model").exit_code == 2
    promote("hapt-tiny", v2v, CHAMPION, uri)  # leave v2 as champion for the next test


def test_new_version_writes_its_own_set(trained_v1, v2, mlflow_server, tmp_path):
    out = tmp_path / "pred"
    cfg = trained_v1.cfg
    r1 = score(cfg, "models:/hapt-tiny/1", str(out), where={"split": "test"})
    r2 = score(cfg, None, str(out), where={"split": "test"})  # default: @champion (= v2)
    assert r2.model_version == v2.registration["version"] and r2.requested_uri.endswith("@champion")
    assert r1.rows_written == r2.rows_written > 0
    both = read_predictions(str(out))
    assert both.group_by("model_version").len().sort("model_version")["len"].to_list() == [
        r1.rows_written,
        r2.rows_written,
    ]
    acc2 = both.filter(pl.col("model_version") == r2.model_version)
    acc2 = (acc2["predicted"] == acc2["label"]).mean()
    assert acc2 == pytest.approx(v2.metrics["test"]["accuracy"], abs=1e-12)
    # no filter: a separate watermark; every recording scored once more by this version
    r3 = score(cfg, None, str(out))
    assert r3.files_scored == 4 and r3.rows_written > r2.rows_written
    assert score(cfg, None, str(out)).rows_written == 0


def test_mistakes_fail_before_reading_data(trained_v1, mlflow_server, tmp_path):
    import mlflow

    client = MlflowClient(mlflow_server.uri)
    cfg = trained_v1.cfg
    out = tmp_path / "pred"
    cfg_path = _write_cfg(cfg, tmp_path / "c.yaml")

    with pytest.raises(ScoreError, match="no alias 'nope'"):
        score(cfg, "models:/hapt-tiny@nope", str(out))
    r = _cli("score", "-c", cfg_path, "--model", "models:/hapt-tiny@nope", "--out", str(out))
    assert r.exit_code == 2 and "no alias" in r.output

    # a deleted version
    from cnnlstm.mlflow_tracker import use_tracking

    use_tracking(uri=mlflow_server.uri)
    src = client.get_model_version("hapt-tiny", trained_v1.registration["version"]).source
    mv = mlflow.register_model(src, "hapt-tiny")
    client.delete_model_version("hapt-tiny", mv.version)
    with pytest.raises(ScoreError, match=f"no version {mv.version}"):
        score(cfg, f"models:/hapt-tiny/{mv.version}", str(out))

    # a channel mismatch: the lake (per the config) lacks the model's gyro_z
    raw = cfg.model_dump(mode="json")
    raw["data"]["channels"] = [c for c in raw["data"]["channels"] if c["name"] != "gyro_z"]
    from cnnlstm.config import config_from_dict

    bad = config_from_dict(raw, base_dir=cfg.base_dir)
    with pytest.raises(ScoreError, match="channel mismatch.*gyro_z"):
        score(bad, "models:/hapt-tiny/1", str(out))
    # a --where column the lake does not have
    with pytest.raises(ScoreError, match="lack columns"):
        score(cfg, "models:/hapt-tiny/1", str(out), where={"site": "a"})
    assert _parquet_files(out) == []
    assert not (out / "_watermark").exists()


def test_champion_is_reevaluated_on_other_validation_data(trained_v1, v2, mlflow_server, tmp_path):
    """v3 validates on another recording (another split seed): the registry loads the champion
    and evaluates it on v3's validation readings before comparing."""
    d = tmp_path / "v3"
    cfg = tiny_config(
        d,
        trained_v1.cfg.lake_uri,
        trained_v1.cfg.tracking.uri,
        window=trained_v1.cfg.window.model_dump()
        | {"split": {"method": "column", "val_fraction": 0.34, "seed": 1}},
        train={"epochs": 1},
    )
    v3 = train_tracked(cfg, d / "run")
    assert (
        v3.metrics["evaluation"]["spans"].keys() != trained_v1.metrics["evaluation"]["spans"].keys()
    )
    reg = v3.registration
    assert reg["compared_on"] == "the champion re-evaluated on this run's validation readings"
    assert 0.0 <= reg["champion_value"] <= 1.0
    mv = MlflowClient(mlflow_server.uri).get_model_version("hapt-tiny", reg["version"])
    assert mv.tags["cnnlstm.compared_on"] == reg["compared_on"]
