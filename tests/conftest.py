"""Shared fixtures for the ingest/lake/config tests: a tiny dataset config and file writers.

The tiny dataset has the source columns ``device,time,ch_a,ch_b,label``: entity from ``device``,
ISO timestamps in ``time``, two float channels (``ch_a`` has the plausible range [-100, 100],
``ch_b`` none) and an int label. The lake lives in ``<dir>/lake``.
"""

from __future__ import annotations

import copy
import gzip
import io
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import flows  # noqa: F401  (sets PREFECT_LOGGING_EXTRA_LOGGERS before prefect is imported)
from cnnlstm.config import Config, config_from_dict
from cnnlstm.lake import LakeError, scan_quarantine, scan_readings

HEADER = "device,time,ch_a,ch_b,label\n"


def base_config_dict(base_dir: Path) -> dict[str, Any]:
    return {
        "data": {
            "name": "tiny",
            "entity": {"column": "device"},
            "timestamp": {"column": "time", "format": "iso"},
            "channels": [{"name": "ch_a", "min": -100, "max": 100}, {"name": "ch_b"}],
            "label": {"column": "label", "dtype": "int"},
        },
        "lake": {"uri": str(Path(base_dir) / "lake")},
    }


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``; dicts merge, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def make_config(base_dir: Path, **overrides: Any) -> Config:
    """The tiny dataset's config, lake in ``base_dir/lake``; ``overrides`` are sections
    deep-merged into it, e.g. ``make_config(d, data={"timestamp": {"format": "epoch_s"}})``."""
    return config_from_dict(deep_merge(base_config_dict(base_dir), overrides), base_dir=base_dir)


def write_source(path: Path, content: str | bytes | pl.DataFrame | dict, raw: bool = False) -> Path:
    """Write a landing file. Text/bytes are written as they are (gzip-compressed when the name
    ends in .gz, unless ``raw``); a frame (or dict of columns) becomes Parquet or CSV by the
    file suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, dict):
        content = pl.DataFrame(content)
    if isinstance(content, pl.DataFrame):
        if path.suffix in (".parquet", ".pq"):
            content.write_parquet(path)
            return path
        buf = io.BytesIO()
        content.write_csv(buf)
        content = buf.getvalue()
    data = content.encode() if isinstance(content, str) else content
    if path.name.endswith(".gz") and not raw:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def lake_frame(cfg: Config) -> pl.DataFrame:
    """Everything the lake's ledger lists, sorted by key (for an empty lake an empty frame with
    the key and channel columns)."""
    try:
        return scan_readings(cfg.lake_uri).collect().sort("entity_id", "timestamp")
    except LakeError:
        schema = {"entity_id": pl.String, "timestamp": pl.Datetime("us", "UTC")}
        return pl.DataFrame(schema=schema | dict.fromkeys(cfg.data.channel_names, pl.Float32))


def quarantine_frame(cfg: Config) -> pl.DataFrame:
    """The quarantine dataset sorted by (source_file, source_row); empty (same columns) if none."""
    lf = scan_quarantine(cfg.lake_uri)
    if lf is None:
        return pl.DataFrame(
            schema={
                "source_file": pl.String,
                "source_sha256": pl.String,
                "source_row": pl.Int64,
                "reason": pl.String,
                "raw": pl.String,
            }
        )
    return lf.collect().sort("source_file", "source_row")


def counts(rep) -> tuple[str, int, int, int, int]:
    """(outcome, rows_read, accepted, quarantined, duplicates) of a FileReport."""
    return (rep.outcome, rep.rows_read, rep.accepted, rep.quarantined, rep.duplicates)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return make_config(tmp_path)
