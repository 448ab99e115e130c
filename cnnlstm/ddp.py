"""Distributed data-parallel training (DDP) on one or more machines: ``cnnlstm train --nproc N``
(N workers started here by torch's elastic launcher, the engine behind ``torchrun``) or
``torchrun --standalone --nproc-per-node N -m cnnlstm.cli train ...``.

What one worker (rank) does:

- prepares the same data as a single process would (deterministic: same seed, same windows);
- trains a `torch.nn.parallel.DistributedDataParallel` copy of the model on its contiguous
  slice of each **global** batch: batch b of epoch e is ``order(e)[b*B:(b+1)*B]`` of the
  training `Batches` (``B = train.batch_size``, what one process trains on) and rank r takes
  the r-th of N contiguous pieces (`RankBatches`). The ranks together take exactly the
  single-process batch, and the averaged gradient is the single-process gradient (each
  rank's loss is weighted by its share of the batch, so an uneven last batch averages right);
- on CUDA, BatchNorm layers become `torch.nn.SyncBatchNorm` (statistics over the whole global
  batch). On CPU (gloo) torch has no SyncBatchNorm: BatchNorm statistics are per rank there;
- rank 0 alone validates, early-stops (its decision is broadcast), logs to MLflow, prints,
  writes the checkpoint (with every rank's RNG state, gathered) and the model, and registers;
  the other ranks return after the last epoch.

Backends: NCCL for CUDA tensors (gloo for CPU-side objects), gloo on CPU.
``CNNLSTM_DDP_TIMEOUT_S`` (default 3600) bounds how long a rank waits for the others (rank 0's
validation and checkpoint included). ``CNNLSTM_DDP_TRACE_DIR``: each rank appends the window
indices it trained on per epoch to ``rank<r>.jsonl`` there (a debugging aid; the tests use it).
"""

from __future__ import annotations

import json
import logging
import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TRACE_ENV = "CNNLSTM_DDP_TRACE_DIR"
TIMEOUT_ENV = "CNNLSTM_DDP_TIMEOUT_S"


@dataclass(frozen=True)
class Dist:
    """This process's place in the process group."""

    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


# --------------------------------------------------------------------------------------------
# process group


def launched() -> bool:
    """Whether this process is one of several workers of a launcher (torchrun, or
    ``cnnlstm train --nproc``): the launcher sets WORLD_SIZE and RANK."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init(device_type: str) -> Dist:
    """Join the process group the launcher describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
    environment): NCCL for CUDA tensors plus gloo for CPU ones on CUDA, gloo alone on CPU."""
    import torch
    import torch.distributed as td

    if not td.is_initialized():
        cuda = device_type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        td.init_process_group(
            backend="cpu:gloo,cuda:nccl" if cuda else "gloo",
            timeout=timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "3600"))),
        )
    d = current()
    assert d is not None
    return d


def current() -> Dist | None:
    """The process group this process is in, when there is one of more than one rank."""
    import torch.distributed as td

    if not (td.is_available() and td.is_initialized()) or td.get_world_size() < 2:
        return None
    return Dist(td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def rank_device(device, dist: Dist):
    """The device of this rank: its own GPU (cuda:LOCAL_RANK) on CUDA, else `device`."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return device
    if dist.local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"rank {dist.rank} has local rank {dist.local_rank} but this node has "
            f"{torch.cuda.device_count()} GPU(s): start at most one process per GPU"
        )
    torch.cuda.set_device(dist.local_rank)
    return torch.device("cuda", dist.local_rank)


def check_config(cfg, world: int) -> None:
    """Refuse what data-parallel training does not do (a ConfigError: exit status 2)."""
    from cnnlstm.config import ConfigError

    bs = cfg.train.batch_size
    if bs % world:
        raise ConfigError(
            f"train.batch_size={bs} (the global batch) does not split evenly over {world} "
            f"processes: use a multiple of {world}, or another --nproc"
        )
    if cfg.model.arch in ("auto", "minirocket"):
        raise ConfigError(
            f"model.arch={cfg.model.arch} is not trained data-parallel (auto runs a study of "
            "trials, minirocket fits in closed form): train it without --nproc"
        )
    if cfg.train.refit_full:
        raise ConfigError(
            "train.refit_full is not supported with --nproc > 1 yet: train data-parallel "
            "without it, or refit in one process"
        )


def launch(nproc: int, fn, *args, preload: tuple[str, ...] = ("cnnlstm.train",)) -> dict:
    """Run ``fn(*args)`` in `nproc` local worker processes with torch's elastic launcher (what
    ``torchrun --standalone`` does: a local rendezvous on a free port, the torchrun environment
    in each worker, all workers stopped when one fails or on SIGTERM/SIGINT). Returns each
    rank's return value; raises torch's ChildFailedError when a worker failed (`failure_message`
    says why). `fn` must be importable by name.

    The workers are forked from a fresh forkserver process that imported `preload` once (torch,
    polars, the training code) instead of each importing them again. That process only
    imports: it creates no CUDA context and runs nothing, so forking it is safe for CUDA
    workers too (unlike forking the launcher)."""
    import multiprocessing

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if "OMP_NUM_THREADS" not in os.environ:  # as torchrun: no N x all-cores oversubscription
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    multiprocessing.get_context("forkserver").set_forkserver_preload(list(preload))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"cnnlstm-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.1,
        start_method="forkserver",
    )
    return elastic_launch(config, fn)(*args)


def failure_message(err) -> str:
    """The first failed worker's error (e.g. 'ValueError: ...') from a ChildFailedError."""
    try:
        rank, failure = err.get_first_failure()
    except Exception:
        return str(err)
    msg = failure.message
    if isinstance(msg, dict):
        msg = msg.get("message", msg)
    return f"rank {rank}: {str(msg).strip()}"


# --------------------------------------------------------------------------------------------
# the model, the data, the collectives


def wrap(model, dist: Dist, device):
    """SyncBatchNorm on CUDA (in place), then the DistributedDataParallel wrapper that averages
    the gradients in backward. Rank 0's parameters and buffers are broadcast to all ranks."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_bn and device.type == "cuda":
        converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        assert converted is model  # our models are containers: converted in place
    elif has_bn and dist.main:
        log.warning(
            "BatchNorm on CPU: each of the %d ranks normalises with its own slice's statistics "
            "(torch's SyncBatchNorm needs CUDA), so the result differs from one process's",
            dist.world,
        )
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


def seed_rank(seed: int, dist: Dist) -> None:
    """Give ranks > 0 their own random streams (augmentation noise, dropout); rank 0 keeps the
    seeded one. Called after the model is built, so every rank starts from the same weights."""
    import numpy as np
    import torch

    if dist.rank == 0:
        return
    s = (seed * 1_000_003 + dist.rank) % 2**32
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def all_gather(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    import torch.distributed as td

    out: list[Any] = [None] * td.get_world_size()
    td.all_gather_object(out, obj)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (the others wait here for rank 0)."""
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def sum_(t):
    """In-place sum of a tensor over the ranks."""
    import torch.distributed as td

    td.all_reduce(t, op=td.ReduceOp.SUM)
    return t


def rank_slice(global_batch, rank: int, world: int):
    """Rank `rank`'s contiguous piece of a global batch of indices (sizes differ by at most
    one; the N pieces in rank order are the batch)."""
    import torch

    return torch.tensor_split(global_batch, world)[rank]


class RankBatches:
    """This rank's share of a training `Batches` (``shuffle`` as set there): per step
    ``(x, lengths or None, y, weight)``, where weight = this rank's share of the global batch
    times the number of ranks (1.0 for every full batch). DDP averages the gradients over the
    ranks; weighting each rank's mean loss this way makes that average the gradient of the
    global batch's mean loss also for an uneven last batch. A rank left without a window of a
    (tiny) last batch still steps, on one window with weight 0 (DDP needs every rank)."""

    def __init__(self, batches, dist: Dist):
        self.batches, self.dist = batches, dist
        trace = os.environ.get(TRACE_ENV)
        self.trace = Path(trace) / f"rank{dist.rank}.jsonl" if trace else None

    def n_batches(self) -> int:
        return self.batches.n_batches()

    def epoch(self, epoch: int) -> Iterator[tuple[Any, Any, Any, float]]:
        b, (rank, world) = self.batches, (self.dist.rank, self.dist.world)
        b.set_epoch(epoch)
        order, bs = b.order(epoch), b.batch_size
        seen = []
        for step in range(b.n_batches()):
            g = order[step * bs : (step + 1) * bs]
            mine = rank_slice(g, rank, world)
            weight = len(mine) * world / len(g)
            if len(mine) == 0:
                mine = g[:1]
            else:
                seen.append(mine)
            x, ln, y = b.take(mine)
            yield x, ln, y, weight
        if self.trace is not None:
            import torch

            idx = torch.cat(seen).tolist() if seen else []
            self.trace.parent.mkdir(parents=True, exist_ok=True)
            with self.trace.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"epoch": epoch, "rank": rank, "indices": idx}) + "\n")
