"""Landing file formats: one module per format, each with ``matches(source, head)`` and
``read(data, source, cfg, max_bytes, max_rows, notes) -> (rows, unparseable lines)``. A new
format is one module plus one entry in `READERS` (tried in order; CSV takes the rest).

The rows frame holds the source columns (strings or parsed numbers) and ``_row``, the 1-based
data row number; unparseable lines come back as ``(row, reason, raw text)`` for the quarantine.
"""

from __future__ import annotations

import polars as pl

from cnnlstm.config import DataConfig
from cnnlstm.formats import gz, parquet, text
from cnnlstm.formats.base import ROW, FileRejected, check_columns

READERS = [parquet, gz, text]
NOT_TEXT = (".gz", ".parquet", ".pq")  # every other file is read as CSV text (formats.text)

__all__ = ["NOT_TEXT", "READERS", "ROW", "FileRejected", "check_columns", "read_source"]


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
    for reader in READERS:
        if reader.matches(source, data[:8]):
            if reader is gz:
                return gz.read(data, source, cfg, max_bytes, max_rows, notes, max_gzip_ratio)
            return reader.read(data, source, cfg, max_bytes, max_rows, notes)
    raise FileRejected("no reader for this file")  # pragma: no cover (CSV takes every file)
