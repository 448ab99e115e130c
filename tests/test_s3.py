"""The lake, the MLflow artifact store and the predictions on S3-compatible storage: ingest ->
train -> score against a local S3 endpoint (moto's server on 127.0.0.1), configured by config
and the usual AWS environment variables, with nothing of it on the local disk."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
from mlflow_server import LANDING, TINY_FILES, hapt_config_dict

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")


@pytest.fixture
def s3_endpoint(monkeypatch):
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    for k, v in {
        "AWS_ENDPOINT_URL": url,  # s3fs/botocore and polars' object store
        "MLFLOW_S3_ENDPOINT_URL": url,  # MLflow's artifact client
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3").create_bucket(Bucket="fleet")
    yield url
    server.stop()


def _keys(prefix: str) -> list[str]:
    pages = (
        boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket="fleet", Prefix=prefix)
    )
    return [o["Key"] for p in pages for o in p.get("Contents", [])]


def test_ingest_train_score_on_s3(s3_endpoint, tmp_path: Path) -> None:
    from cnnlstm.config import config_from_dict
    from cnnlstm.ingest import ingest
    from cnnlstm.lake import lake_summary, scan_readings
    from cnnlstm.pipeline import score_lake, train_and_track

    raw = hapt_config_dict(tmp_path / "unused", f"sqlite:///{tmp_path / 'mlflow.db'}")
    raw["lake"] = {"uri": "s3://fleet/lake"}
    raw["tracking"] |= {
        "artifact_location": "s3://fleet/mlartifacts",
        "registered_model": "hapt-s3",
    }
    raw["score"] = {"output": "s3://fleet/predictions"}
    cfg = config_from_dict(raw, base_dir=tmp_path)

    rep = ingest(cfg, [str(LANDING / f"{n}.csv.gz") for n in TINY_FILES])
    assert rep.clean and rep.totals()["committed"] == 4
    rows = rep.totals()["accepted"]
    assert lake_summary("s3://fleet/lake")["rows"] == rows
    assert scan_readings("s3://fleet/lake").select("entity_id").collect().height == rows
    assert len([k for k in _keys("lake/readings/") if k.endswith(".parquet")]) == 4
    assert not _keys("lake/_tmp/")  # no temp object left behind
    assert not (tmp_path / "unused").exists()
    # the same content again adds nothing
    assert ingest(cfg, [str(LANDING / f"{TINY_FILES[0]}.csv.gz")]).totals()["skipped"] == 1

    t = train_and_track(cfg, tmp_path / "run")
    assert t["registered_model"]["version"] == "1" and t["registered_model"]["champion"]
    arts = _keys("mlartifacts/")
    assert any(k.endswith("model.safetensors") for k in arts), arts[:10]
    assert any(k.endswith("config/config.yaml") for k in arts)

    sc = score_lake(cfg)
    assert sc["model_version"] == "1" and sc["rows_written"] > 0 and sc["files_scored"] == 4
    assert [k for k in _keys("predictions/") if k.endswith(".parquet")]
    assert score_lake(cfg)["rows_written"] == 0  # idempotent on S3 too
