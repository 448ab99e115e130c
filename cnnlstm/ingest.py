"""Ingest landing files (CSV, CSV.gz, Parquet, MATLAB .mat, NumPy .npy/.npz, sktime .ts; one
series per row with data.wide) into the readings lake.

Per source file::

    bytes -> sha256 -> already in the ledger? (skip: same content under any name adds nothing)
          -> parse (no reader option that drops or truncates lines; ragged lines are quarantined
             with their row number) -> map columns to the contract (entity, UTC-us timestamp,
             float32 channels, label, metadata) -> validate with pandera (lazy: every failure)
          -> drop identical duplicates, quarantine conflicting ones (in the file and vs the lake)
          -> under the commit lock: write partitions + quarantine atomically, ledger record last.

Accounting, per file: ``rows_read == accepted + quarantined + duplicates``. A file-level problem
(empty, header only, not UTF-8, wrong delimiter, missing columns, over the size cap, corrupt gzip
or Parquet, ...) rejects the file with a reason, records it in the ledger and lets the batch go on.
A lake that cannot take the file (disk full, read-only, a commit-lock timeout: `LakeUnavailable`)
makes it ``failed``: nothing recorded against the source, run again (CLI exit 3).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandera.errors as pa_errors
import polars as pl
import xxhash

from cnnlstm import __version__
from cnnlstm.config import (
    Config,
    ConfigError,
    DataConfig,
    TimestampSpec,
    leap_second_pattern,
    pattern_directives,
    pattern_has_offset,
)
from cnnlstm.formats import HEAD, NOT_TEXT, ROW, FileRejected, is_text, read_source
from cnnlstm.formats import text as csv_text
from cnnlstm.formats.base import CLIP, clip
from cnnlstm.formats.gz import gunzip
from cnnlstm.label_table import LoadedTable, load_label_table
from cnnlstm.lake import (
    LEDGER,
    QUARANTINE,
    Lake,
    LakeError,
    LakeUnavailable,
    encode_entity,
    expand_sources,
    is_local,
    read_bytes,
    source_size,
)
from cnnlstm.sources import FileChanged, LocalFile, local_path, open_local
from schemas.readings import (
    EXTRA_DTYPES,
    LABEL_DTYPES,
    READINGS_KEY,
    TIMESTAMP_DTYPE,
    QuarantineRows,
    lake_schema,
    landed_schema,
)

log = logging.getLogger("cnnlstm.ingest")

ERR = "_err"
DATE = "_date"
# timestamps outside this range are almost always an epoch-unit mistake
TS_MIN = datetime(1970, 1, 1, tzinfo=UTC)
TS_MAX = datetime(2200, 1, 1, tzinfo=UTC)
ISO_AWARE = ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"]
ISO_NAIVE = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d"]
LEAP_SECOND = r"[Tt ]\d{1,2}:\d{1,2}:60(?:\D|$)"  # HH:MM:60: parsed leniently as HH:MM+1:00
F32_MIN_NORMAL = float(np.finfo(np.float32).tiny)  # 1.1754944e-38


@dataclass
class FileReport:
    source: str
    sha256: str | None = None
    # committed | skipped | rejected | failed (the lake, not the file) | retry (the file changed
    # while it was read: not committed, ingest it again)
    outcome: str = "pending"
    rows_read: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    reason: str | None = None
    notes: list[str] = field(default_factory=list)  # how the file was read (e.g. an index field)
    files_written: int = 0
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return PurePosixPath(self.source).name

    def check_accounting(self) -> None:
        assert self.rows_read == self.accepted + self.quarantined + self.duplicates, asdict(self)


@dataclass
class IngestReport:
    lake: str
    files: list[FileReport] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        keys = ("rows_read", "accepted", "quarantined", "duplicates")
        t = {k: sum(getattr(f, k) for f in self.files) for k in keys}
        for o in ("committed", "skipped", "rejected", "failed", "retry"):
            t[o] = sum(f.outcome == o for f in self.files)
        return t

    @property
    def clean(self) -> bool:
        return all(
            f.outcome not in ("rejected", "failed", "retry") and not f.quarantined
            for f in self.files
        )

    @property
    def failed(self) -> bool:
        """Some file could not be written to the lake (an infrastructure failure) or changed
        while it was read (``retry``): either way, run again."""
        return any(f.outcome in ("failed", "retry") for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lake": self.lake,
            "clean": self.clean,
            "totals": self.totals(),
            "files": [asdict(f) | {"name": f.name} for f in self.files],
        }


# ------------------------------------------------------------------------------------------------
# public entry points


def ingest(
    cfg: Config,
    inputs: list[str],
    on_file: Callable[[FileReport], None] | None = None,
    reprocess: bool = False,
    dry_run: bool = False,
) -> IngestReport:
    """Ingest files, folders and globs into ``cfg``'s lake. Never raises for a bad file: its
    report says ``rejected`` and why. ``on_file`` is called after each file (progress).
    ``reprocess``: read sources already in the lake again under the current config and replace
    their rows (atomically: readers see the old rows until the new ledger record commits).
    ``dry_run``: read, map, validate and dedup every file (against the lake too) but write
    nothing: "committed" then means "would be committed". A data.label.table that cannot be
    read is a ConfigError here, before any file."""
    load_label_table(cfg)
    lake = Lake(cfg.lake_uri)
    if not dry_run:
        lake.ensure()
    report = IngestReport(lake=cfg.lake_uri)
    for src in expand_sources(inputs, cfg.data.include, cfg.data.exclude, cfg.data.follow_symlinks):
        rep = ingest_file(cfg, lake, src, reprocess=reprocess, dry_run=dry_run)
        report.files.append(rep)
        if on_file:
            on_file(rep)
    return report


def ingest_file(
    cfg: Config, lake: Lake, source: str, reprocess: bool = False, dry_run: bool = False
) -> FileReport:
    t0 = time.perf_counter()
    rep = FileReport(source=source)
    try:
        _ingest_one(cfg, lake, source, rep, reprocess, dry_run)
    except FileChanged as e:  # not the content's fault: nothing recorded, run again later
        _retry(rep, str(e))
    except FileRejected as e:
        _reject(cfg, lake, rep, str(e), record=not dry_run)
    except LakeUnavailable as e:  # disk full, read-only lake, lock timeout: not the file's fault
        _fail(rep, e)
    except LakeError:
        raise  # the lake itself is unusable: stop the batch
    except ConfigError:
        raise  # the config (data.label.table) is unusable: stop the batch
    except Exception as e:  # a bug or an unforeseen input must not stop the other files
        log.exception("unexpected error ingesting %s", source)
        msg = f"unexpected error: {type(e).__name__}: {clip(e, 300)}"
        _reject(cfg, lake, rep, msg, record=not dry_run)
    rep.seconds = round(time.perf_counter() - t0, 3)
    rep.check_accounting()
    return rep


# ------------------------------------------------------------------------------------------------
# one file


def _ingest_one(
    cfg: Config,
    lake: Lake,
    source: str,
    rep: FileReport,
    reprocess: bool = False,
    dry_run: bool = False,
) -> None:
    # A local file is opened once, after the link and file-type checks (cnnlstm.sources: a link
    # out of the landing root, a FIFO or a device is refused unopened); the hint, the hash and
    # the parser all read that open file, and its size and mtime are compared after the read
    # (a file written to meanwhile is not committed: FileChanged, outcome "retry").
    lf: LocalFile | None = None
    if is_local(source):
        lf = open_local(local_path(source), _landing(cfg), cfg.data.follow_symlinks)
        size = lf.size
    else:
        try:
            size = source_size(source)
        except (OSError, FileNotFoundError) as e:
            raise FileRejected(f"cannot read file: {clip(e, 300)}") from e
    if size > cfg.lake.max_file_bytes:
        raise FileRejected(
            f"file is {size} bytes, over the cap lake.max_file_bytes={cfg.lake.max_file_bytes}"
        )
    # A plain local CSV is parsed by polars straight from the open file (memory-mapped) and
    # hashed by streaming; anything else (gzip, Parquet, remote) is read into memory once and
    # those bytes are hashed and parsed.
    mapped_csv = lf is not None and not source.lower().endswith(NOT_TEXT)
    if mapped_csv and lf is not None:  # by its first bytes another format (a .txt ARFF file)?
        try:
            mapped_csv = is_text(source, lf.head(HEAD))
        except OSError as e:
            raise FileRejected(f"cannot read file: {clip(e, 300)}") from e
    try:
        data: bytes | None = (
            None if mapped_csv else lf.read_all() if lf is not None else read_bytes(source)
        )
    except OSError as e:
        raise FileRejected(f"cannot read file: {clip(e, 300)}") from e
    if lf is None and data is not None and len(data) != size:
        raise FileChanged(
            f"file changed while being read ({size} bytes listed, {len(data)} read); not "
            "committed: ingest it again once it is complete"
        )
    path = lf.reader_path if lf is not None else source  # what the hint, hash and parser read
    # The ledger is keyed by sha256. A cheap xxh3 hint says whether this content may have been
    # seen: if so, hash now and skip early; if not, hash in a thread while polars parses.
    meta = file_meta(cfg, source)  # entity and path columns: a mismatch rejects the file early
    salt = _path_salt(cfg, meta)
    hint = _hint(data, path, size)
    if lake.has_hint(hint) and not reprocess:
        digest = _digest(hashlib.sha256(), data, path, size).hexdigest()
        if lf is not None:
            lf.check_unchanged()
        rep.sha256 = _source_key(digest, salt)
        prev = lake.ledger_record(rep.sha256)
        if prev is not None:
            rep.outcome = "skipped"
            rep.reason = (
                f"same content already ingested from {prev['source']} at {prev['finished_at']}"
            )
            return
        hasher = None
    else:
        hasher = _Sha256Thread(data, path, size)
    if mapped_csv:
        src, bad = csv_text.read_csv(
            None, cfg.data, path=path, notes=rep.notes, max_rows=cfg.lake.max_rows_per_file
        )
    else:
        assert data is not None
        src, bad = read_source(
            data,
            source,
            cfg.data,
            cfg.lake.max_file_bytes,
            cfg.lake.max_rows_per_file,
            notes=rep.notes,
            max_gzip_ratio=cfg.lake.max_gzip_ratio,
        )
    digest = hasher.result() if hasher is not None else None
    if lf is not None:
        lf.check_unchanged()  # so the bytes hashed are the bytes parsed
    if digest is not None:
        rep.sha256 = _source_key(digest, salt)
    rep.rows_read = src.height + len(bad)
    mapped = map_columns(src, cfg.data, meta)
    if cfg.data.denormals == "flush" and (n_den := count_denormals(src, cfg.data)):
        rep.notes.append(
            f"{n_den} channel values below float32's normal range stored as 0.0 "
            "(data.denormals: flush)"
        )
    good, quarantine = split_valid(src, mapped, cfg.data)
    quarantine = pl.concat([_bad_rows_frame(bad), quarantine], how="vertical")
    good, dupq, n_dups = dedup_in_file(src, good, cfg.data)
    quarantine = pl.concat([quarantine, dupq], how="vertical")
    if dry_run:  # the accounting a commit would record; nothing is written, no lock taken
        lake.ledger_index().refresh(locked=False)
        good, nameq = quarantine_unpartitionable(lake, src, good)
        old = _replaced(lake, source, rep.sha256) if reprocess else []
        ignore = {f["path"] for r in old for f in r.get("files", [])}
        good, lakeq, n_lake_dups = dedup_against_lake(lake, src, good, cfg.data, ignore)
        rep.duplicates = n_dups + n_lake_dups
        rep.accepted = good.height
        rep.quarantined = quarantine.height + nameq.height + lakeq.height
        rep.outcome = "committed"
        rep.notes.append("dry run: nothing written")
        return

    with lake.commit_lock(cfg.lake.lock_timeout_s):
        # temp files of killed writers; the ledger index brought up to date; the first time for
        # this Lake, the sweep of files no ledger record names
        lake.prepare_commit()
        old = _replaced(lake, source, rep.sha256) if reprocess else []
        if not old and (prev := lake.ledger_record(rep.sha256)) is not None:
            rep.outcome = "skipped"  # a concurrent ingest won
            rep.rows_read = 0
            rep.reason = f"same content committed concurrently from {prev['source']}"
            return
        good, nameq = quarantine_unpartitionable(lake, src, good)
        ignore = {f["path"] for r in old for f in r.get("files", [])}
        good, lakeq, n_lake_dups = dedup_against_lake(lake, src, good, cfg.data, ignore)
        quarantine = pl.concat([quarantine, nameq, lakeq], how="vertical")
        rep.duplicates = n_dups + n_lake_dups
        rep.accepted = good.height
        rep.quarantined = quarantine.height
        rep.check_accounting()
        # (data.wide: the rows are melted, not the file's lines: raw keeps the long row)
        if quarantine.height and cfg.data.wide is None and _parsed_numbers(src, source, data):
            raw = data if data is not None else _read_again(lf, source)
            quarantine = _with_source_text(quarantine, raw, source, cfg)
        lake.write_hint(hint, rep.sha256)
        _commit(cfg, lake, source, rep, good, quarantine, old)
        if old:
            _remove_replaced(lake, rep.sha256, old)
            rep.notes.append(
                f"replaced {sum(r.get('accepted', 0) for r in old)} rows of "
                f"{len(old)} earlier ingest(s) of this source"
            )
    rep.outcome = "committed"


def _path_salt(cfg: Config, meta: FileMeta) -> str:
    """What decides a file's rows besides its bytes: the mapping (`mapping_fingerprint`) and,
    when data.path_columns or a composite entity reads the path, the path values (the same bytes
    under another path are then other rows); with data.label.table, the file's stem and
    entity (the same bytes under another name may have another label)."""
    d = cfg.data
    parts: dict[str, Any] = {"mapping": mapping_fingerprint(d, meta.label_table)}
    if d.path_columns is not None or d.entity.parts:
        parts |= {
            "path": meta.path,
            "file": meta.stem if "file" in (d.entity.parts or []) else None,
        }
    if meta.label_table is not None:  # the label is looked up by the file's name (or entity)
        parts["label_key"] = {"file": meta.stem, "entity": meta.entity}
    return json.dumps(parts, sort_keys=True, default=str)


def _source_key(sha256: str, salt: str) -> str:
    """The ledger key of a source: its content's sha256 combined with `_path_salt`."""
    return hashlib.sha256(f"{sha256}\n{salt}".encode()).hexdigest()


def source_quick_key(cfg: Config, path: str) -> tuple[str, str]:
    """``(hint, key)`` for a local source without reading all of it: the content hint
    (`_hint`) and a key that also covers the file's size and modification time and what else
    decides its rows (`_path_salt`). For callers that cache per source (the Prefect ingest
    flow): equal keys mean the same rows, unless a file was rewritten with the same size, first
    and last MiB and mtime. Raises FileRejected when the path does not match the config, or is
    a link or a special file that ingest refuses (nothing is opened then)."""
    lf = open_local(local_path(path), _landing(cfg), cfg.data.follow_symlinks)
    try:
        hint = _hint(None, lf.reader_path, lf.size)
    finally:
        lf.close()
    salt = _path_salt(cfg, file_meta(cfg, path))
    key = xxhash.xxh3_128_hexdigest(f"{hint}|{lf.size}|{lf.st.st_mtime_ns}|{salt}".encode())
    return hint, key


def _landing(cfg: Config) -> str | None:
    """data.landing as a path (None when unset): the root links may not leave."""
    return cfg.resolve_path(cfg.data.landing) if cfg.data.landing else None


def _read_again(lf: LocalFile | None, source: str) -> bytes:
    """The source's bytes once more (the same open file for a local one)."""
    return lf.read_all() if lf is not None else read_bytes(source)


def _hint(data: bytes | None, path: str, size: int | None = None) -> str:
    """A cheap fingerprint: xxh3 of the size, the first and the last MiB (of the first
    ``size`` bytes of ``path`` when ``data`` is None). Only a pre-filter: a match is confirmed
    by the full sha256 before anything is skipped."""
    h = xxhash.xxh3_128()
    if data is not None:
        h.update(str(len(data)).encode())
        h.update(data[: 1 << 20])
        h.update(data[-(1 << 20) :])
        return h.hexdigest()
    with open(path, "rb") as f:
        if size is None:
            size = f.seek(0, 2)
        h.update(str(size).encode())
        f.seek(0)
        h.update(f.read(min(size, 1 << 20)))
        start = max(0, size - (1 << 20))
        f.seek(start)
        h.update(f.read(size - start))
    return h.hexdigest()


def _digest(h: Any, data: bytes | None, path: str, size: int | None = None) -> Any:
    """Feed ``data``, or the file at ``path`` (its first ``size`` bytes) streamed in chunks,
    to the hash object ``h``."""
    if data is not None:
        h.update(data)
        return h
    left = -1 if size is None else size
    with open(path, "rb") as f:
        while left != 0:
            chunk = f.read(1 << 24 if left < 0 else min(1 << 24, left))
            if not chunk:
                break
            h.update(chunk)
            if left > 0:
                left -= len(chunk)
    return h


class _Sha256Thread(threading.Thread):
    """sha256 in a thread (hashlib releases the GIL on large buffers), beside the parse."""

    def __init__(self, data: bytes | None, path: str, size: int | None = None):
        super().__init__(daemon=True)
        self._data, self._path, self._size, self._hex = data, path, size, ""
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            h = _digest(hashlib.sha256(), self._data, self._path, self._size)
            self._hex = h.hexdigest()
        except BaseException as e:  # re-raised in the caller's thread
            self._error = e

    def result(self) -> str:
        self.join()
        if self._error is not None:
            raise FileRejected(f"cannot read file: {clip(self._error, 300)}")
        return self._hex


def _commit(
    cfg: Config,
    lake: Lake,
    source: str,
    rep: FileReport,
    good: pl.DataFrame,
    quarantine: pl.DataFrame,
    old: list[dict[str, Any]] | None = None,
) -> None:
    assert rep.sha256 is not None
    written: list[str] = []
    record: dict[str, Any] = {}
    try:
        _write_commit(cfg, lake, source, rep, good, quarantine, old, written, record)
    except BaseException:
        # a failed commit removes what it wrote (a kill -9 leaves it to the next startup sweep),
        # unless its ledger record made it (a failure after the rename: the commit stands)
        if not _is_committed(lake, record):
            for rel in written:
                try:
                    lake.remove(rel)
                except OSError as e:
                    log.warning("could not remove %s after a failed commit: %s", rel, e)
        raise
    lake.ledger_index().committed(record)


def _is_committed(lake: Lake, record: dict[str, Any]) -> bool:
    if not record.get("commit_id"):
        return False
    try:
        found = lake.ledger_record(record["sha256"])
    except (LakeError, OSError):
        return True  # unknown: keep the files (the sweep checks the record itself)
    return found is not None and found.get("commit_id") == record["commit_id"]


def _write_commit(
    cfg: Config,
    lake: Lake,
    source: str,
    rep: FileReport,
    good: pl.DataFrame,
    quarantine: pl.DataFrame,
    old: list[dict[str, Any]] | None,
    written: list[str],
    record: dict[str, Any],
) -> None:
    """Partition files, quarantine file, then the ledger record (the commit point), journalled
    in the ledger index first. Appends each file written to ``written``; fills ``record``."""
    assert rep.sha256 is not None
    # a replacement writes beside the files it replaces (they stay readable until the commit)
    sha16 = rep.sha256[:16] + (f"-r{uuid.uuid4().hex[:8]}" if old else "")
    started = datetime.now(UTC)
    files: list[dict[str, Any]] = []
    stats: dict[str, list[int]] = {}  # path -> [min, max] timestamp, UTC microseconds
    if good.height:
        lake_schema(cfg.data).validate(good.drop(ROW, DATE).lazy())  # schema-level contract check
        for part in _runs(good, ["entity_id", DATE]):
            entity_id, date = part["entity_id"][0], part[DATE][0]
            rel = f"{lake.partition_dir(entity_id, date.isoformat())}/part-{sha16}.parquet"
            written.append(rel)
            n, digest = lake.write_parquet_hashed(part.drop(ROW, DATE), rel, cfg.lake.compression)
            files.append(  # the file's hash: MLflow lineage reads it here, not from the file
                {"path": rel, "entity_id": entity_id, "date": date.isoformat(), "rows": n}
                | {"sha256": digest}
            )
            us = part["timestamp"].dt.epoch("us")
            stats[rel] = [int(us.min()), int(us.max())]  # type: ignore[arg-type]
    qfile = None
    if quarantine.height:
        qdf = quarantine.sort("source_row").select(
            source_file=pl.lit(source),
            source_sha256=pl.lit(rep.sha256),
            source_row=pl.col("source_row").cast(pl.Int64),
            reason=pl.col("reason"),
            raw=pl.col("raw"),
            ingested_at=pl.lit(started).cast(TIMESTAMP_DTYPE),
        )
        QuarantineRows.validate(qdf, lazy=True)
        qfile = f"{QUARANTINE}/part-{sha16}.parquet"
        written.append(qfile)
        lake.write_parquet(qdf, qfile, cfg.lake.compression)
    rep.files_written = len(files) + (qfile is not None)
    record |= {
        "sha256": rep.sha256,
        "source": source,
        "name": rep.name,
        "outcome": "committed",
        "rows_read": rep.rows_read,
        "accepted": rep.accepted,
        "quarantined": rep.quarantined,
        "duplicates": rep.duplicates,
        "files": files,
        "quarantine_file": qfile,
        "dataset": cfg.data.name,
        "mapping": mapping_fingerprint(cfg.data, load_label_table(cfg)),
        "supersedes": sorted({r["sha256"] for r in old or []} - {rep.sha256}),
        "cnnlstm_version": __version__,
        "finished_at": datetime.now(UTC).isoformat(),
        "stats": stats,  # time range of each data file: dedup reads only the files it overlaps
        "commit_id": uuid.uuid4().hex,
    }
    lake.ledger_index().begin(record)  # journalled before the commit point
    lake.write_json(record, f"{LEDGER}/{rep.sha256}.json")  # the commit point


def _replaced(lake: Lake, source: str, key: str | None) -> list[dict[str, Any]]:
    """The committed records a reprocess of `source` replaces: those of the same source path,
    and the one under the same key (from the ledger index, up to date under the lock)."""
    idx = lake.ledger_index()
    if not idx.loaded:
        idx.refresh(locked=False)
    return idx.records_of(source, key)


def _remove_replaced(lake: Lake, key: str, old: list[dict[str, Any]]) -> None:
    """After the commit: the replaced records' files and ledger records (a crash here leaves
    only files of superseded records; readers already follow the new record)."""
    idx = lake.ledger_index()
    for r in old:
        for f in r.get("files", []):
            lake.remove(f["path"])
        if r.get("quarantine_file"):
            lake.remove(r["quarantine_file"])
        if r["sha256"] != key:
            lake.remove(f"{LEDGER}/{r['sha256']}.json")
            idx.removed(r["sha256"])


def mapping_fingerprint(d: DataConfig, label_table: LoadedTable | None = None) -> str:
    """SHA-256 of the data keys that decide what rows a file gives (entity, timestamp,
    channels and their ranges, label, metadata columns, CSV dialect, path columns; rename,
    wide, denormals, csv.record_end, csv.decimal_comma and csv.encoding when not the
    default; label.table with the sha256 of the table file, ``label_table``, when given).
    Part of a source's ledger key: after a fix of these, the same file is read again."""
    keys = (
        "entity",
        "timestamp",
        "label",
        "columns",
        "keep_other_columns",
        "allow_missing_channels",
        "csv",
        "path_columns",
    )
    dump = d.model_dump(mode="json")
    # keys added later count only when not their default: the fingerprints of configs
    # without them stay valid
    for key, default in (("record_end", None), ("decimal_comma", False), ("encoding", "utf-8")):
        if dump["csv"][key] == default:
            del dump["csv"][key]
    if dump["label"] is not None:
        table = dump["label"].pop("table")
        if table is not None:  # its content decides the labels: an edit reads the files again
            if label_table is None:
                raise ValueError("mapping_fingerprint: data.label.table needs the table read")
            dump["label"]["table"] = table | {"sha256": label_table.sha256}
    doc = {k: dump[k] for k in keys} | {
        "channels": [{k: c[k] for k in ("name", "source", "min", "max")} for c in dump["channels"]]
    }
    if d.denormals != "quarantine":  # only when not the default: earlier keys stay valid
        doc["denormals"] = d.denormals
    if d.rename:  # likewise only when given
        doc["rename"] = dump["rename"]
    if d.wide is not None:
        doc["wide"] = dump["wide"]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _reject(cfg: Config, lake: Lake, rep: FileReport, reason: str, record: bool = True) -> None:
    rep.outcome, rep.reason = "rejected", reason
    rep.accepted = rep.quarantined = rep.duplicates = rep.rows_read = 0
    log.warning("rejected %s: %s", rep.source, reason)
    if record:
        _record_rejection(lake, rep, cfg)


def _record_rejection(lake: Lake, rep: FileReport, cfg: Config) -> None:
    key = rep.sha256 or hashlib.sha256(rep.source.encode()).hexdigest()
    rec = {
        "sha256": rep.sha256,
        "source": rep.source,
        "name": rep.name,
        "outcome": "rejected",
        "reason": rep.reason,
        "dataset": cfg.data.name,
        "finished_at": datetime.now(UTC).isoformat(),
    }
    try:
        with lake.commit_lock(cfg.lake.lock_timeout_s):
            lake.clean_tmp()
            lake.write_json(rec, f"{LEDGER}/rejected/{key}.json")
    except OSError as e:  # the report still says rejected; the ledger could not be written
        log.error("could not record rejection of %s in the ledger: %s", rep.source, e)


def _retry(rep: FileReport, reason: str) -> None:
    """The file changed while it was read (FileChanged): outcome ``retry``, nothing written or
    recorded (its content is not judged), no row counted; a later run ingests it whole."""
    rep.outcome, rep.reason, rep.sha256 = "retry", reason, None
    rep.accepted = rep.quarantined = rep.duplicates = rep.rows_read = 0
    rep.files_written = 0
    log.warning("not committed %s: %s", rep.source, reason)


def _fail(rep: FileReport, e: OSError) -> None:
    """An infrastructure failure (LakeUnavailable): outcome ``failed``, nothing recorded in the
    ledger (the source is not bad data), no row counted; a later run ingests the file."""
    rep.outcome, rep.reason = "failed", str(e)
    rep.accepted = rep.quarantined = rep.duplicates = rep.rows_read = 0
    rep.files_written = 0
    log.error("failed %s: %s (nothing recorded; run again)", rep.source, e)


# ------------------------------------------------------------------------------------------------
# reading


def file_stem(source: str) -> str:
    """The file name without its extension (.csv.gz, .csv, .txt, .parquet, ...). A number
    after the last dot is no extension: the IMS bearing snapshots `2004.02.12.10.32.39` keep
    their seconds."""
    name = PurePosixPath(source).name
    name = re.sub(r"\.gz$", "", name, flags=re.IGNORECASE)
    if "." not in name.strip(".") or name.rsplit(".", 1)[1].isdigit():
        return name
    return name.rsplit(".", 1)[0]


@dataclass
class FileMeta:
    """What a file's name and path say: a constant entity id and path column values."""

    entity: str | None = None
    path: dict[str, Any] = field(default_factory=dict)
    stem: str = ""
    label_table: LoadedTable | None = None  # data.label.table, read (cached) by file_meta


def _relative(cfg: Config, source: str) -> str:
    """The source's path relative to data.landing when it is under it, else as given."""
    if cfg.data.landing:
        root = cfg.resolve_path(cfg.data.landing).rstrip("/")
        if source.startswith(root + "/"):
            return source[len(root) + 1 :]
    return source.replace("\\", "/")


def file_meta(cfg: Config, source: str) -> FileMeta:
    d = cfg.data
    stem = file_stem(source)
    meta = FileMeta(entity=d.entity.constant, stem=stem)
    if d.path_columns is not None:
        rel = _relative(cfg, source)
        m = re.search(d.path_columns.pattern, rel)
        if not m:
            raise FileRejected(
                f"path {rel!r} does not match data.path_columns.pattern {d.path_columns.pattern!r}"
            )
        for name, raw in m.groupdict().items():
            kind = d.path_columns.types.get(name, "string")
            meta.path[name] = _typed_path_value(name, raw, kind, rel)
    if d.entity.from_filename is not None:
        name = PurePosixPath(source).name
        m = re.search(d.entity.from_filename, stem)
        if not m:
            raise FileRejected(
                f"file name {name!r} does not match "
                f"data.entity.from_filename {d.entity.from_filename!r}"
            )
        meta.entity = m.groupdict().get("entity") or m.group(0)
        if not meta.entity:
            raise FileRejected(f"data.entity.from_filename gave an empty entity id for {name!r}")
    meta.label_table = load_label_table(cfg)
    return meta


def _typed_path_value(name: str, raw: str | None, kind: str, rel: str) -> Any:
    if raw is None:
        return None
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            low = raw.strip().lower()
            if low not in ("true", "1", "yes", "false", "0", "no"):
                raise ValueError(raw)
            return low in ("true", "1", "yes")
    except ValueError:
        raise FileRejected(
            f"path column {name!r}: cannot parse {raw!r} as {kind} (path {rel!r})"
        ) from None
    return raw


def _parsed_numbers(src: pl.DataFrame, source: str, data: bytes | None) -> bool:
    """Did the fast CSV path parse numbers (so ``raw`` would show reformatted values)?
    ``data``: the file's bytes (None: a plain local CSV, parsed from the file)."""
    is_csv = data is None or is_text(source, data[:HEAD])
    return is_csv and any(dt != pl.String for c, dt in src.schema.items() if c != ROW)


def _with_source_text(
    quarantine: pl.DataFrame, data: bytes, source: str, cfg: Config
) -> pl.DataFrame:
    """Replace ``raw`` of quarantined rows by the source text of each field (read once more, all
    as strings: only files with quarantined rows pay this)."""
    if source.lower().endswith(".gz") or data[:2] == b"\x1f\x8b":
        data = gunzip(data, cfg.lake.max_file_bytes)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    dcfg = cfg.data
    data = csv_text.as_utf8(data, dcfg)  # data.csv.encoding: as `read_csv` reads
    data = csv_text.records_as_lines(data, dcfg)  # data.csv.record_end: as `read_csv` reads
    if dcfg.csv.whitespace:
        data, dcfg = csv_text.whitespace_as_tabs(data, dcfg)
    opts = csv_text.read_opts(dcfg, csv_text.read_layout(data[: 1 << 20], dcfg, None))
    text = pl.read_csv(data, **opts).with_row_index(ROW, offset=1)
    raw = text.select(
        pl.col(ROW).cast(pl.Int64).alias("source_row"),
        pl.struct(pl.all().exclude(ROW)).struct.json_encode().alias("_text"),
    )
    q = quarantine.join(raw, on="source_row", how="left", maintain_order="left")
    return q.with_columns(raw=pl.coalesce("_text", "raw")).drop("_text")


# ------------------------------------------------------------------------------------------------
# mapping to the contract


def _clipped(e: pl.Expr) -> pl.Expr:
    """A field's text for a reason: at most `CLIP` characters (`formats.base.clip`)."""
    s = e.cast(pl.String)
    n = s.str.len_chars()
    return (
        pl.when(n > CLIP)
        .then(pl.format("{}...(+{} chars)", s.str.slice(0, CLIP), n - CLIP))
        .otherwise(s)
    )


def _conv_error(raw: pl.Expr, typed: pl.Expr, what: str) -> pl.Expr:
    return pl.when(raw.is_not_null() & typed.is_null()).then(
        pl.format("{}: cannot parse '{}'", pl.lit(what), _clipped(raw))
    )


def _denormal(x: pl.Expr) -> pl.Expr:
    """A finite, non-zero value below float32's smallest normal number: as float32 it becomes
    0.0 (1e-50) or a subnormal that has lost precision (1e-40)."""
    return x.is_finite() & (x != 0) & (x.abs() < F32_MIN_NORMAL)


def count_denormals(src: pl.DataFrame, cfg: DataConfig) -> int:
    """How many channel values of ``src`` are `_denormal` (for data.denormals: flush)."""
    exprs = [_denormal(_to_number(src, ch.src, pl.Float64)[0]).sum() for ch in cfg.channels]
    return int(src.select(pl.sum_horizontal(exprs)).item() or 0)


def _to_number(df: pl.DataFrame, col: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr | None]:
    src = df.schema[col]
    if src == pl.String:
        typed = pl.col(col).str.strip_chars().cast(dtype, strict=False)
        return typed, _conv_error(pl.col(col), typed, col)
    if src.is_numeric() or src == pl.Boolean:
        return pl.col(col).cast(dtype, strict=False), None
    raise FileRejected(f"column {col!r} has type {src}, expected {dtype}")


def _timestamp(df: pl.DataFrame, cfg: DataConfig) -> tuple[pl.Expr, pl.Expr | None]:
    ts = cfg.timestamp
    leap: pl.Expr | None = None  # text with second 60
    local: pl.Expr | None = None  # a pattern's local time that the zone makes ambiguous/skips
    missing: pl.Expr | None = None  # a missing part of a time joined from several columns
    if ts.column is None:  # sample_index by position: the row's 0-based place in its file
        # (`_row` counts every data row of the file in its original order, quarantined ones
        # too, so a bad row does not shift the samples after it)
        raw = pl.col(ROW) - 1
        col, src = ROW, pl.Int64()
    elif isinstance(ts.column, list):  # text formats only (config): joined with one space
        col, src = " ".join(ts.column), pl.String()
        raw = pl.concat_str([_time_part(df, c, ts.column) for c in ts.column], separator=" ")
        missing = _missing_time_parts(ts.column)
    else:
        col, src = ts.column, df.schema[ts.column]
        raw = pl.col(col)
    if ts.is_text and isinstance(src, pl.Datetime):  # already a time (Parquet, ...)
        e = (
            raw.dt.convert_time_zone("UTC")
            if src.time_zone
            else raw.dt.replace_time_zone(
                ts.timezone, ambiguous="null", non_existent="null"
            ).dt.convert_time_zone("UTC")
        )
        return e.cast(TIMESTAMP_DTYPE), None
    if ts.is_pattern:
        typed, leap, local = _pattern_time(raw, src, col, ts)
    elif ts.format == "iso":
        if src != pl.String:
            raise FileRejected(
                f"timestamp column {col!r} has type {src}; data.timestamp.format=iso wants text"
            )
        s = raw.str.strip_chars()
        aware = [
            s.str.to_datetime(f, time_unit="us", time_zone="UTC", strict=False) for f in ISO_AWARE
        ]
        naive = [
            s.str.to_datetime(f, time_unit="us", strict=False)
            .dt.replace_time_zone(ts.timezone, ambiguous="null", non_existent="null")
            .dt.convert_time_zone("UTC")
            for f in ISO_NAIVE
        ]
        typed = pl.coalesce(aware + naive).cast(TIMESTAMP_DTYPE)
        # chrono reads second 60 as the next minute's second 0: a leap second (or a clock
        # writing 60) is no instant of the lake's UTC time line, quarantined with its reason
        leap = s.str.contains(LEAP_SECOND)
        typed = pl.when(~leap).then(typed)
    elif ts.format == "sample_index":
        n = raw if ts.column is None else _to_number(df, col, pl.Int64)[0]
        assert ts.start is not None and ts.sample_rate_hz is not None
        start = datetime.fromisoformat(ts.start.replace("Z", "+00:00"))
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        step_us = 1e6 / ts.sample_rate_hz
        offset = (n.cast(pl.Float64) * step_us).round().cast(pl.Int64)
        typed = pl.when(n >= 0).then(
            pl.lit(start).cast(TIMESTAMP_DTYPE) + pl.duration(microseconds=offset)
        )
    else:
        unit = ts.format.removeprefix("epoch_")
        if unit in ("us", "ns"):
            n, _ = _to_number(df, col, pl.Int64)
            us = n if unit == "us" else n.floordiv(1000)
        else:
            n, _ = _to_number(df, col, pl.Float64)
            us = (
                pl.when(n.is_finite())
                .then((n * (1e6 if unit == "s" else 1e3)).round())
                .cast(pl.Int64, strict=False)
            )
        lo, hi = (int(t.timestamp() * 1_000_000) for t in (TS_MIN, TS_MAX))
        typed = pl.when(us.is_between(lo, hi, closed="left")).then(us).cast(TIMESTAMP_DTYPE)
    typed = pl.when((typed >= TS_MIN) & (typed < TS_MAX)).then(typed)
    msg = pl.format(
        "timestamp: cannot parse or out of range [1970, 2200) as {}: '{}'",
        pl.lit(ts.format),
        _clipped(raw),
    )
    if leap is not None:
        msg = (
            pl.when(leap)
            .then(
                pl.format(
                    "timestamp: leap second (second 60) '{}' is not an instant of the lake's "
                    "time line (UTC without leap seconds); it would be read as the next second",
                    _clipped(raw),
                )
            )
            .otherwise(msg)
        )
    if local is not None:
        msg = (
            pl.when(local)
            .then(
                pl.format(
                    "timestamp: '{}' read as {} is a local time that {} skips or repeats (a "
                    "clock change): no single instant",
                    _clipped(raw),
                    pl.lit(ts.format),
                    pl.lit(ts.timezone),
                )
            )
            .otherwise(msg)
        )
    err = pl.when(raw.is_not_null() & typed.is_null()).then(msg)
    if missing is not None:
        err = pl.coalesce(missing, err)
    return typed, err


def _time_part(df: pl.DataFrame, c: str, cols: list[str]) -> pl.Expr:
    """One column of a time joined from several (data.timestamp.column as a list), as text."""
    dt = df.schema[c]
    if dt == pl.String:
        return pl.col(c).str.strip_chars()
    if dt.is_integer() or dt in (pl.Date, pl.Time):
        return pl.col(c).cast(pl.String)
    raise FileRejected(
        f"timestamp column {c!r} has type {dt}; the columns of data.timestamp.column {cols} "
        "are joined as text (text, integers, dates or times)"
    )


def _missing_time_parts(cols: list[str]) -> pl.Expr:
    """The reason of a row where a column of a joined time is missing (else null)."""
    names = pl.concat_str(
        [pl.when(pl.col(c).is_null()).then(pl.lit(repr(c))) for c in cols],
        separator=", ",
        ignore_nulls=True,
    )
    return pl.when(pl.any_horizontal([pl.col(c).is_null() for c in cols])).then(
        pl.format(
            "timestamp: missing value in {} (data.timestamp.column {} is joined)",
            names,
            pl.lit(str(cols)),
        )
    )


def _pattern_time(
    raw: pl.Expr, src: pl.DataType, col: str, ts: TimestampSpec
) -> tuple[pl.Expr, pl.Expr | None, pl.Expr]:
    """Text read with a strftime-style pattern (data.timestamp.format with %): (UTC instant,
    leap second flag or None, flag of a local time the zone skips or repeats)."""
    fmt = ts.format
    if src.is_integer():  # e.g. 20061216 with '%Y%m%d'
        raw = raw.cast(pl.String)
    elif src != pl.String:
        raise FileRejected(
            f"timestamp column {col!r} has type {src}; data.timestamp.format={fmt!r} wants text"
        )
    s = raw.str.strip_chars()
    if pattern_has_offset(fmt):  # each value carries its offset: an instant
        typed = s.str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False)
        local = pl.lit(False)
    else:  # local times in data.timestamp.timezone (%s: seconds since the epoch, UTC)
        zone = "UTC" if "%s" in pattern_directives(fmt) else ts.timezone
        naive = s.str.to_datetime(fmt, time_unit="us", strict=False)
        typed = naive.dt.replace_time_zone(
            zone, ambiguous="null", non_existent="null"
        ).dt.convert_time_zone("UTC")
        local = naive.is_not_null() & typed.is_null()
    typed = typed.cast(TIMESTAMP_DTYPE)
    leap = None
    leap_fmt = leap_second_pattern(fmt)
    if leap_fmt is not None:  # chrono reads second 60 as the next minute's 0 (see iso)
        kw: dict[str, Any] = {"time_zone": "UTC"} if pattern_has_offset(fmt) else {}
        leap = s.str.to_datetime(leap_fmt, time_unit="us", strict=False, **kw).is_not_null()
        typed = pl.when(~leap).then(typed)
    return typed, leap, local


def _entity_part(p: str, src: pl.DataFrame, meta: FileMeta) -> pl.Expr:
    """One part of a composite entity id, with '%' and '/' %-encoded (so joins never collide)."""
    if p == "file":
        e = pl.lit(meta.stem, dtype=pl.String)
    elif p in meta.path:
        e = pl.lit(None if meta.path[p] is None else str(meta.path[p]), dtype=pl.String)
    else:
        e = pl.col(p).cast(pl.String)
    return e.str.replace_all("%", "%25", literal=True).str.replace_all("/", "%2F", literal=True)


def _label(
    src: pl.DataFrame, cfg: DataConfig, meta: FileMeta, entity: pl.Expr
) -> tuple[pl.Expr, pl.Expr | None]:
    """The label by data.label.dtype (int accepts integral floats such as 1.0; bool accepts
    true/false, 1/0, yes/no); files without the label column take data.label.table's value
    (then data.label.default for ids it lacks), data.label.default or the
    data.label.default_from path column. ``entity``: the rows' entity id (table match entity)."""
    lab = cfg.label
    assert lab is not None
    missing: pl.Expr | None = None
    if lab.column not in src.columns and lab.table is not None:
        col, missing = _table_label(cfg, meta, entity)
        stype: pl.DataType = pl.String()
    elif lab.column not in src.columns:
        value = meta.path.get(lab.default_from) if lab.default_from else lab.default
        col = pl.lit(None if value is None else str(value), dtype=pl.String)
        stype = pl.String()
    else:
        col, stype = pl.col(lab.column), src.schema[lab.column]
    typed, err = _typed_label(col, stype, LABEL_DTYPES[lab.dtype])
    if missing is not None:  # a row without a label converts without error: one reason each
        err = missing if err is None else pl.coalesce(missing, err)
    return typed, err


def _table_label(
    cfg: DataConfig, meta: FileMeta, entity: pl.Expr
) -> tuple[pl.Expr, pl.Expr | None]:
    """The label text from data.label.table for the rows' key (the file stem, a path column or
    the entity id), data.label.default where the table lacks the key; without a default those
    rows get a reason (quarantined)."""
    lab = cfg.label
    assert lab is not None and lab.table is not None
    tbl = meta.label_table
    if tbl is None:
        raise ValueError("data.label.table was not read (file_meta reads it)")
    match = lab.table.match
    if match == "entity":
        key = entity.cast(pl.String)
        col = key.replace_strict(
            tbl.keys_series, tbl.values_series, default=None, return_dtype=pl.String
        )
    else:
        raw = meta.stem if match == "file" else meta.path.get(match)
        value = None if raw is None else str(raw)
        key = pl.lit(value, dtype=pl.String)
        col = pl.lit(tbl.values.get(value) if value is not None else None, dtype=pl.String)
    if lab.default is not None:
        return col.fill_null(pl.lit(str(lab.default), dtype=pl.String)), None
    err = pl.when(col.is_null()).then(
        pl.format(
            "label: no row for '{}' in the label table {} (key {})",
            key.fill_null("null"),
            pl.lit(tbl.name),
            pl.lit(tbl.key),
        )
    )
    return col, err


def _typed_label(
    col: pl.Expr, stype: pl.DataType, dtype: pl.DataType
) -> tuple[pl.Expr, pl.Expr | None]:
    """The label text or column ``col`` (of type ``stype``) converted to ``dtype``."""
    if dtype == pl.String:
        return col.cast(pl.String), None
    if dtype == pl.Boolean:
        if stype == pl.Boolean:
            return col, None
        low = col.cast(pl.String).str.strip_chars().str.to_lowercase()
        typed = (
            pl.when(low.is_in(["true", "1", "yes", "1.0"]))
            .then(True)
            .when(low.is_in(["false", "0", "no", "0.0"]))
            .then(False)
        )
        return typed, _conv_error(col, typed, "label")
    num = (
        col.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        if stype == pl.String
        else col.cast(pl.Float64, strict=False)
    )
    if dtype == pl.Float64:
        return num, _conv_error(col, num, "label")
    typed = pl.when(num == num.round()).then(num).cast(pl.Int64, strict=False)
    err = pl.when(col.is_not_null() & typed.is_null()).then(
        pl.format("label: cannot parse '{}' as an integer", col.cast(pl.String))
    )
    return typed, err


def map_columns(src: pl.DataFrame, cfg: DataConfig, meta: FileMeta | None = None) -> pl.DataFrame:
    """Source columns -> contract columns (+ ``_row`` and ``_err``, the conversion failures).
    ``meta``: what the file's name and path give (entity, path columns)."""
    meta = meta or FileMeta(entity=cfg.entity.constant)
    exprs: dict[str, pl.Expr] = {ROW: pl.col(ROW)}
    errs: list[pl.Expr] = []
    if cfg.entity.column:
        exprs["entity_id"] = pl.col(cfg.entity.column).cast(pl.String)
    elif cfg.entity.parts:
        parts = [_entity_part(p, src, meta) for p in cfg.entity.parts]
        exprs["entity_id"] = pl.concat_str(parts, separator="/")
    else:
        exprs["entity_id"] = pl.lit(meta.entity, dtype=pl.String)
    ts, err = _timestamp(src, cfg)
    exprs["timestamp"] = ts
    if err is not None:
        errs.append(err)
    for ch in cfg.channels:
        typed, err = _to_number(src, ch.src, pl.Float64)
        if err is not None:
            errs.append(err)
        den = _denormal(typed)
        if cfg.denormals == "flush":  # counted in the file's notes (count_denormals)
            typed = pl.when(den).then(pl.lit(0.0)).otherwise(typed)
        else:
            errs.append(
                pl.when(den).then(
                    pl.format(
                        "{}: '{}' is below float32's smallest normal number (1.18e-38): stored "
                        "as float32 it would become 0.0 or lose precision (data.denormals: "
                        "quarantine)",
                        pl.lit(ch.src),
                        _clipped(pl.col(ch.src)),
                    )
                )
            )
        exprs[ch.name] = typed.cast(pl.Float32)
    if cfg.label is not None:
        typed, err = _label(src, cfg, meta, exprs["entity_id"])
        exprs["label"] = typed
        if err is not None:
            errs.append(err)
    for name, kind in cfg.columns.items():
        dtype = EXTRA_DTYPES[kind]
        if dtype == pl.String:
            exprs[name] = pl.col(name).cast(pl.String)
        elif dtype == pl.Boolean and src.schema[name] == pl.String:
            low = pl.col(name).str.strip_chars().str.to_lowercase()
            typed = (
                pl.when(low.is_in(["true", "1", "yes"]))
                .then(True)
                .when(low.is_in(["false", "0", "no"]))
                .then(False)
            )
            exprs[name] = typed
            errs.append(_conv_error(pl.col(name), typed, name))
        else:
            typed, err = _to_number(src, name, dtype)
            exprs[name] = typed
            if err is not None:
                errs.append(err)
    for name, value in meta.path.items():
        kind = cfg.metadata_types()[name]
        exprs[name] = pl.lit(value, dtype=EXTRA_DTYPES[kind])
    if cfg.keep_other_columns:
        known = set(cfg.required_source_columns()) | {ROW}
        for c in src.columns:
            if c not in known and c not in exprs:
                exprs[c] = pl.col(c).cast(pl.String)
    if errs:  # concat_str of all-null parts gives "", not null
        joined = pl.concat_str(errs, separator="; ", ignore_nulls=True)
        exprs[ERR] = pl.when(joined.str.len_bytes() > 0).then(joined)
    else:
        exprs[ERR] = pl.lit(None, pl.String)
    return src.select(**exprs)


# ------------------------------------------------------------------------------------------------
# validation and duplicates


def _raw_json(src: pl.DataFrame, idx: pl.Series) -> pl.Series:
    """The original values of rows ``idx`` (positions in ``src``) as JSON objects."""
    rows = src.drop(ROW)[idx]
    return rows.select(pl.struct(pl.all().cast(pl.String)).struct.json_encode().alias("raw"))["raw"]


def _qframe(src: pl.DataFrame, pos: pl.Series, reasons: pl.Series) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "source_row": src[ROW][pos],
            "reason": reasons.cast(pl.String),
            "raw": _raw_json(src, pos),
        },
        schema={"source_row": pl.Int64, "reason": pl.String, "raw": pl.String},
    )


def _bad_rows_frame(bad: list[tuple[int, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "source_row": [b[0] for b in bad],
            "reason": [b[1] for b in bad],
            "raw": [json.dumps({"line": b[2]}) for b in bad],
        },
        schema={"source_row": pl.Int64, "reason": pl.String, "raw": pl.String},
    )


def split_valid(
    src: pl.DataFrame, mapped: pl.DataFrame, cfg: DataConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Conversion failures and pandera failures -> quarantine; the rest is returned, with
    ``_row`` kept and a ``_date`` partition column added. Row order is preserved."""
    mapped = mapped.with_row_index("_pos")
    if mapped[ERR].null_count() == mapped.height:  # the common case: no copy
        rest, qparts = mapped.drop(ERR), []
    else:
        conv_bad = mapped.filter(pl.col(ERR).is_not_null())
        rest = mapped.filter(pl.col(ERR).is_null()).drop(ERR)
        qparts = [_qframe(src, conv_bad["_pos"], conv_bad[ERR])]

    reasons = _pandera_failures(rest.drop("_pos", ROW), cfg)
    if reasons is not None and reasons.height:
        rest = rest.with_row_index("_vpos")
        hit = rest.join(reasons, left_on="_vpos", right_on="index", how="inner")
        qparts.append(_qframe(src, hit["_pos"], hit["reason"]))
        rest = rest.join(reasons, left_on="_vpos", right_on="index", how="anti").drop("_vpos")
    good = rest.drop("_pos").with_columns(pl.col("timestamp").dt.date().alias(DATE))
    q = pl.concat(qparts) if qparts else _bad_rows_frame([])
    return good, q


def _pandera_failures(df: pl.DataFrame, cfg: DataConfig) -> pl.DataFrame | None:
    """Row index -> readable reason, from pandera's failure cases (every failure collected)."""
    try:
        landed_schema(cfg).validate(df, lazy=True)
        return None
    except pa_errors.SchemaErrors as e:
        fc = e.failure_cases
    schema_level = fc.filter(pl.col("index").is_null())
    if schema_level.height:  # a whole-column problem (type), not a row problem
        msgs = [
            f"{r['column']}: {r['check']} ({clip(r['failure_case'])})"
            for r in schema_level.to_dicts()
        ]
        raise FileRejected("schema check failed: " + "; ".join(msgs))
    fc = fc.with_columns(
        check=pl.col("check").replace({"not_nullable": "missing value"}),
        # a missing value's failure_case is null: is_in would give null and the filter below
        # would drop the failure (the row would be accepted), and format() would give null
        failure_case=pl.col("failure_case").fill_null("null"),
        _nonfinite=pl.col("failure_case").is_in(["NaN", "inf", "-inf"]).fill_null(False),
    )
    # a NaN fails `not null`, `finite` and the range checks at once: name it once
    fc = fc.filter(~pl.col("_nonfinite") | (pl.col("check") == "NaN or infinite value"))
    return (
        fc.group_by("index", maintain_order=True)
        .agg(
            pl.format("{}: {} (value {})", "column", "check", _clipped(pl.col("failure_case")))
            .str.join("; ")
            .alias("reason")
        )
        .with_columns(pl.col("index").cast(pl.UInt32))
    )


def _value_cols(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in (ROW, DATE, "_pos")]


def _runs(df: pl.DataFrame, cols: list[str]) -> list[pl.DataFrame]:
    """Zero-copy slices of ``df`` where the values of ``cols`` stay the same."""
    if df.height == 0:
        return []
    change = pl.any_horizontal([pl.col(c) != pl.col(c).shift(1) for c in cols]).fill_null(True)
    starts = df.select(change.arg_true()).to_series().to_list() + [df.height]
    return [df.slice(a, b - a) for a, b in zip(starts[:-1], starts[1:], strict=True)]


def _entity_groups(df: pl.DataFrame) -> tuple[list[pl.DataFrame], bool]:
    """Rows of each entity, and whether they were contiguous already (zero-copy slices)."""
    runs = _runs(df, ["entity_id"])
    if len({r["entity_id"][0] for r in runs}) == len(runs):
        return runs, True
    return df.partition_by("entity_id", maintain_order=True), False


def dedup_in_file(
    src: pl.DataFrame, good: pl.DataFrame, cfg: DataConfig
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Sort by (entity_id, timestamp) - stable, and free when the file is already in order - and
    resolve duplicate keys: identical rows keep the first, the rest count as duplicates; rows of a
    key whose values disagree are all quarantined (we cannot tell which is right)."""
    groups, contiguous = _entity_groups(good)
    out, qs, n_dups, changed = [], [], 0, not contiguous
    for g in groups:
        if not g["timestamp"].is_sorted():
            g, changed = g.sort("timestamp", maintain_order=True), True
        ts = g["timestamp"]
        if (ts == ts.shift(1)).any():
            g, q, n = _dedup_group(src, g)
            qs.append(q)
            n_dups += n
            changed = True
        out.append(g)
    if changed:
        good = pl.concat(out) if out else good
    return good, pl.concat(qs) if qs else _bad_rows_frame([]), n_dups


def _dedup_group(src: pl.DataFrame, g: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """One entity's rows, sorted by time, with at least one repeated timestamp."""
    dup = g["timestamp"].is_duplicated()
    d, rest = g.filter(dup), g.filter(~dup)
    vals = _value_cols(d)
    d = d.with_columns(
        _n=pl.struct(vals).n_unique().over(READINGS_KEY),
        _rows=pl.col(ROW).cast(pl.String).str.join(",").over(READINGS_KEY),
    )
    identical = d.filter(pl.col("_n") == 1)
    keep = identical.unique(READINGS_KEY, keep="first", maintain_order=True)
    conflicting = d.filter(pl.col("_n") > 1)
    q = _qframe(
        src,
        _positions(src, conflicting[ROW]),
        conflicting.select(
            pl.format("conflicting duplicate of (entity_id, timestamp): rows {} disagree", "_rows")
        ).to_series(),
    )
    g = pl.concat([rest, keep.drop("_n", "_rows")]).sort("timestamp", maintain_order=True)
    return g, q, identical.height - keep.height


def _positions(src: pl.DataFrame, rows: pl.Series) -> pl.Series:
    """Positions in ``src`` of the given source row numbers."""
    idx = src.select(pl.col(ROW)).with_row_index("_p")
    return pl.DataFrame({ROW: rows}).join(idx, on=ROW, how="left", maintain_order="left")["_p"]


def dedup_against_lake(
    lake: Lake,
    src: pl.DataFrame,
    good: pl.DataFrame,
    cfg: DataConfig,
    ignore: set[str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Rows whose key is already in the lake: identical -> dropped as duplicates; different ->
    quarantined, naming the lake file that holds the other value. The lake files come from the
    ledger index (`Lake.ledger_index`, brought up to date by the caller): only those of the
    rows' partitions whose time range overlaps the rows' are read, so the cost does not grow
    with the number of files in a partition."""
    if not good.height:
        return good, _bad_rows_frame([]), 0
    idx = lake.ledger_index()
    if not idx.loaded:
        idx.refresh(locked=False)
    times = good.group_by("entity_id", DATE).agg(us=pl.col("timestamp").dt.epoch("us").sort())
    ignore = ignore or set()  # the files of the records a reprocess replaces
    existing: set[str] = set()
    for entity_id, date, us in times.iter_rows():
        files = [f for f in idx.files_in(entity_id, date.isoformat()) if f["path"] not in ignore]
        if not files:
            continue
        ts = np.asarray(us, dtype=np.int64)  # sorted: does any row fall in a file's range?
        for f in files:
            r = idx.time_range(f["path"])
            if r is None or np.searchsorted(ts, r[0]) < np.searchsorted(ts, r[1], side="right"):
                existing.add(f["path"])
    if not existing:
        return good, _bad_rows_frame([]), 0
    vals = _value_cols(good)
    lake_rows = pl.concat(
        [
            pl.read_parquet(lake.uri_of(p)).with_columns(_lake_file=pl.lit(p))
            for p in sorted(existing)
        ],
        how="diagonal_relaxed",
    )
    common = [c for c in vals if c in lake_rows.columns and c not in READINGS_KEY]
    j = good.join(
        lake_rows.select(READINGS_KEY + common + ["_lake_file"]),
        on=READINGS_KEY,
        how="left",
        suffix="_lake",
        maintain_order="left",
    )
    hit = pl.col("_lake_file").is_not_null()
    same = pl.all_horizontal(
        [pl.col(c).eq_missing(pl.col(f"{c}_lake")) for c in common] or [pl.lit(True)]
    )
    j = j.with_columns(_hit=hit, _same=same)
    dups = j.filter(pl.col("_hit") & pl.col("_same"))
    conf = j.filter(pl.col("_hit") & ~pl.col("_same"))
    keep = j.filter(~pl.col("_hit")).select(good.columns)
    q = _qframe(
        src,
        _positions(src, conf[ROW]),
        conf.select(
            pl.format(
                "conflicts with the row already in the lake for (entity_id, timestamp) in {}",
                "_lake_file",
            )
        ).to_series(),
    )
    return keep, q, dups.height


def quarantine_unpartitionable(
    lake: Lake, src: pl.DataFrame, good: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows whose entity id cannot be a partition folder name (longer than the lake's limit
    once %-encoded, `Lake.entity_name_limit`) -> quarantine, with the reason; the rest go on.
    Ids that fit keep their partition name unchanged."""
    if not good.height:
        return good, _bad_rows_frame([])
    limit = lake.entity_name_limit()
    too_long = {
        e: n
        for e in good["entity_id"].unique().to_list()
        if e is not None and (n := len(encode_entity(e))) > limit
    }
    if not too_long:
        return good, _bad_rows_frame([])
    hit = pl.col("entity_id").is_in(list(too_long))
    bad = good.filter(hit)
    reasons = pl.Series(
        [
            f"entity_id: too long for a partition name ({too_long[e]} bytes once %-encoded, "
            f"the lake's limit is {limit}): {e[:24]!r}..."
            for e in bad["entity_id"].to_list()
        ],
        dtype=pl.String,
    )
    return good.filter(~hit), _qframe(src, _positions(src, bad[ROW]), reasons)
