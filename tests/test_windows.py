"""Windowing, label strategies, splits and normalisation: tiny hand-made inputs with exact
expected outputs, plus hypothesis properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest_train import make_readings
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlstm.window_config import SplitConfig, WindowConfig
from cnnlstm.windows import (
    Batches,
    Windows,
    build_windows,
    fit_normalizer,
    plan_split,
    split_windows,
)

US = 1_000_000  # microseconds per second


def wcfg(**kw) -> WindowConfig:
    return WindowConfig(**({"size": 4, "stride": 3, "label": "last"} | kw))


def test_sliding_windows_exact():
    sig = np.arange(10, dtype=np.float32)
    df = make_readings({"a": np.stack([sig, 10 * sig], 1)}, labels={"a": [0] * 10})
    ws = build_windows(df, ["c0", "c1"], wcfg())
    w = ws.windows
    assert w.x.shape == (3, 2, 4) and w.x.dtype == np.float32
    np.testing.assert_array_equal(w.x[:, 0], [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
    np.testing.assert_array_equal(w.x[:, 1], 10 * w.x[:, 0])
    np.testing.assert_array_equal(w.lengths, [4, 4, 4])
    np.testing.assert_array_equal(w.start, [0, 3 * US, 6 * US])
    np.testing.assert_array_equal(w.end, [3 * US, 6 * US, 9 * US])
    assert w.entity.tolist() == ["a", "a", "a"]


def test_gap_splits_stream_and_no_window_spans_it():
    ms = np.r_[np.arange(5), np.arange(10, 15)] * 1000
    df = make_readings({"a": np.arange(10.0)}, labels={"a": [1] * 10}, timestamps={"a": ms})
    w = build_windows(df, ["c0"], wcfg(size=3, stride=1)).windows
    assert len(w) == 6  # 3 per 5-sample piece
    assert ((w.end - w.start) == 2 * US).all()
    np.testing.assert_array_equal(w.x[:, 0, 0], [0, 1, 2, 5, 6, 7])


def test_short_piece_padded_with_length_or_dropped():
    df = make_readings(
        {"a": np.arange(6.0), "b": np.array([7.0, 8.0])}, labels={"a": [1] * 6, "b": [2, 2]}
    )
    w = build_windows(df, ["c0"], wcfg(size=4, stride=2, short="pad")).windows
    b = w.entity == "b"
    assert b.sum() == 1
    np.testing.assert_array_equal(w.x[b][0, 0], [7, 8, 0, 0])
    assert w.lengths[b].tolist() == [2]
    assert w.end[b].tolist() == [1 * US]
    w2 = build_windows(df, ["c0"], wcfg(size=4, stride=2, short="drop")).windows
    assert set(w2.entity.tolist()) == {"a"} and len(w2) == 2


def test_label_strategies():
    lab = [1, 1, 1, 2, 2, 2, 2, 2]
    df = make_readings({"a": np.arange(8.0)}, labels={"a": lab})
    maj = build_windows(df, ["c0"], wcfg(stride=4, label="majority"))
    assert maj.classes == [1, 2]
    np.testing.assert_array_equal(maj.windows.y, [0, 1])
    pure = build_windows(df, ["c0"], wcfg(stride=4, label="majority", min_purity=0.8))
    np.testing.assert_array_equal(pure.windows.y, [1])  # the 75 % window is dropped
    last = build_windows(df, ["c0"], wcfg(stride=4, label="last"))
    np.testing.assert_array_equal(last.windows.y, [1, 1])

    anom = make_readings({"a": np.arange(8.0)}, labels={"a": [0, 0, 1, 0, 0, 0, 0, 0]})
    ap = build_windows(anom, ["c0"], wcfg(stride=4, label="any_positive"))
    np.testing.assert_array_equal(ap.windows.y, [1, 0])
    assert ap.class_names == ["normal", "anomaly"]

    two = make_readings(
        {"a": np.arange(8.0), "b": np.arange(8.0)},
        labels={"a": [3, 3, 3, 3, 3, 4, 4, 4], "b": [4] * 8},
    )
    ent = build_windows(two, ["c0"], wcfg(stride=4, label="entity"))
    np.testing.assert_array_equal(ent.windows.y, [0, 0, 1, 1])  # a -> 3 (class 0), b -> 4


def test_drop_labels_and_classes():
    df = make_readings({"a": np.arange(12.0)}, labels={"a": [0] * 4 + [5] * 4 + [6] * 4})
    ws = build_windows(df, ["c0"], wcfg(stride=4, label="majority", drop_labels=[0]))
    assert ws.classes == [5, 6]
    np.testing.assert_array_equal(ws.windows.y, [0, 1])
    ws6 = build_windows(df, ["c0"], wcfg(stride=4, label="majority", classes=[6]))
    np.testing.assert_array_equal(ws6.windows.y, [0])
    with pytest.raises(ValueError, match="window.classes"):
        build_windows(df, ["c0"], wcfg(stride=4, label="majority", classes=[9]))


def test_string_labels_and_names():
    df = make_readings({"a": np.arange(8.0)}, labels={"a": ["run"] * 4 + ["sit"] * 4})
    ws = build_windows(df, ["c0"], wcfg(stride=4, label="majority"))
    assert ws.classes == ["run", "sit"]
    np.testing.assert_array_equal(ws.windows.y, [0, 1])


def test_regression_target_at_window_end():
    df = make_readings({"a": np.arange(10.0)}, extra={"a": {}})
    df = df.with_columns(rul=(100 - df["c0"]).cast(float))
    ws = build_windows(df, ["c0"], wcfg(label="regression_end", target_column="rul"))
    np.testing.assert_array_equal(ws.windows.y[:, 0], [97, 94, 91])
    assert ws.windows.y.shape == (3, 1)


def test_forecast_targets_are_next_h_values():
    sig = np.arange(10.0)
    df = make_readings({"a": np.stack([sig, -sig], 1)})
    ws = build_windows(df, ["c0", "c1"], wcfg(label="forecast", horizon=2, target_channels=["c1"]))
    w = ws.windows
    # windows need 4 + 2 rows: starts 0 and 3
    np.testing.assert_array_equal(w.x[:, 0, 0], [0, 3])
    assert w.y.shape == (2, 2, 1)
    np.testing.assert_array_equal(w.y[:, :, 0], [[-4, -5], [-7, -8]])
    np.testing.assert_array_equal(w.end, [5 * US, 8 * US])  # covers the targets


def test_resampling_to_fixed_rate_is_linear():
    ms = np.array([0, 1000, 3000, 4000])
    df = make_readings(
        {"a": np.array([0.0, 10.0, 30.0, 40.0])}, labels={"a": [1, 1, 2, 2]}, timestamps={"a": ms}
    )
    w = build_windows(
        df, ["c0"], wcfg(size=5, stride=5, sample_rate_hz=2.0, gap_tolerance_s=5.0)
    ).windows
    assert len(w) == 1  # 9 samples on the 0.5 s grid -> one window of 5
    np.testing.assert_allclose(w.x[0, 0], [0, 5, 10, 15, 20])
    np.testing.assert_array_equal(w.y, [0])


def _multi_entity(n_ent=6, T=40, **extra):
    sigs = {f"e{i}": np.arange(T, dtype=np.float32) + 100 * i for i in range(n_ent)}
    labs = {e: [1] * T for e in sigs}
    return make_readings(sigs, labels=labs, extra=extra or None)


def test_entity_split_disjoint_and_covers():
    df = _multi_entity(10)
    ws = build_windows(df, ["c0"], wcfg(size=5, stride=5))
    parts = split_windows(
        ws,
        plan_split(ws, SplitConfig(method="entity", val_fraction=0.2, test_fraction=0.2, seed=3)),
    )
    ents = [set(parts[p].entity.tolist()) for p in ("train", "val", "test")]
    assert not (ents[0] & ents[1]) and not (ents[0] & ents[2]) and not (ents[1] & ents[2])
    assert sum(len(parts[p]) for p in parts) == len(ws.windows)
    assert len(ents[2]) == 2 and len(ents[1]) == 2


def _users_by_part(n_ent: int, cfg: SplitConfig) -> dict[str, set[int]]:
    """Entities e0.. with 2 per user; e0 and e1 (user 0) are the test split."""
    extra = {f"e{i}": {"split": "test" if i < 2 else "train", "user": i // 2} for i in range(n_ent)}
    df = _multi_entity(n_ent, **extra)
    ws = build_windows(df, ["c0"], wcfg(size=5, stride=5), entity_columns=["split", "user"])
    parts = split_windows(ws, plan_split(ws, cfg))
    return {
        p: {ws.entity_meta[e]["user"] for e in set(parts[p].entity.tolist())}
        for p in ("train", "val", "test")
    }


def test_column_split_with_grouped_validation():
    cfg = SplitConfig(method="column", val_fraction=0.34, val_group_column="user")
    users = _users_by_part(8, cfg)
    assert users["test"] == {0}
    assert users["val"] and not (users["train"] & users["val"])


def test_cross_validation_folds_partition_the_training_groups():
    # 10 entities, 2 per user: users 0 (test) and 1-4 (training); 3 folds over users 1-4
    val_users = []
    for k in range(3):
        cfg = SplitConfig(method="column", val_group_column="user", val_folds=3, val_fold=k)
        users = _users_by_part(10, cfg)
        assert users["test"] == {0}
        assert users["val"] and not (users["train"] & users["val"])
        assert users["train"] | users["val"] == {1, 2, 3, 4}
        val_users.append(users["val"])
    # every training user is validation in exactly one fold; fold sizes differ by at most one
    assert sorted(u for s in val_users for u in s) == [1, 2, 3, 4]
    assert sorted(len(s) for s in val_users) == [1, 1, 2]
    with pytest.raises(ValueError, match="val_fold=3 must be < val_folds=3"):
        SplitConfig(method="column", val_folds=3, val_fold=3)
    with pytest.raises(ValueError, match="only 4 training groups"):
        _users_by_part(10, SplitConfig(method="column", val_group_column="user", val_folds=5))


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(8, 60), min_size=1, max_size=4),
    size=st.integers(2, 8),
    stride=st.integers(1, 5),
    purge=st.integers(0, 5),
    val=st.floats(0.0, 0.3),
    test=st.floats(0.1, 0.4),
)
def test_time_split_never_leaks(lengths, size, stride, purge, val, test):
    sigs = {f"e{i}": np.arange(n, dtype=np.float32) for i, n in enumerate(lengths)}
    df = make_readings(sigs, labels={e: [1] * len(s) for e, s in sigs.items()})
    ws = build_windows(df, ["c0"], wcfg(size=size, stride=stride))
    cfg = SplitConfig(method="time", val_fraction=val, test_fraction=test, purge_s=purge)
    parts = split_windows(ws, plan_split(ws, cfg))
    tr, te, va = parts["train"], parts["test"], parts["val"]
    for other in (te, va):
        for e in set(other.entity.tolist()):
            a, b = tr.entity == e, other.entity == e
            if a.any() and b.any():
                # every later-part window starts after every training window ends (+ purge)
                assert other.start[b].min() > tr.end[a].max() + purge * US - 1


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 50), size=st.integers(1, 12), stride=st.integers(1, 12))
def test_window_count_and_content(n, size, stride):
    sig = np.arange(n, dtype=np.float32)
    df = make_readings({"a": sig}, labels={"a": [1] * n})
    w = build_windows(df, ["c0"], wcfg(size=size, stride=stride)).windows
    expected = (n - size) // stride + 1 if n >= size else 0
    assert len(w) == expected
    for i in range(len(w)):
        np.testing.assert_array_equal(w.x[i, 0], sig[i * stride : i * stride + size])


def _wins(x: np.ndarray, lengths=None) -> Windows:
    n = len(x)
    return Windows(
        x.astype(np.float32),
        np.asarray(lengths if lengths is not None else [x.shape[-1]] * n),
        np.zeros(n, np.int64),
        np.array(["a"] * n),
        np.zeros(n, np.int64),
        np.zeros(n, np.int64),
    )


def test_normaliser_fitted_on_training_split_only():
    ext = {f"e{i}": {"split": "test" if i == 0 else "train"} for i in range(3)}
    sigs = {"e0": np.full(20, 1000.0), "e1": np.arange(20.0), "e2": np.arange(20.0)}
    df = make_readings(sigs, labels={e: [1] * 20 for e in sigs}, extra=ext)
    ws = build_windows(df, ["c0"], wcfg(size=5, stride=5), entity_columns=["split"])
    parts = split_windows(ws, plan_split(ws, SplitConfig(method="column", val_fraction=0.0)))
    norm = fit_normalizer(parts["train"])
    np.testing.assert_allclose(norm.center, [9.5], rtol=1e-6)  # the test entity's 1000s unseen
    np.testing.assert_allclose(norm.scale, [np.arange(20.0).std()], rtol=1e-6)


def test_normaliser_ignores_padding_and_keeps_it_zero():
    x = np.array([[[1.0, 3.0, 0.0, 0.0]], [[5.0, 7.0, 9.0, 11.0]]])
    w = _wins(x, [2, 4])
    norm = fit_normalizer(w)
    vals = np.array([1, 3, 5, 7, 9, 11.0])
    np.testing.assert_allclose(norm.center, [vals.mean()], rtol=1e-6)
    out = norm.apply(w.x, w.lengths)
    assert (out[0, 0, 2:] == 0).all()


@pytest.mark.parametrize("method", ["standard", "robust"])
def test_constant_channel_is_finite(method):
    x = np.stack([np.ones((6, 8)), np.random.default_rng(0).normal(size=(6, 8))], 1)
    norm = fit_normalizer(_wins(x), method)
    assert norm.scale[0] == 1.0
    out = norm.apply(x.astype(np.float32), np.full(6, 8))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, 0], 0.0)


def test_batches_cover_each_window_once_and_repeat_per_epoch():
    x = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 1, 3), np.float32)
    w = _wins(x)
    b = Batches(w, None, "cpu", batch_size=4, shuffle=True, seed=1)
    b.set_epoch(2)
    first = torch.cat([xb[:, 0, 0] for xb, _, _ in b])
    assert sorted(first.tolist()) == list(range(10))
    again = torch.cat([xb[:, 0, 0] for xb, _, _ in b])
    assert torch.equal(first, again)  # the order is a function of (seed, epoch)
    b.set_epoch(3)
    assert not torch.equal(first, torch.cat([xb[:, 0, 0] for xb, _, _ in b]))


def test_reads_hapt_shaped_frame_with_metadata_columns():
    ext = {"e0": {"split": "train", "activity": "X"}}
    df = make_readings({"e0": np.arange(10.0)}, labels={"e0": [1] * 10}, extra=ext)
    ws = build_windows(
        df.lazy(),
        ["c0"],
        wcfg(label="majority", label_names_column="activity"),
        entity_columns=["split"],
    )
    assert ws.class_names == ["X"] and ws.entity_meta == {"e0": {"split": "train"}}
    with pytest.raises(ValueError, match="readings lack columns"):
        build_windows(df, ["nope"], wcfg())


# ---------------------------------------------------------------------------------------------
# derived channels: gravity (Butterworth low-pass per stream piece) and body = raw - gravity


def _gravity_readings(sigs: dict[str, np.ndarray], step_ms: int = 20):
    return make_readings(
        sigs,
        labels={e: [1] * len(s) for e, s in sigs.items()},
        step_ms=step_ms,
        channels=("ax", "ay", "az", "g"),
    )


def test_gravity_filter_known_output_on_hand_made_signal():
    """50 Hz: a constant tilt plus a 5 Hz vibration. The 0.3 Hz low-pass returns the constant
    (exact for a constant, the vibration damped by ~(0.3/5)^3), body the vibration, and
    gravity + body equals the raw signal; names and order follow window.derived."""
    t = np.arange(1000) / 50.0
    vib = 0.5 * np.sin(2 * np.pi * 5.0 * t)
    sig = np.stack(
        [0.2 + vib, np.full_like(t, -0.9), np.full_like(t, 0.4), np.cos(2 * np.pi * 2 * t)], 1
    )
    cfg = wcfg(size=1000, stride=1000, derived=["gravity", "body"])
    ws = build_windows(_gravity_readings({"a": sig}), ["ax", "ay", "az", "g"], cfg)
    assert ws.channels == [
        "ax",
        "ay",
        "az",
        "g",
        "ax_gravity",
        "ay_gravity",
        "az_gravity",
        "ax_body",
        "ay_body",
        "az_body",
    ]
    x = ws.windows.x[0].astype(np.float64)  # (10, 1000)
    np.testing.assert_allclose(x[:4], sig.T, atol=1e-6)  # raw channels untouched
    grav, body = x[4:7], x[7:10]
    np.testing.assert_allclose(grav[1], -0.9, atol=1e-5)  # a constant passes exactly
    np.testing.assert_allclose(grav[2], 0.4, atol=1e-5)
    np.testing.assert_allclose(grav[0, 200:-200], 0.2, atol=5e-3)  # vibration removed (edges aside)
    np.testing.assert_allclose(body[0, 200:-200], vib[200:-200], atol=5e-3)
    np.testing.assert_allclose(grav + body, x[:3], atol=1e-5)

    from scipy.signal import butter, sosfiltfilt  # the exact reference

    sos = butter(3, 0.3, btype="low", fs=50.0, output="sos")
    np.testing.assert_allclose(grav[0], sosfiltfilt(sos, sig[:, 0]), atol=1e-5)


def test_gravity_is_filtered_per_piece_and_causal_option():
    """Entities (and gap pieces) are filtered separately: a constant per piece stays exact; the
    causal filter starts in steady state, so a constant also passes unchanged."""
    a = np.tile([1.0, 0.0, 0.0, 0.0], (300, 1))
    b = np.tile([-1.0, 0.5, 0.0, 0.0], (300, 1))
    ms = np.r_[np.arange(150), np.arange(400, 550)] * 20  # a gap in b: two pieces
    b[150:, 0] = 3.0
    df = make_readings(
        {"a": a, "b": b},
        labels={"a": [1] * 300, "b": [1] * 300},
        channels=("ax", "ay", "az", "g"),
        timestamps={"a": np.arange(300) * 20, "b": ms},
    )
    for zero_phase in (True, False):
        cfg = wcfg(size=50, stride=50, derived=["gravity"], gravity_zero_phase=zero_phase)
        w = build_windows(df, ["ax", "ay", "az", "g"], cfg).windows
        gx = w.x[:, 4]
        np.testing.assert_allclose(gx, w.x[:, 0], atol=1e-5)  # constant per piece
        assert set(np.round(gx[:, 0], 4)) == {1.0, -1.0, 3.0}


def test_derived_config_errors():
    df = _gravity_readings({"a": np.zeros((100, 4))})
    with pytest.raises(ValueError, match="derived_from"):
        build_windows(
            df, ["ax", "ay", "az", "g"], wcfg(size=10, derived=["gravity"], derived_from=["nope"])
        )
    with pytest.raises(ValueError, match="Nyquist"):
        build_windows(
            df, ["ax", "ay", "az", "g"], wcfg(size=10, derived=["gravity"], gravity_cutoff_hz=30.0)
        )
    with pytest.raises(ValueError, match="at most once"):
        WindowConfig(derived=["gravity", "gravity"])


def _one_class_per_entity(n_classes: int = 10, per_class: int = 4):
    """Files of one class each (the bearing-fault layout: a recording per fault and load)."""
    sig = {f"f{c}_{k}": np.zeros((16, 1)) for c in range(n_classes) for k in range(per_class)}
    lab = {e: np.full(16, int(e[1 : e.index("_")])) for e in sig}
    return make_readings(sig, lab)


@pytest.mark.parametrize("seed", range(6))
def test_stratified_entity_split_keeps_every_class_in_train_val_and_test(seed):
    from cnnlstm.windows import build_windows, plan_split, split_windows

    wcfg = WindowConfig(size=8, stride=8, label="majority")
    ws = build_windows(_one_class_per_entity(), ["c0"], wcfg)
    split = SplitConfig(method="entity", test_fraction=0.25, val_fraction=0.25, seed=seed)
    parts = split_windows(ws, plan_split(ws, split.model_copy(update={"stratify": True})))
    for name in ("train", "val", "test"):  # 10 classes x 4 files: 2 / 1 / 1 of each class
        per = {
            int(c): len(
                {e for e, y in zip(parts[name].entity, parts[name].y, strict=True) if y == c}
            )
            for c in np.unique(parts[name].y)
        }
        assert per == {c: 2 if name == "train" else 1 for c in range(10)}, (name, per)
    # unstratified, the same seeds leave some class out of a part (what stratify is for)
    if seed == 0:
        plain = [
            split_windows(ws, plan_split(ws, split.model_copy(update={"seed": s})))
            for s in range(6)
        ]
        assert any(len(np.unique(p["test"].y)) < 10 for p in plain)


def test_stratify_needs_class_labels():
    from cnnlstm.windows import build_windows, plan_split

    readings = make_readings({"a": np.zeros((16, 1)), "b": np.zeros((16, 1))})
    ws = build_windows(readings, ["c0"], WindowConfig(size=8, stride=4, label="forecast"))
    with pytest.raises(ValueError, match="stratify needs class labels"):
        plan_split(ws, SplitConfig(stratify=True))
    with pytest.raises(ValueError, match="stratify applies to method entity or column"):
        SplitConfig(method="time", stratify=True)
