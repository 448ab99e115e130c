"""sktime / UEA ``.ts`` files (the ``.ts`` suffix, or a file that starts with ``@problemName``):
one series per line, melted into long rows.

The header (before ``@data``) holds ``@`` lines - ``@problemName``, ``@timeStamps``,
``@missing``, ``@univariate``, ``@dimensions``, ``@equalLength``, ``@seriesLength``,
``@classLabel true|false [classes...]``, ``@targetLabel true|false`` - and ``#`` comments. After
``@data`` each line is one series: its dimensions separated by ``:``, the values of a dimension
by ``,`` (``?`` and ``NaN`` are missing values), and, with ``@classLabel true`` or
``@targetLabel true``, a last field holding the class or the regression target. Series may
differ in length, and so may the dimensions of one series: its rows run to its longest
dimension and the shorter ones are missing (null) there (the file's notes count such series).

Rows: ``series`` (0-based number of the series line in the file, int), ``position`` (0-based
place within the series, int), ``dim_0`` .. ``dim_{D-1}`` (float; ``dim_0`` alone for a
univariate file; null where missing), ``label`` (the class as text, or the target as a float)
when the file has one, and ``_row`` (1-based, over the long rows in file order).

A series line that cannot be read (wrong number of dimensions, a value that is not a number, an
empty dimension, a class not declared by ``@classLabel``, a target that is not a number, a length
other than ``@seriesLength`` under ``@equalLength true``) is one quarantined row, whose reason
names the file line and the series; it takes one ``_row`` number in its place. A header problem
(no ``@data``, ``@timeStamps true``, text before ``@data`` that is no ``@`` line or comment, a
``@`` value that does not parse) rejects the file. Blank lines and ``#`` comments hold no series.
More long rows than lake.max_rows_per_file reject the file.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from cnnlstm.config import DataConfig
from cnnlstm.formats.base import ROW, FileRejected, check_columns, clip, rename_columns

SERIES = "series"
POSITION = "position"
LABEL = "label"
DATA_TAG = "@data"
RAW_CLIP = 2000  # a quarantined series line keeps at most this many characters
KNOWN_TAGS = {
    "@problemname",
    "@timestamps",
    "@missing",
    "@univariate",
    "@dimension",
    "@dimensions",
    "@equallength",
    "@serieslength",
    "@classlabel",
    "@targetlabel",
}


def matches(source: str, head: bytes) -> bool:
    if source.lower().endswith(".ts"):
        return True
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    return text.startswith(b"@problemname")


class _Bad(Exception):
    """A series line that cannot be read: the reason (the line and series are added)."""


def _bool(tag: str, words: list[str], lineno: int) -> bool:
    if not words or words[0].lower() not in ("true", "false"):
        raise FileRejected(
            f"line {lineno}: {tag} needs true or false, got {clip(' '.join(words))!r}"
        )
    return words[0].lower() == "true"


def _int(tag: str, words: list[str], lineno: int) -> int:
    try:
        n = int(words[0])
    except (IndexError, ValueError):
        n = 0
    if n < 1:
        raise FileRejected(
            f"line {lineno}: {tag} needs a positive whole number, got {clip(' '.join(words))!r}"
        )
    return n


class _Header:
    def __init__(self) -> None:
        self.problem: str | None = None
        self.univariate: bool | None = None
        self.dimensions: int | None = None
        self.equal_length: bool | None = None
        self.series_length: int | None = None
        self.class_label = False
        self.classes: list[str] = []
        self.target = False
        self.unknown: list[str] = []


def _read_header(lines: list[str]) -> tuple[_Header, int]:
    """The header, and the index of the first line after ``@data``."""
    h = _Header()
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        lineno = i + 1
        if not s.startswith("@"):
            raise FileRejected(
                f"line {lineno}: {clip(s)!r} before {DATA_TAG}: neither a header line (@...) "
                "nor a comment (#)"
            )
        tag, *words = s.split()
        low = tag.lower()
        if low == DATA_TAG:
            return h, i + 1
        if low == "@problemname":
            h.problem = " ".join(words)
        elif low == "@timestamps":
            if _bool(tag, words, lineno):
                raise FileRejected(
                    f"line {lineno}: @timeStamps true (values written as (time,value) pairs) "
                    "is not supported; convert the file to long rows (CSV or Parquet with a "
                    "time column)"
                )
        elif low == "@missing":
            _bool(tag, words, lineno)
        elif low == "@univariate":
            h.univariate = _bool(tag, words, lineno)
        elif low in ("@dimension", "@dimensions"):
            h.dimensions = _int(tag, words, lineno)
        elif low == "@equallength":
            h.equal_length = _bool(tag, words, lineno)
        elif low == "@serieslength":
            h.series_length = _int(tag, words, lineno)
        elif low == "@classlabel":
            h.class_label = _bool(tag, words, lineno)
            h.classes = words[1:] if h.class_label else []
        elif low == "@targetlabel":
            h.target = _bool(tag, words, lineno)
        else:
            h.unknown.append(tag)
    raise FileRejected(f"no {DATA_TAG} line: not a sktime .ts file, or its data is missing")


def _dimension(text: str, j: int) -> np.ndarray:
    """One dimension's values (NaN where missing: ``?`` or ``NaN``)."""
    if not text.strip():
        raise _Bad(f"dimension {j} is empty")
    try:
        return np.array(text.replace("?", "nan").split(","), dtype=np.float64)
    except ValueError:
        for k, v in enumerate(text.split(",")):
            v = v.strip()
            if v == "?":
                continue
            try:
                float(v)
            except ValueError:
                what = "empty" if not v else f"{clip(v)!r} is not a number"
                raise _Bad(f"dimension {j}, value {k}: {what}") from None
        raise _Bad(f"dimension {j}: not a list of numbers") from None


def read(
    data: bytes, source: str, cfg: DataConfig, max_bytes: int, max_rows: int, notes=None
) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise FileRejected(f"not UTF-8: invalid byte 0x{data[e.start]:02x} on line {line}") from e
    lines = text.splitlines()
    h, first = _read_header(lines)
    if h.class_label and h.target:
        raise FileRejected("@classLabel true and @targetLabel true: a file has one label or none")
    if h.univariate and h.dimensions not in (None, 1):
        raise FileRejected(f"@univariate true but @dimensions {h.dimensions}")
    labelled = h.class_label or h.target
    dims = 1 if h.univariate and h.dimensions is None else h.dimensions
    declared = set(h.classes)
    equal = h.series_length if h.equal_length else None

    good_series: list[int] = []
    good_lengths: list[int] = []
    good_rows: list[int] = []  # the first _row of each good series
    values: list[list[np.ndarray]] = []  # per good series, its dimensions (padded)
    labels: list[str | float] = []
    bad: list[tuple[int, str, str]] = []
    uneven = 0
    k = -1  # series number
    row = 1  # the next _row
    for i in range(first, len(lines)):
        s = lines[i].strip()
        if not s or s.startswith("#"):
            continue
        k += 1
        lineno = i + 1
        try:
            parts = s.split(":")
            lab_text = parts.pop() if labelled else None
            if not parts:
                raise _Bad("no values before the label")
            if dims is None:  # neither @dimensions nor @univariate: the first series says
                dims = len(parts)
            if len(parts) != dims:
                extra = " and the label" if labelled else ""
                raise _Bad(
                    f"{len(parts) + labelled} fields separated by ':', expected {dims} "
                    f"dimension(s){extra}"
                )
            arrays = [_dimension(p, j) for j, p in enumerate(parts)]
            lengths = [len(a) for a in arrays]
            n = max(lengths)
            if equal is not None and n != equal:
                raise _Bad(f"{n} values, but @equalLength true and @seriesLength {equal}")
            lab: str | float | None = None
            if h.class_label:
                assert lab_text is not None
                lab = lab_text.strip()
                if declared and lab not in declared:
                    raise _Bad(
                        f"class {clip(lab)!r} is not one of @classLabel's {sorted(declared)}"
                    )
            elif h.target:
                assert lab_text is not None
                try:
                    lab = float(lab_text)
                except ValueError:
                    raise _Bad(f"target {clip(lab_text.strip())!r} is not a number") from None
        except _Bad as e:
            bad.append((row, f"line {lineno} (series {k}): {e}", clip(s, RAW_CLIP)))
            row += 1
            if row - 1 > max_rows:
                raise FileRejected(
                    f"more than lake.max_rows_per_file={max_rows} rows (counted after melting "
                    "each series into one row per time point)"
                ) from None
            continue
        if min(lengths) != n:
            uneven += 1
            arrays = [np.pad(a, (0, n - len(a)), constant_values=np.nan) for a in arrays]
        good_series.append(k)
        good_lengths.append(n)
        good_rows.append(row)
        values.append(arrays)
        if lab is not None:
            labels.append(lab)
        row += n
        if row - 1 > max_rows:
            raise FileRejected(
                f"more than lake.max_rows_per_file={max_rows} rows (counted after melting each "
                "series into one row per time point)"
            )
    if k < 0:
        raise FileRejected(f"no series after {DATA_TAG}")
    dims = dims or 1  # None: no line had values to count them by (all quarantined)

    lengths_a = np.asarray(good_lengths, dtype=np.int64)
    total = int(lengths_a.sum())
    starts = np.cumsum(lengths_a) - lengths_a
    pick = np.repeat(np.arange(len(good_series)), lengths_a)
    position = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths_a)
    cols: dict[str, pl.Series] = {
        SERIES: pl.Series(SERIES, np.asarray(good_series, dtype=np.int64)[pick]),
        POSITION: pl.Series(POSITION, position),
    }
    for j in range(dims):
        v = np.concatenate([a[j] for a in values]) if values else np.zeros(0, dtype=np.float64)
        cols[f"dim_{j}"] = pl.Series(f"dim_{j}", v, dtype=pl.Float64).fill_nan(None)
    if h.class_label:
        cols[LABEL] = pl.Series(LABEL, labels, dtype=pl.String).gather(pick)
    elif h.target:
        cols[LABEL] = pl.Series(LABEL, labels, dtype=pl.Float64).gather(pick)
    names = rename_columns(list(cols), cfg, notes)
    check_columns(names, cfg)
    df = pl.DataFrame([s.alias(n) for n, s in zip(names, cols.values(), strict=True)])
    rows = np.asarray(good_rows, dtype=np.int64)[pick] + position
    df = df.with_columns(pl.Series(ROW, rows, dtype=pl.Int64))

    if notes is not None:
        span = f", {lengths_a.min()}-{lengths_a.max()} values long" if len(lengths_a) else ""
        label = " with class labels" if h.class_label else " with targets" if h.target else ""
        name = f" {clip(h.problem)!r}" if h.problem else ""
        notes.append(
            f"sktime .ts{name}: {k + 1} series{label}, {dims} dimension(s){span}, melted into "
            f"{total} rows (columns {SERIES}, {POSITION}, dim_0..dim_{dims - 1}"
            f"{', label' if labelled else ''})"
        )
        if uneven:
            notes.append(
                f"{uneven} series have dimensions of different lengths: their rows run to the "
                "longest dimension and the shorter ones are missing (null) there"
            )
        if h.unknown:
            notes.append(f"unknown header tags ignored: {sorted(set(h.unknown))}")
    return df, bad
