"""The train, score and pipeline flows end to end on a tiny HAPT lake, under a real (throwaway)
Prefect API, with MLflow on a SQLite file (the embedded default)."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow_server import LANDING, TINY_FILES, hapt_config_dict
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline import pipeline_flow
from flows.train import train_flow


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _project(tmp: Path, **sections) -> Path:
    """A config file with its landing folder (4 HAPT recordings), lake and MLflow store in tmp."""
    landing = tmp / "landing"
    landing.mkdir(exist_ok=True)
    for name in TINY_FILES:
        shutil.copy(LANDING / f"{name}.csv.gz", landing)
    raw = hapt_config_dict(tmp / "lake", f"sqlite:///{tmp / 'mlflow.db'}", **sections)
    raw["data"]["landing"] = str(landing)
    raw["tracking"]["registered_model"] = "hapt-flow"
    raw["score"] = {"output": str(tmp / "predictions")}
    p = tmp / "hapt-tiny.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_pipeline_end_to_end_then_rerun_resumes(harness, tmp_path: Path) -> None:
    cfg = _project(tmp_path)
    out = tmp_path / "run"
    first = pipeline_flow(str(cfg), out_dir=str(out))

    assert first["ingest"]["committed"] == 4 and first["ingest"]["quarantined"] == 0
    rows = first["ingest"]["accepted"]
    assert rows > 50_000
    train = first["train"]
    assert train["registered_model"]["version"] == "1"
    assert train["registered_model"]["champion"] is True
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(train["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    score = first["score"]
    assert score["model_version"] == "1" and score["rows_written"] > 0
    assert score["files_scored"] == 4

    again = pipeline_flow(str(cfg), out_dir=str(out))
    assert again["ingest"]["accepted"] == 0 and again["ingest"]["skipped"] == 4
    # training resumed from the finished checkpoint: same epochs, no new epoch run
    assert again["train"]["epochs_run"] == train["epochs_run"]
    assert again["train"]["best_epoch"] == train["best_epoch"]
    assert again["train"]["test"]["accuracy"] == pytest.approx(train["test"]["accuracy"])
    # nothing new to learn from: no new version (up to date, or the same weights as v1);
    # scoring with the champion never duplicates rows
    assert again["train"]["registered_model"]["version"] == "1"
    assert again["score"]["model_version"] == "1" and again["score"]["rows_written"] == 0


def test_diverging_training_fails_the_flow_and_the_mlflow_run(harness, tmp_path: Path) -> None:
    cfg = _project(tmp_path, train={"lr": 1e30, "grad_clip": None, "epochs": 2})
    from cnnlstm.config import load_config
    from cnnlstm.ingest import ingest

    c = load_config(cfg)
    ingest(c, [c.data.landing])
    state = train_flow(str(cfg), out_dir=str(tmp_path / "run"), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="(?i)non-finite|diverg|nan|inf"):
        state.result()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tests")
    runs = client.search_runs([exp.experiment_id])
    assert runs and all(r.info.status == "FAILED" for r in runs)
    assert not (tmp_path / "run" / "model.safetensors").exists()
