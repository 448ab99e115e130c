"""The lake: safe partition paths, atomic writes, a ledger that readers trust, filters."""

from __future__ import annotations

import fcntl
import os
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from conftest import HEADER, lake_frame, make_config, write_source

from cnnlstm.ingest import ingest
from cnnlstm.lake import (
    Lake,
    LakeError,
    encode_entity,
    expand_sources,
    lake_summary,
    scan_quarantine,
    scan_readings,
)


def test_encode_entity_is_one_safe_segment_and_injective() -> None:
    ids = ["dev-01_a", "a/b", "a%2Fb", "..", ".", "../../etc", "a\\b", "/", "é", "a b", "a%b"]
    enc = [encode_entity(i) for i in ids]
    assert enc[0] == "dev-01_a"  # plain ids stay readable
    assert encode_entity("a/b") == "a%2Fb" and encode_entity("a%2Fb") == "a%252Fb"
    assert len(set(enc)) == len(ids)
    for e in enc:
        assert "/" not in e and "\\" not in e
    part = Lake.partition_dir("../../etc", "2024-01-01")
    assert part == "readings/entity_id=%2E%2E%2F%2E%2E%2Fetc/date=2024-01-01"
    assert encode_entity("..") == "%2E%2E" and encode_entity("~x") == "%7Ex"
    # no component of the partition path can climb out of readings/
    assert all(c not in ("..", ".", "") for c in part.split("/"))


def test_write_parquet_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.ensure()
    df = pl.DataFrame({"x": [1, 2, 3]})
    assert lake.write_parquet(df, "readings/entity_id=a/date=2024-01-01/p.parquet") == 3
    out = tmp_path / "lake/readings/entity_id=a/date=2024-01-01/p.parquet"
    assert pl.read_parquet(out).equals(df)
    assert not list((tmp_path / "lake/_tmp").iterdir())
    lake.write_json({"k": 1}, "_ledger/abc.json")
    assert lake.ledger_record("abc") == {"k": 1}
    assert lake.ledger_record("nope") is None


def test_clean_tmp_removes_leftovers_of_killed_writers(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.ensure()
    for i in range(3):
        (tmp_path / f"lake/_tmp/{i}.parquet").write_bytes(b"PAR1 partial")
    assert lake.clean_tmp() == 3
    assert not list((tmp_path / "lake/_tmp").iterdir())


def test_commit_lock_is_exclusive(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.ensure()
    lock = tmp_path / "lake/_locks/commit.lock"
    with lake.commit_lock():
        fd = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(lock, os.O_RDWR)  # released afterwards
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def _two_entities(tmp_path: Path):
    cfg = make_config(tmp_path)
    text = HEADER + "".join(
        f"{dev},2024-01-0{day}T{h:02d}:00:00Z,{h},0,1\n"
        for dev in ("d1", "d2")
        for day in (1, 2, 3)
        for h in (0, 12)
    )
    ingest(cfg, [str(write_source(tmp_path / "two.csv", text))])
    return cfg


def test_scan_readings_filters_by_entity_and_time(tmp_path: Path) -> None:
    cfg = _two_entities(tmp_path)
    assert scan_readings(cfg.lake_uri).collect().height == 12
    assert set(scan_readings(cfg.lake_uri, entities=["d2"]).collect()["entity_id"]) == {"d2"}
    start, end = datetime(2024, 1, 1, 12, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)
    got = scan_readings(cfg.lake_uri, entities=["d1"], start=start, end=end).collect()
    # start inclusive, end exclusive
    assert sorted(got["timestamp"].to_list()) == [
        datetime(2024, 1, 1, 12, tzinfo=UTC),
        datetime(2024, 1, 2, 0, tzinfo=UTC),
        datetime(2024, 1, 2, 12, tzinfo=UTC),
    ]
    with pytest.raises(LakeError, match="no readings"):
        scan_readings(cfg.lake_uri, entities=["nobody"])


def test_readers_trust_the_ledger_not_the_directory(tmp_path: Path) -> None:
    cfg = _two_entities(tmp_path)
    before = lake_frame(cfg)
    # a foreign file and a partial file dropped into partitions are invisible
    part = tmp_path / "lake/readings/entity_id=d1/date=2024-01-01"
    before.head(3).write_parquet(part / "foreign.parquet")
    (part / "part-partial.parquet").write_bytes(b"PAR1 truncated")
    assert lake_frame(cfg).equals(before)
    assert lake_summary(cfg.lake_uri)["rows"] == 12


def test_unreadable_ledger_record_is_a_lake_error(tmp_path: Path) -> None:
    cfg = _two_entities(tmp_path)
    (tmp_path / "lake/_ledger/broken.json").write_text("{not json")
    with pytest.raises(LakeError, match="broken.json"):
        scan_readings(cfg.lake_uri)


def test_summary_and_quarantine_of_a_lake(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    Lake(cfg.lake_uri).ensure()
    assert scan_quarantine(cfg.lake_uri) is None
    good = write_source(
        tmp_path / "g.csv",
        HEADER + "a,2024-01-01T00:00:00Z,1,2,0\nb,2024-01-01T00:00:00Z,nan,2,0\n",
    )
    empty = write_source(tmp_path / "e.csv", b"")
    ingest(cfg, [str(good), str(empty)])
    assert lake_summary(cfg.lake_uri) == {
        "lake": cfg.lake_uri,
        "sources": 1,
        "rows": 1,
        "quarantined": 1,
        "entities": 1,
        "data_files": 1,
        "rejected_sources": 1,
    }
    q = scan_quarantine(cfg.lake_uri).collect()
    assert q["source_row"].to_list() == [2] and q["source_file"].to_list() == [str(good)]


def test_expand_sources_folders_globs_and_missing(tmp_path: Path) -> None:
    for name in (
        "a.csv",
        "b.CSV.GZ",
        "sub/c.parquet",
        "sub/deeper/d.pq",
        "notes.txt",
        ".hidden.csv",
        "sub/x.json",
    ):
        write_source(tmp_path / name, b"x", raw=True)
    got = expand_sources([str(tmp_path)])
    assert [Path(p).relative_to(tmp_path).as_posix() for p in got] == [
        "a.csv",
        "b.CSV.GZ",
        "sub/c.parquet",
        "sub/deeper/d.pq",
    ]
    assert expand_sources([str(tmp_path / "*.csv"), str(tmp_path / "a.csv")]) == [
        str(tmp_path / "a.csv")
    ]
    with pytest.raises(FileNotFoundError, match="nope"):
        expand_sources([str(tmp_path / "nope.csv")])
    with pytest.raises(FileNotFoundError):
        expand_sources([str(tmp_path / "*.xyz")])
