"""One YAML config, validated by typed models (pydantic).

Sections: ``data`` (how landing files map to the readings contract), ``lake`` (where the lake
lives and its safety limits), ``window``, ``model``, ``train`` (owned by their components), and
``tracking``/``score`` (later stages). ``load_config`` reads a file and applies ``a.b.c=value``
overrides from the CLI; the resolved config is what every run logs.

Reference: docs/config.md.
"""

from __future__ import annotations

import codecs
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cnnlstm.models.config import ModelConfig
from cnnlstm.tasks.config import TaskConfig
from cnnlstm.train_config import TrainConfig
from cnnlstm.window_config import WindowConfig

# documentation shipped beside data files: never read as data in a folder walk
DEFAULT_EXCLUDE = ("readme*", "licen[cs]e*", "notice*", "changelog*", "*.md", "*.rst", "*.pdf")


class ConfigError(ValueError):
    """A user mistake in the config file or a CLI override (exit status 2 in the CLI)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EntitySpec(_Strict):
    """Where a row's entity id comes from: exactly one of column, constant, from_filename, parts.

    ``parts`` makes a composite entity from several values, e.g. ``[split, unit]`` where
    ``split`` is a path column (data.path_columns) and ``unit`` a source column: the values are
    joined with ``/`` (a ``/`` or ``%`` inside a value is %-encoded, so ids never collide). The
    name ``file`` stands for the file name without its extension."""

    column: str | None = None
    constant: str | None = None
    from_filename: str | None = Field(
        default=None,
        description="regex applied to the file name (without its extension); the group "
        "named 'entity' (or the whole match) is the id. Use '.*' for the file stem.",
    )
    parts: list[str] | None = Field(
        default=None,
        min_length=1,
        description="composite id: source columns, path columns or 'file', joined with '/'",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> EntitySpec:
        keys = ("column", "constant", "from_filename", "parts")
        given = [k for k in keys if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "data.entity needs exactly one of column, constant, from_filename, parts "
                f"(got {given or 'none'})"
            )
        if self.from_filename is not None:
            try:
                re.compile(self.from_filename)
            except re.error as e:
                raise ValueError(f"data.entity.from_filename is not a valid regex: {e}") from e
        return self


class PathColumns(_Strict):
    """Metadata taken from each file's path (relative to data.landing when the file is under
    it): a regex searched in the path whose named groups become columns, e.g.
    ``'(?P<split>train|test)/subject(?P<subject>\\d+)_'``."""

    pattern: str
    types: dict[str, Literal["string", "int", "float", "bool"]] = Field(
        default_factory=dict, description="type per group (default string)"
    )

    @model_validator(mode="after")
    def _groups(self) -> PathColumns:
        try:
            rx = re.compile(self.pattern)
        except re.error as e:
            raise ValueError(f"data.path_columns.pattern is not a valid regex: {e}") from e
        if not rx.groupindex:
            raise ValueError("data.path_columns.pattern has no named group (?P<name>...)")
        extra = set(self.types) - set(rx.groupindex)
        if extra:
            raise ValueError(f"data.path_columns.types names no group of the pattern: {extra}")
        return self

    @property
    def names(self) -> list[str]:
        return list(re.compile(self.pattern).groupindex)


TimestampFormat = Literal["iso", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "sample_index"]
TIMESTAMP_FORMATS: tuple[str, ...] = TimestampFormat.__args__  # type: ignore[attr-defined]
# one chrono directive of a strftime-style pattern (polars' str.to_datetime/dt.strftime):
# %Y, %-d (padding flags), %.f / %.3f / %3f (fractions), %z / %:z / %::z / %#z (offsets), %%
_DIRECTIVE = re.compile(r"%(?:[-_0]?[A-Za-z%+]|\.?\d?f|:{1,3}z|#z)")
_OFFSET_DIRECTIVES = {"%z", "%:z", "%::z", "%:::z", "%#z", "%+"}


def pattern_directives(fmt: str) -> list[str]:
    """The chrono directives of a strftime-style pattern, in order (``%%`` included)."""
    return _DIRECTIVE.findall(fmt)


def pattern_has_offset(fmt: str) -> bool:
    """Does the pattern read a UTC offset (``%z``, ``%:z``, ``%#z``, ``%+``)? Its values are
    then instants, converted to UTC; else local times in data.timestamp.timezone."""
    return any(d in _OFFSET_DIRECTIVES for d in pattern_directives(fmt))


# the directives that write the second, with the second as the literal 60 (chrono's
# composite ones spelled out: %T and %X are %H:%M:%S, %r %I:%M:%S %p, %c and %+ as documented)
_LEAP_SECOND = {
    "%S": "60",
    "%-S": "60",
    "%_S": "60",
    "%0S": "60",
    "%T": "%H:%M:60",
    "%X": "%H:%M:60",
    "%r": "%I:%M:60 %p",
    "%c": "%a %b %e %H:%M:60 %Y",
    "%+": "%Y-%m-%dT%H:%M:60%.f%:z",
}


def leap_second_pattern(fmt: str) -> str | None:
    """The pattern with its second written as the literal ``60`` (a value it reads is a leap
    second, which chrono would read as the next minute's second 0); None when the pattern
    writes no second."""
    found = False

    def sub(m: re.Match[str]) -> str:
        nonlocal found
        rep = _LEAP_SECOND.get(m.group(0))
        found = found or rep is not None
        return m.group(0) if rep is None else rep

    out = _DIRECTIVE.sub(sub, fmt)
    return out if found else None


def _check_pattern(fmt: str) -> None:
    """A pattern must be one polars (chrono) can write and read back to the same date: a
    sample instant formatted with it and parsed again keeps its year, month and day."""
    from datetime import UTC, datetime

    import polars as pl

    key = f"data.timestamp.format {fmt!r}"
    if "%Z" in pattern_directives(fmt):
        raise ValueError(
            f"{key}: %Z (a time-zone name) cannot be read by polars/chrono; write the offset "
            "with %z or %:z, or give the zone in data.timestamp.timezone"
        )
    aware = pattern_has_offset(fmt)
    sample = datetime(2006, 12, 16, 17, 24, 37, 250000, tzinfo=UTC if aware else None)
    try:
        text = pl.Series([sample]).dt.strftime(fmt)
        back = text.str.to_datetime(
            fmt, time_unit="us", strict=False, **({"time_zone": "UTC"} if aware else {})
        )
    except Exception as e:  # polars raises ComputeError/InvalidOperationError for bad patterns
        lines = str(e).strip().splitlines()
        raise ValueError(
            f"{key} is not a pattern polars (chrono) can read dates with: "
            f"{lines[0] if lines else type(e).__name__}"
        ) from None
    got = back[0]
    if got is None or got.date() != sample.date():
        raise ValueError(
            f"{key} does not read a whole date: {sample.isoformat()} written with it is "
            f"{text[0]!r}, read back as {got}; a pattern needs a year (%Y or %y) and a day "
            "(%m and %d, %b and %d, or %j)"
        )


class TimestampSpec(_Strict):
    """How the source expresses time. Everything becomes UTC microseconds in the lake.

    ``format`` is one of the named formats or a strftime-style pattern (any text with ``%``,
    read by polars/chrono). ``column`` may be a list of columns (text formats only): their
    values, joined with one space in order, are the text the format reads (``[Date, Time]``
    with ``'%d/%m/%Y %H:%M:%S'``).

    ``format: sample_index`` without a ``column`` numbers each row by its 0-based position in
    its file (rows later quarantined count too): arrays and recordings without a time column."""

    column: str | list[str] | None = Field(
        default=None,
        description="the source column of time, or a list of columns whose values are joined "
        "with one space (format iso or a pattern); may be omitted (null) only with format "
        "sample_index: each row's 0-based position in its file is then its sample index",
    )
    format: TimestampFormat | str = Field(
        default="iso",
        description="a named format, or a strftime-style pattern containing % (e.g. "
        "'%d/%m/%Y %H:%M:%S')",
    )
    timezone: str = Field(
        default="UTC", description="zone assumed for ISO strings without an offset"
    )
    sample_rate_hz: float | None = Field(default=None, gt=0)
    start: str | None = Field(
        default=None, description="ISO instant of sample 0 (format: sample_index)"
    )

    @field_validator("format")
    @classmethod
    def _named_or_pattern(cls, v: str) -> str:
        if v in TIMESTAMP_FORMATS:
            return v
        if "%" not in v:
            raise ValueError(
                f"data.timestamp.format {v!r} is not one of {', '.join(TIMESTAMP_FORMATS)}; "
                "a strftime-style pattern contains % (e.g. '%d/%m/%Y %H:%M:%S')"
            )
        _check_pattern(v)
        return v

    @model_validator(mode="after")
    def _sample_index_needs_rate(self) -> TimestampSpec:
        if self.format == "sample_index" and (self.sample_rate_hz is None or self.start is None):
            raise ValueError("data.timestamp.format=sample_index needs sample_rate_hz and start")
        if self.column is None and self.format != "sample_index":
            raise ValueError(
                f"data.timestamp.column is required with format {self.format}; only "
                "format sample_index may omit it (each row's position in its file is then its "
                "sample index)"
            )
        if isinstance(self.column, list):
            if not self.column:
                raise ValueError("data.timestamp.column: an empty list names no column")
            dup = sorted({c for c in self.column if self.column.count(c) > 1})
            if dup:
                raise ValueError(f"data.timestamp.column names a column twice: {dup}")
            if not self.is_text:
                raise ValueError(
                    f"data.timestamp.column: a list of columns {self.column} is joined as text, "
                    f"for format iso or a strftime-style pattern; format {self.format} reads "
                    "one column"
                )
        return self

    @property
    def columns(self) -> list[str]:
        """The source columns of time (empty for sample_index by row position)."""
        if self.column is None:
            return []
        return [self.column] if isinstance(self.column, str) else list(self.column)

    @property
    def is_pattern(self) -> bool:
        """``format`` is a strftime-style pattern (not one of the named formats)."""
        return self.format not in TIMESTAMP_FORMATS

    @property
    def is_text(self) -> bool:
        """Time written as text: format iso or a pattern."""
        return self.format == "iso" or self.is_pattern


class ChannelSpec(_Strict):
    name: str = Field(description="name in the lake (float32 column)")
    source: str | None = Field(
        default=None, description="column in the landing file (default: name)"
    )
    unit: str | None = None
    min: float | None = Field(default=None, description="smallest plausible value (inclusive)")
    max: float | None = Field(default=None, description="largest plausible value (inclusive)")

    @property
    def src(self) -> str:
        return self.source or self.name

    @model_validator(mode="after")
    def _range(self) -> ChannelSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"channel {self.name}: min {self.min} > max {self.max}")
        return self


class LabelTable(_Strict):
    """Labels from an index file: one row per recording (PhysioNet/CinC 2017 REFERENCE.csv,
    a Kaggle train.csv of id,label, PTB-XL's metadata), read once per ingest."""

    path: str = Field(
        min_length=1,
        description="the CSV file (comma-separated), relative to the config file like data.landing",
    )
    key: str = Field(min_length=1, description="the table's column holding the id")
    value: str = Field(min_length=1, description="the table's column holding the label")
    names: list[str] | None = Field(
        default=None,
        min_length=1,
        description="the table has no header line: its fields named in order",
    )
    match: str = Field(
        default="file",
        min_length=1,
        description="what the key is compared with: file (the file name without its "
        "extension), entity (each row's entity id) or a data.path_columns group",
    )

    @model_validator(mode="after")
    def _columns(self) -> LabelTable:
        if self.key == self.value:
            raise ValueError("data.label.table: key and value name the same column")
        if self.names is not None:
            dup = {n for n in self.names if self.names.count(n) > 1}
            if dup:
                raise ValueError(f"data.label.table.names: duplicate names {sorted(dup)}")
            for k in ("key", "value"):
                if getattr(self, k) not in self.names:
                    raise ValueError(
                        f"data.label.table.{k}={getattr(self, k)!r} is not one of "
                        f"data.label.table.names {self.names}"
                    )
        return self


class LabelSpec(_Strict):
    column: str
    dtype: Literal["int", "float", "bool", "string"] = Field(
        default="int",
        description="int accepts integral numbers written as floats (1.0); bool accepts "
        "true/false, 1/0, yes/no",
    )
    default: int | float | bool | str | None = Field(
        default=None, description="label of the rows of files that have no label column"
    )
    default_from: str | None = Field(
        default=None,
        description="a path column (data.path_columns) whose value is the label of files "
        "that have no label column",
    )
    table: LabelTable | None = Field(
        default=None,
        description="an index file giving the label of files that have no label column, "
        "by file name, entity or path column; default then labels ids it lacks",
    )

    @model_validator(mode="after")
    def _one_default(self) -> LabelSpec:
        if self.default is not None and self.default_from is not None:
            raise ValueError("data.label: give default or default_from, not both")
        if self.table is not None and self.default_from is not None:
            raise ValueError("data.label: give table or default_from, not both")
        return self

    @property
    def optional(self) -> bool:
        """Files may lack the label column."""
        return self.default is not None or self.default_from is not None or self.table is not None


ExtraType = Literal["string", "int", "float", "bool"]

_RESERVED = {"entity_id", "timestamp", "label", "date"}


class CsvOptions(_Strict):
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote_char: str | None = Field(default='"', min_length=1, max_length=1)
    whitespace: bool = Field(
        default=False,
        description="fields are separated by runs of spaces and tabs, leading and trailing "
        "blanks ignored (space-aligned text: the NASA turbofan files, the UCR .txt layout); "
        "delimiter and quote_char are then unused",
    )
    decimal_comma: bool = Field(
        default=False,
        description="numbers are written with a decimal comma (2,6 for 2.6), as European "
        "spreadsheets write them; the delimiter must then be another character",
    )
    encoding: str = Field(
        default="utf-8",
        description="the text encoding of the files (a Python codec name: utf-8, cp1252, "
        "latin-1, utf-16, ...); the text is decoded with it before anything else",
    )
    record_end: str | None = Field(
        default=None,
        min_length=1,
        max_length=1,
        description="one character that ends each record besides the line end (the WISDM "
        "raw file's ';'): each occurrence ends a record, quotes not honoured, so a line may "
        "hold several records; rows are then numbered by record",
    )
    null_values: list[str] = Field(default_factory=lambda: [""])
    header: bool = Field(
        default=True, description="the first line (after skip_rows) names the fields"
    )
    names: list[str] | None = Field(
        default=None,
        description="field names: replace the header's (header: true) or name a file without "
        "one (header: false)",
    )
    index_column: Literal["auto", "yes", "no"] = Field(
        default="auto",
        description="a leading unnamed field (a row index, as pandas/R write it): auto detects "
        "a header one name short of the rows; it is read as the column row_index",
    )
    skip_rows: int = Field(default=0, ge=0, description="lines skipped before the header / data")
    skip_after_header: int = Field(
        default=0,
        ge=0,
        description="lines after the header that are not data (a units row: s,g,g,degC); "
        "needs header: true",
    )
    comment_prefix: str | None = Field(
        default=None, min_length=1, max_length=5, description="lines starting with it are skipped"
    )

    @model_validator(mode="after")
    def _names(self) -> CsvOptions:
        # header: false without names is checked in DataConfig (data.wide names fields by
        # their position)
        if self.names is not None and len(set(self.names)) != len(self.names):
            raise ValueError(f"data.csv.names has duplicates: {self.names}")
        return self

    @model_validator(mode="after")
    def _after_header(self) -> CsvOptions:
        if self.skip_after_header and not self.header:
            raise ValueError(
                "data.csv.skip_after_header skips lines after the header: it needs "
                "data.csv.header: true (without a header, skip lines with skip_rows)"
            )
        return self

    @model_validator(mode="after")
    def _decimal_comma_and_encoding(self) -> CsvOptions:
        if self.decimal_comma and not self.whitespace and self.delimiter == ",":
            raise ValueError(
                "data.csv.decimal_comma needs another delimiter than ',' (e.g. ';' or a tab): "
                "a comma cannot separate fields and decimals at once"
            )
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(
                f"data.csv.encoding {self.encoding!r} is no known text encoding (e.g. utf-8, "
                "cp1252, latin-1, utf-16)"
            ) from None
        return self

    @model_validator(mode="after")
    def _record_end(self) -> CsvOptions:
        end = self.record_end
        if end is None:  # its length (one character) is checked by the field
            return self
        why = None
        if end in "\r\n":
            why = "a line end already ends a record"
        elif end in " \t":
            why = "a blank (space or tab) is not a record terminator"
        elif not self.whitespace and end == self.delimiter:
            why = "it is data.csv.delimiter"
        elif not self.whitespace and end == self.quote_char:
            why = "it is data.csv.quote_char"
        if why:
            raise ValueError(f"data.csv.record_end {end!r} is not allowed: {why}")
        return self


class RenameRule(_Strict):
    """One step of data.rename: ``re.sub(pattern, to, name)`` on every source column name."""

    pattern: str = Field(description="regex searched in each source column name")
    to: str = Field(description="its replacement (re.sub: \\1 or \\g<name> refer to groups)")

    @model_validator(mode="after")
    def _compiles(self) -> RenameRule:
        try:
            re.compile(self.pattern).sub(self.to, "")  # the replacement is checked here too
        except (re.error, IndexError) as e:
            raise ValueError(
                f"data.rename: pattern {self.pattern!r} / to {self.to!r} is not valid: {e}"
            ) from e
        return self


class WideLayout(_Strict):
    """data.wide: each row of a file is one univariate series and its value columns are the
    series' time points (UCR .tsv/.txt, Kaggle-style CSV, wide Parquet). Rows are melted into
    long rows ``series``, ``position``, the value column (`value_name`) and every other column
    of the row (the label, metadata) before the per-row validation (`formats.wide`)."""

    id_column: str | None = Field(
        default=None,
        description="the column naming each series: its value is the column series (default: "
        "the row's 0-based number among the file's data rows)",
    )
    value_columns: list[str] | None = Field(
        default=None,
        min_length=1,
        description="the value columns, in time order (default: every column the config does "
        "not name otherwise)",
    )
    value_pattern: str | None = Field(
        default=None,
        description="instead of value_columns: a regex searched in each column name; the "
        "matching columns, in file order, are the values",
    )
    value_name: str = Field(
        default="value", min_length=1, description="the name of the melted value column"
    )

    @field_validator("id_column", mode="before")
    @classmethod
    def _id_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _values(self) -> WideLayout:
        if self.value_columns is not None and self.value_pattern is not None:
            raise ValueError("data.wide: give value_columns or value_pattern, not both")
        if self.value_columns is not None:
            dup = sorted({c for c in self.value_columns if self.value_columns.count(c) > 1})
            if dup:
                raise ValueError(f"data.wide.value_columns has duplicates: {dup}")
            if self.id_column in self.value_columns:
                raise ValueError(
                    f"data.wide.id_column {self.id_column!r} is one of data.wide.value_columns"
                )
        if self.value_pattern is not None:
            try:
                re.compile(self.value_pattern)
            except re.error as e:
                raise ValueError(f"data.wide.value_pattern is not a valid regex: {e}") from e
        if self.value_name in ("series", "position"):
            raise ValueError(
                f"data.wide.value_name {self.value_name!r} is a column the layout makes itself "
                "(series, position)"
            )
        return self


DEFAULT_INCLUDE = (
    "*.csv",
    "*.csv.gz",
    "*.parquet",
    "*.pq",
    "*.mat",
    "*.npy",
    "*.npz",
    "*.ts",
    "*.arff",
)


class DataConfig(_Strict):
    """Maps landing-file columns to the readings contract."""

    name: str = "dataset"
    landing: str | None = Field(
        default=None,
        description="where new files land (folder, glob or URI; relative to the config file): "
        "what `cnnlstm run` and the ingest flow read",
    )
    entity: EntitySpec
    timestamp: TimestampSpec
    channels: list[ChannelSpec] = Field(min_length=1)
    label: LabelSpec | None = None
    columns: dict[str, ExtraType] = Field(
        default_factory=dict, description="extra metadata columns to keep, with their type"
    )
    keep_other_columns: bool = Field(
        default=False, description="keep undeclared columns too (as strings)"
    )
    allow_missing_channels: bool = Field(
        default=False, description="accept null channel values (NaN and inf are always rejected)"
    )
    csv: CsvOptions = Field(default_factory=CsvOptions)
    wide: WideLayout | None = Field(
        default=None,
        description="one series per row (columns = time points), melted into long rows",
    )
    include: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INCLUDE),
        min_length=1,
        description="file name patterns read when a folder is ingested (e.g. '*.txt'); files "
        "other than .gz, Parquet, .mat, .npy, .npz, .ts and .arff are read as CSV text",
    )
    exclude: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXCLUDE),
        description="file name patterns skipped when a folder is ingested, even if included "
        "(default: documentation files such as README.txt and LICENSE)",
    )
    path_columns: PathColumns | None = Field(
        default=None, description="metadata columns from each file's path"
    )
    rename: list[RenameRule] = Field(
        default_factory=list,
        description="source column names rewritten, rule after rule, in every file before the "
        "config's columns are looked up (e.g. a per-file prefix removed)",
    )
    follow_symlinks: bool = Field(
        default=False,
        description="read landing files that are symbolic links (and walk linked folders), "
        "only when the target resolves inside the landing root; false: links are refused",
    )
    denormals: Literal["quarantine", "flush"] = Field(
        default="quarantine",
        description="channel values whose magnitude is below float32's smallest normal number "
        "(1.18e-38, e.g. 1e-50): quarantine the row, or store 0.0 and count them in the notes",
    )

    @model_validator(mode="after")
    def _names(self) -> DataConfig:
        if not self.csv.header and not self.csv.names and self.wide is None:
            raise ValueError(
                "data.csv.header: false needs data.csv.names (or data.wide, whose fields are "
                "named by position)"
            )
        if self.wide is not None:
            w = self.wide
            if self.timestamp.column is None:
                raise ValueError(
                    "data.wide needs data.timestamp.column (e.g. position, with format "
                    "sample_index): without it the time would be the row's place among all the "
                    "melted rows of the file, not within its series"
                )
            if not any(c.src == w.value_name for c in self.channels):
                raise ValueError(
                    f"data.wide: no channel reads the melted value column {w.value_name!r} "
                    "(data.channels[].source, or .name)"
                )
        names = [c.name for c in self.channels]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"data.channels: duplicate names {sorted(dup)}")
        path = self.path_columns.names if self.path_columns else []
        bad = (set(names) | set(self.columns) | set(path)) & _RESERVED
        if bad:
            raise ValueError(f"data: reserved column names used: {sorted(bad)}")
        clash = set(names) & set(self.columns)
        if clash:
            raise ValueError(f"data.columns repeats channel names {sorted(clash)}")
        clash = set(path) & (set(names) | set(self.columns))
        if clash:
            raise ValueError(f"data.path_columns groups repeat column names {sorted(clash)}")
        if self.label and self.label.default_from and self.label.default_from not in path:
            raise ValueError(
                f"data.label.default_from={self.label.default_from!r} is not a group of "
                "data.path_columns.pattern"
            )
        table = self.label.table if self.label else None
        if table and table.match not in ("file", "entity") and table.match not in path:
            raise ValueError(
                f"data.label.table.match={table.match!r} is not file, entity or a group of "
                "data.path_columns.pattern"
            )
        return self

    @property
    def path_names(self) -> list[str]:
        return self.path_columns.names if self.path_columns else []

    def metadata_types(self) -> dict[str, str]:
        """Every metadata column of the lake with its type: data.columns, then path columns."""
        out = dict(self.columns)
        if self.path_columns:
            for n in self.path_columns.names:
                out[n] = self.path_columns.types.get(n, "string")
        return out

    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.channels]

    def required_source_columns(self) -> list[str]:
        cols = [c.src for c in self.channels]
        cols += self.timestamp.columns  # none: sample_index by row position
        if self.entity.column:
            cols.append(self.entity.column)
        for p in self.entity.parts or []:
            if p != "file" and p not in self.path_names:
                cols.append(p)
        if self.label and not self.label.optional:
            cols.append(self.label.column)
        cols += list(self.columns)
        return list(dict.fromkeys(cols))


class LakeConfig(_Strict):
    uri: str = Field(default="lake", description="local folder (relative to the config) or a URI")
    max_file_bytes: int = Field(
        default=4 * 1024**3, gt=0, description="files over this are rejected"
    )
    max_rows_per_file: int = Field(default=500_000_000, gt=0)
    max_gzip_ratio: float = Field(
        default=100.0,
        gt=1,
        description="gzip files inflating more than this many times their compressed size are "
        "rejected as soon as decompression passes the ratio (bombs)",
    )
    compression: Literal["zstd", "snappy", "lz4", "none"] = "zstd"
    lock_timeout_s: float | None = Field(
        default=600.0,
        gt=0,
        description="seconds an ingest waits for the lake's commit lock before the file fails "
        "(outcome `failed`, exit 3); null: wait for ever",
    )

    @field_validator("uri")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("lake.uri is empty")
        return v


class TrackingConfig(_Strict):
    uri: str | None = Field(default=None, description="MLflow tracking URI (default: sqlite file)")
    experiment: str = "cnnlstm"
    registered_model: str | None = Field(
        default=None, description="registry name of trained models (default: data.name)"
    )
    artifact_location: str | None = Field(
        default=None,
        description="where new experiments keep artifacts (e.g. s3://bucket/mlartifacts); "
        "default: mlartifacts/ beside a sqlite store, the server's choice otherwise",
    )
    register_model: bool = Field(default=True, description="register each trained model")
    champion_metric: str = Field(
        default="auto",
        description="validation metric deciding champion promotion (a metric of the task, "
        "e.g. macro_f1, accuracy, rmse, f1); auto: the task's selection metric (classify "
        "macro_f1, regress and forecast rmse, anomaly f1). Test metrics are never used",
    )
    greater_is_better: bool | None = Field(
        default=None, description="direction of champion_metric (default: from its name)"
    )


class DriftConfig(_Strict):
    """Drift monitoring after each scoring run (`cnnlstm.drift`, docs/mlflow.md)."""

    enabled: bool = Field(
        default=True,
        description="compare each scoring run's readings and predicted mix with the model's "
        "training statistics; write drift.json and log a monitoring run",
    )
    psi_threshold: float = Field(
        default=0.2,
        gt=0,
        description="a channel (or the predicted-class mix) whose population stability index "
        "exceeds this is flagged (0.1: a moderate shift, 0.2: a large one)",
    )
    ks_threshold: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="a channel whose Kolmogorov-Smirnov statistic (largest CDF distance, "
        "against the stored training sample) exceeds this is flagged",
    )
    min_rows: int = Field(
        default=500, ge=1, description="channels with fewer scored values are reported, not flagged"
    )
    min_windows: int = Field(
        default=50, ge=1, description="a predicted mix over fewer windows is reported, not flagged"
    )


class ScoreConfig(_Strict):
    model_uri: str | None = Field(
        default=None, description="model to score with (default: models:/<registered>@champion)"
    )
    output: str = "predictions"
    batch_size: int = Field(default=4096, gt=0, description="windows per forward pass")
    files_per_batch: int = Field(
        default=16, gt=0, description="lake files per part (one score task; entity groups whole)"
    )
    where: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="score only rows whose (entity-level) columns equal these"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    drift: DriftConfig = Field(default_factory=DriftConfig)


class RunnerConfig(_Strict):
    """How the Prefect flows fan out their mapped tasks (ingest: one task per file)."""

    kind: Literal["threads", "dask"] = Field(
        default="threads",
        description="threads: Prefect's ThreadPoolTaskRunner in the flow's process; dask: "
        "prefect-dask's DaskTaskRunner (pip install 'cnnlstm[dask]')",
    )
    address: str | None = Field(
        default=None,
        description="an existing Dask scheduler (tcp://host:8786); default: a temporary "
        "LocalCluster of worker processes on this machine",
    )
    n_workers: int | None = Field(
        default=None, ge=1, description="LocalCluster worker processes (default: Dask's choice)"
    )
    threads_per_worker: int = Field(default=1, ge=1, description="LocalCluster threads/worker")


class Config(_Strict):
    data: DataConfig
    lake: LakeConfig = Field(default_factory=LakeConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)

    # where the file was read from: relative paths (lake.uri, outputs) resolve against it
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @model_validator(mode="after")
    def _task_fits(self) -> Config:
        from cnnlstm.tasks import check_config, make_task

        check_config(self.task, self.window, self.train.refit_full)
        task = make_task(self.task, self.window)
        task.check_monitor(self.train.monitor)
        task.selection_for(self.tracking.champion_metric)
        return self

    def resolve_path(self, p: str) -> str:
        """A local relative path is taken relative to the config file; URIs pass through."""
        if "://" in p or Path(p).is_absolute():
            return p
        return str((self.base_dir / p).resolve())

    @property
    def lake_uri(self) -> str:
        return self.resolve_path(self.lake.uri)


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form section.key=value")
    key, _, value = item.partition("=")
    parts = key.strip().split(".")
    node = raw
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if node is raw and p == "model" and nxt == "auto":  # the `model: auto` shorthand
            nxt = node[p] = {"arch": "auto"}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node = nxt
    node[parts[-1]] = yaml.safe_load(value)


ENV_PREFIX = "CNNLSTM__"


def env_overrides(environ: dict[str, str] | None = None) -> list[str]:
    """Overrides from the environment: ``CNNLSTM__LAKE__URI=s3://b/lake`` is ``lake.uri=...``.
    For containers and work pools, where the config file is baked into the image; applied
    before the CLI's ``--set`` values, so those win."""
    env = os.environ if environ is None else environ
    return [
        f"{k[len(ENV_PREFIX) :].lower().replace('__', '.')}={v}"
        for k, v in sorted(env.items())
        if k.startswith(ENV_PREFIX) and len(k) > len(ENV_PREFIX)
    ]


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a config file. Raises ConfigError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    for item in env_overrides() + list(overrides or []):
        _apply_override(raw, item)
    return config_from_dict(raw, base_dir=path.resolve().parent, source=str(path))


def config_from_dict(
    raw: dict[str, Any], base_dir: Path | None = None, source: str = "config"
) -> Config:
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError(f"{source}: invalid config\n" + "\n".join(lines)) from None
    if base_dir is not None:
        cfg.base_dir = base_dir
    return cfg


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML (what runs log)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
