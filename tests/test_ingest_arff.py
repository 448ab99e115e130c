"""Weka ARFF landing files (`cnnlstm.formats.arff`): tiny hand-made files through the whole
ingest path; exact lake rows, quarantine rows (reasons naming the file line) and accounting;
rejections; the wide layout on a UCR-like univariate ARFF; content sniffing; the default
include."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import counts, lake_frame, make_config, quarantine_frame, write_source

from cnnlstm.config import DataConfig
from cnnlstm.ingest import ingest

START = datetime(2013, 1, 1, tzinfo=UTC)


def _at(*us: int) -> list[datetime]:
    return [START + timedelta(microseconds=u) for u in us]


# EEG Eye State-like: 128 Hz, two channels (one quoted name with a blank), a nominal class
EEG = """\
% EEG eye state (a tiny excerpt)
%   128 Hz, one subject

@RELATION 'EEG DATA'

@Attribute AF3 NUMERIC
@attribute 'F 7' real   % a quoted name with a blank
@ATTRIBUTE eyeDetection {0,1}

@DATA
4329.23,4009.23,0
% a comment line between rows
4324.62, 4004.62 ,0

4327.69,4006.67,1
4328.72,4011.79,1
"""


def _eeg_config(tmp_path: Path, **data) -> object:
    return make_config(
        tmp_path,
        data={
            "entity": {"column": None, "constant": "subject1"},
            "timestamp": {
                "column": None,
                "format": "sample_index",
                "sample_rate_hz": 128,
                "start": "2013-01-01T00:00:00Z",
            },
            "channels": [{"name": "AF3"}, {"name": "F7", "source": "F 7"}],
            "label": {"column": "eyeDetection", "dtype": "int"},
            **data,
        },
    )


def test_eeg_like_file_with_comments_quoted_names_and_position_timestamps(tmp_path: Path):
    src = write_source(tmp_path / "land" / "EEG Eye State.arff", EEG)
    cfg = _eeg_config(tmp_path)
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 4, 4, 0, 0)
    assert "ARFF relation 'EEG DATA': 3 attributes (2 numeric, 1 nominal), 4 data rows" in (
        rep.notes
    )
    df = lake_frame(cfg)
    assert df["entity_id"].to_list() == ["subject1"] * 4
    # row i (0-based, blank and comment lines are no rows) at i / 128 s
    assert df["timestamp"].to_list() == _at(0, 7812, 15625, 23438)
    assert df["AF3"].to_list() == pytest.approx([4329.23, 4324.62, 4327.69, 4328.72])
    assert df["F7"].to_list() == pytest.approx([4009.23, 4004.62, 4006.67, 4011.79])
    assert df["label"].to_list() == [0, 0, 1, 1]


def test_question_mark_is_missing(tmp_path: Path):
    body = "@relation m\n@attribute a numeric\n@attribute b numeric\n@data\n1,2\n?,3\n4,?\n"
    src = write_source(tmp_path / "m.arff", body)
    channels = [{"name": "a"}, {"name": "b"}]
    cfg = _eeg_config(tmp_path, channels=channels, label=None)
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 3, 1, 2, 0)
    q = quarantine_frame(cfg)
    assert q["source_row"].to_list() == [2, 3]
    assert all("missing" in r for r in q["reason"].to_list())

    cfg2 = _eeg_config(tmp_path / "ok", channels=channels, label=None, allow_missing_channels=True)
    (rep,) = ingest(cfg2, [str(src)]).files
    assert counts(rep) == ("committed", 3, 3, 0, 0)
    df = lake_frame(cfg2)
    assert df["a"].to_list() == [1.0, None, 4.0]
    assert df["b"].to_list() == [2.0, 3.0, None]
    assert df["timestamp"].to_list() == _at(0, 7812, 15625)


def test_ragged_line_and_undeclared_nominal_are_quarantined_naming_the_line(tmp_path: Path):
    src = write_source(
        tmp_path / "r.arff",
        EEG + "4327.69,4006.67\n4327.69,4006.67,2\n4320.00,4000.00,1\n",
    )
    cfg = _eeg_config(tmp_path)
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 7, 5, 2, 0)
    assert rep.rows_read == rep.accepted + rep.quarantined + rep.duplicates
    q = quarantine_frame(cfg)
    assert q["source_row"].to_list() == [5, 6]
    assert q["reason"].to_list() == [
        "line 17: ragged line: 2 fields, the header has 3",
        "line 18: '2' is not a declared value of the nominal attribute 'eyeDetection' {0,1}",
    ]
    assert q["raw"].to_list() == ['{"line": "4327.69,4006.67"}', '{"line": "4327.69,4006.67,2"}']
    df = lake_frame(cfg)
    # the rows after the quarantined ones keep their places: row 7 (0-based 6) at 6 / 128 s
    assert df["timestamp"].to_list() == _at(0, 7812, 15625, 23438, 46875)
    assert df["label"].to_list() == [0, 0, 1, 1, 1]


def test_quoted_nominal_values_and_string_label(tmp_path: Path):
    src = write_source(
        tmp_path / "q.arff",
        "@relation q\n@attribute x numeric\n@attribute activity {walk, 'walk up', sit}\n"
        "@data\n1.5,'walk up'\n2.5,walk\n3.5,'run'\n",
    )
    cfg = _eeg_config(
        tmp_path, channels=[{"name": "x"}], label={"column": "activity", "dtype": "string"}
    )
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 3, 2, 1, 0)
    assert quarantine_frame(cfg)["reason"].to_list() == [
        "line 7: 'run' is not a declared value of the nominal attribute 'activity' "
        "{walk,walk up,sit}"
    ]
    df = lake_frame(cfg)
    assert df["x"].to_list() == [1.5, 2.5]
    assert df["label"].to_list() == ["walk up", "walk"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("@relation x\n@attribute a numeric\n1,2\n", r"line 3: '1,2' before @data"),
        ("@relation x\n@attribute a numeric\n", r"no @data line"),
        ("@relation x\n@data\n1\n", r"line 2: @data without any @attribute"),
        (
            "@relation x\n@attribute id {a,b}\n@attribute bag relational\n",
            r"line 3: @attribute 'bag' is relational .*\.ts files",
        ),
        (
            "@relation x\n@attribute a numeric\n@attribute b numeric\n@data\n1,2\n{0 1.5, 1 2}\n",
            r"line 6: sparse data row",
        ),
        ("@relation x\n@attribute a numbers\n@data\n1\n", r"line 2: @attribute 'a' has the type"),
        ("@relation x\n@attribute 'a numeric\n@data\n1\n", r"line 2: unclosed quote"),
        ("@relation x\n@attribute c {a,b\n@data\na\n", r"line 2: .*no closing \}"),
        ("@relation x\n@attribute a\n@data\n1\n", r"line 2: @attribute 'a' has no type"),
        ("@relation x\n@attribute a real\n@attribute a real\n@data\n1,2\n", r"line 3: a second"),
        ("@relation x\n@attribute a real\n@data\n% only a comment\n\n", r"no data rows after"),
        (b"@relation x\n@attribute a string\n@data\n\xff\n", r"not UTF-8: .* on line 4"),
        (
            "@relation x\n@attribute a real\n@attribute b string\n@data\n1,x\n\n2,'y'z\n",
            r"unparseable data near line 7: ',' expected",
        ),
    ],
)
def test_rejections_name_the_line(tmp_path: Path, body: str | bytes, reason: str):
    src = write_source(tmp_path / "bad.arff", body)
    cfg = _eeg_config(tmp_path, channels=[{"name": "a"}], label=None)
    (rep,) = ingest(cfg, [str(src)]).files
    assert rep.outcome == "rejected"
    assert rep.reason is not None
    assert re.search(reason, rep.reason), rep.reason


def test_ucr_univariate_arff_melted_with_data_wide(tmp_path: Path):
    """UCR univariate ARFF: att1..att5 and the class last; `?` at the end of a row is a shorter
    series; a ragged line, a row without values and an undeclared class are quarantined whole,
    each taking one _row in its place."""
    head = "@relation Toy\n" + "".join(f"@attribute att{i} numeric\n" for i in range(1, 6))
    src = write_source(
        tmp_path / "Toy_TRAIN.arff",
        head + "@attribute target {1,2}\n@data\n"
        "1,2,3,4,5,1\n"  # line 9
        "6,7,8,?,?,2\n"  # line 10: 3 values
        "1,2,3,4,5,6,1\n"  # line 11: ragged
        "?,?,?,?,?,1\n"  # line 12: no values
        "9,9,9,9,9,3\n"  # line 13: undeclared class
        "0.5,1.5,?,?,?,2\n",  # line 14
    )
    cfg = make_config(
        tmp_path,
        data={
            "entity": {"column": None, "parts": ["file", "series"]},
            "timestamp": {
                "column": "position",
                "format": "sample_index",
                "sample_rate_hz": 1,
                "start": "2013-01-01T00:00:00Z",
            },
            "channels": [{"name": "value"}],
            "label": {"column": "target", "dtype": "int"},
            "wide": {},
        },
    )
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 13, 10, 3, 0)
    q = quarantine_frame(cfg)
    assert q["source_row"].to_list() == [9, 10, 11]
    assert q["reason"].to_list() == [
        "line 11: ragged line: 7 fields, the header has 6",
        "line 12: no values (every value column is empty or NaN)",
        "line 13: '3' is not a declared value of the nominal attribute 'target' {1,2}",
    ]
    df = lake_frame(cfg)
    assert (
        df["entity_id"].to_list() == ["Toy_TRAIN/0"] * 5 + ["Toy_TRAIN/1"] * 3 + ["Toy_TRAIN/5"] * 2
    )
    s = 1_000_000
    assert df["timestamp"].to_list() == _at(0, s, 2 * s, 3 * s, 4 * s, 0, s, 2 * s, 0, s)
    assert df["value"].to_list() == [1, 2, 3, 4, 5, 6, 7, 8, 0.5, 1.5]
    assert df["label"].to_list() == [1] * 5 + [2] * 3 + [2] * 2


def test_txt_file_starting_with_relation_is_read_as_arff(tmp_path: Path):
    src = write_source(
        tmp_path / "eeg.txt", "% exported\n@relation eeg\n@attribute a numeric\n@data\n1\n2\n"
    )
    cfg = _eeg_config(tmp_path, channels=[{"name": "a"}], label=None)
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 2, 2, 0, 0)
    assert lake_frame(cfg)["a"].to_list() == [1.0, 2.0]


def test_default_include_picks_up_arff_in_a_folder(tmp_path: Path):
    assert "*.arff" in DataConfig.model_fields["include"].default_factory()
    land = tmp_path / "land"
    write_source(land / "EEG Eye State.ARFF", EEG)
    write_source(land / "notes.txt", "not data\n")
    cfg = _eeg_config(tmp_path)
    rep = ingest(cfg, [str(land)])
    assert [f.name for f in rep.files] == ["EEG Eye State.ARFF"]
    assert counts(rep.files[0]) == ("committed", 4, 4, 0, 0)
