"""Ingest as a whole: every row accounted for, idempotency, crash safety and concurrency.

- the quarantine dataset holds exactly the quarantined rows (file, 1-based row, reason, raw JSON);
- a hypothesis property: per file ``rows_read == accepted + quarantined + duplicates``, the lake
  holds the sum of ``accepted`` and ``(entity_id, timestamp)`` is unique, against a reference model
  of the policy;
- ingesting again (same name or another) adds nothing;
- ``kill -9`` of a ``cnnlstm ingest`` subprocess at several moments leaves a readable lake with
  all or nothing of the file, and a re-run converges to a clean ingest's content;
- two concurrent ingests of one file commit it once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import (
    HEADER,
    base_config_dict,
    counts,
    lake_frame,
    make_config,
    quarantine_frame,
    write_source,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlstm.ingest import ingest
from cnnlstm.lake import Lake, scan_readings

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# every row accounted for


def test_quarantine_holds_exactly_the_quarantined_rows(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    a_lines = [
        "d1,2024-01-01T00:00:00Z,1,2,0",  # 1 ok
        "d1,2024-01-01T00:00:01Z,x,2,0",  # 2 bad number
        "d1,2024-01-01T00:00:02Z,1,2",  # 3 ragged
        "d1,2024-01-01T00:00:00Z,1,2,0",  # 4 identical duplicate of 1
        "d2,2024-01-01T00:00:05Z,1,2,0",  # 5 conflicts with 6
        "d2,2024-01-01T00:00:05Z,7,2,0",  # 6
        "d2,2024-01-02T00:00:05Z,-1e9,2,0",  # 7 out of range
        "d2,2024-01-02T00:00:06Z,3,nan,1",  # 8 NaN
        "d3,2024-01-02T00:00:06Z,3,4,1",  # 9 ok
    ]
    b_lines = [
        "d1,2024-01-01T00:00:00Z,5,2,0",  # 1 conflicts with the lake (a.csv row 1)
        "d3,2024-01-02T00:00:06Z,3,4,1",  # 2 identical to the lake (a.csv row 9)
        "d4,2024-01-03T00:00:00Z,1,1,1",  # 3 ok
    ]
    write_source(tmp_path / "in" / "a.csv", HEADER + "\n".join(a_lines) + "\n")
    write_source(tmp_path / "in" / "b.csv", HEADER + "\n".join(b_lines) + "\n")

    report = ingest(cfg, [str(tmp_path / "in")])

    ra, rb = report.files
    assert counts(ra) == ("committed", 9, 2, 6, 1)
    assert counts(rb) == ("committed", 3, 1, 1, 1)
    for r in report.files:
        assert r.rows_read == r.accepted + r.quarantined + r.duplicates
    q = quarantine_frame(cfg)
    got = [(Path(f).name, r) for f, r in zip(q["source_file"], q["source_row"], strict=True)]
    assert got == [("a.csv", r) for r in (2, 3, 5, 6, 7, 8)] + [("b.csv", 1)]
    assert q.columns == [
        "source_file",
        "source_sha256",
        "source_row",
        "reason",
        "raw",
        "ingested_at",
    ]
    # raw JSON keeps the original values: nothing is lost
    raws = [json.loads(x) for x in q["raw"]]
    assert raws[0]["ch_a"] == "x"
    assert raws[1] == {"line": a_lines[2]}
    assert [float(r["ch_a"]) for r in raws[2:4]] == [1.0, 7.0]
    assert float(raws[4]["ch_a"]) == -1e9
    assert raws[5]["ch_b"].lower() == "nan" and raws[5]["device"] == "d2"
    assert raws[6]["device"] == "d1" and float(raws[6]["ch_a"]) == 5.0
    reasons = q["reason"].to_list()
    assert "cannot parse 'x'" in reasons[0]
    assert reasons[1].startswith("ragged line")
    assert (
        reasons[2]
        == reasons[3]
        == ("conflicting duplicate of (entity_id, timestamp): rows 5,6 disagree")
    )
    assert "greater_than_or_equal_to(-100.0)" in reasons[4]
    assert "NaN or infinite value" in reasons[5]
    assert "conflicts with the row already in the lake" in reasons[6]
    assert "entity_id=d1/date=2024-01-01" in reasons[6]

    df = lake_frame(cfg)
    assert df.height == ra.accepted + rb.accepted == 3
    assert df.select("entity_id", "timestamp").is_unique().all()
    assert df["entity_id"].to_list() == ["d1", "d3", "d4"]
    summary = {r["name"]: r for r in Lake(cfg.lake_uri).records()}
    assert summary["a.csv"]["quarantined"] == 6 and summary["b.csv"]["duplicates"] == 1


# ------------------------------------------------------------------------------------------------
# property: the accounting invariant against a reference model of the policy

VALID_A = ["1", "2.5", "-3", "1.0", "2.50", "100"]  # "1.0" == "1": identical after parsing
INVALID_A = ["abc", "nan", "inf", "-inf", "100.5", ""]

row_spec = st.one_of(
    st.tuples(
        st.just("row"),
        st.sampled_from(["e1", "e2"]),
        st.integers(0, 5),  # second: small, so keys repeat
        st.sampled_from([1, 2]),  # day: two partitions per entity
        st.sampled_from(VALID_A + INVALID_A),
    ),
    st.tuples(st.just("short"), st.integers(1, 4)),
    st.tuples(st.just("long"), st.integers(1, 3)),
    st.just(("blank",)),
)
file_spec = st.lists(row_spec, min_size=1, max_size=14)


def _render(spec: list[tuple]) -> tuple[str, list[tuple | None]]:
    """CSV text, and per data row either None (quarantined on sight) or (key, value)."""
    lines, model = [], []
    for item in spec:
        if item[0] == "row":
            _, e, s, day, a = item
            lines.append(f"{e},2024-01-0{day}T00:00:0{s}Z,{a},0,1")
            model.append(((e, day, s), float(a)) if a in VALID_A else None)
        elif item[0] == "short":
            lines.append(",".join(["e1", "2024-01-01T00:00:00Z", "1", "0", "1"][: item[1]]))
            model.append(None)
        elif item[0] == "long":
            lines.append("e1,2024-01-01T00:00:00Z,1,0,1" + ",9" * item[1])
            model.append(None)
        else:
            lines.append("")
            model.append(None)
    return HEADER + "\n".join(lines) + "\n", model


def _expected(model: list[tuple | None], lake: dict) -> tuple[int, int, int, int, dict]:
    """(read, accepted, quarantined, duplicates, new lake rows) under the documented policy."""
    quarantined = sum(m is None for m in model)
    groups: dict[tuple, list[float]] = {}
    for m in model:
        if m is not None:
            groups.setdefault(m[0], []).append(m[1])
    accepted = dups = 0
    new = {}
    for key, vals in groups.items():
        if len(set(vals)) > 1:  # disagreeing rows of one key: all quarantined
            quarantined += len(vals)
            continue
        dups += len(vals) - 1
        if key in lake:  # against the lake: identical -> duplicate, else quarantined
            if lake[key] == vals[0]:
                dups += 1
            else:
                quarantined += 1
            continue
        accepted += 1
        new[key] = vals[0]
    return len(model), accepted, quarantined, dups, new


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(files=st.lists(file_spec, min_size=1, max_size=2))
def test_accounting_invariant_property(files: list[list[tuple]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        cfg = make_config(Path(d))
        lake_model: dict = {}
        seen: set[str] = set()
        total_accepted = 0
        for i, spec in enumerate(files):
            text, model = _render(spec)
            src = write_source(Path(d) / f"f{i}.csv", text)
            (rep,) = ingest(cfg, [str(src)]).files
            # the invariant, whatever happened
            assert rep.rows_read == rep.accepted + rep.quarantined + rep.duplicates
            if text in seen:
                assert counts(rep) == ("skipped", 0, 0, 0, 0)
                continue
            if all(item == ("blank",) for item in spec):  # nothing but the header
                assert counts(rep) == ("rejected", 0, 0, 0, 0)
                assert rep.reason == "header only: no data rows"
                continue
            seen.add(text)
            read, acc, quar, dups, new = _expected(model, lake_model)
            assert counts(rep) == ("committed", read, acc, quar, dups), text
            lake_model.update(new)
            total_accepted += rep.accepted
            q = quarantine_frame(cfg).filter(pl.col("source_file") == str(src))
            assert q.height == rep.quarantined
            assert q["source_row"].is_unique().all()
            assert set(q["source_row"]) <= set(range(1, read + 1))
        df = lake_frame(cfg)
        assert df.height == total_accepted == len(lake_model)
        assert df.select("entity_id", "timestamp").is_unique().all()
        got = {
            (e, t.day, t.second): a
            for e, t, a in df.select("entity_id", "timestamp", "ch_a").iter_rows()
        }
        assert got == lake_model


# ------------------------------------------------------------------------------------------------
# idempotency


def test_ingest_twice_and_under_a_new_name_adds_nothing(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    text = (
        HEADER
        + "".join(
            f"d{i % 3},2024-01-0{1 + i % 2}T00:00:{i:02d}Z,{i},{i * 2},{i % 4}\n" for i in range(40)
        )
        + "d0,2024-01-01T00:00:00Z,99,0,0\n"
    )  # conflicting with row 1: both quarantined
    src = write_source(tmp_path / "a.csv", text)
    (first,) = ingest(cfg, [str(src)]).files
    assert counts(first) == ("committed", 41, 39, 2, 0)

    def state() -> tuple:
        lake_dir = tmp_path / "lake"
        files = sorted(
            (str(p.relative_to(lake_dir)), p.read_bytes())
            for p in lake_dir.rglob("*")
            if p.is_file() and "_locks" not in p.parts and "hints" not in p.parts
        )
        return lake_frame(cfg), quarantine_frame(cfg), files

    df1, q1, files1 = state()
    assert df1.height == 39 and q1.height == 2

    (again,) = ingest(cfg, [str(src)]).files
    renamed = write_source(tmp_path / "renamed" / "b.csv", text)
    (other,) = ingest(cfg, [str(renamed)]).files

    for rep in (again, other):
        assert counts(rep) == ("skipped", 0, 0, 0, 0)
        assert rep.sha256 == first.sha256
        assert "already ingested" in rep.reason
    df2, q2, files2 = state()
    assert df2.equals(df1) and q2.equals(q1)
    assert files2 == files1  # not a byte of the lake changed
    assert len(Lake(cfg.lake_uri).records()) == 1


# ------------------------------------------------------------------------------------------------
# crash safety and concurrency (real subprocesses)

N_ENT, PER_ENT = 16, 3000  # 48k rows over 16 entities x 3 days = 48 partitions


def _big_csv(path: Path) -> int:
    """A landing file with many partitions and a few bad rows; returns the number of bad rows."""
    rng = np.random.default_rng(0)
    n = N_ENT * PER_ENT
    secs = np.tile(np.arange(PER_ENT) * (3 * 86400 // PER_ENT), N_ENT)
    ch_a = rng.uniform(-50, 50, n).round(4)
    bad = np.arange(0, n, 5000)
    ch_a[bad] = 1000.0  # out of range -> quarantined
    df = pl.DataFrame(
        {
            "device": np.repeat([f"dev/{i:02d}" for i in range(N_ENT)], PER_ENT),
            "time": secs,
            "ch_a": ch_a,
            "ch_b": rng.normal(size=n).round(4),
            "label": rng.integers(0, 5, n),
        }
    ).with_columns(
        time=(
            pl.datetime(2024, 1, 1, time_zone="UTC") + pl.duration(seconds=pl.col("time"))
        ).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    write_source(path, df)
    return len(bad)


def _write_yaml(tmp_path: Path, lake: str) -> Path:
    raw = base_config_dict(tmp_path)
    raw["lake"]["uri"] = lake  # relative to the config file
    p = tmp_path / f"{lake}.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cnnlstm.cli", "ingest", *args, "--json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lake_rows(lake_uri: str) -> tuple[int, int]:
    """(readings rows, quarantined rows) as a reader sees them; the reader must not fail."""
    lake = Lake(lake_uri)
    n = sum(f.rows for f in lake.data_files())
    if n:
        assert scan_readings(lake_uri).select(pl.len()).collect().item() == n
    qf = quarantine_frame(make_config(Path(lake_uri).parent, lake={"uri": lake_uri}))
    return n, qf.height


def _files_under(root: Path, sub: str) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / sub).rglob("*.parquet")}


@pytest.mark.slow
def test_kill_9_during_ingest_leaves_all_or_nothing_and_rerun_converges(tmp_path: Path) -> None:
    src = tmp_path / "big.csv"
    n_bad = _big_csv(src)
    n_rows = N_ENT * PER_ENT

    # reference: a clean ingest in another lake
    ref_cfg = make_config(tmp_path, lake={"uri": str(tmp_path / "ref_lake")})
    (ref,) = ingest(ref_cfg, [str(src)]).files
    assert counts(ref) == ("committed", n_rows, n_rows - n_bad, n_bad, 0)
    ref_df, ref_q = lake_frame(ref_cfg), quarantine_frame(ref_cfg)

    conf = _write_yaml(tmp_path, "lake")
    lake_dir = tmp_path / "lake"
    lake_uri = str(lake_dir)

    def n_data_files() -> int:
        return len(list(lake_dir.glob("readings/*/*/*.parquet")))

    # kill points: a fixed delay, the first temp/data file, half the partitions, the quarantine
    # file (written after every partition, just before the ledger record)
    triggers = [
        ("delay", lambda: False, 0.4),
        ("first file", lambda: any(lake_dir.glob("_tmp/*")) or n_data_files() > 0, None),
        ("half the partitions", lambda: n_data_files() >= N_ENT * 3 // 2, None),
        ("quarantine file", lambda: any(lake_dir.glob("_quarantine/*.parquet")), None),
    ]
    outcomes = []
    for name, fire, delay in triggers:
        proc = _cli([str(src), "-c", str(conf)])
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < 60:
            if (delay is not None and time.monotonic() - t0 >= delay) or (delay is None and fire()):
                break
            time.sleep(0.001)
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        rows, quar = _lake_rows(lake_uri)
        committed = bool(Lake(lake_uri).records()) if lake_dir.exists() else False
        # all or nothing: no partial data is ever visible
        assert (rows, quar) in {(0, 0), (n_rows - n_bad, n_bad)}, (name, rows, quar)
        assert committed == (rows > 0), name
        outcomes.append((name, finished, committed, n_data_files()))
        if committed:
            break  # the file is in: later kills could only hit a skip
    # at least one kill landed while data files were being written, before the commit
    assert any(not c and files > 0 for _, _, c, files in outcomes), outcomes

    # re-run (in a subprocess, like a scheduler would) and converge to the clean content
    proc = _cli([str(src), "-c", str(conf)])
    out, err = proc.communicate(timeout=120)
    (rep,) = json.loads(out)["files"]
    # committed now (exit 1: rows were quarantined), or already by a run that the kill missed
    assert (rep["outcome"], proc.returncode) == (
        ("skipped", 0) if outcomes[-1][2] else ("committed", 1)
    ), err
    cfg = make_config(tmp_path, lake={"uri": lake_uri})
    assert lake_frame(cfg).equals(ref_df)
    q = quarantine_frame(cfg)
    assert q.drop("ingested_at").equals(ref_q.drop("ingested_at"))
    # nothing left over: every data file is one the ledger lists, no temp files
    lake = Lake(lake_uri)
    assert len(lake.records()) == 1
    assert _files_under(lake_dir, "readings") == {f.path for f in lake.data_files()}
    assert _files_under(lake_dir, "_quarantine") == set(lake.quarantine_files())
    assert not list(lake_dir.glob("_tmp/*"))


@pytest.mark.slow
def test_two_concurrent_ingests_of_one_file_commit_it_once(tmp_path: Path) -> None:
    src = tmp_path / "big.csv"
    n_bad = _big_csv(src)
    conf = _write_yaml(tmp_path, "lake")
    procs = [_cli([str(src), "-c", str(conf)]) for _ in range(2)]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        rep = json.loads(out)["files"][0]
        # exit 1 for the run that quarantined rows; 0 for the one that found nothing new
        assert p.returncode == (1 if rep["outcome"] == "committed" else 0), err
        reports.append(rep)
    outcomes = sorted(r["outcome"] for r in reports)
    assert outcomes == ["committed", "skipped"], reports
    done = next(r for r in reports if r["outcome"] == "committed")
    skip = next(r for r in reports if r["outcome"] == "skipped")
    assert done["accepted"] == N_ENT * PER_ENT - n_bad and done["quarantined"] == n_bad
    assert (skip["rows_read"], skip["accepted"], skip["quarantined"]) == (0, 0, 0)
    lake = Lake(str(tmp_path / "lake"))
    assert len(lake.records()) == 1
    rows, quar = _lake_rows(str(tmp_path / "lake"))
    assert (rows, quar) == (done["accepted"], n_bad)
    df = scan_readings(str(tmp_path / "lake")).collect()
    assert df.select("entity_id", "timestamp").is_unique().all()
