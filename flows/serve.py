"""Serve the scheduled deployments of ``deploy/prefect.yaml`` in one process (``prefect.serve``):
the same flows, parameters, schedules (with their timezone) and concurrency limits as the
work-pool deployments that ``prefect deploy`` makes from the file, no worker needed.

The file is read the way ``prefect deploy`` reads it, with Prefect's own code, not by hand:

- validated by Prefect's model of ``prefect.yaml`` (``PrefectYamlModel``, the model
  ``prefect deploy`` validates with): a malformed file is refused with Prefect's own message;
- each schedule becomes a deployment schedule through the function ``prefect deploy`` uses
  (``cron``/``interval``/``rrule`` with ``timezone``, ``anchor_date``, ``day_or``, ``active``,
  ``slug``, ``parameters``), so a schedule keeps its timezone and an inactive one stays inactive;
- ``concurrency_limit`` (an int, or ``{limit, collision_strategy, grace_period_seconds}``) becomes
  Prefect's ``ConcurrencyLimitConfig``: the server then holds each deployment to that many
  runs at a time (``CANCEL_NEW``: a tick that finds a run still going is cancelled).

Served deployments run in this process's environment, from this checkout: the work pool, its job
variables and the pull steps of the file do not apply. Templated values (``{{ $VAR }}``,
``{{ prefect.variables.x }}``) are not resolved here; ``deploy/prefect.yaml`` has none.

These Prefect functions live in private modules (``prefect.cli.deploy._*``), pinned by the
``prefect>=3.9.1,<4`` requirement; ``tests/test_serve.py`` fails if they move.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "deploy" / "prefect.yaml"


def _load_flow(entrypoint: str) -> Any:
    path, _, func = entrypoint.partition(":")
    module = path.removesuffix(".py").replace("/", ".")
    return getattr(importlib.import_module(module), func)


def deployment_configs(prefect_yaml: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The deployments of ``prefect_yaml`` as ``prefect deploy`` sees them: validated by
    Prefect's model of the file (a ``pydantic.ValidationError`` when it does not pass), legacy
    ``schedule:`` keys folded into ``schedules:``, only the keys the file sets."""
    from prefect.cli.deploy._config import _handle_deprecated_schedule_fields
    from prefect.cli.deploy._models import PrefectYamlModel

    raw = yaml.safe_load(Path(prefect_yaml).read_text()) or {}
    model = PrefectYamlModel.model_validate(raw)
    return [
        _handle_deprecated_schedule_fields(d.model_dump(exclude_unset=True, mode="json"))
        for d in model.deployments
    ]


def deployment_schedules(d: dict[str, Any]) -> list[Any]:
    """``DeploymentScheduleCreate`` objects for the ``schedules`` of one deployment config,
    built by the function ``prefect deploy`` uses (timezone, active, slug, ... kept)."""
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    return [
        DeploymentScheduleCreate(**_schedule_config_to_deployment_schedule(s))
        for s in d.get("schedules") or []
    ]


def concurrency_limit(d: dict[str, Any]) -> Any:
    """The deployment's ``concurrency_limit`` as Prefect takes it: None, an int, or a
    ``ConcurrencyLimitConfig`` (limit, collision strategy, grace period)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    spec = d.get("concurrency_limit")
    if spec is None or isinstance(spec, int):
        return spec
    given = {k: v for k, v in spec.items() if v is not None}
    if "limit" not in given:  # as `prefect deploy`: options without a limit set no limit
        return None
    return ConcurrencyLimitConfig(**given)


def served_deployments(prefect_yaml: Path = PREFECT_YAML, config: str | None = None) -> list[Any]:
    """RunnerDeployments for every deployment of ``prefect_yaml`` with a schedule (active or
    not; one without, e.g. ``pipeline``, is for ``prefect deployment run`` on a work pool).
    ``config`` replaces the ``config`` parameter, e.g. with an absolute path."""
    out = []
    for d in deployment_configs(prefect_yaml):
        schedules = deployment_schedules(d)
        if not schedules:
            continue
        params = dict(d.get("parameters") or {})
        if config is not None:
            params["config"] = config
        kwargs: dict[str, Any] = {}
        for key in ("description", "version", "paused"):
            if d.get(key) is not None:
                kwargs[key] = d[key]
        if d.get("enforce_parameter_schema") is not None:
            kwargs["enforce_parameter_schema"] = d["enforce_parameter_schema"]
        tags = d.get("tags")
        out.append(
            _load_flow(d["entrypoint"]).to_deployment(
                name=d["name"],
                schedules=schedules,
                concurrency_limit=concurrency_limit(d),
                parameters=params,
                tags=[tags] if isinstance(tags, str) else tags,
                **kwargs,
            )
        )
    return out


def serve_all(
    config: str | None = None, prefect_yaml: Path = PREFECT_YAML
) -> None:  # pragma: no cover - runs until stopped
    from prefect import serve

    serve(*served_deployments(prefect_yaml, config=config))
