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
    torch.manual_seed(0)
    model = build_model(tiny(arch="frame", frame={"channels": [4, 8]}), 2, 3).eval()
    x = torch.randn(3, 5, 2, 12, 10)  # (B, T, C, H, W)
    lengths = torch.tensor([5, 3, 1])
    out = model(x, lengths)
    assert out.shape == (3, 3)
    x2 = x.clone()
    x2[1, 3:] = 7.0  # change only padded frames
    torch.testing.assert_close(model(x2, lengths), out, rtol=0, atol=1e-6)
    model.train()
    model(x, lengths).sum().backward()
    with pytest.raises(ValueError, match="arch=frame"):
        model(torch.randn(2, 3, 8))


@pytest.mark.parametrize("name", list(SERIAL_VARIANTS))
def test_padding_never_changes_the_result(name):
    """A window padded to L gives exactly the output of the same window cut to its length."""
    torch.manual_seed(1)
    model = build_model(SERIAL_VARIANTS[name], 3, 4).eval()
    L = 32
    for n in (32, 24, 16):  # lengths the sub-sequence layout (L/4 = 8) can also express
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
