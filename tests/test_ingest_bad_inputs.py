"""Bad landing files: every case asserts the exact accounting and where each row went.

Dataset (tests/conftest.py): columns ``device,time,ch_a,ch_b,label``; entity from ``device``,
ISO ``time`` (UTC unless the case sets a zone), ``ch_a`` in [-100, 100], ``ch_b`` unbounded, int
``label``. Per case: outcome, rows read / accepted / quarantined / duplicates, the reason of the
rejected file or of each quarantined row (by 1-based data row), and the lake's rows afterwards.
Every quarantined row's ``raw`` JSON is compared with the source line. The same table is in
docs/bad-inputs.md (a test keeps the two in sync with ``CASES``).

| id | input | expected (outcome read/acc/quar/dup; reason) |
|---|---|---|
| clean_control | 3 good rows | committed 3/3/0/0 |
| ragged_too_many | row 2: 6 fields | committed 3/2/1/0; "ragged line: 6 fields, the header has 5" |
| ragged_too_few | row 2 has 3 fields | committed 3/2/1/0; row 2 "ragged line: 3 fields" |
| unterminated_quote | a quote never closed | rejected; "unparseable CSV" |
| blank_line | blank line between rows | committed 3/2/1/0; row 2 "blank line" |
| blank_lines_trailing | two blank lines at the end | committed 3/1/2/0; rows 2, 3 "blank line" |
| whitespace_line | a line of spaces | committed 2/1/1/0; row 2 "ragged line: 1 fields" |
| missing_column | no ch_b column | rejected; "missing required columns ['ch_b']" |
| renamed_column | ch_a spelt chA | rejected; "missing required columns ['ch_a']" |
| renamed_column_mapped | chA with channels[].source=chA | committed 1/1/0/0 |
| extra_column_dropped | extra `site` column | committed 2/2/0/0; lake has no `site` |
| extra_column_kept | extra `site`, keep_other_columns | committed 2/2/0/0; `site` kept as text |
| extra_column_typed | declared int column = `x` | committed 2/1/1/0; "site_no: cannot parse 'x'" |
| quoted_fields | quoted comma and newline in a kept column | committed 2/2/0/0; text kept exactly |
| string_in_numeric | ch_b = `abc` | committed 2/1/1/0; "ch_b: cannot parse 'abc'" |
| nan | ch_a = NaN | committed 2/1/1/0; "ch_a: NaN or infinite value (value NaN)" |
| pos_neg_inf | ch_b = inf, ch_a = -inf | committed 3/1/2/0; NaN-or-infinite reason, once |
| out_of_range | ch_a 100, -100, 100.5, -101 | committed 4/2/2/0; `<=(100.0)` / `>=(-100.0)` |
| null_timestamp | empty time | committed 2/1/1/0; "timestamp: missing value" |
| bad_timestamp | time = `yesterday` | committed 2/1/1/0; "timestamp: cannot parse" |
| null_entity | empty device | committed 2/1/1/0; "entity_id: missing value" |
| null_channel | empty ch_a | committed 2/1/1/0; "ch_a: missing value" |
| null_channel_allowed | empty ch_a, allow_missing_channels | committed 2/2/0/0; null stored |
| label_not_int | label = `walk` | committed 2/1/1/0; "label: cannot parse 'walk'" |
| dup_identical | a row 3 times + 1 other | committed 4/2/0/2 |
| dup_identical_other_spelling | same instant/values, other spelling | committed 2/1/0/1 |
| dup_conflicting | key x3, one value differs | committed 4/1/3/0; all 3 "conflicting duplicate" |
| out_of_order | times 3,1,2,0 | committed 4/4/0/0; stored sorted |
| mixed_timezones | +02:00, Z, -05:30, +0100, naive | committed 5/5/0/0; exact UTC instants |
| naive_local_tz | naive times, timezone Europe/Berlin | committed 3/3/0/0; winter -1h, summer -2h |
| dst_gap | 02:30 on the spring-forward day, Berlin | committed 2/1/1/0; "timestamp: cannot parse" |
| before_1970 | 1969-12-31T23:59:59Z | committed 2/1/1/0; "out of range [1970, 2200)" |
| epoch_s | epoch seconds with fractions | committed 3/3/0/0; exact microseconds |
| epoch_ms | epoch milliseconds (one fractional) | committed 2/2/0/0; exact microseconds |
| epoch_us | epoch microseconds | committed 2/2/0/0; exact microseconds |
| epoch_ns | epoch nanoseconds | committed 2/2/0/0; floored to microseconds |
| epoch_unit_mistake_ms_as_s | ms values, format epoch_s | committed 2/1/1/0; "out of range" |
| epoch_unit_mistake_ns_as_us | ns values, format epoch_us | committed 2/1/1/0; out of range |
| sample_index | index, 4 Hz, start +01:00; -1 and 2.5 | committed 5/3/2/0; exact instants |
| empty_file | 0 bytes | rejected; "empty file (0 bytes)" |
| header_only | header line only | rejected; "header only" |
| whitespace_only | blank lines only | rejected; "empty file" |
| non_utf8_body | latin-1 byte in a row | rejected; "not UTF-8" |
| non_utf8_header | latin-1 byte in the header | rejected; "not UTF-8" |
| utf8_bom | BOM before the header | committed 1/1/0/0 |
| crlf | Windows line ends | committed 2/1/1/0 |
| gzip_good | .csv.gz with one bad row | committed 2/1/1/0 |
| corrupt_gzip | truncated .csv.gz | rejected; "corrupt gzip" |
| not_gzip | plain text named .csv.gz | rejected; "corrupt gzip" |
| gzip_bomb | small .gz over the cap once inflated | rejected; "decompressed size over the cap" |
| over_size_cap | file over lake.max_file_bytes=64 | rejected; "over the cap lake.max_file_bytes" |
| wrong_delimiter | `;`-separated, `,` configured | rejected; "wrong delimiter" |
| delimiter_configured | `;`-separated, `;` configured | committed 1/1/0/0 |
| duplicate_header | ch_a twice | rejected; "duplicate column names" |
| filename_no_match | name not matching entity.from_filename | rejected; "does not match" |
| filename_entity | entity from the file name | committed 1/1/0/0; entity `dev7` |
| parquet_truncated | Parquet without its footer | rejected; "magic bytes" |
| parquet_zero_rows | Parquet with 0 rows | rejected; "no rows" |
| parquet_bool_channel | bool channel | rejected; "has type Boolean" |
| parquet_struct_channel | struct channel | rejected; "has type Struct" |
| parquet_string_channel | text channel, one not numeric | committed 2/1/1/0; "cannot parse 'abc'" |
| parquet_int_channel | int channel | committed 2/2/0/0; cast to float32 |
| parquet_datetime_naive | naive datetime column, zone America/New_York | committed 2/2/0/0; +5 h |
| parquet_int_time_as_iso | int time column, format iso | rejected; "wants text" |
| parquet_nan_inf | NaN and inf in a channel | committed 3/1/2/0 |
| parquet_empty_entity | entity "" and null | committed 3/1/2/0; "empty entity id"/"missing value" |

Multi-file cases (own tests below): entity ids with ``/``, ``..``, ``../../etc`` stay inside the
lake; same content under another name is skipped (0 rows added); rows conflicting with the lake
are quarantined naming the lake file (identical ones counted as duplicates); two files for one
partition are both kept; a folder mixing good and bad files commits the good ones.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import HEADER, counts, lake_frame, make_config, quarantine_frame, write_source

from cnnlstm.ingest import ingest
from cnnlstm.lake import Lake, scan_readings


def rows(*lines: str) -> str:
    return HEADER + "".join(line + "\n" for line in lines)


def ok(i: int, dev: str = "d1", a: str = "1", b: str = "2", label: str = "0") -> str:
    """A good row at 2024-01-01T00:00:0iZ."""
    return f"{dev},2024-01-01T00:00:{i:02d}Z,{a},{b},{label}"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


PQ_BASE = {
    "device": ["d1", "d1"],
    "time": ["2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z"],
    "ch_a": [1.0, 2.0],
    "ch_b": [3.0, 4.0],
    "label": [0, 1],
}


def pq(**cols: Any) -> pl.DataFrame:
    return pl.DataFrame(PQ_BASE | cols)


@dataclass
class Case:
    id: str
    content: str | bytes | pl.DataFrame
    expect: tuple[str, int, int, int, int]  # outcome, read, accepted, quarantined, duplicates
    name: str = "d.csv"
    cfg: dict = field(default_factory=dict)
    reason: str | None = None  # substring of the file-level rejection reason
    qreasons: dict[int, str] = field(default_factory=dict)  # source row -> reason substring
    check: Callable[[pl.DataFrame], None] | None = None  # on the lake's rows
    raw_file: bool = False  # write bytes as they are (no gzip by suffix)
    compare_raw: bool = True  # compare quarantined raw JSON with the source lines


def timestamps(*expected: datetime) -> Callable[[pl.DataFrame], None]:
    def check(df: pl.DataFrame) -> None:
        assert df["timestamp"].sort().to_list() == sorted(expected)
        assert df.schema["timestamp"] == pl.Datetime("us", "UTC")

    return check


def columns(*names: str) -> Callable[[pl.DataFrame], None]:
    def check(df: pl.DataFrame) -> None:
        assert df.columns == list(names)

    return check


def _sorted_in_file(df: pl.DataFrame) -> None:
    # df is in the order of the (single) partition file: stored sorted, not only sortable
    assert df["timestamp"].to_list() == [utc(2024, 1, 1, 0, 0, s) for s in range(4)]
    assert df["label"].to_list() == [0, 0, 0, 0]


def _site_kept(df: pl.DataFrame) -> None:
    assert df.schema["site"] == pl.String
    assert df["site"].to_list() == ["north", "south"]


def _quoted(df: pl.DataFrame) -> None:
    assert df["note"].to_list() == ["a, b", 'line1\nline2 "q"']


def _null_ch_a(df: pl.DataFrame) -> None:
    assert df["ch_a"].to_list() == [None, 1.0]
    assert df.schema["ch_a"] == pl.Float32


DEFAULT_COLS = ("entity_id", "timestamp", "ch_a", "ch_b", "label")
NY = {"data": {"timestamp": {"column": "time", "timezone": "America/New_York"}}}
BERLIN = {"data": {"timestamp": {"column": "time", "timezone": "Europe/Berlin"}}}


def epoch(fmt: str) -> dict:
    return {"data": {"timestamp": {"column": "time", "format": fmt}}}


def one_ts(s: str, *more: str) -> str:
    return rows(*(f"d1,{t},1,2,0" for t in (s, *more)))


_GOOD = rows(ok(0), ok(1))
_BIG_GZ = gzip.compress(rows(*(ok(i % 60) for i in range(200))).encode())

CASES = [
    Case(
        "clean_control",
        rows(ok(0), ok(1), ok(2)),
        ("committed", 3, 3, 0, 0),
        check=columns(*DEFAULT_COLS),
    ),
    Case(
        "ragged_too_many",
        rows(ok(0), ok(1) + ",9", ok(2)),
        ("committed", 3, 2, 1, 0),
        qreasons={2: "ragged line: 6 fields, the header has 5"},
    ),
    Case(
        "ragged_too_few",
        rows(ok(0), "d1,2024-01-01T00:00:01Z,1", ok(2)),
        ("committed", 3, 2, 1, 0),
        qreasons={2: "ragged line: 3 fields, the header has 5"},
    ),
    Case(
        "unterminated_quote",
        rows(ok(0), 'd1,"2024-01-01T00:00:01Z,1,2,0', ok(2)),
        ("rejected", 0, 0, 0, 0),
        reason="unparseable CSV",
    ),
    Case(
        "blank_line", rows(ok(0), "", ok(2)), ("committed", 3, 2, 1, 0), qreasons={2: "blank line"}
    ),
    Case(
        "blank_lines_trailing",
        rows(ok(0), "", ""),
        ("committed", 3, 1, 2, 0),
        qreasons={2: "blank line", 3: "blank line"},
    ),
    Case(
        "whitespace_line",
        rows(ok(0), "   "),
        ("committed", 2, 1, 1, 0),
        qreasons={2: "ragged line: 1 fields"},
    ),
    Case(
        "missing_column",
        "device,time,ch_a,label\nd1,2024-01-01T00:00:00Z,1,0\n",
        ("rejected", 0, 0, 0, 0),
        reason="missing required columns ['ch_b']",
    ),
    Case(
        "renamed_column",
        "device,time,chA,ch_b,label\nd1,2024-01-01T00:00:00Z,1,2,0\n",
        ("rejected", 0, 0, 0, 0),
        reason="missing required columns ['ch_a']",
    ),
    Case(
        "renamed_column_mapped",
        "device,time,chA,ch_b,label\nd1,2024-01-01T00:00:00Z,7,2,0\n",
        ("committed", 1, 1, 0, 0),
        cfg={"data": {"channels": [{"name": "ch_a", "source": "chA"}, {"name": "ch_b"}]}},
        check=lambda df: df["ch_a"].to_list() == [7.0] or pytest.fail("ch_a not mapped"),
    ),
    Case(
        "extra_column_dropped",
        "device,time,ch_a,ch_b,label,site\n"
        "d1,2024-01-01T00:00:00Z,1,2,0,north\nd1,2024-01-01T00:00:01Z,1,2,0,south\n",
        ("committed", 2, 2, 0, 0),
        check=columns(*DEFAULT_COLS),
    ),
    Case(
        "extra_column_kept",
        "device,time,ch_a,ch_b,label,site\n"
        "d1,2024-01-01T00:00:00Z,1,2,0,north\nd1,2024-01-01T00:00:01Z,1,2,0,south\n",
        ("committed", 2, 2, 0, 0),
        cfg={"data": {"keep_other_columns": True}},
        check=_site_kept,
    ),
    Case(
        "extra_column_typed",
        "device,time,ch_a,ch_b,label,site_no\n"
        "d1,2024-01-01T00:00:00Z,1,2,0,4\nd1,2024-01-01T00:00:01Z,1,2,0,x\n",
        ("committed", 2, 1, 1, 0),
        cfg={"data": {"columns": {"site_no": "int"}}},
        qreasons={2: "site_no: cannot parse 'x'"},
        check=lambda df: df["site_no"].to_list() == [4] or pytest.fail("site_no"),
    ),
    Case(
        "quoted_fields",
        "device,time,ch_a,ch_b,label,note\n"
        'd1,2024-01-01T00:00:00Z,1,2,0,"a, b"\n'
        'd1,2024-01-01T00:00:01Z,1,2,0,"line1\nline2 ""q"""\n',
        ("committed", 2, 2, 0, 0),
        cfg={"data": {"keep_other_columns": True}},
        check=_quoted,
    ),
    Case(
        "string_in_numeric",
        rows(ok(0), ok(1, b="abc")),
        ("committed", 2, 1, 1, 0),
        qreasons={2: "ch_b: cannot parse 'abc'"},
    ),
    Case(
        "nan",
        rows(ok(0, a="NaN"), ok(1)),
        ("committed", 2, 1, 1, 0),
        qreasons={1: "=ch_a: NaN or infinite value (value NaN)"},
    ),
    Case(
        "pos_neg_inf",
        rows(ok(0, b="inf"), ok(1, a="-inf"), ok(2)),
        ("committed", 3, 1, 2, 0),
        qreasons={
            1: "=ch_b: NaN or infinite value (value inf)",
            2: "=ch_a: NaN or infinite value (value -inf)",
        },
    ),
    Case(
        "out_of_range",
        rows(ok(0, a="100"), ok(1, a="-100"), ok(2, a="100.5"), ok(3, a="-101")),
        ("committed", 4, 2, 2, 0),
        qreasons={
            3: "=ch_a: less_than_or_equal_to(100.0) (value 100.5)",
            4: "=ch_a: greater_than_or_equal_to(-100.0) (value -101.0)",
        },
        check=lambda df: sorted(df["ch_a"].to_list()) == [-100.0, 100.0] or pytest.fail(),
    ),
    Case(
        "null_timestamp",
        rows(ok(0), "d1,,1,2,0"),
        ("committed", 2, 1, 1, 0),
        qreasons={2: "=timestamp: missing value (value null)"},
    ),
    Case(
        "bad_timestamp",
        rows(ok(0), "d1,yesterday,1,2,0"),
        ("committed", 2, 1, 1, 0),
        qreasons={2: "timestamp: cannot parse or out of range [1970, 2200) as iso: 'yesterday'"},
    ),
    Case(
        "null_entity",
        rows(ok(0), ok(1, dev="")),
        ("committed", 2, 1, 1, 0),
        qreasons={2: "=entity_id: missing value (value null)"},
    ),
    Case(
        "null_channel",
        rows(ok(0, a=""), ok(1)),
        ("committed", 2, 1, 1, 0),
        qreasons={1: "=ch_a: missing value (value null)"},
    ),
    Case(
        "null_channel_allowed",
        rows(ok(0, a=""), ok(1)),
        ("committed", 2, 2, 0, 0),
        cfg={"data": {"allow_missing_channels": True}},
        check=_null_ch_a,
    ),
    Case(
        "label_not_int",
        rows(ok(0), ok(1, label="walk")),
        ("committed", 2, 1, 1, 0),
        qreasons={2: "label: cannot parse 'walk'"},
    ),
    Case(
        "dup_identical",
        rows(ok(0), ok(0), ok(1), ok(0)),
        ("committed", 4, 2, 0, 2),
        check=timestamps(utc(2024, 1, 1), utc(2024, 1, 1, 0, 0, 1)),
    ),
    Case(
        "dup_identical_other_spelling",
        rows(ok(0), "d1,2024-01-01T02:00:00+02:00,1.0,2.00,0"),
        ("committed", 2, 1, 0, 1),
        check=timestamps(utc(2024, 1, 1)),
    ),
    Case(
        "dup_conflicting",
        rows(ok(0), ok(0, a="2"), ok(0), ok(1)),
        ("committed", 4, 1, 3, 0),
        qreasons={
            r: "conflicting duplicate of (entity_id, timestamp): rows 1,2,3 disagree"
            for r in (1, 2, 3)
        },
        check=timestamps(utc(2024, 1, 1, 0, 0, 1)),
    ),
    Case(
        "out_of_order",
        rows(ok(3), ok(1), ok(2), ok(0)),
        ("committed", 4, 4, 0, 0),
        check=_sorted_in_file,
    ),
    Case(
        "mixed_timezones",
        one_ts(
            "2024-01-01T00:00:00+02:00",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00-05:30",
            "2024-01-01 03:00:00.123456+0100",
            "2024-01-01T09:15:00",
        ),
        ("committed", 5, 5, 0, 0),
        check=timestamps(
            utc(2023, 12, 31, 22),
            utc(2024, 1, 1),
            utc(2024, 1, 1, 5, 30),
            utc(2024, 1, 1, 2, 0, 0, 123456),
            utc(2024, 1, 1, 9, 15),
        ),
    ),
    Case(
        "naive_local_tz",
        one_ts("2024-01-15T12:00:00", "2024-07-15 12:00:00.25", "2024-07-15T12:00:00Z"),
        ("committed", 3, 3, 0, 0),
        cfg=BERLIN,
        check=timestamps(
            utc(2024, 1, 15, 11), utc(2024, 7, 15, 10, 0, 0, 250000), utc(2024, 7, 15, 12)
        ),
    ),
    Case(
        "dst_gap",
        one_ts("2024-03-31T02:30:00", "2024-03-31T03:30:00"),
        ("committed", 2, 1, 1, 0),
        cfg=BERLIN,
        qreasons={1: "timestamp: cannot parse or out of range [1970, 2200) as iso"},
        check=timestamps(utc(2024, 3, 31, 1, 30)),
    ),
    Case(
        "before_1970",
        one_ts("1969-12-31T23:59:59Z", "1970-01-01T00:00:00Z"),
        ("committed", 2, 1, 1, 0),
        qreasons={1: "out of range [1970, 2200) as iso: '1969-12-31T23:59:59Z'"},
        check=timestamps(utc(1970, 1, 1)),
    ),
    Case(
        "epoch_s",
        one_ts("1704067200", "1704067200.5", "1704067200.000001"),
        ("committed", 3, 3, 0, 0),
        cfg=epoch("epoch_s"),
        check=timestamps(
            utc(2024, 1, 1), utc(2024, 1, 1, 0, 0, 0, 500000), utc(2024, 1, 1, 0, 0, 0, 1)
        ),
    ),
    Case(
        "epoch_ms",
        one_ts("1704067200123", "1704067201123.5"),
        ("committed", 2, 2, 0, 0),
        cfg=epoch("epoch_ms"),
        check=timestamps(utc(2024, 1, 1, 0, 0, 0, 123000), utc(2024, 1, 1, 0, 0, 1, 123500)),
    ),
    Case(
        "epoch_us",
        one_ts("1704067200123456", "0"),
        ("committed", 2, 2, 0, 0),
        cfg=epoch("epoch_us"),
        check=timestamps(utc(1970, 1, 1), utc(2024, 1, 1, 0, 0, 0, 123456)),
    ),
    Case(
        "epoch_ns",
        one_ts("1704067200123456789", "1704067200000000999"),
        ("committed", 2, 2, 0, 0),
        cfg=epoch("epoch_ns"),
        check=timestamps(utc(2024, 1, 1, 0, 0, 0, 123456), utc(2024, 1, 1)),
    ),
    Case(
        "epoch_unit_mistake_ms_as_s",
        one_ts("1704067200123", "1704067200"),
        ("committed", 2, 1, 1, 0),
        cfg=epoch("epoch_s"),
        qreasons={
            1: "timestamp: cannot parse or out of range [1970, 2200) as epoch_s: '1704067200123"
        },
        check=timestamps(utc(2024, 1, 1)),
    ),
    Case(
        "epoch_unit_mistake_ns_as_us",
        one_ts("1704067200123", "1704067200123456789"),
        ("committed", 2, 1, 1, 0),
        cfg=epoch("epoch_us"),
        qreasons={2: "out of range [1970, 2200) as epoch_us: '1704067200123456789"},
        check=timestamps(utc(1970, 1, 20, 17, 21, 7, 200123)),
    ),
    Case(
        "sample_index",
        one_ts("0", "1", "10", "-1", "2.5"),
        ("committed", 5, 3, 2, 0),
        cfg={
            "data": {
                "timestamp": {
                    "column": "time",
                    "format": "sample_index",
                    "sample_rate_hz": 4,
                    "start": "2024-01-01T01:00:00+01:00",
                }
            }
        },
        qreasons={4: "as sample_index: '-1'", 5: "as sample_index: '2.5'"},
        check=timestamps(
            utc(2024, 1, 1), utc(2024, 1, 1, 0, 0, 0, 250000), utc(2024, 1, 1, 0, 0, 2, 500000)
        ),
    ),
    Case("empty_file", b"", ("rejected", 0, 0, 0, 0), reason="empty file (0 bytes)"),
    Case("header_only", HEADER, ("rejected", 0, 0, 0, 0), reason="header only: no data rows"),
    Case("whitespace_only", "\n \n\n", ("rejected", 0, 0, 0, 0), reason="empty file"),
    Case(
        "non_utf8_body",
        rows(ok(0)).encode() + "d\xe9,2024-01-01T00:00:01Z,1,2,0\n".encode("latin-1"),
        ("rejected", 0, 0, 0, 0),
        reason="not UTF-8: invalid byte 0xe9 on line 3",
    ),
    Case(
        "non_utf8_header",
        "d\xe9vice,time,ch_a,ch_b,label\n".encode("latin-1"),
        ("rejected", 0, 0, 0, 0),
        reason="not UTF-8",
    ),
    Case(
        "utf8_bom",
        b"\xef\xbb\xbf" + rows(ok(0)).encode(),
        ("committed", 1, 1, 0, 0),
        check=columns(*DEFAULT_COLS),
    ),
    Case(
        "crlf",
        rows(ok(0), ok(1, a="500")).replace("\n", "\r\n"),
        ("committed", 2, 1, 1, 0),
        qreasons={2: "ch_a: less_than_or_equal_to(100.0) (value 500.0)"},
    ),
    Case(
        "gzip_good",
        rows(ok(0), ok(1, b="x")),
        ("committed", 2, 1, 1, 0),
        name="d.csv.gz",
        qreasons={2: "ch_b: cannot parse 'x'"},
    ),
    Case(
        "corrupt_gzip",
        gzip.compress(rows(*(ok(i) for i in range(30))).encode())[:60],
        ("rejected", 0, 0, 0, 0),
        name="d.csv.gz",
        raw_file=True,
        reason="corrupt gzip",
    ),
    Case(
        "not_gzip",
        _GOOD,
        ("rejected", 0, 0, 0, 0),
        name="d.csv.gz",
        raw_file=True,
        reason="corrupt gzip",
    ),
    Case(
        "gzip_bomb",
        _BIG_GZ,
        ("rejected", 0, 0, 0, 0),
        name="d.csv.gz",
        raw_file=True,
        cfg={"lake": {"max_file_bytes": 2000}},
        reason="decompressed size over the cap lake.max_file_bytes=2000",
    ),
    Case(
        "over_size_cap",
        _GOOD,
        ("rejected", 0, 0, 0, 0),
        cfg={"lake": {"max_file_bytes": 64}},
        reason=f"file is {len(_GOOD)} bytes, over the cap lake.max_file_bytes=64",
    ),
    Case(
        "wrong_delimiter",
        _GOOD.replace(",", ";"),
        ("rejected", 0, 0, 0, 0),
        reason="wrong delimiter",
    ),
    Case(
        "delimiter_configured",
        rows(ok(0)).replace(",", ";"),
        ("committed", 1, 1, 0, 0),
        cfg={"data": {"csv": {"delimiter": ";"}}},
    ),
    Case(
        "duplicate_header",
        "device,time,ch_a,ch_a,label\nd1,2024-01-01T00:00:00Z,1,2,0\n",
        ("rejected", 0, 0, 0, 0),
        reason="duplicate column names",
    ),
    Case(
        "filename_no_match",
        _GOOD,
        ("rejected", 0, 0, 0, 0),
        name="sensor_a.csv",
        cfg={"data": {"entity": {"column": None, "from_filename": r"^(?P<entity>dev\d+)_"}}},
        reason="file name 'sensor_a.csv' does not match data.entity.from_filename",
    ),
    Case(
        "filename_entity",
        rows(ok(0, dev="ignored")),
        ("committed", 1, 1, 0, 0),
        name="dev7_2024.csv",
        cfg={"data": {"entity": {"column": None, "from_filename": r"^(?P<entity>dev\d+)_"}}},
        check=lambda df: df["entity_id"].to_list() == ["dev7"] or pytest.fail("entity"),
    ),
    Case(
        "parquet_truncated",
        parquet_bytes(pq())[:-20],
        ("rejected", 0, 0, 0, 0),
        name="d.parquet",
        reason="magic bytes",
    ),
    Case(
        "parquet_zero_rows",
        pq().head(0),
        ("rejected", 0, 0, 0, 0),
        name="d.parquet",
        reason="Parquet file has no rows",
    ),
    Case(
        "parquet_bool_channel",
        pq(ch_a=[True, False]),
        ("rejected", 0, 0, 0, 0),
        name="d.parquet",
        reason="column 'ch_a' has type Boolean, expected a number",
    ),
    Case(
        "parquet_struct_channel",
        pq(ch_b=[{"x": 1}, {"x": 2}]),
        ("rejected", 0, 0, 0, 0),
        name="d.parquet",
        reason="column 'ch_b' has type Struct",
    ),
    Case(
        "parquet_string_channel",
        pq(ch_a=["1.5", "abc"]),
        ("committed", 2, 1, 1, 0),
        name="d.parquet",
        qreasons={2: "ch_a: cannot parse 'abc'"},
        check=lambda df: df["ch_a"].to_list() == [1.5] or pytest.fail("ch_a"),
    ),
    Case(
        "parquet_int_channel",
        pq(ch_b=[3, 4]),
        ("committed", 2, 2, 0, 0),
        name="d.parquet",
        check=lambda df: df.schema["ch_b"] == pl.Float32 or pytest.fail("dtype"),
    ),
    Case(
        "parquet_datetime_naive",
        pq(time=[datetime(2024, 1, 1), datetime(2024, 7, 1)]),
        ("committed", 2, 2, 0, 0),
        name="d.parquet",
        cfg=NY,
        check=timestamps(utc(2024, 1, 1, 5), utc(2024, 7, 1, 4)),
    ),
    Case(
        "parquet_int_time_as_iso",
        pq(time=[1, 2]),
        ("rejected", 0, 0, 0, 0),
        name="d.parquet",
        reason="timestamp column 'time' has type Int64; data.timestamp.format=iso wants text",
    ),
    Case(
        "parquet_nan_inf",
        pq(
            **{k: v + [v[0]] for k, v in PQ_BASE.items()}
            | {
                "time": ["2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z"],
                "ch_b": [float("nan"), float("inf"), 5.0],
            }
        ),
        ("committed", 3, 1, 2, 0),
        name="d.parquet",
        qreasons={
            1: "=ch_b: NaN or infinite value (value NaN)",
            2: "=ch_b: NaN or infinite value (value inf)",
        },
    ),
    Case(
        "parquet_empty_entity",
        pq(
            **{k: v + [v[0]] for k, v in PQ_BASE.items()}
            | {
                "device": ["", None, "d1"],
                "time": ["2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z"],
            }
        ),
        ("committed", 3, 1, 2, 0),
        name="d.parquet",
        qreasons={
            1: "=entity_id: empty entity id (value )",
            2: "=entity_id: missing value (value null)",
        },
    ),
]


def _source_records(case: Case, path: Path) -> tuple[list[str], list[Any]]:
    """(header, data records) of the source, for comparing quarantined raw values; a CSV record
    is its raw line (the tests' files have no multi-line fields where rows are quarantined)."""
    if path.suffix == ".parquet":
        df = pl.read_parquet(path)
        return df.columns, [dict(zip(df.columns, r, strict=True)) for r in df.iter_rows()]
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    text = data.decode("utf-8-sig").replace("\r\n", "\n")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return next(csv.reader([lines[0]])), lines[1:]


def _same_value(raw: Any, orig: Any, typed: bool) -> bool:
    if raw is None or orig is None:
        return raw is None and orig in (None, "")
    if str(raw) == str(orig):
        return True
    if not typed:  # CSV: the quarantine keeps each field's source text exactly
        return False
    try:  # Parquet: typed values, JSON-encoded
        a, b = float(raw), float(orig)
    except ValueError:
        return False
    return a == b or (math.isnan(a) and math.isnan(b))


def assert_raw_matches_source(case: Case, path: Path, q: pl.DataFrame) -> None:
    header, records = _source_records(case, path)
    for row, raw_json in zip(q["source_row"], q["raw"], strict=True):
        raw = json.loads(raw_json)
        rec = records[row - 1]
        if "line" in raw:  # a line that could not be split into fields
            assert raw == {"line": rec}
            continue
        assert list(raw) == header
        values = (
            rec
            if isinstance(rec, dict)
            else dict(zip(header, next(csv.reader([rec])), strict=True))
        )
        for k in header:
            typed = isinstance(rec, dict)
            assert _same_value(raw[k], values[k], typed), (row, k, raw[k], values[k])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, **case.cfg)
    src = write_source(tmp_path / "landing" / case.name, case.content, raw=case.raw_file)

    report = ingest(cfg, [str(src)])

    (rep,) = report.files
    assert counts(rep) == case.expect, rep
    assert rep.rows_read == rep.accepted + rep.quarantined + rep.duplicates
    lake = Lake(cfg.lake_uri)
    lake_rows = lake_frame(cfg)
    assert lake_rows.height == rep.accepted
    q = quarantine_frame(cfg)
    if rep.outcome == "rejected":
        assert case.reason is not None and case.reason in (rep.reason or ""), rep.reason
        assert lake.records() == []
        (rej,) = lake.rejections()
        assert rej["outcome"] == "rejected" and rej["source"] == str(src)
        assert rej["reason"] == rep.reason
        assert q.height == 0
        return
    assert case.reason is None
    (rec,) = lake.records()
    assert (rec["rows_read"], rec["accepted"], rec["quarantined"], rec["duplicates"]) == (
        rep.rows_read,
        rep.accepted,
        rep.quarantined,
        rep.duplicates,
    )
    assert rec["sha256"] == rep.sha256
    assert lake.rejections() == []
    # the quarantine holds exactly the quarantined rows, each with its reason
    assert q.height == rep.quarantined
    assert q["source_row"].to_list() == sorted(case.qreasons)
    for row, reason in zip(q["source_row"], q["reason"], strict=True):
        want = case.qreasons[row]
        if want.startswith("="):
            assert reason == want[1:], (row, reason)
        else:
            assert want in reason, (row, reason)
    if q.height:
        assert set(q["source_file"]) == {str(src)}
        assert set(q["source_sha256"]) == {rep.sha256}
        if case.compare_raw:
            assert_raw_matches_source(case, src, q)
    if case.check is not None:  # on the rows in stored order (one partition file here)
        case.check(scan_readings(cfg.lake_uri).collect())


def test_table_lists_every_case() -> None:
    """docs/bad-inputs.md and this module's docstring list exactly the cases that run."""
    ids = {c.id for c in CASES}
    assert len(ids) == len(CASES) >= 25
    doc = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"
    for text in (__doc__ or "", doc.read_text()):
        listed = set(re.findall(r"^\| ([a-z0-9_]+) \|", text, flags=re.M)) - {"id"}
        assert listed == ids


# ------------------------------------------------------------------------------------------------
# cases that need more than one file or a look at the file system


def test_entity_ids_with_path_characters_stay_inside_the_lake(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, lake={"uri": str(tmp_path / "deep" / "lake")})
    ids = ["a/b", "..", "../../etc", ".", "../../../tmp/x", "C:\\win", "%2F", "/abs"]
    src = write_source(tmp_path / "ids.csv", rows(*(ok(0, dev=e) for e in ids)))
    before = {p for p in tmp_path.rglob("*")}

    (rep,) = ingest(cfg, [str(src)]).files

    assert counts(rep) == ("committed", len(ids), len(ids), 0, 0)
    lake_root = (tmp_path / "deep" / "lake").resolve()
    new = {p for p in tmp_path.rglob("*")} - before
    assert new, "nothing written"
    for p in new:  # every new path is the lake root, inside it, or a folder above it
        p = p.resolve()
        assert p.is_relative_to(lake_root) or lake_root.is_relative_to(p), p
    assert not (tmp_path / "etc").exists() and not (tmp_path / "deep" / "etc").exists()
    parts = sorted(p.parent.parent.name for p in lake_root.glob("readings/*/*/*.parquet"))
    assert len(parts) == len(ids)  # one partition per id: no two ids collapse into one folder
    assert all(p.startswith("entity_id=") and "/" not in p for p in parts)
    df = lake_frame(cfg)
    assert sorted(df["entity_id"].to_list()) == sorted(ids)
    for e in ids:  # and the reader gives the original id back, per entity
        assert scan_readings(cfg.lake_uri, entities=[e]).collect()["entity_id"].to_list() == [e]


def test_same_content_under_another_name_is_skipped(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    text = rows(ok(0), ok(1), ok(1, a="NaN"))
    a = write_source(tmp_path / "a.csv", text)
    (first,) = ingest(cfg, [str(a)]).files
    assert counts(first) == ("committed", 3, 2, 1, 0)
    before = lake_frame(cfg)

    b = write_source(tmp_path / "other" / "b.csv", text)
    (second,) = ingest(cfg, [str(b)]).files

    assert counts(second) == ("skipped", 0, 0, 0, 0)
    assert str(a) in second.reason and second.sha256 == first.sha256
    assert lake_frame(cfg).equals(before)
    assert quarantine_frame(cfg).height == 1
    assert len(Lake(cfg.lake_uri).records()) == 1


def test_rows_conflicting_with_the_lake_are_quarantined_naming_the_lake_file(
    tmp_path: Path,
) -> None:
    cfg = make_config(tmp_path)
    first = write_source(tmp_path / "first.csv", rows(ok(0), ok(1), ok(2)))
    ingest(cfg, [str(first)])
    (lake_file,) = [f.path for f in Lake(cfg.lake_uri).data_files()]

    # row 1: same key, other value -> quarantined; row 2: identical -> duplicate; row 3: new
    second = write_source(tmp_path / "second.csv", rows(ok(0, a="9"), ok(1), ok(3)))
    (rep,) = ingest(cfg, [str(second)]).files

    assert counts(rep) == ("committed", 3, 1, 1, 1)
    q = quarantine_frame(cfg)
    assert q["source_row"].to_list() == [1]
    assert q["source_file"].to_list() == [str(second)]
    assert q["reason"][0] == (
        "conflicts with the row already in the lake for (entity_id, timestamp) in " + lake_file
    )
    assert json.loads(q["raw"][0])["ch_a"] in ("9", "9.0")
    df = lake_frame(cfg)
    assert df.height == 4
    assert df["ch_a"].to_list() == [1.0, 1.0, 1.0, 1.0]  # the lake's value was kept
    assert df["timestamp"].is_unique().all()


def test_two_files_for_one_partition_are_both_kept(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    a = write_source(tmp_path / "a.csv", rows(ok(0), ok(1)))
    b = write_source(tmp_path / "b.csv", rows(ok(2), ok(3), ok(4)))
    reps = ingest(cfg, [str(a), str(b)]).files
    assert [counts(r) for r in reps] == [("committed", 2, 2, 0, 0), ("committed", 3, 3, 0, 0)]
    files = Lake(cfg.lake_uri).data_files()
    assert len(files) == 2 and len({f.path for f in files}) == 2
    assert {(f.entity_id, f.date) for f in files} == {("d1", "2024-01-01")}
    assert lake_frame(cfg)["timestamp"].to_list() == [utc(2024, 1, 1, 0, 0, s) for s in range(5)]


def test_folder_mixing_good_and_bad_files_commits_the_good_ones(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    land = tmp_path / "landing"
    write_source(land / "a_good.csv", rows(ok(0), ok(1)))
    write_source(land / "b_empty.csv", b"")
    write_source(land / "c_corrupt.csv.gz", b"\x1f\x8b\x08\x00garbage", raw=True)
    write_source(land / "d_truncated.parquet", parquet_bytes(pq())[:40], raw=True)
    write_source(land / "e_semicolon.csv", rows(ok(5)).replace(",", ";"))
    write_source(land / "sub" / "f_good.csv.gz", rows(ok(2, dev="d2"), ok(3, dev="d2", a="x")))
    write_source(land / "g_good.parquet", pq(device=["d3", "d3"]))
    write_source(land / "notes.txt", "not a source file")
    write_source(land / ".hidden.csv", rows(ok(9)))

    report = ingest(cfg, [str(land)])

    got = {r.name: counts(r) for r in report.files}
    assert got == {
        "a_good.csv": ("committed", 2, 2, 0, 0),
        "b_empty.csv": ("rejected", 0, 0, 0, 0),
        "c_corrupt.csv.gz": ("rejected", 0, 0, 0, 0),
        "d_truncated.parquet": ("rejected", 0, 0, 0, 0),
        "e_semicolon.csv": ("rejected", 0, 0, 0, 0),
        "f_good.csv.gz": ("committed", 2, 1, 1, 0),
        "g_good.parquet": ("committed", 2, 2, 0, 0),
    }
    reasons = {r.name: r.reason for r in report.files}
    assert "empty file" in reasons["b_empty.csv"]
    assert "corrupt gzip" in reasons["c_corrupt.csv.gz"]
    assert "corrupt or unreadable Parquet" in reasons["d_truncated.parquet"]
    assert "wrong delimiter" in reasons["e_semicolon.csv"]
    assert report.totals() == {
        "rows_read": 6,
        "accepted": 5,
        "quarantined": 1,
        "duplicates": 0,
        "committed": 3,
        "skipped": 0,
        "rejected": 4,
        "failed": 0,
        "retry": 0,
    }
    assert not report.clean
    lake = Lake(cfg.lake_uri)
    assert len(lake.records()) == 3
    assert sorted(r["name"] for r in lake.rejections()) == [
        "b_empty.csv",
        "c_corrupt.csv.gz",
        "d_truncated.parquet",
        "e_semicolon.csv",
    ]
    df = lake_frame(cfg)
    assert df.height == 5 and sorted(set(df["entity_id"])) == ["d1", "d2", "d3"]
    assert not os.listdir(tmp_path / "lake" / "_tmp")
