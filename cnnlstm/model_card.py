"""The model card: a markdown description of a registered model version (MLflow's model-version
description), built from the training run's metrics (`cnnlstm.train.train_from_config`).

`model_card` is a pure function of the metrics dict and a few facts about the run, so it is
tested without MLflow; `describe` gathers those facts (the lake fingerprint is a tag of the
training run) and writes the card through `cnnlstm.registry.describe_version`.

Sections: task, data (lake fingerprint, entities, time range, windows per split), metrics on
validation and test (and the MiniRocket baseline's when one was fitted), training (time,
epochs, hardware), intended use, known limits (classes whose recall is below
``RECALL_LIMIT`` on validation, or on test when there is no validation). MLflow keeps at most
5,000 characters of a description: longer cards are shortened.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

RECALL_LIMIT = 0.8
MAX_CHARS = 5000  # MLflow's model-version description column (SQL stores)
MAX_LISTED = 12  # low-recall classes listed by name


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"
    return str(v)


def _seconds(s: Any) -> str:
    if not _num(s):
        return "-"
    s = float(s)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _metric_table(parts: dict[str, dict[str, Any]]) -> list[str]:
    """A markdown table of the scalar metrics of each part (columns) by name (rows)."""
    names: list[str] = []
    for m in parts.values():
        names += [k for k, v in m.items() if _num(v) and k not in names]
    if not names:
        return []
    head = ["| metric | " + " | ".join(parts) + " |", "|---" * (len(parts) + 1) + "|"]
    rows = [
        f"| {'windows' if k == 'n' else k} | "
        + " | ".join(_fmt(m.get(k)) for m in parts.values())
        + " |"
        for k in names
    ]
    return head + rows


def _parts(src: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, label in (("val", "validation"), ("test", "test")):
        if isinstance(src.get(key), dict):
            out[label] = src[key]
    return out


def low_recall(
    metrics: dict[str, Any], limit: float = RECALL_LIMIT
) -> tuple[str | None, list[tuple[str, float, int]]]:
    """(the part judged: "validation" or "test", [(class, recall, support)] below `limit`,
    lowest first). Validation when the run has it, else test; (None, []) without per-class
    figures (tasks other than classify)."""
    for key, label in (("val", "validation"), ("test", "test")):
        pc = (metrics.get(key) or {}).get("per_class")
        if isinstance(pc, dict) and pc:
            low = [
                (str(c), float(r["recall"]), int(r.get("support", 0)))
                for c, r in pc.items()
                if r.get("support", 1) and float(r["recall"]) < limit
            ]
            return label, sorted(low, key=lambda t: (t[1], t[0]))
    return None, []


def model_card(
    metrics: dict[str, Any],
    *,
    name: str,
    version: str,
    run_id: str | None = None,
    lake: dict[str, Any] | None = None,
    channels: list[str] | None = None,
    window: dict[str, Any] | None = None,
    arch: str | None = None,
    recall_limit: float = RECALL_LIMIT,
    max_chars: int = MAX_CHARS,
) -> str:
    """The markdown card of model version `name` v`version` from the run's `metrics` (the dict
    `train_from_config` returns). `lake`: ``fingerprint``, ``files``, ``rows``, ``uri`` when
    known; `channels`, `window` (the window config), `arch`: what the model reads."""
    task = str(metrics.get("task", "?"))
    classes = metrics.get("class_names") or metrics.get("classes") or []
    lines = [f"# {name} v{version}", ""]

    what = f"**Task**: {task}"
    if classes:
        shown = ", ".join(map(str, classes[:20])) + (", ..." if len(classes) > 20 else "")
        what += f" ({len(classes)} classes: {shown})"
    lines.append(what)
    model_bits = []
    if arch and metrics.get("chosen") != "baseline":
        model_bits.append(f"architecture `{arch}`")
    if metrics.get("chosen") == "baseline":
        model_bits.append("the MiniRocket + ridge baseline won on validation and is this model")
    if window:
        w = f"windows of {window.get('size')} samples, stride {window.get('stride')}"
        if window.get("sample_rate_hz"):
            w += f", resampled to {window['sample_rate_hz']} Hz"
        model_bits.append(w)
    if channels:
        model_bits.append(f"channels {', '.join(channels)}")
    if model_bits:
        lines.append("**Model**: " + "; ".join(model_bits))
    if run_id:
        lines.append(f"**Training run**: `{run_id}`")

    # ---- data
    data = metrics.get("data") or {}
    lines += ["", "## Data"]
    if lake and lake.get("fingerprint"):
        extra = ", ".join(
            f"{_fmt(lake[k])} {k}" for k in ("files", "rows") if lake.get(k) not in (None, "")
        )
        lines.append(
            f"- lake fingerprint `{lake['fingerprint']}`" + (f" ({extra})" if extra else "")
        )
    else:
        lines.append("- lake fingerprint: not recorded")
    if "entities" in data:
        per = data.get("entities_per_split") or {}
        split = ", ".join(f"{k} {v}" for k, v in per.items())
        lines.append(f"- entities: {data['entities']}" + (f" ({split})" if split else ""))
    if data.get("time_range"):
        t0, t1 = data["time_range"]
        lines.append(f"- time range: {t0} to {t1}")
    nw = metrics.get("n_windows") or {}
    if nw:
        lines.append("- windows: " + ", ".join(f"{k} {_fmt(v)}" for k, v in nw.items()))

    # ---- metrics
    parts = _parts(metrics)
    lines += ["", "## Metrics"]
    ev = metrics.get("evaluation") or {}
    if ev.get("metric"):
        lines.append(f"Selection metric (validation): {ev['metric']} = {_fmt(ev.get('value'))}")
    table = _metric_table(parts)
    lines += table or ["No validation or test windows: no metrics."]
    if "validation" not in parts:
        lines.append("No validation windows: this version cannot win `champion` by itself.")
    base = metrics.get("baseline") or {}
    if base.get("skipped"):
        lines += ["", f"Baseline (MiniRocket + ridge): skipped - {base['skipped']}"]
    elif _parts(base):
        lines += ["", "### Baseline (MiniRocket + ridge, same windows)"]
        lines += _metric_table(_parts(base))

    # ---- training
    hw = metrics.get("hardware") or {}
    lines += ["", "## Training"]
    ep = metrics.get("epochs_run")
    if ep is not None:
        lines.append(
            f"- epochs: {ep} run, weights of epoch {metrics.get('weights_epoch', '-')}"
            + (" (stopped early)" if metrics.get("stopped_early") else "")
            + ("; refit on train + validation" if metrics.get("refit_full") else "")
        )
    lines.append(
        f"- time: fit {_seconds(metrics.get('fit_seconds'))}, "
        f"whole run {_seconds(metrics.get('wall_seconds'))}"
    )
    device = hw.get("device") or metrics.get("device") or "-"
    if hw.get("gpu"):
        device += f" ({hw['gpu']})"
    cpu = hw.get("cpu") or "-"
    cores = hw.get("cpu_cores")
    lines.append(
        f"- hardware: device {device}; CPU {cpu}"
        + (f", {cores} cores" if cores else "")
        + f"; torch {hw.get('torch') or metrics.get('torch') or '-'}"
    )

    # ---- use and limits
    lines += ["", "## Intended use"]
    reads = f"channels {', '.join(channels)}" if channels else "the training channels"
    lines.append(
        f"Batch scoring of raw readings with {reads}, from the same kind of sensors, units and "
        f"sampling rate as the training lake (`cnnlstm score`, or `models:/{name}/{version}` as "
        "an MLflow pyfunc). Each scoring run compares the scored readings with the training "
        "data (`drift.json`, the `monitor-` run in MLflow)."
    )
    lines += ["", "## Known limits"]
    part, low = low_recall(metrics, recall_limit)
    if part is None:
        lines.append("- no per-class figures (the task has no classes)")
    elif low:
        shown = low[:MAX_LISTED]
        lines.append(
            f"- classes with recall below {recall_limit:g} on {part}"
            + (" (no validation windows)" if part == "test" else "")
            + ": "
            + ", ".join(f"{c} {r:.2f} (n={s})" for c, r, s in shown)
            + (f", and {len(low) - len(shown)} more" if len(low) > len(shown) else "")
        )
    else:
        lines.append(f"- every class has recall of at least {recall_limit:g} on {part}")
    ents = data.get("entities")
    if ents is not None:
        lines.append(
            f"- trained on {ents} entities: entities, devices or conditions unlike them may "
            "score worse than the figures above"
        )
    if "test" not in parts:
        lines.append("- not evaluated on held-out test windows")
    text = "\n".join(lines) + "\n"
    if len(text) > max_chars:
        cut = "\n... (shortened: the whole card is too long for MLflow)\n"
        text = text[: max_chars - len(cut)].rsplit("\n", 1)[0] + cut
    return text


def describe(cfg, metrics: dict[str, Any], registration: dict[str, Any], run_id, uri) -> str | None:
    """Write the card of the version `registration` names as its MLflow description; returns
    the card, or None when it could not be written (logged: the version is registered, the card
    is documentation). The lake fingerprint comes from the training run's tags (``lake.*``)."""
    try:
        return _describe(cfg, metrics, registration, run_id, uri)
    except Exception as e:
        log.warning("model card of %s v%s not written: %s", *_key(registration), e)
        return None


def _key(registration: dict[str, Any]) -> tuple[str, str]:
    return str(registration.get("name")), str(registration.get("version"))


def _describe(cfg, metrics, registration, run_id, uri) -> str:
    from mlflow import MlflowClient

    from cnnlstm.registry import describe_version

    lake = None
    if run_id:
        tags = MlflowClient(tracking_uri=uri).get_run(run_id).data.tags
        if tags.get("lake.fingerprint"):
            lake = {k: tags.get(f"lake.{k}") for k in ("fingerprint", "files", "rows", "uri")}
            for k in ("files", "rows"):
                if lake[k] and str(lake[k]).isdigit():
                    lake[k] = int(lake[k])
    card = model_card(
        metrics,
        name=registration["name"],
        version=str(registration["version"]),
        run_id=run_id,
        lake=lake,
        channels=list(cfg.data.channel_names),
        window=cfg.window.model_dump(mode="json"),
        arch=cfg.model.arch,
    )
    describe_version(registration["name"], str(registration["version"]), card, uri)
    return card
