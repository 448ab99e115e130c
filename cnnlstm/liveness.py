"""Who owns a run, whether that process still lives, and closing what a killed process left.

A SIGKILL (or an OOM kill, a power cut) runs no handler: the MLflow run the process had open
stays RUNNING for ever (mlflow 3932). So every run we start carries its **owner** and a
**heartbeat** as tags:

- ``cnnlstm.owner.host``, ``cnnlstm.owner.pid``, ``cnnlstm.owner.start`` (the process start time,
  so that a pid reused by another process is not taken for the owner), ``cnnlstm.owner.boot_id``
  and ``cnnlstm.owner.pidns`` (Linux: the kernel boot and the pid namespace, so a pid is only
  compared on the machine and in the container where it means the same process);
- ``cnnlstm.heartbeat``: unix seconds, rewritten every `heartbeat_seconds` (30 s;
  ``CNNLSTM_HEARTBEAT_SECONDS``) by one daemon thread per process for all its open runs.

`sweep_mlflow` finds the experiment's RUNNING runs whose owner is gone and ends them KILLED with
the tag ``cnnlstm.killed_reason``. Gone means: same machine and pid namespace - the pid is not
running, or runs a process with another start time; elsewhere - no heartbeat for
`heartbeat_timeout` (600 s; ``CNNLSTM_HEARTBEAT_TIMEOUT``). A run without owner tags (started
before this existed, or by other code) is reported, never touched. The ``cnnlstm`` commands that
track or score (train, tune, score, run) sweep their experiment at start (`sweep_quietly`), and
``cnnlstm doctor`` sweeps and reports.

The same owner identity tags the Prefect flow runs of ``cnnlstm run`` (`flows.liveness`, since
this package never imports Prefect).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "cnnlstm.owner."
HEARTBEAT = "cnnlstm.heartbeat"
KILLED_REASON = "cnnlstm.killed_reason"


def heartbeat_seconds() -> float:
    return float(os.environ.get("CNNLSTM_HEARTBEAT_SECONDS", "30"))


def heartbeat_timeout() -> float:
    """Seconds without a heartbeat after which an owner on another machine counts as gone."""
    return float(os.environ.get("CNNLSTM_HEARTBEAT_TIMEOUT", "600"))


# ---------------------------------------------------------------------------------------------
# the owner: which process, on which machine


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def boot_id() -> str:
    return _read("/proc/sys/kernel/random/boot_id")


def pid_namespace() -> str:
    with contextlib.suppress(OSError):
        return os.readlink("/proc/self/ns/pid")
    return ""


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` as an opaque string (None: no such process).

    Linux: field 22 of /proc/PID/stat (clock ticks after boot). Elsewhere psutil's create_time
    when psutil is installed, else "" (then only the pid is compared)."""
    if os.path.isdir("/proc/self"):
        stat = _read(f"/proc/{pid}/stat")
        if not stat:
            return None
        # the command name (field 2) may hold spaces and parentheses: split after the last ')'
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent: gone
            return None
        return fields[19]
    try:
        import psutil
    except ImportError:
        return "" if pid_alive(pid) else None
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    start: str
    boot_id: str = ""
    pidns: str = ""

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_start(pid) or "", boot_id(), pid_namespace())

    def tags(self) -> dict[str, str]:
        return {PREFIX + k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Owner | None:
        try:
            return cls(
                tags[PREFIX + "host"],
                int(tags[PREFIX + "pid"]),
                tags.get(PREFIX + "start", ""),
                tags.get(PREFIX + "boot_id", ""),
                tags.get(PREFIX + "pidns", ""),
            )
        except (KeyError, ValueError):
            return None

    def same_machine(self, other: Owner) -> bool:
        """Same host, same boot and same pid namespace: a pid means the same process."""
        return (self.host, self.boot_id, self.pidns) == (other.host, other.boot_id, other.pidns)

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"


@dataclass
class Verdict:
    state: str  # alive | dead | unknown
    reason: str


def judge(
    owner: Owner | None,
    heartbeat: float | None,
    *,
    me: Owner | None = None,
    now: float | None = None,
    timeout: float | None = None,
) -> Verdict:
    """Whether the owner of a RUNNING run is still there."""
    if owner is None:
        return Verdict("unknown", "no owner recorded (started before owner tags, or elsewhere)")
    me = me or Owner.current()
    if owner.same_machine(me):
        start = process_start(owner.pid)
        if start is None:
            return Verdict("dead", f"owner {owner.describe()} is gone")
        if owner.start and start and start != owner.start:
            return Verdict(
                "dead",
                f"owner {owner.describe()} is gone (pid {owner.pid} now belongs to another "
                "process)",
            )
        return Verdict("alive", f"owner {owner.describe()} is running")
    now = time.time() if now is None else now
    timeout = heartbeat_timeout() if timeout is None else timeout
    if heartbeat is None:
        return Verdict("unknown", f"owner {owner.describe()} elsewhere and no heartbeat recorded")
    age = now - heartbeat
    if age > timeout:
        return Verdict(
            "dead",
            f"owner {owner.describe()} sent no heartbeat for {age:.0f} s (timeout {timeout:.0f} s)",
        )
    return Verdict("alive", f"owner {owner.describe()}: heartbeat {age:.0f} s ago")


def owner_tags() -> dict[str, str]:
    """The tags a run starts with: this process as its owner, and a first heartbeat."""
    return Owner.current().tags() | {HEARTBEAT: f"{time.time():.0f}"}


# ---------------------------------------------------------------------------------------------
# the heartbeat: one daemon thread per process for the runs it has open


class _Heartbeats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, str] = {}  # run id -> tracking URI
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, uri: str, run_id: str) -> None:
        with self._lock:
            self._runs[run_id] = uri
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="cnnlstm-heartbeat", daemon=True
                )
                self._thread.start()

    def remove(self, run_id: str | None) -> None:
        with self._lock:
            self._runs.pop(run_id, None)  # type: ignore[arg-type]

    def running(self) -> dict[str, str]:
        with self._lock:
            return dict(self._runs)

    def _loop(self) -> None:
        clients: dict[str, Any] = {}
        while True:
            self._wake.wait(heartbeat_seconds())
            self._wake.clear()
            runs = self.running()
            if not runs:
                with self._lock:
                    if not self._runs:
                        self._thread = None
                        return
                continue
            now = f"{time.time():.0f}"
            for run_id, uri in runs.items():
                try:
                    if uri not in clients:
                        from mlflow import MlflowClient

                        clients[uri] = MlflowClient(uri)
                    clients[uri].set_tag(run_id, HEARTBEAT, now)
                except Exception as e:  # never disturb the run; the next beat tries again
                    log.debug("heartbeat of run %s failed: %s", run_id, e)


heartbeats = _Heartbeats()


# ---------------------------------------------------------------------------------------------
# the sweep


@dataclass
class Finding:
    """One RUNNING run (or flow run) looked at by a sweep."""

    kind: str  # "mlflow run" | "prefect flow run"
    id: str
    name: str
    state: str  # alive | dead | unknown
    reason: str
    action: str = ""  # e.g. "marked KILLED"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def line(self) -> str:
        what = f"{self.kind} {self.id} ({self.name})" if self.name else f"{self.kind} {self.id}"
        return f"{what}: {self.reason}" + (f" -> {self.action}" if self.action else "")


def _command() -> str:
    return " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:2])) or "?"


def sweep_mlflow(
    uri: str,
    experiment_ids: list[str],
    fix: bool = True,
    *,
    now: float | None = None,
    timeout: float | None = None,
) -> list[Finding]:
    """RUNNING runs of the experiments: those whose owner is gone are ended KILLED (``fix``)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    me = Owner.current()
    runs = client.search_runs(
        experiment_ids, filter_string="attributes.status = 'RUNNING'", max_results=5000
    )
    found = []
    for run in runs:
        tags = run.data.tags
        try:
            beat = float(tags[HEARTBEAT]) if HEARTBEAT in tags else None
        except ValueError:
            beat = None
        v = judge(Owner.from_tags(tags), beat, me=me, now=now, timeout=timeout)
        f = Finding("mlflow run", run.info.run_id, run.info.run_name or "", v.state, v.reason)
        if v.state == "dead" and fix:
            why = f"{v.reason}; found by `{_command()}` (pid {me.pid}) at {time.ctime()}"
            client.set_tag(run.info.run_id, KILLED_REASON, why)
            client.set_terminated(run.info.run_id, "KILLED")
            f.action = "marked KILLED"
        found.append(f)
    return found


def sweep_experiment(cfg, fix: bool = True) -> list[Finding]:
    """`sweep_mlflow` for the config's tracking store and experiment. Nothing is created: a
    local store that does not exist yet, or an experiment not created yet, has nothing to sweep.
    A server that does not answer raises `TrackingUnavailableError`."""
    from cnnlstm.mlflow_tracker import check_tracking, tracking_uri

    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        return []
    check_tracking(uri, timeout=3.0)
    from mlflow import MlflowClient

    exp = MlflowClient(uri).get_experiment_by_name(cfg.tracking.experiment)
    if exp is None or exp.lifecycle_stage == "deleted":
        return []
    return sweep_mlflow(uri, [exp.experiment_id], fix)


def sweep_quietly(cfg) -> list[Finding]:
    """The start-of-command sweep: ends the experiment's runs whose owner is gone, says so on
    the log (WARNING), and never fails the command (any error is logged and ignored)."""
    try:
        found = sweep_experiment(cfg)
    except Exception as e:  # e.g. a server that is down: the command reports that itself
        log.debug("liveness sweep skipped: %s", e)
        return []
    for f in found:
        if f.action:
            log.warning("%s", f.line())
    return found
