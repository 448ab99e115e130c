"""What every format reader shares: the file-level rejection, the row-number column, the
renaming of source columns (data.rename), the check that a file has the columns the config
needs, and `clip` for quoting file contents in reasons."""

from __future__ import annotations

import re

from cnnlstm.config import DataConfig

ROW = "_row"  # 1-based data row number in the source file (header excluded)
CLIP = 80  # reasons quote at most this many characters of a field of the file
MAX_NAMES = 20  # and at most this many header names


class FileRejected(Exception):
    """A file-level problem: the whole file is rejected with this reason."""


def clip(text: object, n: int = CLIP) -> str:
    """``text`` cut to ``n`` characters (with a mark saying how much was cut): a reason names
    the offending field, it never copies a file's contents."""
    s = str(text)
    return s if len(s) <= n else f"{s[:n]}...(+{len(s) - n} chars)"


def clip_names(names: list[str]) -> str:
    """A header for a reason: each name clipped, at most `MAX_NAMES` of them."""
    shown = [clip(n) for n in names[:MAX_NAMES]]
    more = f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else ""
    return f"{shown}{more}"


def check_columns(names: list[str], cfg: DataConfig) -> None:
    missing = [c for c in cfg.required_source_columns() if c not in names]
    if not missing:
        return
    if len(names) == 1:
        for d in (";", "\t", "|", ","):
            if d != cfg.csv.delimiter and d in names[0]:
                raise FileRejected(
                    f"wrong delimiter: the header is one column {clip(names[0])!r}; it looks "
                    f"{d!r}-separated but data.csv.delimiter is {cfg.csv.delimiter!r}"
                )
    raise FileRejected(f"missing required columns {missing}; the file has {clip_names(names)}")


def rename_columns(names: list[str], cfg: DataConfig, notes: list[str] | None = None) -> list[str]:
    """``names`` after data.rename (each rule's ``re.sub`` in order, on every name). Two names
    that become one, or a name that becomes empty, reject the file naming them; the file's
    notes say which names changed."""
    rules = [(re.compile(r.pattern), r.to) for r in cfg.rename]
    if not rules:
        return names
    out = []
    for n in names:
        new = n
        for rx, to in rules:
            new = rx.sub(to, new)
        if not new:
            raise FileRejected(f"data.rename turns the column {clip(n)!r} into an empty name")
        out.append(new)
    first: dict[str, str] = {}
    for old, new in zip(names, out, strict=True):
        if new in first:
            raise FileRejected(
                f"data.rename gives two columns the name {clip(new)!r}: {clip(first[new])!r} "
                f"and {clip(old)!r}"
            )
        first[new] = old
    changed = [f"{clip(a)} -> {clip(b)}" for a, b in zip(names, out, strict=True) if a != b]
    if changed and notes is not None:
        more = f" and {len(changed) - MAX_NAMES} more" if len(changed) > MAX_NAMES else ""
        notes.append(f"renamed by data.rename: {', '.join(changed[:MAX_NAMES])}{more}")
    return out


def named_fields(header: list[str], names: list[str] | None, what: str = "the file") -> list[str]:
    """``data.csv.names`` in place of the header's names (the same count), or the header."""
    if names is None:
        return header
    if len(names) != len(header):
        raise FileRejected(
            f"data.csv.names has {len(names)} names but {what} has {len(header)} fields "
            f"({clip_names(header)})"
        )
    return list(names)
