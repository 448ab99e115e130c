"""Timestamps written in a user's own date format (``data.timestamp.format`` as a strftime-style
pattern) and date and time in two columns (``data.timestamp.column`` as a list), through the
real ingest path: tiny hand-made files shaped like public datasets (UCI household power, UCI Air
Quality, loggers), exact UTC instants, quarantine reasons and the per-file accounting."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from conftest import counts, lake_frame, make_config, quarantine_frame, write_source
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlstm.config import Config, ConfigError, TimestampSpec
from cnnlstm.formats import ROW
from cnnlstm.ingest import ingest, map_columns, mapping_fingerprint

DMY = "%d/%m/%Y %H:%M:%S"


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


def _cfg(tmp_path: Path, timestamp: dict[str, Any], **data: Any) -> Config:
    """One entity, no label, channels ``a`` (and more via ``data``)."""
    d: dict[str, Any] = {
        "entity": {"column": None, "constant": "unit"},
        "timestamp": timestamp,
        "channels": [{"name": "a"}],
        "label": None,
    }
    return make_config(tmp_path, data=d | data)


def _one(cfg: Config, path: Path):
    (rep,) = ingest(cfg, [str(path)]).files
    rep.check_accounting()
    return rep


def _times(cfg: Config) -> list[datetime]:
    return lake_frame(cfg)["timestamp"].to_list()


def _reasons(cfg: Config) -> dict[int, str]:
    q = quarantine_frame(cfg)
    return dict(zip(q["source_row"].to_list(), q["reason"].to_list(), strict=True))


# ---------------------------------------------------------------- (a) household power


def test_household_power_date_and_time_columns_day_first(tmp_path: Path) -> None:
    """UCI "Individual household electric power consumption": ``;``-separated, ``Date;Time``,
    day first, days and hours without a leading zero, ``?`` for a missing value."""
    src = write_source(
        tmp_path / "household_power_consumption.csv",
        "Date;Time;Global_active_power;Voltage;Sub_metering_1\n"
        "16/12/2006;17:24:00;4.216;234.840;0.000\n"
        "16/12/2006;17:25:00;5.360;233.630;0.000\n"
        "16/12/2006;17:26:00;?;233.290;?\n"
        "1/1/2007;0:00:00;2.580;241.970;1.000\n",
    )
    cfg = _cfg(
        tmp_path,
        {"column": ["Date", "Time"], "format": DMY},
        channels=[{"name": "power", "source": "Global_active_power"}, {"name": "Voltage"}],
        csv={"delimiter": ";", "null_values": ["", "?"]},
        allow_missing_channels=True,  # the `?` row is kept with a null power
        keep_other_columns=True,
    )
    rep = _one(cfg, src)
    assert counts(rep) == ("committed", 4, 4, 0, 0)
    df = lake_frame(cfg)
    assert df["timestamp"].to_list() == [
        utc(2006, 12, 16, 17, 24),
        utc(2006, 12, 16, 17, 25),
        utc(2006, 12, 16, 17, 26),
        utc(2007, 1, 1, 0, 0),
    ]
    assert df["power"].to_list()[2] is None
    assert df["power"].to_list()[0] == pytest.approx(4.216)
    # the time's source columns are used (not kept again as extra columns); others are
    assert "Sub_metering_1" in df.columns
    assert "Date" not in df.columns and "Time" not in df.columns


def test_household_power_missing_value_quarantined_without_allow_missing(tmp_path: Path) -> None:
    src = write_source(
        tmp_path / "hp.csv",
        "Date;Time;Global_active_power\n16/12/2006;17:24:00;4.216\n16/12/2006;17:26:00;?\n",
    )
    cfg = _cfg(
        tmp_path,
        {"column": ["Date", "Time"], "format": DMY},
        channels=[{"name": "power", "source": "Global_active_power"}],
        csv={"delimiter": ";", "null_values": ["", "?"]},
    )
    assert counts(_one(cfg, src)) == ("committed", 2, 1, 1, 0)
    assert _times(cfg) == [utc(2006, 12, 16, 17, 24)]
    assert "power: missing value" in _reasons(cfg)[2]


# ---------------------------------------------------------------- (b) Air Quality


def test_air_quality_time_written_with_dots(tmp_path: Path) -> None:
    """UCI "Air Quality": ``10/03/2004;18.00.00;...``."""
    src = write_source(
        tmp_path / "AirQualityUCI.csv",
        "Date;Time;CO(GT);T\n10/03/2004;18.00.00;2.6;13.6\n10/03/2004;19.00.00;2;13.3\n"
        "11/03/2004;0.00.00;1.2;11.0\n",
    )
    cfg = _cfg(
        tmp_path,
        {"column": ["Date", "Time"], "format": "%d/%m/%Y %H.%M.%S"},
        channels=[{"name": "co", "source": "CO(GT)"}, {"name": "T"}],
        csv={"delimiter": ";"},
    )
    assert counts(_one(cfg, src)) == ("committed", 3, 3, 0, 0)
    assert _times(cfg) == [utc(2004, 3, 10, 18), utc(2004, 3, 10, 19), utc(2004, 3, 11, 0)]


# ---------------------------------------------------------------- (c), (d): one column


def test_twelve_hour_clock_with_am_pm(tmp_path: Path) -> None:
    src = write_source(
        tmp_path / "logger.csv",
        "time,a\n"
        "12/16/2006 5:24:00 PM,1\n"
        "12/16/2006 12:00:00 AM,2\n"  # midnight
        "12/16/2006 12:30:00 PM,3\n"  # half past noon
        "12/17/2006 1:05:09 am,4\n",  # any case
    )
    cfg = _cfg(tmp_path, {"column": "time", "format": "%m/%d/%Y %I:%M:%S %p"})
    assert counts(_one(cfg, src)) == ("committed", 4, 4, 0, 0)
    assert lake_frame(cfg).sort("a")["timestamp"].to_list() == [
        utc(2006, 12, 16, 17, 24),
        utc(2006, 12, 16, 0, 0),
        utc(2006, 12, 16, 12, 30),
        utc(2006, 12, 17, 1, 5, 9),
    ]


def test_fractional_seconds(tmp_path: Path) -> None:
    src = write_source(
        tmp_path / "frac.csv",
        "time,a\n"
        "16.12.2006 17:24:00.250,1\n"
        "16.12.2006 17:24:00.5,2\n"
        "16.12.2006 17:24:01,3\n"  # the fraction is optional
        "16.12.2006 17:24:01.123456,4\n",
    )
    cfg = _cfg(tmp_path, {"column": "time", "format": "%d.%m.%Y %H:%M:%S%.f"})
    assert counts(_one(cfg, src)) == ("committed", 4, 4, 0, 0)
    t0 = utc(2006, 12, 16, 17, 24)
    assert _times(cfg) == [
        t0 + timedelta(milliseconds=250),
        t0 + timedelta(milliseconds=500),
        t0 + timedelta(seconds=1),
        t0 + timedelta(seconds=1, microseconds=123456),
    ]


def test_a_pattern_with_an_offset_gives_instants_and_ignores_the_timezone(tmp_path: Path) -> None:
    src = write_source(
        tmp_path / "off.csv",
        "time,a\n2006/12/16 17:24 +0100,1\n2006/12/16 17:24 -05:30,2\n2006/12/16 17:24,3\n",
    )
    cfg = _cfg(
        tmp_path,
        {"column": "time", "format": "%Y/%m/%d %H:%M %z", "timezone": "Europe/Berlin"},
    )
    assert counts(_one(cfg, src)) == ("committed", 3, 2, 1, 0)
    assert _times(cfg) == [utc(2006, 12, 16, 16, 24), utc(2006, 12, 16, 22, 54)]
    assert _reasons(cfg) == {
        3: "timestamp: cannot parse or out of range [1970, 2200) as %Y/%m/%d %H:%M %z: "
        "'2006/12/16 17:24'"
    }


# ---------------------------------------------------------------- (e) local times in a zone


def test_naive_pattern_in_a_zone_and_a_clock_change(tmp_path: Path) -> None:
    src = write_source(
        tmp_path / "berlin.csv",
        "time,a\n"
        "16/12/2006 17:24:00,1\n"  # CET, UTC+1
        "01/07/2006 12:00:00,2\n"  # CEST, UTC+2
        "26/03/2006 02:30:00,3\n"  # spring forward: 02:00-03:00 does not exist
        "29/10/2006 02:30:00,4\n"  # fall back: 02:30 happens twice
        "26/03/2006 03:00:00,5\n",  # the first minute after the gap, CEST
    )
    cfg = _cfg(tmp_path, {"column": "time", "format": DMY, "timezone": "Europe/Berlin"})
    assert counts(_one(cfg, src)) == ("committed", 5, 3, 2, 0)
    assert lake_frame(cfg).sort("a")["timestamp"].to_list() == [
        utc(2006, 12, 16, 16, 24),
        utc(2006, 7, 1, 10, 0),
        utc(2006, 3, 26, 1, 0),
    ]
    reasons = _reasons(cfg)
    assert set(reasons) == {3, 4}
    assert reasons[3] == (
        "timestamp: '26/03/2006 02:30:00' read as %d/%m/%Y %H:%M:%S is a local time that "
        "Europe/Berlin skips or repeats (a clock change): no single instant"
    )
    assert "'29/10/2006 02:30:00'" in reasons[4] and "Europe/Berlin" in reasons[4]


# ---------------------------------------------------------------- (f) values that do not match


def test_values_that_do_not_match_are_quarantined_naming_pattern_and_value(tmp_path: Path) -> None:
    src = write_source(
        tmp_path / "mixed.csv",
        "Date;Time;a\n"
        "16/12/2006;17:24:00;1\n"
        "2006-12-16;17:25:00;2\n"  # ISO date: not the pattern
        "16/13/2006;17:26:00;3\n"  # month 13
        "16/12/2006;;4\n"  # no time
        "31/12/2016;23:59:60;5\n"  # a leap second
        "16/12/1969;17:24:00;6\n"  # before 1970
        "16/12/2006;17:24:00;1\n"  # an identical duplicate of row 1
        "16/12/2006;17:27:00;8\n",
    )
    cfg = _cfg(tmp_path, {"column": ["Date", "Time"], "format": DMY}, csv={"delimiter": ";"})
    rep = _one(cfg, src)
    assert counts(rep) == ("committed", 8, 2, 5, 1)
    assert rep.rows_read == rep.accepted + rep.quarantined + rep.duplicates
    assert _times(cfg) == [utc(2006, 12, 16, 17, 24), utc(2006, 12, 16, 17, 27)]
    msg = "timestamp: cannot parse or out of range [1970, 2200) as %d/%m/%Y %H:%M:%S: '{}'"
    reasons = _reasons(cfg)
    assert reasons[2] == msg.format("2006-12-16 17:25:00")
    assert reasons[3] == msg.format("16/13/2006 17:26:00")
    assert reasons[4] == (
        "timestamp: missing value in 'Time' (data.timestamp.column ['Date', 'Time'] is joined)"
    )
    assert reasons[5].startswith("timestamp: leap second (second 60) '31/12/2016 23:59:60'")
    assert reasons[6] == msg.format("16/12/1969 17:24:00")
    assert set(reasons) == {2, 3, 4, 5, 6}


def test_parquet_date_and_time_columns_joined_as_iso(tmp_path: Path) -> None:
    """Typed date and time columns (Parquet) give ISO text when joined."""
    src = write_source(
        tmp_path / "typed.parquet",
        {
            "d": [date(2006, 12, 16), date(2006, 12, 17)],
            "t": [time(17, 24), time(0, 0, 1)],
            "a": [1.0, 2.0],
        },
    )
    cfg = _cfg(tmp_path, {"column": ["d", "t"], "format": "iso"})
    assert counts(_one(cfg, src)) == ("committed", 2, 2, 0, 0)
    assert _times(cfg) == [utc(2006, 12, 16, 17, 24), utc(2006, 12, 17, 0, 0, 1)]


# ---------------------------------------------------------------- (g) config errors


def _config_error(tmp_path: Path, timestamp: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        _cfg(tmp_path, timestamp)
    return str(e.value)


def test_an_unknown_word_lists_the_formats_and_mentions_patterns(tmp_path: Path) -> None:
    msg = _config_error(tmp_path, {"column": "time", "format": "dd/mm/yyyy"})
    assert "data.timestamp.format" in msg
    for name in ("iso", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "sample_index"):
        assert name in msg
    assert "contains %" in msg


@pytest.mark.parametrize(
    ("timestamp", "needles"),
    [
        ({"column": ["a", "b"], "format": "epoch_s"}, ["data.timestamp.column", "epoch_s"]),
        (
            {
                "column": ["a", "b"],
                "format": "sample_index",
                "sample_rate_hz": 1,
                "start": "2000-01-01T00:00:00Z",
            },
            ["data.timestamp.column", "sample_index"],
        ),
        ({"column": [], "format": DMY}, ["data.timestamp.column", "empty list"]),
        ({"column": ["a", "a"], "format": DMY}, ["data.timestamp.column", "twice"]),
        ({"column": "time", "format": "%H:%M:%S"}, ["data.timestamp.format", "whole date"]),
        ({"column": "time", "format": "%Y-%m"}, ["data.timestamp.format", "whole date"]),
        ({"column": "time", "format": "%Y-%m-%d %Z"}, ["data.timestamp.format", "%Z"]),
        ({"column": "time", "format": "%d/%m/%Y %H"}, ["data.timestamp.format", "minute"]),
        ({"column": "time", "format": "%d/%m/%Y %Q"}, ["data.timestamp.format", "polars"]),
    ],
)
def test_config_errors(tmp_path: Path, timestamp: dict[str, Any], needles: list[str]) -> None:
    msg = _config_error(tmp_path, timestamp)
    for n in needles:
        assert n in msg, msg


def test_the_named_formats_and_a_single_column_dump_as_before(tmp_path: Path) -> None:
    """Configs without the new forms keep their mapping fingerprint (no new dumped keys)."""
    cfg = make_config(tmp_path)
    assert cfg.data.timestamp.model_dump(mode="json") == {
        "column": "time",
        "format": "iso",
        "timezone": "UTC",
        "sample_rate_hz": None,
        "start": None,
    }
    assert cfg.data.timestamp.columns == ["time"]
    other = _cfg(tmp_path, {"column": ["Date", "Time"], "format": DMY})
    assert other.data.timestamp.columns == ["Date", "Time"]
    assert mapping_fingerprint(other.data) != mapping_fingerprint(
        _cfg(tmp_path, {"column": ["Date", "Time"], "format": "%d/%m/%Y %H.%M.%S"}).data
    )
    spec = TimestampSpec(format="sample_index", sample_rate_hz=1, start="2000-01-01T00:00:00Z")
    assert spec.columns == [] and not spec.is_pattern


# ---------------------------------------------------------------- (h) property: round trip

# (Python's strftime to write, the same layout in chrono's specifiers to read)
PATTERNS = [
    ("%d/%m/%Y %H:%M:%S.%f", "%d/%m/%Y %H:%M:%S%.f"),
    ("%m/%d/%Y %I:%M:%S.%f %p", "%m/%d/%Y %I:%M:%S%.f %p"),
    ("%Y-%j %H.%M.%S.%f", "%Y-%j %H.%M.%S%.f"),
    ("%d.%m.%y %H%M%S.%f", "%d.%m.%y %H%M%S%.f"),
]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    instants=st.lists(
        st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2068, 12, 31)),
        min_size=1,
        max_size=20,
    ),
    pattern=st.sampled_from(PATTERNS),
    zone=st.sampled_from(ZONES),
)
def test_formatted_and_parsed_back_are_the_same_instants(
    tmp_path_factory, instants: list[datetime], pattern: tuple[str, str], zone: str
) -> None:
    """UTC instants written as local wall times of ``zone`` with a pattern and read back give
    the same instants, except a wall time the zone repeats (no single instant): quarantined."""
    py_fmt, chrono_fmt = pattern
    tz = ZoneInfo(zone)
    texts, expected = [], []
    for naive in instants:
        t = naive.replace(tzinfo=UTC)
        wall = t.astimezone(tz).replace(tzinfo=None)
        texts.append(wall.strftime(py_fmt))
        earlier, later = wall.replace(tzinfo=tz, fold=0), wall.replace(tzinfo=tz, fold=1)
        expected.append(t if earlier.utcoffset() == later.utcoffset() else None)
    cfg = _cfg(
        tmp_path_factory.mktemp("p"), {"column": "time", "format": chrono_fmt, "timezone": zone}
    )
    src = pl.DataFrame(
        {"time": texts, "a": ["1"] * len(texts), ROW: list(range(1, len(texts) + 1))},
        schema={"time": pl.String, "a": pl.String, ROW: pl.Int64},
    )
    out = map_columns(src, cfg.data)
    assert out["timestamp"].to_list() == expected, texts
    for got, err, text in zip(out["timestamp"], out["_err"], texts, strict=True):
        if got is None:
            assert err is not None and f"'{text}'" in err and zone in err
        else:
            assert err is None
