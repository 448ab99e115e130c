"""``cnnlstm doctor``: what killed processes and interrupted writes left behind.

Fixes one thing: MLflow runs left RUNNING by a process that is gone are ended KILLED
(`cnnlstm.liveness`; the Prefect side, flow runs ended CRASHED, is in ``flows/liveness.py``).
Everything else is reported, never changed:

- the lake: every ledger record readable, every data file it names present; files under
  ``readings/`` that no record names (an interrupted commit) are counted;
- the commit locks of the lake and of the predictions folder: free, or held (by which process,
  where /proc/locks says). The locks are ``flock``s, released by the kernel when their holder
  dies, so a lock file is never stale: a held lock means a writer is running now;
- temp files under ``_tmp/`` of the lake and of the predictions folder (left by a killed writer;
  the next writer removes them under the lock);
- prediction files that no scoring watermark names (a scorer killed between its two writes; the
  next scorer of that model version removes them; `cnnlstm.predictions.scan` never returns them).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Check:
    check: str
    status: str  # ok | info | warn | error
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _lock_holder(path: str) -> str:
    """The pid holding a flock on ``path``, from /proc/locks (Linux), else ''."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    want = f":{st.st_ino}"
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].endswith(want):
            major_minor = parts[5].rsplit(":", 1)[0]
            dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
            if major_minor == dev:
                return parts[4]
    return ""


def lock_state(root: str, name: str) -> Check:
    """Whether the commit lock under ``root`` (a local folder) is held. Tries to take it without
    blocking and lets go at once: never waits for, or disturbs, a writer."""
    path = os.path.join(root, "_locks", "commit.lock")
    if not os.path.exists(path):
        return Check(f"{name} lock", "ok", "no lock file (nothing committed here yet)")
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(path)
            who = f" by process {holder}" if holder else ""
            return Check(
                f"{name} lock",
                "info",
                f"{path} is held{who}: a writer is running now (a flock is released when its "
                "holder dies, so it is never stale)",
            )
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    extra = [p for p in os.listdir(os.path.dirname(path)) if p != "commit.lock"]
    if extra:
        return Check(
            f"{name} lock",
            "warn",
            f"free; other files in {os.path.dirname(path)}: {', '.join(sorted(extra)[:5])} "
            "(not ours: remove them by hand if nothing uses them)",
        )
    return Check(f"{name} lock", "ok", "free")


def _tmp_files(store, name: str) -> Check:
    files = store.fs.glob(store.abs("_tmp/*")) if store.fs.exists(store.abs("_tmp")) else []
    if not files:
        return Check(f"{name} temp files", "ok", "none")
    size = sum(store.fs.size(p) or 0 for p in files)
    return Check(
        f"{name} temp files",
        "info",
        f"{len(files)} in {store.abs('_tmp')} ({size:,} bytes), left by a killed writer; the "
        "next writer removes them under the lock",
    )


def lake_checks(lake_uri: str) -> list[Check]:
    from cnnlstm.lake import READINGS, Lake

    lake = Lake(lake_uri)
    if not lake.fs.exists(lake.root):
        return [Check("lake", "info", f"{lake_uri} does not exist yet (nothing ingested)")]
    try:
        records = lake.records()
        files = lake.data_files(records)
    except Exception as e:  # an unreadable record: LakeError, permissions, ...
        return [Check("lake", "error", f"cannot read the ledger of {lake_uri}: {e}")]
    listed = {f.path for f in files}
    missing = [p for p in sorted(listed) if not lake.fs.exists(lake.abs(p))]
    out = []
    if missing:
        out.append(
            Check(
                "lake",
                "error",
                f"{len(missing)} of {len(listed)} data files named by the ledger are missing "
                f"(first: {missing[0]})",
            )
        )
    else:
        out.append(
            Check("lake", "ok", f"{len(records)} sources, {len(listed)} data files, all present")
        )
    on_disk = lake.fs.glob(lake.abs(f"{READINGS}/**/*.parquet"))
    rels = {p[len(lake.root) + 1 :] if p.startswith(lake.root) else p for p in on_disk}
    unlisted = sorted(rels - listed)
    if unlisted:
        out.append(
            Check(
                "lake unlisted files",
                "info",
                f"{len(unlisted)} files under {READINGS}/ that no ledger record names (an "
                f"interrupted commit; readers never see them), e.g. {unlisted[0]}",
            )
        )
    out.append(_tmp_files(lake, "lake"))
    if lake.local:
        out.append(lock_state(lake.root, "lake"))
    return out


def predictions_checks(output: str) -> list[Check]:
    from cnnlstm.lake import Lake
    from cnnlstm.predictions import committed_files

    out_store = Lake(output)
    if not out_store.fs.exists(out_store.root):
        return [Check("predictions", "ok", f"{output} does not exist yet (nothing scored)")]
    try:
        listed = set(committed_files(output))
    except Exception as e:
        return [Check("predictions", "error", f"cannot read the watermarks of {output}: {e}")]
    on_disk = out_store.fs.glob(out_store.abs("date=*/*.parquet"))
    rels = {p[len(out_store.root) + 1 :] if p.startswith(out_store.root) else p for p in on_disk}
    unlisted = sorted(rels - listed)
    checks = [
        Check("predictions", "ok", f"{len(listed)} committed files")
        if not unlisted
        else Check(
            "predictions",
            "info",
            f"{len(listed)} committed files; {len(unlisted)} files no watermark names (a killed "
            "scorer; the next scorer of that version removes them; "
            "cnnlstm.predictions.scan never returns them)",
        )
    ]
    checks.append(_tmp_files(out_store, "predictions"))
    if out_store.local:
        checks.append(lock_state(out_store.root, "predictions"))
    return checks


def checks(cfg) -> list[Check]:
    """The report-only checks of the config's lake and predictions folder."""
    out = []
    for name, fn, where in (
        ("lake", lake_checks, cfg.lake_uri),
        ("predictions", predictions_checks, cfg.resolve_path(cfg.score.output)),
    ):
        try:
            out += fn(where)
        except Exception as e:  # a check that cannot run is itself a finding
            out.append(Check(name, "error", f"{type(e).__name__}: {e}"))
    return out


def mlflow_sweep(cfg, fix: bool = True) -> tuple[list[Any], Check | None]:
    """The MLflow runs of the config's experiment left RUNNING: (findings, or a Check saying why
    it could not look)."""
    from cnnlstm.liveness import sweep_experiment

    try:
        return sweep_experiment(cfg, fix), None
    except Exception as e:
        return [], Check("mlflow", "error", f"{type(e).__name__}: {e}")
