"""`cnnlstm ingest`: the JSON report, the readable table, exit status 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import HEADER, base_config_dict, write_source
from typer.testing import CliRunner

from cnnlstm.cli import app

REPO = Path(__file__).resolve().parents[1]
GOOD = HEADER + "d1,2024-01-01T00:00:00Z,1,2,0\nd1,2024-01-01T00:00:01Z,3,4,1\n"
FILE_KEYS = {
    "source",
    "name",
    "sha256",
    "outcome",
    "rows_read",
    "accepted",
    "quarantined",
    "duplicates",
    "notes",
    "reason",
    "files_written",
    "seconds",
}


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    raw = base_config_dict(tmp_path)
    raw["lake"]["uri"] = "lake"  # relative to the config file
    p = tmp_path / "conf.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def run(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_clean_ingest_json_exit_0(tmp_path: Path, conf: Path) -> None:
    src = write_source(tmp_path / "in" / "good.csv", GOOD)
    r = run("ingest", str(src), "-c", str(conf), "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["lake"] == str(tmp_path / "lake") and rep["clean"] is True
    assert rep["totals"] == {
        "rows_read": 2,
        "accepted": 2,
        "quarantined": 0,
        "duplicates": 0,
        "committed": 1,
        "skipped": 0,
        "rejected": 0,
        "failed": 0,
        "retry": 0,
    }
    (f,) = rep["files"]
    assert set(f) == FILE_KEYS
    assert (f["name"], f["outcome"], f["rows_read"], f["accepted"], f["reason"]) == (
        "good.csv",
        "committed",
        2,
        2,
        None,
    )
    assert len(f["sha256"]) == 64

    again = run("ingest", str(src), "-c", str(conf), "--json")
    assert again.exit_code == 0
    (f2,) = json.loads(again.stdout)["files"]
    assert (f2["outcome"], f2["rows_read"]) == ("skipped", 0)


def test_mixed_folder_json_exit_1(tmp_path: Path, conf: Path) -> None:
    land = tmp_path / "in"
    write_source(land / "a.csv", GOOD)
    write_source(
        land / "b.csv",
        HEADER + "d2,2024-01-01T00:00:00Z,x,2,0\n"
        "d2,2024-01-01T00:00:01Z,1,2,0\nd2,2024-01-01T00:00:01Z,1,2,0\n",
    )
    write_source(land / "c.csv", b"")
    r = run("ingest", str(land), "-c", str(conf), "--json")
    assert r.exit_code == 1, r.output
    rep = json.loads(r.stdout)
    assert rep["clean"] is False
    got = {
        f["name"]: (f["outcome"], f["rows_read"], f["accepted"], f["quarantined"], f["duplicates"])
        for f in rep["files"]
    }
    assert got == {
        "a.csv": ("committed", 2, 2, 0, 0),
        "b.csv": ("committed", 3, 1, 1, 1),
        "c.csv": ("rejected", 0, 0, 0, 0),
    }
    assert rep["files"][2]["reason"] == "empty file (0 bytes)"
    assert rep["totals"]["rejected"] == 1 and rep["totals"]["quarantined"] == 1


@pytest.mark.parametrize(
    ("content", "code"),
    [(GOOD.replace("1,2,0", "nan,2,0"), 1), (HEADER, 1), (GOOD, 0)],
    ids=["quarantined_only", "rejected_only", "clean"],
)
def test_exit_status_per_outcome(tmp_path: Path, conf: Path, content: str, code: int) -> None:
    src = write_source(tmp_path / "f.csv", content)
    assert run("ingest", str(src), "-c", str(conf), "--json").exit_code == code


def test_table_mentions_each_file(tmp_path: Path, conf: Path) -> None:
    land = tmp_path / "in"
    write_source(land / "alpha.csv", GOOD)
    write_source(land / "beta.csv", GOOD.replace(",", ";"))
    r = run("ingest", str(land), "-c", str(conf))
    assert r.exit_code == 1
    out = " ".join(r.stdout.split())  # the table wraps its reason column at the terminal width
    for needle in (
        "alpha.csv",
        "beta.csv",
        "committed",
        "rejected",
        "wrong delimiter",
        "total",
        "1 committed, 0 skipped, 1 rejected",
        "Some rows were quarantined",
    ):
        assert needle in out, out
    r2 = run("ingest", str(land / "alpha.csv"), "-c", str(conf))
    assert r2.exit_code == 0
    assert "skipped" in r2.stdout and "Nothing new" in r2.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "data.bogus=1"], "data.bogus"),
        (["--set", "nonsense"], "section.key=value"),
        (["--set", "data.timestamp.format=sample_index"], "sample_rate_hz"),
    ],
)
def test_config_errors_exit_2(tmp_path: Path, conf: Path, args: list[str], needle: str) -> None:
    src = write_source(tmp_path / "good.csv", GOOD)
    r = run("ingest", str(src), "-c", str(conf), *args)
    assert r.exit_code == 2
    assert "config error" in r.stderr and needle in r.stderr
    assert not (tmp_path / "lake").exists()  # nothing was written


def test_bad_yaml_key_in_file_exits_2(tmp_path: Path, conf: Path) -> None:
    raw = yaml.safe_load(conf.read_text())
    raw["lake"]["max_bytes"] = 5
    conf.write_text(yaml.safe_dump(raw))
    r = run("ingest", str(write_source(tmp_path / "g.csv", GOOD)), "-c", str(conf))
    assert r.exit_code == 2 and "lake.max_bytes" in r.stderr


def test_missing_files_exit_2(tmp_path: Path, conf: Path) -> None:
    r = run("ingest", str(tmp_path / "nope.csv"), "-c", str(conf))
    assert r.exit_code == 2 and "nope.csv" in r.stderr
    r = run("ingest", str(tmp_path / "*.csv"), "-c", str(conf))
    assert r.exit_code == 2
    r = run("ingest", str(write_source(tmp_path / "g.csv", GOOD)), "-c", str(tmp_path / "x.yaml"))
    assert r.exit_code == 2 and "config file not found" in r.stderr
    assert not (tmp_path / "lake").exists()


def test_real_subprocess_entry_point(tmp_path: Path, conf: Path) -> None:
    src = write_source(tmp_path / "in" / "good.csv.gz", GOOD)
    p = subprocess.run(
        [sys.executable, "-m", "cnnlstm.cli", "ingest", str(src), "-c", str(conf), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    (f,) = json.loads(p.stdout)["files"]
    assert (f["name"], f["outcome"], f["accepted"]) == ("good.csv.gz", "committed", 2)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnlstm.cli",
            "ingest",
            str(src),
            "-c",
            str(conf),
            "--set",
            "data.nope=1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "data.nope" in p.stderr
