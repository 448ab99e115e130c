"""The stages as plain functions with their default wiring (tracker, registry), used by the CLI
and by the Prefect flows alike. No orchestration here: each function is one stage."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cnnlstm.config import Config

log = logging.getLogger("cnnlstm.pipeline")


def train_and_track(cfg: Config, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train on the lake and report through the configured tracker. Returns the final metrics
    (without the per-epoch history, which is in ``out_dir/metrics.json``)."""
    from cnnlstm.train import train_from_config

    metrics = train_from_config(cfg, Path(out_dir), resume=resume)
    return {k: v for k, v in metrics.items() if k != "history"}
