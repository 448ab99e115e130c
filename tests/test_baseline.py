"""The MiniRocket + ridge baseline: the transform against a plain dilated convolution, the
baseline's figures in every run, and `train.baseline: compete` keeping the better of the two on
validation (one case where each wins, for a known reason)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest_train import make_readings
from test_train import _cfg_dict, sine_readings

from cnnlstm.baseline import fit_minirocket, summary_lines
from cnnlstm.checkpoint import load_model
from cnnlstm.config import config_from_dict
from cnnlstm.models.config import MiniRocketConfig
from cnnlstm.models.minirocket import COMBINATIONS, MiniRocketRidge, fit_dilations
from cnnlstm.tasks import make_task
from cnnlstm.tracking import MemoryTracker
from cnnlstm.train import train_from_config


@pytest.mark.parametrize("length", [9, 32, 128, 1000])
def test_dilations_spread_the_features_over_the_window(length):
    dil, per = fit_dilations(length, 10_000, 32)
    assert per.sum() == 10_000 // 84 and (per > 0).all()
    assert dil[0] == 1 and (np.diff(dil) > 0).all()
    assert (dil * 8 <= max(8, length - 1)).all()  # the widest kernel still fits the window


def test_transform_is_the_dilated_convolution_with_the_84_kernels():
    m = MiniRocketRidge(3, (2,))
    x = torch.randn(4, 3, 50, dtype=torch.float64)
    mask = (torch.rand(84, 3, generator=torch.Generator().manual_seed(0)) > 0.4).double()
    w = -torch.ones(84, 1, 9, dtype=torch.float64)
    for k, idx in enumerate(COMBINATIONS):
        w[k, 0, idx] = 2.0
    for d in (1, 2, 5):
        got = m._conv(x, d, mask)
        want = torch.nn.functional.conv1d(mask @ x, w, dilation=d, padding=4 * d, groups=84)
        assert torch.allclose(got, want, atol=1e-12)


def _freq_batches(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    t = np.arange(64)
    f = np.array([2, 5, 9])[y]
    x = np.sin(2 * np.pi * f[:, None, None] * t / 64 + rng.uniform(0, 6, (n, 2, 1)))
    x = x + 0.5 * rng.standard_normal((n, 2, 64))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def test_fit_separates_frequencies_and_round_trips_through_the_state_dict():
    x, y = _freq_batches(240, 0)
    m = MiniRocketRidge(2, (3,), MiniRocketConfig(features=840))
    fit = fit_minirocket(m, [(x[:160], None, y[:160])], seed=0)
    assert fit.kind == "classifier" and fit.n_features == 840
    with torch.no_grad():
        out = m(x[160:])
    assert (out.argmax(1) == y[160:]).float().mean() > 0.9
    feats = m.features(x[:8])
    assert feats.shape == (8, 840) and bool(((feats >= 0) & (feats <= 1)).all())
    m2 = MiniRocketRidge(2, (3,), MiniRocketConfig(features=840))
    m2.load_state_dict({k: v.clone() for k, v in m.state_dict().items()})
    with torch.no_grad():
        assert torch.equal(m2(x[160:]), out)
    with pytest.raises(RuntimeError, match="missing"):
        MiniRocketRidge(2, (3,)).load_state_dict({"weight": torch.zeros(3, 5)})


def _run(tmp_path, readings, **train):
    raw = _cfg_dict(tmp_path)
    raw["train"] |= train
    raw["model"] = raw["model"] | {"minirocket": {"features": 840}}
    cfg = config_from_dict(raw, base_dir=tmp_path)
    tracker = MemoryTracker()
    m = train_from_config(cfg, tmp_path / "run", readings=readings, tracker=tracker)
    logged = {k: v for _, d in tracker.metrics for k, v in d.items()}
    return cfg, m, logged, tracker


def level_readings(seed: int = 0, n_ent: int = 6, seg: int = 64, n_seg: int = 16):
    """The class is the signal's level (-1, 0, +1) under unit noise. MiniRocket's kernels sum
    to zero, so its features are blind to a constant level (except at the padded edges): the
    CNN-RNN, whose mean pooling averages the noise away, must win here."""
    rng = np.random.default_rng(seed)
    sigs, labs, extra = {}, {}, {}
    for i in range(n_ent):
        lab = np.repeat(rng.integers(1, 4, n_seg), seg)
        x0 = (lab - 2.0) + rng.normal(size=len(lab))
        sigs[f"e{i}"] = np.stack([x0, rng.normal(size=len(lab))], 1)
        labs[f"e{i}"] = lab
        extra[f"e{i}"] = {"split": "test" if i < 2 else "train"}
    return make_readings(sigs, labels=labs, extra=extra)


def test_every_run_reports_the_baseline_beside_the_model(tmp_path):
    cfg, m, logged, tracker = _run(tmp_path, sine_readings())
    b = m["baseline"]
    assert b["model"] == "minirocket" and b["features"] == 840 and "chosen" not in m
    for part in ("val", "test"):
        assert logged[f"baseline/{part}_accuracy"] == b[part]["accuracy"]
        assert logged[f"{part}_accuracy"] == m[part]["accuracy"]  # the model's, untouched
    assert b["evaluation"]["fingerprint"] == m["evaluation"]["fingerprint"]  # same windows
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["baseline"]["test"] == b["test"]
    text = "\n".join(summary_lines(make_task(cfg.task, cfg.window), m))
    assert "baseline MiniRocket + ridge" in text
    assert f"test: accuracy {b['test']['accuracy']:.4f}" in text
    _, meta = load_model(tmp_path / "run" / "model.safetensors")
    assert meta.model["arch"] == "serial"  # report: the run's model is the CNN-RNN


def test_compete_keeps_the_baseline_when_it_wins_on_validation(tmp_path):
    # a CNN-RNN that cannot learn (lr 1e-7, one epoch) against frequency classes
    _, m, logged, tracker = _run(
        tmp_path, sine_readings(), baseline="compete", lr=1e-7, epochs=1, patience=None
    )
    assert m["chosen"] == "baseline" and tracker.tags["chosen_model"] == "minirocket"
    assert m["baseline"]["evaluation"]["value"] > m["cnnrnn"]["evaluation"]["value"]
    assert m["evaluation"] == m["baseline"]["evaluation"]  # what the registry compares
    assert logged["test_accuracy"] == m["baseline"]["test"]["accuracy"] > 0.9
    model, meta = load_model(tmp_path / "run" / "model.safetensors")
    assert meta.model["arch"] == "minirocket" and isinstance(model, MiniRocketRidge)


def test_compete_keeps_the_model_when_it_wins_on_validation(tmp_path):
    _, m, logged, _ = _run(
        tmp_path, level_readings(), baseline="compete", epochs=15, lr=0.01, patience=None
    )
    assert m["chosen"] == "model" and "cnnrnn" not in m
    assert m["evaluation"]["value"] > m["baseline"]["evaluation"]["value"]
    _, meta = load_model(tmp_path / "run" / "model.safetensors")
    assert meta.model["arch"] == "serial"


def test_minirocket_as_the_model_of_a_run(tmp_path):
    raw = _cfg_dict(tmp_path)
    raw["model"] = {"arch": "minirocket", "minirocket": {"features": 840}}
    cfg = config_from_dict(raw, base_dir=tmp_path)
    m = train_from_config(cfg, tmp_path / "run", readings=sine_readings(), tracker=MemoryTracker())
    assert m["epochs_run"] == 0 and "baseline" not in m and m["test"]["accuracy"] > 0.9
    assert (tmp_path / "run" / "plots" / "confusion_test.png").is_file()


def test_minirocket_refit_on_train_and_validation(tmp_path):
    raw = _cfg_dict(tmp_path)
    raw["model"] = {"arch": "minirocket", "minirocket": {"features": 840}}
    raw["train"] |= {"refit_full": True}
    cfg = config_from_dict(raw, base_dir=tmp_path)
    m = train_from_config(cfg, tmp_path / "run", readings=sine_readings(), tracker=MemoryTracker())
    assert m["refit"]["windows"] == m["n_windows"]["train_full"] > m["n_windows"]["train"]
    assert m["refit"]["epochs"] == 0 and m["test"]["accuracy"] > 0.9


def test_fit_uses_at_most_max_windows():
    x, y = _freq_batches(120, 1)
    m = MiniRocketRidge(2, (3,), MiniRocketConfig(features=168, max_windows=50))
    fit = fit_minirocket(m, [(x, None, y)], seed=0)
    assert fit.n_windows == 50
