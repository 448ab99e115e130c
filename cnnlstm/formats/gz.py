"""gzip-compressed CSV (.csv.gz, .txt.gz, or any file with the gzip magic bytes), decompressed
in memory by streaming, 1 MiB of output at a time, and stopped as soon as the output passes
lake.max_file_bytes or lake.max_gzip_ratio times the compressed bytes consumed so far: a bomb
is rejected after a few MiB of work, whatever it would inflate to."""

from __future__ import annotations

import io
import zlib

import polars as pl

from cnnlstm.config import DataConfig, LakeConfig
from cnnlstm.formats import text
from cnnlstm.formats.base import FileRejected

DEFAULT_RATIO = LakeConfig.model_fields["max_gzip_ratio"].default
IN_CHUNK = 64 << 10  # compressed bytes given to zlib at a time
OUT_CHUNK = 1 << 20  # decompressed bytes taken from zlib at a time
RATIO_FLOOR = 1 << 20  # the ratio is checked once the output passes this (tiny files compress
# well because of their own repetition; a bomb is caught after 1 MiB of output at most)


def matches(source: str, head: bytes) -> bool:
    return source.lower().endswith(".gz") or head[:2] == b"\x1f\x8b"


def read(
    data: bytes,
    source: str,
    cfg: DataConfig,
    max_bytes: int,
    max_rows: int,
    notes=None,
    max_ratio: float = DEFAULT_RATIO,
) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    raw = gunzip(data, max_bytes, max_ratio)
    if len(raw) == 0:
        raise FileRejected("empty file (gzip holds 0 bytes)")
    return text.read_csv(raw, cfg, notes=notes, max_rows=max_rows)


def gunzip(data: bytes, max_bytes: int, max_ratio: float = DEFAULT_RATIO) -> bytes:
    """The decompressed bytes of ``data`` (one gzip member or several concatenated). Raises
    FileRejected for a corrupt or truncated stream, trailing garbage, an output over
    ``max_bytes``, or an output over ``max_ratio`` times the compressed bytes read so far."""
    out = io.BytesIO()
    n_out = 0
    src = memoryview(data)
    fed = 0  # compressed bytes handed to zlib so far
    buf = b""  # compressed bytes handed over but not consumed yet
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header and trailer
    try:
        while True:
            if not buf and fed < len(data):
                buf = bytes(src[fed : fed + IN_CHUNK])
                fed += len(buf)
            piece = d.decompress(buf, OUT_CHUNK)
            buf = d.unconsumed_tail
            if piece:
                n_out += len(piece)
                consumed = fed - len(buf) - len(d.unused_data)
                _check_limits(n_out, consumed, max_bytes, max_ratio)
                out.write(piece)
            if d.eof:  # end of a member: what follows must be another member (or nothing)
                buf = d.unused_data + buf
                if not buf and fed >= len(data):
                    break
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            elif not buf and fed >= len(data) and len(piece) < OUT_CHUNK:
                raise FileRejected(
                    "corrupt gzip: compressed file ended before the end-of-stream marker was "
                    "reached"
                )
    except zlib.error as e:
        raise FileRejected(f"corrupt gzip: {e}") from e
    return out.getvalue()


def _check_limits(n_out: int, consumed: int, max_bytes: int, max_ratio: float) -> None:
    if n_out > max_bytes:
        raise FileRejected(f"decompressed size over the cap lake.max_file_bytes={max_bytes}")
    if n_out > RATIO_FLOOR and n_out > max_ratio * max(consumed, 1):
        raise FileRejected(
            f"gzip inflates more than lake.max_gzip_ratio={max_ratio:g} times its size "
            f"({n_out} bytes from the first {consumed} compressed bytes): stopped as a "
            "decompression bomb"
        )
