"""What every format reader shares: the file-level rejection, the row-number column, the check
that a file has the columns the config needs, and `clip` for quoting file contents in reasons."""

from __future__ import annotations

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
