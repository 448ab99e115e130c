"""pandera schemas of the pipeline's stages (polars backend).

Static parts are ``DataFrameModel`` classes that inherit across stages; the channel columns come
from the config, so ``readings_schema(cfg)`` builds the per-dataset schema from them.
"""

from schemas.predictions import Predictions
from schemas.readings import (
    READINGS_KEY,
    LakeReadingsBase,
    QuarantineRows,
    lake_schema,
    landed_schema,
)

__all__ = [
    "READINGS_KEY",
    "LakeReadingsBase",
    "Predictions",
    "QuarantineRows",
    "lake_schema",
    "landed_schema",
]
