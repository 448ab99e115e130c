"""`cnnlstm run` as a person runs it: a real process (its own local Prefect API, MLflow on a
SQLite file) on four HAPT recordings, twice.

The first run is captured as a terminal would show it (rich told the output is an interactive
terminal 100 columns wide): a progress display per stage, no Prefect state lines, no warnings,
and a summary that fits 100 columns. The second run has nothing new to learn from (same data,
config and code): it reports up to date, creates no MLflow run and no model version, and with
``--json`` its stdout is exactly one JSON document."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from mlflow_server import LANDING, TINY_FILES, hapt_config_dict

pytestmark = pytest.mark.slow

SGR = re.compile(r"\x1b\[[0-9;]*m|\x1b\][^\x07]*\x07")  # colours, styles, links
CURSOR = re.compile(r"\x1b\[[0-9;?]*[A-Za-ln-z]|\r")  # cursor moves, line erases
ANSI = re.compile(f"{SGR.pattern}|{CURSOR.pattern}")


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("cnnlstm")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "flows.cli"]


def _run(project: Path, *args: str, terminal: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= {"PREFECT_HOME": str(project / ".prefect"), "COLUMNS": "100"}
    if terminal:  # rich draws as on a terminal: the live display, colours
        env |= {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}
    return subprocess.run(
        [*_cli(), "run", "-c", str(project / "hapt-tiny.yaml"), "--out", str(project / "run")]
        + list(args),
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _plain(text: str) -> str:
    """What a terminal shows, one redraw per line: colours dropped, cursor moves as breaks."""
    return CURSOR.sub("\n", SGR.sub("", text))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run-output")
    landing = d / "landing"
    landing.mkdir()
    for name in TINY_FILES:
        shutil.copy(LANDING / f"{name}.csv.gz", landing)
    raw = hapt_config_dict(
        d / "lake",
        f"sqlite:///{d / 'mlflow.db'}",
        # the loop's own display is on in the config: `run` shows its own instead
        train={"progress": True, "baseline": "off"},
    )
    raw["data"]["landing"] = str(landing)
    raw["tracking"]["registered_model"] = "hapt-run"
    raw["score"] = {"output": str(d / "predictions"), "where": {"split": "test"}}
    (d / "hapt-tiny.yaml").write_text(yaml.safe_dump(raw))
    return d


@pytest.fixture(scope="module")
def first(project: Path) -> subprocess.CompletedProcess:
    p = _run(project, terminal=True)
    (project / "first.stdout").write_text(p.stdout)  # for a look when a check fails
    (project / "first.stderr").write_text(p.stderr)
    assert p.returncode == 0, p.stderr[-4000:]
    return p


def _counts(project: Path) -> tuple[int, list[str]]:
    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)  # not the process's registry of earlier tests
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, max_results=1000)
    versions = sorted(str(mv.version) for mv in client.search_model_versions("name='hapt-run'"))
    return len(runs), versions


def test_run_shows_progress_and_a_summary_that_fits(first) -> None:
    err, out = _plain(first.stderr), _plain(first.stdout)
    both = err + out
    # Prefect's per-task and per-flow state lines stay in the Prefect UI (and -v)
    assert "Finished in state" not in both and "Beginning flow run" not in both
    # no warnings, no MLflow chatter, no download bars
    for noise in ("Warning", "warning", "Successfully registered", "Created version", "INFO "):
        assert noise not in both, (noise, both[-3000:])
    # the live display drew the stages (bar, counts, rates, time left) ...
    assert "━" in first.stderr
    assert re.search(r"ingest\s.*\d+/4\s+files", err), err[-3000:]
    assert re.search(r"train\s.*\d/2\s+epochs", err) and "ETA" in err, err[-3000:]
    assert re.search(r"val_macro_f1 \d\.\d{4}", err), err[-3000:]
    # ... and each stage left one line: what it did
    lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
    assert any(
        re.match(r"ingest\s+4 files \(4 committed\): [\d,]+ rows accepted", ln) for ln in lines
    )
    assert any(re.match(r"train\s+2 epochs on cpu, run \w+; model hapt-run v1", ln) for ln in lines)
    assert any(
        re.match(r"score\s+[\d,]+ predictions by hapt-run v1 for 1 entity", ln) for ln in lines
    )
    # the loop's own epoch lines are not printed beside the display
    assert "| train_loss" not in err
    # the summary: every line within 100 columns
    summary = first.stdout.splitlines()
    assert any("summary" in ln for ln in summary)
    wide = [ln for ln in summary if len(ANSI.sub("", ln)) > 100]
    assert not wide, wide
    text = ANSI.sub("", first.stdout)
    assert "hapt-run v1 (challenger, champion)" in text
    assert re.search(r"predictions by hapt-run v1 for 1 entity \(4 new lake files read", text)


def test_second_run_is_up_to_date_and_json(project: Path, first) -> None:
    runs, versions = _counts(project)
    assert versions == ["1"], _plain(first.stderr)[-3000:]
    p = _run(project, "--json")
    assert p.returncode == 0, p.stderr[-4000:]
    doc = json.loads(p.stdout)  # stdout is exactly one JSON document (logs went to stderr)
    assert isinstance(doc, dict)
    assert doc["up_to_date"] is True and doc["train"]["up_to_date"] is True
    reg = doc["train"]["registered_model"]
    assert (reg["name"], reg["version"], reg["registered"]) == ("hapt-run", "1", False)
    assert doc["ingest"]["skipped"] == 4 and doc["ingest"]["accepted"] == 0
    assert doc["score"]["rows_written"] == 0 and doc["score"]["model_version"] == "1"
    # the figures of the run that did the job are still reported
    assert doc["train"]["epochs_run"] == 2 and "accuracy" in doc["train"]["test"]
    assert "Finished in state" not in p.stderr
    # no MLflow run, no model version
    assert _counts(project) == (runs, versions)
    # and in words, as a person reads it
    p = _run(project)
    assert p.returncode == 0, p.stderr[-4000:]
    assert re.search(r"train\s+up to date: run \w+, model hapt-run v1", p.stderr), p.stderr
    assert "up to date" in p.stdout and _counts(project) == (runs, versions)
