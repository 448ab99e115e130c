"""The config reference in the docs matches the typed config, key for key.

Users write configs from docs/config.md (and the ``window``/``model``/``train`` tables of
docs/training.md) alone, so every key of the schema (``cnnlstm.config.Config``, walked through
its nested models) must have a row in a ``| key | type | default | meaning |`` table of those
docs, every row must name a real key, stated defaults must be the schema's, and the values listed
for a choice (``a`` \\| ``b``) must be exactly the schema's ``Literal`` values; the type
column must name the value's shape (int, float, bool, list, map) with the schema's numeric bounds
(``int >= 1``, ``float in [0, 1)``). A ``dict`` field (``data.columns``: name -> type) is one key,
documented as a map; a nested model's keys are documented one by one. Defaults stated in words
are allowed where the schema's default is None (``= name``, ``derived``), otherwise only through
``WORDED_DEFAULTS``.

How the docs are read: a heading whose text starts with a backticked section (``## `data`: ...``,
``## `window:` ...``, ``## `score.drift` ``) sets the section of the key tables under it (until a
heading of the same or a higher level; a sub-heading without one keeps it). Key paths are relative
to the section, ``[]`` marks list items (``channels[].name``), and ``a.x``, ``.y`` in one cell is
``a.x`` and ``a.y``.
"""

from __future__ import annotations

import enum
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import annotated_types
import pytest
import yaml
from pydantic import BaseModel, Field, create_model
from pydantic_core import PydanticUndefined

from cnnlstm.config import ChannelSpec, Config, DataConfig, LakeConfig
from cnnlstm.train_config import AugmentConfig, TrainConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"

# where each top-level section's keys are documented (docs/config.md points to training.md)
SECTION_DOCS: dict[str, set[str]] = {
    "data": {"config.md"},
    "lake": {"config.md"},
    "task": {"config.md"},
    "tracking": {"config.md"},
    "score": {"config.md"},
    "runner": {"config.md"},
    "window": {"config.md", "training.md"},
    "model": {"training.md"},
    "train": {"training.md"},
}

# Defaults the docs state in words although the schema's is a plain value: key -> (the doc's cell,
# the schema default it stands for, why words). Both halves are checked, so a change of either
# fails until this entry is updated.
WORDED_DEFAULTS: dict[str, tuple[str, Any, str]] = {
    "lake.max_file_bytes": ("4 GiB", 4 * 1024**3, "a byte count reads better in GiB"),
}

_REQUIRED = object()


# ---------------------------------------------------------------- the schema


def _args(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _strip(tp: Any) -> Any:
    """``Annotated[X, ...]`` -> X."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = _args(tp)[0]
    return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _nested(tp: Any) -> tuple[type[BaseModel], bool] | None:
    """The model a field descends into, and whether through a list; None for a leaf."""
    tp = _strip(tp)
    if _is_union(tp):
        options = [_strip(a) for a in _args(tp) if a is not type(None)]
        found = [_nested(a) for a in options]
        if any(found):
            assert len(options) == 1, f"union of a model with other types: {tp}"
            return found[0]
        return None
    if _is_model(tp):
        return tp, False
    if typing.get_origin(tp) is list and _is_model(_strip(_args(tp)[0])):
        return _strip(_args(tp)[0]), True
    return None


def choices(tp: Any) -> set[str] | None:
    """Every Literal / enum value reachable in a type (through unions, lists, dict values)."""
    tp = _strip(tp)
    if typing.get_origin(tp) is Literal:
        return {str(a) for a in _args(tp)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {str(m.value) for m in tp}
    out: set[str] = set()
    for a in _args(tp):
        sub = choices(a)
        if sub:
            out |= sub
    return out or None


def _schema_bounds(metadata: list[Any]) -> tuple[Any, Any]:
    lo = hi = None
    for m in metadata:
        if isinstance(m, annotated_types.Gt):
            lo = (m.gt, False)
        elif isinstance(m, annotated_types.Ge):
            lo = (m.ge, True)
        elif isinstance(m, annotated_types.Lt):
            hi = (m.lt, False)
        elif isinstance(m, annotated_types.Le):
            hi = (m.le, True)
    return lo, hi


_SIMPLE = {bool: "bool", int: "int", float: "float", str: "str"}


def kinds(tp: Any) -> set[str]:
    """The shapes a value may take: bool, int, float, str, list, map, choice (None left out)."""
    tp = _strip(tp)
    if _is_union(tp):
        return set().union(*(kinds(a) for a in _args(tp) if a is not type(None)))
    origin = typing.get_origin(tp)
    if origin is Literal or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
        return {"choice"}
    if origin is list:
        return {"list"}
    if origin is dict:
        return {"map"}
    if tp in _SIMPLE:
        return {_SIMPLE[tp]}
    raise AssertionError(f"a config type this test does not know: {tp}")


@dataclass(frozen=True)
class SchemaKey:
    path: str  # section.key, e.g. data.channels[].name
    annotation: Any
    default: Any  # _REQUIRED when the field has none
    bounds: tuple[tuple[float, bool] | None, tuple[float, bool] | None]  # (value, inclusive)


def schema_keys(model: type[BaseModel], prefix: str = "") -> tuple[dict[str, SchemaKey], set[str]]:
    """(leaf keys, intermediate nodes) of a model, as dotted paths with [] for list items."""
    leaves: dict[str, SchemaKey] = {}
    nodes: set[str] = set()
    for name, field in model.model_fields.items():
        if field.exclude:  # internal (Config.base_dir), never written by users
            continue
        path = prefix + name
        nested = _nested(field.annotation)
        if nested is None:
            default = field.get_default(call_default_factory=True)
            leaves[path] = SchemaKey(
                path,
                field.annotation,
                _REQUIRED if default is PydanticUndefined else default,
                _schema_bounds(field.metadata),
            )
            continue
        sub, is_list = nested
        nodes.add(path)
        sub_leaves, sub_nodes = schema_keys(sub, path + ("[]." if is_list else "."))
        leaves |= sub_leaves
        nodes |= sub_nodes
    return leaves, nodes


# ---------------------------------------------------------------- the docs

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_HEADING_SECTION = re.compile(r"^`([a-z_]+(?:\.[a-z_]+)*):?`")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_TICKED = re.compile(r"`([^`]*)`")


@dataclass(frozen=True)
class DocRow:
    where: str  # file:line
    path: str  # section.key
    type: str
    default: str


def _cells(line: str) -> list[str]:
    return [c.strip() for c in _CELL_SPLIT.split(line.strip().strip("|"))]


def doc_rows(name: str, text: str) -> tuple[list[DocRow], list[str]]:
    """The rows of a doc's key tables, and problems with the tables themselves."""
    rows: list[DocRow] = []
    problems: list[str] = []
    sections: dict[int, str | None] = {}  # heading level -> its section
    fenced = False
    header: list[str] | None = None
    for no, line in enumerate(text.splitlines(), 1):
        where = f"docs/{name}:{no}"
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        m = _HEADING.match(line)
        if m:
            level = len(m.group(1))
            sections = {lv: s for lv, s in sections.items() if lv < level}
            sec = _HEADING_SECTION.match(m.group(2))
            sections[level] = sec.group(1) if sec else None
            header = None
            continue
        if not line.lstrip().startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if header[0] != "key" or re.fullmatch(r"[\s|:-]+", line):  # not keys, or |---|
            continue
        if not {"type", "default"} <= set(header):
            problems.append(f"{where}: key table without type/default columns: {header}")
            continue
        if len(cells) != len(header):
            problems.append(f"{where}: {len(cells)} cells, header has {len(header)}")
            continue
        section = next(
            (sections[lv] for lv in sorted(sections, reverse=True) if sections[lv]), None
        )
        if section is None:
            problems.append(f"{where}: key table under no `section` heading")
            continue
        keys = _TICKED.findall(cells[0])
        if not keys:
            problems.append(f"{where}: key cell names no `key`: {cells[0]!r}")
            continue
        first = keys[0]
        parent = first.rsplit(".", 1)[0] + "." if "." in first else ""
        col = {h: cells[i] for i, h in enumerate(header)}
        for k in keys:
            k = parent + k[1:] if k.startswith(".") else k
            rows.append(DocRow(where, f"{section}.{k}", col["type"], col["default"]))
    return rows, problems


def read_docs() -> tuple[list[DocRow], list[str]]:
    rows: list[DocRow] = []
    problems: list[str] = []
    for name in sorted({d for ds in SECTION_DOCS.values() for d in ds}):
        r, p = doc_rows(name, (DOCS / name).read_text(encoding="utf-8"))
        rows += r
        problems += p
    return rows, problems


# ---------------------------------------------------------------- the checks


def undocumented(leaves: dict[str, SchemaKey], rows: list[DocRow]) -> list[str]:
    documented = {r.path for r in rows}
    return [
        f"{p}: in the schema, in no key table of docs/"
        + " or docs/".join(sorted(SECTION_DOCS.get(p.split(".")[0], {"config.md"})))
        for p in sorted(leaves)
        if p not in documented
    ]


def stale(leaves: dict[str, SchemaKey], nodes: set[str], rows: list[DocRow]) -> list[str]:
    out = []
    for r in rows:
        if r.path not in leaves and r.path not in nodes:
            out.append(f"{r.where}: documents `{r.path}`, which the schema does not have")
    return out


def misplaced(rows: list[DocRow]) -> list[str]:
    out = []
    seen: dict[str, str] = {}
    for r in rows:
        section = r.path.split(".")[0]
        doc = r.where.split(":")[0].removeprefix("docs/")
        if doc not in SECTION_DOCS.get(section, set()):
            out.append(f"{r.where}: `{r.path}`: section {section!r} is not documented in {doc}")
        if r.path in seen:
            out.append(f"{r.where}: `{r.path}` documented twice (also {seen[r.path]})")
        seen.setdefault(r.path, r.where)
    return out


def _plain(cell: str) -> str | None:
    """The value a default cell states: a backticked token (optionally followed by a
    parenthesised remark) or a bare number/true/false/null/none; None for words."""
    m = re.fullmatch(r"`([^`]+)`(\s*\(.*\))?", cell)
    if m:
        return m.group(1)
    if re.fullmatch(r"-?[\d,_]*\.?\d+(e-?\d+)?|true|false|null|none", cell):
        return cell
    return None


def _parse(raw: str) -> Any:
    if raw in ("true", "false"):
        return raw == "true"
    if raw in ("null", "none", "~"):
        return None
    try:
        return int(raw.replace(",", "").replace("_", ""))
    except ValueError:
        pass
    try:
        return float(raw.replace(",", "").replace("_", ""))
    except ValueError:
        pass
    if raw[:1] in "[{":
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            return raw
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return raw


def _same(doc: Any, raw: str, schema: Any) -> bool:
    if isinstance(schema, enum.Enum):
        schema = schema.value
    if schema is None:
        return doc is None
    if isinstance(schema, str):
        return raw == schema or doc == schema
    if isinstance(schema, bool) or isinstance(doc, bool):
        return doc is schema
    if isinstance(schema, int | float):
        return isinstance(doc, int | float) and doc == schema
    return doc == schema


def default_problems(leaves: dict[str, SchemaKey], rows: list[DocRow]) -> list[str]:
    out = []
    for r in rows:
        key = leaves.get(r.path)
        if key is None:
            continue
        cell, default = r.default.strip(), key.default
        if key.path in WORDED_DEFAULTS:
            words, value, _why = WORDED_DEFAULTS[key.path]
            if cell != words or default != value:
                out.append(
                    f"{r.where}: `{r.path}`: WORDED_DEFAULTS says the docs write {words!r} for "
                    f"{value!r}; docs: {cell!r}, schema: {default!r} (update the docs or the entry)"
                )
            continue
        if default is _REQUIRED:
            if cell != "required":
                out.append(f"{r.where}: `{r.path}` is required; docs' default: {cell!r}")
            continue
        if cell == "required":
            out.append(f"{r.where}: `{r.path}`: docs say required, schema default {default!r}")
            continue
        raw = _plain(cell)
        if raw is None:
            if cell == "" and default not in (None, [], {}):
                out.append(f"{r.where}: `{r.path}`: no default given; schema: {default!r}")
            elif cell and default is not None:
                out.append(
                    f"{r.where}: `{r.path}`: default in words ({cell!r}) for the value "
                    f"{default!r}: write the value, or add the key to WORDED_DEFAULTS with why"
                )
            continue
        if not _same(_parse(raw), raw, default):
            out.append(f"{r.where}: `{r.path}`: docs' default {cell!r}, schema: {default!r}")
    return out


def choice_problems(leaves: dict[str, SchemaKey], rows: list[DocRow]) -> list[str]:
    out = []
    for r in rows:
        key = leaves.get(r.path)
        if key is None:
            continue
        schema = choices(key.annotation)
        listed = set(_TICKED.findall(r.type)) if "\\|" in r.type else None
        if schema is None:
            if listed:
                out.append(f"{r.where}: `{r.path}`: docs list values {sorted(listed)}, no choice")
            continue
        if listed is None:
            out.append(
                f"{r.where}: `{r.path}`: a choice of {sorted(schema)}; the type column should "
                "list them as `a` \\| `b`"
            )
        elif listed != schema:
            out.append(
                f"{r.where}: `{r.path}`: docs list {sorted(listed)}, schema {sorted(schema)} "
                f"(missing from the docs: {sorted(schema - listed)}, "
                f"not in the schema: {sorted(listed - schema)})"
            )
    return out


# the word the type column must use for each shape (str is free: regex, IANA zone, one char)
_KIND_WORD = {
    "bool": r"\bbool\b",
    "int": r"\bint\b",
    "float": r"\bfloat\b",
    "list": r"\blist\b",
    "map": r"\bmap\b",
}
_NUM = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"
_INTERVAL = re.compile(rf"\bin ([(\[])\s*({_NUM}),\s*({_NUM})\s*([)\]])")
_COMPARE = re.compile(rf"(>=|>|<=|<)\s*({_NUM})\b")


def _doc_bounds(cell: str) -> tuple[Any, Any]:
    m = _INTERVAL.search(cell)
    if m:
        return (float(m.group(2)), m.group(1) == "["), (float(m.group(3)), m.group(4) == "]")
    lo = hi = None
    for op, num in _COMPARE.findall(cell):
        if op.startswith(">"):
            lo = (float(num), op == ">=")
        else:
            hi = (float(num), op == "<=")
    return lo, hi


def _norm_bound(b: Any, integer: bool, lower: bool) -> Any:
    """For an int, > 0 is >= 1 (and < 5 is <= 4): compare the inclusive form."""
    if b is None:
        return None
    v, inclusive = float(b[0]), b[1]
    if integer and not inclusive and v.is_integer():
        return (v + 1 if lower else v - 1, True)
    return (v, inclusive)


def _show(lo: Any, hi: Any) -> str:
    parts = [f"{'>=' if lo[1] else '>'} {lo[0]:g}"] if lo else []
    parts += [f"{'<=' if hi[1] else '<'} {hi[0]:g}"] if hi else []
    return " and ".join(parts) or "no bound"


def type_problems(leaves: dict[str, SchemaKey], rows: list[DocRow]) -> list[str]:
    """The type column names each shape a value may take (int, float, bool, list, map), and
    states a number's bounds exactly as the schema checks them (`> 0`, `>= 1`, `in [0, 1)`)."""
    out = []
    for r in rows:
        key = leaves.get(r.path)
        if key is None:
            continue
        shapes = kinds(key.annotation)
        cell = _TICKED.sub(" ", r.type)  # the listed values are choice_problems' business
        for shape in sorted(shapes & set(_KIND_WORD)):
            if not re.search(_KIND_WORD[shape], cell):
                out.append(f"{r.where}: `{r.path}` takes a {shape}; type column: {r.type!r}")
        if shapes == {"int"} and re.search(_KIND_WORD["float"], cell):
            out.append(f"{r.where}: `{r.path}` takes an int only; type column: {r.type!r}")
        if not shapes <= {"int", "float"}:
            continue
        integer = shapes == {"int"}
        doc_lo, doc_hi = _doc_bounds(cell)
        lo, hi = key.bounds
        doc = (_norm_bound(doc_lo, integer, True), _norm_bound(doc_hi, integer, False))
        schema = (_norm_bound(lo, integer, True), _norm_bound(hi, integer, False))
        if doc != schema:
            out.append(
                f"{r.where}: `{r.path}`: docs' bounds {_show(doc_lo, doc_hi)}, "
                f"schema {_show(lo, hi)}"
            )
    return out


# ---------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def schema() -> tuple[dict[str, SchemaKey], set[str]]:
    return schema_keys(Config)


@pytest.fixture(scope="module")
def rows() -> list[DocRow]:
    r, problems = read_docs()
    assert not problems, "\n".join(problems)
    return r


def _report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n" + "\n".join(problems)


def test_walk_sees_the_whole_schema(schema) -> None:
    leaves, nodes = schema
    assert {p.split(".")[0] for p in leaves} == set(SECTION_DOCS), "SECTION_DOCS != Config"
    # spot checks of the walk: nested, optional nested, list items, a map leaf, excluded field
    for p in ("data.entity.column", "data.label.dtype", "data.channels[].name", "data.columns"):
        assert p in leaves
    assert {"data.channels", "data.label", "score.drift", "train.augment"} <= nodes
    assert "base_dir" not in leaves


def test_every_schema_key_is_documented(schema, rows) -> None:
    problems = undocumented(schema[0], rows)
    assert not problems, _report(problems)


def test_every_documented_key_exists(schema, rows) -> None:
    problems = stale(*schema, rows) + misplaced(rows)
    assert not problems, _report(problems)


def test_documented_defaults_match(schema, rows) -> None:
    problems = default_problems(schema[0], rows)
    assert not problems, _report(problems)


def test_documented_choices_match(schema, rows) -> None:
    problems = choice_problems(schema[0], rows)
    assert not problems, _report(problems)


def test_documented_types_and_bounds_match(schema, rows) -> None:
    problems = type_problems(schema[0], rows)
    assert not problems, _report(problems)


def test_worded_defaults_are_few() -> None:
    assert len(WORDED_DEFAULTS) <= 3, "state defaults as values; words only with a reason"
    assert all(why for _, _, why in WORDED_DEFAULTS.values())


# ------------------------------------- the checks fail when the schema moves away from the docs


def _config_with(section: str, model: type[BaseModel]) -> type[BaseModel]:
    return create_model("Config", __base__=Config, **{section: (model, ...)})


def _data_with_channel_field() -> type[BaseModel]:
    channel = create_model("ChannelSpec", __base__=ChannelSpec, dummy_scale=(float, 1.0))
    data = create_model("DataConfig", __base__=DataConfig, channels=(list[channel], ...))
    return _config_with("data", data)


def _train_with_augment_field() -> type[BaseModel]:
    augment = create_model(
        "AugmentConfig", __base__=AugmentConfig, dummy_mix=(Literal["a", "b"] | None, None)
    )
    return _config_with("train", create_model("TrainConfig", __base__=TrainConfig, augment=augment))


def _lake_with(**fields: Any) -> type[BaseModel]:
    return _config_with("lake", create_model("LakeConfig", __base__=LakeConfig, **fields))


def _without(model: type[BaseModel], name: str) -> type[BaseModel]:
    """A copy of ``model`` lacking field ``name`` (create_model cannot delete a field)."""
    fields = {
        k: (f.annotation, f) for k, f in model.model_fields.items() if k != name and not f.exclude
    }
    return create_model(model.__name__, **fields)


Mutation = tuple[str, Any, str, str]
_COMPRESSION = Literal["zstd", "snappy", "lz4", "none"]
MUTATIONS: list[Mutation] = [
    (
        "top-level field",
        lambda: _lake_with(dummy_flag=(bool, False)),
        "undocumented",
        "lake.dummy_flag: in the schema",
    ),
    ("list-item field", _data_with_channel_field, "undocumented", "data.channels[].dummy_scale"),
    ("nested optional field", _train_with_augment_field, "undocumented", "train.augment.dummy_mix"),
    (
        "removed field",
        lambda: _config_with("lake", _without(LakeConfig, "compression")),
        "stale",
        "documents `lake.compression`, which the schema does not have",
    ),
    (
        "changed default",
        lambda: _lake_with(compression=(_COMPRESSION, "lz4")),
        "defaults",
        "`lake.compression`: docs' default '`zstd`', schema: 'lz4'",
    ),
    (
        "changed number default",
        lambda: _lake_with(max_gzip_ratio=(float, Field(default=50.0, gt=1))),
        "defaults",
        "`lake.max_gzip_ratio`: docs' default '100', schema: 50.0",
    ),
    (
        "new choice",
        lambda: _lake_with(compression=(_COMPRESSION | Literal["brotli"], "zstd")),
        "choices",
        "missing from the docs: ['brotli']",
    ),
    (
        "changed bound",
        lambda: _lake_with(max_gzip_ratio=(float, Field(default=100.0, ge=1))),
        "types",
        "`lake.max_gzip_ratio`: docs' bounds > 1, schema >= 1",
    ),
    (
        "changed type",
        lambda: _lake_with(max_rows_per_file=(float, Field(default=5e8, gt=0))),
        "types",
        "`lake.max_rows_per_file` takes a float",
    ),
]


def _problems(check: str, root: type[BaseModel], rows: list[DocRow]) -> list[str]:
    leaves, nodes = schema_keys(root)
    if check == "undocumented":
        return undocumented(leaves, rows)
    if check == "stale":
        return stale(leaves, nodes, rows)
    if check == "defaults":
        return default_problems(leaves, rows)
    if check == "types":
        return type_problems(leaves, rows)
    return choice_problems(leaves, rows)


@pytest.mark.parametrize(
    ("what", "make", "check", "needle"), MUTATIONS, ids=[m[0] for m in MUTATIONS]
)
def test_checks_catch_a_schema_change(rows, what: str, make, check: str, needle: str) -> None:
    """A dummy change of the schema, in memory, is reported by name (the real one is not)."""
    assert any(needle in p for p in _problems(check, make(), rows)), f"{what}: not reported"
    assert not any(needle in p for p in _problems(check, Config, rows))
