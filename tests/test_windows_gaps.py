"""Gaps, nulls and the no-windows diagnosis: the robust default gap tolerance, window.impute,
window.min_observed and the error that says which setting to change. Tiny hand-made inputs with
exact expected outputs, a hypothesis property, and one small end-to-end training run."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from conftest_train import make_readings
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlstm.window_config import WindowConfig
from cnnlstm.windows import (
    build_windows,
    cut_windows,
    default_gap_tolerance_us,
    describe_streams,
)

US = 1_000_000  # microseconds per second


def wcfg(**kw) -> WindowConfig:
    return WindowConfig(**({"size": 4, "stride": 3, "label": "last"} | kw))


def _log(steps_s: np.ndarray, n_channels: int = 1, entity: str = "a") -> pl.DataFrame:
    """A log whose consecutive readings are steps_s seconds apart; channel k holds
    (k + 1) * 10 * row index."""
    ms = np.r_[0, np.cumsum(steps_s)] * 1000
    rows = np.arange(len(ms), dtype=np.float32)
    sig = np.stack([(k + 1) * 10 * rows for k in range(n_channels)], 1)
    return make_readings({entity: sig}, labels={entity: [1] * len(ms)}, timestamps={entity: ms})


def _null(df: pl.DataFrame, channel: str, rows: list[int]) -> pl.DataFrame:
    """Set `channel` to null on the given rows (row numbers of the frame)."""
    i = pl.int_range(pl.len())
    return df.with_columns(
        pl.when(i.is_in(rows)).then(None).otherwise(pl.col(channel)).alias(channel)
    )


# ---------------------------------------------------------------------------------------------
# the default gap tolerance


def test_default_tolerance_on_hand_made_steps():
    # regular: exactly 1.5x the step (HAPT at 50 Hz: 30 ms), as before
    assert default_gap_tolerance_us(np.full(100, 20_000)) == 30_000.0
    # routine 2 s steps in a 1 Hz log (a quarter of the steps): 1.5x the 90th percentile
    assert default_gap_tolerance_us(np.tile([1, 1, 1, 2], 25) * US) == 3.0 * US
    # many long steps: capped at 10x the median step
    assert default_gap_tolerance_us(np.r_[np.full(70, 1), np.full(30, 100)] * US) == 10.0 * US
    assert default_gap_tolerance_us(np.zeros(0, np.int64)) == np.inf


def test_1hz_log_with_routine_2s_steps_is_one_piece_and_a_dropout_still_cuts():
    steps = np.tile([1, 1, 1, 2], 30)  # 121 readings over 150 s
    cfg = wcfg(size=20, stride=20)
    one = cut_windows(_log(steps), ["c0"], cfg)
    assert one.stats.gap_tolerance_s == 3.0 and one.stats.tolerance_default
    assert one.stats.n_pieces == 1 and one.stats.n_gap_steps == 0
    assert one.windows.x[:, 0, 0].tolist() == [0, 200, 400, 600, 800, 1000]  # rows 0, 20, ...

    # the median-only rule this replaces (1.5 s) cut the same log into 31 pieces of <= 4 rows
    old = describe_streams(_log(steps), ["c0"], cfg.model_copy(update={"gap_tolerance_s": 1.5}))
    assert (old.n_pieces, old.piece_len_max, old.n_windows) == (31, 4, 0)

    steps[60] = 600  # a 10 min dropout after row 60
    two = cut_windows(_log(steps), ["c0"], cfg)
    assert two.stats.gap_tolerance_s == 3.0  # the dropout moves neither percentile
    assert two.stats.n_pieces == 2 and two.stats.n_gap_steps == 1
    assert two.stats.gap_step_median_s == 600.0
    assert two.windows.x[:, 0, 0].tolist() == [0, 200, 400, 610, 810, 1010]  # rows 0.., 61..
    t_drop = (np.r_[0, np.cumsum(steps)][60] + np.array([0, 600])) * US
    assert not ((two.windows.start <= t_drop[0]) & (two.windows.end >= t_drop[1])).any()


def test_regular_stream_windows_match_the_explicit_one_and_a_half_steps():
    sig = np.sin(np.arange(500) / 7.0).astype(np.float32)[:, None]
    ms = np.r_[np.arange(250), np.arange(252, 502)] * 20  # 50 Hz with one missing pair: a gap
    df = make_readings({"a": sig}, labels={"a": [1] * 500}, timestamps={"a": ms})
    cfg = wcfg(size=32, stride=16)
    auto = build_windows(df, ["c0"], cfg)
    fixed = build_windows(df, ["c0"], cfg.model_copy(update={"gap_tolerance_s": 0.03}))
    assert auto.stats.gap_tolerance_s == pytest.approx(0.03) and auto.stats.n_pieces == 2
    for f in ("x", "lengths", "y", "entity", "start", "end"):
        np.testing.assert_array_equal(getattr(auto.windows, f), getattr(fixed.windows, f))
    np.testing.assert_array_equal(
        auto.windows.x[:, 0, 0], sig[[*range(0, 209, 16), *range(250, 459, 16)], 0]
    )


# ---------------------------------------------------------------------------------------------
# nulls: an error by default, filled with window.impute


def _two_row_run() -> pl.DataFrame:
    """1 Hz, c0 = 10 * row, c1 = 20 * row; c1 null on rows 3 and 4 (a run spanning 1 s)."""
    return _null(_log(np.ones(9), n_channels=2), "c1", [3, 4])


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("linear", [0, 20, 40, 60, 80]),
        ("ffill", [0, 20, 40, 40, 40]),
        ("zero", [0, 20, 40, 0, 0]),
    ],
)
def test_two_row_null_run_is_filled_exactly(method, expected):
    cut = cut_windows(_two_row_run(), ["c0", "c1"], wcfg(size=5, stride=5, impute=method))
    w = cut.windows
    assert len(w) == 2
    np.testing.assert_array_equal(w.x[0, 1], expected)
    np.testing.assert_array_equal(w.x[1, 1], [100, 120, 140, 160, 180])
    np.testing.assert_array_equal(w.x[:, 0].ravel(), np.arange(10) * 10)  # c0 untouched
    np.testing.assert_array_equal(cut.observed, np.float32([0.8, 1.0]))  # 8 of 10 values, then all
    assert cut.observed.dtype == np.float32
    assert cut.stats.null_rows == 2 and cut.stats.null_run_rows == 0


def test_linear_is_in_time_and_the_ends_take_the_nearest_observed_value():
    # readings at 0, 1, 2, 4, 5, 6 s; c0 null at 0 s (leading), 2 and 4 s (a run), 6 s (trailing)
    df = _null(_log(np.array([1, 1, 2, 1, 1])), "c0", [0, 2, 3, 5])
    cfg = wcfg(size=6, stride=6, gap_tolerance_s=3.0)
    lin = cut_windows(df, ["c0"], cfg.model_copy(update={"impute": "linear"})).windows
    # observed: 10 at 1 s, 40 at 5 s; in time: 2 s -> 17.5, 4 s -> 32.5 (not by row: 20, 30)
    np.testing.assert_array_equal(lin.x[0, 0], [10, 10, 17.5, 32.5, 40, 40])
    ffill = cut_windows(df, ["c0"], cfg.model_copy(update={"impute": "ffill"})).windows
    np.testing.assert_array_equal(ffill.x[0, 0], [10, 10, 10, 10, 40, 40])


def test_nulls_without_impute_raise_a_message_that_says_where_and_what_to_set():
    with pytest.raises(ValueError) as e:
        cut_windows(_two_row_run(), ["c0", "c1"], wcfg())
    msg = str(e.value)
    assert "2 rows (null values per channel: c1 2)" in msg
    assert "entity 'a' at 1970-01-01T00:00:03+00:00, channel 'c1'" in msg
    assert "window.impute" in msg


def test_a_null_run_longer_than_the_tolerance_cuts_the_stream_and_its_rows_are_in_no_window():
    # 1 Hz (tolerance 1.5 s); c1 null on rows 10-12 (a run spanning 2 s: cut out) and 20-21
    # (spanning 1 s: filled)
    df = _null(_log(np.ones(29), n_channels=2), "c1", [10, 11, 12, 20, 21])
    cut = cut_windows(df, ["c0", "c1"], wcfg(size=5, stride=5, impute="linear"))
    w = cut.windows
    assert cut.stats.null_run_rows == 3 and cut.stats.n_pieces == 2
    np.testing.assert_array_equal(w.start, np.array([0, 5, 13, 18, 23]) * US)
    for t in (10, 11, 12):
        assert not ((w.start <= t * US) & (w.end >= t * US)).any()
    np.testing.assert_array_equal(w.x[3, 1], [360, 380, 400, 420, 440])  # rows 18-22, filled
    np.testing.assert_array_equal(cut.observed, np.float32([1, 1, 1, 0.8, 1]))


def test_a_piece_with_a_channel_never_observed_is_dropped():
    a = _log(np.ones(9), n_channels=2, entity="a")
    b = _null(_log(np.ones(9), n_channels=2, entity="b"), "c1", list(range(10)))
    cfg = wcfg(size=5, stride=5, impute="zero", gap_tolerance_s=100.0)  # no run is too long
    cut = cut_windows(pl.concat([a, b]), ["c0", "c1"], cfg)
    assert cut.windows.entity.tolist() == ["a", "a"]
    assert (cut.stats.unobserved_pieces, cut.stats.unobserved_rows) == (1, 10)


def test_nulls_are_filled_before_resampling_and_resampled_values_next_to_a_null_are_imputed():
    # 1 Hz, c0 = 10 * row, null at 2 s; resampled to 2 Hz: 9 grid values, those at 1.5, 2 and
    # 2.5 s lean on the filled reading
    df = _null(_log(np.ones(4)), "c0", [2])
    cfg = wcfg(size=9, stride=9, impute="ffill", sample_rate_hz=2.0)
    cut = cut_windows(df, ["c0"], cfg)
    np.testing.assert_array_equal(cut.windows.x[0, 0], [0, 5, 10, 10, 10, 20, 30, 35, 40])
    np.testing.assert_array_equal(cut.observed, np.float32([6 / 9]))


# ---------------------------------------------------------------------------------------------
# window.min_observed


def test_min_observed_drops_exactly_the_windows_under_it():
    # 12 rows at 1 Hz, c0 null on rows 1, 2 and 9; windows of 4 every 2 rows start at rows
    # 0, 2, 4, 6, 8 with observed shares 2/4, 3/4, 4/4, 3/4, 3/4
    df = _null(_log(np.ones(11)), "c0", [1, 2, 9])
    cfg = wcfg(size=4, stride=2, impute="linear")
    every = cut_windows(df, ["c0"], cfg)
    np.testing.assert_array_equal(every.observed, [0.5, 0.75, 1.0, 0.75, 0.75])
    kept = cut_windows(df, ["c0"], cfg.model_copy(update={"min_observed": 0.75}))
    np.testing.assert_array_equal(kept.windows.start, np.array([2, 4, 6, 8]) * US)
    np.testing.assert_array_equal(kept.observed, [0.75, 1.0, 0.75, 0.75])
    assert len(kept.idx) == len(kept.mask) == len(kept.last) == 4  # the label arrays follow
    only = cut_windows(df, ["c0"], cfg.model_copy(update={"min_observed": 0.8}))
    np.testing.assert_array_equal(only.windows.start, [4 * US])
    assert (only.stats.n_windows_cut, only.stats.n_low_observed) == (5, 4)
    # shares count channels too: a second, complete channel halves the missing share
    two = _null(_log(np.ones(11), n_channels=2), "c0", [1, 2, 9])
    np.testing.assert_array_equal(
        cut_windows(two, ["c0", "c1"], cfg).observed, [0.75, 0.875, 1.0, 0.875, 0.875]
    )


# ---------------------------------------------------------------------------------------------
# the no-windows error


def test_no_windows_error_gives_the_step_statistics_and_the_settings():
    from cnnlstm.train import prepare_data

    # the user's log: 1 Hz with routine 2 s steps, cut by an explicit 1.5 s tolerance
    df = _log(np.tile([1, 1, 1, 2], 30))
    with pytest.raises(ValueError) as e:
        prepare_data(df, ["c0"], wcfg(size=20, stride=20, gap_tolerance_s=1.5))
    msg = str(e.value)
    assert "1 entity, 121 rows" in msg
    assert "median 1 s, 90th percentile 2 s, max 2 s" in msg
    assert "a step over 1.5 s (window.gap_tolerance_s)" in msg
    assert "30 steps did (median 2 s); 31 pieces" in msg
    assert "min 1, median 4, 90th percentile 4, max 4" in msg
    assert "a window needs 20 rows: window.size 20" in msg
    for setting in (
        "raise window.gap_tolerance_s",
        "window.short: pad with window.min_length (at most 4 here)",
        "a smaller window.size",
    ):
        assert setting in msg

    # windows are cut, but none has a label the task uses
    unlabelled = make_readings({"a": np.arange(20.0)}, labels={"a": [0] * 20})
    with pytest.raises(ValueError) as e:
        prepare_data(unlabelled, ["c0"], wcfg(size=5, stride=5, drop_labels=[0]))
    assert "4 of 4 windows had no label the task uses" in str(e.value)

    # every window under window.min_observed
    sparse = _null(_log(np.ones(9)), "c0", [1, 3, 5, 7, 9])
    with pytest.raises(ValueError) as e:
        prepare_data(sparse, ["c0"], wcfg(size=5, stride=5, impute="ffill", min_observed=0.9))
    assert "lower window.min_observed (now 0.9; the best window has 0.6 of its values" in str(
        e.value
    )


# ---------------------------------------------------------------------------------------------
# property: random nulls, linear fill


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    n=st.integers(2, 60),
    n_channels=st.integers(1, 3),
    size=st.integers(1, 10),
    stride=st.integers(1, 5),
    pad=st.booleans(),
    tolerance=st.sampled_from([None, 3.0, 1000.0]),
)
def test_random_nulls_with_linear_fill_give_finite_windows(
    data, n, n_channels, size, stride, pad, tolerance
):
    steps = np.asarray(
        data.draw(st.lists(st.sampled_from([1, 1, 2, 5]), min_size=n - 1, max_size=n - 1))
    )
    null = np.asarray(
        data.draw(st.lists(st.booleans(), min_size=n * n_channels, max_size=n * n_channels))
    ).reshape(n, n_channels)
    df = _log(steps, n_channels)
    i = pl.int_range(pl.len())
    df = df.with_columns(
        [
            pl.when(i.is_in(np.flatnonzero(null[:, k]).tolist()))
            .then(None)
            .otherwise(pl.col(c))
            .alias(c)
            for k, c in enumerate([f"c{k}" for k in range(n_channels)])
        ]
    )
    cfg = wcfg(
        size=size,
        stride=stride,
        impute="linear",
        short="pad" if pad else "drop",
        gap_tolerance_s=tolerance,
    )
    cut = cut_windows(df, [f"c{k}" for k in range(n_channels)], cfg)
    w = cut.windows
    assert np.isfinite(w.x).all()
    assert cut.observed.shape == (len(w),)
    assert ((cut.observed >= 0) & (cut.observed <= 1)).all()
    # filled values lie between the channel's observed extremes (interpolation, no overshoot)
    for k in range(n_channels):
        seen = (k + 1) * 10 * np.flatnonzero(~null[:, k])
        vals = w.x[:, k][cut.mask]
        if len(vals):
            assert seen.min() <= vals.min() and vals.max() <= seen.max()
    if tolerance == 1000.0:  # nothing cut out: the shares are those of the null mask
        rows = cut.idx  # (N, L) rows of the filled stream = rows of the input (none dropped)
        if cut.stats.unobserved_rows == 0:
            naive = ((~null[rows]).mean(2) * cut.mask).sum(1) / w.lengths
            np.testing.assert_allclose(cut.observed, naive, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# end to end: a 1 Hz log with 2 s steps, dropouts and nulls trains and reports test metrics


def _gappy_logs(n_ent=8, n=600, seed=0) -> pl.DataFrame:
    """Per entity: 1 Hz with a 2 s step every 4th, a 10 min dropout, a slow or a fast sine (the
    class) plus noise, and nulls: short runs (filled) and one long run (cut out)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_ent):
        steps = np.tile([1, 1, 1, 2], n // 4)[: n - 1].astype(float)
        steps[n // 2] = 600
        t = np.r_[0, np.cumsum(steps)]
        f = 0.05 if i % 2 == 0 else 0.2
        sig = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], 1)
        sig += 0.3 * rng.normal(size=sig.shape)
        e = f"r{i}"
        df = make_readings(
            {e: sig},
            labels={e: np.full(n, i % 2)},
            timestamps={e: (t * 1000).astype(np.int64)},
            extra={e: {"split": "test" if i < 2 else "train"}},
        )
        short = [20, 21, 50, 51, 200, 201, 400, 401, 450, 451, 550, 551]  # filled
        long = list(range(100, 120))  # spans 19 s or more: cut out
        df = _null(df, "c0", short + long)
        frames.append(_null(df, "c1", [10, 210, 333, 480]))
    return pl.concat(frames)


def test_train_from_config_on_a_gappy_1hz_log(tmp_path):
    from cnnlstm.config import config_from_dict
    from cnnlstm.train import train_from_config

    readings = _gappy_logs()
    cfg = config_from_dict(
        {
            "data": {
                "name": "gappy",
                "entity": {"column": "entity_id"},
                "timestamp": {"column": "timestamp"},
                "channels": [{"name": "c0"}, {"name": "c1"}],
                "label": {"column": "label"},
                "columns": {"split": "string"},
                "allow_missing_channels": True,
            },
            "lake": {"uri": str(tmp_path / "lake")},
            "window": {
                "size": 32,
                "stride": 16,
                "impute": "linear",
                "min_observed": 0.9,
                "split": {"method": "column", "val_fraction": 0.34},
            },
            "task": {"kind": "classify"},
            "model": {"conv": {"channels": [8, 8], "kernel_size": 3}, "rnn": {"hidden_size": 16}},
            "train": {
                "epochs": 3,
                "batch_size": 16,
                "lr": 5e-3,
                "progress": False,
                "plots": False,
                "num_threads": 1,
            },
        },
        base_dir=tmp_path,
    )
    stats = describe_streams(readings, ["c0", "c1"], cfg.window)
    assert stats.gap_tolerance_s == 3.0 and stats.n_gap_steps == 8  # only the dropouts cut
    assert stats.null_run_rows == 8 * 20  # the long runs, cut out
    m = train_from_config(cfg, tmp_path / "run", readings=readings)
    assert m["n_windows"]["test"] > 0 and m["n_windows"]["train"] > 0
    assert 0.0 <= m["test"]["accuracy"] <= 1.0 and np.isfinite(m["test"]["macro_f1"])
    assert (tmp_path / "run" / "model.safetensors").exists()
