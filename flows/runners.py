"""The task runner a flow fans out on, chosen by the config's ``runner`` section.

- ``runner.kind: threads`` (default): Prefect's ``ThreadPoolTaskRunner`` in the flow's process.
- ``runner.kind: dask``: prefect-dask's ``DaskTaskRunner``, either on a temporary
  ``distributed.LocalCluster`` of worker *processes* (``n_workers``, ``threads_per_worker``) or on
  an existing scheduler (``address: tcp://host:8786``). Needs ``pip install 'cnnlstm[dask]'``.

Use it per call with ``ingest_flow.with_options(task_runner=task_runner_for(cfg))``, or let the
ingest flow pick it up itself from the config (it does, see ``flows/ingest.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner

from cnnlstm.config import Config, ConfigError, RunnerConfig, load_config

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner


def runner_config(config: str | Path | Config | RunnerConfig) -> RunnerConfig:
    if isinstance(config, RunnerConfig):
        return config
    if isinstance(config, Config):
        return config.runner
    return load_config(config).runner


def is_dask_runner(runner: Any) -> bool:
    return type(runner).__name__ == "DaskTaskRunner"


def task_runner_for(config: str | Path | Config | RunnerConfig) -> TaskRunner:
    """A fresh (not yet started) task runner for the config's ``runner`` section."""
    rc = runner_config(config)
    if rc.kind == "threads":
        return ThreadPoolTaskRunner()
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError("runner.kind=dask needs prefect-dask: pip install 'cnnlstm[dask]'") from e
    if rc.address:
        return DaskTaskRunner(address=rc.address)
    cluster_kwargs: dict[str, Any] = {
        "processes": True,
        "threads_per_worker": rc.threads_per_worker,
        "dashboard_address": ":0",  # a free port: two flows on one host never collide
    }
    if rc.n_workers is not None:
        cluster_kwargs["n_workers"] = rc.n_workers
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=cluster_kwargs)


def fan_out_runner(config: str | Path | Config | RunnerConfig) -> TaskRunner | None:
    """The Dask runner the config asks for, to enter around a flow's mapped tasks - unless the
    flow already runs on one (``flow.with_options(task_runner=DaskTaskRunner(...))``). None: map
    on the flow's own task runner (threads by default)."""
    runner = task_runner_for(config)
    if not is_dask_runner(runner):
        return None
    ctx = FlowRunContext.get()
    if ctx is not None and is_dask_runner(ctx.task_runner):
        return None
    return runner
