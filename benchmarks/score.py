"""Scoring overhead: windows/s through ``mlflow.pyfunc.load_model(...).predict`` on RAW readings
(schema enforcement, windowing, normalisation, forward, output frame) against a raw torch forward
of the same windows (already cut and normalised tensors), in one run, same model, same batch size.

    .venv/bin/python benchmarks/score.py [--recordings 8] [--repeats 3] [--batch-size 512]

Uses the HAPT lake (``cnnlstm ingest data/hapt/landing -c configs/hapt.yaml``) and the default
HAPT model size (conv 64-64, LSTM 128) with untrained weights (throughput does not depend on the
values). The model is logged to a throwaway sqlite store under benchmarks/_work. Target: overhead
(pyfunc time / torch time) at most 1.25x.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "configs" / "hapt.yaml"))
    ap.add_argument("--recordings", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=512)
    args = ap.parse_args()

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

    cfg = load_config(args.config)
    channels = cfg.data.channel_names
    lf = scan_readings(cfg.lake_uri)
    ents = sorted(lf.select("entity_id").unique().collect()["entity_id"].to_list())
    raw = lf.filter(pl.col("entity_id").is_in(ents[: args.recordings])).collect()
    # every window of these recordings is "training" data here: only the artifact is wanted
    from cnnlstm.window_config import SplitConfig

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
    n = len(w)
    bs = args.batch_size

    def torch_forward() -> None:
        with torch.inference_mode():
            for i in range(0, n, bs):
                model(x[i : i + bs])

    def pyfunc_predict() -> None:
        out = pm.predict(pdf, params={"batch_size": bs})
        assert len(out) == n, (len(out), n)

    pyfunc_predict()
    torch_forward()  # warm-up
    t_torch, t_pyf = [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit both alike
        t = time.perf_counter()
        torch_forward()
        t_torch.append(time.perf_counter() - t)
        t = time.perf_counter()
        pyfunc_predict()
        t_pyf.append(time.perf_counter() - t)
    tt, tp = statistics.median(t_torch), statistics.median(t_pyf)
    print(
        f"# score benchmark {dt.date.today().isoformat()} | {platform.processor() or 'cpu'} "
        f"{os.cpu_count()} cores | torch {torch.__version__} (threads "
        f"{torch.get_num_threads()}) | mlflow {mlflow.__version__}"
    )
    print(
        f"windows: {n} from {args.recordings} HAPT recordings ({raw.height} readings), "
        f"window {cfg.window.size}/{cfg.window.stride}, batch {bs}, model "
        f"conv {cfg.model.conv.channels} {cfg.model.rnn.cell} {cfg.model.rnn.hidden_size}"
    )
    print(
        f"raw torch forward      : {n / tt:10.0f} windows/s  ({tt:.3f} s, median of {args.repeats})"
    )
    print(f"pyfunc predict (raw in): {n / tp:10.0f} windows/s  ({tp:.3f} s)")
    ratio = tp / tt
    print(f"overhead: {ratio:.3f}x  (target <= 1.25x: {'met' if ratio <= 1.25 else 'NOT met'})")


if __name__ == "__main__":
    main()
