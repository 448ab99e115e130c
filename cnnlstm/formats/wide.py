"""The wide layout (data.wide): each row of a file is one univariate series and its value
columns are the series' time points (the UCR archive's ``.tsv`` and ``.txt`` files, Kaggle-style
CSV, wide Parquet). The rows are melted (polars ``unpivot``) into long rows before anything is
validated, so channel ranges, the quarantine and the accounting work on the long rows.

Long rows: ``series`` (the row's 0-based number among the file's data rows, counting rows that
are quarantined too; or the value of data.wide.id_column), ``position`` (0-based place of the
value among the value columns), the value column (data.wide.value_name, default ``value``),
every other column of the row (the label, metadata: the same on every row of the series) and
``_row``, 1-based over the long rows in file order.

Value columns: data.wide.value_columns (in that order), or the columns data.wide.value_pattern
matches (in file order), or by default every column the config does not name (data.label.column,
data.wide.id_column, data.entity.column and .parts, data.columns). A value that is empty, NaN
(any case), or one of data.csv.null_values is missing: missing values at the end of a row are
not time points (a shorter series: variable length), missing values inside a series are null
(rows accepted only with data.allow_missing_channels). A row without any value is one
quarantined row ("no values").

Text files: no header (``data.csv.header: false``) names the fields by position, ``c0``,
``c1``, ... (``data.csv.names``, if given, names the leading fields instead); fields are
separated by data.csv.delimiter (a line holding the quote character is split by the csv module,
quotes honoured), or with data.csv.whitespace by runs of spaces and tabs. A line with more
fields than the header names is quarantined ("ragged line"); fewer fields are a shorter series.
Blank lines and comment lines hold no series.

Accounting: rows are counted after melting, ``rows_read`` = long rows + rows quarantined whole
(a ragged line, a row without values), each of which takes one ``_row`` number in its place.
More than lake.max_rows_per_file long rows reject the file (checked before the melt)."""

from __future__ import annotations

import csv
import re

import numpy as np
import polars as pl

from cnnlstm.config import DataConfig
from cnnlstm.formats.base import (
    ROW,
    FileRejected,
    check_columns,
    clip,
    clip_names,
    named_fields,
    rename_columns,
)

SERIES = "series"
POSITION = "position"
REC = "_wide_rec"  # 0-based data row of the file (bad rows counted)
LINE = "_wide_line"  # the file's line (text) or row (Parquet) number, 1-based, for reasons
RAW_CLIP = 2000  # a quarantined line keeps at most this many characters
MISSING = ("", "nan")


def _decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise FileRejected(f"not UTF-8: invalid byte 0x{data[e.start]:02x} on line {line}") from e


def _split_one(line: str, cfg: DataConfig) -> list[str]:
    """One line's fields (the header, or a line holding the quote character)."""
    if cfg.csv.whitespace:
        return line.split()
    c = cfg.csv
    rec = next(
        csv.reader([line], delimiter=c.delimiter, quotechar=c.quote_char or '"', strict=True),
        [],
    )
    return list(rec)


def read_text(
    data: bytes, cfg: DataConfig, max_rows: int, notes: list[str] | None = None
) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    """A wide CSV/TSV/whitespace text file -> long rows (see the module)."""
    c, w = cfg.csv, cfg.wide
    assert w is not None
    text = _decode(data)
    if not text.strip():
        raise FileRejected("empty file (only whitespace)")
    kept: list[tuple[int, str]] = []  # (file line number, line)
    for i, line in enumerate(text.splitlines()[c.skip_rows :], c.skip_rows + 1):
        if not line.strip() or (c.comment_prefix and line.startswith(c.comment_prefix)):
            continue
        kept.append((i, line))
    header: list[str] | None = None
    if c.header:
        if not kept:
            raise FileRejected("empty file (no header line)")
        try:
            header = _split_one(kept.pop(0)[1], cfg)
        except csv.Error as e:
            raise FileRejected(f"unparseable header line: {e}") from e
        header = named_fields(header, c.names, "the header")
        del kept[: c.skip_after_header]  # lines after the header that are no data (units)
    if not kept:
        raise FileRejected("header only: no data rows")

    lines = pl.Series("l", [ln for _, ln in kept], dtype=pl.String)
    frame = pl.DataFrame(
        {
            REC: np.arange(len(kept), dtype=np.int64),
            LINE: np.asarray([n for n, _ in kept], dtype=np.int64),
        }
    )
    bad: list[tuple[int, str, str]] = []  # (record, reason, raw)
    if c.whitespace:
        frame = frame.with_columns(_tok=lines.str.extract_all(r"\S+"))
    else:
        frame = frame.with_columns(_tok=lines.str.split(c.delimiter))
        if c.quote_char:
            quoted = np.flatnonzero(lines.str.contains(c.quote_char, literal=True).to_numpy())
            if len(quoted):  # these lines through the csv module, quotes honoured
                fixed_rec, fixed_tok = [], []
                for r in quoted.tolist():
                    try:
                        fixed_tok.append(_split_one(kept[r][1], cfg))
                        fixed_rec.append(r)
                    except csv.Error as e:
                        bad.append(
                            (r, f"line {kept[r][0]}: unparseable: {e}", clip(kept[r][1], RAW_CLIP))
                        )
                fixed = pl.DataFrame(
                    {REC: fixed_rec, "_tok": fixed_tok},
                    schema={REC: pl.Int64, "_tok": pl.List(pl.String)},
                )
                frame = frame.filter(~pl.col(REC).is_in(quoted.tolist())).vstack(
                    frame.filter(pl.col(REC).is_in(fixed_rec)).drop("_tok").join(fixed, on=REC)
                )
                frame = frame.sort(REC)
    frame = frame.with_columns(_n=pl.col("_tok").list.len())
    widest = int(frame["_n"].max() or 0)
    if header is not None:
        names = header
        ragged = frame.filter(pl.col("_n") > len(names))
        for r, n in zip(ragged[REC].to_list(), ragged["_n"].to_list(), strict=True):
            bad.append(
                (
                    r,
                    f"line {kept[r][0]}: ragged line: {n} fields, the header has {len(names)}",
                    clip(kept[r][1], RAW_CLIP),
                )
            )
        frame = frame.filter(pl.col("_n") <= len(names))
    else:
        lead = list(c.names or [])
        names = lead + [f"c{i}" for i in range(len(lead), widest)]
    if len(set(names)) != len(names):
        raise FileRejected(f"duplicate column names: {clip_names(names)}")
    names = rename_columns(names, cfg, notes)
    wide = frame.select(
        REC,
        LINE,
        *[pl.col("_tok").list.get(i, null_on_oob=True).alias(n) for i, n in enumerate(names)],
    )
    texts = [ln for _, ln in kept]
    return melt(wide, cfg, max_rows, notes, bad, len(kept), "line", texts)


def _config_named(cfg: DataConfig) -> set[str]:
    """The source columns the config names besides the values (never value columns by
    default)."""
    out = set(cfg.columns)
    if cfg.label is not None:
        out.add(cfg.label.column)
    if cfg.entity.column:
        out.add(cfg.entity.column)
    out |= set(cfg.entity.parts or [])
    if cfg.wide is not None and cfg.wide.id_column:
        out.add(cfg.wide.id_column)
    return out


def _value_columns(names: list[str], cfg: DataConfig) -> list[str]:
    w = cfg.wide
    assert w is not None
    if w.value_columns is not None:
        missing = [v for v in w.value_columns if v not in names]
        if missing:
            raise FileRejected(
                f"data.wide.value_columns {clip_names(missing)} are not in the file; it has "
                f"{clip_names(names)}"
            )
        return list(w.value_columns)
    if w.value_pattern is not None:
        rx = re.compile(w.value_pattern)
        values = [n for n in names if rx.search(n)]
        if not values:
            raise FileRejected(
                f"no column matches data.wide.value_pattern {w.value_pattern!r}; the file has "
                f"{clip_names(names)}"
            )
        return values
    named = _config_named(cfg)
    values = [n for n in names if n not in named]
    if not values:
        raise FileRejected(
            f"no value columns: every column of the file is named by the config "
            f"({clip_names(names)})"
        )
    return values


def melt(
    wide: pl.DataFrame,
    cfg: DataConfig,
    max_rows: int,
    notes: list[str] | None,
    bad: list[tuple[int, str, str]],
    n_records: int,
    unit: str,
    texts: list[str] | None = None,
) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    """Wide rows (``REC``, ``LINE`` and the file's columns) -> long rows (see the module).
    ``bad`` are records already quarantined whole, as ``(record, reason, raw)``; ``n_records``
    counts every data record of the file; ``unit`` names a record in reasons (line, row);
    ``texts``: each record's line (text files), quoted by a row quarantined whole (else the
    row's columns as JSON)."""
    w = cfg.wide
    assert w is not None
    names = [n for n in wide.columns if n not in (REC, LINE)]
    if w.id_column is not None and w.id_column not in names:
        raise FileRejected(
            f"data.wide.id_column {w.id_column!r} is not in the file; it has {clip_names(names)}"
        )
    values = _value_columns(names, cfg)
    keep = [n for n in names if n not in values]
    made = {SERIES, POSITION, w.value_name}
    clash = [n for n in keep if n in made and n != w.id_column]
    if clash or (w.id_column in (POSITION, w.value_name)):
        n = clash[0] if clash else w.id_column
        raise FileRejected(
            f"the file has a column {n!r}, a name the wide layout gives to the columns it makes "
            f"({SERIES}, {POSITION}, {w.value_name}): rename it (data.rename)"
        )

    # one type for the values: numbers as float64, else text (parsed in the mapping)
    kinds = {n: wide.schema[n] for n in values}
    odd = [n for n, t in kinds.items() if not (t.is_numeric() or t in (pl.Boolean, pl.String))]
    if odd:
        raise FileRejected(
            f"value column {odd[0]!r} has type {kinds[odd[0]]}, expected numbers or text"
        )
    as_text = any(t == pl.String for t in kinds.values())
    nulls = sorted({*MISSING, *(v.strip().lower() for v in cfg.csv.null_values)})

    def clean(n: str) -> pl.Expr:
        col = pl.col(n)
        if as_text:
            col = col.cast(pl.String)
            missing = col.is_null() | col.str.strip_chars().str.to_lowercase().is_in(nulls)
            if cfg.csv.decimal_comma:  # 2,6 -> 2.6 where that makes a number
                point = col.str.replace(",", ".", literal=True)
                ok = point.str.strip_chars().cast(pl.Float64, strict=False).is_not_null()
                col = pl.when(ok).then(point).otherwise(col)
        else:
            col = col.cast(pl.Float64)
            missing = col.is_null() | col.is_nan()
        return pl.when(~missing).then(col).alias(n)

    wide = wide.with_columns([clean(n) for n in values])
    wide = wide.with_columns(
        _len=pl.max_horizontal(
            [pl.when(pl.col(n).is_not_null()).then(pl.lit(i + 1)) for i, n in enumerate(values)]
        ).fill_null(0)
    )
    empty = wide.filter(pl.col("_len") == 0)
    if texts is not None:
        raws = [clip(texts[r], RAW_CLIP) for r in empty[REC].to_list()]
    else:
        raws = (
            empty.select(pl.struct(pl.col(names).cast(pl.String)).struct.json_encode())
            .to_series()
            .to_list()
        )
    for r, line, raw in zip(empty[REC].to_list(), empty[LINE].to_list(), raws, strict=True):
        bad.append((r, f"{unit} {line}: no values (every value column is empty or NaN)", raw))
    wide = wide.filter(pl.col("_len") > 0)

    # _row numbers: a series takes one per value, a record quarantined whole takes one
    slots = np.ones(n_records, dtype=np.int64)
    recs = wide[REC].to_numpy()
    lens = wide["_len"].to_numpy().astype(np.int64)
    slots[recs] = lens
    total = int(slots.sum())
    if total > max_rows:
        raise FileRejected(
            f"{total} rows once melted (one per time point of each series), over "
            f"lake.max_rows_per_file={max_rows}"
        )
    offset = np.cumsum(slots) - slots
    wide = wide.with_columns(_off=pl.Series(offset[recs], dtype=pl.Int64))
    out_bad = sorted((int(offset[r]) + 1, reason, raw) for r, reason, raw in bad)

    long = (
        wide.select(REC, "_len", "_off", *keep, *values)
        .unpivot(
            on=values,
            index=[REC, "_len", "_off", *keep],
            variable_name="_col",
            value_name=w.value_name,
        )
        .with_columns(
            pl.col("_col")
            .replace_strict(values, list(range(len(values))), return_dtype=pl.Int64)
            .alias(POSITION)
        )
        .filter(pl.col(POSITION) < pl.col("_len"))
        .sort(REC, POSITION)
    )
    series = pl.col(w.id_column) if w.id_column else pl.col(REC)
    out_keep = [n for n in keep if n != SERIES]
    long = long.select(
        series.alias(SERIES),
        POSITION,
        w.value_name,
        *out_keep,
        (pl.col("_off") + pl.col(POSITION) + 1).alias(ROW),
    )
    check_columns(long.columns, cfg)
    if notes is not None:
        span = f", {lens.min()}-{lens.max()} values long" if len(lens) else ""
        cols = f"{values[0]}" if len(values) == 1 else f"{values[0]} .. {values[-1]}"
        notes.append(
            f"wide layout (data.wide): {n_records} series over {len(values)} value columns "
            f"({clip(cols)}){span}, melted into {long.height} rows ({SERIES}, {POSITION}, "
            f"{w.value_name}); {len(out_bad)} quarantined whole"
        )
    return long, out_bad
