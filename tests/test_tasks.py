"""Task kinds selected by config, each on small generated data with an exact expected outcome;
metrics cross-checked against scikit-learn; no task-kind string outside the task module."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest_train import make_readings
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from cnnlstm.config import ConfigError, config_from_dict
from cnnlstm.evaluate import classification_metrics, entity_answers
from cnnlstm.tasks import make_task
from cnnlstm.tasks.config import TaskConfig
from cnnlstm.tracking import MemoryTracker
from cnnlstm.window_config import WindowConfig
from cnnlstm.windows import Windows

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = {"conv": {"channels": [8, 8], "kernel_size": 3}, "rnn": {"hidden_size": 16}}
TRAIN = {"batch_size": 16, "lr": 5e-3, "progress": False, "plots": False, "num_threads": 1}


def _cfg(tmp_path, channels, **sections):
    raw = {
        "data": {
            "name": "gen",
            "entity": {"column": "entity_id"},
            "timestamp": {"column": "timestamp"},
            "channels": [{"name": c} for c in channels],
        },
        "lake": {"uri": str(tmp_path / "lake")},
        "model": TINY_MODEL,
        "train": TRAIN,
    }
    for k, v in sections.items():
        raw[k] = (raw.get(k) or {}) | v
    return config_from_dict(raw, base_dir=tmp_path)


def _wins(entity, y) -> Windows:
    n = len(y)
    return Windows(
        np.zeros((n, 1, 4), np.float32),
        np.full(n, 4),
        np.asarray(y),
        np.asarray(entity),
        np.arange(n, dtype=np.int64),
        np.arange(n, dtype=np.int64) + 3,
    )


# ---------------------------------------------------------------------------------------------
# metrics = scikit-learn's


def test_macro_f1_counts_a_predicted_but_never_true_class_like_sklearn():
    # class 2 is predicted but never true; class 3 is neither true nor predicted
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0, 2, 1, 1, 0, 0])
    m = classification_metrics(y, p, 4)
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    # by hand: F1 class 0 = 2*(2/3*2/3)/(4/3) = 2/3, class 1 = 0.8, class 2 = 0 -> mean of 3
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)
    assert m["per_class"]["3"]["support"] == 0 and m["confusion_matrix"][0][2] == 1


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 6).flatmap(
        lambda k: st.tuples(
            st.just(k),
            st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1),
        )
    )
)
def test_macro_f1_and_accuracy_equal_sklearn(case):
    k, pairs = case
    y, p = (np.array(v) for v in zip(*pairs, strict=True))
    m = classification_metrics(y, p, k)
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    assert m["accuracy"] == pytest.approx(float((y == p).mean()))


# ---------------------------------------------------------------------------------------------
# classify: one answer per entity


def test_entity_vote_turns_a_window_mistake_into_a_right_recording_answer():
    # recording a: 4 of 5 windows right (one says class 1); recording b: 2 of 3 right
    probs = np.array(
        [
            [0.9, 0.1],
            [0.8, 0.2],
            [0.3, 0.7],
            [0.6, 0.4],
            [0.7, 0.3],
            [0.2, 0.8],
            [0.4, 0.6],
            [0.55, 0.45],
        ],
        np.float32,
    )
    ent = np.array(["a"] * 5 + ["b"] * 3)
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    task = make_task({"kind": "classify", "aggregate": "vote"}, WindowConfig())
    task.state |= {"classes": [0, 1], "class_names": ["rest", "walk"]}
    m = task.evaluate(np.log(probs), _wins(ent, y))
    assert m["accuracy"] == pytest.approx(6 / 8)  # per window: two mistakes
    assert m["entity"]["accuracy"] == 1.0 and m["entity"]["n"] == 2  # per recording: none
    ents, idx, conf = entity_answers(ent, probs, "vote")
    assert ents.tolist() == ["a", "b"] and idx.tolist() == [0, 1]
    assert conf.tolist() == pytest.approx([4 / 5, 2 / 3])
    _, idx_m, conf_m = entity_answers(ent, probs, "mean_prob")
    assert idx_m.tolist() == [0, 1] and conf_m[0] == pytest.approx(np.mean(probs[:5, 0]))


def _sines(n_ent=8, seg=64, n_seg=6, seed=0):
    """Each entity is one activity for its whole length (a recording-level label)."""
    rng = np.random.default_rng(seed)
    sigs, labs, extra = {}, {}, {}
    for i in range(n_ent):
        c = i % 2
        t = np.arange(seg * n_seg)
        f = 0.05 if c == 0 else 0.12
        sigs[f"r{i}"] = np.sin(2 * np.pi * f * t)[:, None] + 0.6 * rng.normal(size=(len(t), 1))
        labs[f"r{i}"] = np.full(len(t), c)
        extra[f"r{i}"] = {"split": "test" if i < 4 else "train"}
    return make_readings(sigs, labels=labs, extra=extra)


def test_classify_with_aggregation_reports_entities_and_scores_them(tmp_path):
    from cnnlstm.pyfunc import CnnLstmModel
    from cnnlstm.train import train_from_config

    cfg = _cfg(
        tmp_path,
        ["c0"],
        data={"label": {"column": "label"}, "columns": {"split": "string"}},
        window={"size": 32, "stride": 16, "split": {"method": "column", "val_fraction": 0.25}},
        task={"kind": "classify", "aggregate": "mean_prob"},
        train={"epochs": 3},
    )
    readings = _sines()
    m = train_from_config(cfg, tmp_path / "run", readings=readings)
    assert m["task"] == "classify"
    assert m["test"]["entity"]["n"] == 4 and m["test"]["entity"]["aggregate"] == "mean_prob"
    pf = CnnLstmModel.from_file(tmp_path / "run" / "model.safetensors", "cpu")
    pred = pf.predict_frame(readings.filter(pl.col("split") == "test"))
    per = pred.group_by("entity_id").agg(pl.col("entity_predicted").n_unique())
    assert (per["entity_predicted"] == 1).all()  # one answer per recording on every window
    assert pred["entity_confidence"].is_between(0, 1).all()


# ---------------------------------------------------------------------------------------------
# regress: a capped target, in the target's units, graded at each entity's last window


def _rul(n_units=12, seed=0):
    """Run-to-failure units: a degradation signal, remaining useful life counting down to 0."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_units):
        life = int(rng.integers(150, 260))
        rul = np.arange(life)[::-1].astype(float)
        health = np.clip(rul, 0, 125) / 125
        sig = np.stack([health + 0.05 * rng.normal(size=life), rng.normal(size=life)], 1)
        df = make_readings(
            {f"u{i:02d}": sig}, extra={f"u{i:02d}": {"split": "test" if i < 3 else "train"}}
        )
        frames.append(df.with_columns(rul=pl.Series(rul)))
    return pl.concat(frames)


def test_regress_cap_is_inverted_in_metrics_and_graded_at_the_last_window(tmp_path):
    from cnnlstm.train import train_from_config

    task = make_task(
        {"kind": "regress", "target": {"clip_max": 125}},
        WindowConfig(label="regression_end", target_column="rul"),
    )
    y = np.array([[10.0], [125.0], [300.0]], np.float32)
    task.fit_state(_wins(["a"] * 3, y), None, None)
    np.testing.assert_allclose(task.decode(task.encode_y(y)), [[10.0], [125.0], [125.0]], rtol=1e-5)

    cfg = _cfg(
        tmp_path,
        ["c0", "c1"],
        data={"columns": {"split": "string", "rul": "float"}},
        window={
            "size": 16,
            "stride": 8,
            "label": "regression_end",
            "target_column": "rul",
            "split": {"method": "column", "val_fraction": 0.25},
        },
        task={"kind": "regress", "target": {"clip_max": 125}, "evaluate_at": "last"},
        train={"epochs": 8, "restore_best": True, "patience": None},
    )
    tracker = MemoryTracker()
    m = train_from_config(cfg, tmp_path / "run", readings=_rul(), tracker=tracker)
    assert m["test"]["n"] == 3 and m["test"]["evaluate_at"] == "last"  # one per test unit
    assert m["test"]["all_windows"]["n"] > 3 * 15
    # one name, one unit: the restored epoch's per-epoch val_rmse is the final val rmse
    best = m["history"][m["best_epoch"] - 1]
    assert m["monitor"] == "val_rmse"
    assert m["val"]["rmse"] == pytest.approx(best["val_rmse"], rel=1e-5)
    # in cycles, not standardised units: the last windows' true RUL is a few cycles
    assert m["test"]["rmse"] < 60 and m["val"]["rmse"] > 0.5
    logged = {k: v for s, d in tracker.metrics if s is None for k, v in d.items()}
    assert logged["test_rmse"] == pytest.approx(m["test"]["rmse"])
    # scoring grades the same way: each unit's last window, in cycles
    from cnnlstm.pyfunc import CnnLstmModel

    pf = CnnLstmModel.from_file(tmp_path / "run" / "model.safetensors", "cpu")
    test = _rul().filter(pl.col("split") == "test")
    pred = pf.predict_frame(test)
    assert pred["label"].null_count() == 0 and pred["label"].max() > 125  # true, uncapped
    graded = pf.task.prediction_metrics(pred)
    assert graded["labelled_windows"] == 3
    assert graded["rmse"] == pytest.approx(m["test"]["rmse"], rel=1e-4)


# ---------------------------------------------------------------------------------------------
# anomaly: a reconstruction model trained on normal windows


def _pump(n_ent=12, n_win=24, size=32, seed=0):
    """Normal operation: two smooth periodic channels. Anomalies: a burst of noise and a stuck
    sensor in some windows (label 1 over those samples)."""
    rng = np.random.default_rng(seed)
    sigs, labs, extra = {}, {}, {}
    for i in range(n_ent):
        n = n_win * size
        t = np.arange(n)
        ph = rng.uniform(0, 2 * np.pi)
        x = np.stack([np.sin(2 * np.pi * t / 16 + ph), np.cos(2 * np.pi * t / 16 + ph)], 1)
        x += 0.05 * rng.normal(size=x.shape)
        lab = np.zeros(n, np.int64)
        for w in rng.choice(n_win, size=3, replace=False):
            s = w * size + 4
            if rng.random() < 0.5:
                x[s : s + 20] += rng.normal(0, 1.5, size=(20, 2))
            else:
                x[s : s + 20, 0] = 2.5
            lab[s : s + 20] = 1
        sigs[f"p{i:02d}"], labs[f"p{i:02d}"] = x, lab
        extra[f"p{i:02d}"] = {"split": "test" if i < 4 else "train"}
    return make_readings(sigs, labels=labs, extra=extra)


def test_unsupervised_anomaly_flags_injected_anomalies(tmp_path):
    from cnnlstm.pyfunc import CnnLstmModel
    from cnnlstm.train import train_from_config

    cfg = _cfg(
        tmp_path,
        ["c0", "c1"],
        data={"label": {"column": "label"}, "columns": {"split": "string"}},
        window={"size": 32, "stride": 32, "split": {"method": "column", "val_fraction": 0.25}},
        task={"kind": "anomaly", "method": "reconstruction", "train_on": "normal"},
        model={"conv": {"channels": [16, 16], "kernel_size": 3}, "rnn": {"hidden_size": 16}},
        train={"epochs": 25, "lr": 5e-3, "patience": None},
    )
    readings = _pump()
    m = train_from_config(cfg, tmp_path / "run", readings=readings)
    t = m["test"]
    assert t["n_anomalous"] == 12 and t["n"] == 4 * 24
    assert t["f1"] >= 0.9, t
    assert "validation" in t["threshold_rule"]
    pf = CnnLstmModel.from_file(tmp_path / "run" / "model.safetensors", "cpu")
    pred = pf.predict_frame(readings.filter(pl.col("split") == "test"))
    assert {"anomaly_score", "predicted", "label"} <= set(pred.columns)
    f1 = f1_score(pred["label"].to_numpy(), pred["predicted"].to_numpy())
    assert f1 == pytest.approx(t["f1"])  # scoring flags exactly what evaluation graded


# ---------------------------------------------------------------------------------------------
# forecast: quantiles


def test_quantile_forecasts_are_ordered(tmp_path):
    from cnnlstm.pyfunc import CnnLstmModel
    from cnnlstm.train import train_from_config

    rng = np.random.default_rng(0)
    t = np.arange(600)
    sigs = {
        f"s{i}": np.sin(2 * np.pi * t / 25 + i)[:, None] + 0.2 * rng.normal(size=(600, 1))
        for i in range(6)
    }
    readings = make_readings(sigs)
    cfg = _cfg(
        tmp_path,
        ["c0"],
        window={
            "size": 24,
            "stride": 6,
            "label": "forecast",
            "horizon": 3,
            "split": {"method": "entity", "val_fraction": 0.2, "test_fraction": 0.2},
        },
        task={"kind": "forecast", "quantiles": [0.1, 0.9]},
        train={"epochs": 4},
    )
    m = train_from_config(cfg, tmp_path / "run", readings=readings)
    assert m["test"]["quantiles"] == [0.1, 0.5, 0.9]
    assert set(m["test"]["pinball"]) == {"q0.1", "q0.5", "q0.9"}
    pf = CnnLstmModel.from_file(tmp_path / "run" / "model.safetensors", "cpu")
    pred = pf.predict_frame(readings)
    for h in (1, 2, 3):
        lo, mid, hi = (pred[f"pred_h{h}_c0_q{q}"].to_numpy() for q in ("0.1", "0.5", "0.9"))
        assert (lo <= mid).all() and (mid <= hi).all() and (hi - lo).mean() > 0
        np.testing.assert_array_equal(pred[f"pred_h{h}_c0"].to_numpy(), mid)


# ---------------------------------------------------------------------------------------------
# config


def test_task_options_must_fit_the_kind():
    with pytest.raises(ValueError, match="task.aggregate applies to task.kind classify"):
        TaskConfig(kind="regress", aggregate="vote")
    with pytest.raises(ValueError, match="quantiles"):
        TaskConfig(kind="forecast", quantiles=[0.5, 1.2])
    base = {
        "data": {
            "entity": {"column": "e"},
            "timestamp": {"column": "t"},
            "channels": [{"name": "c"}],
        }
    }
    with pytest.raises(ConfigError, match="window.target_column"):
        config_from_dict(base | {"task": {"kind": "regress"}})
    with pytest.raises(ConfigError, match="test metrics are never used"):
        config_from_dict(base | {"tracking": {"champion_metric": "test_accuracy"}})
    assert make_task(None, WindowConfig(label="forecast")).kind == "forecast"
    assert make_task(None, WindowConfig()).kind == "classify"


def test_no_task_kind_string_is_compared_outside_the_task_module():
    kinds = "classify|regress|forecast|anomaly|classification|regression"
    pat = re.compile(rf"""(==|!=|\bin\b)\s*\(?\s*["']({kinds})["']|["']({kinds})["']\s*(==|!=)""")
    bad = []
    for folder in ("cnnlstm", "flows", "schemas"):
        for p in (ROOT / folder).rglob("*.py"):
            if "tasks" in p.relative_to(ROOT).parts:
                continue
            for i, line in enumerate(p.read_text().splitlines(), 1):
                if pat.search(line):
                    bad.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)
    # and grep agrees
    r = subprocess.run(
        [
            "grep",
            "-rnE",
            r"""== ?["'](classify|regress|forecast|anomaly|classification)["']""",
            "cnnlstm",
            "flows",
            "schemas",
            "--include=*.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert [ln for ln in r.stdout.splitlines() if not ln.startswith("cnnlstm/tasks/")] == []


def test_supervised_anomaly_reports_the_anomalous_class(tmp_path):
    from cnnlstm.train import train_from_config

    cfg = _cfg(
        tmp_path,
        ["c0", "c1"],
        data={"label": {"column": "label"}, "columns": {"split": "string"}},
        window={"size": 32, "stride": 32, "split": {"method": "column", "val_fraction": 0.25}},
        task={"kind": "anomaly", "method": "supervised"},
        train={"epochs": 15, "class_weights": "balanced", "patience": None},
    )
    m = train_from_config(cfg, tmp_path / "run", readings=_pump(seed=1))
    assert m["monitor"] == "val_pr_auc" and m["evaluation"]["metric"] == "f1"
    t = m["test"]
    assert set(t) >= {"f1", "precision", "recall", "pr_auc", "roc_auc", "threshold"}
    assert t["n_anomalous"] == 12 and t["pr_auc"] > 0.5


def test_reconstruction_anomaly_without_labels_uses_a_score_quantile(tmp_path):
    from cnnlstm.pyfunc import CnnLstmModel
    from cnnlstm.train import train_from_config

    readings = _pump(n_ent=6, seed=2).drop("label")
    cfg = _cfg(
        tmp_path,
        ["c0", "c1"],
        window={"size": 32, "stride": 32, "split": {"method": "entity", "val_fraction": 0.2}},
        task={"kind": "anomaly", "threshold_quantile": 0.9},
        train={"epochs": 2},
    )
    m = train_from_config(cfg, tmp_path / "run", readings=readings)
    assert "quantile 0.9 of validation" in m["val"]["threshold_rule"]
    pf = CnnLstmModel.from_file(tmp_path / "run" / "model.safetensors", "cpu")
    pred = pf.predict_frame(readings)
    assert pred["label"].null_count() == pred.height and pred["predicted"].sum() > 0


@pytest.mark.parametrize("unit", ["seconds", "samples"])
def test_target_from_end_is_the_time_left_to_each_entitys_last_row(unit):
    """window.target_from_end derives a remaining-useful-life target from the readings alone
    (run-to-failure files carry none): at each window's last sample, the seconds or the samples
    left to the entity's last row, gaps counted in seconds, not in samples."""
    from cnnlstm.windows import build_windows

    ms_b = np.r_[np.arange(4) * 500, 5000 + np.arange(4) * 500]  # a 3.5 s gap after row 3
    readings = make_readings(
        {"a": np.arange(10.0), "b": np.arange(8.0)},
        step_ms=500,
        timestamps={"a": np.arange(10) * 500, "b": ms_b},
    )
    wcfg = WindowConfig(size=4, stride=2, label="regression_end", target_from_end=unit)
    task = make_task({"kind": "regress"}, wcfg)
    w = build_windows(readings, ["c0"], wcfg, task).windows
    got = {
        (str(e), float(x)): float(y)
        for e, x, y in zip(w.entity, w.gather(slice(None))[:, 0, -1], w.y[:, 0], strict=True)
    }
    # keyed by (entity, the window's last value = its row number)
    want = {
        "seconds": {
            ("a", 3): 3.0,
            ("a", 5): 2.0,
            ("a", 7): 1.0,
            ("a", 9): 0.0,
            ("b", 3): 5.0,
            ("b", 7): 0.0,
        },
        "samples": {
            ("a", 3): 6.0,
            ("a", 5): 4.0,
            ("a", 7): 2.0,
            ("a", 9): 0.0,
            ("b", 3): 4.0,
            ("b", 7): 0.0,
        },
    }[unit]
    assert got == {(e, float(r)): v for (e, r), v in want.items()}
    assert wcfg.target == f"time_to_end_{unit}"


def test_target_from_end_config_errors():
    with pytest.raises(ValueError, match="give one"):
        WindowConfig(label="regression_end", target_column="rul", target_from_end="seconds")
    with pytest.raises(ValueError, match="target_from_end is for label=regression_end"):
        WindowConfig(label="majority", target_from_end="seconds")
    with pytest.raises(ValueError, match="target_column \\(or window.target_from_end\\)"):
        WindowConfig(label="regression_end")


def test_target_from_end_trains_like_the_remaining_life_column(tmp_path):
    """`_rul` units are sampled once a second and their `rul` column counts the rows left, so a
    run with `window.target_from_end: samples` on readings *without* that column trains on the
    same targets: the same metrics. Scoring does not derive a truth (readings in service do not
    end at a failure), where the column run reports one."""
    from cnnlstm.pyfunc import CnnLstmModel
    from cnnlstm.train import train_from_config

    common = {"size": 16, "stride": 8, "label": "regression_end"}
    common["split"] = {"method": "column", "val_fraction": 0.25}
    runs = {}
    for name, target, readings in [
        ("column", {"target_column": "rul"}, _rul(6)),
        ("derived", {"target_from_end": "samples"}, _rul(6).drop("rul")),
    ]:
        cfg = _cfg(
            tmp_path / name,
            ["c0", "c1"],
            data={"columns": {"split": "string"} | ({"rul": "float"} if name == "column" else {})},
            window=common | target,
            task={"kind": "regress", "target": {"clip_max": 125}},
            train={"epochs": 2, "patience": None},
        )
        m = train_from_config(cfg, tmp_path / name / "run", readings=readings)
        runs[name] = m
        pf = CnnLstmModel.from_file(tmp_path / name / "run" / "model.safetensors", "cpu")
        pred = pf.predict_frame(readings.filter(pl.col("split") == "test"))
        assert pred.height > 0
        assert pred["label"].null_count() == (pred.height if name == "derived" else 0)
    assert runs["derived"]["test"]["rmse"] == runs["column"]["test"]["rmse"]
    assert runs["derived"]["val"]["rmse"] == runs["column"]["val"]["rmse"]
