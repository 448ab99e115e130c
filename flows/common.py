"""Retry policy shared by the flows: retry transient I/O errors only, never user mistakes."""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from cnnlstm.config import ConfigError

# errors a retry cannot fix: bad config, bad data, a model that does not fit the data
PERMANENT: tuple[type[BaseException], ...] = (ConfigError, ValueError, KeyError, TypeError)
TRANSIENT: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError)


def is_transient(exc: BaseException | None) -> bool:
    if exc is None or isinstance(exc, PERMANENT):
        return False
    return isinstance(exc, TRANSIENT)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure is a transient I/O error."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as e:  # noqa: BLE001 - we only classify it
            exc = e
    return is_transient(exc)


RETRIES = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_condition_fn": retry_transient,
}


def run_name(stage: str):
    """A flow_run_name callable: '<stage>-<config stem>-<UTC time>' (e.g. ingest-hapt-...)."""

    def name() -> str:
        from datetime import UTC, datetime
        from pathlib import Path

        from prefect.runtime import flow_run

        cfg = Path(str(flow_run.parameters.get("config", "config"))).stem
        return f"{stage}-{cfg}-{datetime.now(UTC):%Y%m%d-%H%M%S}"

    return name
