"""The tracking seam. Training reports through a `Tracker`; the default does nothing.

Backends (MLflow in a later stage) subclass `Tracker` and import their library lazily, so the
training code never imports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class Tracker:
    """Do-nothing base: every hook is optional to override. `run` opens a run and ends it with
    its status (FINISHED, FAILED on an exception, KILLED on Ctrl-C); `in_run` says whether one
    is open, so a stage can log into its caller's run."""

    in_run: bool = False

    @contextmanager
    def run(self, name: str | None = None, tags: dict[str, str] | None = None) -> Iterator[Tracker]:
        self.start_run(name=name, tags=tags)
        self.in_run = True
        status = "FAILED"
        try:
            yield self
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self.in_run = False
            self.end_run(status)

    def start_run(self, name: str | None = None, tags: dict[str, str] | None = None) -> None:
        pass

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def end_run(self, status: str = "FINISHED") -> None:
        """status: FINISHED, FAILED or KILLED."""


class MemoryTracker(Tracker):
    """Keeps everything in lists (tests, notebooks)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.artifacts: list[str] = []
        self.tags: dict[str, str] = {}
        self.status: str | None = None
        self.started = False

    def start_run(self, name=None, tags=None) -> None:
        self.started = True
        self.tags |= tags or {}

    def log_params(self, params) -> None:
        self.params |= params

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_artifact(self, path, artifact_path=None) -> None:
        self.artifacts.append(str(path))

    def set_tags(self, tags) -> None:
        self.tags |= tags

    def end_run(self, status="FINISHED") -> None:
        self.status = status


def flatten_params(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dict -> {"a.b.c": value} (what trackers take as params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten_params(v, key + ".")
        else:
            out[key] = v
    return out
