"""Ingest flow: landing files -> lake, one task per file (mapped).

A file the lake could not take (outcome ``failed``: disk full, read-only lake, lock timeout) is
an infrastructure failure: its task raises `LakeUnavailable`, a transient error, so Prefect retries
it (flows.common.RETRIES); still failing after the retries, it is reported (outcome ``failed``,
totals ``failed``) and the flow run fails, with nothing recorded against the source."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import xxhash
from prefect import flow, task, unmapped
from prefect.logging import get_run_logger

from cnnlstm.config import load_config
from cnnlstm.formats import FileRejected
from cnnlstm.ingest import ingest_file, source_quick_key
from cnnlstm.lake import Lake, LakeUnavailable, expand_sources, is_local
from cnnlstm.progress import current as current_reporter
from cnnlstm.progress import seconds
from flows.common import RETRIES, run_name
from flows.runners import fan_out_runner


def _content_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Cache key from the library's quick key (content hint, size, mtime, the mapping that
    reads the file) and the lake - only once the lake holds that content.

    The ledger stays the source of truth: a file not (or no longer) in the lake is never served
    from the cache, so wiping the lake and re-running re-ingests it; a file already in the lake
    gets the cached "skipped" report without re-reading it; a changed mapping is another key."""
    path = parameters["path"]
    if not is_local(path):
        return None
    overrides = parameters.get("overrides")
    cfg = load_config(parameters["config"], overrides)
    try:
        hint, key = source_quick_key(cfg, path)
    except (OSError, FileRejected):
        return None  # the task reports it
    if not Lake(cfg.lake_uri).has_hint(hint):
        return None
    return f"ingest-{key}-{xxhash.xxh3_64_hexdigest(cfg.lake_uri.encode())}"


_LAKES: dict[str, Lake] = {}
_LAKES_GUARD = threading.Lock()


def _lake(uri: str) -> Lake:
    """One Lake object per lake and process, shared by the file tasks (threads, or the tasks
    of one Dask worker): its ledger index is loaded once, then only brought up to date under
    the commit lock, so the per-file cost does not grow with the lake."""
    with _LAKES_GUARD:
        if uri not in _LAKES:
            _LAKES[uri] = Lake(uri)
        return _LAKES[uri]


@task(name="ingest-file", cache_key_fn=_content_key, persist_result=True, **RETRIES)
def ingest_file_task(config: str, path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    cfg = load_config(config, overrides)
    lake = _lake(cfg.lake_uri)
    lake.ensure()
    report = ingest_file(cfg, lake, path).__dict__
    if report["outcome"] == "failed":  # the lake, not the file: raise so that Prefect retries
        raise LakeUnavailable(f"{path}: {report['reason']}")
    # "worker": the process that did the work (a Dask worker under runner.kind=dask)
    return report | {
        "name": path.rsplit("/", 1)[-1],
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }


@task(name="list-landing")
def list_sources(
    config: str, paths: list[str] | None, overrides: list[str] | None = None
) -> list[str]:
    cfg = load_config(config, overrides)
    if not paths:
        if not cfg.data.landing:
            raise ValueError(f"{config}: data.landing is not set and no paths were given")
        paths = [cfg.resolve_path(cfg.data.landing)]
    return expand_sources(paths, cfg.data.include, cfg.data.exclude, cfg.data.follow_symlinks)


@flow(name="ingest", flow_run_name=run_name("ingest"), log_prints=True)
def ingest_flow(
    config: str, paths: list[str] | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Ingest files, folders or globs (default: the config's data.landing) into the lake, one
    task per file, on the task runner of the config's ``runner`` section (threads by default,
    a Dask cluster with ``runner.kind: dask``). Returns per-file reports and totals; bad files
    are reported, never raised. Files the lake could not take are retried, and if they still
    fail the run fails (LakeUnavailable) after logging them and the totals. ``overrides``:
    config values as ``section.key=value``."""
    logger = get_run_logger()
    t0 = time.monotonic()
    sources = list_sources(config, paths, overrides)
    runner = fan_out_runner(load_config(config, overrides))
    watch = _Watch(len(sources))
    if runner is None:  # the flow's own task runner (threads, or one given by with_options)
        futures = ingest_file_task.map(unmapped(config), sources, unmapped(overrides))
        reports = [watch(_report(path, f)) for path, f in zip(sources, futures, strict=True)]
    else:  # runner.kind=dask: a Dask cluster for this run's file tasks
        with runner:
            futures = runner.map(
                ingest_file_task,
                {"config": unmapped(config), "path": sources, "overrides": unmapped(overrides)},
            )
            reports = [watch(_report(path, f)) for path, f in zip(sources, futures, strict=True)]
    totals = {
        k: sum(r[k] for r in reports)
        for k in ("rows_read", "accepted", "quarantined", "duplicates")
    }
    for outcome in ("committed", "skipped", "rejected", "failed", "retry"):
        totals[outcome] = sum(r["outcome"] == outcome for r in reports)
    for r in reports:
        if r["outcome"] == "rejected":
            logger.warning("rejected %s: %s", r["source"], r["reason"])
        elif r["outcome"] == "failed":
            logger.error("failed after retries %s: %s", r["source"], r["reason"])
        elif r["outcome"] == "retry":  # changed while read: the next run takes it whole
            logger.warning("not committed %s: %s", r["source"], r["reason"])
    line = totals_line(totals, time.monotonic() - t0)
    logger.info("ingest: %s", line)
    if watch.reporter is not None:
        watch.reporter.finish("ingest", line)
    if totals["failed"]:  # the run fails; the next one ingests those files
        raise LakeUnavailable(
            f"{totals['failed']} of {len(reports)} files could not be written to the lake after "
            f"{RETRIES['retries']} retries (nothing was recorded against them; run again): "
            + "; ".join(r["reason"] for r in reports if r["outcome"] == "failed")[:2000]
            + f" - totals {totals}"
        )
    return {"files": reports, "totals": totals}


class _Watch:
    """Reports each file's outcome to the process's progress display (`cnnlstm.progress`),
    when there is one: files done, rows read per second."""

    def __init__(self, n: int) -> None:
        self.reporter = current_reporter()
        self.rows = 0
        if self.reporter is not None:
            self.reporter.start("ingest", total=n, unit="files")

    def __call__(self, report: dict[str, Any]) -> dict[str, Any]:
        if self.reporter is not None:
            self.rows += report.get("rows_read") or 0
            self.reporter.update(
                "ingest", advance=1, rate=(self.rows, "rows"), text=report.get("name", "")
            )
        return report


def totals_line(t: dict[str, Any], elapsed: float | None = None) -> str:
    """One line for a person (with the time taken and rows/s when `elapsed` is given); a run
    that added nothing says so in a few words."""
    took = f" ({seconds(elapsed)})" if elapsed is not None else ""
    files = sum(t[k] for k in ("committed", "skipped", "rejected", "failed", "retry"))
    if not files:
        return f"no landing files{took}"
    if t["skipped"] == files:
        return f"nothing new: {files:,} files already in the lake{took}"
    if elapsed and t["rows_read"]:
        took = f" ({seconds(elapsed)}, {t['rows_read'] / elapsed:,.0f} rows/s)"
    words = {
        "skipped": "already in the lake",
        "rejected": "rejected",
        "failed": "failed",
        "retry": "changed while read",
    }
    parts = [f"{t['committed']:,} committed"] + [f"{t[k]:,} {w}" for k, w in words.items() if t[k]]
    return (
        f"{files:,} files ({', '.join(parts)}): {t['accepted']:,} rows accepted, "
        f"{t['quarantined']:,} quarantined, {t['duplicates']:,} duplicates{took}"
    )


def _report(path: str, future: Any) -> dict[str, Any]:
    """A file task's report; a task that still met an unavailable lake after its retries
    becomes a ``failed`` report (any other error fails the flow, as before)."""
    try:
        return future.result()
    except LakeUnavailable as e:
        return {
            "source": path,
            "name": path.rsplit("/", 1)[-1],
            "sha256": None,
            "outcome": "failed",
            "rows_read": 0,
            "accepted": 0,
            "quarantined": 0,
            "duplicates": 0,
            "reason": str(e),
            "notes": [],
            "files_written": 0,
            "seconds": 0.0,
        }
