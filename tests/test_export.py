"""`cnnlstm export --format onnx` (issue 13, item 3): a tiny trained model, loaded through the
verified path of `cnnlstm score`, exported with a dynamic batch and window-length axis; its
metadata JSON beside it; ONNX Runtime (when installed) gives torch's outputs within 1e-4 on a
padded batch of real windows. MiniRocket exports with a fixed length; archs that cannot export
say which. Real MLflow (SQLite store), the tiny HAPT lake, one epoch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from cli_app import app
from mlflow import MlflowClient
from mlflow_server import Trained, tiny_config, train_tracked
from typer.testing import CliRunner

from cnnlstm.export import ExportError, export_onnx
from cnnlstm.lake import scan_readings
from cnnlstm.model_trust import WEIGHTS_TAG
from cnnlstm.pyfunc import CnnLstmModel

pytest_plugins = ["mlflow_server"]  # the session's tiny HAPT lake
pytest.importorskip("onnx")  # torch's exporter writes through it (the `onnx` extra)

NAME = "hapt-tiny"


@pytest.fixture(scope="module")
def trained(hapt_lake, tmp_path_factory) -> Trained:
    d = tmp_path_factory.mktemp("export")
    cfg = tiny_config(d, hapt_lake, f"sqlite:///{d / 'mlflow.db'}", train={"epochs": 1})
    return train_tracked(cfg, d / "run")


def _cfg_file(trained: Trained, tmp: Path) -> str:
    p = tmp / "c.yaml"
    p.write_text(yaml.safe_dump(trained.cfg.model_dump(mode="json")))
    return str(p)


def _padded_windows(model: CnnLstmModel, cfg, n: int = 9):
    """Real windows of the test recording, raw, with some cut short (zero beyond the length)."""
    readings = scan_readings(cfg.lake_uri).filter(pl.col("split") == "test").collect()
    w, _ = model.windows(readings)
    x, lengths = w.x[:n].copy(), w.lengths[:n].copy()
    size = x.shape[-1]
    lengths[1::2] = np.array([size - 1, size // 2, 7, size * 3 // 4, 20])[: len(lengths[1::2])]
    x *= np.arange(size)[None, None, :] < lengths[:, None, None]
    return x, lengths


def test_export_onnx_matches_torch_on_a_padded_batch(trained, tmp_path):
    cfg = trained.cfg
    out = tmp_path / "served" / "model.onnx"
    r = CliRunner().invoke(
        app,
        ["export", "-c", _cfg_file(trained, tmp_path), "--model", f"models:/{NAME}/1"]
        + ["--format", "onnx", "-o", str(out), "--json"],
    )
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout[r.stdout.index("{") :])
    side = json.loads(Path(f"{out}.json").read_text())
    assert out.is_file() and side["format"] == "cnnlstm-onnx/1"
    # where it came from: the registry version, the very weights the pin names
    pinned = MlflowClient(cfg.tracking.uri).get_model_version(NAME, "1").tags[WEIGHTS_TAG]
    assert side["source"]["model_uri"] == f"models:/{NAME}/1"
    assert side["source"]["weights_sha256"] == pinned == rec["source"]["weights_sha256"]
    assert side["source"]["verified_against"] == f"registry: model version {NAME} v1"
    # how to feed it and read it
    x_in, len_in = side["inputs"]
    assert x_in["name"] == "x" and x_in["shape"] == ["batch", 6, "length"]
    assert len_in == {
        "name": "lengths",
        "dtype": "int64",
        "shape": ["batch"],
        "what": len_in["what"],
    }
    assert x_in["channels"] == cfg.data.channel_names
    assert len(side["normalizer"]["center"]) == len(side["normalizer"]["scale"]) == 6
    assert side["classes"] and len(side["class_names"]) == len(side["classes"])
    assert side["outputs"][0]["shape"] == ["batch", len(side["classes"])]
    assert side["window"]["size"] == cfg.window.size and side["task"]["kind"] == "classify"

    ort = pytest.importorskip("onnxruntime")
    assert side["check"]["max_abs_diff"] <= 1e-4  # the export's own check ran
    # a padded batch of real windows: the user's side normalises with the JSON's figures
    model = CnnLstmModel.from_file(trained.out / "model.safetensors", "cpu")
    x, lengths = _padded_windows(model, cfg)
    center = np.asarray(side["normalizer"]["center"], np.float32)[None, :, None]
    scale = np.asarray(side["normalizer"]["scale"], np.float32)[None, :, None]
    xn = ((x - center) / scale) * (np.arange(x.shape[-1]) < lengths[:, None])[:, None, :]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": xn.astype(np.float32), "lengths": lengths.astype(np.int64)})[0]
    want = model.forward(x, lengths, batch_size=4)  # the pyfunc's own path
    assert got.shape == want.shape == (len(lengths), len(side["classes"]))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # dynamic axes: another batch size and a longer window length
    x2 = np.concatenate([xn, xn], axis=2)[:3].astype(np.float32)
    l2 = np.array([x2.shape[-1], 40, 100], np.int64)
    x2 *= np.arange(x2.shape[-1]) < l2[:, None, None]
    got2 = sess.run(None, {"x": x2, "lengths": l2})[0]
    with torch.inference_mode():
        want2 = model.model(torch.from_numpy(x2), torch.from_numpy(l2)).numpy()
    np.testing.assert_allclose(got2, want2, atol=1e-4, rtol=0)


def test_export_refuses_what_it_cannot_do(trained, tmp_path):
    cfg_path = _cfg_file(trained, tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["export", "-c", cfg_path, "--format", "tflite", "-o", "m.tfl"])
    assert r.exit_code == 2 and "onnx" in r.output
    r = runner.invoke(
        app, ["export", "-c", cfg_path, "--model", f"models:/{NAME}@nope", "-o", "m.onnx"]
    )
    assert r.exit_code == 2 and "no alias" in r.output
    # an arch whose graph does not trace: a clear error naming it, nothing written
    from cnnlstm.models import ModelConfig, build_model

    base = CnnLstmModel.from_file(trained.out / "model.safetensors", "cpu")
    for change, words in (({"pooling": "last"}, "pooling last"), ({"arch": "frame"}, "frame")):
        meta = base.meta.model_copy(update={"model": base.meta.model | change})
        if change.get("arch") == "frame":
            net = base.model
        else:
            cfg = ModelConfig.model_validate(meta.model)
            net = build_model(cfg, meta.n_channels, meta.n_outputs).eval()
        out = tmp_path / f"{words.split()[-1]}.onnx"
        with pytest.raises(ExportError, match=f"model.arch .*{words}"):
            export_onnx(CnnLstmModel(net, meta, torch.device("cpu")), out)
        assert not out.exists() and not Path(f"{out}.json").exists()


def test_minirocket_exports_with_a_fixed_length(hapt_lake, tmp_path):
    from cnnlstm.train import train_from_config

    cfg = tiny_config(
        tmp_path,
        hapt_lake,
        model={"arch": "minirocket", "minirocket": {"features": 840}},
        train={"epochs": 1},
    )
    train_from_config(cfg, tmp_path / "run")
    model = CnnLstmModel.from_file(tmp_path / "run" / "model.safetensors", "cpu")
    rec = export_onnx(model, tmp_path / "mr.onnx")
    assert rec["arch"] == "minirocket"
    assert [i["name"] for i in rec["inputs"]] == ["x"]  # padding counts as zeros: no lengths
    assert rec["inputs"][0]["shape"] == ["batch", 6, cfg.window.size]
    ort = pytest.importorskip("onnxruntime")
    assert rec["check"]["relative"] <= 1e-2
    x, lengths = _padded_windows(model, cfg)
    norm = model.meta.norm()
    xn = norm.apply(x, lengths)
    sess = ort.InferenceSession(str(tmp_path / "mr.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": xn})[0]
    want = model.forward(x, lengths)
    assert (got.argmax(1) == want.argmax(1)).all()
    assert np.abs(got - want).max() <= 1e-2 * max(1.0, float(np.abs(want).max()))


def test_forward_gathers_windows_per_batch_like_the_dense_path(trained):
    """Scoring hands `forward` the Windows view (each batch gathered from the shared stream rows,
    never every overlapping window at once): the same outputs as the dense (N, C, L) array."""
    model = CnnLstmModel.from_file(trained.out / "model.safetensors", "cpu")
    readings = scan_readings(trained.cfg.lake_uri).filter(pl.col("split") == "test").collect()
    w, _ = model.windows(readings)
    assert len(w) > 20
    dense = model.forward(w.x, w.lengths, batch_size=7)
    viewed = model.forward(w, w.lengths, batch_size=7)
    np.testing.assert_array_equal(viewed, dense)
    # padded windows too (a view over hand-made rows, lengths below the size)
    x, lengths = _padded_windows(model, trained.cfg)
    from cnnlstm.windows import Windows

    v = Windows(x, lengths)
    np.testing.assert_array_equal(model.forward(v, lengths, 4), model.forward(x, lengths, 4))
