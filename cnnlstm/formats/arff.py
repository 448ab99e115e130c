"""Weka ARFF files (the ``.arff`` suffix, or a file whose first line that is neither blank nor a
``%`` comment starts with ``@relation``): one column per attribute, one row per data line.

Header (before ``@data``; keywords in any case; ``%`` starts a comment, outside quotes):
``@relation <name>``, then ``@attribute <name> <type>``: the name may be quoted with ``'`` or
``"`` (then it may hold blanks), the type is ``numeric``, ``real``, ``integer``, ``string``,
``date [format]`` or a nominal set ``{a, b, 'c d'}``. Columns are named as declared (then
data.rename applies); values are text, except the columns the config reads as numbers (channels,
a number-typed label or time, int/float data.columns), parsed as numbers as for CSV text
(`formats.text.read_csv`, whose fast path and careful path read the ``@data`` section: fields
separated by ``,``; values quoted with ``'`` as Weka writes them, or with ``"`` in a data section
that holds no ``'``; blanks around a field, and ``%`` comments, outside quotes, are dropped).
``?`` and data.csv.null_values are missing values. data.csv.encoding applies (default UTF-8);
the other data.csv keys do not.

Row numbers: ``_row`` is the 1-based number of the data row (blank and comment lines are no
rows), quarantined rows included, so ``timestamp.format: sample_index`` without a column gives
each row its place among the file's data rows. Reasons name the file's line. A row quarantined
here keeps its line as ``raw``; a row the validation quarantines keeps its parsed fields (the
source text is not read again: `formats.is_text` is false for ARFF, as for Parquet).

Quarantined, one row each, ``line N: ...``: a data line with another number of fields than
attributes ("ragged line"), and a row holding a value that is not among its nominal attribute's
declared values (every nominal attribute is checked). Rejected (the reason names the line):
no ``@data``, no ``@attribute``, text before ``@data`` that is not a header line or a comment,
a malformed or unknown ``@`` line, two attributes of one name, a ``relational`` attribute
(multivariate UEA ARFF: read the ``.ts`` files of the same archive instead), sparse data lines
(``{0 1.5, 3 2}``), no data line after ``@data``, a byte that is not the encoding's, a quote
that does not close ("unparseable data near line N").

With data.wide, each data row is one series (UCR univariate ARFF: ``att1`` .. ``attN`` and the
class last), melted by `formats.wide.melt` as CSV text and Parquet are; a line with fewer
fields than attributes is quarantined too (in CSV text it would be a shorter series: here the
class is last), a shorter series is written with ``?`` at its end.

DATE attributes are read as text: declare one as data.timestamp with ``format: iso`` (ARFF's
default date format ``yyyy-MM-dd'T'HH:mm:ss`` is ISO 8601) or the strftime equivalent of its
Java SimpleDateFormat pattern (``yyyy-MM-dd HH:mm`` -> ``%Y-%m-%d %H:%M``).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from cnnlstm.config import DataConfig
from cnnlstm.formats import text, wide
from cnnlstm.formats.base import ROW, FileRejected, clip, clip_names, rename_columns

RAW_CLIP = 2000  # a quarantined data line keeps at most this many characters
DEFAULT_DATE = "yyyy-MM-dd'T'HH:mm:ss"
MISSING = "?"
NUMERIC = ("numeric", "real", "integer")
_TAG = re.compile(r"@([A-Za-z]+)(.*)$", re.S)
# a quoted value (kept as it is), or blanks around a comma, at a line's edges, or a comment
_NOISE = re.compile(
    r"""('(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")"""  # a quoted value: kept
    r"|[ \t]*%[^\r\n]*|[ \t]*,[ \t]*|^[ \t]+|[ \t]+(?=\r?$)",
    re.M,
)
_NEEDS_CLEANING = re.compile(r"%|[ \t],|,[ \t]|^[ \t]|[ \t]\r?$", re.M)
_BLANK_LINE = re.compile(r"^[ \t]*\r?$", re.M)
_SPARSE = re.compile(r"^\{", re.M)
_UNPARSEABLE = re.compile(r"unparseable CSV near line (\d+): (.*)$", re.S)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def matches(source: str, head: bytes) -> bool:
    if source.lower().endswith(".arff"):
        return True
    for line in head.removeprefix(b"\xef\xbb\xbf").splitlines():
        s = line.strip()
        if s and not s.startswith(b"%"):
            return s.lower().startswith(b"@relation")
    return False


@dataclass
class Attribute:
    name: str
    kind: str  # numeric, string, date, nominal
    line: int
    values: list[str] | None = None  # nominal: the declared values
    date_format: str | None = None


def _quoted(s: str, i: int, lineno: int) -> tuple[str, int]:
    """The quoted token starting at ``s[i]`` (a quote), unescaped, and the index after it."""
    q = s[i]
    out = []
    j = i + 1
    while j < len(s):
        c = s[j]
        if c == "\\" and j + 1 < len(s):
            out.append(_ESCAPES.get(s[j + 1], s[j + 1]))
            j += 2
            continue
        if c == q:
            return "".join(out), j + 1
        out.append(c)
        j += 1
    raise FileRejected(f"line {lineno}: unclosed quote {q} in {clip(s)!r}")


def _uncomment(s: str) -> str:
    """The line without a ``%`` comment (outside quotes)."""
    if "%" not in s:
        return s
    q = None
    i = 0
    while i < len(s):
        c = s[i]
        if q:
            if c == "\\":
                i += 1
            elif c == q:
                q = None
        elif c in "'\"":
            q = c
        elif c == "%":
            return s[:i]
        i += 1
    return s


def _nominal(inner: str, lineno: int) -> list[str]:
    """The values of a nominal set (``inner``: the text between the braces)."""
    if not inner.strip():
        return []
    values: list[str] = []
    i, n = 0, len(inner)
    while True:
        while i < n and inner[i] in " \t":
            i += 1
        if i < n and inner[i] in "'\"":
            v, i = _quoted(inner, i, lineno)
            while i < n and inner[i] in " \t":
                i += 1
            if i < n and inner[i] != ",":
                raise FileRejected(
                    f"line {lineno}: text after the quoted nominal value {clip(v)!r}"
                )
        else:
            j = inner.find(",", i)
            j = n if j < 0 else j
            v, i = inner[i:j].strip(), j
            if not v:
                raise FileRejected(
                    f"line {lineno}: an empty value in the nominal set {{{clip(inner)}}}"
                )
        values.append(v)
        if i >= n:
            return values
        i += 1  # past the comma


def _attribute(rest: str, lineno: int) -> Attribute:
    rest = rest.strip()
    if not rest:
        raise FileRejected(f"line {lineno}: @attribute without a name and a type")
    if rest[0] in "'\"":
        name, i = _quoted(rest, 0, lineno)
    else:
        m = re.match(r"[^\s{]+", rest)
        assert m is not None
        name, i = m.group(0), m.end()
    if not name:
        raise FileRejected(f"line {lineno}: @attribute with an empty name")
    kind_text = rest[i:].strip()
    if not kind_text:
        raise FileRejected(f"line {lineno}: @attribute {clip(name)!r} has no type")
    if kind_text.startswith("{"):
        if not kind_text.endswith("}"):
            raise FileRejected(
                f"line {lineno}: @attribute {clip(name)!r}: the nominal set {clip(kind_text)!r} "
                "has no closing }"
            )
        return Attribute(name, "nominal", lineno, values=_nominal(kind_text[1:-1], lineno))
    word, *more_text = kind_text.split(None, 1)
    word, more = word.lower(), (more_text[0].strip() if more_text else "")
    if word == "relational":
        raise FileRejected(
            f"line {lineno}: @attribute {clip(name)!r} is relational (multivariate UEA ARFF): "
            "not supported; read the .ts files of the same archive instead (ingest reads .ts)"
        )
    if word in NUMERIC and not more:
        return Attribute(name, "numeric", lineno)
    if word == "string" and not more:
        return Attribute(name, "string", lineno)
    if word == "date":
        fmt = more
        if fmt[:1] in ("'", '"'):
            fmt, j = _quoted(more, 0, lineno)
            if more[j:].strip():
                raise FileRejected(f"line {lineno}: text after the date format {clip(fmt)!r}")
        return Attribute(name, "date", lineno, date_format=fmt or DEFAULT_DATE)
    raise FileRejected(
        f"line {lineno}: @attribute {clip(name)!r} has the type {clip(kind_text)!r}; expected "
        "numeric, real, integer, string, date [format] or a nominal set {a,b,...}"
    )


def _header(txt: str) -> tuple[str | None, list[Attribute], int, int]:
    """The relation's name, the attributes, the line number of ``@data`` and the index of the
    first character after its line."""
    relation: str | None = None
    attrs: list[Attribute] = []
    pos = 0
    lineno = 0
    while pos < len(txt):
        end = txt.find("\n", pos)
        end = len(txt) if end < 0 else end
        line = txt[pos:end]
        lineno += 1
        pos = end + 1
        s = _uncomment(line).strip()
        if not s:
            continue
        m = _TAG.match(s)
        if m is None:
            raise FileRejected(
                f"line {lineno}: {clip(s)!r} before @data: neither a header line (@relation, "
                "@attribute, @data) nor a comment (%)"
            )
        tag, rest = m.group(1).lower(), m.group(2)
        if rest and not rest[0].isspace() and not (tag == "attribute" and rest[0] in "'\""):
            tag = s.split()[0].lower()  # '@datax': an unknown tag
        if tag == "data":
            if not attrs:
                raise FileRejected(f"line {lineno}: @data without any @attribute before it")
            return relation, attrs, lineno, min(pos, len(txt))
        if tag == "relation":
            r = rest.strip()
            relation = _quoted(r, 0, lineno)[0] if r[:1] in ("'", '"') else r
        elif tag == "attribute":
            a = _attribute(rest, lineno)
            for b in attrs:
                if b.name == a.name:
                    raise FileRejected(
                        f"line {lineno}: a second attribute named {clip(a.name)!r} (the first is "
                        f"on line {b.line})"
                    )
            attrs.append(a)
        else:
            raise FileRejected(
                f"line {lineno}: unknown header line {clip(s)!r} (ARFF knows @relation, "
                "@attribute and @data)"
            )
    if not attrs:
        raise FileRejected("no @attribute and no @data line: not an ARFF file")
    raise FileRejected("no @data line: the ARFF header declares no data section")


def _decode(data: bytes, cfg: DataConfig) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    enc = cfg.csv.encoding
    try:
        return data.decode(enc)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        name = "UTF-8" if codecs.lookup(enc).name == "utf-8" else f"{enc} (data.csv.encoding)"
        raise FileRejected(f"not {name}: invalid byte 0x{data[e.start]:02x} on line {line}") from e


def _clean(body: str) -> str:
    """Blanks around fields and ``%`` comments removed, outside quotes (lines kept)."""
    if not _NEEDS_CLEANING.search(body):
        return body

    def keep(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return m.group(1)
        return "," if "," in m.group(0) else ""

    return _NOISE.sub(keep, body)


def _strings(data: bytes, cfg: DataConfig, names: list[str]) -> tuple[pl.DataFrame, list]:
    """The data section as text columns (``names``) and ``_row``; ragged lines quarantined (the
    fast polars path, else `text.read_csv_careful`, as `text.read_csv` does)."""
    layout = text.Layout(0, names)
    try:
        df = pl.read_csv(data, **text.read_opts(cfg, layout))
        if df.height and df[names[-1]].null_count() == 0:
            return df.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64)), []
    except pl.exceptions.PolarsError:
        pass
    return text.read_csv_careful(data, layout, cfg)


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _undeclared(
    df: pl.DataFrame, attrs: list[Attribute], names: list[str]
) -> tuple[pl.DataFrame, list[tuple[int, str]]]:
    """Rows with a value outside its nominal attribute's set: removed, as (row, reason)."""
    checks = []
    for a, n in zip(attrs, names, strict=True):
        if a.kind != "nominal" or n not in df.columns:
            continue
        assert a.values is not None
        col = pl.col(n)
        if df.schema[n] == pl.String:
            bad = col.is_not_null() & ~col.is_in(a.values)
            shown = col
        else:  # read as a number for the config: compared as numbers
            nums = [float(v) for v in a.values if _is_number(v)]
            num = col.cast(pl.Float64)
            bad = col.is_not_null() & ~num.is_in(nums)
            whole = num.cast(pl.Int64, strict=False)  # 2.0 shown as 2, as the file wrote it
            shown = pl.when(whole == num).then(whole.cast(pl.String)).otherwise(col.cast(pl.String))
        declared = clip("{" + ",".join(a.values) + "}", 200)
        checks.append(
            pl.when(bad).then(
                pl.format(
                    "'{}' is not a declared value of the nominal attribute {}",
                    shown.str.slice(0, 80),
                    pl.lit(f"{clip(a.name)!r} {declared}"),
                )
            )
        )
    if not checks:
        return df, []
    why = df.select(pl.coalesce(checks).alias("why"), pl.col(ROW))
    hit = why["why"].is_not_null()
    if not hit.any():
        return df, []
    found = why.filter(hit)
    return df.filter(~hit), list(zip(found[ROW].to_list(), found["why"].to_list(), strict=True))


def read(
    data: bytes, source: str, cfg: DataConfig, max_bytes: int, max_rows: int, notes=None
) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    txt = _decode(data, cfg)
    relation, attrs, data_line, start = _header(txt)
    first = data_line + 1  # the file line of the data section's first line
    body = _clean(txt[start:]).rstrip()
    del txt
    lines_of: np.ndarray | None = None  # file line of each data row (None: first + row - 1)
    if _BLANK_LINE.search(body):
        parts = body.split("\n")
        keep = [i for i, ln in enumerate(parts) if ln.strip()]
        body = "\n".join(parts[i] for i in keep)
        lines_of = np.asarray(keep, dtype=np.int64) + first
        del parts
    if not body:
        raise FileRejected(f"no data rows after @data (line {data_line})")

    def line(row: int) -> int:  # a data row's (1-based) file line
        return int(lines_of[row - 1]) if lines_of is not None else first + row - 1

    if (m := _SPARSE.search(body)) is not None:
        row = body.count("\n", 0, m.start()) + 1
        raise FileRejected(
            f"line {line(row)}: sparse data row ({{index value, ...}}): sparse ARFF is not "
            "supported; write the file dense (Weka: SparseToNonSparse)"
        )

    quote = "'" if "'" in body or '"' not in body else '"'
    names = [a.name for a in attrs]
    csv_opts = cfg.csv.model_copy(
        update={
            "delimiter": ",",
            "quote_char": quote,
            "whitespace": False,
            "decimal_comma": False,
            "encoding": "utf-8",
            "record_end": None,
            "null_values": list(dict.fromkeys([*cfg.csv.null_values, MISSING])),
            "header": False,
            "names": names,
            "index_column": "no",
            "skip_rows": 0,
            "comment_prefix": None,
        }
    )
    acfg = cfg.model_copy(update={"csv": csv_opts})
    raw = body.encode("utf-8")
    try:
        if cfg.wide is None:
            df, bad = text.read_csv(raw, acfg, notes=notes, max_rows=max_rows)
            renamed = [c for c in df.columns if c != ROW]
        else:
            renamed = rename_columns(names, cfg, notes)
            df, bad = _strings(raw, acfg, renamed)
    except FileRejected as e:  # the careful path's line counts the data section's lines
        m = _UNPARSEABLE.match(str(e))
        if m is None:
            raise
        at = min(max(int(m.group(1)), 1), body.count("\n") + 1)
        raise FileRejected(f"unparseable data near line {line(at)}: {m.group(2)}") from e
    del raw
    df, undeclared = _undeclared(df, attrs, renamed)
    text_lines: list[str] | None = None
    if undeclared:
        text_lines = body.split("\n")
    out_bad = [(r, f"line {line(r)}: {why}", raw_line) for r, why, raw_line in bad]
    for r, why in undeclared:
        assert text_lines is not None
        out_bad.append(
            (r, f"line {line(r)}: {why}", clip(text_lines[r - 1].rstrip("\r"), RAW_CLIP))
        )
    out_bad.sort(key=lambda b: b[0])
    n_records = df.height + len(out_bad)

    if notes is not None:
        kinds: dict[str, int] = {}
        for a in attrs:
            kinds[a.kind] = kinds.get(a.kind, 0) + 1
        what = ", ".join(f"{n} {k}" for k, n in kinds.items())
        name = f" {clip(relation)!r}" if relation else ""
        notes.append(
            f"ARFF relation{name}: {len(attrs)} attributes ({what}), {n_records} data rows"
        )
        dates = [a for a in attrs if a.kind == "date"]
        if dates:
            fmts = sorted({a.date_format or DEFAULT_DATE for a in dates})
            notes.append(
                f"DATE attributes {clip_names([a.name for a in dates])} read as text (format "
                f"{', '.join(fmts)}): declare one as data.timestamp with format iso (ARFF's "
                f"default {DEFAULT_DATE} is ISO) or the strftime equivalent of the Java "
                "SimpleDateFormat pattern"
            )
    if cfg.wide is None:
        return df, out_bad
    lines_col = (
        pl.Series(lines_of).gather(df[ROW] - 1) if lines_of is not None else df[ROW] + (first - 1)
    )
    frame = df.select(
        (pl.col(ROW) - 1).alias(wide.REC),
        lines_col.cast(pl.Int64).alias(wide.LINE),
        *renamed,
    )
    recs = [(r - 1, why, raw_line) for r, why, raw_line in out_bad]
    texts = text_lines if text_lines is not None else body.split("\n")
    return wide.melt(frame, acfg, max_rows, notes, recs, n_records, "line", texts)
