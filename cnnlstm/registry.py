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

One function moves aliases (`move_aliases`, used by `register` and `promote`): it also rewrites
the decision of every version that gains or loses an alias (``cnnlstm.decision``; what was
decided at registration stays in ``cnnlstm.registration_decision``) and the ``registry.aliases``
/ ``registry.decision`` tags of the versions' training runs, so that tags never contradict the
registry's aliases. Weights already registered (same ``cnnlstm.weights_sha256`` as a version of
the model) are not registered again: the record names that version instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"
DECISION_TAG = "cnnlstm.decision"  # the latest decision about this version's aliases
REGISTRATION_DECISION_TAG = "cnnlstm.registration_decision"  # what registration decided


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


def _versions(client, name: str) -> list[Any]:
    """Every version of `name` (all pages; [] when the model is not registered)."""
    out, token = [], None
    while True:
        page = client.search_model_versions(f"name='{name}'", page_token=token)
        out += list(page)
        token = getattr(page, "token", None)
        if not token:
            return out


def _aliases(client, name: str) -> dict[str, str]:
    """alias -> version of a registered model ({} when it is not registered)."""
    from mlflow.exceptions import MlflowException

    try:
        rm = client.get_registered_model(name)
    except MlflowException as e:
        if _not_found(e):
            return {}
        raise
    return {a: str(v) for a, v in (rm.aliases or {}).items()}


def same_weights(name: str, weights_sha256: str, uri: str | None = None, client=None):
    """The oldest version of `name` whose pinned weights hash is `weights_sha256`, or None."""
    from cnnlstm.model_trust import WEIGHTS_TAG

    client = client or _client(uri)
    same = [
        mv for mv in _versions(client, name) if (mv.tags or {}).get(WEIGHTS_TAG) == weights_sha256
    ]
    return min(same, key=lambda mv: int(mv.version)) if same else None


def _create_version(client, name: str, model_uri: str, run_id: str | None, tags: dict[str, str]):
    """`mlflow.register_model` without its prints on stderr: the registered model (if new),
    then the version (a ``models:/<model_id>`` URI keeps its logged model's id)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    rest = model_uri[len("models:/") :] if model_uri.startswith("models:/") else ""
    model_id = rest if rest and "/" not in rest and "@" not in rest else None
    return client.create_model_version(name, model_uri, run_id=run_id, tags=tags, model_id=model_id)


def move_aliases(
    name: str,
    moves: dict[str, str],
    why: str,
    cause: str,
    uri: str | None = None,
    client=None,
) -> dict[str, str | None]:
    """Point each alias of `moves` (alias -> version) at its version - the one place aliases
    move - and keep the tags in line with them: the version that gains an alias gets ``why`` as
    its decision; a version that loses one gets "<alias> moved to v<N> (<cause>)" followed by
    its registration decision; every version's training run gets ``registry.aliases`` (its
    aliases now) and ``registry.decision`` (its version's decision). Returns the version each
    alias pointed at before (None: nowhere)."""
    from mlflow.exceptions import MlflowException

    client = client or _client(uri)
    before = _aliases(client, name)
    for alias, version in moves.items():
        client.set_registered_model_alias(name, alias, str(version))
    after = before | {a: str(v) for a, v in moves.items()}
    versions = {str(mv.version): mv for mv in _versions(client, name)}
    decisions: dict[str, str] = {str(v): why for v in moves.values()}
    lost: dict[str, list[str]] = {}
    for alias, old in before.items():
        if old != after.get(alias) and old not in decisions:
            lost.setdefault(old, []).append(alias)
    for old, aliases in lost.items():
        mv = versions.get(old)
        if mv is None:
            continue
        tags = mv.tags or {}
        at_reg = tags.get(REGISTRATION_DECISION_TAG) or tags.get(DECISION_TAG) or ""
        moved = "; ".join(f"{a} moved to v{after[a]}" for a in sorted(aliases))
        decisions[old] = f"{moved} ({cause})" + (f"; at registration: {at_reg}" if at_reg else "")
    for version, text in decisions.items():
        mv = versions.get(version)
        if mv is None:
            continue
        tags = mv.tags or {}
        if REGISTRATION_DECISION_TAG not in tags and tags.get(DECISION_TAG):
            client.set_model_version_tag(
                name, version, REGISTRATION_DECISION_TAG, tags[DECISION_TAG]
            )
        client.set_model_version_tag(name, version, DECISION_TAG, text)
    by_version: dict[str, list[str]] = {}
    for alias, version in after.items():
        by_version.setdefault(version, []).append(alias)
    for version, mv in versions.items():  # the runs say what the registry says
        if not mv.run_id:
            continue
        want = {"registry.aliases": ",".join(sorted(by_version.get(version, [])))}
        decision = decisions.get(version, (mv.tags or {}).get(DECISION_TAG))
        if decision is not None:
            want["registry.decision"] = decision
        try:
            have = client.get_run(mv.run_id).data.tags
        except MlflowException:  # a deleted run: nothing to keep in line
            continue
        if have.get("registry.version") not in (None, version):
            continue  # the run names another version (weights registered before)
        for k, v in want.items():
            if have.get(k) != v:
                client.set_tag(mv.run_id, k, v)
    return {a: before.get(a) for a in moves}


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
    against these tags. Weights that a version of `name` already has are not registered again:
    the record (``registered: False``) names that version and no alias moves. Returns the
    registration record."""
    from cnnlstm.model_trust import WEIGHTS_TAG, pins_for_registration

    client = _client(uri)
    pins = pins_for_registration(model_uri, run_id, client, uri)
    existing = same_weights(name, pins[WEIGHTS_TAG], client=client)
    if existing is not None:
        return _already_registered(client, name, existing, run_id, pins[WEIGHTS_TAG], evaluation)
    mv = _create_version(client, name, model_uri, run_id, {"cnnlstm.run_id": run_id or ""} | pins)
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
    champ = alias_version(name, CHAMPION, uri)
    promote, why, champ_value, on = decide(ev, champ, reevaluate)
    record = {
        "cnnlstm.compared_to": "none" if champ is None else str(champ.version),
        "cnnlstm.champion_value": "" if champ_value is None else repr(float(champ_value)),
        "cnnlstm.compared_on": on,
        REGISTRATION_DECISION_TAG: why,
    }
    for k, v in record.items():
        client.set_model_version_tag(name, version, k, v)
    if run_id:
        tags = {
            "registry.model": name,
            "registry.version": version,
            "registry.weights_sha256": pins[WEIGHTS_TAG],
        } | {
            k.replace("cnnlstm.", "registry."): v
            for k, v in (evaluated | record).items()
            if k != REGISTRATION_DECISION_TAG
        }
        for k, v in tags.items():
            client.set_tag(run_id, k, v)
    moves = {CHALLENGER: version} | ({CHAMPION: version} if promote else {})
    cause = f"v{version} registered" + (" and promoted" if promote else "")
    move_aliases(name, moves, why, cause, client=client)
    return {
        "name": name,
        "version": version,
        "registered": True,
        "champion": promote,
        "aliases": sorted(moves),
        "decision": why,
        "metric": None if ev is None else ev.metric,
        "value": None if ev is None else ev.value,
        "champion_value": champ_value,
        "compared_on": on,
        "weights_sha256": pins[WEIGHTS_TAG],
    }


def _already_registered(client, name, mv, run_id, sha, ev) -> dict[str, Any]:
    version = str(mv.version)
    aliases = sorted(a for a, v in _aliases(client, name).items() if v == version)
    why = (
        f"not registered again: these weights (sha256 {sha[:12]}) are v{version}'s; no alias moved"
    )
    if run_id:
        for k, v in {
            "registry.model": name,
            "registry.version": version,
            "registry.weights_sha256": sha,
            "registry.registered": "false",
            "registry.decision": why,
        }.items():
            client.set_tag(run_id, k, v)
    return {
        "name": name,
        "version": version,
        "registered": False,
        "champion": CHAMPION in aliases,
        "aliases": aliases,
        "decision": why,
        "metric": None if ev is None else ev.metric,
        "value": None if ev is None else ev.value,
        "champion_value": None,
        "compared_on": "none",
        "weights_sha256": sha,
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
    for mv in _versions(client, name):
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
                "decision": tags.get(DECISION_TAG),
                "registration_decision": tags.get(REGISTRATION_DECISION_TAG)
                or tags.get(DECISION_TAG),
                "weights_sha256": tags.get("cnnlstm.weights_sha256"),  # None: not pinned
                "source": mv.source,
            }
        )
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def describe_version(name: str, version: str, description: str, uri: str | None = None) -> None:
    """Set the model version's description (the model card, `cnnlstm.model_card`)."""
    _client(uri).update_model_version(name, str(version), description=description)


def promote(name: str, version: str, alias: str = CHAMPION, uri: str | None = None) -> str | None:
    """Point `alias` at `version` by hand; returns the version it pointed at before. The
    decision tags of both versions and the tags of their runs follow (`move_aliases`)."""
    return promote_record(name, version, alias, uri)["before"]


def promote_record(
    name: str, version: str, alias: str = CHAMPION, uri: str | None = None
) -> dict[str, Any]:
    """`promote`, returning what changed: name, alias, version, before (the version the alias
    pointed at, or None), decision (the promoted version's decision tag now)."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    version = str(version)
    try:
        mv = client.get_model_version(name, version)
    except MlflowException as e:
        if _not_found(e):
            raise RegistryError(f"model {name!r} has no version {version}") from None
        raise
    before = _aliases(client, name).get(alias)
    if before == version:
        decision = (mv.tags or {}).get(DECISION_TAG, "")
        return {
            "name": name,
            "alias": alias,
            "version": version,
            "before": before,
            "decision": decision,
            "changed": False,
        }
    at_reg = (mv.tags or {}).get(REGISTRATION_DECISION_TAG) or (mv.tags or {}).get(DECISION_TAG)
    why = f"{alias} by hand (cnnlstm promote)" + (f", was v{before}" if before else "")
    if at_reg:
        why += f"; at registration: {at_reg}"
    move_aliases(name, {alias: version}, why, "by hand", client=client)
    client.set_model_version_tag(name, version, f"cnnlstm.{alias}_by", "hand")
    return {
        "name": name,
        "alias": alias,
        "version": version,
        "before": before,
        "decision": why,
        "changed": True,
    }


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
    new = _create_version(
        client,
        name,
        info.model_uri,
        run.info.run_id,
        carried | tags | decision | {"cnnlstm.run_id": run.info.run_id} | pins,
    )
    return {
        "name": name,
        "from_version": str(version),
        "version": str(new.version),
        "run_id": run.info.run_id,
        "weights_sha256": pins[WEIGHTS_TAG],
    }
