"""The readings lake: hive-partitioned Parquet, a quarantine dataset and a ledger of sources.

Layout under the lake root (a local folder, or any fsspec URI such as ``s3://bucket/lake``)::

    readings/entity_id=<uri-encoded id>/date=YYYY-MM-DD/part-<sha16>[-r<8 hex>].parquet
    _quarantine/part-<sha16>.parquet       rows that failed validation, with reason and row number
    _ledger/<sha256>.json                  one record per committed source file (content hash),
                                           naming its data files with rows and sha256
    _ledger/_index.jsonl                   the ledger index: one line per commit (local lakes)
    _ledger/rejected/<sha256>.json         the last rejection of a source file, with the reason
    _tmp/                                  files being written (never read)
    _locks/commit.lock                     serialises commits (local filesystems)

Readers trust the ledger, not a directory listing: a data file is visible only once the ledger
record naming it exists, and that record is written last, atomically. A failed commit removes the
files it wrote; a kill -9 at any moment leaves at worst unreferenced files, which the next
ingest's startup sweep (`Lake.prepare_commit`, under the commit lock) removes.

Writers keep a `LedgerIndex` (the records by key and by source, the data files by partition with
their time ranges), loaded once per `Lake` object and brought up to date under the commit lock
from `_ledger/_index.jsonl`, so the per-file cost of an ingest does not grow with the lake.

Any OSError while writing the lake (disk full, read-only, not permitted, an I/O error) or a
commit-lock timeout is raised as `LakeUnavailable`: an infrastructure failure, not the source's
fault.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fsspec
import polars as pl
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from cnnlstm.config import DEFAULT_INCLUDE

READINGS = "readings"
QUARANTINE = "_quarantine"
LEDGER = "_ledger"
TMP = "_tmp"
LOCKS = "_locks"


JOURNAL = f"{LEDGER}/_index.jsonl"
ENTITY_DIR = "entity_id="
# files younger than this (before the sweep's start) are left alone on object stores, where no
# lock keeps other writers out
REMOTE_SWEEP_GRACE_S = 3600.0
# the names this package gives data and quarantine files (only those are ever swept)
_OUR_FILE = re.compile(r"^part-([0-9a-f]{16})(?:-r[0-9a-f]{8})?\.parquet$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

log = logging.getLogger("cnnlstm.lake")


class LakeError(RuntimeError):
    """The lake itself is unusable (unreadable ledger, failed write check)."""


class LakeUnavailable(OSError):
    """The lake cannot be written (or locked) now: disk full, read-only or not permitted, an I/O
    error, a commit-lock timeout. An infrastructure failure, not the source's fault: ingest
    reports the file as ``failed`` (never as rejected data) and a later run may succeed. An
    OSError, so retry policies that retry transient I/O errors retry it."""


@contextlib.contextmanager
def _lake_io(what: str) -> Iterator[None]:
    """OSError inside -> LakeUnavailable naming what was being done."""
    try:
        yield
    except LakeUnavailable:
        raise
    except OSError as e:
        msg = f"lake unavailable: cannot {what}: {e.strerror or e}"
        raise (LakeUnavailable(msg) if e.errno is None else LakeUnavailable(e.errno, msg)) from e


def _sha256_of(f: Any) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def _write_parquet_file(df: pl.DataFrame, path: str, compression: str) -> None:
    """``df.write_parquet(path)``; polars reports I/O failures (a full disk, a read-only file
    system) as ComputeError "... (os error 28)": those come out as the OSError they are."""
    try:
        df.write_parquet(path, compression=compression, statistics=True)
    except pl.exceptions.PolarsError as e:
        m = re.search(r"\(os error (\d+)\)", str(e))
        if m is None:
            raise
        code = int(m.group(1))
        raise OSError(code, os.strerror(code)) from e


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
    # SHA-256 of the file's bytes, recorded by the ingest that wrote it (None in ledger records
    # written before it was recorded: hash the file, `Lake.file_sha256`)
    sha256: str | None = None


_REMOTE_LOCKS: dict[str, threading.RLock] = {}
_REMOTE_LOCKS_GUARD = threading.Lock()


class Lake:
    def __init__(self, uri: str):
        self.uri = uri
        self.fs, root = fsspec.core.url_to_fs(uri)
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        self._index: LedgerIndex | None = None
        self._locked_at: float | None = None  # time.time() of the commit lock's acquisition
        self._swept = False
        self._name_max: int | None = None

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
        return f"{READINGS}/{ENTITY_DIR}{encode_entity(entity_id)}/date={date}"

    def entity_name_limit(self) -> int:
        """The longest %-encoded entity id a partition folder name (``entity_id=<id>``) can
        hold: 255 bytes (the usual file-name limit, also kept on object stores so a lake can be
        copied to a disk), or the lake file system's own limit if smaller, minus the prefix."""
        if self._name_max is None:
            n = 255
            if self.local:
                p = self.root or "/"
                while not os.path.exists(p) and os.path.dirname(p) != p:
                    p = os.path.dirname(p)
                with contextlib.suppress(OSError, ValueError):
                    n = min(n, os.pathconf(p, "PC_NAME_MAX"))
            self._name_max = n
        return self._name_max - len(ENTITY_DIR)

    def ensure(self) -> None:
        with _lake_io(f"create the lake folders in {self.uri}"):
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
        row count, then rename. Returns the row count. A failure removes the temp file; an
        OSError is raised as LakeUnavailable."""
        return self.write_parquet_hashed(df, rel, compression)[0]

    def write_parquet_hashed(
        self, df: pl.DataFrame, rel: str, compression: str = "zstd"
    ) -> tuple[int, str]:
        """`write_parquet`, returning (rows, SHA-256 of the file's bytes): the hash the ledger
        records for the file, so lineage never has to read the lake back (the bytes are hashed
        as written: the fresh temp file, or the upload buffer on object stores)."""
        comp = "uncompressed" if compression == "none" else compression
        with _lake_io(f"write {rel}"):
            tmp = self._tmp_name(".parquet")
            try:
                if self.local:
                    _write_parquet_file(df, self.abs(tmp), comp)
                    fd = os.open(self.abs(tmp), os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    with open(self.abs(tmp), "rb") as f:
                        digest = _sha256_of(f)
                    meta = pq.read_metadata(self.abs(tmp))
                else:
                    buf = io.BytesIO()
                    df.write_parquet(buf, compression=comp, statistics=True)
                    data = buf.getvalue()
                    digest = hashlib.sha256(data).hexdigest()
                    with self.fs.open(self.abs(tmp), "wb") as f:
                        f.write(data)
                    with self.fs.open(self.abs(tmp), "rb") as f:
                        meta = pq.read_metadata(f)
                if meta.num_rows != df.height:
                    raise LakeError(
                        f"write check failed for {rel}: {meta.num_rows} != {df.height} rows"
                    )
                self._commit_tmp(tmp, rel)
            except BaseException:
                self._discard(tmp)
                raise
        return df.height, digest

    def file_sha256(self, rel: str) -> str:
        """SHA-256 of a lake file's bytes, read from the lake (on object storage: a download).
        Lineage calls it only for a file whose ledger record has no hash."""
        with self.fs.open(self.abs(rel), "rb") as f:
            return _sha256_of(f)

    def _discard(self, rel: str) -> None:
        """Best-effort removal of a file of ours (a temp file after a failed write)."""
        try:
            if self.local:
                os.unlink(self.abs(rel))
            else:
                self.fs.rm(self.abs(rel))
        except (OSError, FileNotFoundError):
            pass

    def remove(self, rel: str) -> None:
        """Remove a lake file; one already gone is fine."""
        with _lake_io(f"remove {rel}"), contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.abs(rel))

    # ---- content hints: xxh3 of sources seen (a fast pre-check before sha256) ---------------
    def has_hint(self, xxh3: str) -> bool:
        return self.fs.exists(self.abs(f"{LEDGER}/hints/{xxh3}"))

    def write_hint(self, xxh3: str, sha256: str | None) -> None:
        self.write_json({"sha256": sha256}, f"{LEDGER}/hints/{xxh3}")

    def write_json(self, obj: Any, rel: str) -> None:
        data = json.dumps(obj, indent=1, sort_keys=True, default=str).encode()
        with _lake_io(f"write {rel}"):
            tmp = self._tmp_name(".json")
            try:
                if self.local:
                    with open(self.abs(tmp), "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                else:
                    with self.fs.open(self.abs(tmp), "wb") as f:
                        f.write(data)
                self._commit_tmp(tmp, rel)
            except BaseException:
                self._discard(tmp)
                raise

    def clean_tmp(self) -> int:
        """Remove temp files left by killed writers. Call only while holding the commit lock:
        every writer writes its temps under the lock, so none are in flight."""
        n = 0
        with _lake_io("clean the lake's _tmp folder"):
            for p in self.fs.glob(self.abs(f"{TMP}/*")):
                self.fs.rm(p)
                n += 1
        return n

    @contextlib.contextmanager
    def commit_lock(self, timeout: float | None = None) -> Iterator[None]:
        """Serialise commits. On a local filesystem an flock, released by the kernel if the
        holder dies; on object stores a lock of this process only: run one writer per lake (a
        Prefect concurrency limit). ``timeout``: seconds to wait for the lock (None: for ever);
        then LakeUnavailable (ETIMEDOUT)."""
        if not self.local:
            with _REMOTE_LOCKS_GUARD:
                rlock = _REMOTE_LOCKS.setdefault(self.uri, threading.RLock())
            if not rlock.acquire(timeout=-1 if timeout is None else timeout):
                raise LakeUnavailable(
                    errno.ETIMEDOUT,
                    f"lake unavailable: timed out after {timeout:g} s waiting for the commit "
                    f"lock of {self.uri}",
                )
            try:
                self._locked_at = time.time()
                yield
            finally:
                self._locked_at = None
                rlock.release()
            return
        path = self.abs(f"{LOCKS}/commit.lock")
        with _lake_io("open the commit lock"):
            self.fs.makedirs(self.abs(LOCKS), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _flock(fd, timeout, path)
            self._locked_at = time.time()
            yield
        finally:
            self._locked_at = None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # ---- what a commit starts with: temp files, the ledger index, the startup sweep --------
    def ledger_index(self) -> LedgerIndex:
        """This Lake's ledger index (not loaded yet: call ``refresh``, or ``prepare_commit``)."""
        if self._index is None:
            self._index = LedgerIndex(self)
        return self._index

    def prepare_commit(self) -> LedgerIndex:
        """Call first thing under the commit lock: removes temp files of killed writers, brings
        the ledger index up to date (commits of other writers since the last call) and, the
        first time for this Lake object, sweeps the files no ledger record names."""
        self.clean_tmp()
        idx = self.ledger_index()
        if not self._swept:
            self.sweep_orphans()  # loads the index in full
            self._swept = True
        else:
            idx.refresh(locked=True)
        return idx

    def sweep_orphans(self) -> int:
        """Remove data and quarantine files that no ledger record names: what a writer killed
        between writing its files and its ledger record left. Call under the commit lock. Only
        files named like ours (``part-<sha16>[-r<8 hex>].parquet``) and older than the lock's
        acquisition (on object stores, where no lock keeps other writers out, older than
        `REMOTE_SWEEP_GRACE_S` before it) are removed; a file whose name points at a ledger
        record is checked against that record itself first. Returns the number removed."""
        start = self._locked_at or time.time()
        cutoff = start if self.local else start - REMOTE_SWEEP_GRACE_S
        idx = self.ledger_index()
        with _lake_io("sweep the lake for unreferenced files"):
            idx.refresh(locked=True, full=True)
            referenced = idx.referenced()
            by_prefix: dict[str, list[str]] = {}
            for k in idx.recs:
                by_prefix.setdefault(k[:16], []).append(k)
            n = 0
            for rel, mtime in self._our_files():
                m = _OUR_FILE.match(rel.rsplit("/", 1)[-1])
                if rel in referenced or m is None or mtime >= cutoff:
                    continue
                named_by = [
                    k
                    for k in by_prefix.get(m.group(1), [])
                    if rel in _named_files(self.ledger_record(k) or {})
                ]
                if named_by:  # the index was stale: trust the record
                    for k in named_by:
                        idx.reload_record(k)
                    continue
                log.warning("removing %s: no ledger record names it (left by a killed writer)", rel)
                self.remove(rel)
                n += 1
                if self.local:  # and the partition folders it leaves empty
                    d = os.path.dirname(self.abs(rel))
                    for _ in range(2):
                        if not d.startswith(self.abs(READINGS) + "/"):
                            break
                        try:
                            os.rmdir(d)
                        except OSError:
                            break
                        d = os.path.dirname(d)
        return n

    def _our_files(self) -> Iterator[tuple[str, float]]:
        """(path relative to the root, mtime) of the Parquet files under readings/ and
        _quarantine/."""
        for sub in (READINGS, QUARANTINE):
            base = self.abs(sub)
            if self.local:
                for dirpath, _dirs, names in os.walk(base):
                    for name in names:
                        if name.endswith(".parquet"):
                            full = os.path.join(dirpath, name)
                            with contextlib.suppress(FileNotFoundError):
                                yield full[len(self.root) + 1 :], os.stat(full).st_mtime
                continue
            if not self.fs.exists(base):
                continue
            for full, info in self.fs.find(base, detail=True).items():
                if full.endswith(".parquet"):
                    yield full[len(self.root) + 1 :], _mtime(info)

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

    def ledger_keys(self) -> dict[str, Any]:
        """Key -> a signature (size, mtime) of every committed ledger record, by listing."""
        base = self.abs(LEDGER)
        out: dict[str, Any] = {}
        if self.local:
            try:
                with os.scandir(base) as it:
                    for e in it:
                        if e.name.endswith(".json") and e.is_file():
                            out[e.name[:-5]] = None
            except FileNotFoundError:
                pass
            return out
        if not self.fs.exists(base):
            return out
        for info in self.fs.ls(base, detail=True):
            name = info["name"].rsplit("/", 1)[-1]
            if name.endswith(".json") and info.get("type") != "directory":
                sig = (info.get("size"), info.get("ETag") or info.get("etag"), _mtime(info))
                out[name[:-5]] = sig
        return out


def _flock(fd: int, timeout: float | None, path: str) -> None:
    if timeout is None:
        with _lake_io("take the commit lock"):
            fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LakeUnavailable(
                    errno.ETIMEDOUT,
                    f"lake unavailable: timed out after {timeout:g} s waiting for the commit "
                    f"lock {path} (another ingest holds it; lake.lock_timeout_s)",
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        except OSError as e:
            raise LakeUnavailable(
                e.errno, f"lake unavailable: cannot take the commit lock: {e.strerror}"
            ) from e


def _mtime(info: dict[str, Any]) -> float:
    """Modification time (epoch seconds) from an fsspec info dict (0 when it has none)."""
    for k in ("mtime", "LastModified", "last_modified", "updated", "created"):
        v = info.get(k)
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, datetime):
            return v.timestamp()
        if isinstance(v, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    return 0.0


def _named_files(rec: dict[str, Any]) -> set[str]:
    out = {f["path"] for f in rec.get("files", [])}
    if rec.get("quarantine_file"):
        out.add(rec["quarantine_file"])
    return out


class LedgerIndex:
    """The ledger in memory, for writers: committed records by key and by source, the data
    files of the visible records (those no other record supersedes) by partition, and each
    file's time range. Loaded once per Lake object; under the commit lock, ``refresh`` reads
    only what other writers committed since.

    Local lakes keep a journal, ``_ledger/_index.jsonl``: a writer appends ``{"add": record}``
    (fsynced) *before* writing the ledger record, its commit point, and ``{"del": key}`` after
    removing one. Loading replays the journal and reconciles it with a listing of the ledger (a
    line whose record was never written is dropped; records without a line, from a lake older
    than the journal, are read once and appended); a refresh reads the journal from where it left
    off and takes each new record from the ledger itself, so a line of a writer killed before
    its commit is never believed. Object stores (no append) list the ledger instead and read the
    records whose size or modification time changed."""

    def __init__(self, lake: Lake):
        self.lake = lake
        self._reset()

    def _reset(self) -> None:
        self.loaded = False
        self.recs: dict[str, dict[str, Any]] = {}
        self.gone: set[str] = set()  # keys another present record supersedes
        self.parts: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.by_source: dict[str, set[str]] = {}
        self.ranges: dict[str, tuple[int, int] | None] = {}
        self.sigs: dict[str, Any] = {}
        self.pos = 0  # journal: bytes read
        self.ino: int | None = None
        self.lines = 0

    # ---- queries --------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """Visible records, oldest first (as `Lake.records`)."""
        recs = [r for k, r in self.recs.items() if k not in self.gone]
        return sorted(recs, key=lambda r: (r.get("finished_at", ""), r["sha256"]))

    def records_of(self, source: str, key: str | None) -> list[dict[str, Any]]:
        """Visible records of this source path, and the one under this key."""
        keys = set(self.by_source.get(source, ())) | ({key} if key else set())
        recs = [self.recs[k] for k in keys if k in self.recs and k not in self.gone]
        return sorted(recs, key=lambda r: (r.get("finished_at", ""), r["sha256"]))

    def files_in(self, entity_id: str, date: str) -> list[dict[str, Any]]:
        return list(self.parts.get((entity_id, date), {}).values())

    def referenced(self) -> set[str]:
        """Every file a present record names (superseded ones too)."""
        out: set[str] = set()
        for r in self.recs.values():
            out |= _named_files(r)
        return out

    def time_range(self, path: str) -> tuple[int, int] | None:
        """(min, max) timestamp of a data file in UTC microseconds: from its ledger record, else
        from its Parquet footer's statistics (cached); None if unknown (read the file)."""
        if path not in self.ranges:
            self.ranges[path] = _footer_time_range(self.lake, path)
        return self.ranges[path]

    # ---- updates ----------------------------------------------------------------------------
    def _index(self, rec: dict[str, Any]) -> None:
        stats = rec.get("stats") or {}
        for f in rec.get("files", []):
            self.parts.setdefault((f["entity_id"], f["date"]), {})[f["path"]] = f
            r = stats.get(f["path"])
            if r is not None:
                self.ranges[f["path"]] = (int(r[0]), int(r[1]))

    def _unindex(self, rec: dict[str, Any]) -> None:
        for f in rec.get("files", []):
            part = self.parts.get((f["entity_id"], f["date"]))
            if part is not None:
                part.pop(f["path"], None)
            self.ranges.pop(f["path"], None)

    def _put(self, rec: dict[str, Any]) -> None:
        k = rec["sha256"]
        old = self.recs.get(k)
        if old is not None:
            self._unindex(old)
            self.by_source.get(old.get("source", ""), set()).discard(k)
        self.recs[k] = rec
        self.by_source.setdefault(rec.get("source", ""), set()).add(k)
        for s in rec.get("supersedes", []):
            if s != k and s not in self.gone:
                self.gone.add(s)
                if s in self.recs:
                    self._unindex(self.recs[s])
        if k not in self.gone:
            self._index(rec)

    def _drop(self, k: str) -> None:
        rec = self.recs.pop(k, None)
        if rec is not None:
            self._unindex(rec)
            self.by_source.get(rec.get("source", ""), set()).discard(k)
        self.sigs.pop(k, None)

    def reload_record(self, k: str) -> None:
        rec = self.lake.ledger_record(k)
        if rec is None:
            self._drop(k)
        else:
            self._put(rec)

    def begin(self, rec: dict[str, Any]) -> None:
        """Before a commit's ledger record is written (under the lock): journal it."""
        if self.lake.local:
            self._append([{"add": rec}])

    def committed(self, rec: dict[str, Any]) -> None:
        """After the ledger record is written."""
        self._put(rec)

    def removed(self, k: str) -> None:
        """After a ledger record was removed (a replaced record)."""
        self._drop(k)
        if self.lake.local:
            self._append([{"del": k}])

    # ---- loading ----------------------------------------------------------------------------
    def refresh(self, locked: bool = False, full: bool = False) -> None:
        """Bring the index up to date with the ledger. ``locked``: the caller holds the commit
        lock (the journal may then be repaired); ``full``: reconcile with a ledger listing."""
        with _lake_io("read the ledger index"):
            if not self.lake.local:
                self._reconcile_listing()
            elif full or not self.loaded:
                self._load(locked)
            else:
                self._tail(locked)

    def _journal(self) -> str:
        return self.lake.abs(JOURNAL)

    def _read_journal(self, start: int) -> tuple[list[dict[str, Any]], int, int] | None:
        """Complete lines from ``start``: (entries, position after them, inode); None when a line
        does not parse (a damaged journal). A partial last line (a torn append) is left."""
        with open(self._journal(), "rb") as f:
            ino = os.fstat(f.fileno()).st_ino
            f.seek(start)
            data = f.read()
        end = data.rfind(b"\n") + 1
        entries = []
        for line in data[:end].split(b"\n"):
            if not line.strip():
                continue
            try:
                e = json.loads(line)
            except ValueError:
                return None
            if not isinstance(e, dict):
                return None
            entries.append(e)
        return entries, start + end, ino

    def _load(self, locked: bool) -> None:
        self._reset()
        try:
            got = self._read_journal(0)
        except FileNotFoundError:
            got = ([], 0, None)
        rebuild = got is None
        entries, pos, ino = got if got is not None else ([], 0, None)
        recs: dict[str, dict[str, Any]] = {}
        adds: dict[str, int] = {}
        for e in entries:
            if "add" in e:
                k = e["add"]["sha256"]
                recs[k] = e["add"]
                adds[k] = adds.get(k, 0) + 1
            elif "del" in e:
                recs.pop(e["del"], None)
        self.lines = len(entries)
        listed = self.lake.ledger_keys()
        fix: list[dict[str, Any]] = []
        for k in [k for k in recs if k not in listed]:  # never committed, or removed
            del recs[k]
            fix.append({"del": k})
        for k in listed:
            # no line (a lake older than the journal), or several (a replacement: the last line
            # may be of a writer killed before its commit): the record itself decides
            if k not in recs or adds.get(k, 0) > 1:
                rec = self.lake.ledger_record(k)
                if rec is None:
                    continue
                if recs.get(k) != rec:
                    fix.append({"add": rec})
                recs[k] = rec
        for rec in recs.values():  # supersession does not depend on the order
            self._put(rec)
        self.pos, self.ino, self.loaded = pos, ino, True
        if not locked:
            return
        if rebuild or self.lines > 2 * len(self.recs) + 1000:
            self._rewrite()
        elif fix:
            self._append(fix)

    def _tail(self, locked: bool) -> None:
        try:
            st = os.stat(self._journal())
        except FileNotFoundError:
            if self.ino is not None:
                self._load(locked)  # removed under us: start again
            return
        if (self.ino is not None and st.st_ino != self.ino) or st.st_size < self.pos:
            self._load(locked)  # rewritten by another writer
            return
        if st.st_size == self.pos:
            return
        got = self._read_journal(self.pos)
        if got is None:
            self._load(locked)
            return
        entries, pos, ino = got
        for e in entries:
            if "add" in e:  # the record itself: the line may be of a writer killed before it
                self.reload_record(e["add"]["sha256"])
            elif "del" in e:
                self._drop(e["del"])
        self.pos, self.ino = pos, ino
        self.lines += len(entries)

    def _append(self, entries: list[dict[str, Any]]) -> None:
        data = b"".join(
            json.dumps(e, sort_keys=True, default=str, separators=(",", ":")).encode() + b"\n"
            for e in entries
        )
        fd = os.open(self._journal(), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            st = os.fstat(fd)
            if (self.ino is not None and st.st_ino != self.ino) or st.st_size < self.pos:
                os.close(fd)
                fd = -1
                self._load(locked=True)  # the journal changed under us (never under the lock)
                self._append(entries)
                return
            if st.st_size > self.pos:  # a torn line of a killed writer (we hold the lock)
                os.ftruncate(fd, self.pos)
            os.lseek(fd, self.pos, os.SEEK_SET)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            self.pos += len(data)
            self.ino = st.st_ino
            self.lines += len(entries)
        finally:
            if fd >= 0:
                os.close(fd)

    def _rewrite(self) -> None:
        """Write the journal afresh from the index (damaged, or mostly replaced lines)."""
        path = self._journal()
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        recs = sorted(self.recs.values(), key=lambda r: (r.get("finished_at", ""), r["sha256"]))
        data = b"".join(
            json.dumps({"add": r}, sort_keys=True, default=str, separators=(",", ":")).encode()
            + b"\n"
            for r in recs
        )
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(os.path.dirname(path))
        st = os.stat(path)
        self.pos, self.ino, self.lines = st.st_size, st.st_ino, len(recs)

    def _reconcile_listing(self) -> None:
        """Object stores: list the ledger; read the records that are new or changed."""
        listed = self.lake.ledger_keys()
        for k in [k for k in self.recs if k not in listed]:
            self._drop(k)
        for k, sig in listed.items():
            if k not in self.recs or self.sigs.get(k) != sig:
                rec = self.lake.ledger_record(k)
                if rec is not None:
                    self._put(rec)
                    self.sigs[k] = sig
        self.loaded = True


def _footer_time_range(lake: Lake, path: str) -> tuple[int, int] | None:
    """(min, max) of the ``timestamp`` column in UTC microseconds from a Parquet footer's
    statistics; None when they are missing."""
    try:
        if lake.local:
            md = pq.read_metadata(lake.abs(path))
        else:
            with lake.fs.open(lake.abs(path), "rb") as f:
                md = pq.read_metadata(f)
        names = [md.schema.column(i).path for i in range(md.num_columns)]
        if "timestamp" not in names or md.num_row_groups == 0:
            return None
        j = names.index("timestamp")
        lo = hi = None
        for g in range(md.num_row_groups):
            st = md.row_group(g).column(j).statistics
            if st is None or not st.has_min_max:
                return None
            a, b = st.min, st.max
            if not (isinstance(a, datetime) and isinstance(b, datetime)):
                return None
            a_us = (a - _EPOCH) // timedelta(microseconds=1)
            b_us = -((_EPOCH - b) // timedelta(microseconds=1))  # rounded up
            lo = a_us if lo is None else min(lo, a_us)
            hi = b_us if hi is None else max(hi, b_us)
        return None if lo is None or hi is None else (lo, hi)
    except (OSError, ValueError, TypeError, IndexError):
        return None


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
    inputs: list[str],
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    follow_symlinks: bool = False,
) -> list[str]:
    """Files, folders (recursively) and globs -> sorted unique source files. In folders, the
    files whose name matches one of `include` (fnmatch patterns, case-insensitive; default:
    CSV, CSV.gz, Parquet, .mat, .npy, .npz, .ts and .arff) and none of `exclude`; a file or
    glob named explicitly is taken whatever its name. Links to files and special files (FIFOs,
    devices) are listed, so that ingest refuses them with a reason (it never opens them); a
    local folder walk does not enter linked folders unless ``follow_symlinks``, and then only
    those that resolve inside the folder walked."""
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
            found = _walk_local(p, follow_symlinks) if not proto else fs.find(p)
            matches = [m for m in found if _is_source(m, patterns) and not _is_source(m, skip)]
            if not matches:
                raise FileNotFoundError(
                    f"no files matching data.include {patterns} in folder {item} "
                    f"({_holds(found)}); add a pattern to data.include, e.g. '*.txt'"
                )
        else:  # a missing file is a usage error (CLI exit 2), not a rejected source
            # (a local link counts as there even when dangling: ingest refuses it with a reason)
            there = os.path.lexists(p) if not proto else fs.exists(p)
            matches = [p] if there else []
        if not matches:
            raise FileNotFoundError(f"no such file, folder or glob match: {item}")
        out += [proto + m if proto else str(Path(m)) for m in matches]
    return sorted(dict.fromkeys(out))


def _walk_local(root: str, follow_symlinks: bool) -> list[str]:
    """Every non-folder entry under local folder ``root`` (links and special files included).
    Linked folders are entered only with ``follow_symlinks`` and when they resolve inside
    ``root``, each real folder once (no loops)."""
    real_root = os.path.realpath(root)
    seen = {real_root}
    out: list[str] = []
    todo = [root]
    while todo:
        top = todo.pop()
        for d, dirs, files in os.walk(top, followlinks=False):
            out += [os.path.join(d, f) for f in files]
            for sub in dirs:
                full = os.path.join(d, sub)
                if not os.path.islink(full):
                    continue
                real = os.path.realpath(full)
                inside = real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)
                if follow_symlinks and inside and real not in seen:
                    seen.add(real)
                    todo.append(full)
                else:
                    log.warning(
                        "not walked: %s is a symbolic link to a folder (%s)",
                        full,
                        "outside the folder walked, or walked already"
                        if follow_symlinks
                        else "data.follow_symlinks is false",
                    )
    return sorted(out)


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


SOURCE_PATTERNS = list(DEFAULT_INCLUDE)  # data.include's default: one list for both


def _is_source(name: str, patterns: list[str]) -> bool:
    base = name.rsplit("/", 1)[-1]
    low = base.lower()
    return not base.startswith(".") and any(fnmatch.fnmatchcase(low, p) for p in patterns)
