"""Files of named arrays (MATLAB .mat, NumPy .npz) as rows: which variables become columns.

Each numeric variable is one of: a vector (N, N x 1 or 1 x N) -> one column named as the
variable; an N x K array (1 < K <= `MAX_WIDTH`) -> columns ``name_0 .. name_{K-1}``; a scalar
(one value) -> a constant column. N is the most common length among the vectors (among the
N x K arrays' row counts when there are no vectors; a tie goes to the longer). A vector or array
of another length, an array of more dimensions or columns, an empty one and anything not
numeric (text, structs, cells, objects, complex numbers) is left out, and the file's notes say
which and why. Sizes are checked from the headers, before anything is decoded: more than
lake.max_rows_per_file rows or more than lake.max_file_bytes of decoded values reject the file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from cnnlstm.config import DataConfig
from cnnlstm.formats.base import (
    MAX_NAMES,
    ROW,
    FileRejected,
    check_columns,
    clip,
    clip_names,
    rename_columns,
)

MAX_WIDTH = 64  # an N x K array with more columns than this is left out (transposed?)
NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats


@dataclass
class Var:
    """A variable as its header describes it (nothing decoded yet)."""

    name: str
    shape: tuple[int, ...]
    itemsize: int = 8
    skip: str | None = None  # why the format leaves it out (a struct, text, an object array)


@dataclass
class Pick:
    var: Var
    role: str  # vector | matrix | scalar


def _shape_role(shape: tuple[int, ...]) -> tuple[str, int, int] | str:
    """(role, rows, columns) of a numeric array's shape, or why it is left out."""
    if any(d == 0 for d in shape):
        return f"empty ({'x'.join(map(str, shape))})"
    dims = [d for d in shape if d != 1]
    if not dims:
        return ("scalar", 1, 1)
    if len(dims) == 1:
        return ("vector", dims[0], 1)
    if len(shape) == 2:
        n, k = shape
        if k > MAX_WIDTH:
            return (
                f"{n} x {k} array: more than {MAX_WIDTH} columns (is it transposed? rows must "
                "be samples)"
            )
        return ("matrix", n, k)
    return f"{len(shape)}-D array ({'x'.join(map(str, shape))})"


def plan(
    variables: list[Var], max_bytes: int, max_rows: int, notes: list[str] | None, what: str
) -> tuple[int, list[Pick]]:
    """The row count N and the variables that become columns, in file order. Notes the ones
    left out; rejects the file when none is left or the sizes are over the caps."""
    left_out: list[tuple[str, str]] = []
    shaped: list[tuple[Var, str, int, int]] = []
    for v in variables:
        if v.skip:
            left_out.append((v.name, v.skip))
            continue
        r = _shape_role(v.shape)
        if isinstance(r, str):
            left_out.append((v.name, r))
        else:
            shaped.append((v, *r))
    lengths = Counter(n for _, role, n, _ in shaped if role == "vector")
    if not lengths:
        lengths = Counter(n for _, role, n, _ in shaped if role == "matrix")
    if not lengths:
        _note(left_out, notes)
        singles = [v.name for v, role, _, _ in shaped if role == "scalar"]
        held = f"; single values: {clip_names(singles)}" if singles else ""
        held += f"; left out: {_listed(left_out)}" if left_out else ""
        raise FileRejected(f"no numeric vector or N x K array among the {what}s of the file{held}")
    n = max(lengths, key=lambda k: (lengths[k], k))
    picks: list[Pick] = []
    for v, role, rows, _ in shaped:
        if role != "scalar" and rows != n:
            left_out.append((v.name, f"{rows} rows, the file's columns have {n}"))
        else:
            picks.append(Pick(v, role))
    order = {v.name: i for i, v in enumerate(variables)}
    left_out.sort(key=lambda x: order[x[0]])  # in file order
    _note(left_out, notes)
    if n > max_rows:
        raise FileRejected(
            f"the file's {what}s have {n} rows, over lake.max_rows_per_file={max_rows}"
        )
    total = sum(
        (n if p.role == "scalar" else int(np.prod(p.var.shape))) * p.var.itemsize for p in picks
    )
    if total > max_bytes:
        raise FileRejected(
            f"the {what}s would decode to {total} bytes, over the cap lake.max_file_bytes="
            f"{max_bytes}"
        )
    return n, picks


def _listed(items: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{clip(n)!r} ({why})" for n, why in items[:MAX_NAMES])
    more = f"; and {len(items) - MAX_NAMES} more" if len(items) > MAX_NAMES else ""
    return shown + more


def _note(left_out: list[tuple[str, str]], notes: list[str] | None) -> None:
    if left_out and notes is not None:
        notes.append(f"left out: {_listed(left_out)}")


def columns(
    n: int,
    picks: list[Pick],
    load: Callable[[Var], np.ndarray],
    notes: list[str] | None,
    what: str,
) -> list[tuple[str, np.ndarray]]:
    """Decode the picked variables into named 1-D columns of ``n`` rows (file order). A value
    type found only now (complex numbers) leaves the variable out with a note."""
    out: list[tuple[str, np.ndarray]] = []
    late: list[tuple[str, str]] = []
    arrays = 0  # vectors and N x K arrays read (scalars alone give no rows)
    for p in picks:
        a = load(p.var)
        if a.dtype.kind not in NUMERIC_KINDS:
            late.append((p.var.name, f"{a.dtype} values, not real numbers"))
            continue
        a = native(a)
        if p.role == "scalar":
            out.append((p.var.name, np.full(n, a.reshape(-1)[0], dtype=a.dtype)))
            continue
        arrays += 1
        if p.role == "vector":
            out.append((p.var.name, a.reshape(-1)))
        else:
            out += [(f"{p.var.name}_{k}", a[:, k]) for k in range(a.shape[1])]
    _note(late, notes)
    if not arrays:
        raise FileRejected(f"no numeric {what} left to read: {_listed(late)}")
    return out


def native(a: np.ndarray) -> np.ndarray:
    """Native byte order, and float16 widened to float32 (polars has no float16)."""
    if a.dtype.kind == "f" and a.dtype.itemsize < 4:
        return a.astype(np.float32)
    if not a.dtype.isnative:
        return a.astype(a.dtype.newbyteorder("="))
    return a


def frame(
    cols: list[tuple[str, np.ndarray]], cfg: DataConfig, notes: list[str] | None
) -> pl.DataFrame:
    """Named columns -> the reader's frame: duplicate names rejected, data.rename applied, the
    config's columns checked, ``_row`` added (1-based, the array's row order)."""
    names = [c for c, _ in cols]
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise FileRejected(f"duplicate column names: {clip_names(dup)}")
    names = rename_columns(names, cfg, notes)
    check_columns(names, cfg)
    n = len(cols[0][1])
    series = [pl.Series(name, a) for name, (_, a) in zip(names, cols, strict=True)]
    return pl.DataFrame(series).with_columns(pl.Series(ROW, np.arange(1, n + 1), dtype=pl.Int64))
