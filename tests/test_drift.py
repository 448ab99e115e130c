"""Drift monitoring (cnnlstm/drift.py) and model cards (cnnlstm/model_card.py).

- exact small cases of the two figures (PSI, KS) and of the stored training bins;
- end to end on a synthetic lake with a real MLflow registry (SQLite store): the trained model's
  artifact carries its training statistics; a scored copy of the data flags nothing; the same
  data with one channel shifted by 3 standard deviations flags that channel and only it, in
  the report (library, CLI text and --json), in drift.json and as metrics of the model
  version's monitoring run; the version's description is its model card (task, metrics, the
  classes with low validation recall);
- the score flow's retrain_on_drift option; the card as a pure function.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from cli_app import app
from mlflow import MlflowClient
from typer.testing import CliRunner

from cnnlstm.config import config_from_dict
from cnnlstm.drift import (
    DRIFT_FILE,
    MONITOR_TAG,
    ChannelStats,
    bin_index,
    channel_stats,
    compare_mix,
    ks_statistic,
    monitor_run_name,
    monitor_scoring,
    psi,
    summary_line,
)
from cnnlstm.model_card import low_recall, model_card

NAME = "drift-tiny"
CHANNELS = ["c0", "c1", "c2"]


# ---------------------------------------------------------------------------------------------
# the figures, by hand


def test_psi_exact_values():
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5) = 0.25 ln 2 + 0.25 ln 1.5
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(3), abs=1e-15)
    assert psi([2, 2], [1, 3]) == pytest.approx(0.25 * math.log(3), abs=1e-15)  # counts
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    # symmetric in its arguments
    assert psi([0.1, 0.9], [0.6, 0.4]) == pytest.approx(psi([0.6, 0.4], [0.1, 0.9]))
    # an empty bin counts as 1e-4, not as infinity
    got = psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1])
    want = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.1 - 1e-4) * math.log(0.1 / 1e-4)
    assert got == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError):
        psi([0.5, 0.5], [1.0])


def test_ks_exact_values():
    # ECDFs of [1, 2, 3] and [2, 3, 4, 5]: at 3 they are 1 and 1/2
    assert ks_statistic([1, 2, 3], [2, 3, 4, 5]) == 0.5
    assert ks_statistic([3, 1, 2], [5, 4, 3, 2]) == 0.5  # order does not matter
    assert ks_statistic([1, 2, 3], [1, 2, 3]) == 0.0
    assert ks_statistic([1, 2], [3, 4, 5]) == 1.0
    assert ks_statistic([0.0], [0.0, 1.0]) == 0.5
    # ties: F_a(1) = 2/3, F_b(1) = 1/4
    assert ks_statistic([1, 1, 2], [1, 2, 2, 2]) == pytest.approx(2 / 3 - 1 / 4)


def test_ks_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for _ in range(5):
        a = rng.normal(size=rng.integers(5, 300))
        b = rng.normal(0.4, 1.3, size=rng.integers(5, 300)).round(1)  # with ties
        assert ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


def test_training_bins_and_sample():
    v = np.arange(100, dtype=np.float64)  # deciles (values that occur): 9, 19, ..., 89
    s = channel_stats(v, np.random.default_rng(0), 10)
    assert s.edges == [9.0, 19.0, 29.0, 39.0, 49.0, 59.0, 69.0, 79.0, 89.0]
    assert s.proportions == pytest.approx([0.1] * 10)  # (-inf, 9], (9, 19], ..., (89, inf)
    assert s.mean == 49.5 and s.std == pytest.approx(np.std(v)) and s.n == 100
    assert len(s.sample) == 10 and set(s.sample) <= set(v.tolist())
    # a value on an edge belongs to the lower bin
    assert bin_index([1.0, 2.0], [0.5, 1.0, 1.5, 2.0, 9.0]).tolist() == [0, 0, 1, 1, 2]
    # a discrete channel: its values are the edges, no bin in between
    s = channel_stats(np.array([0.0] * 60 + [1.0] * 40), np.random.default_rng(0), 5)
    assert s.edges == [0.0, 1.0] and s.proportions == [0.6, 0.4, 0.0]


def test_class_mix_psi_counts_unseen_values():
    from cnnlstm.config import DriftConfig
    from cnnlstm.drift import ClassMix

    ref = ClassMix(values=["a", "b"], proportions=[0.5, 0.5], n=10)
    dcfg = DriftConfig(min_windows=1)
    same = compare_mix(ref, np.array(["a", "b"] * 50), dcfg)
    assert same["psi"] == 0.0 and not same["flagged"]
    moved = compare_mix(ref, np.array(["a"] * 25 + ["b"] * 75), dcfg)
    assert moved["psi"] == pytest.approx(0.25 * math.log(3)) and moved["flagged"]
    new = compare_mix(ref, np.array(["a", "b", "c", "c"]), dcfg)
    assert new["scored"]["(other)"] == 0.5 and new["train"]["(other)"] == 0.0


# ---------------------------------------------------------------------------------------------
# end to end: a synthetic lake, a real registry


def _readings(shift_c2_sd: float = 0.0) -> pl.DataFrame:
    """10 entities x 3 classes x 320 rows at 1 Hz. c0 separates class 0 from classes 1 and 2,
    which are drawn from the same distribution (so one of them has low recall); c1 and c2 are
    noise. Seeded: the unshifted and the shifted copies hold the same values."""
    rng = np.random.default_rng(42)
    frames = []
    for e in range(10):
        n = 320
        label = np.repeat([0, 1, 2], n)
        c0 = np.where(label == 0, -2.0, 2.0) + rng.normal(size=3 * n)
        frames.append(
            pl.DataFrame(
                {
                    "entity_id": [f"dev{e:02d}"] * (3 * n),
                    "timestamp": (1_700_000_000_000 + np.arange(3 * n) * 1000).tolist(),
                    "c0": c0,
                    "c1": rng.normal(size=3 * n),
                    "c2": rng.normal(5.0, 2.0, size=3 * n),
                    "label": label,
                }
            )
        )
    df = pl.concat(frames)
    if shift_c2_sd:
        df = df.with_columns(pl.col("c2") + shift_c2_sd * df["c2"].std())
    return df


def _config(d: Path, lake: Path, uri: str, **over):
    raw = {
        "data": {
            "name": "drift",
            "entity": {"column": "entity_id"},
            "timestamp": {"column": "timestamp", "format": "epoch_ms"},
            "channels": [{"name": c} for c in CHANNELS],
            "label": {"column": "label"},
        },
        "lake": {"uri": str(lake)},
        "window": {"size": 32, "stride": 32, "label": "majority", "split": {"method": "entity"}},
        "model": {"conv": {"channels": [8], "kernel_size": 3}, "rnn": {"hidden_size": 8}},
        "train": {
            "epochs": 2,
            "batch_size": 32,
            "lr": 5e-3,
            "progress": False,
            "plots": False,
            "num_threads": 1,
        },
        "tracking": {"uri": uri, "experiment": "drift-tests", "registered_model": NAME},
    } | over
    return config_from_dict(raw, base_dir=d)


def _lake(d: Path, name: str, df: pl.DataFrame, cfg_for) -> Path:
    from cnnlstm.ingest import ingest

    landing = d / f"landing-{name}"
    landing.mkdir()
    for ent, part in df.group_by("entity_id"):
        part.write_csv(landing / f"{ent[0]}.csv")
    lake = d / f"lake-{name}"
    rep = ingest(cfg_for(lake), [str(landing)])
    assert rep.clean, rep.to_dict()
    return lake


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A trained, registered v1 on the synthetic lake, and copies of the data (unshifted; c2
    shifted by 3 standard deviations) in lakes of their own, with their configs."""
    from cnnlstm.pipeline import train_and_track

    d = tmp_path_factory.mktemp("drift")
    uri = f"sqlite:///{d / 'mlflow.db'}"

    def cfg_for(lake: Path, **over):
        return _config(d, lake, uri, **over)

    train_lake = _lake(d, "train", _readings(), cfg_for)
    same_lake = _lake(d, "same", _readings(), cfg_for)
    shifted_lake = _lake(d, "shifted", _readings(shift_c2_sd=3.0), cfg_for)
    cfg = cfg_for(train_lake)
    metrics = train_and_track(cfg, d / "run")
    assert metrics["registered_model"]["version"] == "1"
    return {
        "dir": d,
        "uri": uri,
        "cfg": cfg,
        "metrics": metrics,
        "run": d / "run",
        "same": cfg_for(same_lake),
        "shifted": cfg_for(shifted_lake),
    }


def test_artifact_stores_training_statistics(project):
    from cnnlstm.checkpoint import read_model_file

    _, meta = read_model_file(project["run"] / "model.safetensors")
    st = meta.training_stats
    assert st is not None and list(st.channels) == CHANNELS
    n_train = project["metrics"]["n_windows"]["train"]
    for c in CHANNELS:
        s = st.channels[c]
        assert s.n == n_train * 32  # every valid sample of the training windows
        assert len(s.proportions) == len(s.edges) + 1 == 10
        assert sum(s.proportions) == pytest.approx(1.0)
        assert 100 <= len(s.sample) <= 1000
    assert st.channels["c2"].mean == pytest.approx(5.0, abs=0.2)
    assert st.channels["c2"].std == pytest.approx(2.0, abs=0.2)
    # the model's predicted-class mix on the training windows
    assert st.predicted is not None and set(st.predicted.values) <= {"0", "1", "2"}
    assert st.predicted.n == n_train and sum(st.predicted.proportions) == pytest.approx(1.0)


def test_older_artifacts_without_statistics_still_load_and_are_skipped(project):
    from cnnlstm.artifact import ModelArtifact
    from cnnlstm.checkpoint import read_model_file

    _, meta = read_model_file(project["run"] / "model.safetensors")
    old = meta.model_dump(mode="json")
    old.pop("training_stats")
    legacy = ModelArtifact.model_validate(old)
    assert legacy.training_stats is None
    d = monitor_scoring(project["cfg"], None, legacy, None, [object()], {}, None)
    assert d["status"] == "skipped" and "no training statistics" in d["reason"]
    off = project["cfg"].model_copy(deep=True)
    off.score.drift.enabled = False
    assert monitor_scoring(off, None, meta, None, [], {}, None)["status"] == "skipped"


def _write_cfg(cfg, path: Path) -> str:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return str(path)


def _monitor_run(client: MlflowClient):
    exp = client.get_experiment_by_name("drift-tests")
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{MONITOR_TAG}` = '{NAME}/1'"
    )
    assert len(runs) == 1
    return runs[0]


def test_unshifted_copy_flags_nothing_then_shifted_channel_is_flagged(project, tmp_path):
    from cnnlstm.score import score

    client = MlflowClient(project["uri"])
    # 1. the same data in another lake: nothing flagged
    out_same = tmp_path / "pred-same"
    rep = score(project["same"], output=str(out_same))
    assert rep.rows_written > 0
    d = rep.drift
    assert d["status"] == "ok", d
    assert d["flagged_channels"] == [] and d["flagged"] is False, d
    assert not d["predicted_flagged"]
    for c in CHANNELS:
        assert d["channels"][c]["psi"] < 0.05 and d["channels"][c]["ks"] < 0.1
    written = json.loads((out_same / DRIFT_FILE).read_text())
    assert written["flagged_channels"] == [] and written["rows"] == 10 * 960
    assert "drift: no channel flagged" in summary_line(d)

    # 2. c2 shifted by 3 standard deviations: c2 flagged, and only c2 (CLI, text summary)
    out = tmp_path / "pred-shifted"
    cfg_path = _write_cfg(project["shifted"], tmp_path / "shifted.yaml")
    r = CliRunner().invoke(app, ["score", "-c", cfg_path, "--out", str(out)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.split())
    assert "drift FLAGGED: c2 (psi" in text and "c0 (" not in text and "c1 (" not in text
    written = json.loads((out / DRIFT_FILE).read_text())
    assert written["flagged_channels"] == ["c2"] and written["flagged"] is True
    c2 = written["channels"]["c2"]
    assert c2["flagged"] and c2["psi"] > 0.2 and c2["ks"] > 0.2
    assert c2["mean_shift_sd"] == pytest.approx(3.0, abs=0.2)
    assert written["channels"]["c0"]["flagged"] is False
    assert written["channels"]["c1"]["flagged"] is False
    assert written["model_name"] == NAME and written["model_version"] == "1"

    # --json lists them too (another output folder: scored again)
    out_json = tmp_path / "pred-json"
    r = CliRunner().invoke(app, ["score", "-c", cfg_path, "--out", str(out_json), "--json"])
    assert r.exit_code == 0, r.output
    rep_json = json.loads(r.stdout)
    assert rep_json["drift"]["flagged_channels"] == ["c2"]
    assert rep_json["drift"]["file"].endswith(DRIFT_FILE)

    # 3. MLflow: one monitoring run for the version, one step per scoring run
    run = _monitor_run(client)
    assert run.info.run_name == monitor_run_name(NAME, "1") == f"monitor-{NAME}-v1"
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["monitor.model_name"] == NAME and tags["monitor.model_version"] == "1"
    assert tags["monitor.model_run_id"] == project["metrics"]["mlflow_run_id"]
    assert tags["cnnlstm.monitor.observations"] == "3"
    hist = sorted(client.get_metric_history(run.info.run_id, "drift_psi/c2"), key=lambda m: m.step)
    assert [m.step for m in hist] == [0, 1, 2]
    assert hist[0].value < 0.05 and hist[1].value == pytest.approx(c2["psi"])
    ks = client.get_metric_history(run.info.run_id, "drift_ks/c2")
    assert max(m.value for m in ks) == pytest.approx(c2["ks"])
    flagged = sorted(
        client.get_metric_history(run.info.run_id, "drift_flagged_channels"), key=lambda m: m.step
    )
    assert [m.value for m in flagged] == [0.0, 1.0, 1.0]
    assert run.data.metrics["drift_psi/c0"] < 0.05
    arts = [f.path for f in client.list_artifacts(run.info.run_id, "drift")]
    assert arts == ["drift/000000.json", "drift/000001.json", "drift/000002.json"]

    # a re-run scores nothing: no new figures
    again = score(project["same"], output=str(out_same))
    assert again.rows_written == 0 and again.drift["status"] == "skipped"
    assert _monitor_run(client).data.tags["cnnlstm.monitor.observations"] == "3"


def test_registered_version_description_is_the_model_card(project):
    client = MlflowClient(project["uri"], registry_uri=project["uri"])
    card = client.get_model_version(NAME, "1").description
    m = project["metrics"]
    assert card.startswith(f"# {NAME} v1")
    assert "**Task**: classify (3 classes: 0, 1, 2)" in card
    assert f"**Training run**: `{m['mlflow_run_id']}`" in card
    # data: the lake's fingerprint (a tag of the training run), entities, windows
    tags = client.get_run(m["mlflow_run_id"]).data.tags
    assert f"lake fingerprint `{tags['lake.fingerprint']}`" in card
    assert "- entities: 10 (train 6, val 2, test 2)" in card
    assert "- time range: 2023-11-14T22:13:20Z to " in card
    nw = m["n_windows"]
    assert f"- windows: train {nw['train']}, val {nw['val']}, test {nw['test']}" in card
    # validation and test metrics
    assert "| metric | validation | test |" in card
    assert f"| macro_f1 | {m['val']['macro_f1']:.4f} | {m['test']['macro_f1']:.4f} |" in card
    assert f"| accuracy | {m['val']['accuracy']:.4f} | {m['test']['accuracy']:.4f} |" in card
    assert "hardware: device cpu; CPU " in card and "torch " in card
    # known limits: the classes below 0.8 recall on validation (1 and 2 are indistinguishable)
    low = [(c, r["recall"]) for c, r in m["val"]["per_class"].items() if r["recall"] < 0.8]
    assert low
    line = next(x for x in card.splitlines() if x.startswith("- classes with recall below"))
    assert line.startswith("- classes with recall below 0.8 on validation: ")
    for c, rec in low:
        assert f"{c} {rec:.2f}" in line
    assert "## Intended use" in card and len(card) <= 5000


# ---------------------------------------------------------------------------------------------
# the card as a pure function


def _per_class(recalls: dict[str, float]) -> dict:
    return {c: {"precision": r, "recall": r, "f1": r, "support": 10} for c, r in recalls.items()}


def test_model_card_without_validation_judges_on_test_and_shows_the_baseline():
    metrics = {
        "task": "classify",
        "class_names": ["walk", "sit", "stand"],
        "n_windows": {"train": 100, "val": 0, "test": 30},
        "test": {
            "n": 30,
            "accuracy": 0.7,
            "macro_f1": 0.65,
            "per_class": _per_class({"walk": 0.95, "sit": 0.5, "stand": 0.61}),
        },
        "baseline": {"model": "minirocket", "test": {"n": 30, "accuracy": 0.8, "macro_f1": 0.75}},
        "epochs_run": 3,
        "weights_epoch": 3,
        "fit_seconds": 12.0,
        "wall_seconds": 200.0,
        "hardware": {"device": "cuda:0", "gpu": "H200", "cpu": "Xeon", "cpu_cores": 16},
    }
    assert low_recall(metrics) == ("test", [("sit", 0.5, 10), ("stand", 0.61, 10)])
    card = model_card(metrics, name="m", version="7")
    assert "- classes with recall below 0.8 on test (no validation windows): " in card
    assert "sit 0.50 (n=10), stand 0.61 (n=10)" in card
    assert "No validation windows" in card and "lake fingerprint: not recorded" in card
    assert "### Baseline (MiniRocket + ridge, same windows)" in card
    assert "| macro_f1 | 0.7500 |" in card and "| macro_f1 | 0.6500 |" in card
    assert "device cuda:0 (H200); CPU Xeon, 16 cores" in card
    assert "fit 12.0 s, whole run 3.3 min" in card
    # regression: no classes, no recall line; a long card is cut to MLflow's limit
    reg = model_card({"task": "regress", "val": {"rmse": 1.5}}, name="r", version="1")
    assert "no per-class figures" in reg and "| rmse | 1.5000 |" in reg
    many = {f"class{i}": 0.1 for i in range(400)}
    big = model_card(
        {"task": "classify", "class_names": list(many), "val": {"per_class": _per_class(many)}},
        name="b",
        version="1",
        max_chars=1200,
    )
    assert len(big) <= 1200 and "and 388 more" in big


# ---------------------------------------------------------------------------------------------
# the score flow's option


@pytest.mark.parametrize("retrain", [False, True])
def test_score_flow_retrains_on_drift_when_asked(monkeypatch, retrain):
    import flows.score as fs

    report = {
        "model_name": NAME,
        "model_version": "3",
        "rows_written": 10,
        "files_scored": 1,
        "files_already_scored": 0,
        "drift": {"status": "ok", "flagged_channels": ["c2"], "predicted_flagged": False},
    }
    calls: dict[str, list] = {"train": [], "events": []}
    monkeypatch.setattr(fs, "score_task", lambda config, uri, where: dict(report))
    monkeypatch.setattr(fs, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(fs, "emit_event", lambda **kw: calls["events"].append(kw))
    monkeypatch.setattr(
        fs, "train_flow", lambda config, out_dir, resume: calls["train"].append(out_dir) or {"x": 1}
    )
    out = fs.score_flow.fn("c.yaml", retrain_on_drift=retrain)
    assert fs.drift_flagged(out) == ["c2"]
    assert calls["events"][0]["event"] == "cnnlstm.drift.flagged"
    assert calls["events"][0]["payload"]["flagged"] == ["c2"]
    assert calls["train"] == (["runs/retrain-on-drift"] if retrain else [])
    assert ("retrain" in out) is retrain
    # nothing flagged: no event, no training
    calls["events"].clear()
    report["drift"] = {"status": "ok", "flagged_channels": [], "predicted_flagged": False}
    fs.score_flow.fn("c.yaml", retrain_on_drift=True)
    assert calls["events"] == [] and len(calls["train"]) == (1 if retrain else 0)


def test_channel_stats_model_round_trips():
    s = ChannelStats(edges=[0.0], proportions=[0.5, 0.5], mean=0.0, std=1.0, n=2, sample=[-1, 1])
    assert ChannelStats.model_validate_json(s.model_dump_json()) == s
