"""Labels from an index file (``data.label.table``): one row per recording, id -> label, as the
PhysioNet/CinC 2017 ``REFERENCE.csv`` (headerless ``A00001,N``), a Kaggle ``train.csv`` of
``id,label`` or PTB-XL's metadata CSV keep them.

The table is read once per content: cached by resolved path, modification time and size (and
the table settings), so an ingest of many files reads it once and an edit is seen by the next
ingest. Every problem with it is a `ConfigError` naming ``data.label.table.path`` (or the key).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from dataclasses import dataclass
from pathlib import PurePosixPath

import polars as pl

from cnnlstm.config import Config, ConfigError, LabelTable


@dataclass(frozen=True)
class LoadedTable:
    """A label table read: its file name, key column, id -> label (text), sha256 of its bytes."""

    name: str
    key: str
    values: dict[str, str]
    sha256: str

    @property
    def keys_series(self) -> pl.Series:
        return pl.Series(list(self.values), dtype=pl.String)

    @property
    def values_series(self) -> pl.Series:
        return pl.Series(list(self.values.values()), dtype=pl.String)


_CACHE: dict[tuple, LoadedTable] = {}
_LOCK = threading.Lock()
_MAX_CACHED = 8


def load_label_table(cfg: Config) -> LoadedTable | None:
    """``cfg``'s label table (None when data.label.table is not given). Raises ConfigError."""
    spec = cfg.data.label.table if cfg.data.label else None
    if spec is None:
        return None
    if "://" in spec.path:
        raise ConfigError(
            f"data.label.table.path={spec.path!r}: only a local file is supported, not a URI"
        )
    path = cfg.resolve_path(spec.path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"data.label.table.path: cannot read {path}: {e.strerror}") from None
    settings = (spec.key, spec.value, tuple(spec.names) if spec.names else None)
    ck = (path, st.st_mtime_ns, st.st_size, settings)
    with _LOCK:
        hit = _CACHE.get(ck)
    if hit is not None:
        return hit
    table = _read(path, spec)
    with _LOCK:
        if len(_CACHE) >= _MAX_CACHED:
            _CACHE.clear()
        _CACHE[ck] = table
    return table


def _read(path: str, spec: LabelTable) -> LoadedTable:
    name = PurePosixPath(path.replace("\\", "/")).name
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"data.label.table.path: cannot read {path}: {e.strerror}") from None
    try:
        df = pl.read_csv(
            io.BytesIO(data),
            has_header=spec.names is None,
            new_columns=spec.names,
            separator=",",
            infer_schema=False,  # every field as text
        )
    except Exception as e:  # not CSV, empty, not UTF-8, a field count other than names'
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"data.label.table.path: {path} is not a readable CSV table: {first[:300]}"
        ) from None
    for k in ("key", "value"):
        col = getattr(spec, k)
        if col not in df.columns:
            raise ConfigError(
                f"data.label.table.{k}={col!r}: no such column in {name} (columns: "
                f"{', '.join(df.columns[:20])})"
            )
    first_line = 1 if spec.names is not None else 2
    df = df.select(
        key=_clean(pl.col(spec.key)),
        value=_clean(pl.col(spec.value)),
        line=pl.int_range(pl.len()) + first_line,
    )
    empty = df.filter(pl.col("key").is_null() | pl.col("value").is_null())
    if empty.height:
        row = empty.row(0, named=True)
        what = "key" if row["key"] is None else "value"
        raise ConfigError(
            f"data.label.table.path: line {row['line']} of {name} has an empty {what} "
            f"(data.label.table.{what}={getattr(spec, what)!r})"
        )
    uniq = df.unique(["key", "value"], keep="first", maintain_order=True)
    clash = uniq.filter(pl.col("key").is_duplicated())
    if clash.height:
        key = clash["key"][0]
        a, b = clash.filter(pl.col("key") == key)["value"].to_list()[:2]
        raise ConfigError(
            f"data.label.table.path: {name} gives key {key!r} (column {spec.key}) two labels: "
            f"{a!r} and {b!r}"
        )
    values = dict(zip(uniq["key"].to_list(), uniq["value"].to_list(), strict=True))
    return LoadedTable(
        name=name, key=spec.key, values=values, sha256=hashlib.sha256(data).hexdigest()
    )


def _clean(e: pl.Expr) -> pl.Expr:
    """Blanks stripped; an empty field is null."""
    s = e.str.strip_chars()
    return pl.when(s.str.len_bytes() > 0).then(s)
