"""MLflow lineage of the lake (`cnnlstm.mlflow_tracker.lake_lineage`) takes each file's content
hash from the ledger, where the ingest recorded it as it wrote the file, and reads a lake file
only when its ledger record has no hash (a ledger written before the hashes were recorded).

The reference is the fingerprint as lineage computed it before: every committed file read and
hashed. With the data files gone from the lake the lineage is still the same (nothing is read);
with the hashes removed from one ledger record exactly that record's files are read. Both on a
local lake and on an S3 lake (moto's server on 127.0.0.1), where a read is a download.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_config, write_source

from cnnlstm.ingest import ingest
from cnnlstm.lake import LEDGER, Lake
from cnnlstm.mlflow_tracker import lake_lineage

HEADER = "device,time,ch_a,ch_b,label\n"


def _sources(landing: Path) -> list[str]:
    """Three sources, four partitions (two devices, two days)."""
    rows = {
        "a.csv": ["d1,2024-01-01T00:00:00Z,1,2,0", "d1,2024-01-02T00:00:00Z,3,4,1"],
        "b.csv": ["d2,2024-01-01T00:00:00Z,5,6,0", "d2,2024-01-01T00:00:01Z,7,8,1"],
        "c.csv": ["d2,2024-01-02T00:00:00Z,9,10,1"],
    }
    return [str(write_source(landing / n, HEADER + "\n".join(r) + "\n")) for n, r in rows.items()]


def _old_lineage(lake: Lake) -> dict:
    """Lineage as it was computed before: read and hash every committed file."""
    files = sorted(lake.data_files(), key=lambda f: f.path)
    h = hashlib.sha256()
    listed = []
    for f in files:
        with lake.fs.open(lake.abs(f.path), "rb") as fp:
            digest = hashlib.sha256(fp.read()).hexdigest()
        h.update(f"{f.path}\t{f.rows}\t{digest}\n".encode())
        listed.append(
            {"path": f.path, "entity_id": f.entity_id, "date": f.date, "rows": f.rows}
            | {"sha256": digest}
        )
    return {"fingerprint": h.hexdigest(), "files": listed}


class _Counted:
    """Counts `Lake.file_sha256` calls: the only place lineage reads a lake file."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.paths: list[str] = []
        real = Lake.file_sha256

        def counted(lake: Lake, rel: str) -> str:
            self.paths.append(rel)
            return real(lake, rel)

        monkeypatch.setattr(Lake, "file_sha256", counted)


@pytest.fixture
def s3_lake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for k, v in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3").create_bucket(Bucket="lineage")
    try:
        yield "s3://lineage/lake"
    finally:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_lineage_takes_hashes_from_the_ledger(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    lake_uri = str(tmp_path / "lake") if where == "local" else request.getfixturevalue("s3_lake")
    cfg = make_config(tmp_path, lake={"uri": lake_uri})
    rep = ingest(cfg, _sources(tmp_path / "landing"))
    assert [f.outcome for f in rep.files] == ["committed"] * 3
    lake = Lake(lake_uri)
    assert lake.local == (where == "local")
    # the ingest recorded each data file's hash in the ledger
    assert all(f.sha256 for f in lake.data_files())
    before = _old_lineage(lake)
    assert len(before["files"]) == 4

    counted = _Counted(monkeypatch)
    lin = lake_lineage(lake_uri)
    assert lin["fingerprint"] == before["fingerprint"]
    assert lin["files"] == before["files"]  # same files, same hashes
    assert (lin["n_files"], lin["rows"], lin["hashed_here"]) == (4, 5, 0)
    assert counted.paths == []

    # nothing is read: with the data files gone the lineage is the same
    for f in lake.data_files():
        lake.fs.rm(lake.abs(f.path))
    assert lake_lineage(lake_uri) == lin
    assert counted.paths == []


def test_lineage_hashes_only_the_files_the_ledger_has_no_hash_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_config(tmp_path)
    ingest(cfg, _sources(tmp_path / "landing"))
    lake = Lake(cfg.lake_uri)
    before = _old_lineage(lake)

    # a record as an older ingest wrote it: its files without their hashes
    old = next(r for r in lake.records() if len(r["files"]) == 2)
    for f in old["files"]:
        del f["sha256"]
    Path(lake.abs(f"{LEDGER}/{old['sha256']}.json")).write_text(json.dumps(old))

    counted = _Counted(monkeypatch)
    lin = lake_lineage(cfg.lake_uri)
    assert lin["fingerprint"] == before["fingerprint"] and lin["files"] == before["files"]
    assert sorted(counted.paths) == sorted(f["path"] for f in old["files"])
    assert lin["hashed_here"] == 2

    # and those files are really read: without them that lineage cannot be made
    Path(lake.abs(old["files"][0]["path"])).unlink()
    with pytest.raises(FileNotFoundError):
        lake_lineage(cfg.lake_uri)
