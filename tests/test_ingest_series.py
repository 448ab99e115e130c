"""One series per row or line, melted into long readings: sktime/UEA ``.ts`` files
(`cnnlstm.formats.ts`) and the wide layout of CSV text and Parquet (``data.wide``,
`cnnlstm.formats.wide`). Real files in tmp_path through the whole ingest path; exact lake rows,
quarantine rows and accounting; then windows labelled by entity (one label per series)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import counts, lake_frame, make_config, quarantine_frame, write_source

from cnnlstm.config import ConfigError, config_from_dict
from cnnlstm.ingest import ingest, mapping_fingerprint
from cnnlstm.window_config import WindowConfig
from cnnlstm.windows import build_windows

START = datetime(2024, 1, 1, tzinfo=UTC)


def _at(*ms: int) -> list[datetime]:
    return [START + timedelta(milliseconds=m) for m in ms]


# the time of a value: its position within its series, at 10 Hz
BY_POSITION = {
    "column": "position",
    "format": "sample_index",
    "sample_rate_hz": 10,
    "start": "2024-01-01T00:00:00Z",
}


def _series_config(
    tmp_path: Path, channels: list[dict], label: dict | None, lake: dict | None = None, **data
):
    return make_config(
        tmp_path,
        data={
            "entity": {"column": None, "parts": ["file", "series"]},
            "timestamp": BY_POSITION,
            "channels": channels,
            "label": label,
            **data,
        },
        lake=lake or {},
    )


# ------------------------------------------------------------------ sktime / UEA .ts

TINY_TS = """\
# a tiny multivariate, variable-length problem
@problemName Tiny
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength false
@classLabel true walk run
@data
1,2,3:10,20,30:walk
4,5,6,7,8:40,50,60,70,80:run

9,10:90,100:walk
"""


def _tiny(tmp_path: Path) -> tuple[object, object]:
    src = write_source(tmp_path / "landing" / "Tiny_TRAIN.ts", TINY_TS)
    cfg = _series_config(
        tmp_path,
        [{"name": "dim_0"}, {"name": "dim_1"}],
        {"column": "label", "dtype": "string"},
    )
    (rep,) = ingest(cfg, [str(src)]).files
    return cfg, rep


def test_multivariate_variable_length_ts(tmp_path: Path):
    cfg, rep = _tiny(tmp_path)
    assert counts(rep) == ("committed", 10, 10, 0, 0)
    assert any(
        "sktime .ts 'Tiny': 3 series with class labels, 2 dimension(s), 2-5" in n for n in rep.notes
    )
    df = lake_frame(cfg)
    assert (
        df["entity_id"].to_list()
        == ["Tiny_TRAIN/0"] * 3 + ["Tiny_TRAIN/1"] * 5 + ["Tiny_TRAIN/2"] * 2
    )
    assert df["timestamp"].to_list() == _at(0, 100, 200, 0, 100, 200, 300, 400, 0, 100)
    assert df["dim_0"].to_list() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert df["dim_1"].to_list() == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert df["label"].to_list() == ["walk"] * 3 + ["run"] * 5 + ["walk"] * 2
    assert df.schema["dim_0"] == pl.Float32 and df.schema["label"] == pl.String


def test_univariate_regression_ts(tmp_path: Path):
    src = write_source(
        tmp_path / "Reg_TEST.ts",
        "@problemName Reg\n@univariate true\n@equalLength false\n@targetLabel true\n@data\n"
        "1.5,2.5,3.5:0.25\n4.0,?,NaN,5.0:-1.5\n",
    )
    cfg = _series_config(
        tmp_path,
        [{"name": "x", "source": "dim_0"}],
        {"column": "label", "dtype": "float"},
        allow_missing_channels=True,
    )
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 7, 7, 0, 0)
    df = lake_frame(cfg)
    assert df["entity_id"].to_list() == ["Reg_TEST/0"] * 3 + ["Reg_TEST/1"] * 4
    assert df["timestamp"].to_list() == _at(0, 100, 200, 0, 100, 200, 300)
    assert df["x"].to_list() == [1.5, 2.5, 3.5, 4.0, None, None, 5.0]  # ? and NaN: missing
    assert df["label"].to_list() == [0.25] * 3 + [-1.5] * 4


MALFORMED_TS = """\
@problemName Bad
@dimensions 2
@classLabel true a b
@data
1,2:3,4:a
1,x:3,4:a
1,2:b
1,2,3:4:a
1,2:3,4:c
5,6:7,8:b
"""


def test_a_malformed_series_line_is_one_quarantined_row_naming_the_line(tmp_path: Path):
    """Each bad series line is one quarantined row (its reason names the file line and the
    series); the good series go on. Dimensions of different lengths are kept, the shorter
    missing (null) at the end, and the notes say so."""
    src = write_source(tmp_path / "Bad.ts", MALFORMED_TS)
    cfg = _series_config(
        tmp_path,
        [{"name": "dim_0"}, {"name": "dim_1"}],
        {"column": "label", "dtype": "string"},
        allow_missing_channels=True,
    )
    (rep,) = ingest(cfg, [str(src)]).files
    # rows: series 0 -> 1-2, 1 -> 3 (bad), 2 -> 4 (bad), 3 -> 5-7, 4 -> 8 (bad), 5 -> 9-10
    assert counts(rep) == ("committed", 10, 7, 3, 0)
    assert any("1 series have dimensions of different lengths" in n for n in rep.notes)
    q = quarantine_frame(cfg)
    assert q["source_row"].to_list() == [3, 4, 8]
    assert q["reason"].to_list() == [
        "line 6 (series 1): dimension 0, value 1: 'x' is not a number",
        "line 7 (series 2): 2 fields separated by ':', expected 2 dimension(s) and the label",
        "line 9 (series 4): class 'c' is not one of @classLabel's ['a', 'b']",
    ]
    assert '"line": "1,x:3,4:a"' in q["raw"][0]
    df = lake_frame(cfg)
    assert df["entity_id"].to_list() == ["Bad/0"] * 2 + ["Bad/3"] * 3 + ["Bad/5"] * 2
    assert df["dim_0"].to_list() == [1, 2, 1, 2, 3, 5, 6]
    assert df["dim_1"].to_list() == [3, 4, 4, None, None, 7, 8]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("@timeStamps true\n@data\n(0,1),(1,2)\n", r"line 1: @timeStamps true .* not supported"),
        ("@problemName X\n1,2,3\n", r"line 2: '1,2,3' before @data"),
        ("@problemName X\n@classLabel true a\n", r"no @data line"),
        ("@univariate maybe\n@data\n1\n", r"line 1: @univariate needs true or false"),
        ("@data\n\n# nothing\n", r"no series after @data"),
    ],
)
def test_a_ts_header_problem_rejects_the_file(tmp_path: Path, text: str, why: str):
    src = write_source(tmp_path / "h.ts", text)
    cfg = _series_config(tmp_path, [{"name": "dim_0"}], None)
    (rep,) = ingest(cfg, [str(src)]).files
    assert rep.outcome == "rejected"
    assert rep.reason is not None and re.search(why, rep.reason), rep.reason


def test_ts_rows_over_the_cap_reject_the_file(tmp_path: Path):
    """lake.max_rows_per_file counts the melted rows (10 here), not the series lines (3)."""
    src = write_source(tmp_path / "landing" / "Tiny_TRAIN.ts", TINY_TS)
    cfg = _series_config(
        tmp_path,
        [{"name": "dim_0"}, {"name": "dim_1"}],
        {"column": "label", "dtype": "string"},
        lake={"max_rows_per_file": 9},
    )
    (rep,) = ingest(cfg, [str(src)]).files
    assert rep.outcome == "rejected" and "max_rows_per_file=9" in rep.reason


def test_the_default_include_takes_ts_files(tmp_path: Path):
    land = tmp_path / "landing"
    write_source(land / "Tiny_TRAIN.ts", TINY_TS)
    write_source(land / "notes.txt", "not data")
    cfg = _series_config(
        tmp_path,
        [{"name": "dim_0"}, {"name": "dim_1"}],
        {"column": "label", "dtype": "string"},
    )
    rep = ingest(cfg, [str(land)])
    assert [f.name for f in rep.files] == ["Tiny_TRAIN.ts"] and rep.clean


# ------------------------------------------------------------------ the wide layout (data.wide)


def _wide_config(tmp_path: Path, wide: dict, label: dict | None, channels=None, **data):
    return _series_config(
        tmp_path,
        channels or [{"name": "value", "min": -100, "max": 100}],
        label,
        wide=wide,
        include=["*.txt", "*.tsv", "*.parquet"],
        **data,
    )


def test_ucr_txt_whitespace_separated_with_trailing_nans(tmp_path: Path):
    """The old UCR .txt layout: no header, blanks between fields, the class first (written
    as a float); trailing NaN cells are no time points (a shorter series)."""
    src = write_source(
        tmp_path / "Toy_TRAIN.txt",
        "  1.0000000e+00   1.5000000e+00   2.5000000e+00   3.5000000e+00\n"
        "  2.0000000e+00   4.0000000e+00             NaN             NaN\n"
        "\n"
        "  1.0000000e+00   5.0000000e+00   6.0000000e+00             NaN\n",
    )
    cfg = _wide_config(
        tmp_path,
        {},
        {"column": "c0", "dtype": "int"},
        csv={"header": False, "whitespace": True},
    )
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 6, 6, 0, 0)
    assert any(
        "3 series over 3 value columns (c1 .. c3), 1-3 values long, melted into 6 rows" in n
        for n in rep.notes
    )
    df = lake_frame(cfg)
    assert df["entity_id"].to_list() == ["Toy_TRAIN/0"] * 3 + ["Toy_TRAIN/1"] + ["Toy_TRAIN/2"] * 2
    assert df["timestamp"].to_list() == _at(0, 100, 200, 0, 0, 100)
    assert df["value"].to_list() == [1.5, 2.5, 3.5, 4.0, 5.0, 6.0]
    assert df["label"].to_list() == [1, 1, 1, 2, 1, 1]


def test_ucr_tsv_tab_separated(tmp_path: Path):
    """The UCR 2018 .tsv layout. A missing value inside a series is null (quarantined without
    data.allow_missing_channels); a row without values is one quarantined row; a value out
    of the channel's range quarantines its long row only."""
    src = write_source(
        tmp_path / "Toy_TEST.tsv",
        "1\t0.5\t0.25\n"
        "2\t1.0\tNaN\t2.0\n"  # interior NaN: position 1 missing
        "1\t3.0\n"  # fewer fields: a shorter series
        "2\tNaN\tNaN\n"  # no values
        "1\t7.0\t500\n",  # 500 over channel max 100
    )
    cfg = _wide_config(
        tmp_path,
        {},
        {"column": "class", "dtype": "int"},
        csv={"header": False, "delimiter": "\t", "names": ["class"]},
    )
    (rep,) = ingest(cfg, [str(src)]).files
    # long rows: 2 + 3 + 1 + (1 whole row) + 2 = 9
    assert counts(rep) == ("committed", 9, 6, 3, 0)
    q = quarantine_frame(cfg)
    assert q["source_row"].to_list() == [4, 7, 9]
    assert q["reason"].to_list() == [
        "value: missing value (value null)",
        "line 4: no values (every value column is empty or NaN)",
        "value: less_than_or_equal_to(100.0) (value 500.0)",
    ]
    assert q["raw"].to_list() == [  # the long row (as text), or the line quarantined whole
        '{"series":"1","position":"1","value":null,"class":"2"}',
        '{"line": "2\\tNaN\\tNaN"}',
        '{"series":"4","position":"1","value":"500","class":"1"}',
    ]
    df = lake_frame(cfg)
    assert df["entity_id"].to_list() == ["Toy_TEST/0"] * 2 + ["Toy_TEST/1"] * 2 + [
        "Toy_TEST/2",
        "Toy_TEST/4",
    ]
    assert df["timestamp"].to_list() == _at(0, 100, 0, 200, 0, 0)
    assert df["value"].to_list() == [0.5, 0.25, 1.0, 2.0, 3.0, 7.0]
    assert df["label"].to_list() == [1, 1, 2, 2, 1, 1]


def test_wide_csv_with_a_header_an_id_column_and_metadata(tmp_path: Path):
    """Kaggle-style: a header, an id column naming each series, a metadata column repeated on
    every row of its series, values picked by a pattern; a ragged line is quarantined whole."""
    src = write_source(
        tmp_path / "kaggle.csv",
        'id,label,subject,t0,t1,t2\na,walk,s1,1,2,3\nb,"run, fast",s2,4,5,\nc,walk,s1,1,2,3,4\n',
    )
    cfg = make_config(
        tmp_path,
        data={
            "entity": {"column": None, "parts": ["series"]},
            "timestamp": BY_POSITION,
            "channels": [{"name": "acc", "source": "value"}],
            "label": {"column": "label", "dtype": "string"},
            "columns": {"subject": "string"},
            "wide": {"id_column": "id", "value_pattern": r"^t\d+$"},
        },
    )
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 6, 5, 1, 0)
    q = quarantine_frame(cfg)
    assert q["reason"].to_list() == ["line 4: ragged line: 7 fields, the header has 6"]
    df = lake_frame(cfg)
    assert df["entity_id"].to_list() == ["a"] * 3 + ["b"] * 2
    assert df["acc"].to_list() == [1, 2, 3, 4, 5]
    assert df["label"].to_list() == ["walk"] * 3 + ["run, fast"] * 2
    assert df["subject"].to_list() == ["s1"] * 3 + ["s2"] * 2


def test_wide_parquet(tmp_path: Path):
    src = write_source(
        tmp_path / "wide.parquet",
        {
            "label": ["a", "b", "a"],
            "x0": [1.0, 4.0, None],
            "x1": [2.0, float("nan"), None],
            "x2": [3.0, None, None],
        },
    )
    cfg = _wide_config(
        tmp_path,
        {"value_columns": ["x0", "x1", "x2"], "value_name": "v"},
        {"column": "label", "dtype": "string"},
        channels=[{"name": "v"}],
    )
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 5, 4, 1, 0)
    assert quarantine_frame(cfg)["reason"].to_list() == [
        "row 3: no values (every value column is empty or NaN)"
    ]
    df = lake_frame(cfg)
    assert df["entity_id"].to_list() == ["wide/0"] * 3 + ["wide/1"]
    assert df["v"].to_list() == [1.0, 2.0, 3.0, 4.0]
    assert df["label"].to_list() == ["a"] * 3 + ["b"]


def test_wide_config_errors_name_the_key(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"data\.wide: give value_columns or value_pattern"):
        _wide_config(tmp_path, {"value_columns": ["a"], "value_pattern": "b"}, None)
    with pytest.raises(ConfigError, match=r"data\.wide needs data\.timestamp\.column"):
        _wide_config(tmp_path, {}, None, timestamp={**BY_POSITION, "column": None})
    with pytest.raises(ConfigError, match=r"data\.wide: no channel reads the melted value"):
        _wide_config(tmp_path, {"value_name": "v"}, None)
    with pytest.raises(ConfigError, match=r"data\.wide\.value_pattern is not a valid regex"):
        _wide_config(tmp_path, {"value_pattern": "("}, None)
    with pytest.raises(ConfigError, match=r"data\.csv\.header: false needs data\.csv\.names"):
        make_config(tmp_path, data={"csv": {"header": False}})
    with pytest.raises(ConfigError, match=r"data\.wide\.bogus|wide\.bogus"):
        _wide_config(tmp_path, {"bogus": 1}, None)
    plain = _wide_config(tmp_path, {}, None)
    other = _wide_config(tmp_path, {"value_pattern": "^c"}, None)
    assert mapping_fingerprint(plain.data) != mapping_fingerprint(other.data)


# ------------------------------------------------------------------ windows: one label per series


def test_windows_labelled_by_entity_get_one_label_per_series(tmp_path: Path):
    cfg, rep = _tiny(tmp_path)
    assert rep.outcome == "committed"
    readings = lake_frame(cfg)
    wcfg = WindowConfig(size=4, stride=4, label="entity", short="pad", min_length=2)
    ws = build_windows(readings, ["dim_0", "dim_1"], wcfg)
    w = ws.windows
    assert ws.classes == ["run", "walk"]
    ents = w.entity.tolist()
    assert set(ents) == {"Tiny_TRAIN/0", "Tiny_TRAIN/1", "Tiny_TRAIN/2"}  # short ones padded
    truth = {"Tiny_TRAIN/0": "walk", "Tiny_TRAIN/1": "run", "Tiny_TRAIN/2": "walk"}
    got = [ws.classes[int(y)] for y in np.asarray(w.y)]
    assert got == [truth[e] for e in ents]


# ------------------------------------------------------------------ the documented configs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def _doc_config(tmp_path: Path, name: str, landing: Path):
    """The YAML example of docs/config.md whose data.name is ``name``, landing and lake here."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    raw = next(y for b in blocks if (y := yaml.safe_load(b))["data"].get("name") == name)
    raw["data"]["landing"] = str(landing)
    raw["lake"] = {"uri": str(tmp_path / "lake")}
    return config_from_dict(raw, base_dir=tmp_path)


def _vowels_line(rng: np.random.Generator, n: int, label: str) -> str:
    dims = [",".join(f"{v:.3f}" for v in rng.normal(size=n)) for _ in range(12)]
    return ":".join(dims) + f":{label}"


def test_the_documented_japanese_vowels_config(tmp_path: Path):
    """docs/config.md's .ts example as written: the split from the file name, one entity per
    series, one padded window per series carrying the series' class."""
    rng = np.random.default_rng(0)
    land = tmp_path / "vowels"
    head = "@problemName JapaneseVowels\n@timeStamps false\n@missing false\n@univariate false\n"
    head += "@dimensions 12\n@equalLength false\n@classLabel true 1 2 3 4 5 6 7 8 9\n@data\n"
    train = [(7, "1"), (29, "2"), (12, "1")]
    test = [(9, "2")]
    for name, series in (("TRAIN", train), ("TEST", test)):
        lines = [_vowels_line(rng, n, lab) for n, lab in series]
        write_source(land / f"JapaneseVowels_{name}.ts", head + "\n".join(lines) + "\n")
    cfg = _doc_config(tmp_path, "vowels", land)
    rep = ingest(cfg, [cfg.resolve_path(cfg.data.landing)])
    assert rep.clean and rep.totals()["accepted"] == 7 + 29 + 12 + 9
    df = lake_frame(cfg)
    per = df.group_by("entity_id", maintain_order=True).agg(
        pl.len(), pl.col("split").first(), pl.col("label").first()
    )
    assert per.rows() == [
        ("JapaneseVowels_TEST/0", 9, "TEST", "2"),
        ("JapaneseVowels_TRAIN/0", 7, "TRAIN", "1"),
        ("JapaneseVowels_TRAIN/1", 29, "TRAIN", "2"),
        ("JapaneseVowels_TRAIN/2", 12, "TRAIN", "1"),
    ]
    ws = build_windows(df, cfg.data.channel_names, cfg.window)
    w = ws.windows
    assert sorted(w.entity.tolist()) == per["entity_id"].to_list()  # one window per series
    assert [ws.classes[int(y)] for y in w.y] == [
        dict(zip(per["entity_id"], per["label"], strict=True))[e] for e in w.entity.tolist()
    ]
    assert sorted(np.asarray(w.lengths).tolist()) == [7, 9, 12, 29]


def test_the_documented_ucr_tsv_config(tmp_path: Path):
    land = tmp_path / "Coffee"
    write_source(land / "Coffee_TRAIN.tsv", "0\t1.5\t2.5\t3.5\n1\t4.0\tNaN\tNaN\n")
    write_source(land / "Coffee_TEST.tsv", "1\t5.0\t6.0\n")
    cfg = _doc_config(tmp_path, "coffee", land)
    rep = ingest(cfg, [cfg.resolve_path(cfg.data.landing)])
    assert rep.clean and rep.totals()["accepted"] == 6
    df = lake_frame(cfg)
    assert df["entity_id"].to_list() == ["Coffee_TEST/0"] * 2 + ["Coffee_TRAIN/0"] * 3 + [
        "Coffee_TRAIN/1"
    ]
    assert df["value"].to_list() == [5.0, 6.0, 1.5, 2.5, 3.5, 4.0]
    assert df["label"].to_list() == [1, 1, 0, 0, 0, 1]
    assert df["split"].to_list() == ["TEST"] * 2 + ["TRAIN"] * 4
