"""``data.csv.record_end``: records ended by a character besides the line end, as the WISDM
activity file ``WISDM_ar_v1.1_raw.txt`` writes them (``33,Jogging,49105962326000,-0.69,12.68,
0.50;``), damaged lines included (two records on one line, an empty last field, no terminator on
the last line). Tiny generated files through the whole ingest path; exact lake rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import counts, lake_frame, make_config, quarantine_frame, write_source

from cnnlstm.config import ConfigError
from cnnlstm.formats import text
from cnnlstm.ingest import ingest, mapping_fingerprint

NAMES = ["user", "activity", "timestamp", "x", "y", "z"]
# (user, activity, time in ns, x, y, z): values as the WISDM file writes them
RECORDS = [
    ("33", "Jogging", 49105962326000, "-0.6946377", "12.680544", "0.50395286"),
    ("33", "Jogging", 49106062271000, "5.012288", "11.264028", "0.95342433"),
    ("33", "Jogging", 49106112167000, "4.903325", "10.882658", "-0.08172209"),
    ("11", "Walking", 1867172313000, "4.4", "4.4", "-1.5"),
]


def _line(rec: tuple) -> str:
    return ",".join(str(v) for v in rec)


def _wisdm(tmp_path: Path, record_end: str | None = ";", **data):
    csv = {"header": False, "names": NAMES} | ({"record_end": record_end} if record_end else {})
    return make_config(
        tmp_path,
        data={
            "entity": {"column": "user"},
            "timestamp": {"column": "timestamp", "format": "epoch_ns"},
            "channels": [{"name": "x"}, {"name": "y"}, {"name": "z"}],
            "label": {"column": "activity", "dtype": "string"},
            "csv": csv,
        }
        | data,
    )


def _f32(values) -> list[float]:
    return [float(np.float32(float(v))) for v in values]


def _expect(cfg, records) -> None:
    """The lake holds exactly ``records`` (sorted as `lake_frame` sorts: entity, time)."""
    df = lake_frame(cfg)
    recs = sorted(records, key=lambda r: (r[0], r[2]))
    assert df["entity_id"].to_list() == [r[0] for r in recs]
    assert [t.timestamp() for t in df["timestamp"].to_list()] == [r[2] / 1e9 for r in recs]
    assert df["label"].to_list() == [r[1] for r in recs]
    for j, ch in enumerate(("x", "y", "z"), 3):
        assert df[ch].to_list() == _f32(r[j] for r in recs), ch


CLEAN = "".join(_line(r) + ";\n" for r in RECORDS)


# ------------------------------------------------------------------ (a) a clean file


@pytest.mark.parametrize("name", ["WISDM_ar_v1.1_raw.txt", "WISDM_ar_v1.1_raw.txt.gz"])
def test_clean_terminated_records_are_all_accepted(tmp_path: Path, name: str):
    """Every record ends with ';' and a newline: all rows accepted, exact values (a plain file
    is memory-mapped by ingest and read here whole; a gzip file arrives as bytes)."""
    src = write_source(tmp_path / name, CLEAN)
    cfg = _wisdm(tmp_path)
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 4, 4, 0, 0)
    _expect(cfg, RECORDS)
    assert quarantine_frame(cfg).height == 0


# ------------------------------------------------------------------ (e) the problem it solves


def test_without_record_end_every_row_is_quarantined(tmp_path: Path):
    """The last field ``0.50395286;`` is not a number: today's reading of the WISDM file."""
    src = write_source(tmp_path / "WISDM_ar_v1.1_raw.txt", CLEAN)
    cfg = _wisdm(tmp_path, record_end=None)
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 4, 0, 4, 0)
    q = quarantine_frame(cfg)
    assert q["source_row"].to_list() == [1, 2, 3, 4]
    assert all("z: cannot parse" in r and ";" in r for r in q["reason"].to_list())


# ------------------------------------------------------------------ (b) two records on one line


def test_a_line_holding_two_records_gives_both(tmp_path: Path):
    body = (
        _line(RECORDS[0])
        + ";\n"
        + _line(RECORDS[1])
        + ";"
        + _line(RECORDS[2])
        + ";\n"
        + _line(RECORDS[3])
        + ";\n"
    )
    src = write_source(tmp_path / "raw.txt", body)
    cfg = _wisdm(tmp_path)
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 4, 4, 0, 0)
    _expect(cfg, RECORDS)


# ------------------------------------------------------------------ (c) an empty last field


def test_an_empty_last_field_is_a_missing_channel(tmp_path: Path):
    """``4.4,4.4,;`` (the real file's damage): z is missing, the record is quarantined naming z
    and numbered by record (the two-record line before it counts twice); the others are kept
    and every record is accounted for."""
    body = (
        _line(RECORDS[0])
        + ";"
        + _line(RECORDS[1])
        + ";\n"
        + "11,Walking,1867172313000,4.4,4.4,;\n"
        + _line(RECORDS[2])
        + ";\n"
    )
    src = write_source(tmp_path / "raw.txt", body)
    cfg = _wisdm(tmp_path)
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 4, 3, 1, 0)
    assert rep.rows_read == rep.accepted + rep.quarantined + rep.duplicates
    _expect(cfg, RECORDS[:3])
    q = quarantine_frame(cfg)
    assert q["source_row"].to_list() == [3]
    assert q["reason"].to_list() == ["z: missing value (value null)"]

    ok = _wisdm(tmp_path / "allowed", allow_missing_channels=True)
    (rep,) = ingest(ok, [str(src)]).files
    assert counts(rep) == ("committed", 4, 4, 0, 0)
    z = lake_frame(ok).filter(pl.col("entity_id") == "11")["z"].to_list()
    assert z == [None]  # stored as a null channel value


# ------------------------------------------------------------------ (d) the end of the file


@pytest.mark.parametrize(
    "tail",
    ["", ";", ";\n", ";  \r\n", "\n"],
    ids=["bare", "terminator-only", "terminator-newline", "blanks-crlf", "newline-only"],
)
def test_the_last_record_needs_no_terminator_and_makes_no_blank_row(tmp_path: Path, tail: str):
    body = "".join(_line(r) + ";\n" for r in RECORDS[:3]) + _line(RECORDS[3]) + tail
    src = write_source(tmp_path / "raw.txt", body)
    cfg = _wisdm(tmp_path)
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 4, 4, 0, 0)
    _expect(cfg, RECORDS)


def test_empty_records_make_no_blank_rows(tmp_path: Path):
    """Terminators with nothing between them (``;;``, a line holding only ``;``) are empty
    records: dropped, not quarantined as blank lines, and they do not shift the numbering."""
    body = (
        ";\n"
        + _line(RECORDS[0])
        + ";;\n"
        + ";\n"
        + _line(RECORDS[1])
        + ";;"
        + _line(RECORDS[2])
        + ";\n"
        + "11,Walking,1867172313000,4.4,bad,-1.5;\n"
        + ";"
    )
    src = write_source(tmp_path / "raw.txt", body)
    cfg = _wisdm(tmp_path)
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 4, 3, 1, 0)
    q = quarantine_frame(cfg)
    assert q["source_row"].to_list() == [4]
    assert "y: cannot parse 'bad'" in q["reason"][0]


def test_rewrite_semantics():
    """The bytes `read_csv` parses: one record per line; skip_rows lines kept as they are."""
    cfg = _wisdm(Path("/nonexistent")).data
    assert text.records_as_lines(b"a;\nb;c;  \r\nd", cfg) == b"a\nb\nc\nd"
    assert text.records_as_lines(b"a;;\n;\n\nb;", cfg) == b"a\n\nb\n"  # a blank line stays
    assert text.records_as_lines(b"a; b", cfg) == b"a\n b"  # blanks before a record are its
    skip = cfg.model_copy(update={"csv": cfg.csv.model_copy(update={"skip_rows": 1})})
    assert text.records_as_lines(b"by X; 2024\na;b;\n", skip) == b"by X; 2024\na\nb\n"


# ------------------------------------------------------------------ (g) the fast path


def test_a_clean_file_takes_the_fast_path_and_equals_a_file_without_terminators(tmp_path: Path):
    """polars parses the numbers (float columns: the fast path; the careful path gives text),
    and the frame is the one a file without terminators gives, row numbers included."""
    cfg = _wisdm(tmp_path).data
    plain = _wisdm(tmp_path, record_end=None).data
    body = _line(RECORDS[0]) + ";" + _line(RECORDS[1]) + ";\n" + CLEAN.split("\n", 2)[2]
    got, bad = text.read_csv(body.encode(), cfg)
    want, bad_plain = text.read_csv("".join(_line(r) + "\n" for r in RECORDS).encode(), plain)
    assert bad == bad_plain == []
    assert got.schema["x"] == pl.Float64 and got.schema["timestamp"] == pl.Int64
    assert got.equals(want)

    path = write_source(tmp_path / "raw.txt", CLEAN)  # the memory-mapped form: read from disk
    from_disk, bad = text.read_csv(None, cfg, path=str(path))
    assert bad == [] and from_disk.equals(want)


def test_a_quarantined_row_of_the_fast_path_shows_its_record_text(tmp_path: Path):
    """A value out of range (fast path): ``raw`` is the text of that record, found by its
    record number although an earlier line holds two records."""
    body = _line(RECORDS[0]) + ";" + _line(RECORDS[1]) + ";\n" + _line(RECORDS[2]) + ";\n"
    src = write_source(tmp_path / "raw.txt", body)
    cfg = _wisdm(tmp_path, channels=[{"name": "x", "max": 5.0}, {"name": "y"}, {"name": "z"}])
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 3, 2, 1, 0)
    q = quarantine_frame(cfg)
    assert q["source_row"].to_list() == [2]
    assert '"x":"5.012288"' in q["raw"][0] and '"timestamp":"49106062271000"' in q["raw"][0]


# ------------------------------------------------------------------ wide text


def test_wide_text_with_terminated_records(tmp_path: Path):
    """data.wide reads the rewritten text: one series per record."""
    src = write_source(tmp_path / "Toy_TRAIN.txt", "1,0.5,0.25;2,1.0,2.0;\n1,3.0;")
    cfg = make_config(
        tmp_path,
        data={
            "entity": {"column": None, "parts": ["file", "series"]},
            "timestamp": {
                "column": "position",
                "format": "sample_index",
                "sample_rate_hz": 1,
                "start": "2024-01-01T00:00:00Z",
            },
            "channels": [{"name": "value"}],
            "label": {"column": "class", "dtype": "int"},
            "csv": {"header": False, "names": ["class"], "record_end": ";"},
            "wide": {},
        },
    )
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 5, 5, 0, 0)
    df = lake_frame(cfg)
    assert df["entity_id"].to_list() == ["Toy_TRAIN/0"] * 2 + ["Toy_TRAIN/1"] * 2 + ["Toy_TRAIN/2"]
    assert df["value"].to_list() == [0.5, 0.25, 1.0, 2.0, 3.0]
    assert df["label"].to_list() == [1, 1, 2, 2, 1]


# ------------------------------------------------------------------ (f) config errors


@pytest.mark.parametrize(
    ("record_end", "needles"),
    [
        (",", ["data.csv.record_end ',' is not allowed", "it is data.csv.delimiter"]),
        (";;", ["data.csv.record_end", "at most 1"]),
        ("", ["data.csv.record_end", "at least 1"]),
        ("\n", ["data.csv.record_end", "a line end already ends a record"]),
        ("\r", ["data.csv.record_end", "a line end already ends a record"]),
        (" ", ["data.csv.record_end", "blank"]),
        ("\t", ["data.csv.record_end", "blank"]),
        ('"', ["data.csv.record_end", "it is data.csv.quote_char"]),
    ],
)
def test_bad_record_end_is_a_config_error_naming_the_key(
    tmp_path: Path, record_end: str, needles: list[str]
):
    with pytest.raises(ConfigError) as e:
        make_config(tmp_path, data={"csv": {"record_end": record_end}})
    for n in needles:
        assert n in str(e.value), str(e.value)


def test_record_end_equal_to_an_unused_delimiter_or_quote_is_allowed(tmp_path: Path):
    """With whitespace: true the delimiter and quote_char are unused; without quoting the quote
    character is free."""
    ws = make_config(tmp_path, data={"csv": {"whitespace": True, "record_end": ","}})
    assert ws.data.csv.record_end == ","
    nq = make_config(tmp_path, data={"csv": {"quote_char": None, "record_end": '"'}})
    assert nq.data.csv.record_end == '"'


# ------------------------------------------------------------------ the ledger fingerprint


def test_fingerprint_unchanged_without_record_end_and_changed_with_it(tmp_path: Path):
    """A config without record_end keeps the fingerprint it had before the key existed (the
    csv dump without it); one with it is another mapping (its files are read again)."""
    d = make_config(tmp_path).data
    dump = d.model_dump(mode="json")
    for key in ("record_end", "decimal_comma", "encoding"):  # keys added since
        del dump["csv"][key]
    del dump["label"]["table"]  # likewise data.label.table
    keys = ("entity", "timestamp", "label", "columns", "keep_other_columns")
    keys += ("allow_missing_channels", "csv", "path_columns")
    doc = {k: dump[k] for k in keys} | {
        "channels": [{k: c[k] for k in ("name", "source", "min", "max")} for c in dump["channels"]]
    }
    before = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    assert mapping_fingerprint(d) == before
    with_end = make_config(tmp_path, data={"csv": {"record_end": ";"}}).data
    assert mapping_fingerprint(with_end) != before
