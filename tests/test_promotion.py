"""Honest promotion, against a real MLflow registry (SQLite store): the champion is chosen on
validation metrics only (test metrics are logged and ignored), and two versions evaluated on
different validation data are compared only after re-evaluating the champion. Weights already
registered are not registered again, and the tags follow every alias move (registration or
`cnnlstm promote`)."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from conftest_train import make_readings
from mlflow import MlflowClient

from cnnlstm.config import config_from_dict
from cnnlstm.mlflow_tracker import log_model, use_tracking
from cnnlstm.registry import CHALLENGER, CHAMPION, Evaluation, promote_record, register


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from cnnlstm.train import train_from_config

    d = tmp_path_factory.mktemp("weights")
    rng = np.random.default_rng(0)
    sigs = {f"e{i}": rng.normal(size=(200, 1)) for i in range(4)}
    labs = {f"e{i}": np.repeat([0, 1], 100) for i in range(4)}
    cfg = config_from_dict(
        {
            "data": {
                "entity": {"column": "entity_id"},
                "timestamp": {"column": "timestamp"},
                "channels": [{"name": "c0"}],
                "label": {"column": "label"},
            },
            "lake": {"uri": str(d / "lake")},
            "window": {"size": 16, "stride": 16, "split": {"method": "entity"}},
            "model": {"conv": {"channels": [4], "kernel_size": 3}, "rnn": {"hidden_size": 4}},
            "train": {"epochs": 1, "progress": False, "plots": False},
        },
        base_dir=d,
    )
    train_from_config(cfg, d / "run", readings=make_readings(sigs, labels=labs))
    return d / "run" / "model.safetensors"


def variant(weights, i: int, d):
    """The trained weights with their first tensor nudged by `i`: other weights, same model."""
    import torch

    from cnnlstm.checkpoint import load_model, save_model

    if i == 0:
        return weights
    model, meta = load_model(weights)
    with torch.no_grad():
        next(iter(model.parameters())).add_(1e-3 * i)
    path = d / f"v{i}" / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, model, meta)
    return path


def test_promotion_uses_validation_only_and_same_data(weights, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    use_tracking(uri=uri)
    mlflow.set_experiment("promotion")
    client = MlflowClient(uri)
    calls = []
    n = iter(range(100))

    def version(val, test, fp, reevaluate=None):
        with mlflow.start_run() as run:
            mlflow.log_metrics({"val_macro_f1": val, "test_macro_f1": test})
            info = log_model(variant(weights, next(n), tmp_path))  # each its own weights
            ev = Evaluation("macro_f1", True, val, fp)
            return register("m", info.model_uri, run.info.run_id, ev, reevaluate, uri)

    def champion():
        return str(client.get_model_version_by_alias("m", CHAMPION).version)

    r1 = version(0.70, 0.99, "A")
    assert r1["champion"] and champion() == "1"
    # better on test, worse on validation: not promoted (test never decides)
    r2 = version(0.60, 1.00, "A")
    assert not r2["champion"] and champion() == "1"
    assert "0.6 does not beat champion v1 (0.7)" in r2["decision"]
    # worse on test, better on validation, same validation windows: promoted
    r3 = version(0.80, 0.10, "A")
    assert r3["champion"] and champion() == "3"
    assert r3["compared_on"] == "the same validation windows"
    # validated on other data: no comparison without re-evaluating the champion
    r4 = version(0.95, 0.95, "B")
    assert not r4["champion"] and champion() == "3"
    assert "other validation data" in r4["decision"]

    # with a re-evaluation: the champion's figure on the challenger's data decides
    def reeval(value):
        def f(mv):
            calls.append(str(mv.version))
            return value

        return f

    r5 = version(0.95, 0.0, "B", reeval(0.97))
    assert not r5["champion"] and r5["champion_value"] == 0.97 and calls == ["3"]
    assert "re-evaluated" in r5["compared_on"]
    r6 = version(0.95, 0.0, "B", reeval(0.50))
    assert r6["champion"] and champion() == "6"
    mv6 = client.get_model_version("m", "6")
    assert mv6.tags["cnnlstm.eval_fingerprint"] == "B"
    assert mv6.tags["cnnlstm.champion_value"] == "0.5"
    assert client.get_run(mv6.run_id).data.tags["registry.compared_on"] == r6["compared_on"]
    # no validation metric at all: kept as challenger
    with mlflow.start_run() as run:
        info = log_model(variant(weights, next(n), tmp_path))
        r7 = register("m", info.model_uri, run.info.run_id, None, None, uri)
    assert not r7["champion"] and "no validation metric" in r7["decision"]


def _state(client, name: str) -> dict[str, tuple[list[str], str, str, str]]:
    """version -> (its aliases in the registry, its decision tag, its run's registry.aliases,
    its run's registry.decision)."""
    aliases: dict[str, list[str]] = {}
    for a, v in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(v), []).append(a)
    out = {}
    for mv in client.search_model_versions(f"name='{name}'"):
        run = client.get_run(mv.run_id).data.tags
        out[str(mv.version)] = (
            sorted(aliases.get(str(mv.version), [])),
            mv.tags["cnnlstm.decision"],
            run.get("registry.aliases"),
            run.get("registry.decision"),
        )
    return out


def _consistent(state) -> None:
    """The tags never contradict the registry: each run lists its version's aliases and
    decision; a version with no alias does not claim one ("kept as challenger" / "promoted"
    decisions of versions that lost the alias say where it went)."""
    for v, (aliases, decision, run_aliases, run_decision) in state.items():
        assert run_aliases == ",".join(aliases), (v, state)
        assert run_decision == decision, (v, state)
        if CHAMPION in aliases:  # its own decision, or its registration's, made it champion
            assert "promoted" in decision or "champion by hand" in decision, (v, decision)
        if not aliases:
            assert "moved to" in decision or "by hand" in decision, (v, decision)


def test_same_weights_are_not_registered_twice(weights, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    use_tracking(uri=uri)
    mlflow.set_experiment("dedupe")
    client = MlflowClient(uri)

    def version(w, val):
        with mlflow.start_run() as run:
            info = log_model(w)
            ev = Evaluation("macro_f1", True, val, "A")
            return register("m", info.model_uri, run.info.run_id, ev, None, uri), run.info.run_id

    r1, _ = version(weights, 0.5)
    r2, run2 = version(variant(weights, 1, tmp_path), 0.4)
    assert (r1["version"], r2["version"]) == ("1", "2") and r1["registered"] and r2["registered"]
    # the same weights as v1, logged by another run (better on validation, even): no version 3,
    # no alias moves; the record and the run name v1
    r3, run3 = version(weights, 0.9)
    assert r3["registered"] is False and r3["version"] == "1"
    assert r3["weights_sha256"] == r1["weights_sha256"]
    assert "not registered again" in r3["decision"] and "v1" in r3["decision"]
    assert r3["aliases"] == [CHAMPION] and r3["champion"] is True
    assert {str(mv.version) for mv in client.search_model_versions("name='m'")} == {"1", "2"}
    assert str(client.get_model_version_by_alias("m", CHALLENGER).version) == "2"
    tags = client.get_run(run3).data.tags
    assert tags["registry.version"] == "1" and tags["registry.registered"] == "false"
    _consistent(_state(client, "m"))


def test_promote_keeps_aliases_tags_and_descriptions_consistent(weights, tmp_path):
    """The observed mess: after `cnnlstm promote 2`, v2 showed champion next to "kept as
    challenger" and v1's run still said "challenger,champion". One function moves aliases and
    writes the tags: registration and promotion both go through it."""
    from cnnlstm.registry import describe_version

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    use_tracking(uri=uri)
    mlflow.set_experiment("aliases")
    client = MlflowClient(uri)

    def version(i, val):
        with mlflow.start_run() as run:
            info = log_model(variant(weights, i, tmp_path))
            ev = Evaluation("macro_f1", True, val, "A")
            rec = register("m", info.model_uri, run.info.run_id, ev, None, uri)
        describe_version("m", rec["version"], f"# m v{rec['version']}\ncard", uri)
        return rec

    version(0, 0.7)
    s = _state(client, "m")
    assert s["1"][0] == [CHALLENGER, CHAMPION] and s["1"][2] == "challenger,champion"
    _consistent(s)
    v2 = version(1, 0.6)  # kept as challenger: v1 loses challenger, keeps champion
    assert not v2["champion"]
    s = _state(client, "m")
    assert s["1"][0] == [CHAMPION] and s["1"][2] == "champion"
    assert s["1"][1].startswith("challenger moved to v2")
    assert s["2"][0] == [CHALLENGER] and s["2"][1].startswith("kept as challenger")
    _consistent(s)

    rec = promote_record("m", "2", CHAMPION, uri)  # cnnlstm promote 2
    assert rec["before"] == "1" and rec["changed"]
    s = _state(client, "m")
    assert s["2"][0] == [CHALLENGER, CHAMPION] and s["2"][2] == "challenger,champion"
    assert s["2"][1].startswith("champion by hand (cnnlstm promote), was v1")
    assert "at registration: kept as challenger" in s["2"][1]  # history kept, labelled
    assert s["1"][0] == [] and s["1"][2] == ""
    assert s["1"][1].startswith("champion moved to v2 (by hand)")
    _consistent(s)
    mv2 = client.get_model_version("m", "2")
    assert mv2.tags["cnnlstm.registration_decision"].startswith("kept as challenger")
    assert mv2.tags["cnnlstm.champion_by"] == "hand"
    # the cards (descriptions) say nothing about aliases, so no move can make them wrong
    for v in ("1", "2"):
        desc = client.get_model_version("m", v).description
        assert desc.startswith(f"# m v{v}") and CHAMPION not in desc and CHALLENGER not in desc
    # promoting again changes nothing; the CLI says so, in JSON too
    assert promote_record("m", "2", CHAMPION, uri)["changed"] is False
    # a third version that wins moves champion and challenger in one step
    version(2, 0.9)
    s = _state(client, "m")
    assert s["3"][0] == [CHALLENGER, CHAMPION] and s["2"][0] == []
    assert s["2"][1].startswith("challenger moved to v3; champion moved to v3 (v3 registered")
    _consistent(s)
