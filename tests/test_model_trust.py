"""Loading a model runs only the installed package, and its files are checked against hashes
pinned outside the artifact store (registry model-version tags, run tags) before anything is
built (cnnlstm/model_trust.py, docs/mlflow.md "Trust model").

Reproduces issue 12, item 1: someone who can write the artifact store (not the registry) changes
a registered version's files - appends code to its python files, rewrites its weights with a
recomputed internal checksum, adds a package copy and points the MLmodel at it. `cnnlstm score`
must refuse with the hash error, write no predictions and never run the planted code. Real MLflow
(SQLite store, local artifact folder), a tiny HAPT lake, one epoch."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest
import torch
import yaml
from cli_app import app
from mlflow import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path
from mlflow_server import Trained, tiny_config, train_tracked
from typer.testing import CliRunner

import cnnlstm
import cnnlstm.score as sc
from cnnlstm import model_trust as mt
from cnnlstm.checkpoint import load_model, read_model_file, save_model
from cnnlstm.lake import scan_readings
from cnnlstm.mlflow_tracker import use_tracking
from cnnlstm.pyfunc import CnnLstmModel
from cnnlstm.score import abort_scoring, plan_scoring, read_predictions, score, score_part

pytest_plugins = ["mlflow_server"]  # the session's tiny HAPT lake

NAME = "hapt-tiny"
BATCH = 4096


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _flat(text: str) -> str:
    """CLI output with the console's line wrapping undone."""
    return " ".join(text.split())


def _sha(path: Path) -> str:
    return mt.sha256_file(path)


def _write_cfg(cfg, path: Path) -> str:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return str(path)


def _artifact_dir(client: MlflowClient, version: str) -> Path:
    """The logged model's folder in the (local) artifact store: what an attacker edits."""
    mv = client.get_model_version(NAME, version)
    model_id = mv.source[len("models:/") :]
    return Path(local_file_uri_to_path(client.get_logged_model(model_id).artifact_location))


def _parquet_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.parquet") if "_tmp" not in p.parts)


def _test_readings(cfg) -> pl.DataFrame:
    return scan_readings(cfg.lake_uri).filter(pl.col("split") == "test").collect()


def _marker_line(marker: Path) -> str:
    return f"\nopen({str(marker)!r}, 'w').write('code from the artifact store ran')\n"


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort("entity_id", "window_start")


@pytest.fixture(scope="module")
def trained(hapt_lake, tmp_path_factory) -> Trained:
    """Version 1 of 'hapt-tiny' (champion), trained one epoch and tracked in a SQLite store whose
    artifacts are local files (mlartifacts/ beside the database)."""
    d = tmp_path_factory.mktemp("trust")
    cfg = tiny_config(d, hapt_lake, f"sqlite:///{d / 'mlflow.db'}", train={"epochs": 1})
    t = train_tracked(cfg, d / "run")
    assert t.registration["version"] == "1" and t.registration["champion"]
    return t


@pytest.fixture
def client(trained) -> MlflowClient:
    uri = use_tracking(trained.cfg)
    return MlflowClient(uri, registry_uri=uri)


def test_logged_model_ships_no_code_and_its_hashes_are_pinned(trained, client):
    """(b) MLflow executes nothing from the artifact: the pyfunc flavor names a module of the
    installed package, no code path, no models-from-code file, no pickle; the files' hashes are
    registry tags and run tags."""
    art = _artifact_dir(client, "1")
    mlmodel = yaml.safe_load((art / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "cnnlstm.pyfunc_loader"
    assert not pyfunc.get("code")
    for key in ("model_code_path", "python_model", "cloudpickle_version", "artifacts"):
        assert key not in pyfunc, key
    assert pyfunc["data"] == "data/model.safetensors"
    files = sorted(p.relative_to(art).as_posix() for p in art.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".py", ".pyc", ".pkl", ".pickle", ".pt"))]
    assert not (art / "code").exists()
    # the loader is a module of the installed cnnlstm package
    origin = Path(importlib.util.find_spec(pyfunc["loader_module"]).origin).resolve()
    assert origin.is_relative_to(Path(cnnlstm.__file__).resolve().parent)

    # pinned: the version's tags, the run's tags and the logged model's tags hold the hashes of
    # the files that were logged (the local weights file's bytes)
    local = _sha(trained.out / "model.safetensors")
    assert _sha(art / "data" / "model.safetensors") == local
    mv = client.get_model_version(NAME, "1")
    assert mv.tags[mt.WEIGHTS_TAG] == local
    assert mv.tags[mt.MLMODEL_TAG] == _sha(art / "MLmodel")
    pinned = json.loads(mv.tags[mt.FILES_TAG])
    assert set(pinned) == set(files) - mt.CLIENT_FILES
    assert all(pinned[f] == _sha(art / f) for f in pinned)
    run_tags = client.get_run(trained.run_id).data.tags
    assert run_tags[mt.WEIGHTS_TAG] == local and run_tags[mt.FILES_TAG] == mv.tags[mt.FILES_TAG]
    assert run_tags[mt.MODEL_PATH_TAG] == "model"
    assert trained.registration["weights_sha256"] == local


def test_untouched_model_loads_and_scores_identically(trained, client, tmp_path):
    """(c) The pinned model scores through `cnnlstm score`, `mlflow.pyfunc.load_model` and a
    runs:/ URI exactly as the weights file it was trained into."""
    cfg = trained.cfg
    out = tmp_path / "pred"
    args = ["score", "-c", _write_cfg(cfg, tmp_path / "c.yaml"), "--out", str(out)]
    r = _cli(*args, "--where", "split=test", "--batch-size", str(BATCH), "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["model_version"] == "1" and rep["rows_written"] > 0
    assert rep["weights_sha256"] == _sha(trained.out / "model.safetensors")
    assert rep["verified_against"] == f"registry: model version {NAME} v1"
    scored = _sorted(read_predictions(str(out)).drop("model_name", "model_version", "scored_at"))

    readings = _test_readings(cfg)
    direct = CnnLstmModel.from_file(trained.out / "model.safetensors", "cpu")
    expected = _sorted(direct.predict_frame(readings, BATCH))
    assert scored.columns == expected.columns
    assert scored.equals(expected)

    pdf = readings.with_columns(pl.col("timestamp").dt.replace_time_zone(None)).to_pandas()
    for uri in (f"models:/{NAME}/1", f"runs:/{trained.run_id}/model"):
        pm = mlflow.pyfunc.load_model(uri, model_config={"device": "cpu"})
        assert isinstance(pm.unwrap_python_model(), CnnLstmModel)
        got = pm.predict(pdf, params={"batch_size": BATCH})
        assert got["predicted"].tolist() == expected["predicted"].to_list()
        probs = [c for c in expected.columns if c.startswith("prob_")]
        np.testing.assert_array_equal(got[probs].to_numpy(), expected.select(probs).to_numpy())

    # the verified library path on a runs:/ URI: anchored on the run's tags
    m, rec = mt.load_verified(f"runs:/{trained.run_id}/model", "cpu", cfg.tracking.uri)
    assert rec.pinned and rec.anchor.startswith(f"run {trained.run_id}")
    assert _sorted(m.predict_frame(readings, BATCH)).equals(expected)


def _tamper_weights(path: Path) -> None:
    """What an attacker with write access to the artifact store does to the weights: change a
    tensor and write the file back with its internal checksum recomputed."""
    model, meta = load_model(path)
    with torch.no_grad():
        next(model.parameters()).add_(0.5)
    save_model(path, model, meta)
    read_model_file(path)  # the artifact's own checksum is satisfied: it proves nothing


def test_tampered_artifact_is_refused_and_runs_nothing(trained, client, tmp_path):
    """(a) The attack of issue 12: code appended to every python file of the registered
    version's artifact folder (and, since today's artifact has none, a package copy added and
    the MLmodel pointed at it, which is how MLflow would run it), the weights rewritten. Scoring
    refuses with the hash error, writes nothing, and the planted code never runs."""
    cfg = trained.cfg
    art = _artifact_dir(client, "1")
    backup = tmp_path / "backup"
    shutil.copytree(art, backup)
    marker = tmp_path / "MARKER"
    pinned = client.get_model_version(NAME, "1").tags[mt.WEIGHTS_TAG]
    # a scoring attempt planned while the files were intact (its parts run later, elsewhere)
    planned, _ = plan_scoring(cfg, f"models:/{NAME}/1", str(tmp_path / "planned"))
    try:
        # 1. the weights only
        weights = art / "data" / "model.safetensors"
        _tamper_weights(weights)
        for py in art.rglob("*.py"):  # none in today's format (the test above checks it)
            py.write_text(py.read_text() + _marker_line(marker))
        bad = _sha(weights)
        assert bad != pinned

        out = tmp_path / "pred"
        cfg_path = _write_cfg(cfg, tmp_path / "c.yaml")
        for uri in (f"models:/{NAME}@champion", f"models:/{NAME}/1"):
            r = _cli("score", "-c", cfg_path, "--model", uri, "--out", str(out))
            assert r.exit_code == 2, r.output
            text = _flat(r.output)
            assert uri in text and f"refused to load models:/{NAME}/1" in text
            assert "data/model.safetensors" in text and bad in text and pinned in text
            assert f"registry: model version {NAME} v1" in text
        with pytest.raises(mt.ModelTrustError, match=f"sha256 {bad}, but .* pins {pinned}"):
            score(cfg, f"models:/{NAME}/1", str(out))
        # the opt-out is for versions without a pin, never for a mismatch
        with pytest.raises(mt.ModelTrustError, match="data/model.safetensors"):
            score(cfg, f"models:/{NAME}/1", str(out), allow_unpinned=True)
        # a score task in a fresh worker process loads the model itself: checked, refused
        sc._MODELS.clear()
        with pytest.raises(mt.ModelTrustError, match=f"sha256 {bad}, but .* pins {pinned}"):
            score_part(planned, 0)
        abort_scoring(planned)
        assert not list((tmp_path / "planned").rglob("*.parquet"))
        # cnnlstm export loads through the same verified path: refused, nothing written
        onnx = tmp_path / "m.onnx"
        r = _cli("export", "-c", cfg_path, "--model", f"models:/{NAME}/1", "-o", str(onnx))
        assert r.exit_code == 2, r.output
        assert f"refused to load models:/{NAME}/1" in _flat(r.output) and bad in _flat(r.output)
        assert not onnx.exists() and not Path(f"{onnx}.json").exists()
        # a runs:/ URI is checked against the run's tags
        with pytest.raises(mt.ModelTrustError, match=f"run {trained.run_id}"):
            score(cfg, f"runs:/{trained.run_id}/model", str(out))
        # MLflow's own loader reaches cnnlstm.pyfunc_loader, which checks the registry pin
        with pytest.raises(mt.ModelTrustError, match=bad):
            mlflow.pyfunc.load_model(f"models:/{NAME}/1")

        # the champion re-evaluation of the registry refuses it too: a challenger validated on
        # other data is then not promoted
        d = tmp_path / "v2"
        cfg2 = tiny_config(
            d,
            cfg.lake_uri,
            cfg.tracking.uri,
            window=cfg.window.model_dump()
            | {"split": {"method": "column", "val_fraction": 0.34, "seed": 1}},
            train={"epochs": 1},
        )
        v2 = train_tracked(cfg2, d / "run")
        assert v2.registration["compared_on"] == "different data, re-evaluation failed"
        assert not v2.registration["champion"]
        assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"

        # 2. the shape of the original attack: a package copy in the artifact, the MLmodel
        # edited so that MLflow would put it on sys.path, code appended to every python file
        evil = art / "code" / "cnnlstm"
        evil.mkdir(parents=True)
        (evil / "__init__.py").write_text("# planted\n")
        (evil / "pyfunc_loader.py").write_text("def _load_pyfunc(*a, **k):\n    pass\n")
        mlmodel = yaml.safe_load((art / "MLmodel").read_text())
        mlmodel["flavors"]["python_function"]["code"] = "code"
        (art / "MLmodel").write_text(yaml.safe_dump(mlmodel))
        planted = sorted(art.rglob("*.py"))
        assert planted
        for py in planted:
            py.write_text(py.read_text() + _marker_line(marker))
        r = _cli("score", "-c", cfg_path, "--model", f"models:/{NAME}/1", "--out", str(out))
        assert r.exit_code == 2, r.output
        text = _flat(r.output)
        assert "MLmodel" in text and "code/cnnlstm/pyfunc_loader.py" in text and bad in text
        with pytest.raises(mt.ModelTrustError):
            mt.fetch_verified(f"models:/{NAME}/1", tmp_path / "fetched", cfg.tracking.uri)

        # nothing scored, nothing run
        assert _parquet_files(out) == [] and not (out / "_watermark").exists()
        assert not marker.exists()
    finally:
        shutil.rmtree(art)
        shutil.copytree(backup, art)
    assert _sha(art / "data" / "model.safetensors") == pinned


LEGACY_LOADER = """\
# a models-from-code file as cnnlstm logged them before pins (emulated: its own class)
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.models import set_model


class Legacy(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from cnnlstm.pyfunc import CnnLstmModel

        self.m = CnnLstmModel.from_file(context.artifacts["weights"], "cpu")

    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return self.m.predict(context, model_input, params)


set_model(Legacy())
"""


def test_unpinned_version_is_refused_unless_allowed_and_can_be_reregistered(
    trained, client, tmp_path
):
    """A version registered before pins (logged as models from code, no tags) is refused with
    the way out; with the opt-out it is scored from its weights alone (its code never runs);
    `cnnlstm reregister` makes a pinned, code-free version of it."""
    cfg = trained.cfg
    loader = tmp_path / "cnnlstm_model.py"
    loader.write_text(LEGACY_LOADER)
    run = client.get_run(trained.run_id)
    with mlflow.start_run(experiment_id=run.info.experiment_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(loader),
            artifacts={"weights": str(trained.out / "model.safetensors")},
            pip_requirements=["mlflow"],
        )
    legacy = str(mlflow.register_model(info.model_uri, NAME).version)
    art = Path(local_file_uri_to_path(client.get_logged_model(info.model_id).artifact_location))
    marker = tmp_path / "MARKER"
    scripts = sorted(art.rglob("*.py"))
    assert scripts  # the models-from-code file MLflow would execute
    for py in scripts:
        py.write_text(py.read_text() + _marker_line(marker))

    out = tmp_path / "pred"
    cfg_path = _write_cfg(cfg, tmp_path / "c.yaml")
    uri = f"models:/{NAME}/{legacy}"
    base = ["score", "-c", cfg_path, "--model", uri, "--out", str(out), "--where", "split=test"]
    r = _cli(*base)
    assert r.exit_code == 2, r.output
    text = _flat(r.output)
    assert f"refused to load {uri}" in text and "not pinned" in text
    assert "cnnlstm reregister" in text and mt.ALLOW_UNPINNED_ENV in text
    assert _parquet_files(out) == []

    # opted out: scored from the safetensors weights only; the model's python file never runs
    r = _cli(*base, "--allow-unpinned", "--batch-size", str(BATCH), "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["rows_written"] > 0 and rep["verified_against"].startswith("nothing")
    assert not marker.exists()
    got = _sorted(read_predictions(str(out)).drop("model_name", "model_version", "scored_at"))
    direct = CnnLstmModel.from_file(trained.out / "model.safetensors", "cpu")
    assert got.equals(_sorted(direct.predict_frame(_test_readings(cfg), BATCH)))

    # re-registered: a new version with pins and no code, carrying the old version's weights
    r = _cli("reregister", "-c", cfg_path, legacy, "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    new = rec["version"]
    assert int(new) > int(legacy)
    assert rec["weights_sha256"] == _sha(trained.out / "model.safetensors")
    mv = client.get_model_version(NAME, new)
    assert mv.tags[mt.WEIGHTS_TAG] == rec["weights_sha256"]
    assert mv.tags["cnnlstm.reregistered_from"] == uri
    new_art = _artifact_dir(client, new)
    assert not list(new_art.rglob("*.py"))
    assert mt.is_code_free(yaml.safe_load((new_art / "MLmodel").read_text()))
    r = _cli("score", "-c", cfg_path, "--model", f"models:/{NAME}/{new}", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert _cli("reregister", "-c", cfg_path, new).exit_code == 2  # pinned already
    assert not marker.exists()


def test_fetch_model_writes_a_verified_folder_that_mlflow_serves(trained, client, tmp_path):
    """`cnnlstm fetch-model` checks every file before the folder exists; MLflow loads it."""
    cfg_path = _write_cfg(trained.cfg, tmp_path / "c.yaml")
    dst = tmp_path / "served"
    r = _cli("fetch-model", "-c", cfg_path, "--model", f"models:/{NAME}/1", "--out", str(dst))
    assert r.exit_code == 0, r.output
    assert _sha(dst / "data" / "model.safetensors") == _sha(trained.out / "model.safetensors")
    pm = mlflow.pyfunc.load_model(str(dst), model_config={"device": "cpu"})
    pdf = _test_readings(trained.cfg).head(200)
    pdf = pdf.with_columns(pl.col("timestamp").dt.replace_time_zone(None)).to_pandas()
    assert len(pm.predict(pdf)) > 0
    r = _cli("fetch-model", "-c", cfg_path, "--model", f"models:/{NAME}/1", "--out", str(dst))
    assert r.exit_code == 2  # not over an existing folder
