"""Scoring overhead: windows/s through ``mlflow.pyfunc.load_model(...).predict`` on RAW readings
(schema enforcement, windowing, normalisation, forward, output frame) against a raw torch forward
of the same windows (already cut and normalised tensors) through the same network object, in one
run, same batch size, at each torch thread count asked for.

    .venv/bin/python benchmarks/score.py [--recordings 8] [--threads 1,2] [--repeats 5]
        [--max-repeats 15] [--batch-size 512] [--onnx]

Uses the HAPT lake (``cnnlstm ingest data/hapt/landing -c configs/hapt.yaml``) and the HAPT
config's model with untrained weights (throughput does not depend on the values). The model is
logged to a throwaway sqlite store under benchmarks/_work. Target: overhead (pyfunc time / torch
time) at most 1.25x at 1 and at 2 threads.

Protocol (issue 13, item 7): baseline and candidate interleaved, their order alternating from
one repeat to the next; at least ``--repeats`` repeats, then more (up to ``--max-repeats``) until
the median ratio moves by less than 2 % between repeats; min / median / max of each, the load
average before and after, the thread counts. ``--onnx`` adds ONNX Runtime's forward of the same
windows as a third, informational column (needs ``pip install 'cnnlstm[onnx]'``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _stats(xs: list[float]) -> tuple[float, float, float]:
    return min(xs), statistics.median(xs), max(xs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "configs" / "hapt.yaml"))
    ap.add_argument("--recordings", type=int, default=8)
    ap.add_argument("--threads", default="1,2", help="torch thread counts, comma separated")
    ap.add_argument("--repeats", type=int, default=5, help="at least this many (>= 5)")
    ap.add_argument("--max-repeats", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--onnx", action="store_true", help="also time ONNX Runtime's forward")
    args = ap.parse_args()
    repeats = max(5, args.repeats)

    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    import mlflow
    import polars as pl
    import torch

    from cnnlstm.checkpoint import save_model
    from cnnlstm.config import load_config
    from cnnlstm.lake import scan_readings
    from cnnlstm.pyfunc import CnnLstmModel, log_pyfunc_model
    from cnnlstm.train import artifact, prepare_data
    from cnnlstm.window_config import SplitConfig

    cfg = load_config(args.config)
    channels = cfg.data.channel_names
    lf = scan_readings(cfg.lake_uri)
    ents = sorted(lf.select("entity_id").unique().collect()["entity_id"].to_list())
    raw = lf.filter(pl.col("entity_id").is_in(ents[: args.recordings])).collect()
    # every window of these recordings is "training" data here: only the artifact is wanted
    split = SplitConfig(method="entity", val_fraction=0, test_fraction=0)
    wcfg = cfg.window.model_copy(update={"split": split, "train_stride": None})
    prep = prepare_data(raw, channels, wcfg)
    norm = prep.norm
    torch.manual_seed(0)
    n_out = prep.task.n_outputs(prep.ws)
    model = prep.task.build_model(cfg.model, len(channels), n_out).eval()
    meta = artifact(cfg.model_copy(update={"window": wcfg}), prep, len(channels), n_out)
    work = ROOT / "benchmarks" / "_work" / "score"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    save_model(work / "model.safetensors", model, meta)
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    exp = mlflow.create_experiment("bench", artifact_location=(work / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp):
        info = log_pyfunc_model(work / "model.safetensors")
    pm = mlflow.pyfunc.load_model(info.model_uri, model_config={"device": "cpu"})

    pdf = (
        raw.select("entity_id", "timestamp", *channels, "label")
        .with_columns(pl.col("timestamp").dt.replace_time_zone(None))
        .to_pandas()
    )
    inner: CnnLstmModel = pm.unwrap_python_model()
    w, _ = inner.windows(raw)
    x = torch.from_numpy(norm.apply(w.x, w.lengths))
    net = inner.model  # the very network the pyfunc runs (loaded from the logged weights)
    n = len(w)
    bs = args.batch_size

    def torch_forward() -> None:
        with torch.inference_mode():
            for i in range(0, n, bs):
                net(x[i : i + bs])

    def pyfunc_predict() -> None:
        out = pm.predict(pdf, params={"batch_size": bs})
        assert len(out) == n, (len(out), n)

    ort_run = None
    if args.onnx:
        from cnnlstm.export import export_onnx

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(inner, work / "model.onnx", check=False)
        import onnxruntime as ort

        xs = x.numpy()

        def ort_run(threads: int):
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            # no busy-waiting threads left spinning after a run: they would steal the cores
            # from the next candidate in the interleaved loop
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
            sess = ort.InferenceSession(
                str(work / "model.onnx"), so, providers=["CPUExecutionProvider"]
            )

            def run() -> None:
                for i in range(0, n, bs):
                    xb = xs[i : i + bs]
                    sess.run(None, {"x": xb, "lengths": w.lengths[i : i + bs]})

            return run

    print(
        f"# score benchmark {dt.date.today().isoformat()} | {_cpu_name()}, {os.cpu_count()} "
        f"cores | torch {torch.__version__} | mlflow {mlflow.__version__} | polars "
        f"{pl.__version__} (POLARS_MAX_THREADS {pl.thread_pool_size()})"
    )
    print(
        f"windows: {n} from {args.recordings} HAPT recordings ({raw.height} readings), "
        f"window {cfg.window.size}/{cfg.window.stride}, batch {bs}, model {cfg.model.arch} "
        f"conv {cfg.model.conv.channels} {cfg.model.rnn.cell} {cfg.model.rnn.hidden_size}"
    )
    for threads in [int(t) for t in args.threads.split(",") if t.strip()]:
        torch.set_num_threads(threads)
        cands = {"torch": torch_forward, "pyfunc": pyfunc_predict}
        if ort_run is not None:
            cands["onnxruntime"] = ort_run(threads)
        for f in cands.values():  # warm-up
            f()
        times: dict[str, list[float]] = {k: [] for k in cands}
        ratios: list[float] = []
        load_before = _load()
        r = 0
        while r < args.max_repeats:
            order = list(cands) if r % 2 == 0 else list(reversed(cands))
            for k in order:
                t = time.perf_counter()
                cands[k]()
                times[k].append(time.perf_counter() - t)
            prev = statistics.median(ratios) if ratios else None
            ratios.append(times["pyfunc"][-1] / times["torch"][-1])
            r += 1
            stable = prev is not None and abs(statistics.median(ratios) - prev) / prev < 0.02
            if r >= repeats and stable:
                break
        print(
            f"\n## torch threads {torch.get_num_threads()} (interop "
            f"{torch.get_num_interop_threads()}); {r} interleaved repeats; load average "
            f"{load_before} -> {_load()}"
        )
        for k, ts in times.items():
            lo, med, hi = _stats(ts)
            print(
                f"{k:<12}: {n / med:8.0f} windows/s  median {med:.3f} s  min {lo:.3f}  max {hi:.3f}"
            )
        lo, med, hi = _stats(ratios)
        print(
            f"overhead pyfunc/torch: median {med:.3f}x  min {lo:.3f}x  max {hi:.3f}x  "
            f"(target <= 1.25x: {'met' if med <= 1.25 else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
