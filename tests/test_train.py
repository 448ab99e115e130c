"""The training engine on tiny synthetic data: learning, exact resume, crash-safe checkpoints,
the NaN guard, forecasting vs persistence, the end-to-end config path and the CLI command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest_train import make_readings

from cnnlstm.checkpoint import CheckpointError, load_model, load_state, save_state
from cnnlstm.config import config_from_dict
from cnnlstm.models.config import ModelConfig
from cnnlstm.tracking import MemoryTracker
from cnnlstm.train import TrainingDivergedError, prepare_data, seed_everything, train_windows
from cnnlstm.train_config import TrainConfig
from cnnlstm.window_config import WindowConfig

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = {"conv": {"channels": [8, 8], "kernel_size": 3}, "rnn": {"hidden_size": 16}}
FREQS = {1: 0.04, 2: 0.12, 3: 0.25}  # cycles per sample, one per class


def tiny_train(**kw) -> TrainConfig:
    return TrainConfig(
        **(
            {
                "epochs": 4,
                "batch_size": 16,
                "lr": 5e-3,
                "progress": False,
                "plots": False,
                "patience": None,
            }
            | kw
        )
    )


def sine_readings(n_ent: int = 6, seg: int = 64, n_seg: int = 16, seed: int = 0):
    """Entities made of 64-sample segments; the class sets the sine frequency (+ noise)."""
    rng = np.random.default_rng(seed)
    sigs, labs, extra = {}, {}, {}
    for i in range(n_ent):
        classes = rng.integers(1, 4, n_seg)
        lab = np.repeat(classes, seg)
        t = np.arange(len(lab))
        phase = rng.uniform(0, 2 * np.pi)
        f = np.array([FREQS[c] for c in lab])
        x0 = np.sin(2 * np.pi * np.cumsum(f) + phase) + 0.1 * rng.normal(size=len(t))
        x1 = 0.5 * rng.normal(size=len(t))
        sigs[f"e{i}"] = np.stack([x0, x1], 1)
        labs[f"e{i}"] = lab
        extra[f"e{i}"] = {"split": "test" if i < 2 else "train"}
    return make_readings(sigs, labels=labs, extra=extra)


def class_window_cfg(**kw) -> WindowConfig:
    return WindowConfig(
        **(
            {
                "size": 32,
                "stride": 16,
                "label": "majority",
                "min_purity": 0.9,
                "split": {"method": "column", "val_fraction": 0.25},
            }
            | kw
        )
    )


@pytest.fixture(scope="module")
def class_prep():
    return prepare_data(sine_readings(), ["c0", "c1"], class_window_cfg())


def test_learns_synthetic_classes(class_prep):
    seed_everything(0, True)
    mcfg = ModelConfig.model_validate(TINY_MODEL | {"head": {"dropout": 0.1}})
    model, res = train_windows(class_prep, mcfg, tiny_train(epochs=8))
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert res.history[res.best_epoch]["val_accuracy"] >= 0.8


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_resume_after_interruption_is_bitwise_identical(class_prep, tmp_path, ema_decay):
    mcfg = ModelConfig.model_validate(TINY_MODEL | {"head": {"dropout": 0.3}})
    tcfg = tiny_train(
        epochs=4, patience=3, augment={"scale": 0.1, "jitter": 0.05}, ema_decay=ema_decay
    )

    seed_everything(0, True)
    ref, ref_res = train_windows(class_prep, mcfg, tcfg, ckpt_path=tmp_path / "a.ckpt")

    seed_everything(0, True)
    with pytest.raises(KeyboardInterrupt):
        train_windows(
            class_prep, mcfg, tcfg, ckpt_path=tmp_path / "b.ckpt", interrupt_after_epoch=1
        )
    assert load_state(tmp_path / "b.ckpt")["epoch"] == 1
    torch.manual_seed(12345)  # a fresh process would have another RNG state: resume restores it
    seed_everything(0, True)
    torch.rand(7)
    resumed, res = train_windows(class_prep, mcfg, tcfg, ckpt_path=tmp_path / "b.ckpt", resume=True)
    assert _state_equal(ref.state_dict(), resumed.state_dict())
    assert res.history == ref_res.history
    a, b = load_state(tmp_path / "a.ckpt"), load_state(tmp_path / "b.ckpt")
    assert _state_equal(a["model"], b["model"])
    assert a["best"]["epoch"] == b["best"]["epoch"]
    if ema_decay:
        assert _state_equal(a["ema"], b["ema"])


def test_ema_keeps_the_moving_average_of_the_weights(class_prep):
    """With train.ema_decay the final model is the step-wise EMA of the weights, not the last
    iterate: replaying the same run and averaging by hand gives the same tensors."""
    mcfg = ModelConfig.model_validate(TINY_MODEL)
    decay = 0.8
    tcfg = tiny_train(epochs=2, patience=None, restore_best=False, ema_decay=decay)
    seed_everything(0, True)
    ema_model, _ = train_windows(class_prep, mcfg, tcfg)

    seed_everything(0, True)
    plain, _ = train_windows(class_prep, mcfg, tcfg.model_copy(update={"ema_decay": None}))
    # the averaged weights differ from the last iterate of the identical run ...
    assert not _state_equal(ema_model.state_dict(), plain.state_dict())
    # ... and equal a hand-rolled EMA over the optimizer steps of that run
    seed_everything(0, True)
    snaps = []
    orig_step = torch.optim.AdamW.step

    def step(self, *a, **k):
        out = orig_step(self, *a, **k)
        snaps.append({n: p.detach().clone() for n, p in self._model_ref.named_parameters()})
        return out

    import cnnlstm.loop as tr

    orig_make = tr.make_optimizer

    def make(model, cfg):
        opt = orig_make(model, cfg)
        opt._model_ref = model
        return opt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.AdamW, "step", step)
        mp.setattr(tr, "make_optimizer", make)
        train_windows(class_prep, mcfg, tcfg.model_copy(update={"ema_decay": None}))
    avg = dict(snaps[0])
    for snap in snaps[1:]:
        avg = {n: decay * avg[n] + (1 - decay) * snap[n] for n in avg}
    got = dict(ema_model.named_parameters())
    for n, v in avg.items():
        torch.testing.assert_close(got[n].detach(), v, rtol=1e-5, atol=1e-6)


_KILL_CHILD = textwrap.dedent("""
    import os, sys, time, torch
    from cnnlstm import checkpoint
    checkpoint.save_state(sys.argv[1], {"epoch": 1, "w": torch.ones(1000)})
    real_fsync = os.fsync
    def slow_fsync(fd):  # the new file is half-written when we get killed
        print("writing", flush=True)
        time.sleep(60)
        real_fsync(fd)
    os.fsync = slow_fsync
    checkpoint.save_state(sys.argv[1], {"epoch": 2, "w": torch.zeros(3_000_000)})
""")


def test_kill_during_checkpoint_write_keeps_previous(tmp_path):
    path = tmp_path / "ckpt" / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_CHILD, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        temps = list(path.parent.glob(".last.ckpt.*.tmp"))
        assert temps and temps[0].stat().st_size > 1_000_000  # the new state is on disk, partly
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    st = load_state(path)
    assert st["epoch"] == 1 and torch.equal(st["w"], torch.ones(1000))
    save_state(path, {"epoch": 3})  # the next save cleans the stale temp file
    assert not list(path.parent.glob(".last.ckpt.*.tmp"))


def test_corrupted_checkpoint_is_rejected_and_never_unpickled(tmp_path):
    p = tmp_path / "x.ckpt"
    save_state(p, {"epoch": 0, "w": torch.arange(10)})
    raw = bytearray(p.read_bytes())
    raw[-20] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        load_state(p)
    p.write_bytes(bytes(raw[:50]))
    with pytest.raises(CheckpointError):
        load_state(p)

    class Evil:  # an arbitrary object: weights_only refuses it
        def __reduce__(self):
            return (print, ("pwned",))

    save_state(p, {"obj": Evil()})
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|unsupported"):
        load_state(p)


class _Explodes(torch.nn.Module):
    """Delegates to a real model, then returns NaN from the `after`-th call on."""

    def __init__(self, inner, after):
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, x, lengths=None):
        self.calls += 1
        out = self.inner(x, lengths)
        return out * float("nan") if self.calls > self.after and self.training else out


def test_nan_guard_stops_and_keeps_good_checkpoint(class_prep, tmp_path):
    from cnnlstm.loop import fit
    from cnnlstm.models import build_model
    from cnnlstm.windows import Batches

    seed_everything(0, True)
    inner = build_model(ModelConfig.model_validate(TINY_MODEL), 2, 3)
    tb = Batches(class_prep.parts["train"], class_prep.norm, "cpu", 16, shuffle=True)
    steps = tb.n_batches()
    model = _Explodes(inner, after=steps + 2)  # blows up inside epoch 2
    ck = tmp_path / "last.ckpt"
    with pytest.raises(TrainingDivergedError, match="epoch 1"):
        fit(model, tb, None, tiny_train(epochs=3), class_prep.task, ck)
    st = load_state(ck)
    assert st["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in st["model"].values() if v.is_floating_point())


def test_forecast_beats_persistence():
    """A sine with period 16 samples: the last value is a poor guess 1-4 steps ahead."""
    rng = np.random.default_rng(0)
    sigs = {}
    for i in range(4):
        t = np.arange(1200)
        sigs[f"e{i}"] = np.sin(2 * np.pi * t / 16 + rng.uniform(0, 6)) + 0.05 * rng.normal(
            size=len(t)
        )
    df = make_readings(sigs)
    wcfg = WindowConfig(
        size=32,
        stride=4,
        label="forecast",
        horizon=4,
        split={"method": "time", "val_fraction": 0.15, "test_fraction": 0.2, "purge_s": 32},
    )
    prep = prepare_data(df, ["c0"], wcfg)
    seed_everything(0, True)
    mcfg = ModelConfig.model_validate(
        TINY_MODEL | {"pooling": "attention", "head": {"dropout": 0.0}}
    )
    model, _ = train_windows(prep, mcfg, tiny_train(epochs=5, batch_size=32))
    from cnnlstm.train import evaluate_split

    m, pred = evaluate_split(model, prep.parts["test"], prep, torch.device("cpu"), 256)
    assert pred.shape == prep.parts["test"].y.shape
    assert len(m["rmse_per_horizon"]) == 4
    assert m["rmse"] < 0.5 * m["persistence"]["rmse"], m


def _cfg_dict(tmp_path, **sections):
    raw = {
        "data": {
            "name": "synth",
            "entity": {"column": "entity"},
            "timestamp": {"column": "t", "format": "epoch_ms"},
            "channels": [{"name": "c0"}, {"name": "c1"}],
            "label": {"column": "label"},
            "columns": {"split": "string"},
        },
        "window": class_window_cfg().model_dump(mode="json"),
        "model": TINY_MODEL,
        "train": {"epochs": 2, "batch_size": 16, "progress": False, "embedding_points": 60},
    }
    raw |= sections
    return raw


def test_train_from_config_writes_model_metrics_plots(tmp_path):
    from cnnlstm.train import train_from_config

    cfg = config_from_dict(_cfg_dict(tmp_path), base_dir=tmp_path)
    tracker = MemoryTracker()
    out = tmp_path / "run"
    m = train_from_config(cfg, out, readings=sine_readings(), tracker=tracker)
    assert m["task"] == "classify" and 0 <= m["test"]["accuracy"] <= 1
    assert (out / "model.safetensors").is_file() and (out / "checkpoint" / "last.ckpt").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"]["confusion_matrix"] == m["test"]["confusion_matrix"]
    for name in ("curves.png", "confusion_test.png", "features_pca.png", "features_tsne.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    assert tracker.status == "FINISHED" and len([s for s, _ in tracker.metrics if s == 1]) == 1
    assert tracker.params["model.rnn.hidden_size"] == 16

    # the artifact alone rebuilds the model and reproduces the predictions
    model, meta = load_model(out / "model.safetensors")
    assert meta.classes == [1, 2, 3] and meta.channels == ["c0", "c1"]
    from cnnlstm.windows import Normalizer, build_windows

    wcfg = WindowConfig.model_validate(meta.window)
    ws = build_windows(sine_readings(), meta.channels, wcfg)
    norm = Normalizer.from_dict(meta.normalizer)
    x = torch.from_numpy(norm.apply(ws.windows.x, ws.windows.lengths))
    with torch.no_grad():
        acc = (model(x).argmax(1).numpy() == ws.windows.y).mean()
    assert acc > 0.3

    # --resume of a finished run trains no further and reports the same metrics
    m2 = train_from_config(cfg, out, resume=True, readings=sine_readings())
    assert m2["test"]["accuracy"] == m["test"]["accuracy"]
    assert m2["history"] == m["history"]


def test_cli_train_command_json_and_config_error(tmp_path, monkeypatch):
    import typer
    import yaml
    from typer.testing import CliRunner

    import cnnlstm.lake
    from cnnlstm.cli_train import train_command

    monkeypatch.setattr(cnnlstm.lake, "scan_readings", lambda *a, **k: sine_readings().lazy())
    cfg_path = tmp_path / "c.yaml"
    raw = _cfg_dict(tmp_path)
    raw["train"] |= {"plots": False}
    cfg_path.write_text(yaml.safe_dump(raw))
    app = typer.Typer()
    app.command()(train_command)
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "--config",
            str(cfg_path),
            "--out",
            str(tmp_path / "o"),
            "--json",
            "--set",
            "train.epochs=1",
        ],
    )
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["epochs_run"] == 1 and "accuracy" in m["test"]
    bad = runner.invoke(app, ["--config", str(cfg_path), "--set", "model.rnn.cell=tcn"])
    assert bad.exit_code == 2


def test_rotation_augmentation_is_a_rotation_in_raw_units():
    from cnnlstm.augment import augment, rotations
    from cnnlstm.windows import Normalizer

    r = rotations(8, 20.0, "cpu")
    torch.testing.assert_close(
        r @ r.transpose(1, 2), torch.eye(3).expand(8, 3, 3), atol=1e-6, rtol=0
    )
    angle = torch.rad2deg(torch.arccos(((r.diagonal(dim1=1, dim2=2).sum(1) - 1) / 2).clamp(-1, 1)))
    assert (angle <= 20.0 + 1e-3).all()
    norm = Normalizer(np.array([0.5, -1, 2, 0], np.float32), np.array([2, 1, 3, 1], np.float32))
    raw = torch.randn(4, 4, 10)
    x = (raw - torch.from_numpy(norm.center)[None, :, None]) / torch.from_numpy(norm.scale)[
        None, :, None
    ]
    cfg = tiny_train(augment={"rotate_deg": 20, "rotate_groups": [[0, 1, 2]]})
    out = augment(x, None, cfg.augment, norm)
    back = (
        out * torch.from_numpy(norm.scale)[None, :, None]
        + torch.from_numpy(norm.center)[None, :, None]
    )
    # the norm of the 3-axis vector is preserved at every instant; channel 3 is untouched
    torch.testing.assert_close(
        back[:, :3].norm(dim=1), raw[:, :3].norm(dim=1), atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(out[:, 3], x[:, 3])
    with pytest.raises(ValueError, match="rotate_groups"):
        tiny_train(augment={"rotate_deg": 5})


@pytest.mark.parametrize("together", [True, False])
def test_rotate_together_turns_all_sensor_triples_by_one_rotation(together):
    """A phone is one rigid body: with rotate_together its accelerometer and gyroscope triples
    are turned by the same rotation, so the angle between them is preserved at every instant."""
    from cnnlstm.augment import augment

    torch.manual_seed(0)
    acc, gyro = torch.randn(16, 3, 10), torch.randn(16, 3, 10)
    x = torch.cat([acc, gyro], 1)
    cfg = tiny_train(
        augment={
            "rotate_deg": 90,
            "rotate_groups": [[0, 1, 2], [3, 4, 5]],
            "rotate_together": together,
        }
    )
    out = augment(x, None, cfg.augment, None)
    dot_before = (acc * gyro).sum(1)
    dot_after = (out[:, :3] * out[:, 3:]).sum(1)
    if together:
        torch.testing.assert_close(dot_after, dot_before, atol=1e-4, rtol=1e-4)
    else:
        assert (dot_after - dot_before).abs().max() > 0.1
    torch.testing.assert_close(out[:, 3:].norm(dim=1), gyro.norm(dim=1), atol=1e-4, rtol=1e-4)


def test_regression_end_to_end_with_padding(tmp_path):
    """Variable-length pieces padded (lengths kept), a regression target at the window end."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(8):
        n = int(rng.integers(10, 40))
        sig = rng.normal(size=(n, 1)).cumsum(0)
        df = make_readings({f"e{i}": sig})
        frames.append(df.with_columns(target=(2 * df["c0"] + 1).cast(float)))
    import polars as pl

    df = pl.concat(frames)
    wcfg = WindowConfig(
        size=16,
        stride=8,
        short="pad",
        min_length=4,
        label="regression_end",
        target_column="target",
        split={"method": "entity", "val_fraction": 0.25, "test_fraction": 0.25},
    )
    prep = prepare_data(df, ["c0"], wcfg)
    assert (prep.parts["train"].lengths <= 16).all()
    seed_everything(0, True)
    model, res = train_windows(
        prep, ModelConfig.model_validate(TINY_MODEL | {"pooling": "mean"}), tiny_train(epochs=3)
    )
    assert res.monitor == "val_rmse" and np.isfinite(res.best_score)  # in the target's units


def test_no_validation_split_trains_fixed_epochs():
    prep = prepare_data(
        sine_readings(n_seg=6),
        ["c0", "c1"],
        class_window_cfg(split={"method": "column", "val_fraction": 0.0}),
    )
    assert len(prep.parts["val"]) == 0
    seed_everything(0, True)
    _, res = train_windows(prep, ModelConfig.model_validate(TINY_MODEL), tiny_train(epochs=2))
    assert res.monitor == "train_loss" and len(res.history) == 2
    assert "val_loss" not in res.history[0]


@pytest.mark.parametrize("restore_best", [True, False])
def test_metrics_say_which_epoch_the_saved_weights_are(tmp_path, restore_best):
    """`weights_epoch` is the best epoch when its weights were restored, else the last one, and
    the saved model is the last checkpoint's weights exactly when no best epoch was restored."""
    from cnnlstm.train import train_from_config

    raw = _cfg_dict(tmp_path)
    raw["train"] |= {"epochs": 3, "patience": None, "restore_best": restore_best}
    cfg = config_from_dict(raw, base_dir=tmp_path)
    m = train_from_config(cfg, tmp_path / "run", readings=sine_readings())
    assert m["weights_epoch"] == (m["best_epoch"] if restore_best else 3)
    saved, _ = load_model(tmp_path / "run" / "model.safetensors")
    ckpt = load_state(tmp_path / "run" / "checkpoint" / "last.ckpt")
    same_as_last = _state_equal(saved.state_dict(), ckpt["model"])
    assert same_as_last == (not restore_best or m["best_epoch"] == 3)


def test_derived_channels_train_and_reproduce_at_inference(tmp_path):
    """window.derived adds gravity/body channels before windowing: the model is built for them,
    the checkpoint meta keeps the window config, and the pyfunc path (raw readings in) rebuilds
    exactly the training windows and predictions."""
    from cnnlstm.pyfunc import CnnLstmModel
    from cnnlstm.train import evaluate_split, train_from_config

    wc = class_window_cfg(
        derived=["gravity", "body"], derived_from=["c0"], gravity_cutoff_hz=0.02
    ).model_dump(mode="json")
    cfg = config_from_dict(_cfg_dict(tmp_path, window=wc), base_dir=tmp_path)
    cfg.train.plots = False
    out = tmp_path / "run"
    readings = sine_readings()
    train_from_config(cfg, out, readings=readings)
    model, meta = load_model(out / "model.safetensors")
    assert meta.channels == ["c0", "c1"] and meta.n_channels == 4
    assert meta.input_channels == ["c0", "c1", "c0_gravity", "c0_body"]
    assert meta.window["derived"] == ["gravity", "body"]

    prep = prepare_data(readings, ["c0", "c1"], cfg.window)
    assert prep.parts["test"].x.shape[1] == 4
    _, out_ = evaluate_split(model, prep.parts["test"], prep, torch.device("cpu"), 256)
    pred = out_.argmax(1)

    pf = CnnLstmModel.from_file(out / "model.safetensors", "cpu")
    test_ents = {e for e in prep.parts["test"].entity.tolist()}
    raw = readings.filter(readings["entity_id"].is_in(sorted(test_ents)))
    w, _ = pf.windows(raw)
    key = {
        (e, s): i for i, (e, s) in enumerate(zip(w.entity.tolist(), w.start.tolist(), strict=True))
    }
    rows = [
        key[(e, s)]
        for e, s in zip(
            prep.parts["test"].entity.tolist(), prep.parts["test"].start.tolist(), strict=True
        )
    ]
    np.testing.assert_array_equal(w.x[rows], prep.parts["test"].x)  # same derived channels
    frame = pf.predict_frame(raw)
    classes = np.array(meta.classes)
    np.testing.assert_array_equal(frame["predicted"].to_numpy()[rows], classes[pred])


def test_refit_full_trains_on_train_and_val_for_fixed_epochs(tmp_path):
    """train.refit_full: val metrics come from the selection model, then a fresh model is trained
    on train + val entities (never test) for exactly train.epochs epochs."""
    from cnnlstm.train import train_from_config

    raw = _cfg_dict(tmp_path)
    raw["train"] |= {"epochs": 2, "plots": False, "refit_full": True}
    cfg = config_from_dict(raw, base_dir=tmp_path)
    readings = sine_readings()
    m = train_from_config(cfg, tmp_path / "run", readings=readings)
    prep = prepare_data(readings, ["c0", "c1"], cfg.window, refit=True)
    full = prep.train_full
    assert m["refit_full"] and m["refit"]["epochs"] == 2
    assert (
        m["n_windows"]["train_full"]
        == len(full)
        == len(prep.parts["train"]) + len(prep.parts["val"])
    )  # no train_stride here: train + val windows exactly
    assert not set(full.entity.tolist()) & set(prep.parts["test"].entity.tolist())
    assert "val" in m and "test" in m
    _, meta = load_model(tmp_path / "run" / "model.safetensors")
    assert meta.normalizer["center"] != prep.norm.to_dict()["center"]  # refitted on full


def test_model_artifact_of_another_format_version_is_refused(tmp_path):
    """The metadata is typed and versioned: an artifact written by an older cnnlstm (format
    cnnlstm-model/1, an untyped dict) is refused with a message saying what to do."""
    from safetensors.torch import save as st_save

    from cnnlstm.checkpoint import _digest, atomic_write_bytes

    tensors = {"w": torch.zeros(2)}
    meta_json = json.dumps({"format": "cnnlstm-model/1", "task": "classification"})
    header = {"cnnlstm": meta_json, "sha256": _digest(meta_json, tensors)}
    atomic_write_bytes(tmp_path / "old.safetensors", st_save(tensors, metadata=header))
    with pytest.raises(CheckpointError, match="cnnlstm-model/1.*retrain"):
        load_model(tmp_path / "old.safetensors")


def test_epoch_line_shows_the_total_elapsed_and_time_left():
    from cnnlstm.loop import _fmt_row

    row = {"epoch": 2, "train_loss": 0.5, "lr": 1e-3, "val_macro_f1": 0.9}
    line = _fmt_row(row, "val_macro_f1", 2, epochs=25, spent=41.2, eta=312.0)
    assert line == (
        "epoch   3/25 | train_loss 0.5000 | val_macro_f1 0.9000 | 0:41 elapsed, 5:12 left *"
    )
    last = {"epoch": 24, "train_loss": 0.25, "lr": 1e-3}
    assert _fmt_row(last, "train_loss", -1, 25, 500.0, 0.0) == (
        "epoch  25/25 | train_loss 0.2500 | 8:20 elapsed"
    )
