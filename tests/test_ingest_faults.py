"""Faults of the lake side of ingest (issue 12, items 5, 8 and 12).

- item 5: an entity id too long for a partition name quarantines exactly its rows (the file's
  other rows go in); a failure in the middle of a commit, or files left by a killed writer, leave
  nothing that no ledger record names once the next ingest's startup sweep has run;
- item 8: infrastructure errors (disk full, a lock timeout) are their own outcome, ``failed``:
  nothing under ``_ledger/rejected``, CLI exit status 3, retried by the Prefect ingest flow; a
  later run commits the file;
- item 12: the per-file cost stays flat as the lake grows: an ingest neither re-reads the ledger
  nor every file of a partition for each new file, and duplicates and conflicts against earlier
  files (of this run, of other writers, of lakes written before the ledger index) are still found.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import HEADER, base_config_dict, counts, lake_frame, make_config, write_source
from typer.testing import CliRunner

from cnnlstm.cli import app
from cnnlstm.ingest import ingest, ingest_file
from cnnlstm.lake import Lake

LONG_IDS = {"260_chars": "e" * 260, "90_slashes": "/" * 90}


def _row(dev: str, sec: int, a: float = 1.0, b: float = 2.0, label: int = 0) -> str:
    return f"{dev},2024-01-01T00:{sec // 60:02d}:{sec % 60:02d}Z,{a},{b},{label}\n"


def _unreferenced(lake_dir: Path) -> set[str]:
    """Parquet files under readings/ and _quarantine/ that no ledger record names, and anything
    left in _tmp/."""
    named: set[str] = set()
    for p in (lake_dir / "_ledger").glob("*.json"):
        rec = json.loads(p.read_text())
        named |= {f["path"] for f in rec.get("files", [])}
        if rec.get("quarantine_file"):
            named.add(rec["quarantine_file"])
    on_disk = {
        str(p.relative_to(lake_dir))
        for sub in ("readings", "_quarantine")
        for p in (lake_dir / sub).rglob("*.parquet")
    }
    tmp = {str(p.relative_to(lake_dir)) for p in (lake_dir / "_tmp").glob("*")}
    return (on_disk - named) | tmp


# ------------------------------------------------------------------------------------------------
# item 5: entity ids that cannot be a partition name; orphans


@pytest.mark.parametrize("long_id", LONG_IDS.values(), ids=LONG_IDS.keys())
def test_long_entity_id_quarantines_exactly_its_rows(tmp_path: Path, long_id: str) -> None:
    cfg = make_config(tmp_path)
    text = HEADER + _row("d1", 0) + _row(long_id, 0) + _row(long_id, 1, 3) + _row("d2", 0, 5)
    src = write_source(tmp_path / "in" / "long.csv", text)
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 4, 2, 2, 0), rep.reason
    df = lake_frame(cfg)
    assert df["entity_id"].to_list() == ["d1", "d2"]
    q = pl.read_parquet(tmp_path / "lake" / Lake(cfg.lake_uri).records()[0]["quarantine_file"])
    assert q["source_row"].to_list() == [2, 3]
    for reason in q["reason"]:
        assert reason.startswith("entity_id: too long for a partition name"), reason
        assert long_id not in reason  # the reason does not echo the whole id
    assert json.loads(q["raw"][0])["device"] == long_id  # the raw values keep it
    assert _unreferenced(tmp_path / "lake") == set()


def test_failure_mid_commit_leaves_no_unreferenced_file(tmp_path: Path, monkeypatch) -> None:
    cfg = make_config(tmp_path)
    lake_dir = tmp_path / "lake"
    a = write_source(
        tmp_path / "in" / "a.csv", HEADER + _row("d1", 0) + _row("d2", 0) + _row("d3", 0)
    )
    b = write_source(tmp_path / "in" / "b.csv", HEADER + _row("d4", 0))
    real = Lake.write_parquet_hashed  # how ingest writes a partition (with its hash)
    written: list[str] = []

    def second_partition_fails(self, df, rel, compression="zstd"):
        if rel.startswith("readings/"):
            written.append(rel)
            if len(written) == 2:
                raise OSError(errno.EIO, "injected I/O error writing the second partition")
        return real(self, df, rel, compression)

    monkeypatch.setattr(Lake, "write_parquet_hashed", second_partition_fails)
    (rep,) = ingest(cfg, [str(a)]).files
    assert rep.outcome != "committed" and len(written) == 2
    assert Lake(cfg.lake_uri).records() == []
    monkeypatch.undo()

    (rb,) = ingest(cfg, [str(b)]).files  # the next ingest: its startup sweep runs
    assert counts(rb) == ("committed", 1, 1, 0, 0)
    assert _unreferenced(lake_dir) == set()

    (ra,) = ingest(cfg, [str(a)]).files  # the failed source goes in whole, accounting holds
    assert counts(ra) == ("committed", 3, 3, 0, 0)
    assert lake_frame(cfg)["entity_id"].to_list() == ["d1", "d2", "d3", "d4"]
    assert _unreferenced(lake_dir) == set()


def test_startup_sweep_removes_files_of_killed_writers_only(tmp_path: Path) -> None:
    """A kill -9 between writing data files and the ledger record leaves files no record names
    (the in-process clean-up never ran): the next ingest removes them under the commit lock, but
    not a file younger than its lock acquisition (a commit in flight elsewhere)."""
    cfg = make_config(tmp_path)
    lake_dir = tmp_path / "lake"
    first = write_source(tmp_path / "in" / "first.csv", HEADER + _row("d1", 0))
    ingest(cfg, [str(first)])
    df = pl.DataFrame({"x": [1]})
    old = time.time() - 3600
    planted = {
        "readings/entity_id=zz/date=2024-01-01/part-0123456789abcdef.parquet": old,
        "readings/entity_id=d1/date=2024-01-01/part-fedcba9876543210-rdeadbeef.parquet": old,
        "_quarantine/part-0123456789abcdef.parquet": old,
        "_tmp/0123456789abcdef0123456789abcdef.parquet": old,
        "readings/entity_id=zz/date=2024-01-02/part-aaaaaaaaaaaaaaaa.parquet": time.time() + 3600,
    }
    for rel, mtime in planted.items():
        p = lake_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        df.write_parquet(p)
        os.utime(p, (mtime, mtime))
    second = write_source(tmp_path / "in" / "second.csv", HEADER + _row("d2", 0))
    (rep,) = ingest(cfg, [str(second)]).files
    assert rep.outcome == "committed"
    young = "readings/entity_id=zz/date=2024-01-02/part-aaaaaaaaaaaaaaaa.parquet"
    assert _unreferenced(lake_dir) == {young}
    assert lake_frame(cfg)["entity_id"].to_list() == ["d1", "d2"]


# ------------------------------------------------------------------------------------------------
# item 8: infrastructure errors


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    raw = base_config_dict(tmp_path)
    raw["lake"]["uri"] = "lake"
    p = tmp_path / "conf.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def _disk_full(monkeypatch, times: int | None = None) -> list[str]:
    """Every Parquet write into the lake's _tmp/ raises ENOSPC (the first ``times`` only)."""
    real = pl.DataFrame.write_parquet
    hits: list[str] = []

    def full(self, file, *a, **k):
        if "/_tmp/" in str(file) and (times is None or len(hits) < times):
            hits.append(str(file))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, file, *a, **k)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    return hits


GOOD = HEADER + _row("d1", 0) + _row("d1", 1, 3, 4, 1)


def test_disk_full_is_an_infrastructure_failure_exit_3(
    tmp_path: Path, conf: Path, monkeypatch
) -> None:
    src = write_source(tmp_path / "in" / "good.csv", GOOD)
    lake_dir = tmp_path / "lake"
    hits = _disk_full(monkeypatch)
    r = _cli("ingest", str(src), "-c", str(conf), "--json")
    assert hits and r.exit_code == 3, r.output
    rep = json.loads(r.stdout)
    (f,) = rep["files"]
    assert f["outcome"] == "failed" and "No space left on device" in f["reason"], f
    assert (f["rows_read"], f["accepted"], f["quarantined"]) == (0, 0, 0)
    assert rep["totals"]["failed"] == 1 and rep["totals"]["rejected"] == 0
    assert not list((lake_dir / "_ledger" / "rejected").glob("*"))  # not marked as bad data
    assert Lake(str(lake_dir)).records() == []
    assert _unreferenced(lake_dir) == set()
    monkeypatch.undo()

    again = _cli("ingest", str(src), "-c", str(conf), "--json")
    assert again.exit_code == 0, again.output
    (f2,) = json.loads(again.stdout)["files"]
    assert (f2["outcome"], f2["accepted"]) == ("committed", 2)


def test_real_enospc_from_polars_is_an_infrastructure_failure(tmp_path: Path, monkeypatch) -> None:
    """polars reports a full disk as a ComputeError ('... (os error 28)'), not an OSError: the
    lake's writes into /dev/full must still come out as the infrastructure outcome."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    cfg = make_config(tmp_path)
    src = write_source(tmp_path / "in" / "good.csv", GOOD)

    def tmp_to_dev_full(self, suffix):
        rel = f"_tmp/full-{os.urandom(4).hex()}{suffix}"
        os.symlink("/dev/full", self.abs(rel))
        return rel

    monkeypatch.setattr(Lake, "_tmp_name", tmp_to_dev_full)
    (rep,) = ingest(cfg, [str(src)]).files
    assert rep.outcome == "failed", rep.reason
    assert "No space left on device" in rep.reason
    assert not list((tmp_path / "lake" / "_ledger" / "rejected").glob("*"))


def test_lock_timeout_is_an_infrastructure_failure(tmp_path: Path) -> None:
    import fcntl

    cfg = make_config(tmp_path, lake={"lock_timeout_s": 0.3})
    src = write_source(tmp_path / "in" / "good.csv", GOOD)
    lake = Lake(cfg.lake_uri)
    lake.ensure()
    fd = os.open(lake.abs("_locks/commit.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another writer holds the lock
        t0 = time.monotonic()
        (rep,) = ingest(cfg, [str(src)]).files
        assert time.monotonic() - t0 < 10
    finally:
        os.close(fd)
    assert rep.outcome == "failed" and "commit lock" in rep.reason, rep.reason
    assert not list((tmp_path / "lake" / "_ledger" / "rejected").glob("*"))
    (again,) = ingest(cfg, [str(src)]).files
    assert again.outcome == "committed"


# the Prefect ingest flow


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _flow_config(tmp: Path) -> Path:
    raw = base_config_dict(tmp)
    raw["data"]["landing"] = str(tmp / "landing")
    p = tmp / "tiny.yaml"
    p.write_text(yaml.safe_dump(raw))
    write_source(tmp / "landing" / "a.csv", GOOD)
    write_source(tmp / "landing" / "b.csv", GOOD.replace("d1", "d2"))
    return p


def _no_retry_delay(monkeypatch):
    import flows.ingest as fi

    monkeypatch.setattr(
        fi, "ingest_file_task", fi.ingest_file_task.with_options(retry_delay_seconds=0)
    )
    calls: list[str] = []
    real = fi.ingest_file

    def counted(cfg, lake, path):
        calls.append(path.rsplit("/", 1)[-1])
        return real(cfg, lake, path)

    monkeypatch.setattr(fi, "ingest_file", counted)
    return calls


def test_flow_retries_an_infrastructure_failure(harness, tmp_path: Path, monkeypatch) -> None:
    import flows.ingest as fi

    cfg_file = _flow_config(tmp_path)
    calls = _no_retry_delay(monkeypatch)
    hits = _disk_full(monkeypatch, times=1)  # the disk is full once, then space is freed
    out = fi.ingest_flow(str(cfg_file))
    assert len(hits) == 1
    t = out["totals"]
    assert (t["committed"], t["rejected"], t["failed"], t["accepted"]) == (2, 0, 0, 4), out
    assert len(calls) == 3  # the file that met the full disk ran twice
    assert not list((tmp_path / "lake" / "_ledger" / "rejected").glob("*"))


def test_flow_reports_a_persistent_infrastructure_failure(
    harness, tmp_path: Path, monkeypatch
) -> None:
    import flows.ingest as fi
    from flows.common import RETRIES

    cfg_file = _flow_config(tmp_path)
    calls = _no_retry_delay(monkeypatch)
    _disk_full(monkeypatch)
    state = fi.ingest_flow(str(cfg_file), return_state=True)
    assert state.is_failed()
    with pytest.raises(OSError, match="No space left on device"):
        state.result()
    assert sorted(calls) == sorted(["a.csv", "b.csv"] * (1 + RETRIES["retries"]))
    assert not list((tmp_path / "lake" / "_ledger" / "rejected").glob("*"))
    assert Lake(str(tmp_path / "lake")).records() == []


# ------------------------------------------------------------------------------------------------
# item 12: per-file cost flat as the lake grows


def _series(tmp: Path, n: int, dev: str = "d1", per: int = 3, start: int = 0) -> list[str]:
    """n files of one entity, each ``per`` rows at consecutive seconds (no overlaps)."""
    out = []
    for i in range(start, start + n):
        text = HEADER + "".join(_row(dev, i * per + k, i, k) for k in range(per))
        out.append(str(write_source(tmp / "in" / f"{dev}-{i:03d}.csv", text)))
    return out


def _count_reads(monkeypatch) -> dict[str, int]:
    """Counts ledger-record reads and reads of lake data files."""
    n = {"ledger": 0, "data": 0}
    real_json = Lake._read_json

    def read_json(self, p):
        n["ledger"] += 1
        return real_json(self, p)

    monkeypatch.setattr(Lake, "_read_json", read_json)
    for name in ("read_parquet", "scan_parquet"):
        real = getattr(pl, name)

        def counted(source, *a, _real=real, **k):
            if "/readings/" in str(source):
                n["data"] += 1
            return _real(source, *a, **k)

        monkeypatch.setattr(pl, name, counted)
    return n


def test_ingest_does_not_reread_the_ledger_and_partition_per_file(
    tmp_path: Path, monkeypatch
) -> None:
    cfg = make_config(tmp_path)
    files = _series(tmp_path, 40)
    ingest(cfg, files[:30])
    n = _count_reads(monkeypatch)
    reports = ingest(cfg, files[30:]).files  # 10 more files into a partition of 30 files
    assert [r.outcome for r in reports] == ["committed"] * 10
    # before: every file read all 30+ ledger records and all 30+ files of its partition
    assert n["ledger"] <= 2, n
    assert n["data"] == 0, n  # no earlier file overlaps the new rows in time

    # a file overlapping one earlier file: only that file is read; duplicates and conflicts found
    text = HEADER + _row("d1", 3 * 7, 7, 0) + _row("d1", 3 * 7 + 1, 99, 1) + _row("d1", 500, 1, 1)
    over = write_source(tmp_path / "in" / "overlap.csv", text)
    n.update(ledger=0, data=0)
    (rep,) = ingest(cfg, [str(over)]).files
    assert counts(rep) == ("committed", 3, 1, 1, 1)
    assert n["data"] == 1 and n["ledger"] <= 2, n
    assert len(lake_frame(cfg)) == 40 * 3 + 1


def test_index_sees_commits_of_other_writers(tmp_path: Path) -> None:
    """A Lake whose ledger index is loaded still finds rows another writer committed since."""
    cfg = make_config(tmp_path)
    lake = Lake(cfg.lake_uri)
    lake.ensure()
    f1, f2 = _series(tmp_path, 2)
    assert ingest_file(cfg, lake, f1).outcome == "committed"  # the index is loaded here
    assert ingest(cfg, [f2]).files[0].outcome == "committed"  # another Lake: another writer
    text = HEADER + _row("d1", 3) + _row("d1", 4, 1, 1) + _row("d1", 100)
    f3 = write_source(tmp_path / "in" / "f3.csv", text)
    rep = ingest_file(cfg, lake, str(f3))
    assert counts(rep) == ("committed", 3, 1, 1, 1)  # s3 conflicts with f2's row, s4 duplicate


def test_lake_without_index_or_stats_still_dedups(tmp_path: Path) -> None:
    """A lake written before the ledger index (no journal, no time ranges in the records): the
    index is rebuilt from the records, and time ranges come from the Parquet footers."""
    cfg = make_config(tmp_path)
    lake_dir = tmp_path / "lake"
    f1, f2 = _series(tmp_path, 2)
    ingest(cfg, [f1, f2])
    for p in lake_dir.glob("_ledger/*"):
        if p.is_file() and not p.name.endswith(".json"):
            p.unlink()  # the index files
    for p in lake_dir.glob("_ledger/*.json"):
        rec = json.loads(p.read_text())
        rec = {k: v for k, v in rec.items() if k not in ("stats", "commit_id")}
        p.write_text(json.dumps(rec))
    text = HEADER + _row("d1", 1) + _row("d1", 4, 1, 1) + _row("d1", 100)
    f3 = write_source(tmp_path / "in" / "f3.csv", text)
    (rep,) = ingest(cfg, [str(f3)]).files
    assert counts(rep) == ("committed", 3, 1, 1, 1)
    f4 = write_source(tmp_path / "in" / "f4.csv", HEADER + _row("d1", 100) + _row("d1", 5, 1, 9))
    (rep,) = ingest(cfg, [str(f4)]).files  # the rebuilt index holds f3's commit too
    assert counts(rep) == ("committed", 2, 0, 1, 1)


def test_torn_index_line_is_ignored(tmp_path: Path) -> None:
    """A writer killed while appending to the ledger index leaves a partial line: the next
    writer drops it and goes on."""
    cfg = make_config(tmp_path)
    lake_dir = tmp_path / "lake"
    f1, f2 = _series(tmp_path, 2)
    ingest(cfg, [f1])
    journals = [p for p in lake_dir.glob("_ledger/*") if p.is_file() and p.suffix == ".jsonl"]
    assert journals, list(lake_dir.glob("_ledger/*"))
    with open(journals[0], "ab") as f:
        f.write(b'{"add": {"sha256": "abc", "fil')
    assert ingest(cfg, [f2]).files[0].outcome == "committed"
    text = HEADER + _row("d1", 4, 5, 5) + _row("d1", 100)  # s4: a conflict with f2's row
    f3 = write_source(tmp_path / "in" / "f3.csv", text)
    assert counts(ingest(cfg, [str(f3)]).files[0]) == ("committed", 2, 1, 1, 0)
