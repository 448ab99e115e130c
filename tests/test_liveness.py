"""Killed processes leave nothing RUNNING for ever (issue 12, item 10).

- the owner/heartbeat logic (`cnnlstm.liveness.judge`): a gone pid, a reused pid, a stale
  heartbeat from another machine, a run without an owner;
- `sweep_mlflow` on a local store: only runs whose owner is gone are ended KILLED, with a reason;
- end to end: ``cnnlstm train`` SIGKILLed mid-run leaves a RUNNING run that the next command
  (``cnnlstm doctor``, ``cnnlstm score``) marks KILLED;
- end to end: ``cnnlstm run`` SIGKILLed mid-train: its Prefect API server process dies with it,
  and ``cnnlstm doctor`` marks the flow runs it left CRASHED and its MLflow run KILLED.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from mlflow_server import LANDING, TINY_FILES, hapt_config_dict, tiny_config

from cnnlstm.liveness import (
    HEARTBEAT,
    KILLED_REASON,
    Owner,
    judge,
    process_start,
    sweep_mlflow,
)

pytest_plugins = ["mlflow_server"]  # hapt_lake: a tiny lake of 4 HAPT recordings

ROOT = Path(__file__).resolve().parents[1]
CNNLSTM = str(Path(sys.executable).with_name("cnnlstm"))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _wait(cond: Callable[[], object], timeout: float, what: str, proc=None) -> object:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = cond()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(
                f"process exited ({proc.returncode}) before {what}:\n{out[-4000:]}"
            )
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    return env | {"NO_COLOR": "1", "COLUMNS": "200"} | extra


# --------------------------------------------------------------------------- owner and judge


def test_owner_tags_round_trip_and_identify_this_process() -> None:
    me = Owner.current()
    assert me.pid == os.getpid() and me.start == process_start(os.getpid())
    assert Owner.from_tags(me.tags()) == me
    assert Owner.from_tags({"foo": "bar"}) is None
    assert judge(me, None, me=me).state == "alive"


def test_judge_gone_pid_reused_pid_stale_heartbeat_and_no_owner() -> None:
    me = Owner.current()
    gone = Owner(me.host, _dead_pid(), "12345", me.boot_id, me.pidns)
    v = judge(gone, None, me=me)
    assert v.state == "dead" and str(gone.pid) in v.reason
    # the pid of a live process, with another start time: a reused pid, not the owner
    reused = Owner(me.host, os.getpid(), "1", me.boot_id, me.pidns)
    v = judge(reused, None, me=me)
    assert v.state == "dead" and "another process" in v.reason
    # another machine (or container): the heartbeat decides, never the local pid table
    other = Owner("elsewhere", os.getpid(), me.start, "other-boot", "")
    now = time.time()
    assert judge(other, now - 30, me=me, now=now, timeout=600).state == "alive"
    v = judge(other, now - 3600, me=me, now=now, timeout=600)
    assert v.state == "dead" and "heartbeat" in v.reason
    assert judge(other, None, me=me).state == "unknown"
    assert judge(None, None, me=me).state == "unknown"


def test_sweep_marks_only_runs_whose_owner_is_gone(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("sweep", artifact_location=(tmp_path / "a").as_uri())
    me = Owner.current()
    dead = Owner(me.host, _dead_pid(), "1", me.boot_id, me.pidns)
    runs = {
        "dead": client.create_run(exp, tags=dead.tags() | {HEARTBEAT: str(time.time())}),
        "mine": client.create_run(exp, tags=me.tags() | {HEARTBEAT: str(time.time())}),
        "legacy": client.create_run(exp),
        "stale-elsewhere": client.create_run(
            exp,
            tags=Owner("other-host", 1, "1", "b", "").tags() | {HEARTBEAT: str(time.time() - 9e3)},
        ),
    }
    ids = {k: r.info.run_id for k, r in runs.items()}
    client.set_terminated(client.create_run(exp, tags=dead.tags()).info.run_id, "FINISHED")

    report = sweep_mlflow(uri, [exp], fix=False)
    assert {f.id: f.state for f in report} == {
        ids["dead"]: "dead",
        ids["mine"]: "alive",
        ids["legacy"]: "unknown",
        ids["stale-elsewhere"]: "dead",
    }
    assert all(client.get_run(i).info.status == "RUNNING" for i in ids.values())

    fixed = {f.id: f for f in sweep_mlflow(uri, [exp])}
    for k in ("dead", "stale-elsewhere"):
        run = client.get_run(ids[k])
        assert run.info.status == "KILLED" and fixed[ids[k]].action == "marked KILLED"
        assert "gone" in run.data.tags[KILLED_REASON] or "heartbeat" in run.data.tags[KILLED_REASON]
        assert run.info.end_time is not None
    for k in ("mine", "legacy"):
        assert client.get_run(ids[k]).info.status == "RUNNING"


# --------------------------------------------------------------------------- doctor's checks


def test_doctor_checks_report_leftovers_and_held_locks(tmp_path: Path) -> None:
    import fcntl

    import polars as pl
    from conftest import HEADER, make_config, write_source

    from cnnlstm.doctor import checks
    from cnnlstm.ingest import ingest
    from cnnlstm.lake import Lake
    from cnnlstm.score import watermark_rel

    cfg = make_config(tmp_path, score={"output": str(tmp_path / "pred")})
    src = write_source(tmp_path / "in" / "a.csv", HEADER + "d1,2024-01-01T00:00:00Z,1,2,0\n")
    assert ingest(cfg, [str(src)]).clean
    by = {c.check: c for c in checks(cfg)}
    assert by["lake"].status == "ok" and "1 data files, all present" in by["lake"].detail
    assert by["lake lock"].status == "ok" and by["predictions"].status == "ok"

    # leftovers of killed writers, an unlisted prediction file, a lock held right now
    (tmp_path / "lake" / "_tmp" / "x.parquet").write_bytes(b"PAR1 partial")
    pl.DataFrame({"a": [1]}).write_parquet(
        tmp_path / "lake/readings/entity_id=d1/date=2024-01-01/orphan.parquet"
    )
    out = Lake(str(tmp_path / "pred"))
    (tmp_path / "pred" / "_tmp").mkdir(parents=True)
    out.write_parquet(pl.DataFrame({"a": [1]}), "date=2024-01-01/m-v1-a.parquet")
    out.write_parquet(pl.DataFrame({"a": [2]}), "date=2024-01-01/m-v1-b.parquet")
    out.write_json(
        {
            "model_name": "m",
            "model_version": "1",
            "files": {"x": {"predictions": ["date=2024-01-01/m-v1-a.parquet"]}},
        },
        watermark_rel("m", "1"),
    )
    lock = tmp_path / "lake" / "_locks" / "commit.lock"
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        by = {c.check: c for c in checks(cfg)}
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert by["lake temp files"].status == "info" and "1 in" in by["lake temp files"].detail
    assert (
        by["lake unlisted files"].status == "info" and "orphan" in by["lake unlisted files"].detail
    )
    assert by["lake lock"].status == "info" and "held" in by["lake lock"].detail
    if os.path.exists("/proc/locks"):
        assert f"process {os.getpid()}" in by["lake lock"].detail
    assert by["predictions"].status == "info" and "1 files no watermark" in by["predictions"].detail
    # nothing was changed: report only
    assert (tmp_path / "lake" / "_tmp" / "x.parquet").exists()
    assert (tmp_path / "pred" / "date=2024-01-01" / "m-v1-b.parquet").exists()

    # a data file the ledger names, gone: an error
    f = Lake(cfg.lake_uri).data_files()[0]
    os.remove(tmp_path / "lake" / f.path)
    assert {c.check: c for c in checks(cfg)}["lake"].status == "error"


# --------------------------------------------------------------------------- cnnlstm train


def _running_run(uri: str, experiment: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        runs = client.search_runs(
            [exp.experiment_id], filter_string="attributes.status = 'RUNNING'"
        )
        # mid-run: the first epoch's metrics are logged
        done = [r for r in runs if "train_loss" in r.data.metrics]
        return done[0].info.run_id if done else None

    return probe


def _start_train(cfg_path: Path, out: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [CNNLSTM, "train", "-c", str(cfg_path), "--out", str(out)],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


@pytest.mark.slow
def test_sigkilled_train_is_marked_killed_by_the_next_command(hapt_lake, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_config(tmp_path, hapt_lake, uri, train={"epochs": 500})
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    client = MlflowClient(uri)

    proc = _start_train(cfg_path, tmp_path / "run1", tmp_path)
    try:
        run_id = _wait(_running_run(uri, "tests"), 300, "a RUNNING run mid-training", proc)
        run = client.get_run(run_id)
        assert run.data.tags["cnnlstm.owner.pid"] == str(proc.pid)
        assert float(run.data.tags[HEARTBEAT]) > time.time() - 120
        _kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert client.get_run(run_id).info.status == "RUNNING"  # what SIGKILL leaves

    r = subprocess.run(
        [CNNLSTM, "doctor", "-c", str(cfg_path), "--no-prefect", "--json"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode in (0, 1), r.stdout + r.stderr
    report = json.loads(r.stdout)
    [f] = [f for f in report["mlflow"] if f["id"] == run_id]
    assert f["state"] == "dead" and f["action"] == "marked KILLED"
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert f"process {proc.pid}" in run.data.tags[KILLED_REASON]
    assert "cnnlstm doctor" in run.data.tags[KILLED_REASON]

    # a second killed run: the next ordinary command (score, which fails here: nothing is
    # registered) sweeps it before doing its own work
    proc = _start_train(cfg_path, tmp_path / "run2", tmp_path)
    try:
        run2 = _wait(
            lambda: (i := _running_run(uri, "tests")()) != run_id and i, 300, "run 2", proc
        )
        _kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    r = subprocess.run(
        [CNNLSTM, "score", "-c", str(cfg_path)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert client.get_run(run2).info.status == "KILLED", r.stdout + r.stderr
    assert "marked KILLED" in r.stderr


# --------------------------------------------------------------------------- cnnlstm run


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pids: list[int]) -> list[int]:
    import psutil

    out = []
    for p in pids:
        try:
            if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _flow_run_states(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("select name, state_type from flow_run").fetchall())


def _run_config(tmp_path: Path, epochs: int, where: dict | None = None) -> Path:
    """A `cnnlstm run` config: landing = 4 HAPT recordings (copied), lake, MLflow (sqlite) and
    predictions under tmp_path."""
    landing = tmp_path / "landing"
    landing.mkdir()
    for n in TINY_FILES:
        shutil.copy(LANDING / f"{n}.csv.gz", landing / f"{n}.csv.gz")
    raw = hapt_config_dict(tmp_path / "lake", f"sqlite:///{tmp_path / 'mlflow.db'}")
    raw["data"]["landing"] = str(landing)
    raw["train"]["epochs"] = epochs
    raw["score"] = {"output": str(tmp_path / "predictions")} | ({"where": where} if where else {})
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    return cfg_path


@pytest.mark.slow
def test_sigkilled_run_leaves_no_server_and_its_runs_are_closed(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    cfg_path = _run_config(tmp_path, epochs=500)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    home = tmp_path / ".prefect"
    env = _env(PREFECT_HOME=str(home))

    proc = subprocess.Popen(
        [CNNLSTM, "run", "-c", str(cfg_path), "--out", str(tmp_path / "run")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    servers: list[int] = []
    try:
        run_id = _wait(_running_run(uri, "tests"), 480, "training inside `cnnlstm run`", proc)
        servers = _descendants(proc.pid)
        assert servers, "no API server process under `cnnlstm run`"
        _kill(proc)
        # the server notices its parent is gone and exits
        t0 = time.monotonic()
        while _alive(servers) and time.monotonic() - t0 < 30:
            time.sleep(0.5)
        left = _alive(servers)
        assert not left, [psutil.Process(p).cmdline() for p in left]
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in _alive(servers):
            psutil.Process(p).kill()

    states = _flow_run_states(home / "prefect.db")
    assert "RUNNING" in states.values(), states  # what the kill left
    assert MlflowClient(uri).get_run(run_id).info.status == "RUNNING"

    r = subprocess.run(
        [CNNLSTM, "doctor", "-c", str(cfg_path), "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode in (0, 1), r.stdout + r.stderr
    report = json.loads(r.stdout)
    crashed = [f for f in report["prefect"] if f["action"].startswith("marked CRASHED")]
    assert {f["name"].split("-")[0] for f in crashed} >= {"pipeline", "train"}, report
    states = _flow_run_states(home / "prefect.db")
    assert "RUNNING" not in states.values(), states
    assert {s for n, s in states.items() if n.startswith(("pipeline", "train"))} == {"CRASHED"}
    assert MlflowClient(uri).get_run(run_id).info.status == "KILLED"
    assert not _api_servers_of(home), "doctor's API server outlived it"


def _api_servers_of(home: Path) -> list[int]:
    """Our API server processes (flows.api_server) serving the Prefect database under ``home``."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        if "flows.api_server" not in (p.info["cmdline"] or []):
            continue
        with contextlib.suppress(psutil.Error):
            if p.environ().get("PREFECT_HOME") == str(home):
                out.append(p.pid)
    return out


@pytest.mark.slow
def test_run_completes_with_its_own_api_server_and_stops_it(tmp_path: Path) -> None:
    pytest.importorskip("psutil")
    cfg_path = _run_config(tmp_path, epochs=1, where={"split": "test"})
    home = tmp_path / ".prefect"
    r = subprocess.run(
        [CNNLSTM, "run", "-c", str(cfg_path), "--out", str(tmp_path / "run")],
        cwd=tmp_path,
        env=_env(PREFECT_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    # run from tmp_path: the summary names its folders relative to it (copyable from there)
    assert "cnnlstm.predictions.scan('predictions')" in r.stdout
    assert not _api_servers_of(home), "the API server outlived `cnnlstm run`"
    with sqlite3.connect(home / "prefect.db") as con:
        rows = con.execute("select name, state_type, tags from flow_run").fetchall()
    assert {s for _, s, _ in rows} == {"COMPLETED"}, rows
    assert all("cnnlstm.owned" in json.loads(t) for _, _, t in rows), rows
