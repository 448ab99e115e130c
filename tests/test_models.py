"""The model family: forward/backward with shape checks for every variant, padding invariance,
overfitting one batch, finite outputs on a constant channel, config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlstm.models import build_model, param_groups
from cnnlstm.models.config import ModelConfig
from cnnlstm.windows import Windows, fit_normalizer


def tiny(**kw) -> ModelConfig:
    base = {"conv": {"channels": [8, 8], "kernel_size": 3}, "rnn": {"hidden_size": 8}}
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = base[k] | v
        else:
            base[k] = v
    return ModelConfig.model_validate(base)


SERIAL_VARIANTS = {
    "lstm_last": tiny(),
    "gru_mean": tiny(rnn={"cell": "gru"}, pooling="mean"),
    "bilstm_attention": tiny(rnn={"bidirectional": True, "num_layers": 2}, pooling="attention"),
    "separable_layernorm": tiny(conv={"separable": True, "norm": "layer"}),
    "dilated_avgpool": tiny(conv={"dilation": [1, 2], "pool": "avg"}),
    "nopool_nonorm": tiny(conv={"pool": "none", "norm": "none"}, head={"hidden": 16}),
    "subseq": tiny(arch="subseq", n_subsequences=4),
    "subseq_bigru_attention": tiny(
        arch="subseq", rnn={"cell": "gru", "bidirectional": True}, pooling="attention"
    ),
    "parallel_concat": tiny(arch="parallel", parallel={"rnn_downsample": 2}),
    "parallel_attention": tiny(
        arch="parallel", parallel={"fusion": "attention", "cnn_inputs": [0, 1], "rnn_inputs": [2]}
    ),
}


@pytest.mark.parametrize("name", list(SERIAL_VARIANTS))
@pytest.mark.parametrize("head", ["classification", "regression", "forecast"])
def test_forward_backward_shapes(name, head):
    torch.manual_seed(0)
    cfg = SERIAL_VARIANTS[name]
    B, C, L = 5, 3, 32
    n_out, horizon = {"classification": (4, None), "regression": (1, None), "forecast": (2, 3)}[
        head
    ]
    model = build_model(cfg, C, n_out, horizon)
    x = torch.randn(B, C, L)
    lengths = torch.tensor([32, 30, 17, 9, 32])
    for ln in (None, lengths):
        out = model(x, ln)
        assert out.shape == ((B, n_out) if horizon is None else (B, horizon, n_out))
        out.square().mean().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        model.zero_grad()
    feats = model.features(x, lengths)
    assert feats.ndim == 2 and feats.shape[0] == B


def test_frame_model_shapes_and_padding():
    """Windows (B, C, L) with C = planes x height x width pixels are read as frames; the
    (B, T, planes, H, W) tensor of the same frames gives the same output."""
    torch.manual_seed(0)
    cfg = tiny(arch="frame", frame={"channels": [4, 8], "height": 12, "width": 10})
    model = build_model(cfg, 2 * 12 * 10, 3).eval()
    frames = torch.randn(3, 5, 2, 12, 10)  # (B, T, planes, H, W)
    x = frames.flatten(2).transpose(1, 2)  # the windows: (B, C, L), channel (p * H + r) * W + c
    assert x.shape == (3, 240, 5) and x[0, 1 * 120 + 3 * 10 + 4, 2] == frames[0, 2, 1, 3, 4]
    lengths = torch.tensor([5, 3, 1])
    out = model(x, lengths)
    assert out.shape == (3, 3)
    torch.testing.assert_close(model(frames, lengths), out, rtol=0, atol=0)
    x2 = x.clone()
    x2[1, :, 3:] = 7.0  # change only padded frames
    torch.testing.assert_close(model(x2, lengths), out, rtol=0, atol=1e-6)
    # and a window cut to its valid frames gives the output it has padded
    torch.testing.assert_close(model(x[1:2, :, :3])[0], out[1], rtol=1e-5, atol=1e-6)
    assert model.features(x, lengths).shape == (3, 8)
    model.train()
    model(x, lengths).sum().backward()
    with pytest.raises(ValueError, match="arch=frame expects windows"):
        model(torch.randn(2, 3, 8))


def test_frame_config_errors_name_the_parameter():
    with pytest.raises(ValueError, match="model.frame.height and model.frame.width"):
        ModelConfig.model_validate({"arch": "frame", "frame": {"height": 4}})
    with pytest.raises(ValueError, match="17 input channels are not whole frames"):
        build_model(tiny(arch="frame", frame={"height": 4, "width": 4}), 17, 2)


@pytest.mark.parametrize("name", list(SERIAL_VARIANTS))
def test_padding_never_changes_the_result(name):
    """A window padded to L gives exactly the output of the same window cut to its length."""
    torch.manual_seed(1)
    model = build_model(SERIAL_VARIANTS[name], 3, 4).eval()
    L = 32
    for n in (32, 24, 17, 16):  # 17: the last sub-sequence (L/4 = 8 samples) is partly padding
        core = torch.randn(1, 3, n)
        padded = torch.zeros(2, 3, L)
        padded[0, :, :n] = core
        padded[1] = torch.randn(3, L)  # another window in the same batch
        lengths = torch.tensor([n, L])
        out_padded = model(padded, lengths)[0]
        if name.startswith("subseq"):
            ref = model(padded[:1, :, :L], torch.tensor([n]))[0]  # the same cut, alone
        else:
            ref = model(core)[0]
        torch.testing.assert_close(out_padded, ref, rtol=1e-5, atol=1e-5)
        # garbage in the padding region is ignored too
        noisy = padded.clone()
        noisy[0, :, n:] = 100.0
        torch.testing.assert_close(model(noisy, lengths)[0], out_padded, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["subseq", "subseq_bigru_attention"])
def test_subseq_result_depends_on_the_window_length_not_on_padding(name):
    """arch: subseq cuts the window as given, padding included, into n_subsequences pieces of
    L / n_subsequences samples. At one L (window.size: training and scoring use no other) the
    padding changes nothing (test above); the same samples padded to another L are cut into
    longer pieces and give another result. What decides it is the piece length: padded to 128
    and cut into 16 pieces (8 samples each, as 32 / 4) the result is again exactly that of L 32.
    docs/training.md says so."""
    torch.manual_seed(1)
    model = build_model(SERIAL_VARIANTS[name], 3, 4).eval()
    core = torch.randn(1, 3, 24)

    def padded_to(L: int) -> torch.Tensor:
        x = torch.zeros(1, 3, L)
        x[0, :, :24] = core
        return model(x, torch.tensor([24]))[0]

    at_32, at_128 = padded_to(32), padded_to(128)
    assert (at_32 - at_128).abs().max() > 1e-3  # pieces of 32 samples instead of 8
    model.S = 16  # the same weights, pieces of 128 / 16 = 8 samples
    torch.testing.assert_close(padded_to(128), at_32, rtol=1e-5, atol=1e-6)


def test_overfit_one_batch():
    torch.manual_seed(0)
    model = build_model(tiny(head={"dropout": 0.0}, conv={"dropout": 0.0}), 3, 4)
    x, y = torch.randn(16, 3, 32), torch.randint(0, 4, (16,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    model.eval()
    assert (model(x).argmax(1) == y).all()


def test_constant_channel_gives_finite_output():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3, 32)).astype(np.float32)
    x[:, 1] = 5.0  # a stuck sensor
    w = Windows(
        x,
        np.full(8, 32),
        np.zeros(8, np.int64),
        np.array(["a"] * 8),
        np.zeros(8, np.int64),
        np.zeros(8, np.int64),
    )
    norm = fit_normalizer(w, "standard")
    xn = torch.from_numpy(norm.apply(w.x, w.lengths))
    for cfg in SERIAL_VARIANTS.values():
        model = build_model(cfg, 3, 4)
        out = model(xn)
        assert torch.isfinite(out).all()
        model.eval()
        assert torch.isfinite(model(xn)).all()


def test_param_groups_split_cnn_rnn_head():
    model = build_model(tiny(arch="parallel", parallel={"fusion": "attention"}), 3, 2)
    g = param_groups(model)
    assert g["cnn"] and g["rnn"] and g["head"]
    n = sum(p.numel() for ps in g.values() for p in ps)
    assert n == sum(p.numel() for p in model.parameters())


def test_config_errors_name_the_parameter():
    with pytest.raises(ValueError, match="kernel_size"):
        ModelConfig.model_validate({"conv": {"kernel_size": 4}})
    with pytest.raises(ValueError, match="dilation"):
        ModelConfig.model_validate({"conv": {"channels": [4, 4], "dilation": [1]}})
    with pytest.raises(ValueError, match="extra"):
        ModelConfig.model_validate({"conv": {"chanels": [4]}})
    with pytest.raises(ValueError, match="n_subsequences"):
        build_model(tiny(arch="subseq", n_subsequences=5), 3, 2)(torch.randn(1, 3, 32))
    with pytest.raises(ValueError, match="rnn_inputs"):
        build_model(tiny(arch="parallel", parallel={"rnn_inputs": [7]}), 3, 2)
    with pytest.raises(ValueError, match="n_outputs"):
        build_model(tiny(), 3, 0)


# ------------------------------------------------------------------ arch: frame, end to end

H = W = 4
PIXELS = tuple(f"px{r}{c}" for r in range(H) for c in range(W))


def _clips(n_ent: int = 6, seg: int = 24, n_seg: int = 10, seed: int = 0):
    """Readings of a 4x4 sensor array, one frame per sample (16 channels, row-major): class 1
    shows a horizontal bar, class 2 a vertical one, at a random row/column, with noise."""
    from conftest_train import make_readings

    rng = np.random.default_rng(seed)
    sigs, labs, extra = {}, {}, {}
    for i in range(n_ent):
        classes = rng.integers(1, 3, n_seg)
        frames = 0.1 * rng.normal(size=(n_seg * seg, H, W))
        for j, c in enumerate(classes):
            for t in range(j * seg, (j + 1) * seg):
                k = rng.integers(0, H)
                if c == 1:
                    frames[t, k, :] += 1.0
                else:
                    frames[t, :, k] += 1.0
        sigs[f"e{i}"] = frames.reshape(len(frames), -1)
        labs[f"e{i}"] = np.repeat(classes, seg)
        extra[f"e{i}"] = {"split": "test" if i < 2 else "train"}
    return make_readings(sigs, labels=labs, extra=extra, channels=PIXELS)


def test_frame_arch_trains_and_scores_from_a_config(tmp_path):
    """`model.arch: frame` from a config: windows of 16 pixel channels are read as 4x4 frames,
    trained by `train_from_config` and scored through the pyfunc model (raw readings in, the
    path `cnnlstm score` takes), reproducing the model's own predictions."""
    from cnnlstm.checkpoint import load_model
    from cnnlstm.config import config_from_dict
    from cnnlstm.pyfunc import CnnLstmModel
    from cnnlstm.train import train_from_config

    raw = {
        "data": {
            "name": "clips",
            "entity": {"column": "entity"},
            "timestamp": {"column": "t", "format": "epoch_ms"},
            "channels": [{"name": n} for n in PIXELS],
            "label": {"column": "label"},
            "columns": {"split": "string"},
        },
        "window": {
            "size": 8,
            "stride": 4,
            "label": "majority",
            "min_purity": 0.9,
            "split": {"method": "column", "val_fraction": 0.25},
        },
        "model": {
            "arch": "frame",
            "frame": {"channels": [8], "height": H, "width": W},
            "rnn": {"hidden_size": 16},
        },
        "train": {
            "epochs": 4,
            "batch_size": 32,
            "lr": 5e-3,
            "progress": False,
            "baseline": "off",
            "plots": False,  # t-SNE is most of the time; model.features is tested above
        },
    }
    cfg = config_from_dict(raw, base_dir=tmp_path)
    readings = _clips()
    out = tmp_path / "run"
    m = train_from_config(cfg, out, readings=readings)
    assert m["test"]["accuracy"] >= 0.8, m["history"]  # chance: 0.5

    model, meta = load_model(out / "model.safetensors")
    assert meta.model["arch"] == "frame" and meta.model["frame"]["height"] == H
    pf = CnnLstmModel.from_file(out / "model.safetensors", "cpu")
    test = readings.filter(readings["split"] == "test")
    scored = pf.predict_frame(test)
    assert scored.height > 0
    labelled = scored.filter(scored["label"].is_not_null())
    acc = (labelled["predicted"] == labelled["label"]).mean()
    assert acc >= 0.8, acc
    # the same windows through the artifact's model give the same predictions
    from cnnlstm.windows import Normalizer

    w, _ = pf.windows(test)
    x = torch.from_numpy(Normalizer.from_dict(meta.normalizer).apply(w.x, w.lengths))
    with torch.no_grad():
        logits = model(x, torch.from_numpy(w.lengths))
    classes = np.array(meta.classes)
    np.testing.assert_array_equal(scored["predicted"].to_numpy(), classes[logits.argmax(1)])
