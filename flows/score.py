"""Score flow: the registry's champion -> lake files not yet scored -> predictions Parquet, then
drift monitoring (`cnnlstm.drift`); optionally retraining when drift is flagged.

Scoring fans out (`cnnlstm.score`): one plan task, one score task per part (mapped on the
flow's task runner - threads - or a Dask cluster with ``runner.kind: dask``), one commit."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, task, unmapped
from prefect.events import emit_event
from prefect.logging import get_run_logger

from cnnlstm.config import load_config
from cnnlstm.progress import current as current_reporter
from cnnlstm.progress import seconds
from flows.common import RETRIES, run_name
from flows.runners import fan_out_runner
from flows.train import train_flow

DRIFT_EVENT = "cnnlstm.drift.flagged"  # what a Prefect automation can trigger on


@task(name="score-plan", **RETRIES)
def plan_task(
    config: str,
    model_uri: str | None,
    where: dict[str, Any] | None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """The model verified and resolved, the unscored lake files planned into parts; returns
    where the plan is (output, attempt), how many parts and lake files it has, and the model."""
    from cnnlstm.score import plan_scoring

    plan, _ = plan_scoring(load_config(config, overrides), model_uri=model_uri, where=where)
    return {
        "output": plan.output,
        "attempt": plan.attempt,
        "parts": plan.n_parts,
        "files": plan.n_files,
        "model": f"{plan.model_name} v{plan.model_version}",
    }


@task(name="score-part", **RETRIES)
def score_part_task(output: str, attempt: str, index: int) -> dict[str, Any]:
    """One part scored into the attempt's staging folder (any worker: it reads the plan by its
    location and loads the model itself, verified against the plan's weights hash)."""
    from cnnlstm.score import load_plan, score_part

    return score_part(load_plan(output, attempt), index).to_dict()


@task(name="score-commit", **RETRIES)
def commit_task(
    config: str,
    output: str,
    attempt: str,
    parts: list[dict[str, Any]],
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    from cnnlstm.score import commit_scoring, load_plan

    cfg = load_config(config, overrides)
    return commit_scoring(cfg, load_plan(output, attempt), parts).to_dict()


@task(name="score-abort")
def abort_task(output: str, attempt: str) -> None:
    from cnnlstm.score import abort_scoring, load_plan

    abort_scoring(load_plan(output, attempt))


def _part_results(
    futures: list[Any], watch: _Watch | None = None
) -> tuple[list[dict[str, Any]], list[BaseException]]:
    for f in futures:  # every part ends (retries included) before anything is decided
        f.wait()
        if watch is not None:
            watch(f)
    results, errors = [], []
    for f in futures:
        try:
            results.append(f.result())
        except Exception as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)
    return results, errors


class _Watch:
    """Reports each scored part to the process's progress display (`cnnlstm.progress`), when
    there is one: lake files done, windows scored per second."""

    def __init__(self, files: int, model: str) -> None:
        self.reporter = current_reporter()
        self.windows = 0
        if self.reporter is not None:
            self.reporter.start("score", total=files, unit="files", text=model)

    def __call__(self, future: Any) -> None:
        if self.reporter is None:
            return
        try:
            groups = future.result()["groups"]
        except Exception:  # noqa: BLE001 - the caller reports failed parts
            return
        self.windows += sum(g["windows"] for g in groups)
        files = sum(len(g["files"]) for g in groups)
        self.reporter.update("score", advance=files, rate=(self.windows, "windows"))


def score_task(
    config: str,
    model_uri: str | None,
    where: dict[str, Any] | None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """The flow's scoring step: plan (one task), score the parts (one task each, mapped on the
    flow's task runner, or on a Dask cluster with ``runner.kind: dask``), then commit once. A
    part that fails (after its retries) fails the run with nothing of this attempt committed:
    its staging folder is removed; the next run plans the same files again."""
    ref = plan_task(config, model_uri, where, overrides)
    output, attempt, n = ref["output"], ref["attempt"], ref["parts"]
    watch = _Watch(ref.get("files", 0), ref.get("model", ""))
    parts: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    if n:
        runner = fan_out_runner(load_config(config, overrides))
        kwargs = {"output": unmapped(output), "attempt": unmapped(attempt), "index": list(range(n))}
        if runner is None:
            parts, errors = _part_results(score_part_task.map(**kwargs), watch)
        else:  # runner.kind=dask: a Dask cluster for this run's part tasks
            with runner:
                parts, errors = _part_results(runner.map(score_part_task, kwargs), watch)
    if errors:
        abort_task(output, attempt)
        raise RuntimeError(
            f"scoring attempt {attempt}: {len(errors)} of {n} parts failed, nothing was "
            f"committed (run again): {errors[0]!r}"
        ) from errors[0]
    report = commit_task(config, output, attempt, parts, overrides)
    # a part's groups are entities: those with windows are the ones the where= filter kept
    report["entities_scored"] = sum(1 for p in parts for g in p["groups"] if g["windows"])
    return report


def report_line(r: dict[str, Any], elapsed: float | None = None) -> str:
    """One line for a person: predictions, for how many entities, from which lake files (with
    the time taken and windows/s when `elapsed` is given)."""
    model = f"{r['model_name']} v{r['model_version']}"
    already = f"{r['files_already_scored']:,}"
    if not r["files_scored"]:
        took = f" ({seconds(elapsed)})" if elapsed is not None else ""
        return f"nothing new for {model}: {already} lake files already scored{took}"
    ents = r.get("entities_scored")
    who = f" for {ents:,} {'entity' if ents == 1 else 'entities'}" if ents is not None else ""
    took = ""
    if elapsed is not None:
        took = f"; {seconds(elapsed)}"
        if elapsed > 0 and r.get("windows"):
            took += f", {r['windows'] / elapsed:,.0f} windows/s"
    return (
        f"{r['rows_written']:,} predictions by {model}{who} ({r['files_scored']:,} new lake "
        f"files read, {already} already scored{took})"
    )


def drift_flagged(report: dict[str, Any]) -> list[str]:
    """What the scoring run's drift check flagged: channel names, and "predicted mix"."""
    d = report.get("drift") or {}
    out = list(d.get("flagged_channels") or [])
    if d.get("predicted_flagged"):
        out.append("predicted mix")
    return out


@flow(name="score", flow_run_name=run_name("score"), log_prints=True)
def score_flow(
    config: str,
    model_uri: str | None = None,
    where: dict[str, Any] | None = None,
    retrain_on_drift: bool = False,
    retrain_out_dir: str = "runs/retrain-on-drift",
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Score with ``model_uri`` (default ``models:/<registered model>@champion``); ``where``
    selects lake rows by metadata column (e.g. ``{"split": "test"}``). Idempotent: files already
    scored by this model version are skipped (a watermark beside the predictions).

    When drift is flagged (`score.drift` thresholds), the flow emits the Prefect event
    ``cnnlstm.drift.flagged`` (for an automation) and, with ``retrain_on_drift``, runs the train
    flow as a subflow into ``retrain_out_dir`` (a fresh run: the lake now holds the drifted
    data; the new version becomes challenger, and champion only if it wins on validation).
    Its result is the report's ``retrain`` entry. ``overrides``: config values as
    ``section.key=value``."""
    t0 = time.monotonic()
    more = {"overrides": overrides} if overrides else {}
    report = score_task(config, model_uri, where, **more)
    logger = get_run_logger()
    line = report_line(report, time.monotonic() - t0)
    logger.info("score: %s", line)
    if (reporter := current_reporter()) is not None:
        reporter.finish("score", line)
    flagged = drift_flagged(report)
    if not flagged:
        return report
    logger.warning(
        "drift flagged for %s v%s: %s (%s)",
        report["model_name"],
        report["model_version"],
        ", ".join(flagged),
        report["drift"].get("file"),
    )
    model = f"{report['model_name']}.v{report['model_version']}"
    emit_event(
        event=DRIFT_EVENT,
        resource={
            "prefect.resource.id": f"cnnlstm.model.{model}",
            "prefect.resource.name": f"{report['model_name']} v{report['model_version']}",
        },
        payload={"config": config, "flagged": flagged, "drift_file": report["drift"].get("file")},
    )
    if retrain_on_drift:
        logger.info("retrain_on_drift: training a new version into %s", retrain_out_dir)
        report["retrain"] = train_flow(config, out_dir=retrain_out_dir, resume=False, **more)
    return report
