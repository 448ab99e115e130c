"""gzip-compressed CSV (.csv.gz, .txt.gz, or any file with the gzip magic bytes), decompressed
in memory up to lake.max_file_bytes."""

from __future__ import annotations

import gzip
import io
import zlib

import polars as pl

from cnnlstm.config import DataConfig
from cnnlstm.formats import text
from cnnlstm.formats.base import FileRejected


def matches(source: str, head: bytes) -> bool:
    return source.lower().endswith(".gz") or head[:2] == b"\x1f\x8b"


def read(
    data: bytes, source: str, cfg: DataConfig, max_bytes: int, max_rows: int, notes=None
) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    raw = gunzip(data, max_bytes)
    if len(raw) == 0:
        raise FileRejected("empty file (gzip holds 0 bytes)")
    return text.read_csv(raw, cfg, notes=notes)


def gunzip(data: bytes, max_bytes: int) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as g:
            out = g.read(max_bytes + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise FileRejected(f"corrupt gzip: {e}") from e
    if len(out) > max_bytes:
        raise FileRejected(f"decompressed size over the cap lake.max_file_bytes={max_bytes}")
    return out
