"""CSV text (any extension no other reader takes): the dialect of data.csv (delimiter, quotes,
header or explicit names, a leading unnamed index field, skipped lines, comments), a fast polars
path and a careful record-by-record path that quarantines ragged lines with their row number.
With data.wide, `formats.wide` reads the file (one series per row) and melts it into long rows.
With data.csv.record_end the text is first rewritten to one record per line
(`records_as_lines`), with data.csv.whitespace to tab-separated fields (`whitespace_as_tabs`)."""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass
from typing import Any

import polars as pl

from cnnlstm.config import DataConfig, LakeConfig
from cnnlstm.formats import wide
from cnnlstm.formats.base import (
    ROW,
    FileRejected,
    check_columns,
    clip_names,
    named_fields,
    rename_columns,
)
from schemas.readings import EXTRA_DTYPES


def matches(source: str, head: bytes) -> bool:
    """The fallback: every file that no other reader takes is read as CSV text."""
    return True


def read(
    data: bytes, source: str, cfg: DataConfig, max_bytes: int, max_rows: int, notes=None
) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    return read_csv(data, cfg, notes=notes, max_rows=max_rows)


MAX_ROWS_DEFAULT = LakeConfig.model_fields["max_rows_per_file"].default
INDEX_COLUMN = "row_index"  # the name given to a leading unnamed index field


@dataclass
class Layout:
    """How the lines of a CSV file map to fields: lines skipped before the data (skip_rows,
    then the header line) and the names of the fields."""

    skip: int
    names: list[str]
    data_rows_seen: int = 1  # data records in the sample read (0: the file holds none)


def csv_records(head: bytes, cfg: DataConfig, n: int) -> list[list[str]]:
    """The first `n` records of the text (after skip_rows, without comment lines)."""
    c = cfg.csv
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        text = head[: e.start].decode("utf-8")
        if not text.count("\n"):
            raise FileRejected(
                f"not UTF-8: invalid byte in the header at byte {e.start} (another encoding? "
                "set data.csv.encoding, e.g. cp1252 or latin-1)"
            ) from e
    lines = [ln for ln in text.splitlines()[c.skip_rows :] if ln.strip()]  # no blank lines
    if c.comment_prefix:
        lines = [ln for ln in lines if not ln.startswith(c.comment_prefix)]
    reader = csv.reader(lines[: n + 5], delimiter=c.delimiter, quotechar=c.quote_char or '"')
    out = []
    try:
        for rec in reader:
            out.append(rec)
            if len(out) == n:
                break
    except csv.Error:
        pass
    return out


def read_layout(head: bytes, cfg: DataConfig, notes: list[str] | None) -> Layout:
    """The field names of a CSV file by data.csv (header, names, index_column, skip_rows)."""
    c = cfg.csv
    recs = csv_records(head, cfg, 6 + cfg.csv.skip_after_header)
    if not recs:
        raise FileRejected("empty file (only whitespace)" if head else "empty file (0 bytes)")
    if not c.header:
        names = list(c.names or [])
        if len(recs[0]) == len(names) + 1 and c.index_column != "no":
            names = [INDEX_COLUMN, *names]
        return Layout(c.skip_rows, names, len(recs))
    header = recs[0]
    after = c.skip_after_header  # lines after the header that are no data (a units row)
    index = c.index_column == "yes" or (
        c.index_column == "auto"
        and not (header and header[0] == "")
        and looks_indexed(header, recs[1 + after :])
    )
    if header and header[0] == "" and c.index_column != "no" and len(header) > 1:
        header = [INDEX_COLUMN, *header[1:]]  # an index field with an empty name
        if notes is not None:
            notes.append(f"the first field has no name: read as {INDEX_COLUMN}")
    if index:
        header = [INDEX_COLUMN, *header]
        if notes is not None:
            notes.append(
                f"leading unnamed index field: the header has {len(header) - 1} names, the "
                f"rows {len(header)} fields; read as {INDEX_COLUMN} (data.csv.index_column)"
            )
    # empty names (a trailing delimiter on every line: `...;AH;;`): named by their position
    header = [h if h.strip() else f"unnamed_{i}" for i, h in enumerate(header)]
    if notes is not None and any(h.startswith("unnamed_") for h in header):
        unnamed = [h for h in header if h.startswith("unnamed_")]
        notes.append(f"fields without a name in the header: read as {clip_names(unnamed)}")
    header = named_fields(header, c.names)
    return Layout(c.skip_rows + 1 + after, header, max(0, len(recs) - 1 - after))


def looks_indexed(header: list[str], rows: list[list[str]]) -> bool:
    """A leading unnamed row index, as pandas and R write one: the first rows (at least two)
    all have one field more than the header, and their first fields count up by one."""
    if len(rows) < 2 or any(len(r) != len(header) + 1 for r in rows):
        return False
    try:
        first = [int(r[0]) for r in rows]
    except ValueError:
        return False
    return all(b - a == 1 for a, b in zip(first, first[1:], strict=False))


def read_opts(cfg: DataConfig, layout: Layout) -> dict[str, Any]:
    c = cfg.csv
    return dict(
        separator=c.delimiter,
        decimal_comma=c.decimal_comma,
        quote_char=c.quote_char,
        null_values=c.null_values,
        has_header=False,
        new_columns=layout.names,
        skip_rows=layout.skip,
        comment_prefix=c.comment_prefix,
        infer_schema=False,
        raise_if_empty=False,
    )


def read_csv(
    data: bytes | None,
    cfg: DataConfig,
    path: str | None = None,
    notes: list[str] | None = None,
    max_rows: int | None = None,
) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    """CSV text -> frame. ``data`` is the file's bytes, or None to let polars memory-map
    ``path`` (only the first 1 MiB is read here, for the header checks). With data.wide the
    file is read and melted by `formats.wide` (``max_rows`` caps the melted rows)."""
    if not _is_utf8(cfg.csv.encoding):  # data.csv.encoding: decoded to UTF-8 first
        if data is None:
            assert path is not None
            with open(path, "rb") as f:
                data = f.read()
        data = as_utf8(data, cfg)
    if cfg.csv.record_end is not None:  # records ended by a character: one record per line
        if data is None:
            assert path is not None
            with open(path, "rb") as f:
                data = f.read()
        data = records_as_lines(data, cfg)
    if cfg.wide is not None:
        if data is None:
            assert path is not None
            with open(path, "rb") as f:
                data = f.read()
        return wide.read_text(data, cfg, max_rows or MAX_ROWS_DEFAULT, notes)
    if cfg.csv.whitespace:  # fields split at runs of blanks: read as tab-separated text
        if data is None:
            assert path is not None
            with open(path, "rb") as f:
                data = f.read()
        data, cfg = whitespace_as_tabs(data, cfg)
    if data is None:
        assert path is not None
        with open(path, "rb") as f:
            head = f.read(1 << 20)
        if len(head) < (1 << 20):  # small file: it is all here
            data, head = head, b""
    if data is not None:
        head = data
    if len(head) == 0:
        raise FileRejected("empty file (0 bytes)")
    bom = head.startswith(b"\xef\xbb\xbf")
    if bom:
        head = head[3:]  # UTF-8 byte order mark
        if data is not None:
            data = data[3:]
    if not head.strip() and data is not None:
        raise FileRejected("empty file (only whitespace)")
    layout = read_layout(head[: 1 << 20], cfg, notes)  # the dialect from the first MiB
    names = layout.names
    if len(set(names)) != len(names):
        raise FileRejected(f"duplicate column names in the header: {clip_names(names)}")
    names = layout.names = rename_columns(names, cfg, notes)  # the frame's names from here on
    check_columns(names, cfg)
    if data is not None and layout.data_rows_seen == 0:
        raise FileRejected("header only: no data rows")

    opts = read_opts(cfg, layout)
    # fast path: polars parses the numeric columns itself; any unparseable value (or a ragged
    # line) sends the whole file down the careful path, which quarantines row by row
    try:
        df = pl.read_csv(
            data if data is not None else path, schema_overrides=numeric_overrides(cfg), **opts
        )
        if df.height and df[names[-1]].null_count() == 0:  # short lines leave trailing nulls
            return df.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64)), []
    except pl.exceptions.PolarsError:
        pass
    if data is None:  # the careful path works on the bytes
        with open(path, "rb") as f:  # type: ignore[arg-type]
            data = f.read()
        if bom:
            data = data[3:]
    df, bad = read_csv_careful(data, layout, cfg)
    if cfg.csv.decimal_comma:  # the careful path's text: 2,6 -> 2.6 where numbers are read
        num = [n for n in numeric_overrides(cfg) if n in df.columns]  # (a value that is no
        point = pl.col(num).str.replace(",", ".", literal=True)  # number either way keeps
        ok = point.str.strip_chars().cast(pl.Float64, strict=False).is_not_null()  # its text)
        df = df.with_columns(pl.when(ok).then(point).otherwise(pl.col(num)).name.keep())
    return df, bad


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"


def as_utf8(data: bytes, cfg: DataConfig) -> bytes:
    """``data.csv.encoding``: the text decoded with it and written as UTF-8 (unchanged when
    it is UTF-8). A byte the encoding cannot decode rejects the file, naming it and its line."""
    enc = cfg.csv.encoding
    if _is_utf8(enc):
        return data
    try:
        return data.decode(enc).encode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise FileRejected(
            f"not {enc} (data.csv.encoding): cannot decode byte 0x{data[e.start]:02x} on line "
            f"{line}"
        ) from e


def records_as_lines(data: bytes, cfg: DataConfig) -> bytes:
    """``data.csv.record_end``: the text with one record per line. A terminator (a run of
    them: the records between are empty) followed by optional blanks and a line end, or by the
    end of the file, becomes one line end; any other terminator (two records on one line)
    becomes a line end too. Terminators at the start of a line (empty records) are removed with
    the blanks and line end after them, so the rewrite makes no blank line and the file's last
    record needs neither a terminator nor a line end. Quotes are not honoured: a terminator
    inside a quoted field or a comment line ends a record as well. The ``skip_rows`` lines (and
    a UTF-8 byte order mark) are left as they are; row numbers then count records, not lines."""
    end = cfg.csv.record_end
    if end is None:
        return data
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    for _ in range(cfg.csv.skip_rows):  # skipped lines are the file's lines, not records
        nl = data.find(b"\n", start)
        if nl < 0:
            return data
        start = nl + 1
    t = end.encode("utf-8")
    e = re.escape(t)
    run = e + b"(?:" + e + b")*"  # one or more terminators (a literal first: a fast scan)
    tail = rb"(?:[ \t]*(?:\r?\n|\Z))?"  # blanks and the line end after them, if any
    body = data[start:]
    if body.startswith(t) or b"\n" + t in body:  # empty records at a line start: removed
        body = re.sub(rb"(?m)^" + run + tail, b"", body)
    body = re.sub(run + tail, b"\n", body)
    return data[:start] + body


_EDGE_BLANKS = re.compile(rb"^[ \t]+|[ \t]+(?=\r?$)", re.M)
_BLANK_RUNS = re.compile(rb"[ \t]+")


def whitespace_as_tabs(data: bytes, cfg: DataConfig) -> tuple[bytes, DataConfig]:
    """``data.csv.whitespace``: the text with each line's leading and trailing blanks removed
    and every run of spaces and tabs made one tab (lines keep their numbers), and the config
    that reads it (tab-separated, no quoting)."""
    data = _BLANK_RUNS.sub(b"\t", _EDGE_BLANKS.sub(b"", data))
    csv_opts = cfg.csv.model_copy(update={"delimiter": "\t", "quote_char": None})
    return data, cfg.model_copy(update={"csv": csv_opts})


def numeric_overrides(cfg: DataConfig) -> dict[str, pl.DataType]:
    # channels as float64, cast to float32 in the mapping: a value below float32's normal
    # range (1e-50) is seen there (data.denormals) instead of becoming 0.0 here; an overflow
    # becomes inf and is quarantined as non-finite; quarantined rows keep their source text
    # (see _with_source_text)
    ov: dict[str, pl.DataType] = {ch.src: pl.Float64() for ch in cfg.channels}
    fmt, ts_col = cfg.timestamp.format, cfg.timestamp.column
    if ts_col is None:  # sample_index by row position: no time column
        pass
    elif fmt in ("epoch_us", "epoch_ns", "sample_index"):
        ov[ts_col] = pl.Int64()
    elif fmt in ("epoch_s", "epoch_ms"):
        ov[ts_col] = pl.Float64()
    if cfg.label is not None and cfg.label.dtype in ("int", "float"):
        ov[cfg.label.column] = pl.Float64()  # int labels may be written 1.0; checked in mapping
    for name, kind in cfg.columns.items():
        if kind in ("int", "float"):
            ov[name] = EXTRA_DTYPES[kind]
    return ov


def read_csv_careful(
    data: bytes, layout: Layout, cfg: DataConfig
) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    """Record by record with the csv module: every line is either a row or a quarantined line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise FileRejected(
            f"not UTF-8: invalid byte 0x{data[e.start]:02x} on line {line} (another encoding? "
            "set data.csv.encoding, e.g. cp1252 or latin-1)"
        ) from e
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=cfg.csv.delimiter,
        quotechar=cfg.csv.quote_char or '"',
        strict=True,
    )
    header = layout.names
    ncol = len(header)
    nulls = set(cfg.csv.null_values)
    prefix = cfg.csv.comment_prefix
    cols: list[list[str | None]] = [[] for _ in range(ncol)]
    rows: list[int] = []
    bad: list[tuple[int, str, str]] = []
    raw_skip = cfg.csv.skip_rows
    header_lines = layout.skip - raw_skip
    try:
        i = 0
        for rec in reader:
            if raw_skip:  # data.csv.skip_rows: lines before everything, comments or not
                raw_skip -= 1
                continue
            if prefix and rec and rec[0].startswith(prefix):
                continue  # comment lines are not rows
            if header_lines:
                header_lines -= 1
                continue
            i += 1
            if not rec or rec == [""] * len(rec) and len(rec) <= 1:
                bad.append((i, "blank line", ""))
                continue
            if len(rec) != ncol:
                bad.append(
                    (
                        i,
                        f"ragged line: {len(rec)} fields, the header has {ncol}",
                        cfg.csv.delimiter.join(rec),
                    )
                )
                continue
            rows.append(i)
            for j, v in enumerate(rec):
                cols[j].append(None if v in nulls else v)
    except csv.Error as e:
        raise FileRejected(f"unparseable CSV near line {reader.line_num}: {e}") from e
    if not rows and not bad:
        raise FileRejected("header only: no data rows")
    df = pl.DataFrame(
        {h: pl.Series(h, c, dtype=pl.String) for h, c in zip(header, cols, strict=True)}
    )
    return df.with_columns(pl.Series(ROW, rows, dtype=pl.Int64)), bad
