"""The model registry: versions, the ``challenger`` / ``champion`` aliases, promotion.

Each trained model is registered and gets ``challenger``. It also gets ``champion`` when it beats
the current champion on the configured metric (``tracking.champion_metric``), or when there is no
champion. The comparison is recorded as tags on the model version and on the training run
(``cnnlstm.metric``, ``cnnlstm.metric_value``, ``cnnlstm.compared_to``, ``cnnlstm.champion_value``,
``cnnlstm.decision``). Stages are deprecated in MLflow 3: only aliases are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"

_LOWER_IS_BETTER = ("loss", "rmse", "mae", "mse", "error")


class RegistryError(ValueError):
    """A user-facing registry problem: unknown model, version or alias (CLI exit 2)."""


def metric_for(cfg, task: str | None) -> tuple[str, bool]:
    """(metric name, greater is better) for champion comparisons."""
    name = cfg.tracking.champion_metric if cfg is not None else "auto"
    if name == "auto":
        name = "test_accuracy" if (task or "classification") == "classification" else "test_rmse"
    gib = cfg.tracking.greater_is_better if cfg is not None else None
    if gib is None:
        gib = not any(s in name.lower() for s in _LOWER_IS_BETTER)
    return name, gib


def _client(uri: str | None = None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _not_found(e: Exception) -> bool:
    code = getattr(e, "error_code", "")
    return (
        code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")
        or "not found" in str(e).lower()
        or "does not exist" in str(e).lower()
    )


def alias_version(name: str, alias: str, uri: str | None = None):
    """The model version an alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return _client(uri).get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if _not_found(e):
            return None
        raise


def _version_metric(client, mv, metric: str) -> float | None:
    tags = mv.tags or {}
    if tags.get("cnnlstm.metric") == metric and "cnnlstm.metric_value" in tags:
        return float(tags["cnnlstm.metric_value"])
    if mv.run_id:
        return client.get_run(mv.run_id).data.metrics.get(metric)
    return None


def _beats(new: float | None, old: float | None, gib: bool) -> bool:
    if new is None or (isinstance(new, float) and math.isnan(new)):
        return False
    if old is None or (isinstance(old, float) and math.isnan(old)):
        return True
    return new > old if gib else new < old


def register_trained(tracker, model_info) -> dict[str, Any]:
    """Register the model a `MlflowTracker` logged; alias challenger, champion if it wins.
    Called from the tracker's end_run while the run is still active."""
    import mlflow

    client = _client(tracker.uri)
    name = tracker.registered_name
    metric, gib = metric_for(tracker.cfg, tracker.task)
    value = tracker.final_metrics.get(metric)
    mv = mlflow.register_model(
        model_info.model_uri, name, tags={"cnnlstm.run_id": tracker.run_id or ""}
    )
    version = str(mv.version)
    client.set_registered_model_alias(name, CHALLENGER, version)
    champ = alias_version(name, CHAMPION, tracker.uri)
    champ_value = _version_metric(client, champ, metric) if champ is not None else None
    if champ is None:
        promote, why = True, "promoted: no champion before"
    elif _beats(value, champ_value, gib):
        promote, why = (
            True,
            (f"promoted: {metric} {value:.6g} beats champion v{champ.version} ({champ_value:.6g})"),
        )
    else:
        promote = False
        why = (
            f"kept as challenger: {metric} {value} does not beat champion v{champ.version} "
            f"({champ_value})"
        )
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    record = {
        "cnnlstm.metric": metric,
        "cnnlstm.metric_value": "" if value is None else repr(float(value)),
        "cnnlstm.greater_is_better": str(gib).lower(),
        "cnnlstm.compared_to": "none" if champ is None else str(champ.version),
        "cnnlstm.champion_value": "" if champ_value is None else repr(float(champ_value)),
        "cnnlstm.decision": why,
    }
    for k, v in record.items():
        client.set_model_version_tag(name, version, k, v)
    mlflow.set_tags(
        {
            "registry.model": name,
            "registry.version": version,
            "registry.aliases": ",".join([CHALLENGER] + ([CHAMPION] if promote else [])),
        }
        | {k.replace("cnnlstm.", "registry."): v for k, v in record.items()}
    )
    return {
        "name": name,
        "version": version,
        "champion": promote,
        "decision": why,
        "metric": metric,
        "value": value,
        "champion_value": champ_value,
    }


def list_versions(name: str, uri: str | None = None) -> list[dict[str, Any]]:
    """Versions of a registered model (newest first) with their aliases and metric."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    try:
        rm = client.get_registered_model(name)
    except MlflowException as e:
        if _not_found(e):
            raise RegistryError(f"no registered model named {name!r}") from None
        raise
    aliases: dict[str, list[str]] = {}
    for alias, v in (rm.aliases or {}).items():
        aliases.setdefault(str(v), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name='{name}'"):
        tags = mv.tags or {}
        rows.append(
            {
                "version": str(mv.version),
                "aliases": sorted(aliases.get(str(mv.version), [])),
                "status": mv.status,
                "run_id": mv.run_id,
                "created": mv.creation_timestamp,
                "metric": tags.get("cnnlstm.metric"),
                "value": tags.get("cnnlstm.metric_value"),
                "decision": tags.get("cnnlstm.decision"),
                "source": mv.source,
            }
        )
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def promote(name: str, version: str, alias: str = CHAMPION, uri: str | None = None) -> str | None:
    """Point `alias` at `version` by hand; returns the version it pointed at before."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    try:
        client.get_model_version(name, str(version))
    except MlflowException as e:
        if _not_found(e):
            raise RegistryError(f"model {name!r} has no version {version}") from None
        raise
    before = alias_version(name, alias, uri)
    client.set_registered_model_alias(name, alias, str(version))
    client.set_model_version_tag(name, str(version), f"cnnlstm.{alias}_by", "hand")
    return None if before is None else str(before.version)


@dataclass
class ResolvedModel:
    """A model URI pinned to one registry version (name, version) for scoring."""

    uri: str  # what to load: models:/name/version, or the given URI
    name: str
    version: str
    requested: str


def resolve(model_uri: str, uri: str | None = None) -> ResolvedModel:
    """models:/NAME@ALIAS or models:/NAME/VERSION -> the exact version (so an alias moving
    mid-run cannot mix versions); other URIs pass through (name: the URI, version: its id)."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    rest = model_uri[len("models:/") :] if model_uri.startswith("models:/") else ""
    if "@" in rest or "/" in rest:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = alias_version(name, alias, uri)
            if mv is None:
                raise RegistryError(
                    f"{model_uri}: model {name!r} has no alias {alias!r} (or is not registered);"
                    " see `cnnlstm models` and `cnnlstm promote`"
                )
            return ResolvedModel(f"models:/{name}/{mv.version}", name, str(mv.version), model_uri)
        name, version = rest.split("/", 1)
        try:
            mv = client.get_model_version(name, version)
        except MlflowException as e:
            if _not_found(e):
                raise RegistryError(
                    f"{model_uri}: model {name!r} has no version {version} "
                    "(deleted?); see `cnnlstm models`"
                ) from None
            raise
        return ResolvedModel(f"models:/{name}/{mv.version}", name, str(mv.version), model_uri)
    import hashlib

    return ResolvedModel(
        model_uri,
        model_uri.rstrip("/").rsplit("/", 1)[-1],
        "uri-" + hashlib.sha256(model_uri.encode()).hexdigest()[:12],
        model_uri,
    )
