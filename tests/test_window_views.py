"""Windows as views (issue 13): stream rows stored once, windows gathered by index arithmetic per
batch. Tiny hand-made streams with exact expected windows: the gathered batches equal the old
dense batches (every window materialised, normalised, indexed) bit for bit, in the same order;
the normaliser counts each sample once per window that holds it; one read serves both strides."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest_train import make_readings

from cnnlstm.window_config import WindowConfig
from cnnlstm.windows import (
    Batches,
    Normalizer,
    Windows,
    build_window_sets,
    build_windows,
    center_scale,
    fit_normalizer,
)


def wcfg(**kw) -> WindowConfig:
    return WindowConfig(**({"size": 4, "stride": 2, "label": "last", "short": "pad"} | kw))


def two_entities():
    """Entity a: rows 0-5, a gap, rows 6-9 (two pieces); entity b: 3 rows (a short piece, padded
    to 4). Channel c1 is negative in places."""
    a0 = np.arange(10, dtype=np.float32)
    a = np.stack([a0, 10 * a0 - 5], 1)
    b = np.array([[100, -1], [101, -2], [102, -3]], np.float32)
    ms = {"a": np.r_[np.arange(6), np.arange(20, 24)] * 1000, "b": np.arange(3) * 1000}
    labels = {"a": [1] * 10, "b": [2] * 3}
    return make_readings({"a": a, "b": b}, labels=labels, timestamps=ms)


# the windows of two_entities() at size 4, stride 2: (C, L) each, zero beyond the length
EXPECTED = np.array(
    [
        [[0, 1, 2, 3], [-5, 5, 15, 25]],
        [[2, 3, 4, 5], [15, 25, 35, 45]],
        [[6, 7, 8, 9], [55, 65, 75, 85]],
        [[100, 101, 102, 0], [-1, -2, -3, 0]],
    ],
    np.float32,
)
LENGTHS = np.array([4, 4, 4, 3])


def test_windows_are_views_over_the_stream_rows():
    w = build_windows(two_entities(), ["c0", "c1"], wcfg()).windows
    assert w.rows.shape == (13, 2)  # every sample once (the 4 windows hold 15 samples)
    np.testing.assert_array_equal(w.first, [0, 2, 6, 10])
    np.testing.assert_array_equal(w.lengths, LENGTHS)
    np.testing.assert_array_equal(w.y, [0, 0, 0, 1])
    assert w.shape == (4, 2, 4) and w.n_channels == 2
    np.testing.assert_array_equal(w.x, EXPECTED)
    sub = w.subset(np.array([3, 1]))
    assert sub.rows is w.rows  # a subset is a view too
    np.testing.assert_array_equal(sub.x, EXPECTED[[3, 1]])
    np.testing.assert_array_equal(w.gather(np.array([2])), EXPECTED[[2]])


def _old_batches(x: np.ndarray, lengths, y, norm, batch_size, seed, epoch):
    """What Batches did before issue 13: every window materialised and normalised
    (`Normalizer.apply`), each batch indexed from it in the epoch's permutation."""
    xt = torch.from_numpy(norm.apply(x, lengths) if norm is not None else x)
    order = torch.randperm(
        len(x), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    )
    for b in range(0, len(x), batch_size):
        i = order[b : b + batch_size]
        yield xt[i], torch.from_numpy(lengths)[i], torch.from_numpy(y)[i]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)  # bit patterns: -0.0 and 0.0 differ


@pytest.mark.parametrize("normalise", [True, False])
def test_gathered_batches_equal_the_old_dense_batches_bit_for_bit(normalise):
    w = build_windows(two_entities(), ["c0", "c1"], wcfg()).windows
    # center > 0: the old padding was ((0 - center) / scale) * 0 = -0.0; the views keep it
    norm = Normalizer(np.array([2.0, 10.0], np.float32), np.array([3.0, 7.0], np.float32))
    norm = norm if normalise else None
    b = Batches(w, norm, "cpu", batch_size=3, shuffle=True, seed=5)
    assert not b.full_length
    for epoch in range(3):
        b.set_epoch(epoch)
        new = list(b)
        old = list(_old_batches(EXPECTED, LENGTHS, w.y, norm, 3, 5, epoch))
        assert len(new) == len(old) == 2
        for (x, ln, y), (ox, oln, oy) in zip(new, old, strict=True):
            assert x.shape == ox.shape and x.dtype == ox.dtype == torch.float32
            assert x.is_contiguous()
            assert torch.equal(_bits(x), _bits(ox))
            assert torch.equal(ln, oln) and torch.equal(y, oy)
    if normalise:  # the padded sample of b really is -0.0 on both sides
        x, _, _ = b.take(torch.tensor([3]))
        assert torch.signbit(x[0, :, 3]).all() and (x[0, :, 3] == 0).all()


def test_full_length_batches_return_no_lengths_and_take_keeps_its_meaning():
    w = build_windows(two_entities(), ["c0", "c1"], wcfg(short="drop")).windows
    assert len(w) == 3
    b = Batches(w, None, "cpu", batch_size=2)
    x, ln, y = b.take(torch.tensor([2, 0]))
    assert ln is None and b.full_length
    np.testing.assert_array_equal(x.numpy(), EXPECTED[[2, 0]])
    assert b.order(0).tolist() == [0, 1, 2]  # no shuffle: window order


def test_batches_and_the_normaliser_never_materialise_the_split(monkeypatch):
    w = build_windows(two_entities(), ["c0", "c1"], wcfg()).windows

    def dense(self):
        raise AssertionError("Windows.x materialised every window")

    monkeypatch.setattr(Windows, "x", property(dense))
    norm = fit_normalizer(w)
    batches = list(Batches(w, norm, "cpu", batch_size=2, shuffle=True, seed=1))
    assert sum(len(x) for x, _, _ in batches) == 4


def test_a_split_keeps_only_the_rows_its_windows_use():
    w = build_windows(two_entities(), ["c0", "c1"], wcfg()).windows
    only_b = w.subset(np.flatnonzero(w.entity == "b"))
    b = Batches(only_b, None, "cpu", batch_size=4)
    assert b.rows.shape == (3, 2) and b.first.tolist() == [0]
    np.testing.assert_array_equal(b.take(torch.tensor([0]))[0].numpy(), EXPECTED[[3]])


def test_normaliser_counts_each_sample_once_per_window_holding_it():
    # rows 0..5, windows of 4 every 2: rows 0-3 and 2-5, so samples 0 1 2 3 2 3 4 5
    df = make_readings({"a": np.arange(6.0)}, labels={"a": [1] * 6})
    w = build_windows(df, ["c0"], wcfg(short="drop")).windows
    assert len(w) == 2
    std = fit_normalizer(w, "standard")
    assert std.center.tolist() == [2.5] and std.scale.tolist() == [1.5]
    rob = fit_normalizer(w, "robust")  # quartiles of 0 1 2 2 3 3 4 5: 1.75, 2.5, 3.25
    assert rob.center.tolist() == [2.5]
    np.testing.assert_array_equal(rob.scale, np.float32(1.5 / 1.349))


@pytest.mark.parametrize("method", ["standard", "robust", "none"])
def test_normaliser_equals_the_old_fit_on_every_materialised_window(method):
    rng = np.random.default_rng(0)
    sig = {e: rng.integers(-50, 50, (n, 2)).astype(np.float32) for e, n in (("a", 40), ("b", 3))}
    df = make_readings(sig, labels={e: [1] * len(v) for e, v in sig.items()})
    w = build_windows(df, ["c0", "c1"], wcfg(size=8, stride=3)).windows
    assert (w.lengths < 8).any()  # b is padded
    x = w.x  # the old fit: the valid samples of every window, materialised
    valid = x.transpose(0, 2, 1)[np.arange(8)[None, :] < w.lengths[:, None]]
    old_c, old_s = center_scale(valid, method)
    new = fit_normalizer(w, method)
    np.testing.assert_array_equal(new.center, old_c)
    np.testing.assert_array_equal(new.scale, old_s)


def test_one_read_serves_both_strides_and_equals_two_builds():
    df = two_entities()
    cfg = wcfg(label="majority", min_purity=0.0)
    dense_cfg_windows = build_windows(df, ["c0", "c1"], cfg, stride=1).windows
    sets = build_window_sets(df, ["c0", "c1"], cfg, strides=[2, 1])
    assert sets[0].windows.rows is sets[1].windows.rows  # one copy of the samples
    for got, want in (
        (sets[0].windows, build_windows(df, ["c0", "c1"], cfg).windows),
        (sets[1].windows, dense_cfg_windows),
    ):
        assert len(got) == len(want)
        for k in ("first", "lengths", "y", "entity", "start", "end"):
            np.testing.assert_array_equal(getattr(got, k), getattr(want, k))
        np.testing.assert_array_equal(got.x, want.x)
    assert len(sets[1].windows) == 3 + 1 + 1  # stride 1: 3 + 1 windows of a, 1 padded of b
    assert sets[0].classes == sets[1].classes == [1, 2]


def test_dense_windows_become_rows_of_their_own():
    w = Windows(EXPECTED, LENGTHS, np.zeros(4, np.int64), np.array(list("aaab")), LENGTHS, LENGTHS)
    assert w.rows.shape == (16, 2) and w.first.tolist() == [0, 4, 8, 12]
    np.testing.assert_array_equal(w.x, EXPECTED)
    with pytest.raises(ValueError, match="x or rows"):
        Windows(EXPECTED, LENGTHS, rows=w.rows, first=w.first, size=4)
