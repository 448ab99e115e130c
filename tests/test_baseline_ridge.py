"""The baseline's memory-lean ridge (issue 13): `ridge_gcv` gives what sklearn's RidgeClassifierCV
/ RidgeCV give (the same alpha; coefficients and intercepts within float32 rounding, which is
what sklearn hands back for float32 features), in both of its regimes; the compact feature
matrix holds exactly the standardised values; only the capped windows are gathered."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeClassifierCV, RidgeCV

from cnnlstm.baseline import ALPHAS, FeatureMatrix, _binarize, _collect, ridge_gcv
from cnnlstm.windows import Batches, Windows


def _data(n: int, p: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, p)).astype(np.float32)
    scores = z @ rng.standard_normal((p, k)) + 3 * rng.standard_normal((n, k))
    return z, scores


@pytest.mark.parametrize(("n", "p"), [(60, 200), (150, 150), (300, 40)])  # Gram, Gram, covariance
@pytest.mark.parametrize("k", [2, 3])
def test_classifier_equals_sklearn(n, p, k):
    z, scores = _data(n, p, k, n + p + k)
    y = scores.argmax(1)
    ref = RidgeClassifierCV(alphas=ALPHAS).fit(z, y)
    alpha, coef, icpt = ridge_gcv(z, _binarize(y, np.unique(y)), ALPHAS, chunk=37)
    assert alpha == ref.alpha_
    assert coef.shape == np.atleast_2d(ref.coef_).shape  # one column for two classes
    tol = 1e-5 * np.abs(coef).max()
    np.testing.assert_allclose(coef, np.atleast_2d(ref.coef_), rtol=0, atol=tol)
    np.testing.assert_allclose(icpt, np.atleast_1d(ref.intercept_), rtol=0, atol=tol)


@pytest.mark.parametrize(("n", "p"), [(60, 200), (300, 40)])
def test_regressor_equals_sklearn(n, p):
    z, scores = _data(n, p, 2, 7)
    ref = RidgeCV(alphas=ALPHAS).fit(z, scores)
    alpha, coef, icpt = ridge_gcv(z, scores, ALPHAS, chunk=64)
    assert alpha == ref.alpha_
    tol = 1e-5 * np.abs(coef).max()
    np.testing.assert_allclose(coef, ref.coef_, rtol=0, atol=tol)
    np.testing.assert_allclose(icpt, ref.intercept_, rtol=0, atol=tol * 10)


def test_alpha_follows_the_noise():
    # nearly noiseless targets want the smallest alpha, pure noise the largest
    rng = np.random.default_rng(3)
    z = rng.standard_normal((80, 30)).astype(np.float32)
    clean = z @ rng.standard_normal(30)
    assert ridge_gcv(z, clean, ALPHAS)[0] == ALPHAS[0]
    assert ridge_gcv(z, rng.standard_normal(80), ALPHAS)[0] == ALPHAS[-1]


def test_binarize_like_label_binarizer():
    from sklearn.preprocessing import LabelBinarizer

    y = np.array([0, 2, 5, 2])
    want = [[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [-1, 1, -1]]
    np.testing.assert_array_equal(_binarize(y, np.unique(y)), want)
    for v in (y, np.array([3, 1, 3]), np.array([4, 4])):
        ref = LabelBinarizer(pos_label=1, neg_label=-1).fit_transform(v)
        np.testing.assert_array_equal(_binarize(v, np.unique(v)), ref)


def test_feature_matrix_holds_exactly_the_standardised_values():
    rng = np.random.default_rng(0)
    feats = (rng.integers(0, 121, (50, 30)) / np.float32(120)).astype(np.float32)  # PPV-like
    scale = feats.std(0)
    want = feats / scale
    m = FeatureMatrix(feats.copy(), scale)
    assert m.dense is None and m.codes.dtype == np.uint8  # compact
    np.testing.assert_array_equal(m.cols(0, 30), want)
    np.testing.assert_array_equal(m.cols(7, 99), want[:, 7:])
    np.testing.assert_array_equal(m.rows(3, 20), want[3:20])
    many = rng.standard_normal((300, 4)).astype(np.float32)  # > 256 distinct values: float32
    d = FeatureMatrix(many.copy(), np.full(4, 2, np.float32))
    assert d.codes is None
    np.testing.assert_array_equal(d.cols(0, 4), many / np.float32(2))


def test_the_capped_windows_alone_are_gathered_and_equal_the_concatenated_subset():
    rng = np.random.default_rng(1)
    n = 23
    x = rng.standard_normal((n, 2, 5)).astype(np.float32)
    lengths = np.where(np.arange(n) % 4 == 0, 3, 5)
    w = Windows(x, lengths, np.arange(n) % 3, np.array(["a"] * n), np.arange(n), np.arange(n))
    for shuffle in (False, True):
        b = Batches(w, None, "cpu", batch_size=4, shuffle=shuffle, seed=2)
        for cap in (None, 30, 9):
            gx, gy = _collect(b, cap, seed=0)
            lx, ly = _collect(list(b), cap, seed=0)
            assert torch.equal(gx, lx) and torch.equal(gy, ly)
            assert len(gx) == min(n, cap or n)
