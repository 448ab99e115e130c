"""NumPy arrays: ``.npy`` (the magic bytes ``\\x93NUMPY``) and ``.npz`` (a zip of .npy members).

Nothing is unpickled, ever: headers are parsed with numpy's header readers (a literal, no code)
and the values are taken from the bytes with ``np.frombuffer``; an object array (which only
pickle could load) is refused from its header. Sizes are checked from the headers before any
value is decoded (lake.max_rows_per_file, lake.max_file_bytes).

.npy columns: a 1-D array is the column ``value``; a 2-D (N, K) array (K <= 64) the columns
``c0 .. c{K-1}``; a structured array (named fields) one column per field (numbers, booleans,
text, datetime64). .npz: each member array is a variable, as in a MATLAB file
(`formats.arrays`: vectors and N x K arrays of the common length N, scalars as constant columns,
everything else left out with a note).
"""

from __future__ import annotations

import io
import zipfile
from typing import IO, Any

import numpy as np
import polars as pl

from cnnlstm.config import DataConfig
from cnnlstm.formats import arrays
from cnnlstm.formats.arrays import MAX_WIDTH, Var
from cnnlstm.formats.base import FileRejected, clip

MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
FIELD_KINDS = arrays.NUMERIC_KINDS + "UM"  # structured fields: numbers, bools, text, datetimes


def matches(source: str, head: bytes) -> bool:
    return source.lower().endswith((".npy", ".npz")) or head.startswith(MAGIC)


def read(
    data: bytes, source: str, cfg: DataConfig, max_bytes: int, max_rows: int, notes=None
) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    if data.startswith(MAGIC):
        return read_npy(data, cfg, max_rows, notes), []
    if MAGIC.startswith(data):
        raise FileRejected(f"truncated .npy file: {len(data)} bytes, within the magic bytes")
    if source.lower().endswith(".npz") or data.startswith(ZIP_MAGIC):
        return read_npz(data, cfg, max_bytes, max_rows, notes), []
    raise FileRejected(
        f"not a NumPy .npy file: it does not start with the magic bytes \\x93NUMPY "
        f"(it starts {clip(repr(data[:16]), 40)})"
    )


def _header(f: IO[bytes], what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from an array header; the stream is left at the data."""
    fmt: Any = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            return fmt.read_array_header_1_0(f)
        if version == (2, 0):
            return fmt.read_array_header_2_0(f)
    except Exception as e:  # ValueError, EOFError, SyntaxError from a damaged header
        raise FileRejected(f"corrupt {what}: unreadable array header ({_why(e)})") from e
    if version == (3, 0):  # 2.0 with UTF-8 field names
        try:
            from numpy.lib import _format_impl as impl  # numpy >= 2

            return impl._read_array_header(f, version)
        except Exception as e:
            raise FileRejected(f"corrupt {what}: unreadable array header ({_why(e)})") from e
    raise FileRejected(f"{what}: unsupported .npy format version {version}")


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {clip(e, 200)}" if str(e) else type(e).__name__


def _values(
    buf: bytes, offset: int, shape: tuple[int, ...], fortran: bool, dtype: np.dtype, what: str
) -> np.ndarray:
    """The array from the bytes after its header: exactly as many bytes as the header says."""
    if dtype.hasobject:  # never reached for a refused object array; kept as a guard
        raise FileRejected(f"{what}: object array refused (loading it would run pickle)")
    count = int(np.prod(shape))
    need = count * dtype.itemsize
    have = len(buf) - offset
    if have < need:
        raise FileRejected(
            f"truncated {what}: the header declares {'x'.join(map(str, shape)) or 'one value'} "
            f"{dtype} values ({need} bytes), the file holds {have}"
        )
    if have > need:
        raise FileRejected(f"corrupt {what}: {have - need} bytes after the array's data")
    a = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
    return a.reshape(shape, order="F" if fortran else "C")


def _object_refusal(what: str) -> str:
    return (
        f"{what} holds Python objects (dtype object): refused, loading it would run pickle; "
        "save numbers (or text in a structured array) instead"
    )


def read_npy(data: bytes, cfg: DataConfig, max_rows: int, notes: list[str] | None) -> pl.DataFrame:
    f = io.BytesIO(data)
    shape, fortran, dtype = _header(f, ".npy file")
    if dtype.hasobject:
        raise FileRejected(_object_refusal("the .npy array"))
    shown = "x".join(map(str, shape)) or "0-D"
    n = shape[0] if shape else 0
    if dtype.names is not None:
        if len(shape) != 1:
            raise FileRejected(f".npy structured array of shape {shown}: one dimension expected")
    elif len(shape) not in (1, 2):
        raise FileRejected(f".npy array of shape {shown}: 1-D or 2-D (N x K) expected")
    elif dtype.kind not in arrays.NUMERIC_KINDS:
        raise FileRejected(f".npy array of {dtype} values: numbers expected")
    elif len(shape) == 2 and shape[1] > MAX_WIDTH:
        raise FileRejected(
            f".npy array of shape {shown}: more than {MAX_WIDTH} columns (is it transposed? rows "
            "must be samples)"
        )
    if n == 0 or (len(shape) == 2 and shape[1] == 0):
        raise FileRejected(f".npy array of shape {shown} holds no values")
    if n > max_rows:
        raise FileRejected(f".npy array has {n} rows, over lake.max_rows_per_file={max_rows}")
    a = _values(data, f.tell(), shape, fortran, dtype, ".npy file")
    if dtype.names is not None:
        cols, left_out = [], []
        for name in dtype.names:
            fd = dtype.fields[name][0]
            if fd.shape or fd.kind not in FIELD_KINDS:
                left_out.append(f"{clip(name)!r} ({fd})")
            elif fd.kind == "M":
                cols.append((name, a[name].astype("datetime64[us]")))
            elif fd.kind == "U":
                cols.append((name, a[name]))
            else:
                cols.append((name, arrays.native(a[name])))
        if left_out and notes is not None:
            notes.append(f"structured fields left out: {', '.join(left_out)}")
        if not cols:
            raise FileRejected("no field of the structured .npy array holds numbers or text")
    elif len(shape) == 1:
        cols = [("value", arrays.native(a))]
    else:
        cols = [(f"c{k}", arrays.native(a[:, k])) for k in range(shape[1])]
    return arrays.frame(cols, cfg, notes)


def read_npz(
    data: bytes, cfg: DataConfig, max_bytes: int, max_rows: int, notes: list[str] | None
) -> pl.DataFrame:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        members = zf.infolist()
    except Exception as e:  # BadZipFile for a truncated or corrupt archive
        raise FileRejected(f"corrupt or truncated .npz (zip) file: {_why(e)}") from e
    with zf:
        variables: list[Var] = []
        for info in members:
            name = info.filename
            if info.is_dir() or not name.endswith(".npy"):
                variables.append(Var(name, (), skip="not an array (.npy) member"))
                continue
            what = f".npz member {clip(name)!r}"
            try:
                with zf.open(info) as f:
                    shape, _, dtype = _header(f, what)
            except FileRejected:
                raise
            except Exception as e:
                raise FileRejected(f"corrupt {what}: {_why(e)}") from e
            skip = None
            if dtype.hasobject:
                skip = "Python objects (dtype object): not loaded, that would run pickle"
            elif dtype.names is not None:
                skip = "a structured array (save its fields as separate arrays)"
            elif dtype.kind not in arrays.NUMERIC_KINDS:
                skip = f"{dtype} values, not real numbers"
            variables.append(Var(name[: -len(".npy")], shape, dtype.itemsize, skip))
        n, picks = arrays.plan(variables, max_bytes, max_rows, notes, "array")

        def load(v: Var) -> np.ndarray:
            what = f".npz member {clip(v.name + '.npy')!r}"
            try:
                with zf.open(v.name + ".npy") as f:
                    shape, fortran, dtype = _header(f, what)
                    need = int(np.prod(shape)) * dtype.itemsize
                    body = f.read(need + 1)  # one byte more: trailing data is corruption
            except FileRejected:
                raise
            except Exception as e:  # a bad CRC or a damaged deflate stream
                raise FileRejected(f"corrupt {what}: {_why(e)}") from e
            return _values(body, 0, shape, fortran, dtype, what)

        cols = arrays.columns(n, picks, load, notes, "array")
    return arrays.frame(cols, cfg, notes)
