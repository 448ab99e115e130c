"""The one module that knows the checkpoint formats. Nothing here unpickles.

- Model artifact (``model.safetensors``): the weights as safetensors, plus the typed, versioned
  metadata (`cnnlstm.artifact.ModelArtifact`: task and its fitted state, model and window
  config, channels, normalisation statistics, label map) as JSON in the safetensors header, and
  a SHA-256 over metadata and tensor bytes. ``load_model`` rebuilds the model from it; an
  artifact of another format version is refused with a clear error.
- Training state (``last.ckpt``): model/optimizer/scheduler state dicts, RNG states, epoch, early
  stopping state. Serialised with ``torch.save``; read back with
  ``torch.load(f, weights_only=True)`` (plain containers and tensors only), behind an 8-byte
  magic and a SHA-256.

Both are written atomically: a temp file beside the target, fsync, ``os.replace``, fsync of the
folder. A crash (even kill -9) mid-write leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from cnnlstm.artifact import ARTIFACT_FORMAT, ModelArtifact

STATE_MAGIC = b"CNLSTM01"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupted or of another format."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


# --------------------------------------------------------------------------------------------
# training state


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, STATE_MAGIC + hashlib.sha256(payload).digest() + payload)


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    raw = path.read_bytes()
    if raw[:8] != STATE_MAGIC:
        raise CheckpointError(f"{path} is not a cnnlstm training checkpoint")
    digest, payload = raw[8:40], raw[40:]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupted)")
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------------------------
# model artifact


def _digest(meta_json: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(meta_json.encode())
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_model(path: str | Path, model: torch.nn.Module, meta: ModelArtifact) -> None:
    """Weights as safetensors with the typed metadata (`cnnlstm.artifact.ModelArtifact`) and a
    SHA-256 over both in the header; written atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta_json = meta.model_dump_json()
    header = {"cnnlstm": meta_json, "sha256": _digest(meta_json, tensors)}
    atomic_write_bytes(path, st_save(tensors, metadata=header))


def read_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelArtifact]:
    """Tensors and metadata of a model artifact, checksum and format verified."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no model file at {path}")
    return read_model_bytes(path.read_bytes(), path)


def read_model_bytes(
    raw: bytes, path: str | Path = "<model bytes>"
) -> tuple[dict[str, torch.Tensor], ModelArtifact]:
    """`read_model_file` of bytes already read (so that the bytes whose hash was checked are the
    bytes parsed; `path` only names them in errors). Nothing is unpickled: safetensors + JSON."""
    from pydantic import ValidationError

    try:
        tensors = st_load(raw)
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n])
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    md = header.get("__metadata__") or {}
    if "cnnlstm" not in md or "sha256" not in md:
        raise CheckpointError(f"{path}: safetensors file without cnnlstm metadata")
    if _digest(md["cnnlstm"], tensors) != md["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch (corrupted)")
    meta = json.loads(md["cnnlstm"])
    fmt = meta.get("format")
    if fmt != ARTIFACT_FORMAT:
        raise CheckpointError(
            f"{path}: model artifact format {fmt!r}, but this cnnlstm reads {ARTIFACT_FORMAT!r}"
            " only: retrain the model with this version (`cnnlstm train`), or score it with "
            "the cnnlstm version that wrote it"
        )
    try:
        return tensors, ModelArtifact.model_validate(meta)
    except ValidationError as e:
        raise CheckpointError(f"{path}: invalid model metadata: {e}") from None


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model from its artifact: returns (model in eval mode, ModelArtifact)."""
    return build_model(*read_model_file(path), device)


def build_model(
    tensors: dict[str, torch.Tensor], meta: ModelArtifact, device: str | torch.device = "cpu"
):
    """(model in eval mode, ModelArtifact) from the tensors and metadata of an artifact."""
    model = meta.make_task().build_model(meta.model_config_(), meta.n_channels, meta.n_outputs)
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval(), meta
