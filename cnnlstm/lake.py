"""The readings lake: hive-partitioned Parquet, a quarantine dataset and a ledger of sources.

Layout under the lake root (a local folder, or any fsspec URI such as ``s3://bucket/lake``)::

    readings/entity_id=<uri-encoded id>/date=YYYY-MM-DD/part-<sha16>-<n>.parquet
    _quarantine/part-<sha16>.parquet       rows that failed validation, with reason and row number
    _ledger/<sha256>.json                  one record per committed source file (content hash)
    _ledger/rejected/<sha256>.json         the last rejection of a source file, with the reason
    _tmp/                                  files being written (never read)
    _locks/commit.lock                     serialises commits (local filesystems)

Readers trust the ledger, not a directory listing: a data file is visible only once the ledger
record naming it exists, and that record is written last, atomically. A kill -9 at any moment
leaves at worst an unreferenced file, which the next commit of the same source overwrites with
identical content (file names are derived from the source hash).
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fsspec
import polars as pl
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

READINGS = "readings"
QUARANTINE = "_quarantine"
LEDGER = "_ledger"
TMP = "_tmp"
LOCKS = "_locks"


class LakeError(RuntimeError):
    """The lake itself is unusable (unreadable ledger, failed write check)."""


def encode_entity(entity_id: str) -> str:
    """Entity id -> one safe path segment. Every byte outside [A-Za-z0-9_-] is %-encoded
    (``quote`` leaves ``.`` and ``~`` alone, so those are encoded by hand): ``/``, ``\\``,
    ``..`` and ``.`` can never form a path component that escapes the lake."""
    if not entity_id:
        return "%00"
    return quote(entity_id, safe="-_").replace(".", "%2E").replace("~", "%7E")


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the lake root
    entity_id: str
    date: str
    rows: int


class Lake:
    def __init__(self, uri: str):
        self.uri = uri
        self.fs, root = fsspec.core.url_to_fs(uri)
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)

    # ---- paths -------------------------------------------------------------------------------
    def abs(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def uri_of(self, rel: str) -> str:
        """A path a reader (polars/pyarrow) can open."""
        if self.local:
            return self.abs(rel)
        proto = self.fs.protocol[0] if isinstance(self.fs.protocol, tuple) else self.fs.protocol
        return f"{proto}://{self.abs(rel)}"

    @staticmethod
    def partition_dir(entity_id: str, date: str) -> str:
        return f"{READINGS}/entity_id={encode_entity(entity_id)}/date={date}"

    def ensure(self) -> None:
        for d in (
            READINGS,
            QUARANTINE,
            LEDGER,
            f"{LEDGER}/rejected",
            f"{LEDGER}/hints",
            TMP,
            LOCKS,
        ):
            self.fs.makedirs(self.abs(d), exist_ok=True)

    # ---- atomic writes -----------------------------------------------------------------------
    def _tmp_name(self, suffix: str) -> str:
        return f"{TMP}/{uuid.uuid4().hex}{suffix}"

    def _commit_tmp(self, tmp: str, rel: str) -> None:
        final = self.abs(rel)
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        if self.local:
            os.replace(self.abs(tmp), final)
            _fsync_dir(os.path.dirname(final))
        else:  # object stores: a PUT is atomic; copy then delete the temp object
            self.fs.mv(self.abs(tmp), final)

    def write_parquet(self, df: pl.DataFrame, rel: str, compression: str = "zstd") -> int:
        """Write ``df`` to ``rel`` atomically: temp file, fsync, re-open and check the footer's
        row count, then rename. Returns the row count."""
        tmp = self._tmp_name(".parquet")
        comp = "uncompressed" if compression == "none" else compression
        if self.local:
            df.write_parquet(self.abs(tmp), compression=comp, statistics=True)
            fd = os.open(self.abs(tmp), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            meta = pq.read_metadata(self.abs(tmp))
        else:
            buf = io.BytesIO()
            df.write_parquet(buf, compression=comp, statistics=True)
            with self.fs.open(self.abs(tmp), "wb") as f:
                f.write(buf.getvalue())
            with self.fs.open(self.abs(tmp), "rb") as f:
                meta = pq.read_metadata(f)
        if meta.num_rows != df.height:
            raise LakeError(f"write check failed for {rel}: {meta.num_rows} != {df.height} rows")
        self._commit_tmp(tmp, rel)
        return df.height

    # ---- content hints: xxh3 of sources seen (a fast pre-check before sha256) ---------------
    def has_hint(self, xxh3: str) -> bool:
        return self.fs.exists(self.abs(f"{LEDGER}/hints/{xxh3}"))

    def write_hint(self, xxh3: str, sha256: str | None) -> None:
        self.write_json({"sha256": sha256}, f"{LEDGER}/hints/{xxh3}")

    def write_json(self, obj: Any, rel: str) -> None:
        tmp = self._tmp_name(".json")
        data = json.dumps(obj, indent=1, sort_keys=True, default=str).encode()
        if self.local:
            with open(self.abs(tmp), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        else:
            with self.fs.open(self.abs(tmp), "wb") as f:
                f.write(data)
        self._commit_tmp(tmp, rel)

    def clean_tmp(self) -> int:
        """Remove temp files left by killed writers. Call only while holding the commit lock:
        every writer writes its temps under the lock, so none are in flight."""
        n = 0
        for p in self.fs.glob(self.abs(f"{TMP}/*")):
            self.fs.rm(p)
            n += 1
        return n

    @contextlib.contextmanager
    def commit_lock(self) -> Iterator[None]:
        """Serialise commits. On a local filesystem an flock, released by the kernel if the
        holder dies; on object stores run one writer per lake (a Prefect concurrency limit)."""
        if not self.local:
            yield
            return
        self.fs.makedirs(self.abs(LOCKS), exist_ok=True)
        fd = os.open(self.abs(f"{LOCKS}/commit.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # ---- ledger ------------------------------------------------------------------------------
    def ledger_record(self, sha256: str) -> dict[str, Any] | None:
        p = self.abs(f"{LEDGER}/{sha256}.json")
        if not self.fs.exists(p):
            return None
        return self._read_json(p)

    def _read_json(self, p: str) -> dict[str, Any]:
        try:
            with self.fs.open(p, "rb") as f:
                return json.loads(f.read())
        except (OSError, ValueError) as e:
            raise LakeError(f"unreadable ledger record {p}: {e}") from e

    def records(self) -> list[dict[str, Any]]:
        """Committed ledger records, oldest first; a record another one supersedes (a source
        reprocessed under a new config) is left out, so readers switch at that commit."""
        if not self.fs.exists(self.abs(LEDGER)):
            return []
        recs = [self._read_json(p) for p in self.fs.glob(self.abs(f"{LEDGER}/*.json"))]
        gone = {k for r in recs for k in r.get("supersedes", []) if k != r["sha256"]}
        recs = [r for r in recs if r["sha256"] not in gone]
        return sorted(recs, key=lambda r: (r.get("finished_at", ""), r["sha256"]))

    def rejections(self) -> list[dict[str, Any]]:
        if not self.fs.exists(self.abs(f"{LEDGER}/rejected")):
            return []
        return [self._read_json(p) for p in self.fs.glob(self.abs(f"{LEDGER}/rejected/*.json"))]

    def data_files(self, records: list[dict[str, Any]] | None = None) -> list[DataFile]:
        out = []
        for r in self.records() if records is None else records:
            out += [DataFile(**f) for f in r.get("files", [])]
        return out

    def quarantine_files(self) -> list[str]:
        return [r["quarantine_file"] for r in self.records() if r.get("quarantine_file")]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scan(lake: Lake, rels: list[str]) -> pl.LazyFrame | None:
    if not rels:
        return None
    storage = None if lake.local else getattr(lake.fs, "storage_options", None)
    return pl.scan_parquet(
        [lake.uri_of(r) for r in rels], hive_partitioning=False, storage_options=storage or None
    )


def scan_readings(
    lake_uri: str,
    entities: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pl.LazyFrame:
    """Lazy readings from the files the ledger lists: ``entity_id``, ``timestamp`` (UTC us),
    float32 channels, optional ``label``, metadata columns. ``start``/``end`` filter the
    timestamp (start inclusive, end exclusive); whole partitions are skipped by date first."""
    lake = Lake(lake_uri)
    files = lake.data_files()
    if entities is not None:
        wanted = set(entities)
        files = [f for f in files if f.entity_id in wanted]
    if start is not None:
        files = [f for f in files if f.date >= start.date().isoformat()]
    if end is not None:
        files = [f for f in files if f.date <= end.date().isoformat()]
    lf = _scan(lake, sorted(f.path for f in files))
    if lf is None:
        raise LakeError(f"no readings in lake {lake_uri} for the requested selection")
    if start is not None:
        lf = lf.filter(pl.col("timestamp") >= start)
    if end is not None:
        lf = lf.filter(pl.col("timestamp") < end)
    return lf


def scan_quarantine(lake_uri: str) -> pl.LazyFrame | None:
    """Quarantined rows of every committed source (None if there are none)."""
    lake = Lake(lake_uri)
    return _scan(lake, lake.quarantine_files())


def lake_summary(lake_uri: str) -> dict[str, Any]:
    lake = Lake(lake_uri)
    recs = lake.records()
    files = lake.data_files(recs)
    return {
        "lake": lake_uri,
        "sources": len(recs),
        "rows": sum(f.rows for f in files),
        "quarantined": sum(r.get("quarantined", 0) for r in recs),
        "entities": len({f.entity_id for f in files}),
        "data_files": len(files),
        "rejected_sources": len(lake.rejections()),
    }


def read_bytes(path: str) -> bytes:
    """Read a whole source file (local path or URI)."""
    with fsspec.open(path, "rb") as f:
        return f.read()


def source_exists(path: str) -> bool:
    fs, p = fsspec.core.url_to_fs(path)
    return bool(fs.exists(p))


def source_size(path: str) -> int:
    fs, p = fsspec.core.url_to_fs(path)
    return int(fs.size(p))


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def expand_sources(
    inputs: list[str], include: list[str] | None = None, exclude: list[str] | None = None
) -> list[str]:
    """Files, folders (recursively) and globs -> sorted unique source files. In folders, the
    files whose name matches one of `include` (fnmatch patterns, case-insensitive; default:
    CSV, CSV.gz and Parquet) and none of `exclude`; a file or glob named explicitly is taken
    whatever its name."""
    patterns = [p.lower() for p in (include or SOURCE_PATTERNS)]
    skip = [p.lower() for p in (exclude or ())]
    out: list[str] = []
    for item in inputs:
        fs, p = fsspec.core.url_to_fs(item)
        proto = (
            ""
            if isinstance(fs, LocalFileSystem)
            else f"{fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol}://"
        )
        if any(ch in item for ch in "*?["):
            # like a shell glob (and the folder walk below): no hidden files such as
            # macOS '._name.csv' or editor lock files
            matches = [m for m in fs.glob(p) if not m.rsplit("/", 1)[-1].startswith(".")]
        elif fs.isdir(p):
            found = fs.find(p)
            matches = [m for m in found if _is_source(m, patterns) and not _is_source(m, skip)]
            if not matches:
                raise FileNotFoundError(
                    f"no files matching data.include {patterns} in folder {item} "
                    f"({_holds(found)}); add a pattern to data.include, e.g. '*.txt'"
                )
        else:  # a missing file is a usage error (CLI exit 2), not a rejected source
            matches = [p] if fs.exists(p) else []
        if not matches:
            raise FileNotFoundError(f"no such file, folder or glob match: {item}")
        out += [proto + m if proto else str(Path(m)) for m in matches]
    return sorted(dict.fromkeys(out))


def _holds(paths: list[str]) -> str:
    """What a folder holds, by file extension: '12 .txt, 1 .md' (or 'it is empty')."""
    if not paths:
        return "it is empty"
    exts: dict[str, int] = {}
    for m in paths:
        base = m.rsplit("/", 1)[-1]
        ext = "." + base.split(".", 1)[1] if "." in base.strip(".") else "(no extension)"
        exts[ext] = exts.get(ext, 0) + 1
    top = sorted(exts.items(), key=lambda kv: -kv[1])[:6]
    return "it holds " + ", ".join(f"{n} {e}" for e, n in top)


SOURCE_PATTERNS = ["*.csv", "*.csv.gz", "*.parquet", "*.pq"]


def _is_source(name: str, patterns: list[str]) -> bool:
    base = name.rsplit("/", 1)[-1]
    low = base.lower()
    return not base.startswith(".") and any(fnmatch.fnmatchcase(low, p) for p in patterns)
