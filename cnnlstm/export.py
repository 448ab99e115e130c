"""Export a scoring model's network for serving outside cnnlstm (`cnnlstm export`).

ONNX (``--format onnx``): the network with the task's per-window reduction (what
`cnnlstm.pyfunc.CnnLstmModel.forward` computes after normalisation), exported by torch's
TorchScript-based exporter (``dynamo=False``; with torch 2.13 it needs the ``onnx`` package, the
dynamo exporter also ``onnxscript``). `onnxruntime`, when installed, runs the file on padded
batches right after the export and compares it with torch. Both come with
``pip install 'cnnlstm[onnx]'``.

Inputs of the ONNX graph - a padded batch:

- ``x``: float32 ``(batch, C, length)``, the *normalised* windows, channels in the order of
  ``input_channels`` (raw channels, then derived ones), zero beyond each window's length;
- ``lengths``: int64 ``(batch,)``, the valid samples per window (archs that read padding
  masks; MiniRocket has none: padding counts as zeros there).

``batch`` is dynamic; ``length`` is dynamic for the CNN -> RNN archs (``serial``, ``subseq`` -
a multiple of ``model.n_subsequences`` - and ``parallel``) and fixed to the window size for
``minirocket``. The JSON beside the model (``<file>.json``) holds what a server needs to feed and
read it: the channels, the normaliser (``x = (raw - center) / scale`` per channel), the window
config, the classes and their names, the task and its fitted state, the output's meaning, where
the model came from (URI, version, the verified weights' sha256) and the check's result.

Archs that do not export say so (`ExportError`, naming the arch): ``frame`` (image sequences)
and, with torch's exporter, an RNN with ``pooling: last`` (its final hidden state of packed
sequences does not trace).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("onnx",)
SIDECAR_FORMAT = "cnnlstm-onnx/1"
DEFAULT_OPSET = 17
# archs whose graph takes any window length (``subseq``: a multiple of n_subsequences)
DYNAMIC_LENGTH = frozenset({"serial", "subseq", "parallel"})
# archs whose forward reads no padding mask: their graph has no ``lengths`` input
NO_LENGTHS = frozenset({"minirocket"})
# ONNX Runtime vs torch, as max |difference| / max(1, max |torch output|). MiniRocket's features
# count threshold crossings, so a rounding difference in one convolution output moves a feature
# by 1/length: its outputs agree to about 1e-3, the CNN -> RNN family's to about 1e-6
TOLERANCE = {"minirocket": 1e-2}
DEFAULT_TOLERANCE = 1e-4

OUTPUT_MEANING = {
    "classify": "class logits (batch, n_classes) in the order of `classes`; softmax gives the "
    "probabilities, argmax the predicted class",
    "regress": "the target (batch, 1) in the task's encoded scale (decode with task_state)",
    "forecast": "(batch, horizon, target channels[, quantiles]) in the task's encoded scale "
    "(decode with task_state)",
    "anomaly": "per-window anomaly output: the reconstruction error (batch,) for a "
    "reconstruction model (anomalous above task_state.threshold), else 2-class logits",
}


class ExportError(ValueError):
    """The model cannot be exported in this format (CLI exit 2)."""


class ExportCheckError(RuntimeError):
    """The exported file does not reproduce torch's outputs (CLI exit 1); nothing is kept."""


def _net(model, task, takes_lengths: bool):
    import torch

    class Exported(torch.nn.Module):
        """The network plus the task's per-window reduction, on normalised padded windows."""

        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x, lengths=None):
            ln = lengths if takes_lengths else None
            return task.reduce(self.net(x, ln).float(), x, ln).float()

    return Exported().eval()


def _batch(n_channels: int, size: int, lengths: list[int], seed: int):
    """A padded batch of random normalised windows: (x (B, C, L), lengths (B,))."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ln = torch.tensor(lengths, dtype=torch.int64)
    x = torch.randn(len(lengths), n_channels, size, generator=g)
    x = x * (torch.arange(size)[None, :] < ln[:, None])[:, None, :]
    return x, ln


def _padded_lengths(size: int, n: int, floor: int) -> list[int]:
    """n window lengths from full to short (the first is full), each at least ``floor``."""
    cuts = [size, size - 1, size // 2, size * 3 // 4, max(1, size // 8), size]
    return [max(floor, min(size, c)) for c in (cuts * n)[:n]]


def _check(path: Path, net, takes_lengths: bool, batches, arch: str) -> dict[str, Any]:
    """Run the ONNX file with ONNX Runtime on the padded batches and compare with torch."""
    import torch

    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime is not installed (pip install 'cnnlstm[onnx]')"}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    worst, scale, shapes = 0.0, 1.0, []
    for x, ln in batches:
        feed = {"x": x.numpy()}
        if "lengths" in names:
            feed["lengths"] = ln.numpy()
        got = sess.run(None, feed)[0]
        with torch.inference_mode():
            want = net(x, ln if takes_lengths else None).numpy()
        if got.shape != want.shape:
            raise ExportCheckError(
                f"ONNX Runtime gives shape {got.shape} where torch gives {want.shape} "
                f"(arch {arch}, input {tuple(x.shape)})"
            )
        worst = max(worst, float(np.abs(got - want).max()))
        scale = max(scale, float(np.abs(want).max()))
        shapes.append(list(x.shape))
    tol = TOLERANCE.get(arch, DEFAULT_TOLERANCE)
    rel = worst / scale
    if not np.isfinite(rel) or rel > tol:
        raise ExportCheckError(
            f"the exported {arch} model does not reproduce torch: max |ONNX Runtime - torch| = "
            f"{worst:.3g} (relative {rel:.3g} > {tol:g}) on padded batches {shapes}"
        )
    return {
        "onnxruntime": ort.__version__,
        "batches": shapes,
        "max_abs_diff": worst,
        "relative": rel,
        "tolerance": tol,
    }


def export_onnx(
    model,
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    source: dict[str, Any] | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Write ``model`` (a `cnnlstm.pyfunc.CnnLstmModel`, loaded through the verified path by the
    caller) to ``out`` as ONNX, and its metadata to ``<out>.json``; returns that metadata. With
    `onnxruntime` installed (and ``check``) the file is run on padded batches and compared with
    torch first; a mismatch raises `ExportCheckError` and writes nothing."""
    import importlib.util

    import torch

    if importlib.util.find_spec("onnx") is None:
        raise ExportError(
            "exporting to ONNX needs the onnx package (torch's exporter writes through it): "
            "pip install 'cnnlstm[onnx]'"
        )
    meta, task = model.meta, model.task
    arch = str(meta.model.get("arch", "serial"))
    if arch == "frame":
        raise ExportError("model.arch frame (image sequences) does not export to ONNX")
    rnn = meta.model.get("rnn") or {}
    if arch in ("serial", "subseq") and meta.model.get("pooling") == "last":
        raise ExportError(
            f"model.arch {arch} with model.pooling last does not export to ONNX: torch's exporter"
            " cannot trace the final hidden state of packed sequences (mean or attention pooling"
            " export)"
        )
    takes_lengths = arch not in NO_LENGTHS
    dynamic_length = arch in DYNAMIC_LENGTH
    size = int(meta.window["size"])
    n_ch = int(meta.n_channels)
    floor = 1
    if arch == "subseq":  # every sub-sequence keeps a sample
        floor = -(-size // int(meta.model.get("n_subsequences") or 1))
    net = _net(model.model.cpu().eval(), task, takes_lengths)
    x, ln = _batch(n_ch, size, _padded_lengths(size, 3, floor), seed=0)
    inputs = ["x", "lengths"] if takes_lengths else ["x"]
    axes: dict[str, dict[int, str]] = {"x": {0: "batch"}, "output": {0: "batch"}}
    if dynamic_length:
        axes["x"][2] = "length"
    if takes_lengths:
        axes["lengths"] = {0: "batch"}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        path = Path(tmp) / out.name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings on shape checks, deprecations
                torch.onnx.export(
                    net,
                    (x, ln) if takes_lengths else (x,),
                    str(path),
                    dynamo=False,
                    input_names=inputs,
                    output_names=["output"],
                    dynamic_axes=axes,
                    opset_version=opset,
                )
        except Exception as e:  # the exporter's errors are many and deep
            raise ExportError(
                f"model.arch {arch} ({rnn.get('cell', '')} pooling {meta.model.get('pooling')}) "
                f"does not export to ONNX with torch {torch.__version__}: "
                f"{type(e).__name__}: {e}"
            ) from e
        result = {"skipped": "check=False"}
        if check:
            batches = [
                _batch(n_ch, size, _padded_lengths(size, 5, floor), seed=1),
                _batch(n_ch, size, [size, size], seed=2),
            ]
            if dynamic_length:
                batches.append(_batch(n_ch, 2 * size, [2 * size, size + 1], seed=3))
            result = _check(path, net, takes_lengths, batches, arch)
        with torch.inference_mode():
            probe = net(x, ln if takes_lengths else None)
        rec = {
            "format": SIDECAR_FORMAT,
            "file": out.name,
            "onnx_opset": opset,
            "exported_at": datetime.now(UTC).isoformat(),
            "torch": torch.__version__,
            "source": source or {},
            "arch": arch,
            "inputs": [
                {
                    "name": "x",
                    "dtype": "float32",
                    "shape": ["batch", n_ch, "length" if dynamic_length else size],
                    "channels": list(meta.input_channels),
                    "what": "normalised windows: (raw - normalizer.center) / normalizer.scale "
                    "per channel, zero beyond each window's length",
                },
            ]
            + (
                [
                    {
                        "name": "lengths",
                        "dtype": "int64",
                        "shape": ["batch"],
                        "what": "valid samples per window (1..length)",
                    }
                ]
                if takes_lengths
                else []
            ),
            "outputs": [
                {
                    "name": "output",
                    "dtype": "float32",
                    "shape": ["batch", *probe.shape[1:]],
                    "what": OUTPUT_MEANING.get(meta.kind, "the task's per-window outputs"),
                }
            ],
            "channels": list(meta.channels),
            "input_channels": list(meta.input_channels),
            "window": dict(meta.window),
            "normalizer": {
                "center": list(meta.normalizer["center"]),
                "scale": list(meta.normalizer["scale"]),
            },
            "classes": list(meta.classes),
            "class_names": list(meta.class_names),
            "target_channels": list(meta.target_channels),
            "task": dict(meta.task),
            "task_state": dict(meta.task_state),
            "check": result,
        }
        side = Path(tmp) / f"{out.name}.json"
        side.write_text(json.dumps(rec, indent=1, default=str) + "\n")
        os.replace(path, out)  # the model first: a sidecar never describes a missing file
        os.replace(side, out.parent / f"{out.name}.json")
    return rec
