"""MLflow tracking against a real server: what a training run records, the pyfunc model through
load_model / `mlflow models predict` / `mlflow models serve` (REST), a server that is down, and
runs that end FAILED or KILLED (never RUNNING). Also the default local sqlite store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient
from mlflow_server import (
    ROOT,
    free_port,
    mlflow_bin,
    tiny_config,
    wait_http,
)

from cnnlstm.lake import scan_readings
from cnnlstm.mlflow_tracker import MlflowTracker, TrackingUnavailableError, lake_lineage

pytest_plugins = ["mlflow_server"]  # session fixtures shared by all MLflow tests


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def test_training_run_records_everything(trained_v1, mlflow_server):
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(trained_v1.run_id)
    assert run.info.status == "FINISHED"
    p, m, tags = run.data.params, run.data.metrics, run.data.tags
    # flattened resolved config (whole config, incl. data + tracking sections)
    assert p["model.rnn.hidden_size"] == "16" and p["window.size"] == "64"
    assert p["data.channels"].startswith("[{") and p["tracking.registered_model"] == "hapt-tiny"
    # per-epoch curves with their steps, and the final test metrics
    hist = client.get_metric_history(trained_v1.run_id, "train_loss")
    assert sorted(h.step for h in hist) == [0, 1]
    assert [h.step for h in client.get_metric_history(trained_v1.run_id, "val_macro_f1")] == [0, 1]
    assert m["test_accuracy"] == pytest.approx(trained_v1.metrics["test"]["accuracy"])
    # tags: device, versions, git commit
    assert tags["device"] in ("cpu", "cuda") and tags["versions.torch"]
    assert len(tags["git.commit"]) == 40 or tags["git.commit"] == "unknown"
    assert tags["task"] == "classify"
    # artifacts: config, plots, preprocessing, lineage, metrics
    arts = _artifacts(client, trained_v1.run_id)
    for a in (
        "config/config.yaml",
        "preprocessing/normalizer.json",
        "preprocessing/label_map.json",
        "preprocessing/window.json",
        "lineage/lake_files.json",
        "metrics.json",
        "plots/curves.png",
        "plots/confusion_test.png",
    ):
        assert a in arts, (a, sorted(arts))
    cfg_yaml = client.download_artifacts(trained_v1.run_id, "config/config.yaml")
    assert "hapt-tiny" in Path(cfg_yaml).read_text()
    norm = json.loads(
        Path(
            client.download_artifacts(trained_v1.run_id, "preprocessing/normalizer.json")
        ).read_text()
    )
    assert len(norm["center"]) == 6 and norm["channels"][0] == "acc_x"
    # dataset lineage: the lake files and their content fingerprint
    lin = lake_lineage(trained_v1.cfg.lake_uri)
    assert tags["lake.fingerprint"] == lin["fingerprint"] and tags["lake.files"] == "4"
    (ds_in,) = run.inputs.dataset_inputs
    assert ds_in.dataset.name == "hapt" and ds_in.dataset.digest == lin["fingerprint"][:32]
    assert {t.key: t.value for t in ds_in.tags}["mlflow.data.context"] == "training"
    # the registered version with its aliases and the recorded comparison
    mv = client.get_model_version("hapt-tiny", trained_v1.registration["version"])
    assert mv.run_id == trained_v1.run_id
    assert {"challenger", "champion"} <= set(mv.aliases)
    assert mv.tags["cnnlstm.metric"] == "macro_f1"  # on validation, never test
    assert mv.tags["cnnlstm.decision"].startswith("promoted")
    assert tags["registry.version"] == mv.version


def _test_readings(cfg) -> pl.DataFrame:
    return scan_readings(cfg.lake_uri).filter(pl.col("split") == "test").collect()


def test_pyfunc_takes_raw_readings_and_reproduces_test_accuracy(
    trained_v1, mlflow_server, monkeypatch
):
    import mlflow.pyfunc

    from cnnlstm.mlflow_tracker import use_tracking

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # nothing unpickled
    use_tracking(uri=mlflow_server.uri)
    model = mlflow.pyfunc.load_model("models:/hapt-tiny@champion")
    sig = model.metadata.signature
    assert [c.name for c in sig.inputs.inputs][:3] == ["entity_id", "timestamp", "acc_x"]
    assert "window_start" in sig.outputs.input_names()
    raw = _test_readings(trained_v1.cfg)
    pdf = raw.with_columns(pl.col("timestamp").dt.replace_time_zone(None)).to_pandas()
    out = model.predict(pdf)
    assert len(out) == trained_v1.metrics["n_windows"]["test"]
    probs = out[[c for c in out.columns if c.startswith("prob_")]].to_numpy()
    assert probs.shape[1] == len(trained_v1.metrics["classes"])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    acc = float((out["predicted"] == out["label"]).mean())
    assert acc == pytest.approx(trained_v1.metrics["test"]["accuracy"], abs=1e-12)
    # without labels: same windows, same predictions, label column empty
    out2 = model.predict(pdf.drop(columns=["label"]))
    assert out2["predicted"].tolist() == out["predicted"].tolist()
    assert out2["label"].isna().all()


def test_mlflow_models_predict_and_serve_rest(trained_v1, mlflow_server, tmp_path):
    import pandas as pd
    import requests

    # `mlflow models serve` execs `uvicorn` by name: the venv's bin must be on PATH
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = os.environ | {
        "MLFLOW_TRACKING_URI": mlflow_server.uri,
        "PATH": path,
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    raw = _test_readings(trained_v1.cfg).head(64 * 3)
    pdf = (
        raw.select("entity_id", "timestamp", *trained_v1.cfg.data.channel_names)
        .with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S.%6f"))
        .to_pandas()
    )
    payload = {"dataframe_split": json.loads(pdf.to_json(orient="split", index=False))}
    inp = tmp_path / "input.json"
    inp.write_text(json.dumps(payload))

    res = subprocess.run(
        [
            mlflow_bin(),
            "models",
            "predict",
            "-m",
            "models:/hapt-tiny@champion",
            "-i",
            str(inp),
            "-t",
            "json",
            "-o",
            str(tmp_path / "out.json"),
            "--env-manager",
            "local",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    preds = json.loads((tmp_path / "out.json").read_text())["predictions"]
    assert len(preds) == 3 and preds[0]["entity_id"] == "exp03_user02"

    port = free_port()
    proc = subprocess.Popen(
        [
            mlflow_bin(),
            "models",
            "serve",
            "-m",
            "models:/hapt-tiny@champion",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--env-manager",
            "local",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "wb"),  # noqa: SIM115
        start_new_session=True,
    )
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/ping", proc, timeout=90)
        except RuntimeError as e:
            raise AssertionError((tmp_path / "serve.log").read_text()[-3000:]) from e
        r = requests.post(f"http://127.0.0.1:{port}/invocations", json=payload, timeout=60)
        assert r.status_code == 200, r.text
        rest = pd.DataFrame(r.json()["predictions"])
        assert rest["predicted"].tolist() == [p["predicted"] for p in preds]
        assert {"window_start", "window_end", "probability"} <= set(rest.columns)
        bad = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"dataframe_split": {"columns": ["entity_id"], "data": [["x"]]}},
            timeout=60,
        )
        assert bad.status_code >= 400
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def test_server_down_is_a_clear_error_at_start(hapt_lake, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = tiny_config(tmp_path, hapt_lake, dead)
    t0 = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match="not reachable"):
        MlflowTracker(cfg).start_run()
    assert time.monotonic() - t0 < 15

    from cli_app import app
    from typer.testing import CliRunner

    cfg_path = tmp_path / "c.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    r = CliRunner().invoke(app, ["score", "-c", str(cfg_path)])
    assert r.exit_code == 2 and "not reachable" in r.output


def test_exception_ends_run_failed(hapt_lake, mlflow_server, tmp_path):
    from cnnlstm.train import train_from_config

    cfg = tiny_config(tmp_path, hapt_lake, mlflow_server.uri)

    def boom(metrics, step):
        raise RuntimeError("disk full")

    tracker = MlflowTracker(cfg, on_metrics=boom)
    with pytest.raises(RuntimeError, match="disk full"):
        train_from_config(cfg, tmp_path / "run", tracker=tracker)
    assert MlflowClient(mlflow_server.uri).get_run(tracker.run_id).info.status == "FAILED"


_KILLED_CHILD = textwrap.dedent("""
    import sys
    from cnnlstm.config import load_config
    from cnnlstm.mlflow_tracker import MlflowTracker
    from cnnlstm.train import train_from_config

    class Announce(MlflowTracker):
        def log_metrics(self, metrics, step=None):
            super().log_metrics(metrics, step)
            if step == 0:
                print(self.run_id, flush=True)

    cfg = load_config(sys.argv[1])
    train_from_config(cfg, sys.argv[2], tracker=Announce(cfg))
""")


def test_sigterm_ends_run_killed(hapt_lake, mlflow_server, tmp_path):
    import yaml

    cfg = tiny_config(tmp_path, hapt_lake, mlflow_server.uri, train={"epochs": 500})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, str(path), str(tmp_path / "o")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=os.environ | {"MLFLOW_TRACKING_URI": ""},
    )
    try:
        run_id = proc.stdout.readline().strip()
        assert run_id, proc.stderr.read()[-3000:]
        client = MlflowClient(mlflow_server.uri)
        assert client.get_run(run_id).info.status == "RUNNING"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 128 + signal.SIGTERM
    assert client.get_run(run_id).info.status == "KILLED"
    assert not client.search_registered_models(f"name='{cfg.tracking.registered_model}x'")


def test_default_store_is_local_sqlite_with_local_artifacts(tmp_path, hapt_lake, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    proj = tmp_path / "proj"
    (proj / "configs").mkdir(parents=True)
    (proj / "pyproject.toml").write_text("[project]\nname='x'\n")
    cfg = tiny_config(proj / "configs", hapt_lake)
    tracker = MlflowTracker(cfg)
    assert tracker.uri == f"sqlite:///{proj / 'mlflow.db'}"
    tracker.start_run(name="local")
    tracker.log_metrics({"train_loss": 1.0}, step=0)
    tracker.end_run("FINISHED")
    client = MlflowClient(tracker.uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["lake.files"] == "4"
    assert run.info.artifact_uri.startswith((proj / "mlartifacts").as_uri())
    assert (proj / "mlflow.db").is_file()
    assert list((proj / "mlartifacts").rglob("config.yaml"))
