"""Reading batch-scoring output: committed predictions only.

The scorer (`cnnlstm.score`) writes each group's prediction files (temp name, footer check,
rename) and *then* records them in the version's watermark (``_watermark/<model>/v<version>*.json``,
one atomic JSON write). A scorer killed between the two leaves files under ``date=*/`` that no
watermark names (the next scorer removes them under its lock), and temp files under ``_tmp/``.
A directory glob (``polars.scan_parquet("predictions/**/*.parquet")``) returns those rows too;
`scan` reads exactly the files the watermarks list, as `cnnlstm.lake.scan_readings` reads the
files the lake's ledger lists::

    from cnnlstm.predictions import scan
    scan("predictions").filter(pl.col("model_version") == "3").collect()
"""

from __future__ import annotations

from typing import Any

import polars as pl

from cnnlstm.score import WATERMARK


def committed_files(
    output: str, model_name: str | None = None, model_version: str | None = None
) -> list[str]:
    """Prediction files (relative to ``output``) that a watermark lists, sorted; optionally
    of one model name and/or version."""
    from cnnlstm.lake import Lake

    out = Lake(output)
    rels: set[str] = set()
    for p in sorted(out.fs.glob(out.abs(f"{WATERMARK}/*/*.json"))):
        wm: dict[str, Any] = out._read_json(p)
        if model_name is not None and wm.get("model_name") != model_name:
            continue
        if model_version is not None and str(wm.get("model_version")) != str(model_version):
            continue
        rels |= {r for v in wm.get("files", {}).values() for r in v.get("predictions", [])}
    return sorted(rels)


def scan(
    output: str, model_name: str | None = None, model_version: str | None = None
) -> pl.LazyFrame:
    """Lazy predictions of the files the watermarks list (committed rows only): one row per
    window, the columns `cnnlstm.score` writes (entity, window start/end, the task's columns,
    ``model_name``, ``model_version``, ``scored_at``). ``output`` is the scoring output folder
    (``score.output``) or an fsspec URI. No committed file (nothing scored yet, or no match for
    the filters): an empty LazyFrame.

    A watermark is replaced atomically and names only files already in place, so a scan running
    beside a scorer sees the state of its last watermark write. Files a watermark names are never
    rewritten with other content (names derive from model, version, filter and source files)."""
    from cnnlstm.lake import Lake, _scan

    rels = committed_files(output, model_name, model_version)
    lf = _scan(Lake(output), rels)
    return pl.LazyFrame() if lf is None else lf
