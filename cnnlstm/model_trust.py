"""What loading a model trusts: the files of a logged model are pinned by hash outside the
artifact store, and checked before anything is built from them (docs/mlflow.md, "Trust model").

- **Executed**: only the installed ``cnnlstm`` package. The pyfunc is logged with
  ``loader_module="cnnlstm.pyfunc_loader"`` (a module of the installed package) and the weights
  as data: no python file, no ``code/`` copy of the package, no pickle in the artifact.
- **Read**: the safetensors weights (tensors + the JSON metadata in their header) and, to find
  them, the ``MLmodel`` YAML (``yaml.safe_load``).
- **Pinned**: at log time the sha256 of every file of the logged model is written as tags of the
  run and of the MLflow logged model; at registration the files are hashed again, checked
  against those, and written as tags of the model version (`pin_tags`):
  ``cnnlstm.weights_sha256`` (the weights file: tensors and model metadata),
  ``cnnlstm.mlmodel_sha256`` and ``cnnlstm.files_sha256`` (JSON: relative path -> sha256 of
  every file). The trust anchor of a ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` URI is
  the registry (model-version tags); of a ``runs:/RUN/PATH`` URI the run's tags; of a
  ``models:/<model id>`` URI the logged model's tags. Other URIs (a path, ``s3://``) have none.
- **Verified** (`load_verified`, used by ``cnnlstm score`` and the champion re-evaluation):
  download into a fresh folder, hash, compare with the anchor's tags, parse the very bytes that
  were hashed. A mismatch (or a file that the pin does not list) raises `ModelTrustError` naming
  the URI, the file and both hashes; nothing is built. A model without a pin (registered before
  pins existed) is refused unless ``CNNLSTM_ALLOW_UNPINNED_MODELS=1`` (or ``allow_unpinned``);
  a mismatch is refused always.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger("cnnlstm.model_trust")

WEIGHTS_TAG = "cnnlstm.weights_sha256"
MLMODEL_TAG = "cnnlstm.mlmodel_sha256"
FILES_TAG = "cnnlstm.files_sha256"
MODEL_PATH_TAG = "cnnlstm.model_path"  # run tag: the artifact name the run's pins are for
PIN_TAGS = (WEIGHTS_TAG, MLMODEL_TAG, FILES_TAG)
LOADER_MODULE = "cnnlstm.pyfunc_loader"
ALLOW_UNPINNED_ENV = "CNNLSTM_ALLOW_UNPINNED_MODELS"
MLMODEL = "MLmodel"
# written by the MLflow client itself into a model folder it downloads from the registry (name
# and version of the URI it resolved); never read by cnnlstm's load path, so not pinned
CLIENT_FILES = frozenset({"registered_model_meta"})


class ModelTrustError(RuntimeError):
    """A model's files do not match their pin, or a model has no pin: nothing was loaded."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def allow_unpinned(flag: bool | None = None) -> bool:
    """The opt-out for models without a pin: the flag, else ``CNNLSTM_ALLOW_UNPINNED_MODELS``."""
    if flag is not None:
        return bool(flag)
    return os.environ.get(ALLOW_UNPINNED_ENV, "").strip().lower() in ("1", "true", "yes")


# --------------------------------------------------------------------------------------------
# the files of a model folder


def manifest(model_dir: str | Path) -> dict[str, str]:
    """Relative POSIX path -> sha256 of every file in a model folder (except `CLIENT_FILES` at
    its top). A symbolic link or other special file is an error: a model folder holds files."""
    root = Path(model_dir)
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            raise ModelTrustError(f"{rel} in the model folder is not a regular file")
        if p.is_file() and rel not in CLIENT_FILES:
            out[rel] = sha256_file(p)
    return out


def read_mlmodel(model_dir: str | Path) -> dict[str, Any]:
    """The MLmodel file as data (``yaml.safe_load``: no object construction)."""
    import yaml

    p = Path(model_dir) / MLMODEL
    if not p.is_file():
        raise ModelTrustError(f"no {MLMODEL} file in {model_dir}: not an MLflow model")
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, dict):
        raise ModelTrustError(f"{MLMODEL} in {model_dir} is not a mapping")
    return data


def _inside(rel: str) -> str:
    """A relative path that stays inside the model folder, or an error."""
    pp = PurePosixPath(str(rel))
    if pp.is_absolute() or ".." in pp.parts or not pp.parts:
        raise ModelTrustError(f"weights path {rel!r} in {MLMODEL} leaves the model folder")
    return pp.as_posix()


def pyfunc_conf(mlmodel: dict[str, Any]) -> dict[str, Any]:
    conf = (mlmodel.get("flavors") or {}).get("python_function")
    if not isinstance(conf, dict):
        raise ModelTrustError(f"{MLMODEL} has no python_function flavor: not a cnnlstm model")
    return conf


def is_code_free(mlmodel: dict[str, Any]) -> bool:
    """The pyfunc is loaded by cnnlstm's own loader module and ships no code."""
    conf = pyfunc_conf(mlmodel)
    return (
        conf.get("loader_module") == LOADER_MODULE
        and not conf.get("code")
        and not conf.get("model_code_path")
        and not conf.get("python_model")
    )


def weights_path(mlmodel: dict[str, Any]) -> str:
    """Where the safetensors weights are in the model folder: ``data`` of a model logged with
    `LOADER_MODULE`; the ``weights`` artifact of one logged by older cnnlstm versions as
    "models from code" (only its weights are read, its code is never run)."""
    conf = pyfunc_conf(mlmodel)
    if conf.get("loader_module") == LOADER_MODULE and conf.get("data"):
        return _inside(conf["data"])
    art = (conf.get("artifacts") or {}).get("weights")
    if isinstance(art, dict) and art.get("path"):
        return _inside(art["path"])
    raise ModelTrustError(f"{MLMODEL} names no cnnlstm weights file: not a cnnlstm model")


def pin_tags(files: dict[str, str], mlmodel: dict[str, Any]) -> dict[str, str]:
    """The tags that pin a logged model's files (for a run, a logged model, a model version)."""
    w = weights_path(mlmodel)
    if w not in files or MLMODEL not in files:
        raise ModelTrustError(f"the model folder lacks {w if w not in files else MLMODEL}")
    return {
        WEIGHTS_TAG: files[w],
        MLMODEL_TAG: files[MLMODEL],
        FILES_TAG: json.dumps(files, sort_keys=True, separators=(",", ":")),
    }


# --------------------------------------------------------------------------------------------
# anchors: where the expected hashes of a model URI are read


@dataclass
class Pins:
    """The hashes a model's files must have, and where they were read (the trust anchor)."""

    anchor: str  # e.g. "registry: model version hapt v6"
    weights_sha256: str | None = None
    mlmodel_sha256: str | None = None
    files: dict[str, str] | None = None
    note: str = ""  # why there is no pin, when there is none

    @property
    def pinned(self) -> bool:
        return bool(self.weights_sha256)

    @classmethod
    def from_tags(cls, tags: dict[str, str] | None, anchor: str) -> Pins:
        tags = tags or {}
        files = None
        if tags.get(FILES_TAG):
            try:
                files = json.loads(tags[FILES_TAG])
            except ValueError:
                raise ModelTrustError(f"{anchor}: tag {FILES_TAG} is not JSON") from None
            if not isinstance(files, dict):
                raise ModelTrustError(f"{anchor}: tag {FILES_TAG} is not a JSON object")
        return cls(
            anchor,
            tags.get(WEIGHTS_TAG) or None,
            tags.get(MLMODEL_TAG) or None,
            files,
        )


def _client(tracking_uri: str | None = None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@dataclass
class ModelRef:
    """What a model URI names: a registry version, a run's artifact, a logged model, or other."""

    kind: str  # "registry" | "run" | "logged" | "other"
    uri: str
    name: str = ""
    version: str = ""
    run_id: str = ""
    path: str = ""
    model_id: str = ""


def parse_model_uri(model_uri: str, client=None) -> ModelRef:
    """``models:/NAME/VERSION`` and ``models:/NAME@ALIAS`` (the alias resolved now, so that the
    version checked is the version loaded), ``runs:/RUN/PATH``, ``models:/<model id>``."""
    if model_uri.startswith("models:/"):
        rest = model_uri[len("models:/") :].strip("/")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = (client or _client()).get_model_version_by_alias(name, alias)
            v = str(mv.version)
            return ModelRef("registry", f"models:/{name}/{v}", name=name, version=v)
        if "/" in rest:
            name, version = rest.split("/", 1)
            return ModelRef("registry", f"models:/{name}/{version}", name=name, version=version)
        return ModelRef("logged", model_uri, model_id=rest)
    if model_uri.startswith("runs:/"):
        rest = model_uri[len("runs:/") :].strip("/")
        run_id, _, path = rest.partition("/")
        return ModelRef("run", model_uri, run_id=run_id, path=path.strip("/"))
    return ModelRef("other", model_uri)


def expected_pins(ref: ModelRef, client=None) -> Pins:
    """The pins of the anchor of `ref` (empty when it has none)."""
    client = client or _client()
    if ref.kind == "registry":
        mv = client.get_model_version(ref.name, ref.version)
        return Pins.from_tags(mv.tags, f"registry: model version {ref.name} v{ref.version}")
    if ref.kind == "run":
        tags = client.get_run(ref.run_id).data.tags
        anchor = f"run {ref.run_id} (tags)"
        pinned_path = tags.get(MODEL_PATH_TAG)
        if pinned_path is not None and pinned_path != ref.path:
            return Pins(anchor, note=f"the run pins its model {pinned_path!r}, not {ref.path!r}")
        return Pins.from_tags(tags, anchor)
    if ref.kind == "logged":
        lm = client.get_logged_model(ref.model_id)
        return Pins.from_tags(lm.tags, f"logged model {ref.model_id} (tags)")
    return Pins("none", note="a path or storage URI has no registry or run to pin it")


def unpinned_message(model_uri: str, pins: Pins) -> str:
    why = pins.note or f"{pins.anchor} has no tag {WEIGHTS_TAG}"
    return (
        f"refused to load {model_uri}: its files are not pinned by hash ({why}; models "
        "registered before cnnlstm pinned weights have no pin). Re-register it: "
        "`cnnlstm reregister -c CONFIG VERSION` re-logs its weights in today's format and "
        "registers them as a new, pinned version (you vouch that the artifact store was not "
        "modified since it was trained), or retrain it (`cnnlstm train`). To load it anyway, "
        f"reading only its safetensors weights and running no code from it, set "
        f"{ALLOW_UNPINNED_ENV}=1 (or pass --allow-unpinned)."
    )


def _pinned_weights_path(model_dir: Path, files: dict[str, str], pins: Pins) -> str | None:
    """Which file the pinned weights are: the pinned file list says it; otherwise the MLmodel,
    parsed only when it is the pinned one (or no MLmodel hash is pinned)."""
    named = [k for k, v in (pins.files or {}).items() if v == pins.weights_sha256 and k != MLMODEL]
    if len(named) == 1:
        return named[0]
    want = pins.mlmodel_sha256 or (pins.files or {}).get(MLMODEL)
    if MLMODEL in files and (want is None or files[MLMODEL] == want):
        return weights_path(read_mlmodel(model_dir))
    return None


def check_files(model_uri: str, model_dir: str | Path, pins: Pins) -> dict[str, str]:
    """Hash the files of a downloaded model folder and compare them with `pins` before anything
    in it is parsed (an MLmodel that does not match its pin is never read); returns the
    manifest. Raises `ModelTrustError` listing every file that differs, is missing or is not
    pinned, the weights first."""
    model_dir = Path(model_dir)
    files = manifest(model_dir)
    problems: list[str] = []
    expected: dict[str, str] = dict(pins.files or {})
    if pins.mlmodel_sha256:
        expected.setdefault(MLMODEL, pins.mlmodel_sha256)
    w = _pinned_weights_path(model_dir, files, pins) if pins.weights_sha256 else None
    if w is None:
        problems.append(f"cannot tell which file holds the weights pinned as {pins.weights_sha256}")
    else:
        expected.setdefault(w, pins.weights_sha256)
        if expected[w] != pins.weights_sha256:
            problems.append(
                f"{w}: {pins.anchor} pins it twice, with {pins.weights_sha256} "
                f"({WEIGHTS_TAG}) and {expected[w]} ({FILES_TAG})"
            )
    for rel in sorted(expected, key=lambda k: (k != w, k != MLMODEL, k)):
        want, got = expected[rel], files.get(rel)
        if got is None:
            problems.append(f"{rel}: missing (pinned sha256 {want})")
        elif got != want:
            problems.append(f"{rel}: sha256 {got}, but {pins.anchor} pins {want}")
    if pins.files is not None:
        for rel in sorted(set(files) - set(expected)):
            problems.append(f"{rel}: not a file of the pinned model (sha256 {files[rel]})")
    if problems:
        raise ModelTrustError(
            f"refused to load {model_uri}: its files do not match the hashes pinned in "
            f"{pins.anchor}: " + "; ".join(problems) + ". Nothing was loaded: whoever can "
            "write the artifact store may have changed the model."
        )
    return files


# --------------------------------------------------------------------------------------------
# the verified load path


@dataclass
class VerifiedModel:
    """What was checked: the URI loaded, the anchor, the weights' sha256, whether pinned."""

    uri: str
    anchor: str
    weights_sha256: str
    pinned: bool
    files: dict[str, str] = field(default_factory=dict)


def _download(model_uri: str, dst: str | Path, tracking_uri: str | None = None) -> Path:
    """The model folder copied into `dst` (never the artifact store's own folder: a local
    artifact repository hands its own path out when no destination is given)."""
    import mlflow.artifacts

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri,
            dst_path=str(dst),
            tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
    )


def fetch_verified(
    model_uri: str,
    dst: str | Path,
    tracking_uri: str | None = None,
    allow: bool | None = None,
) -> tuple[Path, bytes, VerifiedModel]:
    """Download `model_uri` into `dst`, verify it against its anchor; returns (model folder, the
    weights' bytes as hashed, the record). A mismatch always raises; no pin raises unless
    allowed (`allow_unpinned`). Nothing from the folder is executed or unpickled."""
    client = _client(tracking_uri)
    ref = parse_model_uri(model_uri, client)
    pins = expected_pins(ref, client)
    if not pins.pinned and not allow_unpinned(allow):
        raise ModelTrustError(unpinned_message(model_uri, pins))
    model_dir = _download(ref.uri, dst, tracking_uri)
    files = check_files(model_uri, model_dir, pins) if pins.pinned else manifest(model_dir)
    mlmodel = read_mlmodel(model_dir)
    rel = weights_path(mlmodel)
    raw = (model_dir / rel).read_bytes()
    digest = sha256_bytes(raw)
    if pins.pinned and digest != pins.weights_sha256:  # changed since it was hashed
        raise ModelTrustError(
            f"refused to load {model_uri}: {rel} has sha256 {digest}, but {pins.anchor} pins "
            f"{pins.weights_sha256}"
        )
    if pins.pinned and not is_code_free(mlmodel):
        raise ModelTrustError(
            f"refused to load {model_uri}: its {MLMODEL} asks MLflow to run code from the "
            "artifact (a code path or a python model file); cnnlstm models are loaded by "
            f"{LOADER_MODULE} only"
        )
    if not pins.pinned:
        log.warning(
            "%s is not pinned (%s): loading it because %s is set; only its weights %s "
            "(sha256 %s) are read, no code from it runs",
            model_uri,
            pins.note or f"{pins.anchor} has no {WEIGHTS_TAG}",
            ALLOW_UNPINNED_ENV,
            rel,
            digest,
        )
    return model_dir, raw, VerifiedModel(ref.uri, pins.anchor, digest, pins.pinned, files)


def load_verified(
    model_uri: str,
    device: str | None = None,
    tracking_uri: str | None = None,
    allow: bool | None = None,
):
    """(`cnnlstm.pyfunc.CnnLstmModel`, `VerifiedModel`) of a model URI, verified against its
    pin before the model is built (see the module docstring)."""
    from cnnlstm.pyfunc import CnnLstmModel

    with tempfile.TemporaryDirectory(prefix="cnnlstm-model-") as d:
        model_dir, raw, rec = fetch_verified(model_uri, d, tracking_uri, allow)
        rel = weights_path(read_mlmodel(model_dir))
    return CnnLstmModel.from_bytes(raw, device, f"{model_uri}/{rel}"), rec


# --------------------------------------------------------------------------------------------
# pinning: at log time and at registration


def _download_manifest(
    model_uri: str, tracking_uri: str | None = None
) -> tuple[dict[str, str], dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="cnnlstm-pin-") as d:
        model_dir = _download(model_uri, d, tracking_uri)
        return manifest(model_dir), read_mlmodel(model_dir)


def pin_logged_model(info, weights: str | Path, name: str) -> dict[str, str]:
    """After ``mlflow.pyfunc.log_model``: hash the files as the artifact store now holds them,
    check that the weights are the bytes of the local file that was logged and that the MLmodel
    runs no code from the artifact, and write the pins as tags of the logged model and of the
    run. Returns the tags."""
    files, mlmodel = _download_manifest(info.model_uri)
    tags = pin_tags(files, mlmodel)
    local = sha256_file(weights)
    if tags[WEIGHTS_TAG] != local:
        raise ModelTrustError(
            f"the logged weights of {info.model_uri} ({weights_path(mlmodel)}, sha256 "
            f"{tags[WEIGHTS_TAG]}) are not the file that was logged ({weights}, sha256 {local})"
        )
    if not is_code_free(mlmodel):
        raise ModelTrustError(f"{info.model_uri}: the logged {MLMODEL} would run code")
    client = _client()
    client.set_logged_model_tags(info.model_id, tags)
    if info.run_id:
        for k, v in (tags | {MODEL_PATH_TAG: name}).items():
            client.set_tag(info.run_id, k, v)
    return tags


def pins_for_registration(
    model_uri: str, run_id: str | None, client, tracking_uri: str | None = None
) -> dict[str, str]:
    """The model-version tags that pin `model_uri`: computed from the files the artifact store
    holds now, which must be the files pinned when the model was logged (logged-model or run
    tags) and must run no code. Raises `ModelTrustError` otherwise."""
    files, mlmodel = _download_manifest(model_uri, tracking_uri)
    if not is_code_free(mlmodel):
        raise ModelTrustError(
            f"{model_uri} is not registered: its {MLMODEL} asks MLflow to run code from the "
            f"artifact (models from code or a pickled model); log it with "
            "cnnlstm.pyfunc.log_pyfunc_model"
        )
    tags = pin_tags(files, mlmodel)
    ref = parse_model_uri(model_uri, client)
    if ref.kind in ("logged", "run"):
        logged = expected_pins(ref, client)
    else:
        tags_of_run = client.get_run(run_id).data.tags if run_id else {}
        logged = Pins.from_tags(tags_of_run, f"run {run_id} (tags)")
    if logged.pinned:
        before = logged.files or {}
        changed = sorted(k for k in set(files) | set(before) if files.get(k) != before.get(k))
        if logged.weights_sha256 != tags[WEIGHTS_TAG] or (logged.files is not None and changed):
            raise ModelTrustError(
                f"{model_uri} is not registered: its files changed after they were logged "
                f"({', '.join(changed) or 'the weights'} differ from the hashes in "
                f"{logged.anchor})"
            )
    return tags
