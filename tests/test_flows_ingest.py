"""The ingest flow under a real (throwaway) Prefect API: mapping over files, retries of
transient I/O errors only, the content-keyed cache, and library logs in the run logs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import base_config_dict, write_source
from prefect.testing.utilities import prefect_test_harness

import cnnlstm.ingest
import flows.ingest as fi
from cnnlstm.lake import lake_summary
from flows.common import is_transient


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _config_file(tmp: Path) -> Path:
    raw = base_config_dict(tmp)
    raw["data"]["landing"] = str(tmp / "landing")
    p = tmp / "tiny.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _land(tmp: Path) -> None:
    good = "device,time,ch_a,ch_b,label\n" + "".join(
        f"d1,2024-01-01T00:00:0{i}Z,{i},{i * 2},1\n" for i in range(5)
    )
    write_source(tmp / "landing" / "good.csv", good)
    write_source(tmp / "landing" / "other.csv", good.replace("d1", "d2"))
    write_source(tmp / "landing" / "empty.csv", "")


def test_is_transient_classifies_errors() -> None:
    from cnnlstm.config import ConfigError

    assert is_transient(OSError("disk"))
    assert is_transient(ConnectionError("s3"))
    assert not is_transient(ConfigError("bad key"))
    assert not is_transient(ValueError("bad value"))
    assert not is_transient(None)


def test_ingest_flow_maps_files_and_rerun_adds_nothing(
    harness, tmp_path: Path, monkeypatch
) -> None:
    cfg_file = _config_file(tmp_path)
    _land(tmp_path)
    first = fi.ingest_flow(str(cfg_file))
    t = first["totals"]
    assert (t["committed"], t["rejected"], t["accepted"]) == (2, 1, 10)
    rejected = [f for f in first["files"] if f["outcome"] == "rejected"]
    assert rejected[0]["name"] == "empty.csv" and "empty file" in rejected[0]["reason"]

    again = fi.ingest_flow(str(cfg_file))  # second run: the ledger skips both files
    assert again["totals"]["accepted"] == 0 and again["totals"]["skipped"] == 2

    real = fi.ingest_file

    def must_not_run(cfg, lake, path):  # a rejected file is never cached: it runs again
        if not path.endswith("empty.csv"):
            raise AssertionError(f"{path} was read although its cache key is unchanged")
        return real(cfg, lake, path)

    # third run: the two committed files are served from the cache without running the task
    monkeypatch.setattr(fi, "ingest_file", must_not_run)
    again = fi.ingest_flow(str(cfg_file))
    assert again["totals"]["skipped"] == 2 and again["totals"]["rejected"] == 1
    assert lake_summary(str(tmp_path / "lake"))["rows"] == 10


def test_transient_error_is_retried(harness, tmp_path: Path, monkeypatch) -> None:
    cfg_file = _config_file(tmp_path)
    _land(tmp_path)
    (tmp_path / "landing" / "empty.csv").unlink()
    real = cnnlstm.ingest.ingest_file
    calls: list[str] = []

    def flaky(cfg, lake, path):
        calls.append(path)
        if calls.count(path) == 1:  # every file fails once, as a flaky share would
            raise OSError(f"injected transient error reading {path}")
        return real(cfg, lake, path)

    monkeypatch.setattr(fi, "ingest_file", flaky)
    out = fi.ingest_flow(str(cfg_file))
    assert out["totals"]["committed"] == 2 and out["totals"]["accepted"] == 10
    assert len(calls) == 4  # two files, each tried twice


def test_validation_error_is_not_retried(harness, tmp_path: Path, monkeypatch) -> None:
    cfg_file = _config_file(tmp_path)
    _land(tmp_path)
    calls: list[str] = []

    def broken(cfg, lake, path):
        calls.append(path)
        raise ValueError(f"data.channels mismatch in {path}")

    monkeypatch.setattr(fi, "ingest_file", broken)
    state = fi.ingest_flow(str(cfg_file), return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="data.channels mismatch"):
        state.result()
    assert len(calls) == 3  # once per file: no retries


def test_missing_landing_is_a_config_error(harness, tmp_path: Path) -> None:
    raw = base_config_dict(tmp_path)
    p = tmp_path / "nolanding.yaml"
    p.write_text(yaml.safe_dump(raw))
    state = fi.ingest_flow(str(p), return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="data.landing is not set"):
        state.result()


def test_library_logs_reach_the_flow_run_logs(harness, tmp_path: Path) -> None:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    cfg_file = _config_file(tmp_path)
    _land(tmp_path)
    state = fi.ingest_flow(str(cfg_file), return_state=True)
    flow_run_id = state.state_details.flow_run_id

    async def logs():
        async with get_client() as client:
            return await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )

    records = []
    for _ in range(20):  # logs are shipped to the API in the background
        records = asyncio.run(logs())
        if any(r.name == "cnnlstm.ingest" for r in records):
            break
        import time

        time.sleep(0.5)
    lib = [r for r in records if r.name == "cnnlstm.ingest"]
    assert lib and any("empty.csv" in r.message and "rejected" in r.message for r in lib)
