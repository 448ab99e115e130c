"""Hostile and changing landing files (issue 12, items 2, 3, 6, 7, 9).

- links and special files: a symbolic link in the landing tree is refused (never opened) unless
  ``data.follow_symlinks``, and then only to a target inside the landing root; no byte of a file
  outside the root reaches the lake, the ledger, the logs or the CLI output; a FIFO is refused
  without blocking; rejection and quarantine reasons quote at most 80 characters of a field;
- gzip bombs: decompression is streamed with a ratio limit (``lake.max_gzip_ratio``) and the
  size cap, so a 2 MB bomb is rejected in seconds with little memory (measured in a child);
- non-instants and denormals: second 60 (a leap second) is quarantined with its own reason;
  channel values below float32's normal range are quarantined (``data.denormals: quarantine``)
  or stored as 0.0 and counted (``flush``);
- a file that changes while it is read is not committed (outcome ``retry``) and the complete
  file is ingested in full later;
- dictionary-encoded (Categorical/Enum) Parquet string columns read like plain strings.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import zlib
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
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
from typer.testing import CliRunner

from cnnlstm.cli import app
from cnnlstm.ingest import ingest
from cnnlstm.lake import Lake

REPO = Path(__file__).resolve().parents[1]
GOOD = HEADER + "d1,2024-01-01T00:00:00Z,1,2,0\nd1,2024-01-01T00:00:01Z,3,4,1\n"
GOOD_ROW = b"d1,2024-01-01T00:00:00Z,1,2,0\n"


def ok(i: int, dev: str = "d1", a: str = "1", b: str = "2", label: str = "0") -> str:
    return f"{dev},2024-01-01T00:00:{i:02d}Z,{a},{b},{label}\n"


def conf_file(tmp_path: Path, **data: object) -> Path:
    raw = base_config_dict(tmp_path)
    raw["data"] |= {"landing": "landing"} | data
    p = tmp_path / "conf.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def all_lake_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]


def windows(secret: str, n: int = 10) -> list[str]:
    """Every n-character piece of ``secret``: none may appear anywhere."""
    return [secret[i : i + n] for i in range(len(secret) - n + 1)]


def assert_no_secret(secret: str, *texts: str, lake: Path) -> None:
    pieces = windows(secret)
    for t in texts:
        hit = [w for w in pieces if w in t]
        assert not hit, (hit[:3], t[:2000])
    for p, b in all_lake_bytes(lake):
        hit = [w for w in pieces if w.encode() in b]
        assert not hit, (p, hit[:3])


# ------------------------------------------------------------------------------------------------
# item 2: links, special files, reasons that echo file contents


def _secret_file(tmp_path: Path) -> tuple[Path, str]:
    """A file outside the landing root whose first line could pass for a CSV header."""
    token = hashlib.sha256(str(tmp_path).encode()).hexdigest()
    secret = f"root:x:0:0:{token}:/root:/bin/bash"
    p = tmp_path / "etc" / "passwd"
    p.parent.mkdir()
    p.write_text(secret + "\n" + f"daemon:{token[::-1]}\n")
    return p, secret


def test_symlink_out_of_landing_is_refused_and_nothing_of_it_leaks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    target, secret = _secret_file(tmp_path)
    land = tmp_path / "landing"
    write_source(land / "good.csv", GOOD)
    (land / "leak.csv").symlink_to(target)
    (land / "sub").mkdir()
    (land / "sub" / "deep.csv").symlink_to(target)
    conf = conf_file(tmp_path)

    r = cli("ingest", str(land), "-c", str(conf), "--json")
    table = cli("ingest", str(land), "-c", str(conf))  # the readable table too
    assert r.exit_code == 1, r.output
    files = {f["name"]: f for f in json.loads(r.stdout)["files"]}
    assert files["good.csv"]["outcome"] == "committed"
    for name in ("leak.csv", "deep.csv"):
        f = files[name]
        assert (f["outcome"], f["rows_read"]) == ("rejected", 0), f
        assert "symbolic link" in f["reason"] and "data.follow_symlinks" in f["reason"], f
    assert_no_secret(secret, r.output, table.output, caplog.text, lake=tmp_path / "lake")
    assert len(Lake(str(tmp_path / "lake")).rejections()) == 2


def test_follow_symlinks_only_to_targets_inside_the_landing_root(tmp_path: Path) -> None:
    target, secret = _secret_file(tmp_path)
    land = tmp_path / "landing"
    write_source(land / "store" / "real.dat", GOOD)  # not a data.include name: only via the link
    (land / "inside.csv").symlink_to(land / "store" / "real.dat")
    (land / "outside.csv").symlink_to(target)
    (land / "escape.csv").symlink_to(land / ".." / "etc" / "passwd")  # relative escape
    write_source(tmp_path / "elsewhere" / "far.csv", GOOD.replace("d1", "far"))
    (land / "linked_dir").symlink_to(tmp_path / "elsewhere")  # a folder outside: not walked
    (land / "loop").symlink_to(land)  # a loop inside: walked once at most
    cfg = make_config(tmp_path, data={"landing": str(land), "follow_symlinks": True})

    rep = ingest(cfg, [str(land)])
    by = {f.name: f for f in rep.files}
    assert counts(by["inside.csv"]) == ("committed", 2, 2, 0, 0), by["inside.csv"]
    for name in ("outside.csv", "escape.csv"):
        assert by[name].outcome == "rejected", by[name]
        assert "outside the landing root" in (by[name].reason or ""), by[name]
    assert "far.csv" not in by
    assert set(lake_frame(cfg)["entity_id"]) == {"d1"}
    assert_no_secret(secret, json.dumps(rep.to_dict()), lake=tmp_path / "lake")


def test_symlinked_folder_is_not_walked_by_default(tmp_path: Path) -> None:
    land = tmp_path / "landing"
    write_source(land / "a.csv", GOOD)
    write_source(tmp_path / "elsewhere" / "far.csv", GOOD.replace("d1", "far"))
    (land / "linked_dir").symlink_to(tmp_path / "elsewhere")
    cfg = make_config(tmp_path, data={"landing": str(land)})
    rep = ingest(cfg, [str(land)])
    assert [f.name for f in rep.files] == ["a.csv"]


def test_fifo_is_refused_without_being_opened(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: ingest must not open it."""
    land = tmp_path / "landing"
    write_source(land / "good.csv", GOOD)
    os.mkfifo(land / "pipe.csv")
    conf = conf_file(tmp_path)
    try:
        p = subprocess.run(
            [sys.executable, "-m", "cnnlstm.cli", "ingest", str(land), "-c", str(conf), "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=90,
        )
    except subprocess.TimeoutExpired:  # the child is killed
        pytest.fail("ingest blocked on a FIFO")
    files = {f["name"]: f for f in json.loads(p.stdout)["files"]}
    assert files["good.csv"]["outcome"] == "committed"
    assert files["pipe.csv"]["outcome"] == "rejected"
    assert "not a regular file" in files["pipe.csv"]["reason"], files["pipe.csv"]


def test_explicit_symlink_and_special_file_arguments_are_refused(tmp_path: Path) -> None:
    src = write_source(tmp_path / "landing" / "real.csv", GOOD)
    link = tmp_path / "landing" / "link.csv"
    link.symlink_to(src)
    cfg = make_config(tmp_path, data={"landing": str(tmp_path / "landing")})
    (rep,) = ingest(cfg, [str(link)]).files
    assert rep.outcome == "rejected" and "symbolic link" in (rep.reason or "")
    (rep,) = ingest(cfg, ["/dev/null"]).files
    assert rep.outcome == "rejected" and "not a regular file" in (rep.reason or ""), rep


def test_reasons_quote_at_most_80_characters_of_a_field(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    long_header = "h" * 300 + "SECRETTAIL"
    (rep,) = ingest(cfg, [str(write_source(tmp_path / "a.csv", long_header + "\n1\n"))]).files
    assert rep.outcome == "rejected" and "missing required columns" in (rep.reason or "")
    assert "SECRETTAIL" not in rep.reason and "h" * 81 not in rep.reason, rep.reason

    value = "9" * 200 + "x"  # an unparseable channel value
    text = HEADER + ok(0) + f"d1,2024-01-01T00:00:01Z,{value},2,0\n"
    (rep,) = ingest(cfg, [str(write_source(tmp_path / "b.csv", text))]).files
    assert counts(rep) == ("committed", 2, 1, 1, 0), rep
    (reason,) = quarantine_frame(cfg)["reason"].to_list()
    assert "ch_a: cannot parse" in reason and "9" * 81 not in reason, reason
    assert len(reason) < 200, reason


# ------------------------------------------------------------------------------------------------
# item 3: gzip bombs

BOMB_CHILD = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    from cnnlstm.config import load_config
    from cnnlstm.ingest import ingest
    cfg = load_config(sys.argv[1])
    (rep,) = ingest(cfg, [sys.argv[2]]).files
    print(json.dumps({"outcome": rep.outcome, "reason": rep.reason,
                      "seconds": time.perf_counter() - t0}))
    """
)

# runs the ingest in its own child and reports that child's peak RSS (RUSAGE_CHILDREN of this
# process holds only it); a watchdog kills it over 2 GB or 60 s so a regression cannot take the
# machine down
MEASURE = textwrap.dedent(
    """
    import json, resource, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], *sys.argv[2:]],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0, killed = time.perf_counter(), None
    while child.poll() is None:
        time.sleep(0.05)
        try:
            rss = int(open(f"/proc/{child.pid}/status").read().split("VmRSS:")[1].split()[0])
        except (OSError, IndexError):
            rss = 0
        if rss > 2_000_000 or time.perf_counter() - t0 > 60:
            killed = f"killed at {rss // 1024} MB after {time.perf_counter() - t0:.1f} s"
            child.kill()
    out, err = child.communicate()
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"wall": wall, "peak_mb": peak_mb, "killed": killed,
                      "stdout": out[-2000:], "stderr": err[-2000:]}))
    """
)


def _bomb(path: Path, members: int = 20, member_mb: int = 100) -> Path:
    """~2 MB of gzip that inflates to ~2 GB: a CSV header, then newlines. One member is
    compressed once (streamed, 1 MiB at a time) and repeated (a multi-member gzip is valid)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\n" * (1 << 20)
    member = b"".join(c.compress(chunk) for _ in range(member_mb)) + c.flush()
    path.write_bytes(gzip.compress(HEADER.encode() + GOOD_ROW) + member * members)
    return path


def test_gzip_bomb_is_rejected_in_seconds_with_little_memory(tmp_path: Path) -> None:
    (tmp_path / "landing").mkdir()
    bomb = _bomb(tmp_path / "landing" / "bomb.csv.gz")
    assert 1_000_000 < bomb.stat().st_size < 3_000_000
    conf = conf_file(tmp_path)
    p = subprocess.run(
        [sys.executable, "-c", MEASURE, BOMB_CHILD, str(conf), str(bomb)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    m = json.loads(p.stdout)
    assert m["killed"] is None, m
    rep = json.loads(m["stdout"])
    assert rep["outcome"] == "rejected", (rep, m)
    assert "lake.max_gzip_ratio" in rep["reason"], rep
    assert m["wall"] < 10, m
    assert m["peak_mb"] < 500, m
    assert Lake(str(tmp_path / "lake")).records() == []


def test_bundled_sensor_gzip_passes_the_default_ratio_comfortably() -> None:
    from cnnlstm.config import LakeConfig
    from cnnlstm.formats.gz import gunzip

    limit = LakeConfig().max_gzip_ratio
    files = sorted((REPO / "data" / "hapt" / "landing").glob("*.csv.gz"))
    assert files
    worst = 0.0
    for f in files[:8]:
        data = f.read_bytes()
        raw = gunzip(data, 1 << 30, limit)
        assert raw == gzip.decompress(data)
        worst = max(worst, len(raw) / len(data))
    assert worst * 5 < limit, (worst, limit)


def test_gzip_ratio_limit_is_configurable_and_multi_member_still_reads(tmp_path: Path) -> None:
    rows = HEADER + "".join(ok(i % 60) for i in range(2000))  # repetitive: compresses ~30x
    data = gzip.compress(rows[:3000].encode()) + gzip.compress(rows[3000:].encode())
    src = tmp_path / "two.csv.gz"
    src.write_bytes(data)
    cfg = make_config(tmp_path)
    (rep,) = ingest(cfg, [str(src)]).files
    assert counts(rep) == ("committed", 2000, 60, 0, 1940), rep

    from cnnlstm.formats.base import FileRejected
    from cnnlstm.formats.gz import gunzip

    big = gzip.compress(b"x" * (4 << 20))
    with pytest.raises(FileRejected, match=r"lake.max_gzip_ratio=10"):
        gunzip(big, 1 << 30, 10)
    with pytest.raises(FileRejected, match="decompressed size over the cap"):
        gunzip(big, 1 << 20, 10_000)
    with pytest.raises(FileRejected, match="corrupt gzip"):
        gunzip(data + b"garbage", 1 << 30, 100)
    with pytest.raises(FileRejected, match="corrupt gzip"):
        gunzip(data[:-9], 1 << 30, 100)


# ------------------------------------------------------------------------------------------------
# item 6: leap seconds (and other non-instants), denormals


@pytest.mark.parametrize("same_values", [False, True])
def test_leap_second_is_quarantined_not_read_as_the_next_second(
    tmp_path: Path, same_values: bool
) -> None:
    cfg = make_config(tmp_path)
    leap_b = "9" if same_values else "5"
    text = (
        HEADER
        + "d1,2016-12-31T23:59:59Z,1,2,0\n"
        + f"d1,2016-12-31T23:59:60Z,1,{leap_b},0\n"
        + "d1,2017-01-01T00:00:00Z,1,9,0\n"
        + "d1,2016-12-31 23:59:60.5+00:00,1,2,0\n"
        + "d1,2024-03-01T12:00:60Z,1,2,0\n"  # second 60 where no leap second was
        + "d1,2016-12-31T23:59:60,1,2,0\n"  # naive
    )
    (rep,) = ingest(cfg, [str(write_source(tmp_path / "leap.csv", text))]).files
    assert counts(rep) == ("committed", 6, 2, 4, 0), rep
    q = quarantine_frame(cfg)
    assert q["source_row"].to_list() == [2, 4, 5, 6]
    assert all("leap second" in r for r in q["reason"]), q["reason"].to_list()
    lake = lake_frame(cfg)
    assert lake["timestamp"].dt.to_string("%Y-%m-%dT%H:%M:%S").to_list() == [
        "2016-12-31T23:59:59",
        "2017-01-01T00:00:00",
    ]
    assert lake["ch_b"].to_list() == [2.0, 9.0]


DENORMAL_ROWS = [
    ("1e-50", "q"),  # underflows float32 to 0.0
    ("1e-40", "q"),  # a float32 subnormal: precision lost
    ("-1e-45", "q"),
    ("0", "ok"),
    ("-0.0", "ok"),
    ("1e-30", "ok"),
    ("1.2e-38", "ok"),  # just above float32's smallest normal
]


def _denormal_csv() -> str:
    return HEADER + "".join(ok(i, b=v) for i, (v, _) in enumerate(DENORMAL_ROWS))


def test_denormals_are_quarantined_by_default(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    (rep,) = ingest(cfg, [str(write_source(tmp_path / "den.csv", _denormal_csv()))]).files
    n_q = sum(k == "q" for _, k in DENORMAL_ROWS)
    assert counts(rep) == ("committed", 7, 7 - n_q, n_q, 0), rep
    q = quarantine_frame(cfg)
    assert q["source_row"].to_list() == [1, 2, 3]
    for reason, (v, _) in zip(q["reason"], DENORMAL_ROWS, strict=False):
        assert "ch_b" in reason and "float32" in reason and v in reason, reason
    assert json.loads(q["raw"][0])["ch_b"] == "1e-50"  # the source text, not a parsed 0.0
    assert sorted(lake_frame(cfg)["ch_b"].to_list()) == pytest.approx([0.0, 0.0, 1e-30, 1.2e-38])


def test_denormals_flush_stores_zero_and_says_how_many(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, data={"denormals": "flush"})
    (rep,) = ingest(cfg, [str(write_source(tmp_path / "den.csv", _denormal_csv()))]).files
    assert counts(rep) == ("committed", 7, 7, 0, 0), rep
    assert any("3 channel values" in n and "0.0" in n for n in rep.notes), rep.notes
    b = lake_frame(cfg)["ch_b"].to_list()
    assert b[:3] == [0.0, 0.0, 0.0]


def test_denormals_in_parquet_channels(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    t = pa.table(
        {
            "device": ["d1"] * 3,
            "time": [f"2024-01-01T00:00:0{i}Z" for i in range(3)],
            "ch_a": pa.array([1.0, 2.0, 1e-40], pa.float32()),  # a float32 subnormal
            "ch_b": pa.array([1e-300, 2.0, 3.0], pa.float64()),  # 0.0 once float32
            "label": [0, 0, 0],
        }
    )
    pq.write_table(t, tmp_path / "den.parquet")
    (rep,) = ingest(cfg, [str(tmp_path / "den.parquet")]).files
    assert counts(rep) == ("committed", 3, 1, 2, 0), rep
    reasons = quarantine_frame(cfg)["reason"].to_list()
    assert "ch_b" in reasons[0] and "ch_a" in reasons[1], reasons


# ------------------------------------------------------------------------------------------------
# item 7: a file that changes while it is read


class _HashAfterEvent:
    """hashlib.sha256 whose objects wait (in threads other than the main one) for ``event``
    before hashing: the content hash is then taken after the file was appended to."""

    def __init__(self, real, event: threading.Event):
        self.real, self.event = real, event

    def __call__(self, *args, **kwargs):
        h = self.real(*args, **kwargs)
        if threading.current_thread() is threading.main_thread():
            return h
        event, real_update = self.event, h.update

        class Waiting:
            def update(self, b):
                event.wait(10)
                real_update(b)

            def __getattr__(self, name):
                return getattr(h, name)

        return Waiting()


def test_file_growing_during_ingest_is_not_committed_and_is_ingested_in_full_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_config(tmp_path)
    src = write_source(tmp_path / "growing.csv", HEADER + "".join(ok(i) for i in range(20)))
    more = "".join(ok(i) for i in range(20, 40))
    appended = threading.Event()
    real_read_csv = pl.read_csv

    def read_then_append(*args, **kwargs):
        df = real_read_csv(*args, **kwargs)
        if not appended.is_set():
            with open(src, "a") as f:  # the writer adds rows while ingest is reading
                f.write(more)
            appended.set()
        return df

    monkeypatch.setattr(pl, "read_csv", read_then_append)
    monkeypatch.setattr(hashlib, "sha256", _HashAfterEvent(hashlib.sha256, appended))
    (first,) = ingest(cfg, [str(src)]).files
    monkeypatch.undo()
    assert appended.is_set()
    assert first.outcome == "retry", first
    assert "changed while being read" in (first.reason or ""), first
    assert first.rows_read == first.accepted == 0
    assert Lake(cfg.lake_uri).records() == [] and Lake(cfg.lake_uri).rejections() == []

    (second,) = ingest(cfg, [str(src)]).files  # the writer is done: the whole file goes in
    assert counts(second) == ("committed", 40, 40, 0, 0), second
    assert lake_frame(cfg).height == 40


def test_gzip_file_changing_during_ingest_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-memory path (gzip): bytes read once; a change seen by size/mtime is not
    committed."""
    cfg = make_config(tmp_path)
    src = write_source(tmp_path / "g.csv.gz", HEADER + "".join(ok(i) for i in range(10)))
    real_read_csv = pl.read_csv
    done: list[bool] = []

    def read_then_append(*args, **kwargs):
        df = real_read_csv(*args, **kwargs)
        if not done:
            with open(src, "ab") as f:  # another gzip member: 10 more rows
                f.write(gzip.compress("".join(ok(i) for i in range(10, 20)).encode()))
            done.append(True)
        return df

    monkeypatch.setattr(pl, "read_csv", read_then_append)
    (first,) = ingest(cfg, [str(src)]).files
    monkeypatch.undo()
    assert first.outcome == "retry", first
    (second,) = ingest(cfg, [str(src)]).files
    assert counts(second) == ("committed", 20, 20, 0, 0), second


def test_retry_outcome_is_not_clean_and_is_counted(tmp_path: Path) -> None:
    from cnnlstm.ingest import FileReport, IngestReport

    rep = IngestReport(lake="x", files=[FileReport(source="a.csv", outcome="retry")])
    assert not rep.clean
    assert rep.totals()["retry"] == 1


# ------------------------------------------------------------------------------------------------
# item 9: dictionary-encoded strings in Parquet


def _dict_table() -> pa.Table:
    d = pa.dictionary(pa.int32(), pa.string())
    return pa.table(
        {
            "device": pa.array(["d1", "d2", "d1"]).cast(d),
            "time": pa.array([f"2024-01-01T00:00:0{i}Z" for i in range(3)]).cast(d),
            "ch_a": [1.0, 2.0, 3.0],
            "ch_b": pa.array(["4", "5", "x"]).cast(pa.dictionary(pa.int8(), pa.string())),
            "label": pa.array(["0", "1", "0"]).cast(pa.dictionary(pa.int16(), pa.large_string())),
            "site": pa.array(["north", None, "south"]).cast(d),
        }
    )


def test_parquet_dictionary_strings_read_like_plain_strings(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, data={"columns": {"site": "string"}})
    pq.write_table(_dict_table(), tmp_path / "dict.parquet")
    assert pa.types.is_dictionary(pq.read_schema(tmp_path / "dict.parquet").field("device").type)
    (rep,) = ingest(cfg, [str(tmp_path / "dict.parquet")]).files
    assert counts(rep) == ("committed", 3, 2, 1, 0), rep
    (reason,) = quarantine_frame(cfg)["reason"].to_list()
    assert "ch_b: cannot parse 'x'" in reason
    lake = lake_frame(cfg)
    assert lake.schema["entity_id"] == pl.String and lake.schema["site"] == pl.String
    assert lake.select("entity_id", "label", "site").rows() == [("d1", 0, "north"), ("d2", 1, None)]


def test_polars_categorical_and_enum_parquet(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, data={"columns": {"site": "string"}})
    df = pl.DataFrame(
        {
            "device": pl.Series(["d1", "d1"], dtype=pl.Categorical),
            "time": pl.Series(["2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z"]),
            "ch_a": [1.0, 2.0],
            "ch_b": [3.0, 4.0],
            "label": [0, 1],
            "site": pl.Series(["a", "b"], dtype=pl.Enum(["a", "b"])),
        }
    )
    df.write_parquet(tmp_path / "cat.parquet")
    (rep,) = ingest(cfg, [str(tmp_path / "cat.parquet")]).files
    assert counts(rep) == ("committed", 2, 2, 0, 0), rep
    assert lake_frame(cfg)["site"].to_list() == ["a", "b"]
