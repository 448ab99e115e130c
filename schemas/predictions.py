"""Schema of batch-scoring output (one row per scored window)."""

from __future__ import annotations

from typing import Annotated

import pandera.polars as pa
import polars as pl

UtcMicros = Annotated[pl.Datetime, "us", "UTC"]


class Predictions(pa.DataFrameModel):
    entity_id: str = pa.Field(nullable=False)
    window_start: UtcMicros = pa.Field(nullable=False)
    window_end: UtcMicros = pa.Field(nullable=False)
    model_name: str = pa.Field(nullable=False)
    model_version: str = pa.Field(nullable=False)

    class Config:
        strict = False  # prediction / probability columns depend on the task
