"""Serve the scheduled deployments of ``deploy/prefect.yaml`` in one process (``flow.serve``):
the same flows, parameters and cron schedules as the work-pool deployments, no worker needed."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml
from prefect import serve

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "deploy" / "prefect.yaml"


def _load_flow(entrypoint: str) -> Any:
    path, _, func = entrypoint.partition(":")
    module = path.removesuffix(".py").replace("/", ".")
    return getattr(importlib.import_module(module), func)


def served_deployments(prefect_yaml: Path = PREFECT_YAML, config: str | None = None) -> list[Any]:
    """RunnerDeployments for every deployment with a schedule (``config`` replaces the
    ``config`` parameter, e.g. with an absolute path)."""
    spec = yaml.safe_load(prefect_yaml.read_text())
    out = []
    for d in spec["deployments"]:
        crons = [s["cron"] for s in d.get("schedules") or [] if s.get("active", True)]
        if not crons:
            continue
        params = dict(d.get("parameters") or {})
        if config is not None:
            params["config"] = config
        out.append(
            _load_flow(d["entrypoint"]).to_deployment(
                name=d["name"], cron=crons, parameters=params, tags=d.get("tags")
            )
        )
    return out


def serve_all(config: str | None = None) -> None:  # pragma: no cover - runs until stopped
    serve(*served_deployments(config=config))
