"""The child process of `cnnlstm.formats.mat`: scipy.io reads a .mat file here, apart from the
ingest process, because scipy's v4/v5 reader is not hardened against damaged files (an
out-of-range element type in a data tag crashes it with a segmentation fault, scipy PR 25349;
its docs say it is not meant for untrusted input). A crash here rejects one file instead of
killing the ingest.

Run as a script (``python -I _mat_child.py``: it imports nothing of cnnlstm). Protocol on
stdin/stdout:

1. in: 8 bytes little-endian length, then the file's bytes.
2. out: a JSON line ``{"vars": [[name, shape, class], ...]}`` (scipy.io.whosmat) or
   ``{"error": "..."}``.
3. in: a JSON line, the list of variable names to decode (the parent's plan).
4. out: per variable a JSON line ``{"name", "dtype", "shape"}`` then its values (C order,
   ``dtype.itemsize * prod(shape)`` bytes); then ``{"end": true}`` (or ``{"error": ...}``).
"""

import io
import json
import struct
import sys


def _send(out, obj) -> None:
    out.write(json.dumps(obj).encode() + b"\n")
    out.flush()


def _why(e: BaseException) -> str:
    text = str(e)[:200]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def main() -> int:
    import warnings

    import numpy as np
    import scipy.io

    warnings.simplefilter("ignore")
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    (n,) = struct.unpack("<Q", inp.read(8))
    data = inp.read(n)
    try:
        listed = scipy.io.whosmat(io.BytesIO(data))
        _send(out, {"vars": [[name, list(shape), cls] for name, shape, cls in listed]})
    except Exception as e:  # scipy raises many types for a corrupt or truncated file
        _send(out, {"error": _why(e)})
        return 0
    names = json.loads(inp.readline() or b"[]")
    if not names:
        _send(out, {"end": True})
        return 0
    try:
        loaded = scipy.io.loadmat(
            io.BytesIO(data), variable_names=names, squeeze_me=False, mat_dtype=False
        )
        arrays = []
        for name in names:
            a = loaded.get(name)
            if not isinstance(a, np.ndarray) or a.dtype.hasobject:
                raise ValueError(f"variable {name!r} could not be read as an array")
            arrays.append((name, np.ascontiguousarray(a)))
    except Exception as e:
        _send(out, {"error": _why(e)})
        return 0
    for name, a in arrays:
        _send(out, {"name": name, "dtype": a.dtype.str, "shape": list(a.shape)})
        out.write(a.tobytes())
    _send(out, {"end": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
