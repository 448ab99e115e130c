"""Scoring split into plan -> score parts -> commit (issue 13, item 6): the score flow maps the
parts over its task runner (threads, or a Dask LocalCluster) and gets exactly the predictions of
the single-process `cnnlstm score`, each window once; a re-run scores nothing; a part that fails
leaves nothing of its attempt committed and the next run completes; two attempts racing for the
same files commit each file once. Real MLflow (SQLite store), the tiny HAPT lake (4 recordings,
one lake file each), one epoch."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml
from mlflow_server import Trained, tiny_config, train_tracked
from prefect.testing.utilities import prefect_test_harness

import cnnlstm.score as sc
from cnnlstm.predictions import scan
from cnnlstm.score import (
    ScoreError,
    abort_scoring,
    commit_scoring,
    load_plan,
    plan_scoring,
    score,
    score_part,
)

pytest_plugins = ["mlflow_server"]  # the session's tiny HAPT lake

URI = "models:/hapt-tiny/1"
N_FILES = 4  # one lake file per recording (entity): 4 parts with score.files_per_batch: 1


@pytest.fixture(scope="module")
def trained(hapt_lake, tmp_path_factory) -> Trained:
    d = tmp_path_factory.mktemp("fanout")
    cfg = tiny_config(d, hapt_lake, f"sqlite:///{d / 'mlflow.db'}", train={"epochs": 1})
    t = train_tracked(cfg, d / "run")
    assert t.registration["version"] == "1"
    return t


@pytest.fixture(scope="module")
def single(trained, tmp_path_factory) -> pl.DataFrame:
    """The single-process path's predictions (`cnnlstm score`: plan, parts in turn, commit)."""
    out = tmp_path_factory.mktemp("single") / "pred"
    rep = score(trained.cfg, URI, str(out))
    assert rep.files_scored == N_FILES and rep.rows_written > 0 and rep.parts == 1
    assert not (out / "_staging").exists() or not any((out / "_staging").iterdir())
    return _rows(out)


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _rows(out: Path) -> pl.DataFrame:
    """Committed predictions, in a fixed order, without the scoring time."""
    df = scan(str(out)).collect()
    assert df.height > 0
    assert df.select("entity_id", "window_start").is_duplicated().sum() == 0  # each window once
    return df.drop("scored_at").sort("entity_id", "window_start")


def _config_file(trained: Trained, tmp: Path, **score: object) -> Path:
    raw = trained.cfg.model_dump(mode="json")
    raw["score"] = raw.get("score", {}) | score
    p = tmp / "score.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _staged(out: Path) -> list[Path]:
    return sorted(p for p in (out / "_staging").rglob("*") if p.is_file())


def test_flow_on_threads_matches_single_process_and_reruns_score_nothing(
    trained, single, harness, tmp_path
):
    from flows.score import score_flow

    out = tmp_path / "pred"
    cfg = _config_file(trained, tmp_path, output=str(out), files_per_batch=1)
    rep = score_flow(str(cfg), model_uri=URI)
    assert rep["parts"] == N_FILES and rep["files_scored"] == N_FILES
    assert rep["files_already_scored"] == 0 and rep["groups_already_committed"] == 0
    got = _rows(out)
    assert rep["rows_written"] == got.height == single.height
    assert got.equals(single)  # the same windows and the same predictions
    assert not _staged(out)  # the commit moved every staged file into place

    again = score_flow(str(cfg), model_uri=URI)
    assert again["rows_written"] == 0 and again["files_scored"] == 0 and again["parts"] == 0
    assert again["files_already_scored"] == N_FILES
    assert _rows(out).equals(single)


def test_failed_part_commits_nothing_then_a_rerun_completes(
    trained, single, harness, tmp_path, monkeypatch
):
    from flows.score import score_flow

    out = tmp_path / "pred"
    cfg = _config_file(trained, tmp_path, output=str(out), files_per_batch=1)
    real = sc.score_part
    seen: list[int] = []

    def flaky(plan, index, model=None):
        seen.append(index)
        if index == 2:
            raise RuntimeError("injected failure in part 2")
        return real(plan, index, model)

    monkeypatch.setattr(sc, "score_part", flaky)
    state = score_flow(str(cfg), model_uri=URI, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="1 of 4 parts failed, nothing was committed"):
        state.result()
    assert sorted(seen) == [0, 1, 2, 3]  # the other parts ran (and staged their files)
    assert scan(str(out)).collect().height == 0  # no committed row of that attempt
    assert not list(out.glob("date=*/*.parquet"))  # staged files never reach date=*/
    assert not _staged(out)  # the failed attempt's staging folder is gone
    assert not list(out.glob("_watermark/**/*.json"))

    monkeypatch.setattr(sc, "score_part", real)
    rep = score_flow(str(cfg), model_uri=URI)
    assert rep["files_scored"] == N_FILES and rep["files_already_scored"] == 0
    assert _rows(out).equals(single)


@pytest.mark.timeout(300)
def test_flow_on_a_dask_cluster_matches_single_process(trained, single, harness, tmp_path):
    pytest.importorskip("prefect_dask")
    from flows.score import score_flow

    out = tmp_path / "pred"
    cfg = _config_file(trained, tmp_path, output=str(out), files_per_batch=1)
    raw = yaml.safe_load(cfg.read_text())
    raw["runner"] = {"kind": "dask", "n_workers": 2, "threads_per_worker": 2}
    cfg.write_text(yaml.safe_dump(raw))
    rep = score_flow(str(cfg), model_uri=URI)
    assert rep["parts"] == N_FILES and rep["files_scored"] == N_FILES
    assert _rows(out).equals(single)


def test_two_attempts_commit_each_file_once(trained, single, tmp_path):
    """Two scorers plan the same unscored files (neither has committed yet): both score, the
    first commit wins, the second drops its staged files; staged files are invisible until
    the commit."""
    cfg = trained.cfg
    out = tmp_path / "pred"
    a, model = plan_scoring(cfg, URI, str(out))
    b, _ = plan_scoring(cfg, URI, str(out))
    assert a.attempt != b.attempt and a.n_files == b.n_files == N_FILES
    pa = [score_part(a, i, model) for i in range(a.n_parts)]
    pb = [score_part(b, i).to_dict() for i in range(b.n_parts)]  # as a flow passes them
    assert _staged(out) and not list(out.glob("date=*/*.parquet"))
    assert scan(str(out)).collect().height == 0

    ra = commit_scoring(cfg, a, pa)
    rb = commit_scoring(cfg, b, pb)
    assert ra.files_scored == N_FILES and ra.rows_written == single.height
    assert rb.files_scored == 0 and rb.rows_written == 0
    assert rb.groups_already_committed == N_FILES
    assert _rows(out).equals(single)
    assert not _staged(out)


def test_commit_needs_every_part_and_an_abort_leaves_nothing(trained, tmp_path):
    cfg = trained.cfg.model_copy(
        update={"score": trained.cfg.score.model_copy(update={"files_per_batch": 1})}
    )
    out = tmp_path / "pred"
    plan, model = plan_scoring(cfg, URI, str(out))
    assert plan.n_parts == N_FILES
    assert load_plan(str(out), plan.attempt) == plan  # what a worker in another process reads
    parts = [score_part(plan, i, model) for i in range(plan.n_parts)]
    with pytest.raises(ScoreError, match="each of its 4 parts"):
        commit_scoring(cfg, plan, parts[:3])
    with pytest.raises(ScoreError, match="each of its 4 parts"):
        commit_scoring(cfg, plan, parts + parts[:1])
    assert scan(str(out)).collect().height == 0
    abort_scoring(plan)
    assert not _staged(out)
    # the next plan sees every file unscored, and a dead attempt's folder is swept by it
    dead = out / "_staging" / "19700101T000000-deadbeef"
    (dead / "date=1970-01-01").mkdir(parents=True)
    (dead / "date=1970-01-01" / "x.parquet").write_bytes(b"partial")
    again, _ = plan_scoring(cfg, URI, str(out))
    assert again.n_files == N_FILES and not dead.exists()
    abort_scoring(again)
