"""What every format reader shares: the file-level rejection, the row-number column and the
check that a file has the columns the config needs."""

from __future__ import annotations

from cnnlstm.config import DataConfig

ROW = "_row"  # 1-based data row number in the source file (header excluded)


class FileRejected(Exception):
    """A file-level problem: the whole file is rejected with this reason."""


def check_columns(names: list[str], cfg: DataConfig) -> None:
    missing = [c for c in cfg.required_source_columns() if c not in names]
    if not missing:
        return
    if len(names) == 1:
        for d in (";", "\t", "|", ","):
            if d != cfg.csv.delimiter and d in names[0]:
                raise FileRejected(
                    f"wrong delimiter: the header is one column {names[0][:80]!r}; it looks "
                    f"{d!r}-separated but data.csv.delimiter is {cfg.csv.delimiter!r}"
                )
    raise FileRejected(f"missing required columns {missing}; the file has {names}")
