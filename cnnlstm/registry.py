"""The model registry: versions, the ``challenger`` / ``champion`` aliases, promotion.

Each trained model is registered and gets ``challenger``. It also gets ``champion`` when there is
no champion, or when it beats the champion on the task's selection metric *on validation data*
(`cnnlstm.tasks.Task.selection`, or ``tracking.champion_metric``). Test metrics are reported,
never used to choose.

Every version records what it was evaluated on: the metric, its value, and a fingerprint of the
validation windows (``cnnlstm.eval_fingerprint``). Two versions are compared directly only when
their fingerprints agree (same windows, same targets). Otherwise the champion is re-evaluated on
the challenger's validation readings (a callback the pipeline passes) and that value is
compared; without a re-evaluation there is no promotion. A run without validation data is kept
as challenger (promote by hand: ``cnnlstm promote``). The decision is written as tags on the
model version and on the training run (``cnnlstm.decision``, ``cnnlstm.compared_on``, ...).
Stages are deprecated in MLflow 3: only aliases are used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"


class RegistryError(ValueError):
    """A user-facing registry problem: unknown model, version or alias (CLI exit 2)."""


@dataclass
class Evaluation:
    """What a model was evaluated on, for comparisons: a validation metric of the task."""

    metric: str
    greater_is_better: bool
    value: float | None
    fingerprint: str | None = None  # of the validation windows (entity, span, target)
    spans: dict[str, list[int]] = field(default_factory=dict)  # entity -> [start, end] us

    def better_than(self, other: float | None) -> bool:
        new = self.value
        if new is None or math.isnan(new):
            return False
        if other is None or math.isnan(other):
            return True
        return new > other if self.greater_is_better else new < other


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


def _fmt(v: float | None) -> str:
    return "none" if v is None else f"{v:.6g}"


def _recorded(mv) -> tuple[str | None, float | None, str | None]:
    """(metric, value, fingerprint) a version was registered with."""
    tags = mv.tags or {}
    v = tags.get("cnnlstm.metric_value") or None
    return (
        tags.get("cnnlstm.metric"),
        (None if v is None else float(v)),
        tags.get("cnnlstm.eval_fingerprint") or None,
    )


def decide(
    ev: Evaluation | None,
    champ,
    reevaluate: Callable[[Any], float | None] | None,
) -> tuple[bool, str, float | None, str]:
    """(promote, why, champion value compared, what it was compared on)."""
    if champ is None:
        return True, "promoted: no champion before", None, "none"
    v = champ.version
    if ev is None or ev.value is None or math.isnan(ev.value):
        return (
            False,
            f"kept as challenger: no validation metric to compare with champion v{v} (set "
            "window.split.val_fraction or val_folds; or `cnnlstm promote` by hand)",
            None,
            "none",
        )
    metric, value, fp = _recorded(champ)
    if metric == ev.metric and fp is not None and fp == ev.fingerprint and value is not None:
        champ_value, on = value, "the same validation windows"
    else:
        if reevaluate is None:
            return (
                False,
                f"kept as challenger: champion v{v} was evaluated on other validation data "
                f"({metric} on {fp and fp[:12]}) and cannot be re-evaluated here",
                None,
                "different data, not re-evaluated",
            )
        champ_value = reevaluate(champ)
        on = "the champion re-evaluated on this run's validation readings"
        if champ_value is None:
            return (
                False,
                f"kept as challenger: champion v{v} could not be re-evaluated on this run's "
                f"validation readings ({ev.metric} not available for it)",
                None,
                "different data, re-evaluation failed",
            )
    if ev.better_than(champ_value):
        why = (
            f"promoted: validation {ev.metric} {_fmt(ev.value)} beats champion v{v} "
            f"({_fmt(champ_value)}) on {on}"
        )
        return True, why, champ_value, on
    why = (
        f"kept as challenger: validation {ev.metric} {_fmt(ev.value)} does not beat champion "
        f"v{v} ({_fmt(champ_value)}) on {on}"
    )
    return False, why, champ_value, on


def register(
    name: str,
    model_uri: str,
    run_id: str | None,
    evaluation: Evaluation | None,
    reevaluate: Callable[[Any], float | None] | None = None,
    uri: str | None = None,
) -> dict[str, Any]:
    """Register `model_uri` as a new version of `name` (alias challenger), record its
    evaluation, and move champion to it when it wins on validation data (see the module
    docstring). The version is created with the sha256 of its files as tags
    (`cnnlstm.model_trust.pins_for_registration`: hashed from the artifact store now, checked
    against the hashes pinned when the model was logged); every cnnlstm load checks the files
    against these tags. Returns the registration record."""
    import mlflow

    from cnnlstm.model_trust import WEIGHTS_TAG, pins_for_registration

    client = _client(uri)
    pins = pins_for_registration(model_uri, run_id, client, uri)
    mv = mlflow.register_model(model_uri, name, tags={"cnnlstm.run_id": run_id or ""} | pins)
    version = str(mv.version)
    ev = evaluation
    evaluated = {
        "cnnlstm.metric": "" if ev is None else ev.metric,
        "cnnlstm.metric_value": "" if ev is None or ev.value is None else repr(float(ev.value)),
        "cnnlstm.greater_is_better": "" if ev is None else str(ev.greater_is_better).lower(),
        "cnnlstm.eval_part": "none" if ev is None else "val",
        "cnnlstm.eval_fingerprint": "" if ev is None else (ev.fingerprint or ""),
    }
    for k, v in evaluated.items():
        client.set_model_version_tag(name, version, k, v)
    client.set_registered_model_alias(name, CHALLENGER, version)
    champ = alias_version(name, CHAMPION, uri)
    if champ is not None and str(champ.version) == version:
        champ = None
    promote, why, champ_value, on = decide(ev, champ, reevaluate)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    record = {
        "cnnlstm.compared_to": "none" if champ is None else str(champ.version),
        "cnnlstm.champion_value": "" if champ_value is None else repr(float(champ_value)),
        "cnnlstm.compared_on": on,
        "cnnlstm.decision": why,
    }
    for k, v in record.items():
        client.set_model_version_tag(name, version, k, v)
    if run_id:
        tags = {
            "registry.model": name,
            "registry.version": version,
            "registry.weights_sha256": pins[WEIGHTS_TAG],
            "registry.aliases": ",".join([CHALLENGER] + ([CHAMPION] if promote else [])),
        } | {k.replace("cnnlstm.", "registry."): v for k, v in (evaluated | record).items()}
        for k, v in tags.items():
            client.set_tag(run_id, k, v)
    return {
        "name": name,
        "version": version,
        "champion": promote,
        "decision": why,
        "metric": None if ev is None else ev.metric,
        "value": None if ev is None else ev.value,
        "champion_value": champ_value,
        "compared_on": on,
        "weights_sha256": pins[WEIGHTS_TAG],
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
                "weights_sha256": tags.get("cnnlstm.weights_sha256"),  # None: not pinned
                "source": mv.source,
            }
        )
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def describe_version(name: str, version: str, description: str, uri: str | None = None) -> None:
    """Set the model version's description (the model card, `cnnlstm.model_card`)."""
    _client(uri).update_model_version(name, str(version), description=description)


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


def reregister(name: str, version: str, uri: str | None = None) -> dict[str, Any]:
    """Re-log the weights of a version registered without a pin (before cnnlstm pinned hashes;
    such versions were logged as "models from code" with a copy of the package) in today's
    format, and register them as a new, pinned version of `name` that carries the old version's
    evaluation tags. No alias moves: promote the new version by hand (`cnnlstm promote`).

    Trust on first use: only the old version's safetensors weights are read (their own checksum
    and format are checked; no code from the artifact runs), and whoever runs this vouches that
    the artifact store was not modified since the model was trained. Returns a record."""
    import tempfile
    from pathlib import Path

    import mlflow
    from mlflow.exceptions import MlflowException

    from cnnlstm.checkpoint import atomic_write_bytes, read_model_bytes
    from cnnlstm.mlflow_tracker import log_model, use_tracking
    from cnnlstm.model_trust import WEIGHTS_TAG, fetch_verified, pins_for_registration

    client = _client(uri)
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException as e:
        if _not_found(e):
            raise RegistryError(f"model {name!r} has no version {version}") from None
        raise
    old_tags = mv.tags or {}
    if old_tags.get(WEIGHTS_TAG):
        raise RegistryError(
            f"model {name!r} v{version} is pinned already (sha256 {old_tags[WEIGHTS_TAG]}): "
            "nothing to re-register"
        )
    if uri:
        use_tracking(uri=uri)
    src = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory(prefix="cnnlstm-reregister-") as d:
        _, raw, rec = fetch_verified(src, Path(d) / "old", uri, allow=True)
        read_model_bytes(raw, src)  # format and the weights' own checksum, before logging
        weights = Path(d) / "new" / "model.safetensors"
        atomic_write_bytes(weights, raw)
        experiment = client.get_run(mv.run_id).info.experiment_id if mv.run_id else None
        tags = {
            "cnnlstm.reregistered_from": src,
            "cnnlstm.reregistered_weights_sha256": rec.weights_sha256,
        }
        with mlflow.start_run(
            experiment_id=experiment, run_name=f"reregister-{name}-v{version}", tags=tags
        ) as run:
            info = log_model(weights)
    evaluation = ("metric", "metric_value", "greater_is_better", "eval_part", "eval_fingerprint")
    carried = {
        f"cnnlstm.{k}": old_tags[f"cnnlstm.{k}"] for k in evaluation if f"cnnlstm.{k}" in old_tags
    }
    decision = {"cnnlstm.decision": f"re-registered from {src} (weights only); no alias moved"}
    pins = pins_for_registration(info.model_uri, run.info.run_id, client, uri)
    new = mlflow.register_model(
        info.model_uri,
        name,
        tags=carried | tags | decision | {"cnnlstm.run_id": run.info.run_id} | pins,
    )
    return {
        "name": name,
        "from_version": str(version),
        "version": str(new.version),
        "run_id": run.info.run_id,
        "weights_sha256": pins[WEIGHTS_TAG],
    }
