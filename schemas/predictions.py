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


class ClassificationPredictions(Predictions):
    """Class predictions: the class value, its name and probability (``prob_<class>`` columns
    and the true ``label`` are checked by `validate_predictions`)."""

    predicted_name: str = pa.Field(nullable=False)
    probability: pl.Float32 = pa.Field(nullable=False, ge=0.0, le=1.0)


def _window_order(df: pl.DataFrame) -> None:
    bad = df.filter(pl.col("window_end") < pl.col("window_start")).height
    if bad:
        raise pa.errors.SchemaError(None, df, f"{bad} windows end before they start")


def validate_predictions(df: pl.DataFrame) -> pl.DataFrame:
    """Validate a collected predictions frame: the columns every task has (raises pandera
    errors). Tasks add their own checks (`validate_class_predictions`)."""
    out = Predictions.validate(df)
    _window_order(df)
    return out


def validate_class_predictions(df: pl.DataFrame) -> pl.DataFrame:
    """Class predictions: the predicted class, its name and probability, ``prob_<class>``
    columns that sum to 1."""
    out = ClassificationPredictions.validate(df)
    _window_order(df)
    if "predicted" not in df.columns:
        raise pa.errors.SchemaError(None, df, "predictions lack the 'predicted' column")
    probs = [c for c in df.columns if c.startswith("prob_")]
    if not probs:
        raise pa.errors.SchemaError(None, df, "class predictions lack prob_<class> columns")
    s = df.select(pl.sum_horizontal(probs).alias("s"))["s"]
    if len(s) and float((s - 1.0).abs().max()) > 1e-3:
        raise pa.errors.SchemaError(None, df, "class probabilities do not sum to 1")
    return out
