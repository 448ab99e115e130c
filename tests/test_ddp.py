"""Data-parallel training (`cnnlstm.ddp`, ``cnnlstm train --nproc``) with real worker processes,
torch.distributed on gloo (CPU), a real lake and a real MLflow SQLite store.

- two ranks train on disjoint halves of every global batch that together are the epoch's
  windows, write one MLflow run, and end where one process with the same global batch ends
  (tolerance below);
- a DDP run killed with SIGKILL (launcher and workers) resumes with ``--resume`` and ends
  bitwise where the uninterrupted DDP run ends, random augmentation and dropout included
  (every rank's RNG streams are in the checkpoint).

Tolerance of the DDP vs single-process comparison: atol 1e-5 on every weight and on every
per-epoch figure. The model has no BatchNorm (torch has no SyncBatchNorm on CPU; per-rank
statistics would be another computation, not a rounding difference), no dropout and no
augmentation (the ranks draw other random numbers than one process). What is left is float
summation order: per-rank mean losses over 8 + 8 windows (2 + 1, weighted, in the uneven last
batch) averaged by the all-reduce instead of one mean over 16. Measured here: 8.9e-8 on the
weights and 9e-8 on the training loss after 3 epochs x 6 steps, so 1e-5 leaves two orders of
magnitude for other CPUs and BLAS builds. It is not a general bound: AdamW divides by the
gradient's running RMS, which can enlarge a rounding difference on a parameter whose gradient
is near zero, and differences grow with the number of steps; hence a short run, and the
figure measured rather than derived. Training moved the weights by 8.8e-2 (asserted > 1000 x
the tolerance), so the comparison is about trained weights, not about the initialisation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cnnlstm.checkpoint import CheckpointError, load_model, load_state
from cnnlstm.config import config_from_dict
from cnnlstm.ddp import TRACE_ENV

ROOT = Path(__file__).resolve().parents[1]
FREQS = {1: 0.04, 2: 0.12, 3: 0.25}  # cycles per sample, one per class
ATOL = 1e-5


def _landing(d: Path, n_ent: int = 7, seg: int = 64, n_seg: int = 6) -> list[Path]:
    """One CSV per entity: 64-sample segments whose class sets a sine's frequency."""
    rng = np.random.default_rng(0)
    files = []
    for i in range(n_ent):
        lab = np.repeat(rng.integers(1, 4, n_seg), seg)
        f = np.array([FREQS[c] for c in lab])
        x0 = np.sin(2 * np.pi * np.cumsum(f) + rng.uniform(0, 6)) + 0.1 * rng.normal(size=len(f))
        x1 = 0.5 * rng.normal(size=len(f))
        split = "test" if i == 0 else "train"
        lines = ["device,t,c0,c1,label,split"] + [
            f"e{i},{k * 20},{a:.6f},{b:.6f},{c},{split}"
            for k, (a, b, c) in enumerate(zip(x0, x1, lab, strict=True))
        ]
        p = d / "landing" / f"e{i}.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join(lines) + "\n")
        files.append(p)
    return files


def _config(d: Path, dropout: float = 0.0, **train) -> dict:
    return {
        "data": {
            "name": "ddp-tiny",
            "entity": {"column": "device"},
            "timestamp": {"column": "t", "format": "epoch_ms"},
            "channels": [{"name": "c0"}, {"name": "c1"}],
            "label": {"column": "label", "dtype": "int"},
            "columns": {"split": "string"},
        },
        "lake": {"uri": str(d / "lake")},
        "window": {
            "size": 32,
            "stride": 16,
            "label": "majority",
            "min_purity": 0.9,
            "split": {"method": "column", "val_fraction": 0.25, "seed": 0},
        },
        "model": {
            "conv": {"channels": [8, 8], "kernel_size": 3, "norm": "none", "dropout": dropout},
            "rnn": {"hidden_size": 16},
            "head": {"dropout": dropout},
        },
        "train": {
            "epochs": 3,
            "batch_size": 16,
            "lr": 5e-3,
            "schedule": "constant",
            "progress": False,
            "plots": False,
            "patience": None,
            "restore_best": False,
            "baseline": "off",
            "device": "cpu",
            "num_threads": 1,
            "embedding_points": 0,
        }
        | train,
        "tracking": {
            "uri": f"sqlite:///{d / 'mlflow.db'}",
            "experiment": "ddp",
            "register_model": False,
        },
    }


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory) -> Path:
    from cnnlstm.ingest import ingest

    d = tmp_path_factory.mktemp("ddp")
    files = _landing(d)
    rep = ingest(config_from_dict(_config(d), base_dir=d), [str(p) for p in files])
    assert rep.clean, rep.to_dict()
    return d


def _write_config(d: Path, name: str, **kw) -> Path:
    p = d / f"{name}.yaml"
    p.write_text(yaml.safe_dump(_config(d, **kw)))
    return p


def _cli(cfg: Path, out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """Start ``cnnlstm train --nproc 2`` (the CLI module: no Prefect import) in its own
    session, so that a kill reaches the launcher and its workers."""
    cmd = [sys.executable, "-m", "cnnlstm.cli", "train", "-c", str(cfg), "-o", str(out)]
    return subprocess.Popen(
        [*cmd, "--nproc", "2", "--json", *extra],
        env=os.environ | (env or {}),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _result(p: subprocess.Popen, timeout: float = 300) -> dict:
    try:
        stdout, stderr = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        raise
    assert p.returncode == 0, stderr[-4000:]
    return json.loads(stdout)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    model, _ = load_model(path)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_two_ranks_take_disjoint_halves_one_run_and_match_one_process(lake_dir, tmp_path):
    import mlflow

    from cnnlstm.train import train_from_config

    d, trace = lake_dir, tmp_path / "trace"
    p = _cli(_write_config(d, "plain"), tmp_path / "ddp", env={TRACE_ENV: str(trace)})
    # meanwhile, one process with the same config and global batch (untracked)
    cfg = config_from_dict(_config(d), base_dir=d)
    single = train_from_config(cfg, tmp_path / "single")
    m = _result(p)

    # (a) per epoch, the ranks' windows are disjoint and together are every training window
    n_train = m["n_windows"]["train"]
    assert n_train % 16 % 2 == 1  # an uneven last global batch: split 2 + 1, weighted
    seen: dict[int, dict[int, list[int]]] = {0: {}, 1: {}}
    for r in (0, 1):
        for line in (trace / f"rank{r}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            seen[r][rec["epoch"]] = rec["indices"]
    assert sorted(seen[0]) == sorted(seen[1]) == [0, 1, 2]
    for e in range(3):
        a, b = seen[0][e], seen[1][e]
        assert not set(a) & set(b)
        assert sorted(a + b) == list(range(n_train))  # each window once
        assert len(a) - len(b) == 1  # 8 + 8 per full batch, 2 + 1 in the last
    assert seen[0][0] != seen[0][1]  # reshuffled per epoch

    # (b) exactly one MLflow run, FINISHED, with rank 0's curves: one point per epoch
    uri = f"sqlite:///{d / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)  # not mlflow.set_tracking_uri: that outlives the test
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert [r.info.run_id for r in runs] == [m["mlflow_run_id"]]
    assert runs[0].info.status == "FINISHED"
    hist = client.get_metric_history(m["mlflow_run_id"], "train_loss")
    assert sorted(h.step for h in hist) == [0, 1, 2]

    # (c) the same weights and curves as one process, within the tolerance (module docstring)
    w_ddp = _weights(tmp_path / "ddp" / "model.safetensors")
    w_one = _weights(tmp_path / "single" / "model.safetensors")
    assert w_ddp.keys() == w_one.keys()
    diff = max(float((w_ddp[k] - w_one[k]).abs().max()) for k in w_one)
    w0 = _initial_weights(cfg)
    moved = max(float((w_one[k] - w0[k]).abs().max()) for k in w_one)
    h_ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())["history"]
    dl = max(abs(a[k] - b[k]) for a, b in zip(h_ddp, single["history"], strict=True) for k in a)
    print(f"DDP vs one process: max |dw| {diff:.1e}, max |d figure| {dl:.1e}; training moved")
    print(f"the weights by {moved:.1e}")
    assert diff <= ATOL and moved > 1000 * ATOL
    assert len(h_ddp) == len(single["history"]) == 3
    for a, b in zip(h_ddp, single["history"], strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], abs=ATOL), k
    assert m["val"]["accuracy"] == single["val"]["accuracy"]
    # rank 0 wrote the checkpoint, with both ranks' random streams
    st = load_state(tmp_path / "ddp" / "checkpoint" / "last.ckpt")
    assert st["epoch"] == 2 and len(st["rng_ranks"]) == 2


def _initial_weights(cfg) -> dict[str, torch.Tensor]:
    """The seeded initial weights (what training starts from)."""
    from cnnlstm.loop import seed_everything
    from cnnlstm.tasks import make_task

    seed_everything(cfg.train.seed, True)
    model = make_task(cfg.task, cfg.window).build_model(cfg.model, 2, 3)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _epoch_of(ckpt: Path) -> int | None:
    try:
        return int(load_state(ckpt)["epoch"])
    except (OSError, CheckpointError):
        return None


def test_killed_ddp_run_resumes_exactly(lake_dir, tmp_path):
    """SIGKILL of the launcher and both workers once epoch 1 is checkpointed, then --resume:
    bitwise the uninterrupted run, with augmentation, dropout, EMA and a one-cycle schedule
    (each rank's random streams come back from the checkpoint)."""
    cfg_path = _write_config(
        lake_dir,
        "random",
        dropout=0.3,
        epochs=12,  # tiny epochs: enough of them that the kill lands well before the last
        augment={"jitter": 0.05, "scale": 0.1},
        schedule="onecycle",
        ema_decay=0.9,
    )
    ref = _cli(cfg_path, tmp_path / "ref", "--no-track")  # the uninterrupted run, meanwhile
    out = tmp_path / "killed"
    p = _cli(cfg_path, out, "--no-track")
    ckpt, killed_at = out / "checkpoint" / "last.ckpt", None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and p.poll() is None:
        e = _epoch_of(ckpt) if ckpt.exists() else None
        if e is not None and e >= 1:
            os.killpg(p.pid, signal.SIGKILL)  # no handler runs, in any of the processes
            killed_at = e
            break
        time.sleep(0.02)
    _, err = p.communicate(timeout=60)
    assert killed_at is not None, f"the run ended before it could be killed: {err[-3000:]}"
    assert p.returncode == -signal.SIGKILL and not (out / "metrics.json").exists()
    assert _epoch_of(ckpt) < 11  # stopped before its last epoch

    resumed = _result(_cli(cfg_path, out, "--no-track", "--resume"))
    m_ref = _result(ref)
    w_ref, w_res = (
        _weights(tmp_path / "ref" / "model.safetensors"),
        _weights(out / "model.safetensors"),
    )
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)
    h_ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())["history"]
    h_res = json.loads((out / "metrics.json").read_text())["history"]
    assert h_res == h_ref and len(h_ref) == 12
    assert resumed["val"] == m_ref["val"]


def test_cli_refuses_a_global_batch_that_does_not_split(lake_dir, tmp_path):
    p = _cli(_write_config(lake_dir, "odd", batch_size=15), tmp_path / "o", "--no-track")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2
    assert "batch_size=15" in err and "multiple of 2" in err
    assert not (tmp_path / "o").exists()


def test_rank_slices_cover_each_global_batch_and_weight_an_uneven_tail():
    """`ddp.RankBatches` on its own (no process group needed): 3 ranks, 7 windows, global
    batch 3 -> batches of 3, 3, 1: the last leaves two ranks a stand-in window of weight 0."""
    from conftest_train import make_readings

    from cnnlstm.ddp import Dist, RankBatches
    from cnnlstm.window_config import WindowConfig
    from cnnlstm.windows import Batches, build_windows

    sig = np.arange(28, dtype=np.float32)  # 7 windows of 4 samples, each its own values
    readings = make_readings({"e": sig}, labels={"e": np.ones(28, dtype=np.int64)})
    ws = build_windows(readings, ["c0"], WindowConfig(size=4, stride=4, label="majority"))
    b = Batches(ws.windows, None, "cpu", 3, shuffle=True, seed=1)
    assert len(b) == 7 and b.n_batches() == 3
    steps = {r: list(RankBatches(b, Dist(r, 3, r)).epoch(2)) for r in range(3)}
    order = b.order(2)
    for step in range(3):
        g = order[step * 3 : (step + 1) * 3]
        parts = [steps[r][step] for r in range(3)]
        real = torch.cat([x for x, _, _, wt in parts if wt > 0])
        assert torch.equal(real, b.take(g)[0])  # the ranks' real windows, in order: the batch
        assert sum(wt * len(x) for x, _, _, wt in parts if wt > 0) == 3  # = the number of ranks
    assert [steps[r][2][3] for r in range(3)] == [3.0, 0.0, 0.0]
    assert [steps[r][0][3] for r in range(3)] == [1.0, 1.0, 1.0]


def test_k8s_job_runs_one_process_per_gpu_and_resumes():
    """deploy/k8s/train-ddp.yaml: `cnnlstm train --nproc $(NPROC) --resume` with NPROC equal
    to the GPU limit, in the CUDA image, on the runs volume, created suspended. (Its general
    manifest rules - namespace, secrets by name, pinned images - are tests/test_deploy.py's.)"""
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/k8s/train-ddp.yaml").read_text()) if d]
    (job,) = docs
    assert job["kind"] == "Job" and job["spec"]["suspend"] is True
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    args = [env.get(a[2:-1], a) if a.startswith("$(") else a for a in c["args"]]
    assert args[:2] == ["cnnlstm", "train"] and "--resume" in args
    nproc = int(args[args.index("--nproc") + 1])
    assert nproc == int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 2
    assert (ROOT / args[args.index("--config") + 1]).is_file()
    hapt = yaml.safe_load((ROOT / args[args.index("--config") + 1]).read_text())
    assert hapt["train"]["batch_size"] % nproc == 0  # the global batch splits over the GPUs
    assert (
        c["image"] == "cnnlstm:cuda" and c["securityContext"]["allowPrivilegeEscalation"] is False
    )
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols[mounts["/app/runs"]]["persistentVolumeClaim"]["claimName"] == "cnnlstm-runs"
    assert vols[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["restartPolicy"] == "Never"
    # the runtime Secret by name only; no literal credentials
    assert c["envFrom"] == [{"secretRef": {"name": "cnnlstm-runtime"}}]
    # a config error (exit 2) fails the Job at once; other failures are retried (resumed)
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [2]
