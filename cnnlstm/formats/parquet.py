"""Parquet (.parquet, .pq, or the PAR1 magic bytes): the declared row count is checked against
lake.max_rows_per_file before anything is decoded. Dictionary-encoded columns (pyarrow
``dictionary<int, string>``, polars Categorical/Enum) are read as their plain values. With
data.wide, each row is one series, melted into long rows by `formats.wide`."""

from __future__ import annotations

import io

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from cnnlstm.config import DataConfig
from cnnlstm.formats import wide
from cnnlstm.formats.base import ROW, FileRejected, check_columns, clip_names, rename_columns


def matches(source: str, head: bytes) -> bool:
    return source.lower().endswith((".parquet", ".pq")) or head[:4] == b"PAR1"


def read(
    data: bytes, source: str, cfg: DataConfig, max_bytes: int, max_rows: int, notes=None
) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    if cfg.wide is not None:  # one series per row: melted (the columns are checked after)
        df = _decode(data, cfg, max_rows, notes, check=False).with_row_index(wide.REC)
        df = df.with_columns(
            pl.col(wide.REC).cast(pl.Int64), (pl.col(wide.REC) + 1).cast(pl.Int64).alias(wide.LINE)
        )
        return wide.melt(df, cfg, max_rows, notes, [], df.height, "row")
    return read_parquet(data, cfg, max_rows, notes), []


def read_parquet(
    data: bytes, cfg: DataConfig, max_rows: int, notes: list[str] | None = None
) -> pl.DataFrame:
    df = _decode(data, cfg, max_rows, notes, check=True)
    for ch in cfg.channels:
        dt = df.schema[ch.src]
        if not (dt.is_numeric() or dt == pl.String):
            raise FileRejected(f"column {ch.src!r} has type {dt}, expected a number")
    return df.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))


def _decode(
    data: bytes, cfg: DataConfig, max_rows: int, notes: list[str] | None, check: bool
) -> pl.DataFrame:
    """The file's rows, columns renamed by data.rename and, with ``check``, checked against
    the config's columns."""
    try:
        pf = pq.ParquetFile(io.BytesIO(data))
        if pf.metadata.num_rows > max_rows:
            raise FileRejected(
                f"Parquet file declares {pf.metadata.num_rows} rows, "
                f"over lake.max_rows_per_file={max_rows}"
            )
        table = pf.read()
    except FileRejected:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        raise FileRejected(f"corrupt or unreadable Parquet: {e}") from e
    if table.num_rows == 0:
        raise FileRejected("Parquet file has no rows")
    names = table.column_names
    if len(set(names)) != len(names):
        raise FileRejected(f"duplicate column names: {clip_names(names)}")
    names = rename_columns(names, cfg, notes)
    table = table.rename_columns(names)
    if check:
        check_columns(names, cfg)
    df = pl.from_arrow(_decode_dictionaries(table))
    assert isinstance(df, pl.DataFrame)
    return df.with_columns(pl.col(pl.Categorical, pl.Enum).cast(pl.String))


def _decode_dictionaries(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns as plain columns of their value type (strings stay strings:
    polars would read them as Categorical, which the mapping treats as an unknown type)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            value = f.type.value_type
            try:
                col = table.column(i).cast(value)
            except (pa.ArrowException, ValueError) as e:
                raise FileRejected(f"column {f.name!r}: cannot decode {f.type}: {e}") from e
            table = table.set_column(i, pa.field(f.name, value, f.nullable), col)
    return table
