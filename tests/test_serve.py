"""`cnnlstm serve` against a real Prefect server: the served deployments keep the schedules of
``deploy/prefect.yaml`` with their timezone, and its one-run-at-a-time concurrency limit.

A `prefect server start` on 127.0.0.1 (SQLite in tmp, auth string; its scheduler service off, so
that no tick comes due while the test runs) and `cnnlstm serve` as a subprocess pointed at it.
The deployments it registers are read back with Prefect's client: cron, timezone, slug, active,
parameters, concurrency limit and collision strategy, compared with the YAML. Then the server is
asked to start two runs of one served deployment at once: the second is cancelled (the limit is
enforced, not only stored). A second file, with schedules in other timezones, an interval
schedule and an inactive one, goes through the same serve code and the server expands its cron in
its own timezone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from test_deploy import _RetryingClient, running_prefect_server

ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = ROOT / "deploy" / "prefect.yaml"
CNNLSTM = str(Path(sys.executable).parent / "cnnlstm")
# the served deployments of deploy/prefect.yaml: those with a schedule
SERVED = {
    "ingest-every-15m": ("ingest", "*/15 * * * *"),
    "score-hourly": ("score", "5 * * * *"),
    "train-weekly": ("train", "0 2 * * 0"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect-serve")
    with running_prefect_server(home, {"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}) as e:
        yield e


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A config whose lake and landing folder are in tmp: whatever a served run might do (none
    is due while the test runs) stays there."""
    cfg = {
        "data": {
            "name": "tiny",
            "entity": {"column": "device"},
            "timestamp": {"column": "time", "format": "iso"},
            "channels": [{"name": "ch_a"}],
            "label": {"column": "label", "dtype": "int"},
        },
        "lake": {"uri": str(tmp_path / "lake")},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _client(env: dict[str, str]):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(env["PREFECT_API_URL"], auth_string=env["PREFECT_API_AUTH_STRING"])


@contextlib.contextmanager
def _serving(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Run a serve command until the block ends, then stop it (SIGTERM to its group, as Ctrl-C
    would, SIGKILL if it does not exit)."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


def _wait_for_deployments(
    client, names: set[str], proc: subprocess.Popen, log: Path, timeout: float = 240
) -> dict[str, Any]:
    """Poll the API until every deployment in ``names`` exists (serve registers them all before
    it starts polling for runs)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {d.name: d for d in client.read_deployments() if d.name in names}
        if set(found) == names:
            return found
        assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"not registered in {timeout:.0f} s:\n{log.read_text()}"
        time.sleep(1)


def _yaml_deployments(path: Path) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in yaml.safe_load(path.read_text())["deployments"]}


def test_cnnlstm_serve_keeps_timezone_and_concurrency_limit(
    server: dict[str, str], tiny_config: Path, tmp_path: Path
) -> None:
    from prefect.states import Pending, Scheduled

    spec = _yaml_deployments(PREFECT_YAML)
    client = _client(server)
    log = tmp_path / "serve.log"
    cmd = [CNNLSTM, "serve", "--config", str(tiny_config)]
    with _serving(cmd, server, log) as proc:
        found = _wait_for_deployments(client, set(SERVED), proc, log)
        flows = {f.id: f.name for f in client.read_flows()}
        for name, (flow, cron) in SERVED.items():
            d, y = found[name], spec[name]
            assert flows[d.flow_id] == flow
            assert d.work_pool_name is None  # served here, not by a worker
            assert d.parameters == {"config": str(tiny_config)}  # --config replaces the path
            assert d.enforce_parameter_schema is True
            assert set(y["tags"]) <= set(d.tags)
            assert d.description == y["description"]
            # the schedule of the YAML, timezone included
            [ys] = y["schedules"]
            [s] = d.schedules
            assert s.schedule.cron == ys["cron"] == cron
            assert s.schedule.timezone == ys["timezone"] == "UTC"
            assert s.active is True and s.slug == ys["slug"]
            # one run at a time; a tick that finds a run going is cancelled
            assert d.global_concurrency_limit is not None
            assert d.global_concurrency_limit.limit == y["concurrency_limit"]["limit"] == 1
            assert d.concurrency_options is not None
            assert d.concurrency_options.collision_strategy.value == "CANCEL_NEW"
        # the on-demand pipeline has no schedule: not served
        assert "pipeline" not in {d.name for d in client.read_deployments()}

        # the server enforces the limit on the served deployment: with one run starting, a
        # second is cancelled (runs scheduled a week ahead, so the serve process leaves them)
        d = found["train-weekly"]
        later = datetime.now(UTC) + timedelta(days=7)
        runs = [
            client.create_flow_run_from_deployment(d.id, state=Scheduled(scheduled_time=later))
            for _ in range(2)
        ]
        first = client.set_flow_run_state(runs[0].id, Pending())
        assert first.status.value == "ACCEPT", first
        second = client.set_flow_run_state(runs[1].id, Pending())
        assert second.status.value == "REJECT", second
        assert second.state is not None and second.state.type.value == "CANCELLED"
        assert "concurrency limit" in (second.state.message or "")
        # nothing else ran: the only runs of the served deployments are these two
        ids = {found[n].id for n in SERVED}
        states = sorted(
            r.state.type.value for r in client.read_flow_runs() if r.deployment_id in ids
        )
        assert states == ["CANCELLED", "PENDING"], states


OTHER_YAML = """
deployments:
  - name: berlin-weekdays
    entrypoint: flows/ingest.py:ingest_flow
    parameters: {config: configs/hapt.yaml}
    concurrency_limit: 2
    schedules:
      - cron: "30 6 * * 1-5"
        timezone: Europe/Berlin
        slug: berlin
  - name: new-york-hourly
    entrypoint: flows/score.py:score_flow
    parameters: {config: configs/hapt.yaml}
    concurrency_limit: {limit: 1, collision_strategy: ENQUEUE}
    schedules:
      - interval: 3600
        anchor_date: "2026-01-01T00:30:00"
        timezone: America/New_York
      - cron: "0 12 * * *"
        timezone: Asia/Kolkata
        active: false
"""


def test_serve_keeps_other_timezones_intervals_and_inactive_schedules(
    server: dict[str, str], tiny_config: Path, tmp_path: Path
) -> None:
    """The same serve code (`flows.serve.serve_all`) on a file with schedules outside UTC."""
    path = tmp_path / "prefect.yaml"
    path.write_text(OTHER_YAML)
    client = _client(server)
    log = tmp_path / "serve.log"
    code = (
        "import sys; from pathlib import Path; from flows.serve import serve_all; "
        "serve_all(sys.argv[1], Path(sys.argv[2]))"
    )
    cmd = [sys.executable, "-c", code, str(tiny_config), str(path)]
    names = {"berlin-weekdays", "new-york-hourly"}
    with _serving(cmd, server, log) as proc:
        found = _wait_for_deployments(client, names, proc, log)

        berlin = found["berlin-weekdays"]
        [s] = berlin.schedules
        assert (s.schedule.cron, s.schedule.timezone, s.slug) == (
            "30 6 * * 1-5",
            "Europe/Berlin",
            "berlin",
        )
        assert berlin.global_concurrency_limit.limit == 2
        ny = found["new-york-hourly"]
        by_kind: dict[str, Any] = {type(s.schedule).__name__: s for s in ny.schedules}
        interval, inactive = by_kind["IntervalSchedule"], by_kind["CronSchedule"]
        assert interval.schedule.interval == timedelta(hours=1)
        assert interval.schedule.timezone == "America/New_York"
        assert interval.active is True
        assert (inactive.schedule.timezone, inactive.active) == ("Asia/Kolkata", False)
        assert ny.global_concurrency_limit.limit == 1
        assert ny.concurrency_options.collision_strategy.value == "ENQUEUE"

        # the server reads the cron in its timezone: 06:30 in Berlin on weekdays (04:30 or
        # 05:30 UTC, by the season); the runs are days ahead, the serve process leaves them
        user, password = server["PREFECT_API_AUTH_STRING"].split(":", 1)
        with _RetryingClient(
            base_url=server["PREFECT_API_URL"], auth=(user, password), timeout=30
        ) as http:  # retries the 503s of a busy SQLite database
            r = http.post(f"/deployments/{berlin.id}/schedule", json={"max_runs": 3})
        assert r.status_code < 300, r.text
        runs = [r for r in client.read_flow_runs() if r.deployment_id == berlin.id]
        assert len(runs) >= 3
        utc_hours = set()
        for run in runs:
            t = run.expected_start_time
            local = t.astimezone(ZoneInfo("Europe/Berlin"))
            assert (local.hour, local.minute, local.second) == (6, 30, 0), local
            assert local.isoweekday() <= 5, local
            utc_hours.add(t.astimezone(UTC).hour)
        assert utc_hours <= {4, 5}
