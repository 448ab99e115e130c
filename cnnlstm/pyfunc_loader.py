"""The pyfunc ``loader_module`` of cnnlstm models: ``mlflow.pyfunc.load_model`` (and ``mlflow
models serve`` / ``predict``) import this module from the *installed* package and call
``_load_pyfunc(data_path, model_config)``; nothing from the artifact is executed or unpickled.

Before building the model it checks the model folder against its pin (`cnnlstm.model_trust`)
when it can find the anchor:

- loaded by a registry URI (``models:/NAME/VERSION`` or ``@ALIAS``): MLflow's client writes the
  name and version it resolved into the folder (``registered_model_meta``); the model-version
  tags are the anchor. A mismatch is refused; a version without a pin is refused unless
  ``CNNLSTM_ALLOW_UNPINNED_MODELS=1``.
- otherwise, with a tracking URI set, the logged model named by the MLmodel's ``model_id``: its
  pins are checked when it has them (a mismatch is refused).
- otherwise (a folder loaded with no tracking store) only the weights' own checksum is checked,
  with a warning.

MLflow reads the MLmodel file before it imports this module, so this check cannot stop an
MLmodel edited to name another loader: only `cnnlstm.model_trust.fetch_verified` (``cnnlstm
score``, ``cnnlstm fetch-model``) verifies before MLflow reads anything (docs/mlflow.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("cnnlstm.pyfunc_loader")


class CnnLstmPyfunc:
    """What ``_load_pyfunc`` returns: MLflow calls ``predict(model_input, params)``;
    ``python_model`` is the `cnnlstm.pyfunc.CnnLstmModel` (``unwrap_python_model()``)."""

    def __init__(self, model) -> None:
        self.python_model = model

    def predict(self, model_input, params: dict[str, Any] | None = None):
        return self.python_model.predict(None, model_input, params)


def _model_dir(data_path: Path) -> Path | None:
    for d in (data_path.parent.parent, data_path.parent):
        if (d / "MLmodel").is_file():
            return d
    return None


def _registry_ref(model_dir: Path) -> tuple[str, str] | None:
    import yaml

    p = model_dir / "registered_model_meta"
    if not p.is_file():
        return None
    try:
        meta = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError:
        return None
    name, version = meta.get("model_name"), meta.get("model_version")
    return (str(name), str(version)) if name and version else None


def _tracking_store() -> bool:
    """A tracking store to ask: set explicitly, or MLflow's local default when it exists (never
    create one: MLflow's default ``sqlite:///mlflow.db`` would be made in the working folder)."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    if is_tracking_uri_set():
        return True
    uri = mlflow.get_tracking_uri()
    for prefix in ("sqlite:///", "file://"):
        if uri.startswith(prefix):
            return Path(uri[len(prefix) :]).exists()
    return False


def _anchor(model_dir: Path):
    """(URI for messages, Pins) to check this folder against; (None, why) when there is none;
    (None, None) while the model is being logged (MLflow loads it to check the input example
    before its pins exist)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from cnnlstm import model_trust as mt

    if not _tracking_store():
        return None, "no tracking store is set to look its pins up"
    reg = _registry_ref(model_dir)
    if reg is not None:
        ref = mt.ModelRef("registry", f"models:/{reg[0]}/{reg[1]}", name=reg[0], version=reg[1])
        return ref.uri, mt.expected_pins(ref)
    model_id = mt.read_mlmodel(model_dir).get("model_id")
    if not model_id:
        return None, "its MLmodel names no model id"
    try:
        lm = mlflow.MlflowClient().get_logged_model(str(model_id))
    except MlflowException as e:
        return None, f"the tracking store does not know model {model_id} ({e.error_code})"
    if str(getattr(lm.status, "name", lm.status)).upper().endswith("PENDING"):
        return None, None
    pins = mt.Pins.from_tags(lm.tags, f"logged model {model_id} (tags)")
    if not pins.pinned:
        return None, f"logged model {model_id} has no pin"
    return f"models:/{model_id}", pins


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> CnnLstmPyfunc:
    from cnnlstm import model_trust as mt
    from cnnlstm.pyfunc import CnnLstmModel

    path = Path(data_path)
    raw = path.read_bytes()  # the bytes checked are the bytes parsed
    model_dir = _model_dir(path)
    uri, pins = _anchor(model_dir) if model_dir is not None else (None, "no MLmodel beside it")
    if uri is not None:
        if not pins.pinned and not mt.allow_unpinned():
            raise mt.ModelTrustError(mt.unpinned_message(uri, pins))
        if pins.pinned:
            mt.check_files(uri, model_dir, pins)
            digest = mt.sha256_bytes(raw)
            if digest != pins.weights_sha256:
                raise mt.ModelTrustError(
                    f"refused to load {uri}: {path.name} has sha256 {digest}, but "
                    f"{pins.anchor} pins {pins.weights_sha256}"
                )
    elif pins is not None:
        log.warning(
            "%s: not checked against a pin (%s); only the weights' own checksum is checked",
            data_path,
            pins,
        )
    device = (model_config or {}).get("device")
    return CnnLstmPyfunc(CnnLstmModel.from_bytes(raw, device, str(path)))
