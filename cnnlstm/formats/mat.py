"""MATLAB .mat files, v4 and v5 (also v6/v7: the v5 layout, compressed or not), read with
scipy.io: the ``.mat`` suffix or the v5 header text ``MATLAB 5.0 MAT-file``. Variables become
columns as `formats.arrays` describes (a CWRU bearing file's ``X097_DE_time`` (N x 1) is a
column, ``X097RPM`` (1 x 1) a constant one); ``__header__`` and the like are not variables.
Variable headers are read first (``whosmat``) and only the variables kept are decoded.

scipy's reader runs in a child process (`formats._mat_child`): it is not hardened against
damaged files and crashes on some (a segmentation fault, scipy PR 25349); the crash then rejects
the file, not the ingest. The values come back as raw bytes.

v7.3 files are HDF5 (header text ``MATLAB 7.3 MAT-file``): read with h5py when it is installed,
otherwise rejected with the advice to save with ``-v7`` or convert."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import polars as pl

from cnnlstm.config import DataConfig
from cnnlstm.formats import arrays
from cnnlstm.formats.arrays import Var
from cnnlstm.formats.base import FileRejected, clip

CHILD = Path(__file__).with_name("_mat_child.py")
TIMEOUT_S = 600  # a reader still busy after this is stopped and the file rejected
V5_TEXT = b"MATLAB 5.0 MAT-file"
V73_TEXT = b"MATLAB 7.3 MAT-file"
ITEMSIZE = {"double": 8, "single": 4, "logical": 1}
ITEMSIZE |= {f"{s}int{b}": b // 8 for s in ("", "u") for b in (8, 16, 32, 64)}
NOT_NUMERIC = {
    "char": "text",
    "struct": "a struct",
    "cell": "a cell array",
    "sparse": "a sparse matrix",
    "object": "a MATLAB object",
    "function": "a function handle",
    "opaque": "an opaque MATLAB value",
}


def matches(source: str, head: bytes) -> bool:
    return source.lower().endswith(".mat") or head.startswith((V5_TEXT, V73_TEXT))


def read(
    data: bytes, source: str, cfg: DataConfig, max_bytes: int, max_rows: int, notes=None
) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    if data.startswith(V73_TEXT) or data[:8] == b"\x89HDF\r\n\x1a\n":
        return read_v73(data, cfg, max_bytes, max_rows, notes), []
    with _Child(data) as child:
        msg = child.message()
        variables = [
            Var(
                str(name),
                tuple(int(d) for d in shape),
                ITEMSIZE.get(cls, 8),
                NOT_NUMERIC.get(cls, None if cls in ITEMSIZE else f"MATLAB class {cls}"),
            )
            for name, shape, cls in msg["vars"]
        ]
        n, picks = arrays.plan(variables, max_bytes, max_rows, notes, "variable")
        loaded = child.load([p.var for p in picks])
    cols = arrays.columns(n, picks, lambda v: loaded[v.name], notes, "variable")
    return arrays.frame(cols, cfg, notes), []


class _Child:
    """scipy.io in a child process (`formats._mat_child`): a crash or a hang of the reader on a
    damaged file rejects the file; the values come back as raw bytes (nothing unpickled)."""

    def __init__(self, data: bytes):
        self.err = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
        )
        self.timer = threading.Timer(TIMEOUT_S, self.proc.kill)
        self.timer.start()
        self._write(struct.pack("<Q", len(data)) + data)

    def __enter__(self) -> _Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.err):
            with contextlib.suppress(OSError):
                f.close()  # type: ignore[union-attr]

    def _write(self, b: bytes) -> None:
        try:
            self.proc.stdin.write(b)  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            self._died()

    def message(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.endswith(b"\n"):
            self._died()
        msg = json.loads(line)
        if "error" in msg:
            raise FileRejected(f"corrupt or truncated MATLAB file: {clip(msg['error'], 300)}")
        return msg

    def load(self, wanted: list[Var]) -> dict[str, np.ndarray]:
        self._write(json.dumps([v.name for v in wanted]).encode() + b"\n")
        self.proc.stdin.close()  # type: ignore[union-attr]
        out: dict[str, np.ndarray] = {}
        for v in wanted:
            h = self.message()
            dtype = np.dtype(h["dtype"])
            shape = tuple(int(d) for d in h["shape"])
            if h["name"] != v.name or dtype.kind not in "biufc" or dtype.hasobject:
                raise FileRejected(
                    f"corrupt MATLAB file: variable {clip(v.name)!r} could not be read as numbers"
                )
            if shape != v.shape:
                raise FileRejected(
                    f"corrupt MATLAB file: variable {clip(v.name)!r} holds a "
                    f"{'x'.join(map(str, shape))} array, its header says "
                    f"{'x'.join(map(str, v.shape))}"
                )
            size = int(np.prod(shape)) * dtype.itemsize
            buf = self.proc.stdout.read(size)  # type: ignore[union-attr]
            if len(buf) != size:
                self._died()
            out[v.name] = np.frombuffer(buf, dtype=dtype).reshape(shape)
        if not self.message().get("end"):
            self._died()
        return out

    def _died(self) -> NoReturn:
        self.timer.cancel()
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        if rc < 0:
            sig = -rc
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            if sig == signal.SIGKILL:
                raise FileRejected(
                    f"MATLAB file not read: the reader was stopped after {TIMEOUT_S} s or killed "
                    "(out of memory?)"
                )
            raise FileRejected(
                f"corrupt MATLAB file: scipy's .mat reader crashed on it ({name}); it runs in a "
                "separate process, so only this file is rejected"
            )
        self.err.seek(0)
        tail = self.err.read()[-2000:].decode("utf-8", "replace").strip().splitlines()
        raise FileRejected(
            f"MATLAB file not read: the reader process exited with status {rc}"
            + (f": {clip(tail[-1], 300)}" if tail else "")
        )


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {clip(e, 200)}" if str(e) else type(e).__name__


def read_v73(
    data: bytes, cfg: DataConfig, max_bytes: int, max_rows: int, notes: list[str] | None
) -> pl.DataFrame:
    """A v7.3 (HDF5) file through h5py, when installed: the root group's numeric datasets are
    the variables (HDF5 stores MATLAB's column-major arrays transposed: they are turned back)."""
    try:
        import h5py  # type: ignore[import-not-found]
    except ImportError:
        raise FileRejected(
            "MATLAB v7.3 file (HDF5): not readable without the h5py package; save it with "
            "save(..., '-v7') in MATLAB, or convert it (e.g. to .npz or CSV)"
        ) from None
    try:
        f = h5py.File(io.BytesIO(data), "r")
    except Exception as e:
        raise FileRejected(f"corrupt or unreadable MATLAB v7.3 (HDF5) file: {_why(e)}") from e
    with f:
        variables = []
        for name, obj in f.items():
            if name.startswith("#"):  # #refs#, #subsystem#: MATLAB's internals
                continue
            cls = obj.attrs.get("MATLAB_class", b"")
            cls = cls.decode() if isinstance(cls, bytes) else str(cls)
            if not isinstance(obj, h5py.Dataset):
                variables.append(Var(name, (), skip="a struct or group"))
            elif obj.attrs.get("MATLAB_empty"):  # an empty array, stored as its dimensions
                variables.append(Var(name, (), skip="empty"))
            elif cls in NOT_NUMERIC or obj.dtype.kind not in arrays.NUMERIC_KINDS:
                variables.append(Var(name, (), skip=NOT_NUMERIC.get(cls, f"{obj.dtype} values")))
            else:
                variables.append(Var(name, tuple(reversed(obj.shape)), obj.dtype.itemsize))
        n, picks = arrays.plan(variables, max_bytes, max_rows, notes, "variable")
        try:
            cols = arrays.columns(
                n, picks, lambda v: np.asarray(f[v.name][()]).T.reshape(v.shape), notes, "variable"
            )
        except FileRejected:
            raise
        except Exception as e:
            raise FileRejected(f"corrupt or unreadable MATLAB v7.3 (HDF5) file: {_why(e)}") from e
    return arrays.frame(cols, cfg, notes)
