"""`cnnlstm init`: a config drafted from a sample of the landing files loads and, as written,
lets ingest accept every valid row of each real-world layout (tests/test_ingest_layouts.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import lake_frame, write_source
from typer.testing import CliRunner

from cnnlstm.cli import app
from cnnlstm.config import load_config
from cnnlstm.ingest import ingest
from cnnlstm.init import readme_facts, stem_pattern, write_config

REPO = Path(__file__).resolve().parents[1]


def run(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def init_and_ingest(tmp_path: Path, land: Path, rows: int) -> tuple[dict, str]:
    """`cnnlstm init` then ingest with the config as written: clean, every row accepted."""
    out = tmp_path / "conf" / "my.yaml"
    r = run("init", str(land), "-o", str(out))
    assert r.exit_code == 0, r.output
    text = out.read_text()
    cfg = load_config(out)
    rep = ingest(cfg, [str(land)])
    t = rep.totals()
    assert rep.clean, (text, rep.to_dict())
    assert t["accepted"] == rows and t["rejected"] == 0, (text, t)
    return yaml.safe_load(text)["data"], text


def _wave(n: int, t0: int = 1_700_000_000, step: int = 1) -> list[str]:
    return [f"{t0 + i * step},{np.sin(i / 3):.4f},{np.cos(i / 5):.4f}" for i in range(n)]


def test_split_and_subject_in_the_path(tmp_path: Path):
    land = tmp_path / "landing"
    for split, subj, rec in (("train", 7, 12), ("train", 8, 1), ("test", 3, 1)):
        text = "t,a,b\n" + "\n".join(_wave(20)) + "\n"
        write_source(land / split / f"subject{subj}_rec{rec}.csv", text)
    data, _ = init_and_ingest(tmp_path, land, 60)
    pc = data["path_columns"]
    assert "(?P<split>" in pc["pattern"] and "(?P<subject>" in pc["pattern"]
    assert pc["types"]["subject"] == "int"
    assert data["timestamp"] == {"column": "t", "format": "epoch_s"}
    assert data["entity"] == {"from_filename": r"^(?P<entity>subject\d+_rec\d+)"}
    assert [c["name"] for c in data["channels"]] == ["a", "b"]
    assert data["landing"] == "../landing"


def test_a_unit_id_repeated_across_two_txt_files(tmp_path: Path):
    land = tmp_path / "landing"
    for name in ("train_FD001", "test_FD001"):
        lines = ["unit cycle s1 s2"]
        for unit in (1, 2, 3):
            lines += [f"{unit} {c} {c * 0.1:.2f} {unit + c:.1f}" for c in range(1, 11)]
        write_source(land / f"{name}.txt", "\n".join(lines) + "\n")
    data, text = init_and_ingest(tmp_path, land, 60)
    assert "*.txt" in data["include"] and data["csv"]["delimiter"] == " "
    assert data["entity"] == {"parts": ["split", "unit"]}
    assert data["timestamp"]["column"] == "cycle"
    assert data["timestamp"]["format"] == "sample_index"
    assert "TODO" in text.split("    sample_rate_hz: 1")[1].splitlines()[0]
    assert [c["name"] for c in data["channels"]] == ["s1", "s2"]


def test_r_style_row_index_under_a_seven_name_header(tmp_path: Path):
    head = '"date","Temperature","Humidity","Light","CO2","HumidityRatio","Occupancy"\n'
    rows = "".join(
        f'"{i}","2015-02-04 17:{i:02d}:00",23.{i % 7},27.2,{420 + i},721.2,0.0047,{i % 2}\n'
        for i in range(1, 31)
    )
    write_source(tmp_path / "landing" / "datatraining.txt", head + rows)
    data, text = init_and_ingest(tmp_path, tmp_path / "landing", 30)
    assert data["timestamp"] == {"column": "date", "format": "iso"}
    assert data["label"] == {"column": "Occupancy", "dtype": "int"}
    assert "row_index" not in [c["name"] for c in data["channels"]]
    assert "Temperature" in [c["name"] for c in data["channels"]]
    assert "row index" in text


def test_float_written_labels_are_int(tmp_path: Path):
    land = tmp_path / "landing"
    lines = [f"{r},{i % 2}.0" for i, r in enumerate(_wave(40))]
    write_source(land / "run.csv", "time,x,y,label\n" + "\n".join(lines) + "\n")
    data, _ = init_and_ingest(tmp_path, land, 40)
    assert data["label"] == {"column": "label", "dtype": "int"}


def test_a_file_without_its_label_column_takes_a_default(tmp_path: Path):
    land = tmp_path / "landing"
    write_source(land / "normal" / "run1.csv", "t,a\n" + "".join(f"{i},{i}\n" for i in range(5)))
    write_source(
        land / "faulty" / "run2.csv",
        "t,a,state\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(5)),
    )
    data, text = init_and_ingest(tmp_path, land, 10)
    assert data["label"] == {"column": "state", "dtype": "int", "default": 0}
    assert "TODO" in text.split("    default: 0")[1].splitlines()[0]


def test_a_1hz_log_with_2s_steps(tmp_path: Path):
    land = tmp_path / "landing"
    ts = [1_700_000_000 + i + (i // 10) for i in range(50)]  # a 2 s step every 10 samples
    lines = [f"{t},{np.sin(i / 4):.3f},{20 + i % 3}" for i, t in enumerate(ts)]
    write_source(land / "log.csv", "epoch,temp,hum\n" + "\n".join(lines) + "\n")
    data, text = init_and_ingest(tmp_path, land, 50)
    assert data["timestamp"] == {"column": "epoch", "format": "epoch_s"}
    assert "(1 Hz)" in text and "4 gaps" in text
    assert yaml.safe_load(text)["window"]["size"] == 16  # 2.56 s at 1 Hz, at least 16


def test_one_constant_entity_split_into_train_and_test_files(tmp_path: Path):
    land = tmp_path / "landing"
    for split, t0 in (("train", 0), ("test", 400)):
        lab = [(i // 50) % 2 for i in range(200)]
        text = "ts,a,activity\n" + "".join(
            f"2024-01-01T00:{(t0 + i) // 60:02d}:{(t0 + i) % 60:02d}Z,{np.sin(i):.3f},{lab[i]}\n"
            for i in range(200)
        )
        write_source(land / f"{split}.csv", text)
    data, _ = init_and_ingest(tmp_path, land, 400)
    assert data["timestamp"] == {"column": "ts", "format": "iso"}
    assert "(?P<split>" in data["path_columns"]["pattern"]
    assert data["label"]["column"] == "activity"


def test_an_existing_file_needs_force_and_dry_run_writes_nothing(tmp_path: Path):
    land = tmp_path / "landing"
    write_source(land / "a.csv", "t,a,b\n" + "\n".join(_wave(10)) + "\n")
    out = tmp_path / "c.yaml"
    out.write_text("keep me")
    r = run("init", str(land), "-o", str(out))
    assert r.exit_code == 2 and out.read_text() == "keep me"
    assert run("init", str(land), "-o", str(out), "--force").exit_code == 0
    r = run("ingest", str(land), "-c", str(out), "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    assert '"accepted": 10' in r.stdout and '"dry_run": true' in r.stdout
    assert not (tmp_path / "lake").exists()
    assert run("init", str(tmp_path / "nope"), "-o", str(tmp_path / "x.yaml")).exit_code == 2


def test_hapt_agrees_with_the_hand_written_config(tmp_path: Path):
    out = tmp_path / "hapt.yaml"
    d = write_config(REPO / "data/hapt/landing", out, max_files=3, max_bytes=64 * 1024)
    got = load_config(out).data
    want = load_config(REPO / "configs/hapt.yaml").data
    # every data key: the rate and the units from data/hapt/README.md, the limits from the units
    assert (out.parent / got.landing).resolve() == (REPO / "configs" / want.landing).resolve()
    assert got.model_dump(exclude={"landing"}) == want.model_dump(exclude={"landing"})
    assert not d.todos, d.todos
    text = out.read_text()
    assert "as README.md states" in text and "size: 128" in text


def test_no_time_column_and_a_stated_rate_give_time_from_the_row_position(tmp_path: Path):
    """Vibration-style files: float channels only, a README stating the rate. The draft reads
    time from each row's position (sample_index without a column) and ingests every row."""
    land = tmp_path / "landing"
    for k in (1, 2):
        rows = [f"{np.sin(i / 3 + k):.4f},{np.cos(i / 5 + k):.4f}" for i in range(40)]
        write_source(land / f"bearing{k}.csv", "DE,FE\n" + "\n".join(rows) + "\n")
    (land / "README.md").write_text("Drive-end accelerometer sampled at 12000 Hz.\n")
    data, text = init_and_ingest(tmp_path, land, 80)
    assert data["timestamp"] == {
        "format": "sample_index",
        "sample_rate_hz": 12000,
        "start": "1970-01-01T00:00:00Z",
    }
    assert "position in its file is its sample index" in text
    assert [c["name"] for c in data["channels"]] == ["DE", "FE"]


def test_readme_facts_and_stem_patterns(tmp_path: Path):
    (tmp_path / "README.txt").write_text(
        "Sampled at 100 Hz. Columns: `ax`, `ay` and az (m/s^2); temp (degC); id (see notes)\n"
    )
    f = readme_facts(tmp_path)
    assert f.source == "README.txt" and f.rates == [100.0]
    assert f.units == {"ax": "m/s^2", "ay": "m/s^2", "az": "m/s^2", "temp": "degC"}
    assert stem_pattern(["s1_run02", "s12_run3"]) == r"^(?P<entity>s\d+_run\d+)"
    assert stem_pattern(["s1_run02", "pilot"]) == ".*"
    assert stem_pattern(["walk", "run"]) == ".*"


@pytest.mark.parametrize("delim", [";", "\t", "|"])
def test_delimiters_and_a_headerless_file_with_comments(tmp_path: Path, delim: str):
    land = tmp_path / "landing"
    body = "\n".join(r.replace(",", delim) for r in _wave(30))
    write_source(land / "x.csv", "# exported by logger v2\n" + body + "\n")
    data, text = init_and_ingest(tmp_path, land, 30)
    assert data["csv"]["header"] is False and data["csv"]["names"] == ["c0", "c1", "c2"]
    assert data["csv"]["comment_prefix"] == "#"
    assert data["csv"].get("delimiter", ",") == delim
    assert "TODO" in text


# ------------------------------------------------------------------------------------------------
# public datasets as downloaded: space-aligned text, .mat, .npy/.npz, .ts, wide UCR files


def test_space_aligned_turbofan_text_without_a_header(tmp_path: Path):
    """NASA turbofan layout: no header, single spaces, two trailing blanks per line; the first
    field a unit id constant over runs of rows, the second a cycle counting 1, 2, 3 per unit."""
    land = tmp_path / "landing"
    lines, rows = [], 0
    for unit in (1, 2, 3):
        for cyc in range(1, 21 + unit):
            rows += 1
            lines.append(
                f"{unit} {cyc} {np.sin(cyc / 3) * 1e-3:.4f} 100.0 518.67 "
                f"{642 + np.cos(cyc):.2f} {390 + cyc % 5} 8.4195  "
            )
    write_source(land / "train_FD001.txt", "\n".join(lines) + "\n")
    data, text = init_and_ingest(tmp_path, land, rows)
    assert data["csv"] == {
        "whitespace": True,
        "header": False,
        "names": [f"c{i}" for i in range(8)],
    }
    assert "TODO" in text.split("    names: [c0,")[1].splitlines()[0]
    assert data["entity"] == {"column": "c0"}
    assert data["timestamp"]["column"] == "c1"
    assert data["timestamp"]["format"] == "sample_index"
    assert "restarting per c0" in text and "constant over runs of rows" in text
    assert "label" not in data  # c6 (integers, row to row) is a reading, not a label
    assert "c6" in [c["name"] for c in data["channels"]]


def test_sniff_whitespace_and_headers():
    from cnnlstm.init import sniff

    d = sniff("  1.0  -2.5   3\n  2.0   4.5  -1\n  3.0   1.0   2\n")
    assert d.whitespace and not d.header and d.names == ["c0", "c1", "c2"]
    d = sniff("a b c\n1 2 3\n4 5 6\n")  # one space, no empty fields: the delimiter
    assert not d.whitespace and d.delimiter == " " and d.header
    d = sniff("x\ty\n1\t\n2\t3\n4\t5\n")  # empty cells of a TSV are values, not blanks
    assert not d.whitespace and d.delimiter == "\t"
    assert not sniff("1,2,3\n4,5,6\n").header  # a first line of numbers is data


def test_cwru_like_mat_files_get_a_rename_rule(tmp_path: Path):
    """CWRU layout: one .mat per recording, names prefixed with the file's number
    (X097_DE_time, X097RPM), the fault in the folder, the rate in a README."""
    import scipy.io

    land = tmp_path / "cwru"
    rng = np.random.default_rng(0)
    for folder, num, extra in (("normal", 97, False), ("inner_race", 105, True)):
        v = {
            f"X{num:03d}_DE_time": rng.normal(size=(64, 1)),
            f"X{num:03d}_FE_time": rng.normal(size=(64, 1)),
            f"X{num:03d}RPM": np.array([[1797.0 - num / 10]]),
        }
        if extra:
            v[f"X{num:03d}_BA_time"] = rng.normal(size=(64, 1))
        (land / folder).mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(land / folder / f"{num}.mat", v)
    (land / "README.txt").write_text("Drive end accelerometer data at 12000 Hz.\n")
    data, text = init_and_ingest(tmp_path, land, 128)
    assert data["include"] == ["*.mat"]
    assert data["rename"] == [{"pattern": r"^X\d+_?", "to": ""}]
    assert data["timestamp"] == {
        "format": "sample_index",
        "sample_rate_hz": 12000,
        "start": "1970-01-01T00:00:00Z",
    }
    assert data["entity"] == {"from_filename": r"^(?P<entity>\d+)"}
    assert [c["name"] for c in data["channels"]] == ["DE_time", "FE_time"]
    assert data["columns"] == {"RPM": "float"}
    assert data["label"] == {"column": "label", "dtype": "string", "default_from": "folder"}
    assert "BA_time (only in 1 of 2 files)" in text
    assert yaml.safe_load(text)["window"]["split"] == {"stratify": True}
    # 2.56 s at 12 kHz would be 30,720 samples: capped for a fast (vibration) signal
    assert yaml.safe_load(text)["window"]["size"] == 1024
    assert "at most 1024 samples" in text


def test_npz_prefixes_and_a_rate_held_in_the_files(tmp_path: Path):
    land = tmp_path / "landing"
    land.mkdir()
    rng = np.random.default_rng(1)
    for k in (1, 2):
        np.savez(
            land / f"rec{k}.npz",
            **{f"S{k}_acc": rng.normal(size=30), f"S{k}_gyr": rng.normal(size=(30, 2))},
            fs=np.array(50.0),
        )
    data, _ = init_and_ingest(tmp_path, land, 60)
    assert data["include"] == ["*.npz"]
    assert data["rename"] == [{"pattern": r"^S\d+_?", "to": ""}]
    assert [c["name"] for c in data["channels"]] == ["acc", "gyr_0", "gyr_1"]
    assert data["timestamp"] == {
        "format": "sample_index",
        "sample_rate_hz": 50,
        "start": "1970-01-01T00:00:00Z",
    }
    assert data["columns"] == {"fs": "float"}


def test_npy_arrays_are_channels_c0_c1(tmp_path: Path):
    land = tmp_path / "landing"
    land.mkdir()
    for k in (1, 2):
        np.save(land / f"run{k}.npy", np.random.default_rng(k).normal(size=(25, 2)))
    data, text = init_and_ingest(tmp_path, land, 50)
    assert data["include"] == ["*.npy"] and "rename" not in data
    assert [c["name"] for c in data["channels"]] == ["c0", "c1"]
    assert data["timestamp"]["format"] == "sample_index" and "column" not in data["timestamp"]
    assert "TODO" in text.split("    sample_rate_hz: 1")[1].splitlines()[0]
    assert data["entity"] == {"from_filename": r"^(?P<entity>run\d+)"}


def _ts(classes: bool, series: list[tuple[list[list[float]], str]]) -> str:
    head = ["# made by hand", "@problemName Vowels", "@timeStamps false", "@univariate false"]
    head += [f"@dimensions {len(series[0][0])}", "@equalLength false"]
    head += ["@classLabel true a b" if classes else "@targetLabel true", "@data"]
    lines = [
        ":".join(",".join(str(v) for v in dim) for dim in dims) + f":{y}" for dims, y in series
    ]
    return "\n".join(head + lines) + "\n"


def test_ts_files_of_series_with_a_split_in_the_name(tmp_path: Path):
    land = tmp_path / "vowels"
    rows = 0
    for split, n in (("TRAIN", 3), ("TEST", 2)):
        series = []
        for i in range(n):
            length = 4 + 2 * i
            rows += length
            series.append(([[i + j / 10 for j in range(length)]] * 2, "ab"[i % 2]))
        write_source(land / f"Vowels_{split}.ts", _ts(True, series))
    data, text = init_and_ingest(tmp_path, land, rows)
    assert data["include"] == ["*.ts"]
    assert data["path_columns"] == {"pattern": r"_(?P<split>TEST|TRAIN)\.[^/]*$"}
    assert data["entity"] == {"parts": ["file", "series"]}
    assert data["timestamp"] == {
        "column": "position",
        "format": "sample_index",
        "sample_rate_hz": 1,
        "start": "1970-01-01T00:00:00Z",
    }
    assert [c["name"] for c in data["channels"]] == ["dim_0", "dim_1"]
    assert data["label"] == {"column": "label", "dtype": "string"}
    win = yaml.safe_load(text)["window"]
    assert win["size"] == win["stride"] == 8 and win["short"] == "pad" and win["min_length"] == 4
    assert win["label"] == "entity"
    assert win["split"] == {
        "method": "column",
        "column": "split",
        "test_values": ["TEST"],
        "val_fraction": 0.2,
    }


def test_ts_regression_targets_are_a_float_label(tmp_path: Path):
    land = tmp_path / "landing"
    write_source(land / "prices.ts", _ts(False, [([[1.0, 2.0, 3.0]], "0.5"), ([[4.0, 5.0]], "2")]))
    data, text = init_and_ingest(tmp_path, land, 5)
    assert data["label"] == {"column": "label", "dtype": "float"}
    assert "label" not in yaml.safe_load(text)["window"]
    assert "regression target" in text


@pytest.mark.parametrize("layout", ["tsv", "txt"])
def test_wide_ucr_files_one_series_per_row(tmp_path: Path, layout: str):
    """UCR 2018 .tsv (tabs, NaN padding) and the older .txt (blank-aligned, classes written
    1.0000000e+00): one series per row, the class first."""
    land = tmp_path / "Coffee"
    rng = np.random.default_rng(3)
    rows = 0
    for split in ("TRAIN", "TEST"):
        lines = []
        for i in range(4):
            n = 60 - 3 * i if layout == "tsv" else 60
            rows += n
            vals = [f"{x: .7e}" for x in rng.normal(size=n)]
            if layout == "tsv":
                lines.append("\t".join([str(i % 2 + 1), *vals, *["NaN"] * (60 - n)]))
            else:
                lines.append(f"  {i % 2 + 1:.7e}  " + "  ".join(vals))
        write_source(land / f"Coffee_{split}.{layout}", "\n".join(lines) + "\n")
    data, text = init_and_ingest(tmp_path, land, rows)
    assert data["include"] == [f"*.{layout}"]
    assert data["wide"] == {}
    want = {"whitespace": True} if layout == "txt" else {"delimiter": "\t"}
    assert data["csv"] == {**want, "header": False, "names": ["class"]}
    assert data["entity"] == {"parts": ["file", "series"]}
    assert data["timestamp"]["column"] == "position"
    assert data["channels"] == [{"name": "value"}]
    assert data["label"] == {"column": "class", "dtype": "int"}
    win = yaml.safe_load(text)["window"]
    assert win["size"] == 60 and win["label"] == "entity"
    assert win["split"]["test_values"] == ["TEST"]


# ---- public datasets' quirks, generated: the draft ingests every row as written ----------------


def _wisdm_lines(users=(33, 17, 20), per=120, step_ns=50_000_000) -> list[str]:
    """WISDM v1.1-like rows: user, activity, a phone uptime in nanoseconds, x, y, z; one file
    holding every user, each user's activities in runs."""
    rng = np.random.default_rng(0)
    out, t = [], 49_105_962_326_000
    for u in users:
        for a in ("Walking", "Jogging", "Sitting", "Standing"):
            for _ in range(per):
                t += step_ns
                x, y, z = rng.normal(size=3) * 5
                out.append(f"{u},{a},{t},{x:.6f},{y:.6f},{z:.6f};")  # each record ends in ;
    return out


@pytest.mark.parametrize("readme", [True, False])
def test_wisdm_like_uptime_nanoseconds_and_a_user_column_over_activities(
    tmp_path: Path, readme: bool
):
    """One headerless file of all users, each record ended by `;` (csv.record_end): the
    activity (text) is the label, not the user id (an int that also holds over runs, but whose
    runs each span several activities): the user is the entity. The uptime in ns is no
    wall-clock epoch in ms (year 3526): read as ns, which the README's 20 Hz confirms (without
    it: the unit whose step gives 1 Hz-1 kHz, a TODO)."""
    land = tmp_path / "wisdm"
    lines = _wisdm_lines()
    write_source(land / "WISDM_ar_v1.1_raw.txt", "\n".join(lines) + "\n")
    if readme:
        (land / "readme.txt").write_text("Sampling rate: 20Hz (1 sample every 50ms)\n")
    data, text = init_and_ingest(tmp_path, land, len(lines))
    assert data["csv"]["record_end"] == ";"
    assert data["label"] == {"column": "c1", "dtype": "string"}
    assert data["entity"] == {"column": "c0"}
    assert data["timestamp"] == {"column": "c2", "format": "epoch_ns"}
    assert "(20 Hz)" in text
    assert ("TODO: 4.91" in text) is not readme  # the unit is a guess without the README
    assert [c["name"] for c in data["channels"]] == ["c3", "c4", "c5"]
    assert yaml.safe_load(text)["window"]["size"] == 51  # 2.56 s at 20 Hz


@pytest.mark.parametrize("readme", [True, False])
def test_daphnet_like_millisecond_time_steps_of_15_and_16(tmp_path: Path, readme: bool):
    """Time in ms from 0, 15 or 16 ms apart (64 Hz): no sample index (which rises by 1). The
    README's 64 Hz makes it milliseconds outright; without one it is a TODO."""
    land = tmp_path / "daphnet"
    for name in ("S01R01", "S02R01"):
        t = np.cumsum([15 if i % 8 in (0, 3, 5) else 16 for i in range(300)])
        lab = [1 if i < 150 else 2 for i in range(300)]
        rows = [
            f"{t[i]} {int(np.sin(i) * 500)} {int(np.cos(i) * 300)} {lab[i]}" for i in range(300)
        ]
        write_source(land / "dataset" / f"{name}.txt", "\n".join(rows) + "\n")
    if readme:
        (land / "README").write_text("Sampling rate 64 Hz; time of sample in millisecond.\n")
    data, text = init_and_ingest(tmp_path, land / "dataset", 600)
    assert data["timestamp"] == {"column": "c0", "format": "epoch_ms"}
    assert ("TODO: integers rising by 16" in text) is not readme
    assert data["label"]["column"] == "c3"


def test_pamap2_like_nan_cells_a_mostly_missing_column_and_a_label_late_in_the_file(
    tmp_path: Path,
):
    """Space-separated .dat files larger than the sampled head: the activity is 0 for the whole
    head and changes later (seen in lines from further into the file); `NaN` cells are missing
    values (csv.null_values), a heart rate missing in 90 % of the rows is no channel, and the
    channels with a few NaN are kept with allow_missing_channels and linear imputation."""
    land = tmp_path / "pamap2"
    rng = np.random.default_rng(1)
    n = 12_000  # about 1 MiB a file: the head (256 KiB) sees activity 0 only
    total = 0
    for s in (101, 102):
        rows = []
        for i in range(n):
            act = 0 if i < 6000 else 1 + (i - 6000) // 2000
            hr = f"{100 + i % 20}" if i % 10 == 0 else "NaN"
            v = rng.normal(size=12)
            cells = ["NaN" if (i % 997 == 5 and j == 2) else f"{x:.6f}" for j, x in enumerate(v)]
            rows.append(" ".join([f"{5.64 + i * 0.01:.2f}", str(act), hr, *cells]))
        write_source(land / "Protocol" / f"subject{s}.dat", "\n".join(rows) + "\n")
        total += n
    (land / "readme.pdf").write_bytes(b"%PDF")
    data, text = init_and_ingest(tmp_path, land, total)
    assert data["label"] == {"column": "c1", "dtype": "int"}
    assert data["csv"]["null_values"] == ["", "NaN"]
    names = [c["name"] for c in data["channels"]]
    assert "c2" not in names and names == [f"c{j}" for j in range(3, 15)]
    assert "c2 (missing in 90%" in text
    assert data["allow_missing_channels"] is True
    assert yaml.safe_load(text)["window"]["impute"] == "linear"


def _air_quality_lines(n: int = 120) -> list[str]:
    """UCI Air Quality-like: `;`-separated, decimal commas, a trailing `;;` on every line (two
    unnamed empty fields), -200 for a missing value, date and time in two columns."""
    out = ["Date;Time;CO(GT);PT08.S1(CO);NMHC(GT);T;RH;AH;;"]
    pt08 = np.random.default_rng(3).integers(700, 2000, size=n)
    for i in range(n):
        co, t, ah = 0.5 + i % 40 / 10, 10 + i % 17 / 2, 0.7 + i % 13 / 100
        nmhc = "-200" if i % 5 else "150"
        vals = [
            f"{co:.1f}",
            str(pt08[i]),
            nmhc,
            f"{t:.1f}",
            f"{40 + i % 30:.1f}",
            f"{ah:.4f}",
        ]
        date = f"{10 + i // 24:02d}/03/2004;{i % 24:02d}.00.00"
        out.append(date + ";" + ";".join(v.replace(".", ",") for v in vals) + ";;")
    return out


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252", "utf-16"])
def test_air_quality_like_decimal_commas_trailing_delimiters_and_encodings(
    tmp_path: Path, encoding: str
):
    """The `;` delimiter is chosen over `,` (which splits the data lines alike, through their
    decimal commas, but not the header), `decimal_comma: true`, the encoding named when not
    UTF-8, the unnamed empty fields left out, and -200 pointed out as a missing-value code.
    A closing line of empty fields only (`;;;;;;;;;`) is one quarantined row."""
    land = tmp_path / "air"
    lines = _air_quality_lines()
    text = "\n".join(lines) + "\n;;;;;;;;;\n"
    header = lines[0].replace("(GT)", "(µg/m³)") if encoding != "utf-8" else lines[0]
    text = text.replace(lines[0], header)
    write_source(land / "AirQualityUCI.csv", text.encode(encoding))
    out = tmp_path / "conf" / "air.yaml"
    r = run("init", str(land), "-o", str(out))
    assert r.exit_code == 0, r.output
    draft = out.read_text()
    data = yaml.safe_load(draft)["data"]
    assert data["csv"]["delimiter"] == ";" and data["csv"]["decimal_comma"] is True
    assert data["csv"].get("encoding", "utf-8") == encoding
    names = [c["name"] for c in data["channels"]]
    assert names[:2] == [header.split(";")[2], "PT08.S1(CO)"] and "AH" in names
    assert not any(n.startswith("unnamed") for n in names)
    assert "-200 in 80% of" in draft and "allow_missing_channels" not in data
    assert data["timestamp"] == {"column": ["Date", "Time"], "format": "%d/%m/%Y %H.%M.%S"}
    assert "label" not in data  # the date is no label once it is the time
    rep = ingest(load_config(out), [str(land)])
    t = rep.totals()
    assert (t["accepted"], t["quarantined"], t["rejected"]) == (120, 1, 0), draft


def test_household_power_like_day_first_date_and_time_columns_and_question_marks(tmp_path: Path):
    """`Date;Time;Global_active_power;...` with `16/12/2006;17:24:00;4.216` and `?` for a
    missing reading: the two columns joined under a day-first pattern, `?` read as missing."""
    land = tmp_path / "power"
    rows = ["Date;Time;Global_active_power;Voltage;Sub_metering_1"]
    for i in range(300):
        day, minute = 16 + i // 100, 24 + i % 100
        hhmm = f"{17 + minute // 60:02d}:{minute % 60:02d}:00"
        gap = i % 50 == 7
        vals = ["?", "?", "?"] if gap else [f"{4 + i % 7 / 10:.3f}", f"{234 + i % 5:.2f}", "0.000"]
        rows.append(f"{day}/12/2006;{hhmm};" + ";".join(vals))
    write_source(land / "household_power_consumption.txt", "\n".join(rows) + "\n")
    data, text = init_and_ingest(tmp_path, land, 300)
    assert data["timestamp"] == {"column": ["Date", "Time"], "format": "%d/%m/%Y %H:%M:%S"}
    assert data["csv"]["null_values"] == ["", "?"]
    assert data["allow_missing_channels"] is True
    assert [c["name"] for c in data["channels"]] == [
        "Global_active_power",
        "Voltage",
        "Sub_metering_1",
    ]


@pytest.mark.parametrize(
    ("written", "pattern", "ambiguous"),
    [
        ("12/{d:02d}/2006 5:{m:02d}:00 PM", "%m/%d/%Y %I:%M:%S %p", False),
        ("{d:02d}.03.2004 18:{m:02d}:00", "%d.%m.%Y %H:%M:%S", False),
        ("0{d1}/03/2004 18:{m:02d}", "%d/%m/%Y %H:%M", True),
    ],
)
def test_one_column_of_dates_written_another_way(
    tmp_path: Path, written: str, pattern: str, ambiguous: bool
):
    """A single time column in a logger's own format gets the strftime pattern that reads
    every value; day and month both <= 12 in the sample is a TODO (day or month first?)."""
    land = tmp_path / "log"
    lines = ["when,temp"]
    for i in range(120):
        d, m = 13 + i // 60, i % 60
        stamp = written.format(d=d, m=m, d1=1 + i // 60)
        lines.append(f"{stamp},{20 + np.sin(i / 5):.3f}")
    write_source(land / "log.csv", "\n".join(lines) + "\n")
    data, text = init_and_ingest(tmp_path, land, 120)
    assert data["timestamp"] == {"column": "when", "format": pattern}
    assert ("day or month first" in text) is ambiguous


def test_ims_like_snapshots_named_by_their_time_without_an_extension(tmp_path: Path):
    """NASA IMS bearing files: tab-separated numbers, no header, named `2004.02.12.10.32.39`
    (no data ending: `.39` is the seconds). They are found as text, included by `[0-9]*`, and
    each file is its own entity, the seconds kept in its id."""
    land = tmp_path / "ims" / "2nd_test"
    rng = np.random.default_rng(2)
    for name in ("2004.02.12.10.32.39", "2004.02.12.10.32.49", "2004.02.12.10.42.39"):
        x = rng.normal(size=(50, 4)) * 0.1
        write_source(land / name, "\n".join("\t".join(f"{v:.3f}" for v in r) for r in x) + "\n")
    (land.parent / "Readme Document for IMS Bearing Data.pdf").write_bytes(b"%PDF-1.4")
    (land.parent / "README.txt").write_text("Sampling rate is 20 kHz; 20480 points per file.\n")
    data, text = init_and_ingest(tmp_path, land.parent, 150)
    assert "[0-9]*" in data["include"]
    assert "3 files without a data ending" in text
    assert data["timestamp"]["format"] == "sample_index" and "column" not in data["timestamp"]
    assert data["timestamp"]["sample_rate_hz"] == 20000  # README: 20 kHz
    assert data["entity"] == {"from_filename": r"^(?P<entity>\d+\.\d+\.\d+\.\d+\.\d+\.\d+)"}
    lake = lake_frame(load_config(tmp_path / "conf" / "my.yaml"))
    assert sorted(lake["entity_id"].unique()) == [
        "2004.02.12.10.32.39",
        "2004.02.12.10.32.49",
        "2004.02.12.10.42.39",
    ]


def test_eeg_eye_state_like_arff_samples_at_a_stated_rate(tmp_path: Path):
    """An ARFF file of samples (14 numeric attributes, a nominal class last) and a README
    stating 128 Hz: time from each row's position, the nominal attribute as the label."""
    land = tmp_path / "eeg"
    names = ["AF3", "F7", "F3", "FC5", "T7", "P7", "O1"]
    head = ["% EEG", "@RELATION 'EEG_DATA'", ""] + [f"@ATTRIBUTE {n} NUMERIC" for n in names]
    rng = np.random.default_rng(4)
    rows = [
        ",".join(f"{4300 + v:.2f}" for v in rng.normal(size=len(names)) * 20) + f",{i // 100 % 2}"
        for i in range(400)
    ]
    text = "\n".join([*head, "@ATTRIBUTE eyeDetection {0,1}", "", "@DATA", *rows]) + "\n"
    write_source(land / "EEG Eye State.arff", text)
    (land / "README.txt").write_text("One continuous EEG measurement, 117 seconds (128 Hz).\n")
    data, _ = init_and_ingest(tmp_path, land, 400)
    assert data["include"] == ["*.arff"]
    assert data["timestamp"]["sample_rate_hz"] == 128 and "column" not in data["timestamp"]
    assert [c["name"] for c in data["channels"]] == names
    assert data["label"] == {"column": "eyeDetection", "dtype": "int"}


def test_ucr_univariate_arff_is_drafted_wide(tmp_path: Path):
    """UCR's ARFF downloads: att1..attN and the class last, one series per row, `_TRAIN` and
    `_TEST` files: `data.wide` with a value pattern, the split from the file name."""
    land = tmp_path / "coffee"
    rng = np.random.default_rng(5)
    for split in ("TRAIN", "TEST"):
        head = ["@relation Coffee"] + [f"@attribute att{j} numeric" for j in range(1, 61)]
        rows = [",".join(f"{v:.4f}" for v in rng.normal(size=60)) + f",{i % 2}" for i in range(6)]
        text = "\n".join([*head, "@attribute target {0,1}", "@data", *rows]) + "\n"
        write_source(land / f"Coffee_{split}.arff", text)
    data, text = init_and_ingest(tmp_path, land, 2 * 6 * 60)
    assert data["wide"] == {"value_pattern": r"^att\d+$"}
    assert data["label"] == {"column": "target", "dtype": "int"}
    assert data["entity"] == {"parts": ["file", "series"]}
    assert yaml.safe_load(text)["window"]["size"] == 60


def test_hhar_like_devices_interleaved_row_by_row_with_two_clocks_and_an_index(tmp_path: Path):
    """One CSV of two phones' samples interleaved row by row (HHAR's `Index, Arrival_Time,
    Creation_Time, x, y, z, User, Model, Device, gt`): a clock is the time, not the Index
    counter; the Device column is the entity (each phone its own stream); the index and the
    other clock are no channels."""
    land = tmp_path / "hhar"
    rows = ["Index,Arrival_Time,Creation_Time,x,y,z,User,Model,Device,gt"]
    rng = np.random.default_rng(6)
    for k in range(300):
        for j, (dev, user) in enumerate((("nexus4_1", "a"), ("s3_2", "b"))):
            gt = ["stand", "sit", "walk"][k // 100]
            x, y, z = rng.normal(size=3)
            arrival = 1_424_696_633_908 + k * 5 + j
            created = 1_424_696_631_913_248_572 + k * 5_000_000 + j * 1000
            rows.append(
                f"{2 * k + j},{arrival},{created},{x:.5f},{y:.5f},{z:.5f},{user},"
                f"{dev.split('_')[0]},{dev},{gt}"
            )
    write_source(land / "Phones_accelerometer.csv", "\n".join(rows) + "\n")
    data, text = init_and_ingest(tmp_path, land, 600)
    assert data["timestamp"] == {"column": "Arrival_Time", "format": "epoch_ms"}
    assert data["entity"] == {"column": "Device"}
    assert [c["name"] for c in data["channels"]] == ["x", "y", "z"]
    assert "Index (named and ordered as time too" in text
    assert data["label"] == {"column": "gt", "dtype": "string"}


def test_a_units_row_under_the_header_becomes_skip_after_header_and_channel_units(
    tmp_path: Path,
):
    land = tmp_path / "logger"
    for k in (1, 2):
        rows = ["Time,AccX,AccY,Temp", "s,g,g,degC"]
        rows += [
            f"{i * 0.01:.2f},{np.sin(i / 5):.4f},{np.cos(i / 7):.4f},{20 + i % 3}"
            for i in range(80)
        ]
        write_source(land / f"run{k}.csv", "\n".join(rows) + "\n")
    data, _ = init_and_ingest(tmp_path, land, 160)
    assert data["csv"] == {"skip_after_header": 1}
    assert data["channels"] == [
        {"name": "AccX", "unit": "g", "min": -16, "max": 16},
        {"name": "AccY", "unit": "g", "min": -16, "max": 16},
        {"name": "Temp", "unit": "degC"},
    ]
    assert data["timestamp"] == {"column": "Time", "format": "epoch_s"}


def test_units_in_the_header_names_phyphox_like(tmp_path: Path):
    """`"Time (s)","Linear Acceleration x (m/s^2)",...` (Phyphox, spreadsheet exports): the
    time unit from the name (no TODO), channels named plainly with the header as their source
    and the unit from the parentheses."""
    land = tmp_path / "phyphox"
    rows = ['"Time (s)","Linear Acceleration x (m/s^2)","Absolute acceleration [m/s^2]"']
    rows += [f"{i * 0.01:.9E},{np.sin(i / 5):.9E},{abs(np.sin(i / 3)):.9E}" for i in range(200)]
    write_source(land / "Raw Data.csv", "\n".join(rows) + "\n")
    data, text = init_and_ingest(tmp_path, land, 200)
    assert data["timestamp"] == {"column": "Time (s)", "format": "epoch_s"}
    assert "TODO: small non-integral" not in text
    assert data["channels"] == [
        {
            "name": "linear_acceleration_x",
            "source": "Linear Acceleration x (m/s^2)",
            "unit": "m/s^2",
            "min": -157,
            "max": 157,
        },
        {
            "name": "absolute_acceleration",
            "source": "Absolute acceleration [m/s^2]",
            "unit": "m/s^2",
            "min": -157,
            "max": 157,
        },
    ]


def test_a_large_decimal_comma_file_keeps_its_channels_numeric(tmp_path: Path):
    """Lines from further into a large file are read with the head's dialect, decimal commas
    included: the channels stay numeric (they became text with many values before)."""
    land = tmp_path / "air"
    lines = _air_quality_lines(14_000)  # about 700 KiB: beyond the 256 KiB head
    write_source(land / "AirQualityUCI.csv", "\n".join(lines) + "\n")
    out = tmp_path / "conf" / "air.yaml"
    r = run("init", str(land), "-o", str(out))
    assert r.exit_code == 0, r.output
    data = yaml.safe_load(out.read_text())["data"]
    assert [c["name"] for c in data["channels"]] == [
        "CO(GT)",
        "PT08.S1(CO)",
        "NMHC(GT)",
        "T",
        "RH",
        "AH",
    ]


def test_cinc_like_mat_files_with_a_headerless_reference_table(tmp_path: Path):
    """One `.mat` per recording (variable `val`, 1 x N) and `REFERENCE.csv` of `A00001,N`
    lines beside them (PhysioNet/CinC 2017): the label comes from that table by file name."""
    sio = pytest.importorskip("scipy.io")
    land = tmp_path / "training2017"
    land.mkdir()
    rng = np.random.default_rng(7)
    ref = []
    for i in range(1, 7):
        name = f"A{i:05d}"
        sio.savemat(
            land / f"{name}.mat", {"val": (rng.normal(size=(1, 90)) * 100).astype(np.int16)}
        )
        (land / f"{name}.hea").write_text(f"{name} 1 300 90\n")
        ref.append(f"{name},{'NAO~'[i % 4]}")
    (land / "REFERENCE.csv").write_text("\n".join(ref) + "\n")
    (land / "README.txt").write_text("ECG recordings sampled at 300 Hz.\n")
    data, _ = init_and_ingest(tmp_path, land, 6 * 90)
    assert data["label"] == {
        "column": "label",
        "dtype": "string",
        "table": {
            "path": "../training2017/REFERENCE.csv",
            "names": ["record", "class"],
            "key": "record",
            "value": "class",
            "match": "file",
        },
    }
    lake = lake_frame(load_config(tmp_path / "conf" / "my.yaml"))
    firsts = lake.group_by("entity_id").agg(pl.col("label").first()).sort("entity_id")
    assert firsts["label"].to_list() == ["A", "O", "~", "N", "A", "O"]
