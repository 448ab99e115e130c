"""Progress of the pipeline's stages for a person watching: one display per stage (files and
rows/s while ingesting; epochs with elapsed time, time left and the validation figure while
training; windows/s while scoring), then one line per stage that says what it did.

The stages report to the process's current `Reporter` (none by default: silent). ``cnnlstm
run`` installs a `RichReporter` on stderr for the length of the pipeline (`reporting`); the
Prefect flows and the library call `current()` and report when there is one. No Prefect here.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any


class Reporter:
    """The no-op reporter (`RichReporter` draws). A stage is started, updated, then finished
    with the one line that stays on screen."""

    def start(self, stage: str, total: float | None = None, unit: str = "", text: str = "") -> None:
        pass

    def update(
        self,
        stage: str,
        advance: float = 0,
        completed: float | None = None,
        total: float | None = None,
        text: str | None = None,
        rate: tuple[float, str] | None = None,
    ) -> None:
        """``rate``: (an amount done so far in this stage, its unit), shown per second."""

    def finish(self, stage: str, line: str) -> None:
        pass

    def line(self, text: str) -> None:
        """A plain line above the display."""


_current: Reporter | None = None
_guard = threading.Lock()


def current() -> Reporter | None:
    """The reporter of this process, or None (nobody is watching)."""
    return _current


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[Reporter | None]:
    """Make `reporter` the process's reporter while the block runs (None: none); a
    `RichReporter` is started and stopped with the block."""
    global _current
    with _guard:
        before, _current = _current, reporter
    try:
        with reporter if isinstance(reporter, RichReporter) else contextlib.nullcontext():
            yield reporter
    finally:
        with _guard:
            _current = before


def seconds(s: float) -> str:
    """12.3 s, 4 min 05 s, 1 h 02 min."""
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


class RichReporter(Reporter):
    """A rich progress display on a console (stderr): a bar per running stage with its count,
    rate, elapsed time and time left; a finished stage leaves its one line. Log records and
    warnings written to stderr meanwhile are printed above the display. On a console that is
    not interactive (a log file, a pipe) there is no bar: a stage prints a status line at most
    every `every_s` seconds (each epoch of a training)."""

    NAME_WIDTH = 8

    def __init__(self, console=None, every_s: float = 15.0) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn(f"[bold]{{task.fields[stage]:<{self.NAME_WIDTH}}}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            TextColumn("{task.fields[text]}"),
            console=self.console,
            transient=True,
            redirect_stdout=False,  # `run --json` keeps stdout for its JSON document
            redirect_stderr=True,
        )
        self._tasks: dict[str, Any] = {}
        self._t0: dict[str, float] = {}
        self._c0: dict[str, float | None] = {}  # the count before this stage counted (resume)
        self._streams: list[tuple[logging.StreamHandler, Any]] = []
        self.every_s = every_s
        self._printed: dict[str, float] = {}  # when a stage last printed a status line

    def __enter__(self) -> RichReporter:
        self.progress.start()
        # a log handler holds the stderr it was made with: while the display runs, point it at
        # rich's stand-in for stderr, which prints above the display
        for h in logging.getLogger().handlers:
            if type(h) is logging.StreamHandler and h.stream is sys.__stderr__:
                self._streams.append((h, h.setStream(sys.stderr)))
        return self

    def __exit__(self, *exc) -> None:
        for h, stream in self._streams:
            h.setStream(stream)
        self._streams.clear()
        self.progress.stop()

    def start(self, stage: str, total: float | None = None, unit: str = "", text: str = "") -> None:
        self._t0[stage] = time.monotonic()
        self._c0[stage] = None
        fields = {"stage": stage, "unit": unit, "rate": "", "eta": "", "text": text}
        if stage in self._tasks:
            self.progress.reset(self._tasks[stage], total=total, visible=True, **fields)
        else:
            self._tasks[stage] = self.progress.add_task(stage, total=total, **fields)

    def update(
        self,
        stage: str,
        advance: float = 0,
        completed: float | None = None,
        total: float | None = None,
        text: str | None = None,
        rate: tuple[float, str] | None = None,
    ) -> None:
        if stage not in self._tasks:
            self.start(stage, total)
        dt = max(self.elapsed(stage), 1e-6)
        kw: dict[str, Any] = {}
        if text is not None:
            kw["text"] = text
        if rate is not None:
            kw["rate"] = f"{rate[0] / dt:,.0f} {rate[1]}/s"
        task_id = self._tasks[stage]
        self.progress.update(
            task_id, advance=advance or None, completed=completed, total=total, **kw
        )
        task = next(t for t in self.progress.tasks if t.id == task_id)
        if task.total is None:
            return
        if self._c0[stage] is None:
            self._c0[stage] = task.completed - (advance if completed is None else 1)
        done = task.completed - (self._c0[stage] or 0)
        left = dt / done * (task.total - task.completed) if done > 0 else None
        eta = f"ETA {seconds(left)}" if left is not None and task.completed < task.total else ""
        self.progress.update(task_id, eta=eta)
        if not self.console.is_interactive:
            self._status_line(stage, task, dt, eta, each=completed is not None)

    def _status_line(self, stage: str, task, dt: float, eta: str, each: bool) -> None:
        """Without a live display: a plain status line now and then (each step of a stage
        counted by `completed`, e.g. epochs)."""
        now = time.monotonic()
        if not each and now - self._printed.get(stage, self._t0[stage]) < self.every_s:
            return
        self._printed[stage] = now
        f = task.fields
        bits = [f"{task.completed:,.0f}/{task.total:,.0f} {f.get('unit', '')}".strip()]
        bits += [b for b in (f.get("text"), f.get("rate")) if b]
        bits.append(f"{seconds(dt)}" + (f", {eta}" if eta else ""))
        self.line(f"{stage:<{self.NAME_WIDTH}} " + "  ".join(bits))

    def finish(self, stage: str, line: str) -> None:
        from rich.text import Text

        if stage in self._tasks:
            self.progress.update(self._tasks[stage], visible=False)
        self.console.print(
            Text.assemble((f"{stage:<{self.NAME_WIDTH}}", "bold"), " ", line),
            soft_wrap=True,
            highlight=False,
        )

    def line(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, highlight=False, markup=False)

    def elapsed(self, stage: str) -> float:
        return time.monotonic() - self._t0.get(stage, time.monotonic())
