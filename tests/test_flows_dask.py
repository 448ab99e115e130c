"""The ingest flow fanned out on prefect-dask's DaskTaskRunner (a LocalCluster of 2 worker
processes), selected by the config's ``runner`` section: the same lake as the thread runner,
with the file tasks run in other processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from conftest import base_config_dict, lake_frame, write_source
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.testing.utilities import prefect_test_harness

import flows.ingest as fi
from cnnlstm.config import load_config
from flows.runners import task_runner_for

pytest.importorskip("prefect_dask")

N_FILES = 6


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _config_file(tmp: Path, name: str, runner: dict | None) -> Path:
    raw = base_config_dict(tmp / name)
    raw["data"]["landing"] = str(tmp / "landing")
    if runner is not None:
        raw["runner"] = runner
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _land(tmp: Path) -> None:
    for k in range(N_FILES):
        rows = "".join(
            f"d{k},2024-01-0{1 + k % 3}T00:00:{i:02d}Z,{i + k},{i * 2.5},{k % 2}\n"
            for i in range(40)
        )
        bad = f"d{k},2024-01-01T00:01:00Z,{500 + k},0,1\n"  # ch_a out of range: quarantined
        write_source(
            tmp / "landing" / f"part-{k}.csv", "device,time,ch_a,ch_b,label\n" + rows + bad
        )


def test_task_runner_for_config(tmp_path: Path) -> None:
    from prefect_dask import DaskTaskRunner

    assert isinstance(task_runner_for(_config_file(tmp_path, "t", None)), ThreadPoolTaskRunner)
    local = task_runner_for(_config_file(tmp_path, "d", {"kind": "dask", "n_workers": 3}))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs["n_workers"] == 3 and local.cluster_kwargs["processes"]
    remote = task_runner_for(
        _config_file(tmp_path, "r", {"kind": "dask", "address": "tcp://10.0.0.1:8786"})
    )
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.1:8786"


@pytest.mark.timeout(180)
def test_ingest_flow_on_dask_matches_threads(harness, tmp_path: Path) -> None:
    _land(tmp_path)
    threads_cfg = _config_file(tmp_path, "threads", None)
    dask_cfg = _config_file(
        tmp_path, "dask", {"kind": "dask", "n_workers": 2, "threads_per_worker": 1}
    )

    by_threads = fi.ingest_flow(str(threads_cfg))
    by_dask = fi.ingest_flow(str(dask_cfg))

    for out in (by_threads, by_dask):
        t = out["totals"]
        assert (t["committed"], t["rejected"]) == (N_FILES, 0)
        assert (t["accepted"], t["quarantined"]) == (40 * N_FILES, N_FILES)
    me = os.getpid()
    thread_pids = {int(r["worker"].rsplit(":", 1)[1]) for r in by_threads["files"]}
    dask_pids = {int(r["worker"].rsplit(":", 1)[1]) for r in by_dask["files"]}
    assert thread_pids == {me}
    assert me not in dask_pids and 1 <= len(dask_pids) <= 2  # the LocalCluster's 2 processes

    a, b = lake_frame(load_config(threads_cfg)), lake_frame(load_config(dask_cfg))
    assert a.height == 40 * N_FILES
    assert a.equals(b)

    again = fi.ingest_flow(str(dask_cfg))  # idempotent on Dask too
    assert again["totals"]["accepted"] == 0 and again["totals"]["skipped"] == N_FILES
