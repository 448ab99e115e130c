"""Real-world landing layouts taken with a config alone (issue 11, first part): columns that
live in the path, composite entities, header quirks, any extension, label types and defaults.
Every row is accounted for and nothing is lost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import lake_frame, make_config, write_source

from cnnlstm.ingest import ingest
from cnnlstm.lake import expand_sources, scan_quarantine


def _rows(n: int, t0: int = 0, label=None) -> str:
    lines = []
    for i in range(n):
        lab = "" if label is None else f",{label(i)}"
        lines.append(f"{t0 + i},{np.sin(i / 3):.4f},{np.cos(i / 5):.4f}{lab}")
    return "\n".join(lines) + "\n"


def test_split_and_subject_from_the_path_and_a_composite_entity(tmp_path: Path):
    land = tmp_path / "landing"
    for split, subj, rec in (("train", 7, 12), ("train", 8, 1), ("test", 3, 1)):
        write_source(land / split / f"subject{subj}_rec{rec}.csv", "t,a,b\n" + _rows(20))
    cfg = make_config(
        tmp_path,
        data={
            "landing": str(land),
            "entity": {"column": None, "parts": ["split", "file"]},
            "timestamp": {"column": "t", "format": "epoch_s"},
            "channels": [{"name": "a"}, {"name": "b"}],
            "label": None,
            "path_columns": {
                "pattern": r"(?P<split>train|test)/subject(?P<subject>\d+)_",
                "types": {"subject": "int"},
            },
        },
    )
    rep = ingest(cfg, [str(land)])
    assert rep.clean and rep.totals()["accepted"] == 60
    df = lake_frame(cfg)
    assert df["subject"].dtype == pl.Int64 and df["split"].dtype == pl.String
    per = df.group_by("entity_id").agg(pl.col("split").first(), pl.col("subject").first())
    assert dict(zip(per["entity_id"], per["subject"], strict=True)) == {
        "train/subject7_rec12": 7,
        "train/subject8_rec1": 8,
        "test/subject3_rec1": 3,
    }
    # a file whose path does not match is rejected with the reason, the others go in
    write_source(land / "other" / "x.csv", "t,a,b\n" + _rows(3))
    (bad,) = [f for f in ingest(cfg, [str(land)]).files if f.outcome == "rejected"]
    assert "does not match data.path_columns.pattern" in bad.reason and "other/x.csv" in bad.reason


def test_a_unit_id_repeated_across_two_files_is_two_entities(tmp_path: Path):
    """Turbofan style: units numbered 1..3 in the train file and again in the test file."""
    land = tmp_path / "landing"
    for name in ("train_FD001", "test_FD001"):
        lines = ["unit cycle s1 s2"]  # space-separated, a .txt extension
        for unit in (1, 2, 3):
            lines += [f"{unit} {c} {c * 0.1:.2f} {unit + c:.1f}" for c in range(1, 11)]
        write_source(land / f"{name}.txt", "\n".join(lines) + "\n")
    data = {
        "landing": str(land),
        "entity": {"column": None, "parts": ["split", "unit"]},
        "timestamp": {
            "column": "cycle",
            "format": "sample_index",
            "sample_rate_hz": 1,
            "start": "2020-01-01T00:00:00Z",
        },
        "channels": [{"name": "s1"}, {"name": "s2"}],
        "label": None,
        "columns": {"unit": "int"},
        "csv": {"delimiter": " "},
        "path_columns": {"pattern": r"(?P<split>train|test)_"},
    }
    cfg = make_config(tmp_path, data=data)
    with pytest.raises(FileNotFoundError, match=r"data.include.*it holds 2 \.txt"):
        expand_sources([str(land)], cfg.data.include)
    cfg = make_config(tmp_path, data=data | {"include": ["*.txt"]})
    rep = ingest(cfg, [str(land)])
    t = rep.totals()
    assert rep.clean and t["accepted"] == 60 and t["quarantined"] == 0
    ents = sorted(lake_frame(cfg)["entity_id"].unique().to_list())
    assert ents == ["test/1", "test/2", "test/3", "train/1", "train/2", "train/3"]


def test_header_one_name_short_of_the_rows_is_a_leading_index(tmp_path: Path):
    """The published occupancy files: 7 quoted names over rows of 8 fields (R's row names)."""
    head = '"date","Temperature","Humidity","Light","CO2","HumidityRatio","Occupancy"\n'
    rows = "".join(
        f'"{i}","2015-02-04 17:{i:02d}:00",23.1,27.2,426,721.2,0.0047,{i % 2}\n'
        for i in range(1, 31)
    )
    src = write_source(tmp_path / "datatraining.txt", head + rows)
    cfg = make_config(
        tmp_path,
        data={
            "entity": {"column": None, "constant": "office"},
            "timestamp": {"column": "date", "format": "iso"},
            "channels": [{"name": c} for c in ("Temperature", "Humidity", "Light", "CO2")],
            "label": {"column": "Occupancy", "dtype": "int"},
        },
    )
    (rep,) = ingest(cfg, [str(src)]).files
    assert (rep.outcome, rep.accepted, rep.quarantined) == ("committed", 30, 0)
    assert "leading unnamed index field" in rep.notes[0]
    assert lake_frame(cfg)["label"].to_list() == [i % 2 for i in range(1, 31)]


def test_no_header_explicit_names_skip_rows_and_comments(tmp_path: Path):
    text = (
        "exported by logger v2\n# units: g\n"
        + "\n".join(
            f"{i},{i * 0.5},{-i}" if i != 3 else "# calibration\n3,1.5,-3" for i in range(6)
        )
        + "\n"
    )
    src = write_source(tmp_path / "log.dat", text)
    cfg = make_config(
        tmp_path,
        data={
            "entity": {"column": None, "constant": "logger"},
            "timestamp": {"column": "t", "format": "epoch_s"},
            "channels": [{"name": "a"}, {"name": "b"}],
            "label": None,
            "csv": {
                "header": False,
                "names": ["t", "a", "b"],
                "skip_rows": 1,
                "comment_prefix": "#",
            },
        },
    )
    (rep,) = ingest(cfg, [str(src)]).files
    assert (rep.outcome, rep.rows_read, rep.accepted) == ("committed", 6, 6), rep
    assert lake_frame(cfg)["a"].to_list() == [i * 0.5 for i in range(6)]


@pytest.mark.parametrize(
    ("dtype", "values", "expect", "quarantined"),
    [
        ("int", ["0.0", "1.0", "1", "2.5"], [0, 1, 1], 1),
        ("float", ["0.0", "1.5", "x"], [0.0, 1.5], 1),
        ("bool", ["true", "0", "yes", "maybe"], [True, False, True], 1),
    ],
)
def test_label_types(tmp_path: Path, dtype, values, expect, quarantined):
    text = "t,a,lab\n" + "".join(f"{i},{i}.5,{v}\n" for i, v in enumerate(values))
    src = write_source(tmp_path / "f.csv", text)
    cfg = make_config(
        tmp_path,
        data={
            "entity": {"column": None, "constant": "e"},
            "timestamp": {"column": "t", "format": "epoch_s"},
            "channels": [{"name": "a"}],
            "label": {"column": "lab", "dtype": dtype},
        },
    )
    (rep,) = ingest(cfg, [str(src)]).files
    assert (rep.accepted, rep.quarantined) == (len(expect), quarantined)
    assert lake_frame(cfg)["label"].to_list() == expect


def test_a_file_without_its_label_column_takes_the_default(tmp_path: Path):
    """Anomaly data: normal-operation recordings carry no label column; the folder says so."""
    land = tmp_path / "landing"
    write_source(land / "normal" / "run1.csv", "t,a\n" + "".join(f"{i},{i}\n" for i in range(5)))
    write_source(
        land / "faulty" / "run2.csv",
        "t,a,state\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(5)),
    )
    base = {
        "landing": str(land),
        "entity": {"column": None, "parts": ["file"]},
        "timestamp": {"column": "t", "format": "epoch_s"},
        "channels": [{"name": "a"}],
        "path_columns": {"pattern": r"^(?P<kind>\w+)/"},
    }
    cfg = make_config(tmp_path, data=base | {"label": {"column": "state", "default": 0}})
    rep = ingest(cfg, [str(land)])
    assert rep.clean and rep.totals()["accepted"] == 10
    df = lake_frame(cfg)
    assert df.filter(pl.col("entity_id") == "run1")["label"].to_list() == [0] * 5
    assert df.filter(pl.col("entity_id") == "run2")["label"].to_list() == [0, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="default_from='nope' is not a group"):
        make_config(tmp_path, data=base | {"label": {"column": "state", "default_from": "nope"}})


@pytest.mark.parametrize("entity", [{"parts": ["split"]}, {"constant": "sensor"}])
def test_one_constant_stream_split_by_file(tmp_path: Path, entity):
    """A single sensor whose train and test periods are two files: window.split.method=column
    with the path column works whether each period is its own entity (parts [split]) or the
    sensor is one constant entity (then each window takes its own file's value)."""
    from cnnlstm.train import train_from_config

    land = tmp_path / "landing"
    rng = np.random.default_rng(0)
    for split, t0 in (("train", 0), ("test", 4000)):
        n = 1200 if split == "train" else 400
        lab = (np.arange(n) // 50) % 2
        sig = np.where(lab == 1, np.sin(np.arange(n) / 2), np.sin(np.arange(n) / 9))
        text = "t,a,lab\n" + "".join(
            f"{t0 + i},{sig[i] + 0.1 * rng.normal():.4f},{lab[i]}\n" for i in range(n)
        )
        write_source(land / f"{split}.csv", text)
    cfg = make_config(
        tmp_path,
        data={
            "landing": str(land),
            "entity": {"column": None} | entity,
            "timestamp": {"column": "t", "format": "epoch_s"},
            "channels": [{"name": "a"}],
            "label": {"column": "lab", "dtype": "int"},
            "path_columns": {"pattern": r"^(?P<split>train|test)\."},
        },
        window={
            "size": 25,
            "stride": 25,
            "split": {"method": "column", "column": "split", "val_fraction": 0},
        },
        model={"conv": {"channels": [8], "kernel_size": 3}, "rnn": {"hidden_size": 8}},
        train={"epochs": 2, "progress": False, "plots": False},
    )
    assert ingest(cfg, [str(land)]).clean
    m = train_from_config(cfg, tmp_path / "run")
    assert m["n_windows"]["test"] == 400 // 25 and m["n_windows"]["train"] == 1200 // 25


def test_space_aligned_text_with_trailing_blanks(tmp_path: Path):
    """csv.whitespace: the NASA turbofan layout (fields split by one or more blanks, two blanks
    at each line's end, no header, no clock: the cycle is the sample index). Without it every
    line is ragged; with it the rows are exact, and a bad value is quarantined with its text."""
    lines = [
        "1 1 -0.0007 -0.0004 100.0 518.67 641.82  ",
        "1 2  0.0019 -0.0003 100.0 518.67 642.15  ",
        "1 3 -0.0043  0.0003 100.0 518.67 oops    ",
        "2 1  0.0010\t0.0000 100.0 518.67 642.35  ",
    ]
    src = write_source(tmp_path / "train_FD001.txt", "\n".join(lines) + "\n")
    names = ["unit", "cycle", "os1", "os2", "os3", "t2", "t24"]
    data = {
        "entity": {"column": "unit"},
        "timestamp": {
            "column": "cycle",
            "format": "sample_index",
            "sample_rate_hz": 1,
            "start": "1970-01-01T00:00:00Z",
        },
        "channels": [{"name": n} for n in names[2:]],
        "label": None,
        "csv": {"header": False, "names": names},
    }
    ragged = make_config(tmp_path / "plain", data=data)
    (rep,) = ingest(ragged, [str(src)]).files
    assert (rep.accepted, rep.quarantined) == (0, 4)  # 9 fields where 7 are named

    cfg = make_config(tmp_path / "ws", data=data | {"csv": data["csv"] | {"whitespace": True}})
    (rep,) = ingest(cfg, [str(src)]).files
    assert (rep.outcome, rep.rows_read, rep.accepted, rep.quarantined) == ("committed", 4, 3, 1)
    got = lake_frame(cfg)
    assert got["entity_id"].to_list() == ["1", "1", "2"]
    assert [t.second for t in got["timestamp"].to_list()] == [1, 2, 1]
    assert got["os1"].to_list() == pytest.approx([-0.0007, 0.0019, 0.0010])
    assert got["t24"].to_list() == pytest.approx([641.82, 642.15, 642.35])
    q = scan_quarantine(cfg.lake_uri).collect()
    assert q["source_row"].to_list() == [3]
    assert "t24" in q["reason"][0] and "oops" in q["raw"][0]
