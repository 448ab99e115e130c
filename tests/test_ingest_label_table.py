"""Labels from an index file (``data.label.table``): the CinC 2017 layout (one file per recording,
``REFERENCE.csv`` of ``A00001,N``), a table with a header matched on a path column, per-row
lookup by entity, ids the table lacks, dtype conversion, config errors and the ledger
fingerprint. Through the real ingest path; every row accounted for."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import counts, lake_frame, make_config, quarantine_frame, write_source

import cnnlstm.label_table as label_table
from cnnlstm.config import ConfigError
from cnnlstm.ingest import ingest, mapping_fingerprint
from cnnlstm.label_table import load_label_table

BY_POSITION = {
    "column": None,
    "format": "sample_index",
    "sample_rate_hz": 300,
    "start": "2017-01-01T00:00:00Z",
}
SIGNAL = "val\n1.0\n2.0\n3.0\n"
CINC_TABLE = {"path": "ref/REFERENCE.csv", "names": ["record", "class"], "key": "record"}
CINC_TABLE |= {"value": "class"}


def _cinc(tmp_path: Path, label: dict[str, Any] | None = None, **data: Any):
    """One signal file per recording, entity = file stem, labels from ref/REFERENCE.csv."""
    lab = {"column": "label", "dtype": "string", "table": CINC_TABLE} | (label or {})
    over = {
        "entity": {"column": None, "from_filename": ".*"},
        "timestamp": BY_POSITION,
        "channels": [{"name": "val"}],
        "label": lab,
    } | data
    return make_config(tmp_path, data=over)


def _labels(cfg) -> dict[str, list]:
    df = lake_frame(cfg)
    per = df.group_by("entity_id", maintain_order=True).agg(
        pl.col("label").unique(maintain_order=True)
    )
    return {e: labs for e, labs in zip(per["entity_id"], per["label"].to_list(), strict=True)}


def _accounted(rep) -> None:
    assert rep.rows_read == rep.accepted + rep.quarantined + rep.duplicates


# ------------------------------------------------------------------ (a) match the file stem


def test_headerless_table_by_file_stem(tmp_path: Path):
    land = tmp_path / "landing"
    for rec in ("A00001", "A00002", "A00003"):
        write_source(land / f"{rec}.csv", SIGNAL)
    # blanks around fields are stripped; an identical duplicate line is fine
    write_source(tmp_path / "ref" / "REFERENCE.csv", "A00001,N\n A00002 , A \nA00003,~\nA00001,N\n")
    cfg = _cinc(tmp_path)
    assert cfg.data.label.optional
    assert "label" not in cfg.data.required_source_columns()
    rep = ingest(cfg, [str(land)])
    assert [counts(f) for f in rep.files] == [("committed", 3, 3, 0, 0)] * 3
    assert _labels(cfg) == {"A00001": ["N"], "A00002": ["A"], "A00003": ["~"]}
    # a file that has the label column keeps its own labels
    write_source(land / "B00001.csv", "val,label\n1.0,O\n2.0,O\n")
    (f,) = ingest(cfg, [str(land / "B00001.csv")]).files
    assert counts(f) == ("committed", 2, 2, 0, 0)
    assert _labels(cfg)["B00001"] == ["O"]


def test_the_table_is_read_once_per_ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    land = tmp_path / "landing"
    for rec in ("A00001", "A00002", "A00003"):
        write_source(land / f"{rec}.csv", SIGNAL)
    ref = write_source(tmp_path / "ref" / "REFERENCE.csv", "A00001,N\nA00002,A\nA00003,O\n")
    calls: list[str] = []
    real = label_table._read
    monkeypatch.setattr(label_table, "_read", lambda p, s: calls.append(p) or real(p, s))
    label_table._CACHE.clear()
    cfg = _cinc(tmp_path)
    assert ingest(cfg, [str(land)]).clean
    assert len(calls) == 1
    write_source(ref, "A00001,N\nA00002,A\nA00003,N\nA00004,N\n")  # an edit: read again
    load_label_table(cfg)
    assert len(calls) == 2


# ------------------------------------------------------------------ (b) a header, a path group


def test_table_with_header_matched_on_a_path_group(tmp_path: Path):
    land = tmp_path / "landing"
    for patient, rec in (("p1", "r1"), ("p1", "r2"), ("p2", "r1")):
        write_source(land / patient / f"{rec}.csv", SIGNAL)
    write_source(tmp_path / "meta.csv", "patient,age,diagnosis\np1,61,MI\np2,45,NORM\n")
    cfg = make_config(
        tmp_path,
        data={
            "landing": str(land),
            "entity": {"column": None, "parts": ["patient", "file"]},
            "timestamp": BY_POSITION,
            "channels": [{"name": "val"}],
            "path_columns": {"pattern": r"(?P<patient>p\d+)/"},
            "label": {
                "column": "label",
                "dtype": "string",
                "table": {
                    "path": "meta.csv",
                    "key": "patient",
                    "value": "diagnosis",
                    "match": "patient",
                },
            },
        },
    )
    rep = ingest(cfg, [str(land)])
    assert rep.clean and rep.totals()["accepted"] == 9
    assert _labels(cfg) == {"p1/r1": ["MI"], "p1/r2": ["MI"], "p2/r1": ["NORM"]}


# ------------------------------------------------------------------ (c) per row, by entity


def test_per_row_lookup_by_entity_column(tmp_path: Path):
    src = write_source(tmp_path / "all.csv", "device,val\nd1,1.0\nd1,2.0\nd2,3.0\nd3,4.0\nd2,5.0\n")
    write_source(tmp_path / "labels.csv", "id,y\nd1,walk\nd2,run\nd3,sit\n")
    cfg = make_config(
        tmp_path,
        data={
            "entity": {"column": "device"},
            "timestamp": BY_POSITION,
            "channels": [{"name": "val"}],
            "label": {
                "column": "label",
                "dtype": "string",
                "table": {"path": "labels.csv", "key": "id", "value": "y", "match": "entity"},
            },
        },
    )
    (f,) = ingest(cfg, [str(src)]).files
    assert counts(f) == ("committed", 5, 5, 0, 0)
    assert _labels(cfg) == {"d1": ["walk"], "d2": ["run"], "d3": ["sit"]}
    # a device the table lacks: only its rows are quarantined
    other = write_source(tmp_path / "more.csv", "device,val\nd9,1.0\nd9,2.0\nd3,9.0\n")
    (g,) = ingest(cfg, [str(other)]).files
    _accounted(g)
    assert counts(g)[2:4] == (1, 2)
    q = quarantine_frame(cfg).filter(pl.col("source_file").str.ends_with("more.csv"))
    assert q["source_row"].to_list() == [1, 2]
    assert set(q["reason"]) == {"label: no row for 'd9' in the label table labels.csv (key id)"}


# ------------------------------------------------------------------ (d) a key the table lacks


def test_a_file_the_table_lacks_is_quarantined_with_the_reason(tmp_path: Path):
    land = tmp_path / "landing"
    write_source(land / "A00001.csv", SIGNAL)
    write_source(land / "A00099.csv", SIGNAL)
    write_source(tmp_path / "ref" / "REFERENCE.csv", "A00001,N\n")
    cfg = _cinc(tmp_path)
    rep = ingest(cfg, [str(land)])
    by = {Path(f.source).name: f for f in rep.files}
    assert counts(by["A00001.csv"]) == ("committed", 3, 3, 0, 0)
    assert counts(by["A00099.csv"]) == ("committed", 3, 0, 3, 0)
    for f in rep.files:
        _accounted(f)
    q = quarantine_frame(cfg)
    assert q["source_row"].to_list() == [1, 2, 3]
    assert set(q["reason"]) == {
        "label: no row for 'A00099' in the label table REFERENCE.csv (key record)"
    }
    assert _labels(cfg) == {"A00001": ["N"]}


def test_label_default_labels_the_ids_the_table_lacks(tmp_path: Path):
    land = tmp_path / "landing"
    write_source(land / "A00001.csv", SIGNAL)
    write_source(land / "A00099.csv", SIGNAL)
    write_source(tmp_path / "ref" / "REFERENCE.csv", "A00001,A\n")
    cfg = _cinc(tmp_path, label={"default": "N"})
    rep = ingest(cfg, [str(land)])
    assert [counts(f) for f in rep.files] == [("committed", 3, 3, 0, 0)] * 2
    assert _labels(cfg) == {"A00001": ["A"], "A00099": ["N"]}


# ------------------------------------------------------------------ (e) dtype conversion


def test_int_labels_from_the_table_are_converted(tmp_path: Path):
    land = tmp_path / "landing"
    for rec in ("A00001", "A00002", "A00003"):
        write_source(land / f"{rec}.csv", SIGNAL)
    write_source(tmp_path / "ref" / "REFERENCE.csv", "A00001,1\nA00002,2.0\nA00003,x\n")
    cfg = _cinc(tmp_path, label={"dtype": "int"})
    rep = ingest(cfg, [str(land)])
    by = {Path(f.source).name: f for f in rep.files}
    assert counts(by["A00003.csv"]) == ("committed", 3, 0, 3, 0)
    df = lake_frame(cfg)
    assert df["label"].dtype == pl.Int64
    assert _labels(cfg) == {"A00001": [1], "A00002": [2]}
    assert set(quarantine_frame(cfg)["reason"]) == {"label: cannot parse 'x' as an integer"}


# ------------------------------------------------------------------ (f) config errors


def test_table_and_default_from_are_exclusive(tmp_path: Path):
    with pytest.raises(ConfigError, match="give table or default_from"):
        _cinc(
            tmp_path,
            label={"default_from": "patient"},
            path_columns={"pattern": r"(?P<patient>p\d+)/"},
        )


def test_match_must_be_file_entity_or_a_path_group(tmp_path: Path):
    with pytest.raises(ConfigError, match="data.label.table.match='patient'"):
        _cinc(tmp_path, label={"table": CINC_TABLE | {"match": "patient"}})


def test_a_missing_table_file_is_a_config_error_at_ingest_start(tmp_path: Path):
    src = write_source(tmp_path / "landing" / "A00001.csv", SIGNAL)
    cfg = _cinc(tmp_path)
    with pytest.raises(ConfigError, match="data.label.table.path: cannot read .*REFERENCE.csv"):
        ingest(cfg, [str(src)])
    assert lake_frame(cfg).height == 0


def test_a_key_column_missing_from_the_table_is_a_config_error(tmp_path: Path):
    src = write_source(tmp_path / "landing" / "A00001.csv", SIGNAL)
    write_source(tmp_path / "ref" / "REFERENCE.csv", "id,class\nA00001,N\n")
    table = {"path": "ref/REFERENCE.csv", "key": "record", "value": "class"}
    cfg = _cinc(tmp_path, label={"table": table})
    with pytest.raises(ConfigError, match="data.label.table.key='record': no such column"):
        ingest(cfg, [str(src)])


def test_duplicate_keys_with_different_labels_are_a_config_error(tmp_path: Path):
    src = write_source(tmp_path / "landing" / "A00001.csv", SIGNAL)
    write_source(tmp_path / "ref" / "REFERENCE.csv", "A00001,N\nA00002,A\nA00002,O\n")
    cfg = _cinc(tmp_path)
    with pytest.raises(ConfigError, match="key 'A00002' .* two labels: 'A' and 'O'"):
        ingest(cfg, [str(src)])


def test_a_table_that_is_not_csv_is_a_config_error(tmp_path: Path):
    src = write_source(tmp_path / "landing" / "A00001.csv", SIGNAL)
    write_source(tmp_path / "ref" / "REFERENCE.csv", "A00001,N,extra\nA00002,A,x\n")
    cfg = _cinc(tmp_path)  # two names, three fields
    with pytest.raises(ConfigError, match="data.label.table.path: .* not a readable CSV table"):
        ingest(cfg, [str(src)])


# ------------------------------------------------------------------ (g) the ledger fingerprint


def test_fingerprint_unchanged_without_a_table(tmp_path: Path):
    d = make_config(tmp_path).data
    dump = d.model_dump(mode="json")
    for key in ("record_end", "decimal_comma", "encoding"):
        del dump["csv"][key]
    del dump["label"]["table"]  # the key added with label tables
    keys = ("entity", "timestamp", "label", "columns", "keep_other_columns")
    keys += ("allow_missing_channels", "csv", "path_columns")
    doc = {k: dump[k] for k in keys} | {
        "channels": [{k: c[k] for k in ("name", "source", "min", "max")} for c in dump["channels"]]
    }
    assert (
        mapping_fingerprint(d)
        == hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    )


def test_fingerprint_follows_the_table_content(tmp_path: Path):
    land = tmp_path / "landing"
    write_source(land / "A00001.csv", SIGNAL)
    ref = write_source(tmp_path / "ref" / "REFERENCE.csv", "A00001,N\n")
    cfg = _cinc(tmp_path)
    before = mapping_fingerprint(cfg.data, load_label_table(cfg))
    assert before != mapping_fingerprint(_cinc(tmp_path, label={"table": None}).data)
    assert counts(ingest(cfg, [str(land)]).files[0]) == ("committed", 3, 3, 0, 0)
    assert ingest(cfg, [str(land)]).files[0].outcome == "skipped"
    write_source(ref, "A00001,A\n")
    assert mapping_fingerprint(cfg.data, load_label_table(cfg)) != before
    (f,) = ingest(cfg, [str(land)], reprocess=True).files  # read again, its rows replaced
    assert counts(f) == ("committed", 3, 3, 0, 0)
    assert _labels(cfg) == {"A00001": ["A"]}
    with pytest.raises(ValueError, match="needs the table read"):
        mapping_fingerprint(cfg.data)


def test_cli_ingest_exits_2_on_an_unreadable_table(tmp_path: Path):
    import yaml
    from typer.testing import CliRunner

    from cnnlstm.cli import app

    src = write_source(tmp_path / "landing" / "A00001.csv", SIGNAL)
    raw = _cinc(tmp_path).model_dump(mode="json", exclude_none=True)
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, ["ingest", str(src), "-c", str(conf)])
    assert res.exit_code == 2, res.output
    assert "data.label.table.path" in res.output
