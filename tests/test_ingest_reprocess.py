"""A way back after fixing the config: the ledger key includes the mapping, `--reprocess`
replaces a source's rows atomically (old or new, never both, even under kill -9), and
`lake quarantine --replay` re-reads quarantined rows under the current config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import yaml
from conftest import (
    base_config_dict,
    deep_merge,
    lake_frame,
    make_config,
    quarantine_frame,
    write_source,
)
from typer.testing import CliRunner

from cnnlstm.cli import app
from cnnlstm.ingest import ingest
from cnnlstm.lake import Lake

REPO = Path(__file__).resolve().parents[1]
TEXT = "device,time,ch_a,ch_b,label\n" + "".join(
    f"d1,2024-01-01T00:00:{i:02d}Z,{i * 2.0},{i},{i % 3}\n" for i in range(40)
)


def test_rows_all_quarantined_under_a_wrong_range_go_in_after_the_fix(tmp_path: Path):
    src = write_source(tmp_path / "f.csv", TEXT)
    wrong = make_config(tmp_path, data={"channels": [{"name": "ch_a", "max": 1}, {"name": "ch_b"}]})
    (r1,) = ingest(wrong, [str(src)]).files
    assert (r1.accepted, r1.quarantined) == (1, 39)  # only ch_a = 0.0 is in range
    fixed = make_config(
        tmp_path, data={"channels": [{"name": "ch_a", "max": 100}, {"name": "ch_b"}]}
    )
    # same content, another mapping: not "skipped" any more; --reprocess replaces the outcome
    (r2,) = ingest(fixed, [str(src)], reprocess=True).files
    assert (r2.outcome, r2.rows_read, r2.accepted, r2.quarantined, r2.duplicates) == (
        "committed",
        40,
        40,
        0,
        0,
    )
    assert "replaced 1 rows of 1 earlier ingest" in r2.notes[0]
    assert lake_frame(fixed).height == 40 and quarantine_frame(fixed).height == 0
    recs = Lake(fixed.lake_uri).records()
    assert len(recs) == 1 and recs[0]["accepted"] == 40
    # the same config again: skipped, nothing added
    (r3,) = ingest(fixed, [str(src)]).files
    assert r3.outcome == "skipped"


def test_rows_accepted_under_a_wrong_epoch_unit_are_replaced(tmp_path: Path):
    text = "device,time,ch_a,ch_b,label\n" + "".join(
        f"d1,{1_700_000_000 + i},{i},{i},0\n" for i in range(30)
    )
    src = write_source(tmp_path / "f.csv", text)
    ms = make_config(tmp_path, data={"timestamp": {"column": "time", "format": "epoch_ms"}})
    assert ingest(ms, [str(src)]).files[0].accepted == 30  # 1970-01-20: accepted, but wrong
    s = make_config(tmp_path, data={"timestamp": {"column": "time", "format": "epoch_s"}})
    (r,) = ingest(s, [str(src)], reprocess=True).files
    assert (r.accepted, r.duplicates, r.quarantined) == (30, 0, 0)
    df = lake_frame(s)
    assert df.height == 30 and df["timestamp"].dt.year().unique().to_list() == [2023]


_KILL = textwrap.dedent("""
    import sys, time
    import cnnlstm.ingest as ing
    from cnnlstm.config import load_config
    from cnnlstm.lake import Lake
    where = sys.argv[3]
    if where == "before_commit":  # every new file written, the ledger record not yet
        real = Lake.write_json
        def slow(self, obj, rel):
            if rel.startswith("_ledger/") and obj.get("supersedes") is not None:
                print("at commit", flush=True); time.sleep(60)
            return real(self, obj, rel)
        Lake.write_json = slow
    else:  # committed, the replaced files not yet removed
        def slow_rm(*a, **k):
            print("at commit", flush=True); time.sleep(60)
        ing._remove_replaced = slow_rm
    cfg = load_config(sys.argv[1])
    ing.ingest(cfg, [sys.argv[2]], reprocess=True)
""")


def _kill_at(tmp_path: Path, where: str) -> None:
    src = write_source(tmp_path / "f.csv", TEXT)
    old = make_config(tmp_path, data={"timestamp": {"column": "time", "timezone": "UTC"}})
    assert ingest(old, [str(src)]).clean
    new = deep_merge(
        base_config_dict(tmp_path),
        {
            "data": {
                "channels": [{"name": "ch_a", "source": "ch_b"}, {"name": "ch_b", "source": "ch_a"}]
            }
        },
    )
    cpath = tmp_path / "new.yaml"
    cpath.write_text(yaml.safe_dump(new))
    p = subprocess.Popen(
        [sys.executable, "-c", _KILL, str(cpath), str(src), where],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.time()
    while p.stdout.readline().strip() != "at commit":
        assert p.poll() is None and time.time() - t0 < 60, p.stderr.read()
    os.kill(p.pid, signal.SIGKILL)
    p.wait()


def _version(tmp_path: Path) -> str:
    """Which mapping a reader sees: old (ch_a = 2i) or new (ch_a = i), never a mix."""
    df = lake_frame(make_config(tmp_path))
    assert df.height == 40, df.height
    a, b = df["ch_a"].to_list(), df["ch_b"].to_list()
    if a == [2.0 * i for i in range(40)] and b == [float(i) for i in range(40)]:
        return "old"
    assert a == [float(i) for i in range(40)] and b == [2.0 * i for i in range(40)], (a, b)
    return "new"


def test_kill_before_the_commit_leaves_the_old_version(tmp_path: Path):
    _kill_at(tmp_path, "before_commit")
    assert _version(tmp_path) == "old"


def test_kill_after_the_commit_leaves_the_new_version(tmp_path: Path):
    _kill_at(tmp_path, "after_commit")
    assert _version(tmp_path) == "new"
    # the replaced files are still on disk, but no reader sees them; a replay finishes cleanly
    assert len(list((tmp_path / "lake" / "readings").rglob("*.parquet"))) == 2


def test_quarantine_replay_rereads_under_the_current_config(tmp_path: Path):
    src = write_source(tmp_path / "f.csv", TEXT)
    raw = base_config_dict(tmp_path)
    raw["data"]["channels"] = [{"name": "ch_a", "max": 10}, {"name": "ch_b"}]
    cpath = tmp_path / "c.yaml"
    cpath.write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["ingest", str(src), "-c", str(cpath)])
    assert r.exit_code == 1  # rows quarantined
    raw["data"]["channels"][0]["max"] = 100
    cpath.write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["lake", "quarantine", "-c", str(cpath), "--replay"])
    assert r.exit_code == 0, r.output
    cfg = make_config(tmp_path, data={"channels": raw["data"]["channels"]})
    assert lake_frame(cfg).height == 40 and quarantine_frame(cfg).height == 0
    assert pl.Series(Lake(cfg.lake_uri).records()[0]["files"]).len() >= 1
