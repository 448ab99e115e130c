"""Landing file formats: one module per format, each with ``matches(source, head)`` and
``read(data, source, cfg, max_bytes, max_rows, notes) -> (rows, unparseable lines)``. A new
format is one module plus one entry in `READERS` (tried in order; CSV takes the rest) and its
suffixes in `NOT_TEXT`. ``head`` is the file's first `HEAD` bytes.

The rows frame holds the source columns (strings or parsed numbers), renamed by data.rename
(`base.rename_columns`), and ``_row``, the 1-based data row number in the file's order;
unparseable lines come back as ``(row, reason, raw text)`` for the quarantine. Readers add what
the ingest report should say about how the file was read (variables left out, renames) to
``notes``.

Parquet, gz (CSV inside), MATLAB .mat (`formats.mat`), NumPy .npy/.npz (`formats.npy`), sktime
.ts (`formats.ts`: one series per line, melted into long rows), Weka ARFF (`formats.arff`: one
column per attribute, the @data section read as CSV text), and CSV text (`formats.text`) for
everything else. data.wide (`formats.wide`) melts CSV text, Parquet and ARFF files that hold one
series per row.
"""

from __future__ import annotations

import polars as pl

from cnnlstm.config import DataConfig
from cnnlstm.formats import arff, gz, mat, npy, parquet, text, ts
from cnnlstm.formats.base import ROW, FileRejected, check_columns

READERS = [parquet, mat, npy, ts, arff, gz, text]
# every other file is read as CSV text (formats.text)
NOT_TEXT = (".gz", ".parquet", ".pq", ".mat", ".npy", ".npz", ".ts", ".arff")
HEAD = 128  # bytes of a file's start given to each reader's matches()

__all__ = [
    "HEAD",
    "NOT_TEXT",
    "READERS",
    "ROW",
    "FileRejected",
    "check_columns",
    "is_text",
    "read_source",
]


def reader_for(source: str, head: bytes):
    """The reader module that takes a file (CSV text takes every file no other reader does)."""
    return next(r for r in READERS if r.matches(source, head[:HEAD]))


def is_text(source: str, head: bytes) -> bool:
    """Is the file read as CSV text (plain or gzip-compressed)?"""
    return reader_for(source, head) in (gz, text)


def read_source(
    data: bytes,
    source: str,
    cfg: DataConfig,
    max_bytes: int,
    max_rows: int,
    notes: list[str] | None = None,
    max_gzip_ratio: float = gz.DEFAULT_RATIO,
) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    """Parse a source file. Returns the frame of parsed rows (source columns + ``_row``) and the
    rows that could not be parsed at all, as ``(row, reason, raw text)``."""
    if len(data) == 0:
        raise FileRejected("empty file (0 bytes)")
    reader = reader_for(source, data)
    if reader is gz:
        return gz.read(data, source, cfg, max_bytes, max_rows, notes, max_gzip_ratio)
    return reader.read(data, source, cfg, max_bytes, max_rows, notes)
