"""``train.refit_full``: after selection on validation, a fresh model (same seed) trained on all
training entities (train + validation) for exactly ``train.epochs`` epochs, no early stopping,
final weights kept; normalisation and the task's statistics refitted on those entities. Test
entities never enter."""

from __future__ import annotations

import time
from pathlib import Path

from cnnlstm.loop import fit, seed_everything
from cnnlstm.tracking import Tracker
from cnnlstm.train_config import TrainConfig
from cnnlstm.windows import fit_normalizer


class _Prefixed(Tracker):
    """Forwards per-epoch metrics of the refit under a prefix (so they do not mix with the
    selection run's curves); everything else is left to the caller."""

    def __init__(self, inner: Tracker, prefix: str):
        super().__init__()
        self.inner, self.prefix = inner, prefix

    def log_metrics(self, metrics, step=None):
        self.inner.log_metrics({self.prefix + k: v for k, v in metrics.items()}, step=step)


def refit_full(cfg, prep, n_in: int, n_out: int, device, out: Path, resume: bool, tracker, chash):
    """Returns (model, the Prepared with the refitted statistics, info)."""
    from cnnlstm.train import Prepared, batches

    tc: TrainConfig = cfg.train
    full = prep.train_full
    task = prep.task
    norm = fit_normalizer(full, cfg.window.normalize)
    task.fit_state(full, prep.ws, norm)
    seed_everything(tc.seed, tc.deterministic)
    model = task.build_model(cfg.model, n_in, n_out).to(device)
    rcfg = tc.model_copy(update={"patience": None, "restore_best": False})
    refit_prep = Prepared(prep.ws, prep.parts, norm, task, full)
    if cfg.model.arch == "minirocket":  # closed form: fitted once on all training entities
        from cnnlstm.baseline import fit_closed_form

        t0 = time.perf_counter()
        res = fit_closed_form(
            model, Prepared(prep.ws, {"train": full}, norm, task), device, tc.seed
        )
        info = {"windows": len(full), "epochs": 0, "fit_seconds": time.perf_counter() - t0}
        return model, refit_prep, info | {"history": res.history}
    b = batches(full, refit_prep, device, tc.batch_size, shuffle=True, seed=tc.seed)
    t0 = time.perf_counter()
    res = fit(
        model,
        b,
        None,
        rcfg,
        task,
        out / "checkpoint" / "refit.ckpt",
        resume,
        _Prefixed(tracker, "refit_"),
        chash + ":refit",
    )
    info = {
        "windows": len(full),
        "epochs": len(res.history),
        "fit_seconds": time.perf_counter() - t0,
        "history": res.history,
    }
    return model, refit_prep, info
