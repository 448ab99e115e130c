"""European and legacy text files: a decimal comma (`2,6`), a legacy encoding (cp1252,
UTF-16) and a trailing delimiter that leaves unnamed empty fields (the UCI Air Quality file:
`Date;Time;CO(GT);...;AH;;` then `10/03/2004;18.00.00;2,6;...;0,7578;;`). Tiny generated files
through the whole ingest path; exact lake rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import counts, lake_frame, quarantine_frame, write_source

from cnnlstm.config import ConfigError, config_from_dict
from cnnlstm.ingest import ingest, mapping_fingerprint

T0 = 1_700_000_000


def _cfg(tmp_path: Path, csv: dict, label: str = "int", **data):
    d = {
        "name": "air",
        "entity": {"constant": "s1"},
        "timestamp": {"column": "t", "format": "epoch_s"},
        "channels": [{"name": "co"}, {"name": "ah"}],
        "label": {"column": "room", "dtype": label},
        "csv": csv,
    }
    raw = {"data": d | data, "lake": {"uri": str(tmp_path / "lake")}}
    return config_from_dict(raw, base_dir=tmp_path)


def _f32(values) -> list[float]:
    return [float(np.float32(v)) for v in values]


def test_decimal_comma_values_exact_on_the_fast_path(tmp_path: Path):
    cfg = _cfg(tmp_path, {"delimiter": ";", "decimal_comma": True})
    src = write_source(
        tmp_path / "air.csv", f"t;co;ah;room\n{T0};2,6;0,7578;1\n{T0 + 1};-200;1,25;2\n"
    )
    rep = ingest(cfg, [str(src)]).files[0]
    assert counts(rep) == ("committed", 2, 2, 0, 0)
    df = lake_frame(cfg)
    assert df["co"].to_list() == _f32([2.6, -200.0])
    assert df["ah"].to_list() == _f32([0.7578, 1.25])


def test_decimal_comma_on_the_careful_path_and_a_bad_number_quarantined(tmp_path: Path):
    """A value polars cannot read (`1.234,5`, thousands separated) sends the file down the
    careful path: the other rows keep their decimal-comma values, the bad one is quarantined
    with its column named; every row is accounted for."""
    cfg = _cfg(tmp_path, {"delimiter": ";", "decimal_comma": True})
    text = f"t;co;ah;room\n{T0};2,6;0,5;1\n{T0 + 1};1.234,5;0,25;1\n{T0 + 2};3,75;1;2\n"
    rep = ingest(cfg, [str(write_source(tmp_path / "air.csv", text))]).files[0]
    assert counts(rep) == ("committed", 3, 2, 1, 0)
    df = lake_frame(cfg)
    assert df["co"].to_list() == _f32([2.6, 3.75])
    assert df["ah"].to_list() == _f32([0.5, 1.0])
    q = quarantine_frame(cfg)
    assert q["source_row"].to_list() == [2]
    assert "co" in q["reason"][0] and "1.234,5" in q["reason"][0]


def test_without_decimal_comma_such_values_are_quarantined(tmp_path: Path):
    cfg = _cfg(tmp_path, {"delimiter": ";"})
    src = write_source(tmp_path / "air.csv", f"t;co;ah;room\n{T0};2,6;0,7578;1\n")
    rep = ingest(cfg, [str(src)]).files[0]
    assert counts(rep) == ("committed", 1, 0, 1, 0)


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1", "utf-16"])
def test_a_legacy_encoding_is_decoded(tmp_path: Path, encoding: str):
    """Header names and labels with non-ASCII letters (`Büro`, `°C`) in cp1252, latin-1 and
    UTF-16 (with its byte order mark): read exactly with data.csv.encoding."""
    cfg = _cfg(
        tmp_path,
        {"encoding": encoding},
        label="string",
        channels=[{"name": "co", "source": "co_°C"}, {"name": "ah"}],
    )
    text = f"t,co_°C,ah,room\n{T0},1.5,2,Büro\n{T0 + 1},2.5,3,Küche\n"
    src = write_source(tmp_path / "rooms.csv", text.encode(encoding))
    rep = ingest(cfg, [str(src)]).files[0]
    assert counts(rep) == ("committed", 2, 2, 0, 0), rep.reason
    df = lake_frame(cfg)
    assert df["label"].to_list() == ["Büro", "Küche"]
    assert df["co"].to_list() == [1.5, 2.5]


def test_a_file_in_another_encoding_is_rejected_with_a_hint(tmp_path: Path):
    cfg = _cfg(tmp_path, {}, label="string")
    text = f"t,co,ah,room\n{T0},1.5,2,B\u00fcro\n"
    rep = ingest(cfg, [str(write_source(tmp_path / "rooms.csv", text.encode("cp1252")))]).files[0]
    assert rep.outcome == "rejected"
    assert "not UTF-8" in rep.reason and "data.csv.encoding" in rep.reason


def test_undecodable_bytes_name_the_encoding_and_line(tmp_path: Path):
    cfg = _cfg(tmp_path, {"encoding": "ascii"}, label="string")
    text = f"t,co,ah,room\n{T0},1.5,2,a\n{T0 + 1},1.5,2,B\u00fcro\n"
    rep = ingest(cfg, [str(write_source(tmp_path / "rooms.csv", text.encode("cp1252")))]).files[0]
    assert rep.outcome == "rejected"
    assert "not ascii (data.csv.encoding)" in rep.reason and "line 3" in rep.reason


def test_air_quality_like_trailing_delimiters_give_unnamed_empty_fields(tmp_path: Path):
    """Every line ends with `;;`: the header's two empty names become unnamed_4, unnamed_5 (the
    file was rejected for duplicate column names before); the empty fields are not kept."""
    cfg = _cfg(tmp_path, {"delimiter": ";", "decimal_comma": True})
    text = f"t;co;ah;room;;\n{T0};2,6;0,7578;1;;\n{T0 + 1};2;0,75;2;;\n"
    rep = ingest(cfg, [str(write_source(tmp_path / "air.csv", text))]).files[0]
    assert counts(rep) == ("committed", 2, 2, 0, 0), rep.reason
    assert any("unnamed_4" in n and "unnamed_5" in n for n in rep.notes)
    df = lake_frame(cfg)
    assert df["co"].to_list() == _f32([2.6, 2.0])
    assert not any(c.startswith("unnamed") for c in df.columns)


def test_config_errors_name_the_key(tmp_path: Path):
    with pytest.raises(ConfigError, match="data.csv.decimal_comma needs another delimiter"):
        _cfg(tmp_path, {"decimal_comma": True})
    with pytest.raises(ConfigError, match="data.csv.encoding 'klingon' is no known"):
        _cfg(tmp_path, {"encoding": "klingon"})


def test_defaults_keep_the_fingerprint_and_changes_move_it(tmp_path: Path):
    base = _cfg(tmp_path, {"delimiter": ";"}).data
    same = _cfg(tmp_path, {"delimiter": ";", "decimal_comma": False, "encoding": "utf_8"}).data
    assert mapping_fingerprint(base) != mapping_fingerprint(
        _cfg(tmp_path, {"delimiter": ";", "decimal_comma": True}).data
    )
    assert mapping_fingerprint(base) != mapping_fingerprint(
        _cfg(tmp_path, {"delimiter": ";", "encoding": "cp1252"}).data
    )
    # utf_8 is utf-8 under another name: the same mapping only when written the same way
    assert mapping_fingerprint(base) == mapping_fingerprint(
        _cfg(tmp_path, {"delimiter": ";", "decimal_comma": False}).data
    )
    assert same.csv.encoding == "utf_8"


# ------------------------------------------------------------------ a units row under the header


def _units_cfg(tmp_path: Path, after: int = 1, **csv):
    raw = {
        "data": {
            "name": "log",
            "entity": {"constant": "s1"},
            "timestamp": {"column": "t", "format": "epoch_s"},
            "channels": [{"name": "acc", "unit": "g"}, {"name": "temp"}],
            "csv": {"skip_after_header": after} | csv,
        },
        "lake": {"uri": str(tmp_path / "lake")},
    }
    return config_from_dict(raw, base_dir=tmp_path)


@pytest.mark.parametrize("bad", [False, True])
def test_a_units_row_under_the_header_is_skipped(tmp_path: Path, bad: bool):
    """`t,acc,temp` then `s,g,degC` then numbers: the units row is no data row (it would make
    every numeric column text). On the careful path too (a bad value), with the rows numbered
    from the first data line."""
    cfg = _units_cfg(tmp_path)
    third = "x" if bad else "0.5"
    text = f"t,acc,temp\ns,g,degC\n{T0},0.25,20\n{T0 + 1},{third},21\n{T0 + 2},-1,22\n"
    rep = ingest(cfg, [str(write_source(tmp_path / "log.csv", text))]).files[0]
    assert counts(rep) == ("committed", 3, 2 if bad else 3, 1 if bad else 0, 0)
    df = lake_frame(cfg)
    assert df["temp"].to_list() == ([20.0, 22.0] if bad else [20.0, 21.0, 22.0])
    if bad:
        assert quarantine_frame(cfg)["source_row"].to_list() == [2]


def test_two_lines_after_the_header_and_the_config_error_without_a_header(tmp_path: Path):
    cfg = _units_cfg(tmp_path, after=2)
    text = f"t,acc,temp\ns,g,degC\n(time),(x axis),(board)\n{T0},0.25,20\n"
    rep = ingest(cfg, [str(write_source(tmp_path / "log.csv", text))]).files[0]
    assert counts(rep) == ("committed", 1, 1, 0, 0)
    with pytest.raises(ConfigError, match="skip_after_header .* needs"):
        _units_cfg(tmp_path, header=False, names=["t", "acc", "temp"])


def test_wide_rows_with_decimal_commas(tmp_path: Path):
    """One series per row, `;`-separated, values written 2,5: melted to exact floats."""
    raw = {
        "data": {
            "name": "w",
            "csv": {"delimiter": ";", "header": False, "names": ["class"], "decimal_comma": True},
            "wide": {},
            "entity": {"parts": ["file", "series"]},
            "timestamp": {
                "column": "position",
                "format": "sample_index",
                "sample_rate_hz": 1,
                "start": "2000-01-01T00:00:00Z",
            },
            "channels": [{"name": "value"}],
            "label": {"column": "class", "dtype": "int"},
        },
        "lake": {"uri": str(tmp_path / "lake")},
    }
    cfg = config_from_dict(raw, base_dir=tmp_path)
    src = write_source(tmp_path / "s_TRAIN.tsv", "1;2,5;-0,25;3\n2;1;1,5;NaN\n")
    rep = ingest(cfg, [str(src)]).files[0]
    assert counts(rep) == ("committed", 5, 5, 0, 0), rep.reason
    df = lake_frame(cfg).sort("entity_id", "timestamp")
    assert df["value"].to_list() == [2.5, -0.25, 3.0, 1.0, 1.5]
