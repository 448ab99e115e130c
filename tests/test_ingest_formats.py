"""Landing files without a time column and in array formats: timestamps from each row's position
(``timestamp.format: sample_index`` without a column), MATLAB ``.mat`` (v4/v5), NumPy ``.npy`` and
``.npz``, and ``data.rename`` of source column names. Real files written with scipy/numpy, read
back through the whole ingest path; exact values."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import lake_frame, make_config, quarantine_frame, write_source

from cnnlstm.config import ConfigError
from cnnlstm.ingest import ingest, mapping_fingerprint

scipy_io = pytest.importorskip("scipy.io")

START = datetime(2024, 1, 1, tzinfo=UTC)


def _at(*us: int) -> list[datetime]:
    return [START + timedelta(microseconds=u) for u in us]


def _by_position(rate: float = 12000) -> dict:
    return {"column": None, "format": "sample_index", "sample_rate_hz": rate, "start": "2024-01-01"}


# ------------------------------------------------------------------ (a) time from the row position


def test_sample_index_without_a_column_numbers_rows_by_position(tmp_path: Path):
    """Row i of a file (0-based) is at start + i / rate; a quarantined row keeps its place, so
    the rows after it keep theirs. 1/12000 s is 83.33 us: rounded to the microsecond."""
    src = write_source(
        tmp_path / "rec.csv",
        "a,b\n1.5,2.0\nbad,3.0\n4.0,5.0\n6.0,7.0,8.0\n9.0,1.0\n",  # row 2 unparseable, 4 ragged
    )
    cfg = make_config(
        tmp_path,
        data={
            "entity": {"column": None, "constant": "s1"},
            "timestamp": _by_position(),
            "channels": [{"name": "a"}, {"name": "b"}],
            "label": None,
        },
    )
    (rep,) = ingest(cfg, [str(src)]).files
    assert (rep.outcome, rep.rows_read, rep.accepted, rep.quarantined) == ("committed", 5, 3, 2)
    df = lake_frame(cfg)
    assert df["entity_id"].to_list() == ["s1"] * 3
    assert df["timestamp"].to_list() == _at(0, 167, 333)  # positions 0, 2, 4 (of 12000 Hz)
    assert df["a"].to_list() == [1.5, 4.0, 9.0] and df["b"].to_list() == [2.0, 5.0, 1.0]
    q = quarantine_frame(cfg)
    assert q["source_row"].to_list() == [2, 4]


def test_sample_index_by_position_in_parquet_and_per_file(tmp_path: Path):
    """Each file counts from its own first row (so each file is its own entity here)."""
    land = tmp_path / "landing"
    write_source(land / "r1.parquet", {"a": [1.0, 2.0, 3.0]})
    write_source(land / "r2.parquet", {"a": [4.0, 5.0]})
    cfg = make_config(
        tmp_path,
        data={
            "entity": {"column": None, "from_filename": ".*"},
            "timestamp": _by_position(rate=4),
            "channels": [{"name": "a"}],
            "label": None,
        },
    )
    rep = ingest(cfg, [str(land)])
    assert rep.clean and rep.totals()["accepted"] == 5
    df = lake_frame(cfg)
    assert df["entity_id"].to_list() == ["r1"] * 3 + ["r2"] * 2
    assert df["timestamp"].to_list() == _at(0, 250_000, 500_000, 0, 250_000)
    assert df["a"].to_list() == [1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize("fmt", ["iso", "epoch_s", "epoch_ns"])
def test_only_sample_index_may_omit_the_timestamp_column(tmp_path: Path, fmt: str):
    with pytest.raises(ConfigError, match=r"data\.timestamp\.column is required with format"):
        make_config(tmp_path, data={"timestamp": {"column": None, "format": fmt}})


def test_the_position_form_is_its_own_mapping(tmp_path: Path):
    """Reading time from a column or from the position gives other rows: other fingerprints."""
    by_col = make_config(tmp_path, data={"timestamp": {**_by_position(), "column": "time"}})
    by_pos = make_config(tmp_path, data={"timestamp": _by_position()})
    assert mapping_fingerprint(by_col.data) != mapping_fingerprint(by_pos.data)
    assert "time" not in by_pos.data.required_source_columns()


# ------------------------------------------------------------------ (b) MATLAB .mat and data.rename

DE = [0.5, -0.25, 0.125, 1.0, -1.5, 2.0]  # exact in float32
FE = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
CWRU_RENAME = [{"pattern": r"^X\d+_", "to": ""}, {"pattern": r"^X\d+RPM$", "to": "RPM"}]


def _col(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)[:, None]  # N x 1, as MATLAB saves a column


def _mat(path: Path, variables: dict, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy_io.savemat(str(path), variables, **kw)
    return path


def _cwru_config(tmp_path: Path, land: Path, **data) -> object:
    return make_config(
        tmp_path,
        data={
            "landing": str(land),
            "include": ["*.mat"],
            "rename": CWRU_RENAME,
            "entity": {"column": None, "from_filename": ".*"},
            "timestamp": _by_position(12000),
            "channels": [{"name": "DE_time"}, {"name": "FE_time"}],
            "columns": {"RPM": "float"},
            "path_columns": {"pattern": r"(?P<condition>normal|inner_race)/"},
            "label": {"column": "label", "dtype": "string", "default_from": "condition"},
            **data,
        },
    )


def test_cwru_like_mat_files_with_per_file_prefixes(tmp_path: Path):
    """Two CWRU-style files (prefixes X097, X098), renamed to DE_time/FE_time/RPM, time from the
    row position at 12 kHz, the label from the folder: exact rows."""
    land = tmp_path / "landing"
    _mat(
        land / "normal" / "97.mat",
        {
            "X097_DE_time": _col(DE),
            "X097_FE_time": _col(FE),
            "X097RPM": np.array([[1797.0]]),
            "X097_BA_time": _col([9.0, 9.0, 9.0, 9.0]),  # another length: left out, noted
            "info": "drive end, 12k",  # text: left out, noted
        },
    )
    _mat(
        land / "inner_race" / "105.mat",
        {
            "X105_DE_time": _col(DE[::-1]),
            "X105_FE_time": _col(FE[::-1]),
            "X105RPM": np.array([[1772]], dtype=np.int16),
        },
        do_compression=True,  # v7 (compressed v5)
    )
    cfg = _cwru_config(tmp_path, land)
    rep = ingest(cfg, [str(land)])
    assert rep.clean, rep.to_dict()
    by_name = {f.name: f for f in rep.files}
    assert by_name["97.mat"].accepted == 6 and by_name["105.mat"].accepted == 6
    assert by_name["97.mat"].notes == [
        "left out: 'X097_BA_time' (4 rows, the file's columns have 6); 'info' (text)",
        "renamed by data.rename: X097_DE_time -> DE_time, X097_FE_time -> FE_time, X097RPM -> RPM",
    ]
    df = lake_frame(cfg)
    steps = _at(0, 83, 167, 250, 333, 417)  # k / 12000 s, to the microsecond
    assert df["entity_id"].to_list() == ["105"] * 6 + ["97"] * 6
    assert df["timestamp"].to_list() == steps + steps
    assert df["DE_time"].to_list() == DE[::-1] + DE
    assert df["FE_time"].to_list() == FE[::-1] + FE
    assert df["RPM"].to_list() == [1772.0] * 6 + [1797.0] * 6
    assert df["label"].to_list() == ["inner_race"] * 6 + ["normal"] * 6
    assert df["condition"].to_list() == ["inner_race"] * 6 + ["normal"] * 6


def test_mat_v4_an_n_by_k_array_and_a_constant_label(tmp_path: Path):
    src = _mat(
        tmp_path / "rec.mat",
        {"acc": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), "fs": np.array([[100.0]])},
        format="4",
    )
    cfg = make_config(
        tmp_path,
        data={
            "entity": {"column": None, "constant": "imu"},
            "timestamp": _by_position(100),
            "channels": [{"name": "x", "source": "acc_0"}, {"name": "z", "source": "acc_2"}],
            "columns": {"fs": "float"},
            "label": {"column": "label", "dtype": "int", "default": 3},
        },
    )
    (rep,) = ingest(cfg, [str(src)]).files
    assert (rep.outcome, rep.accepted, rep.notes) == ("committed", 2, [])
    df = lake_frame(cfg)
    assert df["timestamp"].to_list() == _at(0, 10_000)
    assert df["x"].to_list() == [1.0, 4.0] and df["z"].to_list() == [3.0, 6.0]
    assert df["fs"].to_list() == [100.0, 100.0] and df["label"].to_list() == [3, 3]


def _one(cfg, path: Path):
    (rep,) = ingest(cfg, [str(path)]).files
    return rep


def _array_config(tmp_path: Path, channels: list[str], **data) -> object:
    return make_config(
        tmp_path,
        data={
            "entity": {"column": None, "constant": "s"},
            "timestamp": _by_position(2),
            "channels": [{"name": c} for c in channels],
            "label": None,
            **data,
        },
    )


def test_a_v73_mat_file_is_rejected_with_advice(tmp_path: Path):
    pytest.importorskip("scipy")
    try:
        import h5py  # noqa: F401

        pytest.skip("h5py is installed: v7.3 files are read")
    except ImportError:
        pass
    head = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 "
    body = head.ljust(512, b" ") + b"\x89HDF\r\n\x1a\n" + b"\0" * 64
    src = write_source(tmp_path / "big.mat", body)
    rep = _one(_array_config(tmp_path, ["DE_time"]), src)
    assert rep.outcome == "rejected"
    assert rep.reason == (
        "MATLAB v7.3 file (HDF5): not readable without the h5py package; save it with "
        "save(..., '-v7') in MATLAB, or convert it (e.g. to .npz or CSV)"
    )


@pytest.mark.parametrize("cut", [10, 200, -20])
def test_a_truncated_mat_file_is_rejected(tmp_path: Path, cut: int):
    full = _mat(tmp_path / "full.mat", {"DE_time": _col(DE * 10)})
    src = write_source(tmp_path / "cut.mat", full.read_bytes()[:cut])
    rep = _one(_array_config(tmp_path, ["DE_time"]), src)
    assert rep.outcome == "rejected"
    assert rep.reason.startswith("corrupt or truncated MATLAB file: "), rep.reason


def test_a_mat_file_that_crashes_scipy_rejects_only_that_file(tmp_path: Path):
    """A data tag with element type 8 (a NULL slot of scipy's type table) makes scipy's reader
    segfault (scipy PR 25349): the reader runs in a child process, so the file is rejected with
    the reason and the next file of the batch is read."""
    land = tmp_path / "landing"
    good = _mat(land / "a_good.mat", {"DE_time": _col(DE)})
    data = bytearray(good.read_bytes())
    at = data.find(struct.pack("<II", 9, 8 * len(DE)))  # the real part's tag: miDOUBLE, 48 bytes
    assert at > 0
    data[at : at + 4] = struct.pack("<I", 8)
    write_source(land / "b_bad.mat", bytes(data))
    _mat(land / "c_good.mat", {"DE_time": _col(DE[::-1])})
    cfg = _array_config(tmp_path, ["DE_time"], entity={"column": None, "from_filename": ".*"})
    rep = ingest(cfg, [str(land)])
    assert [(f.name, f.outcome) for f in rep.files] == [
        ("a_good.mat", "committed"),
        ("b_bad.mat", "rejected"),
        ("c_good.mat", "committed"),
    ]
    assert rep.files[1].reason.startswith("corrupt MATLAB file: scipy's .mat reader crashed on it")


def test_a_rename_collision_rejects_the_file_naming_both(tmp_path: Path):
    src = _mat(tmp_path / "two.mat", {"X097_DE_time": _col(DE), "X098_DE_time": _col(DE)})
    cfg = _array_config(tmp_path, ["DE_time"], rename=CWRU_RENAME)
    rep = _one(cfg, src)
    assert rep.outcome == "rejected"
    assert rep.reason == (
        "data.rename gives two columns the name 'DE_time': 'X097_DE_time' and 'X098_DE_time'"
    )


def test_rename_applies_to_csv_headers_and_is_in_the_fingerprint(tmp_path: Path):
    src = write_source(tmp_path / "a.csv", "dev,T,Sensor_a,Sensor_b,y\nd1,0,1.5,2.5,1\n")
    over = {"rename": [{"pattern": "^Sensor_", "to": "ch_"}, {"pattern": "^T$", "to": "time"}]}
    cfg = make_config(
        tmp_path,
        data={
            **over,
            "entity": {"column": "dev"},
            "timestamp": {"column": "time", "format": "epoch_s"},
            "label": {"column": "y"},
        },
    )
    rep = _one(cfg, src)
    assert rep.outcome == "committed" and rep.accepted == 1, rep.reason
    df = lake_frame(cfg)
    assert df.select("entity_id", "ch_a", "ch_b", "label").rows() == [("d1", 1.5, 2.5, 1)]
    assert rep.notes == ["renamed by data.rename: T -> time, Sensor_a -> ch_a, Sensor_b -> ch_b"]
    plain = make_config(tmp_path)
    assert mapping_fingerprint(make_config(tmp_path, data=over).data) != mapping_fingerprint(
        plain.data
    )


@pytest.mark.parametrize(
    ("rule", "why"),
    [({"pattern": "(", "to": ""}, "is not valid"), ({"pattern": "a", "to": r"\2"}, "is not valid")],
)
def test_a_bad_rename_rule_is_a_config_error(tmp_path: Path, rule: dict, why: str):
    with pytest.raises(ConfigError, match=why):
        make_config(tmp_path, data={"rename": [rule]})


# ------------------------------------------------------------------ (c) NumPy .npy / .npz


def test_npy_two_dimensional_gives_c0_to_ck(tmp_path: Path):
    src = tmp_path / "acc.npy"
    np.save(src, np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]], dtype=np.float32))
    cfg = _array_config(tmp_path, ["c0", "c1"])
    rep = _one(cfg, src)
    assert (rep.outcome, rep.accepted) == ("committed", 3), rep.reason
    df = lake_frame(cfg)
    assert df["timestamp"].to_list() == _at(0, 500_000, 1_000_000)
    assert df["c0"].to_list() == [1.0, 2.0, 3.0] and df["c1"].to_list() == [10.0, 20.0, 30.0]


def test_npy_one_dimensional_is_value_and_fortran_order_is_kept(tmp_path: Path):
    one = tmp_path / "v.npy"
    np.save(one, np.array([4, 5, 6], dtype=">i4"))  # big-endian ints
    cfg = _array_config(tmp_path / "one", ["value"])
    assert _one(cfg, one).accepted == 3
    assert lake_frame(cfg)["value"].to_list() == [4.0, 5.0, 6.0]
    two = tmp_path / "f.npy"
    np.save(two, np.asfortranarray(np.array([[1.0, 2.0], [3.0, 4.0]])))
    cfg2 = _array_config(tmp_path / "two", ["c0", "c1"])
    assert _one(cfg2, two).accepted == 2
    df = lake_frame(cfg2)
    assert df["c0"].to_list() == [1.0, 3.0] and df["c1"].to_list() == [2.0, 4.0]


def test_npy_structured_array_gives_one_column_per_field(tmp_path: Path):
    rec = np.array(
        [("u1", 0.5, 1), ("u1", 1.5, 0), ("u2", 2.5, 1)],
        dtype=[("unit", "U4"), ("temp", "<f8"), ("state", "<i2")],
    )
    src = tmp_path / "log.npy"
    np.save(src, rec)
    cfg = make_config(
        tmp_path,
        data={
            "entity": {"column": "unit"},
            "timestamp": _by_position(1),
            "channels": [{"name": "temp"}],
            "label": {"column": "state", "dtype": "int"},
        },
    )
    rep = _one(cfg, src)
    assert (rep.outcome, rep.accepted) == ("committed", 3), rep.reason
    df = lake_frame(cfg)
    assert df.select("entity_id", "temp", "label").rows() == [
        ("u1", 0.5, 1),
        ("u1", 1.5, 0),
        ("u2", 2.5, 1),
    ]
    assert df["timestamp"].to_list() == _at(0, 1_000_000, 2_000_000)  # position in the file


def test_npz_arrays_are_variables(tmp_path: Path):
    src = tmp_path / "run.npz"
    np.savez_compressed(
        src,
        X1_acc=np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
        X1_gyro=np.array([0.25, 0.5, 0.75]),
        X1_rate=np.array(50.0),
        X1_names=np.array(["a", "b", "c"]),  # text: left out
        X1_short=np.array([1.0, 2.0]),  # another length: left out
    )
    cfg = _array_config(
        tmp_path,
        ["acc_0", "acc_1", "gyro"],
        rename=[{"pattern": r"^X\d+_", "to": ""}],
        columns={"rate": "float"},
        label={"column": "label", "dtype": "string", "default": "walk"},
    )
    rep = _one(cfg, src)
    assert (rep.outcome, rep.accepted) == ("committed", 3), rep.reason
    assert rep.notes[0] == (
        "left out: 'X1_names' (<U1 values, not real numbers); "
        "'X1_short' (2 rows, the file's columns have 3)"
    )
    df = lake_frame(cfg)
    assert df.select("acc_0", "acc_1", "gyro", "rate", "label").rows() == [
        (1.0, 2.0, 0.25, 50.0, "walk"),
        (3.0, 4.0, 0.5, 50.0, "walk"),
        (5.0, 6.0, 0.75, 50.0, "walk"),
    ]


class _Boom:
    """Unpickling this would run code: the test fails if it ever is."""

    def __reduce__(self):
        return (pytest.fail, ("an object array was unpickled",))


def test_an_object_npy_is_rejected_without_unpickling(tmp_path: Path):
    src = tmp_path / "obj.npy"
    np.save(src, np.array([_Boom(), 1.0], dtype=object), allow_pickle=True)
    rep = _one(_array_config(tmp_path, ["value"]), src)
    assert rep.outcome == "rejected"
    assert rep.reason == (
        "the .npy array holds Python objects (dtype object): refused, loading it would run "
        "pickle; save numbers (or text in a structured array) instead"
    )


def test_an_object_member_of_an_npz_is_left_out_unloaded(tmp_path: Path):
    src = tmp_path / "mix.npz"
    np.savez(src, a=np.array([1.0, 2.0]), o=np.array([_Boom(), 2], dtype=object))
    rep = _one(_array_config(tmp_path, ["a"]), src)
    assert (rep.outcome, rep.accepted) == ("committed", 2), rep.reason
    assert rep.notes == [
        "left out: 'o' (Python objects (dtype object): not loaded, that would run pickle)"
    ]


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
@pytest.mark.parametrize("cut", [5, 60, -3])
def test_truncated_numpy_files_are_rejected(tmp_path: Path, suffix: str, cut: int):
    full = tmp_path / f"full{suffix}"
    arr = np.arange(40, dtype=np.float64)
    np.save(full, arr) if suffix == ".npy" else np.savez(full, value=arr)
    src = write_source(tmp_path / f"cut{suffix}", full.read_bytes()[:cut])
    rep = _one(_array_config(tmp_path, ["value"]), src)
    assert rep.outcome == "rejected", rep
    assert rep.reason.startswith(("corrupt", "truncated")), rep.reason
    assert "unexpected error" not in rep.reason


def test_npy_rows_over_the_cap_are_rejected_before_decoding(tmp_path: Path):
    src = tmp_path / "long.npy"
    np.save(src, np.zeros(50))
    cfg = _array_config(tmp_path, ["value"])
    cfg.lake.max_rows_per_file = 10
    rep = _one(cfg, src)
    assert rep.reason == ".npy array has 50 rows, over lake.max_rows_per_file=10"


def test_the_default_include_takes_the_array_formats(tmp_path: Path):
    land = tmp_path / "landing"
    land.mkdir()
    np.save(land / "a.npy", np.array([1.0, 2.0]))
    np.savez(land / "b.npz", value=np.array([3.0, 3.5]))
    _mat(land / "c.mat", {"value": _col([4.0, 5.0])})
    cfg = _array_config(tmp_path, ["value"], entity={"column": None, "from_filename": ".*"})
    rep = ingest(cfg, [str(land)])
    assert sorted(f.name for f in rep.files) == ["a.npy", "b.npz", "c.mat"]
    assert rep.clean and rep.totals()["accepted"] == 6
