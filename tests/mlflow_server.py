"""Fixtures for the MLflow tests (imported explicitly; not a conftest).

- ``mlflow_server`` (session): a real ``mlflow server`` on 127.0.0.1 at a free port, SQLite
  backend and local artifacts in a temp folder; stopped at the end of the session.
- ``hapt_lake`` (session): a tiny lake built by ingesting four bundled HAPT recordings (three of
  the ``train`` split, one of ``test``).
- ``tiny_config``: the HAPT config at debug size (short windows, a small model, 2 epochs),
  tracking into a given URI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
LANDING = ROOT / "data" / "hapt" / "landing"
TINY_FILES = ["exp01_user01", "exp02_user01", "exp05_user03", "exp03_user02"]  # last: test split
TINY_MODEL = {
    "conv": {"channels": [8, 8], "kernel_size": 3},
    "rnn": {"hidden_size": 16},
    "head": {"dropout": 0.0},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_bin() -> str:
    exe = Path(sys.executable).with_name("mlflow")
    return str(exe) if exe.exists() else (shutil.which("mlflow") or "mlflow")


@dataclass
class Server:
    uri: str
    root: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 90.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def start_server(root: Path) -> Server:
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [
            mlflow_bin(),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
        start_new_session=True,
        env=os.environ | {"MLFLOW_TRACKING_URI": ""},
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(uri + "/health", proc)
    except BaseException:
        Server(uri, root, proc).stop()
        raise RuntimeError(
            "mlflow server did not start:\n"
            + (root / "server.log").read_text(errors="replace")[-3000:]
        ) from None
    return Server(uri, root, proc)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    # runs go where each test's config says, not where the caller's environment points
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(k, None)
    server = start_server(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


def hapt_config_dict(lake: Path, tracking_uri: str | None = None, **sections: Any) -> dict:
    raw = yaml.safe_load((ROOT / "configs" / "hapt.yaml").read_text())
    raw["data"].pop("landing", None)
    raw.pop("score", None)  # the tests choose their own scoring selection and output
    raw["lake"] = {"uri": str(lake)}
    raw["window"] = {
        "size": 64,
        "stride": 64,
        "label": "majority",
        "split": {"method": "column", "val_fraction": 0.34, "seed": 0},
    }
    raw["model"] = TINY_MODEL
    raw["train"] = {
        "epochs": 2,
        "batch_size": 64,
        "lr": 5e-3,
        "progress": False,
        "plots": False,
        "patience": None,
        "num_threads": 1,
    }
    raw["tracking"] = {"experiment": "tests", "registered_model": "hapt-tiny"}
    if tracking_uri:
        raw["tracking"]["uri"] = tracking_uri
    for k, v in sections.items():
        raw[k] = (raw.get(k) or {}) | v if isinstance(v, dict) else v
    return raw


def tiny_config(base_dir: Path, lake: Path, tracking_uri: str | None = None, **sections: Any):
    from cnnlstm.config import config_from_dict

    return config_from_dict(hapt_config_dict(lake, tracking_uri, **sections), base_dir=base_dir)


@pytest.fixture(scope="session")
def hapt_lake(tmp_path_factory) -> Path:
    """A lake holding 4 HAPT recordings (about 75k rows)."""
    from cnnlstm.ingest import ingest

    d = tmp_path_factory.mktemp("hapt-lake")
    cfg = tiny_config(d, d / "lake")
    rep = ingest(cfg, [str(LANDING / f"{n}.csv.gz") for n in TINY_FILES])
    assert rep.clean, rep.to_dict()
    return d / "lake"


@dataclass
class Trained:
    cfg: Any
    run_id: str
    metrics: dict[str, Any]
    registration: dict[str, Any]
    model_uri: str
    out: Path


def train_tracked(cfg, out: Path):
    """The pipeline's training step: train, log the model, register, promote."""
    from cnnlstm.pipeline import train_and_track

    m = train_and_track(cfg, out)
    return Trained(cfg, m["mlflow_run_id"], m, m.get("registered_model"), m["model_uri"], out)


@pytest.fixture(scope="session")
def trained_v1(mlflow_server, hapt_lake, tmp_path_factory) -> Trained:
    """Version 1 of 'hapt-tiny': trained on the tiny lake, tracked on the server, with plots."""
    d = tmp_path_factory.mktemp("v1")
    cfg = tiny_config(
        d, hapt_lake, mlflow_server.uri, train={"plots": True, "embedding_points": 40}
    )
    return train_tracked(cfg, d / "run")
