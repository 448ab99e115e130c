"""``cnnlstm init``: draft a commented config from a sample of the landing files.

Reads a bounded sample (``max_files`` files, ``max_bytes`` of each, decompressed) with the same
CSV layout rules as ingest (``cnnlstm.ingest._layout``), and infers what it can: which files
(``data.include``), the CSV dialect, metadata in the path (``data.path_columns``), the timestamp
column and format, channels, label, entity and metadata columns, a window size. What it cannot
decide is written as a working guess marked ``# TODO`` with the candidates, so that
``cnnlstm ingest LANDING -c config.yaml`` runs as written; the user then reads the TODOs.
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import gzip
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import yaml

from cnnlstm.config import (
    DEFAULT_EXCLUDE,
    CsvOptions,
    DataConfig,
    EntitySpec,
    TimestampSpec,
    config_from_dict,
)
from cnnlstm.config import DEFAULT_INCLUDE as CONFIG_INCLUDE
from cnnlstm.formats import ROW, FileRejected, read_source
from cnnlstm.formats.text import INDEX_COLUMN, looks_indexed, read_csv
from cnnlstm.ingest import ISO_AWARE, ISO_NAIVE, file_stem

DEFAULT_INCLUDE = list(CONFIG_INCLUDE)  # data.include unless the files need more
# file endings read as data (everything else in the folder is listed and ignored)
DATA_ENDINGS = (
    ".csv.gz",
    ".tsv.gz",
    ".txt.gz",
    ".dat.gz",
    ".csv",
    ".tsv",
    ".txt",
    ".dat",
    ".data",
    ".log",
    ".parquet",
    ".pq",
    ".mat",
    ".npy",
    ".npz",
    ".ts",
    ".arff",
)
# how a file is read: "table" (CSV text, Parquet), "array" (.mat, .npy, .npz: variables as
# columns, no time column) or "ts" (sktime .ts: one series per line); a folder is drafted for
# the kind most of its files have
KINDS = {".mat": "array", ".npy": "array", ".npz": "array", ".ts": "ts", ".arff": "arff"}
ARRAY_MAX_BYTES = 256 << 20  # .mat/.npy/.npz files are read whole (their layout needs it)
WIDE_MIN_COLUMNS = 50  # a headerless text file with more numeric fields: one series per row
MAX_SERIES_WINDOW = 512  # a window over a whole series, at most this long
EPOCH = "1970-01-01T00:00:00Z"
DELIMITERS = [",", "\t", ";", "|", " "]
COMMENT_PREFIXES = ("#", "//", "%")
DATE_PATTERNS = ["%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%d-%m-%Y", "%m-%d-%Y", "%Y-%m-%d"]
TIME_PATTERNS = ["%H:%M:%S", "%H:%M:%S%.f", "%H:%M", "%H.%M.%S", "%I:%M:%S %p", "%I:%M %p"]
JOINED = "\x00date time"  # a date column and a time column beside it, joined (internal name)
DECIMAL_COMMA = re.compile(r"^[-+]?\d+,\d+$")  # 2,6 (a decimal comma; 1,234,5 is not one)
DECIMAL_POINT = re.compile(r"^[-+]?\d*\.\d+(?:[eE][-+]?\d+)?$")
SPLIT_VALUES = {"train", "test", "val", "valid", "validation", "dev", "training", "testing"}
RESERVED = {"entity_id", "timestamp", "label", "date"}
TS_HINTS = {"time", "timestamp", "ts", "date", "datetime", "t", "epoch", "sample", "cycle"}
TS_HINTS |= {"index", "idx", "tick", "step", "seconds", "secs", "ms", "millis", "utc"}
LABEL_HINTS = {"label", "labels", "activity", "class", "state", "target", "y", "status"}
LABEL_HINTS |= {"fault", "anomaly", "category", "gesture", "outcome", "occupancy"}
ENTITY_HINTS = {"device", "unit", "id", "sensor", "machine", "engine", "entity", "station"}
ENTITY_HINTS |= {"node", "asset", "subject", "patient", "vehicle", "meter", "recording"}
RATE_HINTS = {"fs", "hz", "rate", "samplerate", "sampling", "srate", "sr"}
GENERIC_DIRS = {"landing", "data", "raw", "input", "inbox", "incoming", "files"}
BOOL_VALUES = {"true", "false", "yes", "no"}
MISSING_WORDS = ["nan", "na", "n/a", "null", "none", "?", "#n/a"]  # missing numbers, as written
MOSTLY_MISSING = 0.5  # a numeric column missing in more of the sampled rows is no channel
# numbers that loggers write for "no value" (the UCI Air Quality file: -200)
MISSING_CODES = (-200.0, -999.0, -9999.0, -99999.0, 9999.0, 99999.0)


class InitError(ValueError):
    """A usage problem (no data files, an existing output file): CLI exit status 2."""


# ------------------------------------------------------------------------------------------------
# small helpers

MAX_WINDOW = 1024  # samples: 2.56 s of a 12 kHz vibration signal would be 30,720


def _tokens(name: str) -> set[str]:
    """'activity_id' -> {activity, id}; 'deviceId' -> {device, id}."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return {t for t in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if t}


def _hinted(name: str, hints: set[str]) -> bool:
    return bool(_tokens(name) & hints)


def _is_num(x: str) -> bool:
    try:
        float(x.strip())
        return True
    except ValueError:
        return False


def _q(v: Any) -> str:
    """A YAML scalar or flow sequence: plain when safe, else single-quoted (no escapes, so
    regexes read as written)."""
    if isinstance(v, list):
        return "[" + ", ".join(_q(x) for x in v) + "]"
    if isinstance(v, bool) or v is None:
        return yaml.safe_dump(v).split("\n")[0]
    if isinstance(v, int | float):
        return repr(v)
    s = str(v)
    if s == "\t":
        return '"\\t"'
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", s) and yaml.safe_load(s) == s:
        return s
    return "'" + s.replace("'", "''") + "'"


def _num(x: float) -> str:
    return f"{x:.6g}"


def _flow(v: Any) -> str:
    """A YAML flow value: mappings as ``{k: v, ...}``, the rest as `_q`."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_q(k)}: {_flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_flow(x) for x in v) + "]"
    return _q(v)


def _kind(name: str) -> str:
    return KINDS.get(_ending(name) or "", "table")


def permissive(csv_opts: CsvOptions | None = None) -> DataConfig:
    """A data config that requires no column: the readers (`cnnlstm.formats`) then give every
    column of a file, named as ingest names them. Built unvalidated (it names no channel)."""
    return DataConfig.model_construct(
        entity=EntitySpec.model_construct(constant="x"),
        timestamp=TimestampSpec.model_construct(format="sample_index"),
        channels=[],
        csv=csv_opts or CsvOptions(),
    )


# ------------------------------------------------------------------------------------------------
# which files


def _ending(name: str) -> str | None:
    low = name.lower()
    return next((e for e in DATA_ENDINGS if low.endswith(e)), None)


def _unnamed_text(p: Path) -> bool:
    """A file without a data ending whose name has no extension or a number for one (the IMS
    bearing snapshots `2004.02.12.10.32.39`) and whose start is text of numbers."""
    suffix = p.suffix[1:]
    if suffix and not suffix.isdigit():
        return False
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if not head or b"\0" in head or b"\n" not in head:
        return False
    text = head.decode("latin-1")
    return sum(ch.isdigit() for ch in text) >= 0.3 * len(text)


def find_files(landing: Path) -> tuple[list[Path], dict[str, int]]:
    """Data files under ``landing`` (recursively, no hidden ones) and a count of the others by
    extension."""
    files, others = [], Counter()
    for p in sorted(landing.rglob("*")):
        rel = p.relative_to(landing)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_symlink() or any(q.is_symlink() for q in p.parents if landing in q.parents):
            # as ingest (cnnlstm/sources.py): never read through a link, so nothing from
            # outside the landing tree reaches the drafted config
            others["(symbolic link)"] += 1
            continue
        if not p.is_file():
            continue
        if any(fnmatch.fnmatchcase(p.name.lower(), x) for x in DEFAULT_EXCLUDE):
            others[p.suffix.lower() or "(no extension)"] += 1
        elif _ending(p.name) or _unnamed_text(p):
            files.append(p)
        else:
            others[p.suffix.lower() or "(no extension)"] += 1
    return files, dict(others)


# ------------------------------------------------------------------------------------------------
# what a dataset's README states: sampling rate and channel units

README_NAMES = re.compile(r"^(readme|about|description|info)\b.*|.*\.(md|rst)$", re.I)
RATE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([kK])?Hz\b")  # 50 Hz, 12 kHz
UNIT_RE = re.compile(
    r"((?:`?[A-Za-z_][\w.]*`?\s*(?:,|and|or)\s*)*`?[A-Za-z_][\w.]*`?)\s*\(([^()\s,;]{1,12})\)"
)
# The largest common full scale of MEMS inertial sensors, by unit: plausibility limits that no
# real reading of such a sensor exceeds (16 g; 2000 deg/s = 34.9 rad/s).
TIME_UNITS = {"s": "epoch_s", "sec": "epoch_s", "secs": "epoch_s", "seconds": "epoch_s"}
TIME_UNITS |= {"ms": "epoch_ms", "us": "epoch_us", "µs": "epoch_us", "ns": "epoch_ns"}
UNIT_IN_NAME = re.compile(
    r"^(.*\S)\s+[(\[]([^()\[\]]{1,12})[)\]]\s*$"
)  # `Time (s)`, `ax [g]` (not `CO(GT)`)
FULL_SCALE = {"g": 16.0, "m/s2": 157.0, "m/s^2": 157.0, "m/s²": 157.0, "rad/s": 35.0}
FULL_SCALE.update({"deg/s": 2000.0, "dps": 2000.0, "°/s": 2000.0})


@dataclass
class ReadmeFacts:
    source: str | None = None
    rates: list[float] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)


def readme_facts(landing: Path) -> ReadmeFacts:
    """Rates (``50 Hz``) and units (``acc_x, acc_y (g)``) stated in a README in the landing folder
    or the folder above it (the first one found). Only small text files are read."""
    for folder in (landing, landing.parent):
        for p in sorted(folder.glob("*")):
            if not p.is_file() or not README_NAMES.match(p.name) or p.stat().st_size > 1 << 20:
                continue
            try:
                text = p.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            f = ReadmeFacts(source=p.name)
            f.rates = sorted(
                {float(m.group(1)) * (1000 if m.group(2) else 1) for m in RATE_RE.finditer(text)}
            )
            for m in UNIT_RE.finditer(text):
                for n in re.split(r"\s*(?:,|\band\b|\bor\b)\s*", m.group(1)):
                    n = n.strip("` ")
                    if n:
                        f.units.setdefault(n, m.group(2))
            if f.rates or f.units:
                return f
    return ReadmeFacts()


def stem_pattern(stems: list[str]) -> str:
    """``^(?P<entity>exp\\d+_user\\d+)`` when every stem has the first one's shape with other
    digits; ``.*`` (the whole stem) otherwise."""
    if not stems:
        return ".*"
    parts = re.split(r"(\d+)", stems[0])
    if len(parts) == 1:
        return ".*"
    body = "".join(r"\d+" if i % 2 else re.escape(t) for i, t in enumerate(parts))
    if all(re.fullmatch(body, s) for s in stems):
        return f"^(?P<entity>{body})"
    return ".*"


def _sample(files: list[Path], landing: Path, n: int) -> list[Path]:
    """Up to ``n`` files: the first of each folder, then evenly spread over the rest."""
    if len(files) <= n:
        return list(files)
    picked: list[Path] = []
    seen: set[Path] = set()
    for f in files:
        if f.parent not in seen and len(picked) < n:
            seen.add(f.parent)
            picked.append(f)
    rest = [f for f in files if f not in picked]
    k = n - len(picked)
    if k > 0:
        step = len(rest) / k
        picked += [rest[int(i * step)] for i in range(k)]
    return sorted(picked)


def _head(path: Path, max_bytes: int) -> bytes:
    if path.name.lower().endswith(".gz"):
        with gzip.open(path, "rb") as g:
            data = g.read(max_bytes)
    else:
        with open(path, "rb") as f:
            data = f.read(max_bytes)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if len(data) >= max_bytes - 3 and b"\n" in data:  # drop the cut last line
        data = data[: data.rindex(b"\n") + 1]
    return data


def _spread(path: Path, max_bytes: int, parts: int = 5) -> bytes:
    """Whole lines from ``parts`` places spread over the rest of a large plain text file (the
    last one its end), ``max_bytes // 8`` each: the values a file's head does not show (PAMAP2
    starts with minutes of one activity). Nothing for compressed or small files."""
    if path.name.lower().endswith(".gz"):
        return b""
    size = path.stat().st_size
    if size <= 2 * max_bytes:
        return b""
    n = max_bytes // 8
    out = []
    with open(path, "rb") as f:
        for k in range(1, parts + 1):
            at = max_bytes + (size - max_bytes - n) * k // parts
            f.seek(at)
            chunk = f.read(n)
            a, b = chunk.find(b"\n"), chunk.rfind(b"\n")
            if 0 <= a < b:
                out.append(chunk[a + 1 : b + 1])
    return b"".join(out)


# ------------------------------------------------------------------------------------------------
# CSV dialect


@dataclass
class Dialect:
    delimiter: str = ","
    whitespace: bool = False  # fields split at runs of blanks (data.csv.whitespace)
    header: bool = True
    names: list[str] | None = None
    skip_rows: int = 0
    comment_prefix: str | None = None
    indexed: bool = False
    record_end: str | None = None  # a character ending each record (WISDM's `;`)
    decimal_comma: bool = False  # numbers written 2,6
    after_header: int = 0  # lines after the header that are no data (a units row)
    units: dict[str, str] = field(default_factory=dict)  # from that row: field -> unit
    encoding: str = "utf-8"  # of the files (the sample is read as UTF-8 once decoded)
    notes: list[str] = field(default_factory=list)

    def options(self) -> CsvOptions:
        return CsvOptions(
            delimiter=self.delimiter,
            whitespace=self.whitespace,
            header=self.header,
            names=self.names,
            skip_rows=self.skip_rows,
            comment_prefix=self.comment_prefix,
            record_end=self.record_end,
            decimal_comma=self.decimal_comma,
            skip_after_header=self.after_header,
        )

    def key(self) -> tuple:
        return (
            self.delimiter,
            self.whitespace,
            self.header,
            self.skip_rows,
            self.comment_prefix,
            self.record_end,
            self.decimal_comma,
            self.encoding,
            self.after_header,
        )


def sniff(text: str) -> Dialect:
    """Delimiter, header, leading skipped lines, comment prefix and a row index of CSV text."""
    d = Dialect()
    lines = [ln for ln in text.splitlines() if ln.strip()][:400]
    for p in COMMENT_PREFIXES:
        if any(ln.startswith(p) for ln in lines[1:]) or (
            lines and lines[0].startswith(p) and len(lines) > 1
        ):
            d.comment_prefix = p
            break
    content = [ln for ln in lines if not (d.comment_prefix and ln.startswith(d.comment_prefix))]
    if not content:
        return d
    # every record ended by one `;` (WISDM: `33,Jogging,...,0.50395286;`): a record terminator,
    # not a field separator (a `;`-separated file with a trailing `;` has more than one per line)
    body = [ln.rstrip() for ln in content[1:] or content]
    if sum(ln.endswith(";") and ln.count(";") == 1 for ln in body) >= 0.9 * len(body):
        d.record_end = ";"
        d.notes.append("every record ends with ';': csv.record_end")
        content = [ln.rstrip().removesuffix(";") for ln in content]
    # split at runs of blanks: one field count on (nearly) every line, and no quotes to honour
    ws_recs = [ln.split() for ln in content]
    ws_skip = None if any('"' in ln for ln in content) else _fits(ws_recs)
    best = None
    for delim in DELIMITERS:
        recs = list(csv.reader(content, delimiter=delim))
        skip = _fits(recs)
        if skip is None:
            continue
        if delim in (" ", "\t") and ws_skip is not None and any("" in r for r in recs[skip:]):
            break  # empty fields between blanks (aligned columns, trailing blanks): whitespace
        if best is None or skip < best[2]:  # the first that fits, unless a later one also
            best = (delim, recs[skip:], skip)  # splits the lines it skips (a header: the `;`
        if skip == 0:  # of `Date;Time;CO(GT)` over `10/03/2004;18.00.00;2,6`, whose decimal
            break  # commas split every data line alike)
    if best is None and ws_skip is not None:
        d.whitespace = True
        best = (",", ws_recs[ws_skip:], ws_skip)
        d.notes.append(
            "fields separated by runs of blanks (csv.whitespace): no single delimiter splits "
            "the lines into one field count without empty fields"
        )
    if best is None:
        d.notes.append("TODO: no delimiter among , tab ; | space splits the lines consistently")
        return d
    d.delimiter, recs, d.skip_rows = best
    if d.delimiter != "," or d.whitespace:  # numbers written 2,6: a decimal comma
        cells = [v.strip() for r in recs[1:200] for v in r]
        commas = sum(bool(DECIMAL_COMMA.match(v)) for v in cells)
        if commas and commas > sum(bool(DECIMAL_POINT.match(v)) for v in cells):
            d.decimal_comma = True
            d.notes.append(f"numbers written with a decimal comma ({commas} such cells)")
            recs = [
                [v.replace(",", ".") if DECIMAL_COMMA.match(v.strip()) else v for v in r]
                for r in recs
            ]
    first, rows = recs[0], recs[1:6]
    if looks_indexed(first, rows):
        d.indexed = True
        return d
    width = len(rows[0]) if rows else len(first)
    header = False
    if rows and len(first) == width:
        for j in range(width):
            col = [r[j] for r in rows if len(r) == width]
            if not _is_num(first[j]) and col and all(_is_num(v) for v in col):
                header = True
                break
        else:  # no numeric column to tell: a header repeats none of the values below it
            header = all(not _is_num(v) for v in first) and all(
                first[j] not in {r[j] for r in recs[1:50] if len(r) == width} for j in range(width)
            )
    elif not rows:
        header = all(not _is_num(v) for v in first)
    if all(_is_num(v) for v in first):
        header = False  # a header names fields: a line of numbers is data
    d.header = header
    if header:  # a units row (or two) under the header: `s,g,g,degC` over numbers
        d.after_header, d.units = _unit_rows(first, recs[1:60])
        if d.after_header:
            d.notes.append(f"{d.after_header} line(s) of units under the header, not data")
    if not header:
        d.names = [f"c{i}" for i in range(width)]
    return d


def _unit_rows(header: list[str], rows: list[list[str]]) -> tuple[int, dict[str, str]]:
    """How many lines under the header are no data but short words (units) where the rows
    below hold numbers, in at least half of those numeric columns (at most 2 lines); and the
    first such line's words by field name."""
    width = len(header)
    for k in (1, 2):
        body = [r for r in rows[k:] if len(r) == width]
        top = rows[:k]
        if len(body) < 3 or any(len(r) != width for r in top):
            continue
        numeric = [j for j in range(width) if all(_is_num(r[j]) for r in body)]
        if not numeric:
            return 0, {}
        wordy = [
            j for j in numeric if all(not _is_num(r[j]) and len(r[j].strip()) <= 16 for r in top)
        ]
        if len(wordy) >= max(1, len(numeric) / 2):
            return k, {header[j]: top[0][j].strip() for j in wordy if top[0][j].strip()}
    return 0, {}


def _fits(recs: list[list[str]]) -> int | None:
    """The lines to skip before records split into one field count (a header may be one short:
    a row index), or None when the split is ragged or gives one field."""
    counts = [len(r) for r in recs]
    body = counts[1:] or counts
    mode, n_mode = Counter(body).most_common(1)[0]
    if mode < 2 or n_mode < 0.9 * len(body):
        return None
    skip = 0
    while skip < len(counts) - 1 and counts[skip] not in (mode, mode - 1) and skip < 10:
        skip += 1
    return skip if counts[skip] in (mode, mode - 1) else None


def read_text(data: bytes, dialect: Dialect) -> pl.DataFrame:
    """The sample read as ingest reads it (`formats.text.read_csv`; all columns as strings;
    decimal commas as points, as ingest reads numbers)."""
    df, _ = read_csv(data, permissive(dialect.options()))
    df = df.drop(ROW).select(pl.all().cast(pl.String))
    if dialect.decimal_comma:
        s = pl.all().str.strip_chars()
        df = df.with_columns(
            pl.when(s.str.contains(DECIMAL_COMMA.pattern))
            .then(s.str.replace(",", ".", literal=True))
            .otherwise(pl.all())
            .name.keep()
        )
    return df


def _decode(raw: bytes) -> tuple[str, str]:
    """The encoding of a text sample and its text: UTF-8 (a BOM dropped), UTF-16 by its byte
    order mark, else the first of cp1252 and latin-1 that decodes it (latin-1 always does)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16", raw[: len(raw) // 2 * 2].decode("utf-16", errors="ignore")
    try:
        return "utf-8", raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start >= len(raw) - 3:  # a character cut by the sample's end
            return "utf-8", raw[: e.start].decode("utf-8")
    for enc in ("cp1252", "latin-1"):
        try:
            return enc, raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return "latin-1", raw.decode("latin-1")  # pragma: no cover (latin-1 decodes every byte)


def read_parquet(path: Path, max_rows: int) -> pl.DataFrame:
    pf = pq.ParquetFile(path)
    batch = next(pf.iter_batches(batch_size=max_rows), None)
    if batch is None:
        return pl.DataFrame()
    df = pl.from_arrow(batch)
    assert isinstance(df, pl.DataFrame)
    return df.select(pl.all().cast(pl.String))


# ------------------------------------------------------------------------------------------------
# path columns


@dataclass
class PathGuess:
    pattern: str | None = None
    types: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # rel path -> group values
    notes: list[str] = field(default_factory=list)

    def drop(self, name: str, why: str) -> None:
        """Make group ``name`` non-capturing (it repeats a column)."""
        assert self.pattern is not None
        self.pattern = self.pattern.replace(f"(?P<{name}>", "(?:")
        self.types.pop(name, None)
        for v in self.values.values():
            v.pop(name, None)
        self.notes.append(f"the path part {name!r} is not read: {why}")
        if not self.types:
            self.pattern = None


def _split_stem(stem: str) -> list[str]:
    return re.findall(r"\d+|[A-Za-z]+|[^A-Za-z\d]+", stem)


def _group_name(prev: str, used: set[str], default: str) -> str:
    base = re.sub(r"[^a-z0-9_]", "", prev.lower()).strip("_") or default
    if not re.match(r"[a-z_]", base):
        base = f"{default}_{base}"
    name, i = base, 2
    while name in used or name in RESERVED:
        name, i = f"{base}{i}", i + 1
    used.add(name)
    return name


def guess_path_columns(rels: list[str]) -> PathGuess:
    """Groups for folder levels and file-name parts that vary across files."""
    g = PathGuess()
    if len(rels) < 2:
        return g
    parts = [r.split("/") for r in rels]
    depth = {len(p) for p in parts}
    used: set[str] = set()
    pattern = "^"
    groups: list[tuple[str, str, int, str]] = []  # (name, kind, index, where)
    if len(depth) == 1:
        for lvl in range(depth.pop() - 1):
            vals = sorted({p[lvl] for p in parts})
            if len(vals) == 1:
                pattern += re.escape(vals[0]) + "/"
                continue
            if {v.lower() for v in vals} <= SPLIT_VALUES:
                name = _group_name("split", used, "split")
                pattern += f"(?P<{name}>{'|'.join(re.escape(v) for v in vals)})/"
            elif all(re.fullmatch(r"[\w\-]+", v) for v in vals):
                name = _group_name("folder" if lvl == 0 else f"folder{lvl}", used, "folder")
                pattern += rf"(?P<{name}>[\w\-]+)/"
            else:
                pattern += "[^/]+/"
                continue
            groups.append((name, "int" if all(v.isdigit() for v in vals) else "string", lvl, "d"))
    else:
        pattern = "(?:^|/)"
        g.notes.append("files lie at different folder depths: folder names not read as columns")
    stems = [_split_stem(file_stem(r)) for r in rels]
    shapes = {tuple("d" if t.isdigit() else "a" if t.isalpha() else "p" for t in s) for s in stems}
    if len(shapes) == 1:
        prev = ""
        for i, _ in enumerate(stems[0]):
            vals = [s[i] for s in stems]
            distinct = sorted(set(vals))
            tok = vals[0]
            if tok.isdigit():
                if len(distinct) > 1:
                    name = _group_name(prev, used, "n")
                    pattern += rf"(?P<{name}>\d+)"
                    groups.append((name, "int", i, "f"))
                else:
                    pattern += r"\d+"
            elif len(distinct) > 1 and {v.lower() for v in distinct} <= SPLIT_VALUES:
                name = _group_name("split", used, "split")
                pattern += f"(?P<{name}>{'|'.join(re.escape(v) for v in distinct)})"
                groups.append((name, "string", i, "f"))
            elif len(distinct) > 1:
                break  # a varying word: the pattern ends here (a prefix of the name)
            else:
                pattern += re.escape(tok)
            prev = tok
    if not groups:
        return g
    g.pattern = pattern
    rx = re.compile(pattern)
    for r in rels:
        m = rx.search(r)
        assert m, (pattern, r)
        g.values[r] = {n: int(m[n]) if kind == "int" else m[n] for n, kind, _, _ in groups}
    g.types = {n: kind for n, kind, _, _ in groups}
    return g


# ------------------------------------------------------------------------------------------------
# columns


@dataclass
class Col:
    name: str
    files: int = 0  # sampled files that have it
    nonnull: int = 0
    numeric: int = 0  # values that parse as numbers
    integral: bool = True
    lo: float | None = None
    hi: float | None = None
    distinct: set[str] = field(default_factory=set)  # capped at CAP + 1
    const_in_files: bool = True
    file_values: list[str] = field(default_factory=list)  # the value of each file (if constant)
    iso: int = 0  # values that parse as ISO date-times
    codes: dict[float, int] = field(default_factory=dict)  # missing-value codes seen (-200)
    rows: int = 0  # sampled rows of the files that have it
    missing: int = 0  # empty cells and missing-value words (NaN, NA, ...) of a numeric column
    missing_words: set[str] = field(default_factory=set)  # the words as written

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    CAP = 64

    @property
    def is_numeric(self) -> bool:
        return self.nonnull > 0 and self.numeric == self.nonnull

    @property
    def n_distinct(self) -> int:
        return len(self.distinct)

    @property
    def few(self) -> bool:
        return len(self.distinct) <= self.CAP

    @property
    def boolish(self) -> bool:
        return bool(self.distinct) and {v.strip().lower() for v in self.distinct} <= BOOL_VALUES


def _iso(s: pl.Expr) -> pl.Expr:
    """Parsed as ingest parses ISO text (UTC microseconds)."""
    s = s.str.strip_chars()
    aware = [s.str.to_datetime(f, time_unit="us", time_zone="UTC", strict=False) for f in ISO_AWARE]
    naive = [
        s.str.to_datetime(f, time_unit="us", strict=False).dt.replace_time_zone("UTC")
        for f in ISO_NAIVE
    ]
    return pl.coalesce(aware + naive)


def profile(frames: list[pl.DataFrame]) -> dict[str, Col]:
    cols: dict[str, Col] = {}
    for df in frames:
        # a line of empty fields only (`;;;;;;` closing the Air Quality file) holds no values
        df = df.filter(~pl.all_horizontal(pl.all().is_null())) if df.width else df
        for name in df.columns:
            c = cols.setdefault(name, Col(name))
            s = df[name].drop_nulls()
            c.files += 1
            c.rows += df.height
            # NaN, NA, null, ?: missing values of a numeric column (PAMAP2 writes NaN), not text
            word = s.str.strip_chars().str.to_lowercase().is_in(MISSING_WORDS)
            if word.any():
                rest = s.filter(~word).str.strip_chars().cast(pl.Float64, strict=False)
                if rest.null_count() == 0:  # (an all-NaN column: empty)
                    c.missing_words |= set(s.filter(word).str.strip_chars().unique().to_list())
                    s = s.filter(~word)
            if s.len() and s.str.strip_chars().cast(pl.Float64, strict=False).null_count() == 0:
                c.missing += df.height - s.len()
            c.nonnull += s.len()
            num = s.str.strip_chars().cast(pl.Float64, strict=False)
            for code in MISSING_CODES:
                k = int((num == code).sum())
                if k:
                    c.codes[code] = c.codes.get(code, 0) + k
            ok = num.drop_nulls()
            c.numeric += ok.len()
            if ok.len():
                finite = ok.filter(ok.is_finite())
                if finite.len():
                    c.integral &= bool((finite == finite.round()).all())
                    lo, hi = float(finite.min()), float(finite.max())  # type: ignore[arg-type]
                    c.lo = lo if c.lo is None else min(c.lo, lo)
                    c.hi = hi if c.hi is None else max(c.hi, hi)
            if ok.len() < s.len():
                c.iso += int(s.to_frame("v").select(_iso(pl.col("v")).is_not_null().sum()).item())
            if len(c.distinct) <= Col.CAP:
                c.distinct |= set(s.unique().head(Col.CAP + 1).to_list())
            uniq = s.n_unique()
            if uniq > 1:
                c.const_in_files = False
            elif uniq == 1:
                c.file_values.append(s[0])
    return cols


def _seconds(frame: pl.DataFrame, col: str, fmt: str) -> pl.Series:
    """The timestamp column in seconds (floats), for steps and gaps."""
    s = frame[col]
    if fmt == "iso":
        return s.to_frame("v").select(_iso(pl.col("v")).dt.epoch("us") / 1e6).to_series()
    if "%" in fmt:
        t = s.str.strip_chars().str.to_datetime(fmt, time_unit="us", strict=False)
        return t.dt.epoch("us") / 1e6
    n = s.str.strip_chars().cast(pl.Float64, strict=False)
    div = {"epoch_ms": 1e3, "epoch_us": 1e6, "epoch_ns": 1e9}.get(fmt, 1.0)
    return n / div


def _steps(frames: list[pl.DataFrame], col: str, fmt: str, by: str | None) -> pl.Series:
    out = []
    for df in frames:
        if col not in df.columns or (by and by not in df.columns):
            continue
        t = df.select(_t=_seconds(df, col, fmt), _g=pl.col(by) if by else pl.lit(0))
        out.append(t.select(pl.col("_t").diff().over("_g")).to_series().drop_nulls())
    return pl.concat(out) if out else pl.Series([], dtype=pl.Float64)


def _ordered(frames: list[pl.DataFrame], col: str, fmt: str, by: str | None) -> bool:
    """Time-like: non-decreasing within each file (and each ``by`` group), mostly rising."""
    st = _steps(frames, col, fmt, by)
    return st.len() > 0 and (st >= 0).mean() >= 0.99 and (st > 0).mean() >= 0.5  # type: ignore[operator]


def _unique_time(frames: list[pl.DataFrame], col: str, by: str | None) -> bool:
    for df in frames:
        keys = [col] + ([by] if by else [])
        if df.select(pl.struct(keys).is_duplicated().any()).item():
            return False
    return True


# ------------------------------------------------------------------------------------------------
# the draft


@dataclass
class Draft:
    """What init decided, with comments (key -> comment) and TODOs."""

    data: dict[str, Any] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)
    todos: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    channel_notes: dict[str, str] = field(default_factory=dict)
    window_size: int = 64
    window_comment: str = ""
    window_stride: int | None = None  # default: half the size
    window: dict[str, Any] = field(default_factory=dict)  # more window keys, in order
    window_comments: dict[str, str] = field(default_factory=dict)

    def todo(self, key: str, text: str) -> None:
        self.comments[key] = "TODO: " + text
        self.todos.append(f"{key}: {text}")


UNITS = (("epoch_s", 1.0), ("epoch_ms", 1e3), ("epoch_us", 1e6), ("epoch_ns", 1e9))
YEAR_2200 = 7_258_118_400.0  # seconds after 1970-01-01: later instants are quarantined


_DATETIME_PATTERNS = [f"{d} {t}" for d in DATE_PATTERNS for t in TIME_PATTERNS] + DATE_PATTERNS


def _date_pattern(
    frames: list[pl.DataFrame], col: str, pats: list[str], time_only: bool = False
) -> tuple[str, str | None] | None:
    """The strftime pattern that reads every sampled value of a text column (at most 5 % may
    fail), with a TODO when a day-first and a month-first pattern both do (no day over 12 in
    the sample); None when none does."""
    s = pl.concat([f[col] for f in frames if col in f.columns]).drop_nulls().str.strip_chars()
    s = s.filter(s != "").head(2000)
    if s.len() == 0 or not s.str.contains(r"\d").all():
        return None
    if time_only:  # parse a time with a fixed date before it: a date alone is no time
        s = "2000-01-01 " + s
        pats = [f"%Y-%m-%d {p}" for p in pats]
    ok = []
    for p in pats:
        share = s.str.to_datetime(p, time_unit="us", strict=False).is_not_null().mean()
        if share is not None and share >= 0.95:
            ok.append(p)
    if not ok:
        return None
    best = ok[0].removeprefix("%Y-%m-%d ") if time_only else ok[0]
    swapped = best.replace("%d", "\x00").replace("%m", "%d").replace("\x00", "%m")
    if not time_only and swapped != best and swapped in ok:
        return best, (
            f"{best!r} and {swapped!r} both read every sampled value (no day over 12): "
            "day or month first? check"
        )
    return best, None


def _raw_step(frames: list[pl.DataFrame], col: str) -> float | None:
    """The median positive step of a numeric column within each file, in its own units."""
    steps = []
    for df in frames:
        if col in df.columns:
            v = df[col].str.strip_chars().cast(pl.Float64, strict=False).drop_nulls()
            d = v.diff().drop_nulls()
            steps.append(d.filter(d.is_finite() & (d > 0)))
    st = pl.concat(steps) if steps else pl.Series([], dtype=pl.Float64)
    return float(st.median()) if st.len() else None  # type: ignore[arg-type]


def _numeric_format(
    c: Col, median: float, step: float | None = None, rates: list[float] | None = None
) -> tuple[str, str | None]:
    """The unit of a numeric time column, and a TODO when it is a guess.

    A README's single stated rate decides when one unit makes the median step one sample
    period (within 20 %): Daphnet's milliseconds (15-16 per sample at 64 Hz), WISDM's
    nanoseconds (50,000,000 at 20 Hz). Otherwise the magnitude decides (a wall-clock epoch in
    s/ms/us/ns), among the units that put the values before 2200; integers that rise by 1 are
    a sample index, by more a millisecond clock."""
    mag = abs(median)
    if step and rates and len(rates) == 1:
        period = 1.0 / rates[0]
        if c.integral and abs(step - 1.0) < 1e-9 and mag < 1e8:
            return "sample_index", None
        for fmt, div in UNITS:
            if abs(step / div - period) <= 0.2 * period:
                return fmt, None
    if c.integral:
        fmt = "sample_index"
        for lim, f in (
            (1e17, "epoch_ns"),
            (1e14, "epoch_us"),
            (1e11, "epoch_ms"),
            (1e8, "epoch_s"),
        ):
            if mag >= lim:
                fmt = f
                break
        if fmt == "sample_index":
            if step is None or abs(step - 1.0) < 1e-9 or step < 1:
                return fmt, None
            return "epoch_ms", (
                f"integers rising by {_num(step)}: read as milliseconds ({_num(1e3 / step)} Hz) "
                "of a clock started near 0 (a sample index rises by 1); check the unit"
            )
    elif mag >= 1e11:
        fmt = "epoch_ms"
    elif mag >= 1e8:
        fmt = "epoch_s"
    else:
        return "epoch_s", (
            "small non-integral numbers: read as seconds after 1970-01-01 (relative time?); "
            "check the unit"
        )
    div = dict(UNITS)[fmt]
    if mag / div < YEAR_2200:
        return fmt, None
    # no wall-clock epoch in that unit (it would lie after 2200): a relative clock (a phone's
    # uptime) in a finer unit; the one whose step gives a sampling rate nearest 1 Hz-1 kHz
    finer = [(f, d) for f, d in UNITS if d > div and mag / d < YEAR_2200]
    if not finer:
        return fmt, f"values too large for any epoch unit (median {_num(median)}); check the unit"

    def miss(u: tuple[str, float]) -> float:
        if not step:
            return 0.0
        hz = u[1] / step
        return 0.0 if 1.0 <= hz <= 1e3 else abs(math.log10(hz if hz < 1 else hz / 1e3))

    fmt, div = min(finer, key=miss)
    hz = f" ({_num(div / step)} Hz)" if step else ""
    return fmt, (
        f"{_num(median)} is no date in the magnitude's unit: read as {fmt}{hz} of a clock "
        "started near 1970 (an uptime?); check the unit"
    )


def infer(
    landing: Path,
    out: Path,
    name: str | None = None,
    max_files: int = 8,
    max_bytes: int = 256 * 1024,
) -> Draft:
    landing = landing.resolve()
    if not landing.is_dir():
        raise InitError(f"not a folder: {landing}")
    files, others = find_files(landing)
    if not files:
        held = ", ".join(f"{n} {e}" for e, n in others.items()) or "nothing"
        raise InitError(
            f"no data files (CSV, TSV, TXT, DAT, Parquet, .mat, .npy, .npz, .ts) under {landing}: "
            f"{held}"
        )
    kinds = Counter(_kind(f.name) for f in files)
    file_kind = max(kinds, key=lambda k: (kinds[k], k == "table"))
    left_kinds = [f.relative_to(landing).as_posix() for f in files if _kind(f.name) != file_kind]
    files = [f for f in files if _kind(f.name) == file_kind]
    sample = _sample(files, landing, max_files)
    rel_all = [f.relative_to(landing).as_posix() for f in files]
    d = Draft()
    facts = readme_facts(landing)
    data = d.data
    base = landing.parent if landing.name.lower() in GENERIC_DIRS else landing
    data["name"] = name or re.sub(r"[^\w\-]+", "_", base.name) or "dataset"
    here = out.resolve().parent
    data["landing"] = (
        os.path.relpath(landing, here)
        if os.path.commonpath([landing, here]) != landing.anchor
        else str(landing)
    )
    d.notes.append(
        f"sampled {len(sample)} of {len(files)} files "
        + ("(read whole)" if file_kind == "array" else f"(at most {max_bytes // 1024} KiB of each)")
    )
    if others:
        d.notes.append(
            "ignored (not data): " + ", ".join(f"{n} {e}" for e, n in sorted(others.items()))
        )

    # ---- which files --------------------------------------------------------------------------
    endings = sorted({_ending(f.name) or "" for f in files})
    extra = [f"*{e}" for e in endings if f"*{e}" not in DEFAULT_INCLUDE]
    if "" in endings:  # files without a data ending (IMS snapshots named by their time)
        bare = [f.name for f in files if not _ending(f.name)]
        first = "[0-9]*" if all(n[:1].isdigit() for n in bare) else "*"
        extra = [first if e == "*" else e for e in extra]
        endings = [e or first.removeprefix("*") for e in endings]
        d.todos.append(
            f"data.include: {len(bare)} files without a data ending (e.g. {bare[0]}) are read "
            f"as text: {first!r} takes them; check it takes nothing else"
        )
    if left_kinds or file_kind != "table":
        data["include"] = [f"*{e}" for e in endings]
        d.comments["include"] = "only the kind of file drafted for" + (
            f"; left out: {len(left_kinds)} files read another way" if left_kinds else ""
        )
        if left_kinds:
            d.todos.append(
                f"data.include: drafted for the {file_kind} files; {len(left_kinds)} other files "
                f"(e.g. {left_kinds[:3]}) need a config of their own"
            )
    elif extra:
        data["include"] = DEFAULT_INCLUDE + extra
        d.comments["include"] = f"files here: {', '.join('*' + e for e in endings)}"
    if file_kind == "ts":
        return _draft_ts(d, landing, sample, rel_all, facts, max_bytes)

    # ---- read the sample ----------------------------------------------------------------------
    frames: list[pl.DataFrame] = []
    rels: list[str] = []
    dialects: list[tuple[Dialect, str]] = []
    texts: dict[str, bytes] = {}
    extra: dict[str, pl.DataFrame] = {}  # rows from further into large text files
    for f in sample:
        rel = f.relative_to(landing).as_posix()
        if file_kind in ("array", "arff"):
            try:
                frames.append(
                    read_array(f, d.notes, rel)
                    if file_kind == "array"
                    else read_arff(f, d.notes, rel, max_bytes)
                )
                rels.append(rel)
            except (OSError, FileRejected) as e:
                d.notes.append(f"could not read {rel}: {e}")
            continue
        try:
            if f.name.lower().endswith((".parquet", ".pq")):
                frames.append(read_parquet(f, 20_000))
                rels.append(rel)
                continue
            raw = _head(f, max_bytes)
            enc, text = _decode(raw)
            raw = text.encode("utf-8")  # the sample as UTF-8; the draft names the encoding
        except (OSError, EOFError, ValueError) as e:
            d.notes.append(f"could not read {rel}: {e}")
            continue
        dl = sniff(text)
        dl.encoding = enc
        dialects.append((dl, rel))
        texts[rel] = raw
    dialect = Dialect()
    if dialects:
        counts = Counter(dl.key() for dl, _ in dialects)
        top = counts.most_common(1)[0][0]
        dialect = next(dl for dl, _ in dialects if dl.key() == top)
        odd = [r for dl, r in dialects if dl.key() != top]
        if odd:
            d.todos.append(f"data.csv: these files look different: {odd[:5]}")
        for n in dialect.notes:
            (d.todos if n.startswith("TODO") else d.notes).append(f"data.csv: {n}")
        widths = {len(dl.names) for dl, _ in dialects if dl.names}
        if dialect.names and len(widths) == 1:
            dialect.names = [f"c{i}" for i in range(widths.pop())]
        for rel, raw in texts.items():
            try:
                frames.append(read_text(raw, dialect))
                rels.append(rel)
            except (FileRejected, pl.exceptions.PolarsError, ValueError) as e:
                d.notes.append(f"could not read {rel} with the guessed dialect: {e}")
                continue
            # values from further into a large file: for the profile only (ranges, distinct
            # values, missing values), not for the order of rows (steps, runs)
            more = _spread(landing / rel, max_bytes)
            if dialect.encoding != "utf-8":
                more = more.decode(dialect.encoding, errors="ignore").encode("utf-8")
            if more and frames[-1].height:
                cont = Dialect(
                    delimiter=dialect.delimiter,
                    whitespace=dialect.whitespace,
                    header=False,
                    names=frames[-1].columns,
                    comment_prefix=dialect.comment_prefix,
                    record_end=dialect.record_end,
                    decimal_comma=dialect.decimal_comma,
                )
                # unreadable further in: the head alone, as before
                with contextlib.suppress(FileRejected, pl.exceptions.PolarsError, ValueError):
                    extra[rel] = read_text(more, cont)
    keep = [i for i, f in enumerate(frames) if f.height]
    frames, rels = [frames[i] for i in keep], [rels[i] for i in keep]
    if not frames:
        raise InitError(f"could not read any rows from the sampled files under {landing}")
    if dialects and not dialect.header and not dialect.indexed and looks_wide(frames):
        return _draft_wide(d, dialect, frames, rel_all, facts)
    if file_kind == "arff" and _wide_arff(frames):
        return _draft_wide_arff(d, frames, rel_all, facts)
    if file_kind == "array":
        rule = guess_rename(
            d, [(file_stem(r), f.columns) for r, f in zip(rels, frames, strict=True)]
        )
        if rule is not None:
            data["rename"] = [rule]
            rx = re.compile(rule["pattern"])
            frames = [f.rename({c: rx.sub(rule["to"], c) for c in f.columns}) for f in frames]
    csvd: dict[str, Any] = {}
    if dialects:
        if dialect.whitespace:
            csvd["whitespace"] = True
            d.comments["csv.whitespace"] = "fields separated by runs of spaces and tabs"
        elif dialect.delimiter != ",":
            csvd["delimiter"] = dialect.delimiter
        if not dialect.header:
            csvd["header"] = False
            csvd["names"] = dialect.names
            d.todo("csv.names", "the files have no header: name the fields (c0.. are placeholders)")
        if dialect.after_header:
            csvd["skip_after_header"] = dialect.after_header
            shown = ", ".join(f"{n} ({u})" for n, u in list(dialect.units.items())[:4])
            d.comments["csv.skip_after_header"] = f"units under the header: {shown}"
            for n, u in dialect.units.items():  # channel units, unless a README says
                facts.units.setdefault(n, u)
        if dialect.decimal_comma:
            csvd["decimal_comma"] = True
            d.comments["csv.decimal_comma"] = "numbers written 2,6"
        if dialect.encoding != "utf-8":
            csvd["encoding"] = dialect.encoding
            d.comments["csv.encoding"] = (
                "by its byte order mark"
                if dialect.encoding == "utf-16"
                else "not UTF-8: the first legacy encoding that reads the sample; check it"
            )
        if dialect.record_end:
            csvd["record_end"] = dialect.record_end
            d.comments["csv.record_end"] = "every record ends with it (then the line end)"
        if dialect.skip_rows:
            csvd["skip_rows"] = dialect.skip_rows
            d.comments["csv.skip_rows"] = "lines before the header that are not rows"
        if dialect.comment_prefix:
            csvd["comment_prefix"] = dialect.comment_prefix
        if dialect.indexed:
            d.notes.append(
                f"the header is one name short of the rows: a leading row index, read as "
                f"{INDEX_COLUMN} (data.csv.index_column: auto) and not kept"
            )
    if csvd:
        data["csv"] = csvd

    cols = profile(
        [
            pl.concat([f, extra[r]]) if r in extra and extra[r].columns == f.columns else f
            for r, f in zip(rels, frames, strict=True)
        ]
    )
    n_files = len(frames)
    everywhere = [c for c in cols.values() if c.files == n_files]
    used: set[str] = {INDEX_COLUMN} if INDEX_COLUMN in cols else set()

    # ---- path columns -------------------------------------------------------------------------
    pg = guess_path_columns(rel_all)
    if pg.pattern:
        for g in list(pg.types):
            vals = [pg.values[r].get(g) for r in rels]
            if g in cols:
                pg.drop(g, f"a column of the files is named {g!r}")
                continue
            for c in everywhere:
                if c.const_in_files and len(c.file_values) == n_files:
                    fv = [
                        int(float(v)) if c.is_numeric and c.integral else v for v in c.file_values
                    ]
                    if fv == vals:
                        pg.drop(g, f"it repeats the column {c.name!r}")
                        break
        if pg.pattern:
            data["path_columns"] = {
                "pattern": pg.pattern,
                **(
                    {"types": {k: v for k, v in pg.types.items() if v != "string"}}
                    if any(v != "string" for v in pg.types.values())
                    else {}
                ),
            }
            d.comments["path_columns.pattern"] = (
                "from the path: " + ", ".join(pg.types) + " (searched in the path relative to "
                "data.landing)"
            )
    d.notes += pg.notes
    path_names = list(pg.types) if pg.pattern else []

    # ---- timestamp and entity -----------------------------------------------------------------
    group_cands = [
        c.name
        for c in everywhere
        if not c.const_in_files and c.few and c.n_distinct >= 2 and (not c.is_numeric or c.integral)
    ]
    ts_col = ts_fmt = ts_by = None
    ts_todo = None
    # dates written another way than ISO (16/12/2006 17:24:00), and a date column with the
    # time in the next one (Date;Time): a strftime pattern, the two columns joined
    patterns: dict[str, tuple[str, str | None]] = {}
    pair: tuple[str, str] | None = None
    names_ = [n for n in frames[0].columns if n in cols]
    for a, b in zip(names_, names_[1:], strict=False):
        ca, cb = cols[a], cols[b]
        if ca.files == cb.files == n_files and not ca.is_numeric and not cb.is_numeric:
            pa = _date_pattern(frames, a, DATE_PATTERNS)
            pb = _date_pattern(frames, b, TIME_PATTERNS, time_only=True)
            if pa and pb:
                pair = (a, b)
                frames = [
                    f.with_columns(pl.concat_str([a, b], separator=" ").alias(JOINED))
                    for f in frames
                ]
                patterns[JOINED] = (f"{pa[0]} {pb[0]}", pa[1])
                cols[JOINED] = profile([f.select(JOINED) for f in frames])[JOINED]
                everywhere.append(cols[JOINED])
                used.add(JOINED)  # never a channel, label or metadata column itself
                break
    for c in everywhere:
        if c.name not in patterns and not c.is_numeric and c.nonnull and c.iso < 0.95 * c.nonnull:
            found = _date_pattern(frames, c.name, _DATETIME_PATTERNS)
            if found:
                patterns[c.name] = found
    cands: list[tuple[tuple, str, str, str | None, str | None]] = []
    for c in everywhere:
        if c.name == INDEX_COLUMN:
            continue
        if c.is_numeric:
            med = float(
                pl.concat([f[c.name] for f in frames])
                .str.strip_chars()
                .cast(pl.Float64, strict=False)
                .median()
            )  # type: ignore[arg-type]
            step = _raw_step(frames, c.name)
            fmt, note = _numeric_format(c, med, step, facts.rates)
            m = UNIT_IN_NAME.match(c.name)  # `Time (s)`, `t [ms]`: the unit is written
            named = TIME_UNITS.get(m[2].strip().lower()) if m else None
            if named:
                fmt, note = named, None
            kind = 2
        elif c.nonnull and c.iso >= 0.95 * c.nonnull:
            fmt, note, kind = "iso", None, 3
        elif c.name in patterns:
            (fmt, note), kind = patterns[c.name], 3
        else:
            continue
        for by in [None, *[g for g in group_cands if g != c.name]]:
            if _ordered(frames, c.name, fmt, by):
                hint = _hinted(c.name, TS_HINTS)
                # time restarts per entity, whose id holds over runs of rows (turbofan: the
                # cycle counts 1, 2, 3 per unit); a "group" that changes every row is no entity
                runs = by is None or _change_rate(frames, by) < 0.5
                # a clock (epoch or text) before a counter when both are named as time
                # (HHAR: Creation_Time over Index)
                clock = fmt != "sample_index"
                score = (
                    hint,
                    runs,
                    clock,
                    kind,
                    by is None and _unique_time(frames, c.name, None),
                )
                cands.append((score, c.name, fmt, by, note))
                break
    cands.sort(key=lambda x: x[0], reverse=True)
    if cands:
        _, ts_col, ts_fmt, ts_by, ts_todo = cands[0]
    elif len(facts.rates) == 1:  # rows are samples at the stated rate: time from the position
        ts_fmt = "sample_index"
        d.comments["timestamp.format"] = (
            "no column looks like time: each row's position in its file is its sample index"
        )
    else:  # no clock in the files: each row's position in its file is its sample index
        ts_fmt = "sample_index"
        d.comments["timestamp.format"] = (
            "no column looks like time (ISO text, epoch or an index): each row's position in "
            "its file is its sample index"
        )
    if ts_col == JOINED and pair is not None:
        ts = {"column": list(pair), "format": ts_fmt}
        used.update(pair)
        d.comments["timestamp.column"] = "a date and the time beside it, joined with a space"
    else:
        ts = {"format": ts_fmt} if ts_col is None else {"column": ts_col}
        ts["format"] = ts_fmt
    if ts_col is not None and "%" in str(ts_fmt):
        d.comments.setdefault("timestamp.format", "a strftime pattern read in timestamp.timezone")
    others = [n for _, n, _, _, _ in cands[1:4]]
    rate: float | None = None
    if ts_fmt == "sample_index":
        stated = facts.rates
        # a single value named as a rate (an .npz's fs, a .mat's Fs), the same in every file
        held = [
            c
            for c in everywhere
            if _tokens(c.name) & RATE_HINTS
            and c.is_numeric
            and c.const_in_files
            and len(c.distinct) == 1
            and (c.lo or 0) > 0
        ]
        if len(stated) == 1:
            ts["sample_rate_hz"] = int(stated[0]) if stated[0].is_integer() else stated[0]
            rate = stated[0]
            d.comments["timestamp.sample_rate_hz"] = f"as {facts.source} states"
        elif held:
            rate = float(held[0].lo)  # type: ignore[arg-type]
            ts["sample_rate_hz"] = int(rate) if rate.is_integer() else rate
            d.comments["timestamp.sample_rate_hz"] = f"the files' {held[0].name!r}"
        else:
            ts["sample_rate_hz"] = 1
            d.todo(
                "timestamp.sample_rate_hz",
                "a sample index holds no clock: set the real rate (1 Hz is a placeholder)"
                + (f"; {facts.source} names {[_num(r) for r in stated]} Hz" if stated else ""),
            )
        ts["start"] = EPOCH
        d.comments["timestamp.start"] = "the instant of sample 0: the epoch if the files hold none"
    if ts_col is not None:
        used.add(ts_col)

    # entity: a column under which time is ordered and unique (several streams per file)
    ent_col = None
    if ts_col in cols and ts_by is None and not _unique_time(frames, ts_col, None):
        for g in sorted(group_cands, key=lambda g: not _hinted(g, ENTITY_HINTS)):
            if g != ts_col and _unique_time(frames, ts_col, g):
                ent_col = g
                break
    elif ts_by is not None:
        ent_col = ts_by
    elif ts_col in cols:
        # streams of several devices interleaved row by row (HHAR: one file, a Device
        # column), each with its own clock: the id-named column under which time is ordered
        for g in group_cands:
            if (
                g != ts_col
                and _hinted(g, ENTITY_HINTS)
                and _change_rate(frames, g) > 0.1
                and _ordered(frames, ts_col, ts_fmt, g)
                and _unique_time(frames, ts_col, g)
            ):
                ent_col = g
                break
    if ts_col in cols:
        st = _steps(frames, ts_col, ts_fmt, ent_col)
        st = st.filter(st > 0)
        if st.len():
            med = float(st.median())  # type: ignore[arg-type]
            big = st.filter(st > 1.5 * med)
            if ts_fmt == "sample_index":
                d.comments["timestamp.format"] = (
                    f"integers rising by {_num(med)}: a sample index"
                    + (f" (a cycle or sample counter, restarting per {ent_col})" if ent_col else "")
                )
            else:
                rate = 1.0 / med
                if len(facts.rates) == 1 and abs(rate - facts.rates[0]) <= 0.2 * facts.rates[0]:
                    rate = facts.rates[0]  # jittered steps (15, 16 ms): the stated rate
                gaps = (
                    f"; {big.len()} gaps over 1.5 steps (largest {_num(float(big.max()))} s)"  # type: ignore[arg-type]
                    if big.len()
                    else "; no gaps"
                )
                d.comments["timestamp.format"] = (
                    f"median step {_num(med)} s ({_num(rate)} Hz){gaps} in the sample"
                )
    if ts_todo:
        d.todo("timestamp.format", ts_todo)
    elif others:
        d.comments.setdefault("timestamp.column", f"other candidates: {others}")
    data["timestamp"] = ts

    stems = [file_stem(r) for r in rel_all]
    stems_unique = len(set(stems)) == len(stems)

    def entity_column(ent_col: str, why: str) -> None:
        used.add(ent_col)
        spread = _repeats_across_files(frames, ent_col)
        if spread and len(frames) > 1 or spread and len(files) > 1:
            first = next((p for p in path_names if p.startswith("split")), None)
            first = first or (path_names[0] if path_names else "file")
            data["entity"] = {"parts": [first, ent_col]}
            d.comments["entity.parts"] = (
                f"the ids of {ent_col!r} repeat across files: one entity per ({first}, {ent_col})"
            )
        else:
            data["entity"] = {"column": ent_col}
            d.comments["entity.column"] = f"{len(cols[ent_col].distinct)} ids, " + why

    if ent_col is not None:
        entity_column(
            ent_col,
            "each its own stream in the files"
            + (" (constant over runs of rows)" if _change_rate(frames, ent_col) < 0.1 else ""),
        )
    elif stems_unique:
        data["entity"] = {"from_filename": stem_pattern(stems)}
        d.comments["entity.from_filename"] = "one entity per file (the file name stem)"
    else:
        parts = [*path_names, "file"]
        data["entity"] = {"parts": parts}
        d.comments["entity.parts"] = "file names repeat across folders: folder parts + file name"

    # ---- label --------------------------------------------------------------------------------
    lab_cands = []
    for c in cols.values():
        if c.name in used or c.n_distinct < 2 or c.n_distinct > 20:
            continue
        if c.const_in_files and n_files > 1 and not _hinted(c.name, LABEL_HINTS):
            continue  # one value per file: metadata (experiment, user), not a label
        hint = _hinted(c.name, LABEL_HINTS)
        short = all(len(v) <= 32 for v in c.distinct)
        ok_type = c.boolish or (c.is_numeric and c.integral) or (not c.is_numeric and short)
        if not ok_type:
            continue
        rows = sum(f.height for f in frames if c.name in f.columns)
        if not hint and not (c.n_distinct <= 10 and c.n_distinct <= 0.05 * rows):
            continue
        if not hint and _change_rate(frames, c.name) > 0.2:
            continue  # a label holds over runs of rows; this changes from row to row: a reading
        last = any(f.columns and f.columns[-1] == c.name for f in frames)
        lab_cands.append(((hint, True, c.is_numeric or c.boolish, last), c))
    # a candidate whose runs each span several of another's (WISDM's user over its
    # activities) groups rows: the finer one is the label
    lab_cands = [
        (
            (k[0], not any(_coarser(frames, c.name, o.name) for _, o in lab_cands if o is not c))
            + k[2:],
            c,
        )
        for k, c in lab_cands
    ]
    lab_cands.sort(key=lambda x: x[0], reverse=True)
    label_names = None
    if lab_cands:
        (hint, _, _, _), lc = lab_cands[0]
        if lc.boolish:
            dtype = "bool"
        elif lc.is_numeric:
            dtype = "int" if lc.integral else "float"
        else:
            dtype = "string"
        label: dict[str, Any] = {"column": lc.name, "dtype": dtype}
        shown = sorted(lc.distinct, key=lambda v: (float(v) if lc.is_numeric else 0, v))[:12]
        d.comments["label.dtype"] = "values seen: " + ", ".join(shown)
        if not hint:
            d.todo(
                "label.column",
                f"guessed (few distinct values); other candidates: "
                f"{[c.name for _, c in lab_cands[1:4]] or 'none'}; remove the label if none",
            )
        elif len(lab_cands) > 1:
            d.comments["label.column"] = f"other candidates: {[c.name for _, c in lab_cands[1:4]]}"
        if lc.files < n_files or len(sample) < len(files):
            missing = [r for r, f in zip(rels, frames, strict=True) if lc.name not in f.columns]
            if missing:
                vals = sorted(lc.distinct, key=lambda v: (float(v) if lc.is_numeric else 0, v))
                default: Any = vals[0]
                if dtype == "int":
                    default = int(float(default))
                elif dtype == "bool":
                    default = default.strip().lower() in ("true", "yes", "1")
                label["default"] = default
                d.todo(
                    "label.default",
                    f"files without {lc.name!r} (e.g. {missing[0]}) take this label; check it",
                )
        data["label"] = label
        used.add(lc.name)
        if ent_col is None:
            # several streams in a file without a column under which time repeats (WISDM: one
            # file, a user column whose runs each span several activities): that column is
            # the entity, when time is ordered and unique within it
            for g in group_cands:
                if (
                    g not in used
                    and _coarser(frames, g, lc.name)
                    and (
                        ts_col is None
                        or _ordered(frames, ts_col, ts_fmt, g)
                        and _unique_time(frames, ts_col, g)
                    )
                ):
                    ent_col = g
                    entity_column(
                        g,
                        f"constant over runs that each span several {lc.name!r} values (a "
                        "subject or recording: its own stream); check",
                    )
                    break
        # a string column that names the label values one to one: label names
        for c in cols.values():
            if c.name in used or c.is_numeric or not c.few:
                continue
            if _one_to_one(frames, lc.name, c.name):
                label_names = c.name
                break
    else:
        folder = next(
            (
                g
                for g in path_names
                if pg.types.get(g) == "string"
                and not g.startswith("split")
                and 2 <= len({pg.values[r].get(g) for r in pg.values}) <= 20
            ),
            None,
        )
        # each file's class in an index table beside the files (CinC 2017's REFERENCE.csv)
        others_ = [landing / r for r in left_kinds if _kind(r) == "table"]
        others_ += [q for q in sorted(landing.parent.glob("*.csv")) if q.is_file()]
        table = _label_table(others_, {file_stem(r) for r in rel_all}, out)
        if table is not None and "label" not in cols:
            data["label"] = {"column": "label", "dtype": "string", "table": table[0]}
            d.todo(
                "label.table",
                f"{table[1]}: each file's label from that table (match: file); check it",
            )
        elif folder is not None and "label" not in cols:
            # one class per folder (normal/, inner_race/): the label of every file in it
            data["label"] = {"column": "label", "dtype": "string", "default_from": folder}
            seen = sorted({str(pg.values[r].get(folder)) for r in pg.values})
            d.todo(
                "label.default_from",
                f"no label column: the folder ({folder}: {seen[:8]}) is each file's label; "
                "remove the label if it is not one",
            )
            # a class per file: an unstratified split of few files can miss a class somewhere
            d.window.setdefault("split", {})["stratify"] = True
            d.window_comments["split"] = "each class's files in proportion in train/val/test"
        else:
            d.todos.append(
                "data.label: no label-like column found (none written); for run-to-failure "
                "recordings (each entity ends at its failure) regress the remaining life "
                "instead: window.label: regression_end, window.target_from_end: samples "
                "(docs/tasks.md, regress)"
            )

    # ---- metadata and channels ----------------------------------------------------------------
    columns: dict[str, str] = {}
    channels: list[dict[str, Any]] = []
    skipped: list[str] = []
    gappy: list[Col] = []  # channels with missing values
    time_like = {n for sc, n, *_ in cands if sc[0] and n != ts_col}
    coded: list[str] = []  # missing-value codes (-200) seen in channels
    for name_, c in cols.items():
        if name_ in used:
            continue
        if c.files < n_files:
            skipped.append(f"{name_} (only in {c.files} of {n_files} files)")
            continue
        if name_ in time_like:  # HHAR's Index and second clock beside the one chosen
            skipped.append(f"{name_} (named and ordered as time too: no channel)")
            continue
        if name_ in RESERVED or name_ in path_names:
            if c.is_numeric and not (c.const_in_files and n_files > 1 and c.integral):
                channels.append({"name": f"{name_}_value", "source": name_})
                d.channel_notes[f"{name_}_value"] = _range(c)
            else:
                skipped.append(f"{name_} (a reserved or path column name)")
            continue
        if c.is_numeric:
            if file_kind == "array" and c.const_in_files and c.n_distinct:
                columns[name_] = "float"  # a single value (e.g. a recording's RPM): metadata
                d.comments["columns"] = "single values of the files: one value per file"
            elif c.const_in_files and n_files > 1 and c.integral and len(set(c.file_values)) > 1:
                columns[name_] = "int"
            elif c.missing_share > MOSTLY_MISSING:
                skipped.append(
                    f"{name_} (missing in {c.missing_share:.0%} of the sampled rows: no channel; "
                    "add it with allow_missing_channels and window.impute if it matters)"
                )
            else:
                ch = _channel(name_, c, facts)
                channels.append(ch)
                d.channel_notes[ch["name"]] = _range(c)
                if c.missing:
                    d.channel_notes[ch["name"]] += f"; missing in {c.missing_share:.1%} of the rows"
                    gappy.append(c)
                for code, k in c.codes.items():  # at an end of the range, in 1 % of the rows
                    if k >= 0.01 * c.rows and code in (c.lo, c.hi):
                        coded.append(f"{_num(code)} in {k / c.rows:.0%} of {name_!r}")
        elif c.boolish:
            columns[name_] = "bool"
        elif c.nonnull == 0:
            skipped.append(f"{name_} (empty in the sample)")
        elif c.few or c.const_in_files:
            columns[name_] = "string"
        else:
            skipped.append(f"{name_} (text with many values)")
    words = sorted({w for c in cols.values() for w in c.missing_words})
    if words:  # NaN read as a number would be quarantined as non-finite: read it as missing
        data.setdefault("csv", {})["null_values"] = ["", *words]
        d.comments["csv.null_values"] = f"missing values written {words} (and empty cells)"
    if coded:
        d.todos.append(
            "csv.null_values: a code for a missing value? "
            + "; ".join(coded[:4])
            + " (add it as text, e.g. null_values: ['', '-200'], with allow_missing_channels)"
        )
    if gappy:
        data["allow_missing_channels"] = True
        d.comments["allow_missing_channels"] = (
            f"channels with missing values ({', '.join(c.name for c in gappy[:5])}): kept as nulls"
        )
        d.window["impute"] = "linear"
        d.window_comments["impute"] = "missing values filled in time (longer runs: cut out)"
    idlike = [n for n in columns if _hinted(n, ENTITY_HINTS)]
    if ent_col is None and idlike:
        d.comments.setdefault("entity", f"id-like columns (kept as metadata): {idlike}")
    if columns:
        data["columns"] = columns
        split_like = [
            n
            for n, c in cols.items()
            if n in columns and c.distinct and {v.lower() for v in c.distinct} <= SPLIT_VALUES
        ]
        if split_like:
            d.comments["columns"] = (
                f"train/test-like values in {split_like}: window.split.method=column"
            )
    if label_names:
        d.notes.append(f"{label_names!r} names the label values: window.label_names_column")
    if skipped:
        d.todos.append("columns not mapped: " + "; ".join(skipped))
    if not channels:
        d.todos.append("data.channels: no numeric column left for a channel")
        channels = [{"name": "TODO"}]
    data["entity"] = data["entity"]
    data["channels"] = channels

    # ---- window -------------------------------------------------------------------------------
    if rate:
        size = min(MAX_WINDOW, max(16, round(2.56 * rate)))
        d.window_size = size
        d.window_comment = f"~{_num(size / rate)} s at {_num(rate)} Hz"
        if size < round(2.56 * rate):  # fast signals (vibration): a few cycles are enough
            d.window_comment += f" (at most {MAX_WINDOW} samples: raise for slower patterns)"
        elif size != round(2.56 * rate):
            d.window_comment += " (at least 16 samples)"
    else:
        d.window_size = 64
        d.window_comment = "TODO: about 2-3 s of samples once the rate is known"
    return d


def _channel(name: str, c: Col, facts: ReadmeFacts) -> dict[str, Any]:
    """A channel; with the unit a README states and, for an inertial unit, the full-scale limits
    when every observed value lies inside them."""
    ch: dict[str, Any] = {"name": name}
    unit = facts.units.get(name)
    m = UNIT_IN_NAME.match(name)
    if m:  # `Linear Acceleration x (m/s^2)` (Phyphox, spreadsheet exports): the unit from the
        # name, the lake column a plain one (linear_acceleration_x), the header as the source
        plain = re.sub(r"[^0-9a-zA-Z]+", "_", m[1]).strip("_").lower()
        if plain:
            ch = {"name": plain, "source": name}
        unit = unit or m[2].strip()
    if unit:
        ch["unit"] = unit
        fs = FULL_SCALE.get(unit)
        if fs is not None and c.lo is not None and -fs <= c.lo and c.hi <= fs:  # type: ignore[operator]
            ch["min"], ch["max"] = (
                -int(fs) if fs.is_integer() else -fs,
                int(fs) if fs.is_integer() else fs,
            )
    return ch


def _range(c: Col) -> str:
    if c.lo is None:
        return ""
    return f"observed {_num(c.lo)} .. {_num(c.hi)}"  # type: ignore[arg-type]


def _repeats_across_files(frames: list[pl.DataFrame], col: str) -> bool:
    seen: list[set[str]] = [set(f[col].drop_nulls().to_list()) for f in frames if col in f.columns]
    return any(a & b for i, a in enumerate(seen) for b in seen[i + 1 :])


def _change_rate(frames: list[pl.DataFrame], col: str) -> float:
    """The share of rows whose value differs from the row before (within each file)."""
    ch = n = 0
    for f in frames:
        if col in f.columns and f.height > 1:
            s = f[col]
            ch += int((s.slice(1) != s.slice(0, s.len() - 1)).sum())
            n += s.len() - 1
    return ch / n if n else 0.0


def _coarser(frames: list[pl.DataFrame], a: str, b: str) -> bool:
    """``a`` changes only where ``b`` changes, and less often, in every file: its runs each hold
    several of ``b``'s (a subject or recording over activities), so ``a`` groups, ``b`` labels."""
    na = nb = 0
    for f in frames:
        if a not in f.columns or b not in f.columns or f.height < 2:
            continue
        ca = f[a].slice(1) != f[a].slice(0, f.height - 1)
        cb = f[b].slice(1) != f[b].slice(0, f.height - 1)
        if bool((ca & ~cb).any()):
            return False
        na += int(ca.sum())
        nb += int(cb.sum())
    return na < nb


def _one_to_one(frames: list[pl.DataFrame], a: str, b: str) -> bool:
    pairs = pl.concat(
        [f.select(a, b) for f in frames if a in f.columns and b in f.columns]
    ).unique()
    return (
        pairs.height > 1
        and pairs[a].n_unique() == pairs.height
        and pairs[b].n_unique() == pairs.height
    )


# ------------------------------------------------------------------------------------------------
# array files (.mat, .npy, .npz): variables as columns


def read_array(path: Path, notes: list[str], rel: str) -> pl.DataFrame:
    """A .mat/.npy/.npz file read by ingest's own reader (`cnnlstm.formats`: scipy runs in its
    child process, nothing is unpickled), columns named as ingest names them (before
    data.rename), as strings; the reader's notes (variables left out) go to ``notes``."""
    size = path.stat().st_size
    if size > ARRAY_MAX_BYTES:
        raise FileRejected(f"{size} bytes: init reads array files of at most {ARRAY_MAX_BYTES}")
    said: list[str] = []
    df, _ = read_source(path.read_bytes(), path.name, permissive(), 4 << 30, 500_000_000, said)
    notes += [f"{rel}: {n}" for n in said]
    return df.drop(ROW).head(20_000).select(pl.all().cast(pl.String))


def read_arff(path: Path, notes: list[str], rel: str, max_bytes: int) -> pl.DataFrame:
    """The head of an ARFF file read by ingest's reader (`formats.arff`: the attributes as
    columns, `?` missing), as strings; the reader's notes go to ``notes``."""
    said: list[str] = []
    df, _ = read_source(_head(path, max_bytes), path.name, permissive(), 4 << 30, 500_000_000, said)
    notes += [f"{rel}: {n}" for n in said]
    return df.drop(ROW).select(pl.all().cast(pl.String))


def _wide_arff(frames: list[pl.DataFrame]) -> bool:
    """More than `WIDE_MIN_COLUMNS` numeric attributes and a last one of few values (the
    class): one series per row (UCR univariate ARFF)."""
    f0 = frames[0]
    if f0.width <= WIDE_MIN_COLUMNS:
        return False
    cols = profile(frames)
    last = cols[f0.columns[-1]]
    rest = [cols[n] for n in f0.columns[:-1]]
    return last.n_distinct <= 20 and sum(c.is_numeric for c in rest) >= 0.9 * len(rest)


def _draft_wide_arff(
    d: Draft, frames: list[pl.DataFrame], rel_all: list[str], facts: ReadmeFacts
) -> Draft:
    """A UCR-style univariate ARFF file: one series per row, the attributes the values and the
    class last (data.wide with the value columns named by pattern)."""
    data = d.data
    last = frames[0].columns[-1]
    values = frames[0].columns[:-1]
    data["wide"] = {"value_pattern": _value_pattern(values)}
    d.comments["include"] = "only these files: each row of them is a series"
    lengths, missing = _series_lengths([f.select(values) for f in frames])
    lab = profile(frames)[last]
    d.notes.append(
        f"one series per row (data.wide): {len(values)} value attributes, the class last "
        f"({last!r}: {lab.n_distinct} values)"
    )
    _melted_series(d, rel_all, facts, lengths, missing)
    dtype = "int" if lab.is_numeric and lab.integral else "string"
    data["label"] = {"column": last, "dtype": dtype}
    d.comments["label.dtype"] = "values seen: " + ", ".join(sorted(lab.distinct)[:12])
    return d


def _label_table(
    candidates: list[Path], stems: set[str], out: Path
) -> tuple[dict[str, Any], str] | None:
    """A small CSV table one of whose columns holds at least 80 % of the data files' names
    (stems) and another at most 50 distinct values: ``label.table`` for it (path relative to
    the config file), and why. Headerless tables (`A00001,N`) get ``names``."""
    if not stems:
        return None
    for p in candidates:
        try:
            if p.stat().st_size > 20 << 20:
                continue
            raw = p.read_bytes()
        except OSError:
            continue
        for header in (True, False):
            try:
                df = pl.read_csv(raw, has_header=header, infer_schema=False)
            except pl.exceptions.PolarsError:
                break
            if df.width < 2 or df.height == 0:
                break
            if header and any(c.strip() in stems for c in df.columns):
                continue  # the first line is a record (A00001,N): no header
            if not header:
                df.columns = ["record", "class", *[f"c{i}" for i in range(2, df.width)]]
            df = df.select(pl.all().str.strip_chars())
            for key in df.columns:
                hits = len(stems & set(df[key].drop_nulls().to_list()))
                if hits < 0.8 * len(stems):
                    continue
                for val in df.columns:
                    if val != key and 2 <= df[val].n_unique() <= 50:
                        t: dict[str, Any] = {"path": os.path.relpath(p, out.resolve().parent)}
                        if not header:
                            t["names"] = df.columns
                        t |= {"key": key, "value": val, "match": "file"}
                        why = (
                            f"{p.name} names {hits} of the {len(stems)} files in {key!r} "
                            f"with {df[val].n_unique()} values in {val!r}"
                        )
                        return t, why
    return None


def _value_pattern(names: list[str]) -> str:
    """A regex for value columns named as a prefix and a number (att1, att2, ...), else one
    that matches exactly these names."""
    m = re.fullmatch(r"([A-Za-z_]*)\d+", names[0])
    if m and all(re.fullmatch(re.escape(m[1]) + r"\d+", n) for n in names):
        return rf"^{re.escape(m[1])}\d+$"
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def _melted_series(
    d: Draft, rel_all: list[str], facts: ReadmeFacts, lengths: list[int], missing: bool
) -> None:
    """What a wide draft (CSV text or ARFF) shares: the series keys and window, and the one
    melted channel."""
    _series_draft(d, rel_all, facts, lengths, missing, classify=True)
    d.data["channels"] = [{"name": "value"}]
    d.channel_notes["value"] = "the melted values (data.wide.value_name)"


def _series_lengths(frames: list[pl.DataFrame]) -> tuple[list[int], bool]:
    """Each row's series length (the values up to the last present one) and whether a value
    is missing inside a series."""
    lengths: list[int] = []
    missing = False
    for f in frames:
        v = f.select(pl.all().str.strip_chars().cast(pl.Float64, strict=False))
        present = ~np.isnan(v.to_numpy().astype(np.float64))
        n = np.where(present.any(axis=1), present.shape[1] - np.argmax(present[:, ::-1], 1), 0)
        lengths += [int(x) for x in n if x]
        missing |= any(not present[i, : n[i]].all() for i in range(len(n)))
    return lengths, missing


PREFIX_RE = re.compile(r"^([A-Za-z]*)(\d+)(_?)(?=.)")


def guess_rename(d: Draft, names: list[tuple[str, list[str]]]) -> dict[str, str] | None:
    """A data.rename rule that removes a per-file prefix of the column names (CWRU:
    ``X097_DE_time`` in ``97.mat``, ``X105_DE_time`` in ``105.mat``): letters and a number, the
    same number on every prefixed name of a file, other numbers in other files (or, with one
    file, the number of its name). ``names``: (file stem, column names) per file."""
    letters: Counter[str] = Counter()
    numbers: list[int] = []
    stem_match = True
    odd: list[str] = []
    for stem, cols in names:
        hits = [m for m in (PREFIX_RE.match(c) for c in cols) if m]
        if not hits:
            continue
        nums = {int(m[2]) for m in hits}
        if len(nums) > 1:
            odd.append(f"{stem} ({sorted({m[1] + m[2] for m in hits})})")
            continue
        letters.update(m[1] for m in hits)
        numbers.append(nums.pop())
        stem_match &= numbers[-1] in [int(t) for t in re.findall(r"\d+", stem)]
    if not numbers or len(letters) != 1 or not (len(set(numbers)) > 1 or stem_match):
        return None
    rule = {"pattern": "^" + re.escape(next(iter(letters))) + r"\d+_?", "to": ""}
    rx = re.compile(rule["pattern"])
    for stem, cols in names:
        new = [rx.sub("", c) for c in cols]
        if len(set(new)) != len(new) and not any(o.startswith(stem + " ") for o in odd):
            odd.append(stem)
    d.comments["rename"] = "the per-file prefix off, so that the names agree across files"
    if odd:
        d.todos.append(
            f"data.rename: these files hold names with different prefixes, which the rule "
            f"gives one name (ingest rejects them): {odd[:5]}"
        )
    return rule


# ------------------------------------------------------------------------------------------------
# one series per row (UCR wide text) or per line (.ts)


def looks_wide(frames: list[pl.DataFrame]) -> bool:
    """Headerless text of many numeric fields whose first field is a class: few distinct whole
    numbers (the UCR layout: one series per row, the class first)."""
    f0 = frames[0]
    if f0.width <= WIDE_MIN_COLUMNS:
        return False
    cols = profile(frames)
    first = cols[f0.columns[0]]
    rows = sum(f.height for f in frames)
    if not (first.is_numeric and first.integral and first.n_distinct <= min(20, max(2, rows // 2))):
        return False
    rest = [c for n, c in cols.items() if n != first.name]
    return sum(c.is_numeric for c in rest) >= 0.9 * len(rest)


def _series_paths(d: Draft, rel_all: list[str]) -> tuple[str | None, list[str]]:
    """path_columns for files of series: the split from names ending ``_TRAIN``/``_TEST``
    (UCR/UEA), else what `guess_path_columns` finds. Returns the split group and its values."""
    stems = [file_stem(r) for r in rel_all]
    ms = [re.search(r"_([A-Za-z]+)$", s) for s in stems]
    vals = sorted({m[1] for m in ms if m})
    if all(ms) and len(vals) > 1 and {v.lower() for v in vals} <= SPLIT_VALUES:
        alts = "|".join(re.escape(v) for v in vals)
        d.data["path_columns"] = {"pattern": rf"_(?P<split>{alts})\.[^/]*$"}
        d.comments["path_columns.pattern"] = "the split from the file name"
        return "split", vals
    pg = guess_path_columns(rel_all)
    d.notes += pg.notes
    if not pg.pattern:
        return None, []
    pc: dict[str, Any] = {"pattern": pg.pattern}
    types = {k: v for k, v in pg.types.items() if v != "string"}
    if types:
        pc["types"] = types
    d.data["path_columns"] = pc
    d.comments["path_columns.pattern"] = "from the path: " + ", ".join(pg.types)
    split = next((g for g in pg.types if g.startswith("split")), None)
    return split, sorted({str(v[split]) for v in pg.values.values()}) if split else []


def _series_draft(
    d: Draft,
    rel_all: list[str],
    facts: ReadmeFacts,
    lengths: list[int],
    missing: bool,
    classify: bool,
) -> None:
    """What files of series share: entity (file, series), time from the position, the window
    over a whole series (padded when shorter), one label per series, the split by file name."""
    data = d.data
    split, values = _series_paths(d, rel_all)
    data["entity"] = {"parts": ["file", "series"]}
    d.comments["entity.parts"] = "one entity per series (series numbers repeat across files)"
    ts: dict[str, Any] = {"column": "position", "format": "sample_index"}
    if len(facts.rates) == 1:
        r = facts.rates[0]
        ts["sample_rate_hz"] = int(r) if r.is_integer() else r
        d.comments["timestamp.sample_rate_hz"] = f"as {facts.source} states"
    else:
        ts["sample_rate_hz"] = 1
        d.todo(
            "timestamp.sample_rate_hz",
            "the files hold no clock: set the real rate if it matters (1 Hz is a placeholder)",
        )
    ts["start"] = EPOCH
    d.comments["timestamp.column"] = "the place of each value in its series (0, 1, ...)"
    d.comments["timestamp.start"] = "every series starts here"
    data["timestamp"] = ts
    if missing:
        data["allow_missing_channels"] = True
        d.comments["allow_missing_channels"] = (
            "missing values inside series (or dimensions of different lengths) in the sample"
        )
        d.window["impute"] = "linear"
    longest, shortest = max(lengths), min(lengths)
    size = min(longest, MAX_SERIES_WINDOW)
    d.window_size = size
    d.window_stride = size if longest <= MAX_SERIES_WINDOW else max(1, size // 2)
    d.window_comment = (
        f"the longest series in the sample ({longest} values): one window per series"
        if longest <= MAX_SERIES_WINDOW
        else f"series up to {longest} values: windows of {size}, 50 % overlap"
    )
    if shortest < size:
        d.window["short"] = "pad"
        d.window["min_length"] = max(1, min(shortest, size))
        d.window_comments["short"] = f"shorter series (from {shortest} values) padded"
    if classify:
        d.window["label"] = "entity"
        d.window_comments["label"] = "one label per series"
    else:
        d.todos.append(
            "window: the label is a number per series (a regression target): see docs/tasks.md "
            "(task.kind regress, window.target_column) before training"
        )
    if split:
        tests = [v for v in values if v.lower() in ("test", "testing")]
        d.window["split"] = {
            "method": "column",
            "column": split,
            "test_values": tests or values[-1:],
            "val_fraction": 0.2,
        }
        d.window_comments["split"] = "test: the test files; validation carved from training"


def _draft_wide(
    d: Draft,
    dialect: Dialect,
    frames: list[pl.DataFrame],
    rel_all: list[str],
    facts: ReadmeFacts,
) -> Draft:
    """UCR-style wide text: one series per row, the class in the first field (data.wide)."""
    data = d.data
    csvd: dict[str, Any] = {}
    if dialect.whitespace:
        csvd["whitespace"] = True
    elif dialect.delimiter != ",":
        csvd["delimiter"] = dialect.delimiter
    csvd["header"] = False
    csvd["names"] = ["class"]
    if dialect.skip_rows:
        csvd["skip_rows"] = dialect.skip_rows
    if dialect.comment_prefix:
        csvd["comment_prefix"] = dialect.comment_prefix
    d.comments["csv.names"] = "the first field; the others are named c1, c2, ... (the values)"
    data["csv"] = csvd
    data["wide"] = {}
    data["include"] = sorted({f"*{_ending(r)}" for r in rel_all})
    d.comments["include"] = "only these files: each row of them is a series"
    first = frames[0].columns[0]
    lengths, missing = _series_lengths([f.drop(first) for f in frames])
    classes = sorted(
        {str(int(float(v))) for v in profile(frames)[first].distinct if _is_num(v)}, key=int
    )
    d.notes.append(
        f"one series per row (data.wide): {frames[0].width - 1} value fields, the class first "
        f"({len(classes)} values: {', '.join(classes[:8])})"
    )
    _melted_series(d, rel_all, facts, lengths, missing)
    data["label"] = {"column": "class", "dtype": "int"}
    d.comments["label.dtype"] = "values seen: " + ", ".join(classes[:12])
    return d


def _draft_ts(
    d: Draft,
    landing: Path,
    sample: list[Path],
    rel_all: list[str],
    facts: ReadmeFacts,
    max_bytes: int,
) -> Draft:
    """sktime .ts files, read by ingest's reader (`formats.ts`): series, position, dim_*,
    label."""
    frames: list[pl.DataFrame] = []
    for f in sample:
        rel = f.relative_to(landing).as_posix()
        try:
            df, bad = read_source(_head(f, max_bytes), f.name, permissive(), 4 << 30, 10**9)
        except (OSError, EOFError, FileRejected) as e:
            d.notes.append(f"could not read {rel}: {e}")
            continue
        if bad:
            d.notes.append(f"{rel}: {len(bad)} series lines unreadable, e.g. {bad[0][1]}")
        if df.height:
            frames.append(df.drop(ROW))
    if not frames:
        raise InitError(f"could not read any series from the sampled .ts files under {landing}")
    dims = [
        sorted((c for c in f.columns if c.startswith("dim_")), key=lambda c: int(c[4:]))
        for f in frames
    ]
    if len({len(x) for x in dims}) > 1:
        d.todos.append(
            "data.channels: the files have different numbers of dimensions: "
            f"{sorted({len(x) for x in dims})}"
        )
    chans = min(dims, key=len)
    lengths: list[int] = []
    missing = False
    for f in frames:
        lengths += f.group_by("series").len()["len"].to_list()
        missing |= bool(f.select(pl.any_horizontal(pl.col(chans).is_null()).any()).item())
    labels = [f["label"] for f in frames if "label" in f.columns]
    classify = True
    if labels and all(s.dtype == pl.String for s in labels):
        label = {"column": "label", "dtype": "string"}
        seen = sorted(set(pl.concat(labels).unique().to_list()))
        d.comments["label.dtype"] = "@classLabel: " + ", ".join(seen[:12])
    elif labels:
        label = {"column": "label", "dtype": "float"}
        d.comments["label.dtype"] = "@targetLabel: a number per series"
        classify = False
    else:
        label = None
        d.todos.append("data.label: the files declare no @classLabel or @targetLabel")
    d.notes.append(
        f"sktime .ts files: {len(chans)} dimension(s), series of {min(lengths)} to "
        f"{max(lengths)} values in the sample"
    )
    _series_draft(d, rel_all, facts, lengths, missing, classify and label is not None)
    d.data["channels"] = [{"name": c} for c in chans]
    if label is not None:
        d.data["label"] = label
        if len(labels) < len(frames):
            d.todos.append("data.label: some files declare no label")
    return d


# ------------------------------------------------------------------------------------------------
# rendering


def render(d: Draft, landing_arg: str, out: Path) -> str:
    c = d.comments
    data = d.data
    L: list[str] = []

    def line(indent: int, key: str, value: Any, ckey: str | None = None) -> None:
        txt = (
            f"{'  ' * indent}{_q(key)}: {_q(value)}"
            if value is not None
            else f"{'  ' * indent}{_q(key)}:"
        )
        note = c.get(ckey) if ckey else None
        L.append(f"{txt:<40}  # {note}" if note else txt)

    L.append(f"# Drafted by `cnnlstm init {landing_arg}`: {d.notes[0]}.")
    L.append("# Read every TODO below, then check with a dry run and ingest:")
    L.append(f"#   cnnlstm ingest {landing_arg} -c {out.name} --dry-run")
    L.append(f"#   cnnlstm ingest {landing_arg} -c {out.name}")
    L.append(
        "# Reference: docs/config.md. Observed ranges are comments; channel limits (min/max) are "
        "written only for an inertial unit a README states."
    )
    for n in d.notes[1:]:
        L.append(f"# note: {n}")
    for t in d.todos:
        L.append(f"# TODO: {t}")
    L.append("data:")
    line(1, "name", data["name"])
    line(1, "landing", data["landing"])
    if not os.path.isabs(data["landing"]):
        L[-1] += "  # relative to this file"
    if "include" in data:
        line(1, "include", data["include"], "include")
    if "csv" in data:
        line(1, "csv", None)
        for k, v in data["csv"].items():
            line(2, k, v, f"csv.{k}")
    if "wide" in data:
        L.append(
            f"{'  wide: ' + _flow(data['wide']):<40}  # one series per row, melted: "
            "series, position, value"
        )
    if "rename" in data:
        line(1, "rename", None, "rename")
        for r in data["rename"]:
            L.append(f"    - {_flow(r)}")
    if "path_columns" in data:
        line(1, "path_columns", None)
        line(2, "pattern", data["path_columns"]["pattern"], "path_columns.pattern")
        if data["path_columns"].get("types"):
            types = data["path_columns"]["types"]
            L.append("    types: {" + ", ".join(f"{k}: {v}" for k, v in types.items()) + "}")
    line(1, "entity", None, "entity")
    for k, v in data["entity"].items():
        line(2, k, v, f"entity.{k}")
    line(1, "timestamp", None)
    for k, v in data["timestamp"].items():
        line(2, k, v, f"timestamp.{k}")
    line(1, "channels", None)
    for ch in data["channels"]:
        body = ", ".join(f"{_q(k)}: {_q(v)}" for k, v in ch.items())
        txt = f"    - {{{body}}}"
        note = d.channel_notes.get(ch["name"])
        L.append(f"{txt:<40}  # {note}" if note else txt)
    if "label" in data:
        line(1, "label", None)
        for k, v in data["label"].items():
            if isinstance(v, dict):  # label.table
                txt = f"    {k}: {_flow(v)}"
                note = c.get(f"label.{k}")
                L.append(f"{txt:<40}  # {note}" if note else txt)
            else:
                line(2, k, v, f"label.{k}")
    if "columns" in data:
        line(1, "columns", None, "columns")
        for k, v in data["columns"].items():
            line(2, k, v)
    if "allow_missing_channels" in data:
        line(1, "allow_missing_channels", data["allow_missing_channels"], "allow_missing_channels")
    stride = d.window_stride or max(1, d.window_size // 2)
    win = [
        f"{'  stride: ' + str(stride):<40}  # "
        + ("50 % overlap" if stride == max(1, d.window_size // 2) else "one window per series")
    ]
    for k, v in d.window.items():
        txt = f"  {k}: {_flow(v)}"
        note = d.window_comments.get(k)
        win.append(f"{txt:<40}  # {note}" if note else txt)
    L += [
        "",
        "lake:",
        "  uri: lake                               # relative to this file (or s3://...)",
        "",
        "task:",
        "  kind: auto                              # docs/tasks.md (classify, regress, ...)",
        "",
        "window:",
        f"{'  size: ' + str(d.window_size):<40}  # {d.window_comment}",
        *win,
        "",
        "# model: auto tries a few presets sized from the data and keeps the best on validation",
        "# (docs/training.md); every run also reports a MiniRocket + ridge baseline beside it.",
        "# For one fixed model instead: model: {arch: serial} (the CNN -> LSTM defaults).",
        "model: auto",
        "",
    ]
    return "\n".join(L)


def write_config(
    landing: Path,
    out: Path,
    name: str | None = None,
    force: bool = False,
    max_files: int = 8,
    max_bytes: int = 256 * 1024,
) -> Draft:
    """Infer, render, validate (``config_from_dict``) and write the draft config."""
    if out.exists() and not force:
        raise InitError(f"{out} exists: pass --force to overwrite it")
    d = infer(landing, out, name=name, max_files=max_files, max_bytes=max_bytes)
    text = render(d, str(landing), out)
    config_from_dict(yaml.safe_load(text), base_dir=out.resolve().parent, source=str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return d
