"""Task kinds: what is predicted around the model, how it is graded and compared.

``make_task(task_cfg, window_cfg)`` gives the task object of a config; every other module asks
it (targets, loss, metrics, selection, prediction columns, plots) instead of branching on the
kind. Adding a kind: a module with a `Task` subclass and one line in `KINDS`.
"""

from __future__ import annotations

from typing import Any

from cnnlstm.tasks.anomaly import Anomaly
from cnnlstm.tasks.base import Selection, Targets, Task
from cnnlstm.tasks.classify import Classify
from cnnlstm.tasks.config import TaskConfig
from cnnlstm.tasks.forecast import Forecast
from cnnlstm.tasks.regress import Regress
from cnnlstm.window_config import WindowConfig

KINDS: dict[str, type[Task]] = {
    "classify": Classify,
    "regress": Regress,
    "forecast": Forecast,
    "anomaly": Anomaly,
}

__all__ = ["KINDS", "Selection", "Targets", "Task", "TaskConfig", "make_task", "resolve_kind"]


def resolve_kind(task: TaskConfig, window: WindowConfig) -> str:
    """``auto`` follows window.label: regression_end -> regress, forecast -> forecast, else
    classify."""
    if task.kind != "auto":
        return task.kind
    return {"regression_end": "regress", "forecast": "forecast"}.get(window.label, "classify")


def check_config(task: TaskConfig, window: WindowConfig, refit_full: bool = False) -> None:
    """Cross-section checks of the task's kind (raise ValueError naming the parameters)."""
    kind = resolve_kind(task, window)
    implied = resolve_kind(TaskConfig(), window)
    if window.label in ("regression_end", "forecast") and kind != implied:
        raise ValueError(f"window.label={window.label} is for task.kind {implied}, not {kind}")
    task.check_options(kind)
    KINDS[kind].check_config(window, refit_full)


def make_task(
    task: TaskConfig | dict[str, Any] | None,
    window: WindowConfig,
    state: dict[str, Any] | None = None,
) -> Task:
    cfg = TaskConfig.model_validate(task or {})
    kind = resolve_kind(cfg, window)
    return KINDS[kind](cfg.model_copy(update={"kind": kind}), window, state)
