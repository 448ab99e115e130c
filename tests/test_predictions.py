"""The documented predictions reader returns committed rows only (issue 12, item 11).

A scorer killed between writing a group's prediction files and updating the watermark leaves
Parquet files under ``date=*/`` that no watermark names (and temp files under ``_tmp/``). A
directory glob (``polars.scan_parquet('predictions/**/*.parquet')``, what the README and the
``cnnlstm run`` summary used to recommend) returns those rows; `cnnlstm.predictions.scan` trusts
the watermarks, as `cnnlstm.lake.scan_readings` trusts the ledger, and returns none of them.

The first test builds the folder with the scorer's own writers (fast, no model); the second kills
a real `cnnlstm.score.score` run at the watermark write (a trained model on a real MLflow server).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from cnnlstm.lake import Lake
from cnnlstm.score import watermark_rel

pytest_plugins = ["mlflow_server"]  # trained_v1: a tiny model on a real MLflow server


def _preds(entity: str, start: datetime, n: int, version: str = "1") -> pl.DataFrame:
    t = [start + timedelta(seconds=10 * i) for i in range(n)]
    return pl.DataFrame(
        {
            "entity_id": [entity] * n,
            "window_start": t,
            "window_end": [x + timedelta(seconds=10) for x in t],
            "predicted": list(range(n)),
            "model_name": ["m"] * n,
            "model_version": [version] * n,
        }
    )


def _committed_output(out: Path) -> tuple[int, int]:
    """A predictions folder as the scorer leaves it after one committed group and one group
    killed before its watermark update: returns (committed rows, uncommitted rows)."""
    o = Lake(str(out))
    (out / "_tmp").mkdir(parents=True)  # the scorer makes it before writing
    day = datetime(2024, 1, 1, tzinfo=UTC)
    good = _preds("e1", day, 30)
    rel = "date=2024-01-01/m-v1-e1-aaaaaaaaaaaaaaaa.parquet"
    o.write_parquet(good, rel)
    o.write_json(
        {
            "model_name": "m",
            "model_version": "1",
            "where": {},
            "files": {
                "readings/entity_id=e1/date=2024-01-01/part-1.parquet": {
                    "rows": 300,
                    "entity_id": "e1",
                    "date": "2024-01-01",
                    "windows": good.height,
                    "predictions": [rel],
                    "scored_at": day.isoformat(),
                }
            },
        },
        watermark_rel("m", "1"),
    )
    # the killed group: its file renamed into place, the watermark never updated
    lost = _preds("e2", day, 280)
    o.write_parquet(lost, "date=2024-01-01/m-v1-e2-bbbbbbbbbbbbbbbb.parquet")
    # and a temp file of the next write, never renamed
    _preds("e3", day, 7).write_parquet(out / "_tmp" / "0123abcd.parquet")
    return good.height, lost.height + 7


def test_scan_returns_committed_rows_only(tmp_path: Path) -> None:
    out = tmp_path / "predictions"
    committed, uncommitted = _committed_output(out)
    # the fault: the glob the docs used to recommend returns the uncommitted rows too
    raw = pl.scan_parquet(f"{out}/**/*.parquet").collect()
    assert raw.height == committed + uncommitted

    from cnnlstm.predictions import scan

    lf = scan(str(out))
    assert isinstance(lf, pl.LazyFrame)
    got = lf.collect()
    assert got.height == committed
    assert set(got["entity_id"]) == {"e1"}  # 0 rows of the killed group or the temp file
    # filters by model name and version; an unknown one, or an empty folder, is an empty frame
    assert scan(str(out), model_name="m", model_version="1").collect().height == committed
    assert scan(str(out), model_version="2").collect().height == 0
    assert scan(str(tmp_path / "nothing")).collect().height == 0


def test_scan_after_a_score_killed_at_the_watermark(
    trained_v1, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real scorer, stopped where a kill -9 leaves it: prediction files written, their
    watermark update never made."""
    from cnnlstm.predictions import scan
    from cnnlstm.score import score

    out = tmp_path / "pred"
    real = Lake.write_json

    def killed(self, obj, rel):
        if rel.startswith("_watermark/"):
            raise KeyboardInterrupt("killed before the watermark update")
        return real(self, obj, rel)

    monkeypatch.setattr(Lake, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        score(trained_v1.cfg, "models:/hapt-tiny/1", str(out), where={"split": "test"})
    monkeypatch.setattr(Lake, "write_json", real)

    raw = pl.scan_parquet(f"{out}/**/*.parquet").collect()
    assert raw.height > 0, "the killed scorer wrote prediction files"
    assert scan(str(out)).collect().height == 0

    # the next scorer removes the orphans and commits; scan then sees exactly its rows
    rep = score(trained_v1.cfg, "models:/hapt-tiny/1", str(out), where={"split": "test"})
    assert rep.orphans_removed > 0 and rep.rows_written > 0
    assert scan(str(out)).collect().height == rep.rows_written


def test_docs_and_run_summary_recommend_the_committed_reader(tmp_path: Path) -> None:
    from flows.cli import _summary_lines

    root = Path(__file__).resolve().parents[1]
    for doc in ("README.md", "docs/mlflow.md"):
        text = (root / doc).read_text()
        assert "cnnlstm.predictions.scan(" in text, doc
        assert 'scan_parquet("predictions/**/*.parquet")` |' not in text, doc
    from conftest import make_config

    cfg = make_config(tmp_path)
    summary = {
        "ingest": {
            "accepted": 10,
            "quarantined": 0,
            "duplicates": 0,
            "committed": 1,
            "skipped": 0,
            "rejected": 0,
            "failed": 0,
            "retry": 0,
            "rows_read": 10,
        },
        "train": {"weights_epoch": 1, "epochs_run": 1, "device": "cpu"},
        "score": {
            "rows_written": 5,
            "model_name": "m",
            "model_version": "1",
            "files_scored": 1,
            "files_already_scored": 0,
            "output": str(tmp_path / "predictions"),
        },
    }
    lines = _summary_lines(summary, cfg, tmp_path / "run", tmp_path / "c.yaml", width=400)
    text = "\n".join(line.plain for line in lines)
    assert f"cnnlstm.predictions.scan('{tmp_path / 'predictions'}')" in text
    assert "scan_parquet" not in text
