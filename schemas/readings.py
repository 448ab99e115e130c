"""Schemas of readings: landed rows after column mapping -> clean lake rows; quarantine rows.

- ``landed_schema(data_cfg)``: the mapped rows of one landing file, checked row by row (validate a
  *collected* frame with ``lazy=True``; the failure cases' ``index`` routes rows to quarantine).
- ``lake_schema(data_cfg)``: the same columns plus ``(entity_id, timestamp)`` uniqueness.
- ``QuarantineRows``: static; every rejected row with its reason, source file and row number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import pandera.polars as pa
import polars as pl

UtcMicros = Annotated[pl.Datetime, "us", "UTC"]

if TYPE_CHECKING:  # config imports nothing from here; keep the dependency one-way at runtime
    from cnnlstm.config import DataConfig

READINGS_KEY = ["entity_id", "timestamp"]
TIMESTAMP_DTYPE = pl.Datetime("us", "UTC")

EXTRA_DTYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
}
LABEL_DTYPES: dict[str, pl.DataType] = {
    "int": pl.Int64(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
    "string": pl.String(),
}


def _finite(data: pa.PolarsData) -> pl.LazyFrame:
    # null is judged by `nullable`; here only NaN / +-inf fail
    return data.lazyframe.select(pl.col(data.key).is_finite().fill_null(True))


def _non_empty(data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col(data.key).str.len_bytes() > 0)


class LakeReadingsBase(pa.DataFrameModel):
    """Columns every readings frame has, whatever the dataset."""

    entity_id: str = pa.Field(nullable=False)
    timestamp: UtcMicros = pa.Field(nullable=False)

    class Config:
        strict = False


def _columns(cfg: DataConfig) -> dict[str, pa.Column]:
    cols: dict[str, pa.Column] = {
        "entity_id": pa.Column(
            pl.String,
            nullable=False,
            checks=pa.Check(_non_empty, name="entity_id_not_empty", error="empty entity id"),
        ),
        "timestamp": pa.Column(TIMESTAMP_DTYPE, nullable=False),
    }
    for ch in cfg.channels:
        checks = [pa.Check(_finite, name="finite", error="NaN or infinite value")]
        if ch.min is not None:
            checks.append(pa.Check.ge(ch.min))
        if ch.max is not None:
            checks.append(pa.Check.le(ch.max))
        cols[ch.name] = pa.Column(pl.Float32, nullable=cfg.allow_missing_channels, checks=checks)
    if cfg.label is not None:
        cols["label"] = pa.Column(LABEL_DTYPES[cfg.label.dtype], nullable=False)
    for name, kind in cfg.metadata_types().items():
        cols[name] = pa.Column(EXTRA_DTYPES[kind], nullable=True)
    return cols


def landed_schema(cfg: DataConfig) -> pa.DataFrameSchema:
    """Row-level schema of one landing file after mapping to the contract."""
    return pa.DataFrameSchema(_columns(cfg), strict=False, name=f"{cfg.name}.landed")


def lake_schema(cfg: DataConfig) -> pa.DataFrameSchema:
    """Clean lake rows: the landed columns, unique on (entity_id, timestamp)."""
    return pa.DataFrameSchema(
        _columns(cfg), strict=False, unique=READINGS_KEY, name=f"{cfg.name}.lake"
    )


class QuarantineRows(pa.DataFrameModel):
    """One row per rejected input row. ``raw`` holds the original values as JSON (nothing lost)."""

    source_file: str = pa.Field(nullable=False)
    source_sha256: str = pa.Field(nullable=False, str_length={"min_value": 64, "max_value": 64})
    source_row: int = pa.Field(
        nullable=False, ge=1, description="1-based data row (header excluded)"
    )
    reason: str = pa.Field(nullable=False, str_length={"min_value": 1})
    raw: str = pa.Field(nullable=False)
    ingested_at: UtcMicros = pa.Field(nullable=False)

    class Config:
        strict = True
