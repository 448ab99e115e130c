"""classify: one class per window (activity, fault type), optionally one answer per entity
(recording) by vote or mean probability, reported beside the per-window figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cnnlstm import labels
from cnnlstm.evaluate import classification_metrics, entity_answers, entity_truth
from cnnlstm.tasks.base import (
    Selection,
    Targets,
    Task,
    cross_entropy_loss,
    graded_rows,
    mlflow_type,
)


def index_or_null(codes) -> Any:
    """Codes (-1: none) as a polars UInt32 index with nulls for the negative ones:
    ``values.gather(index_or_null(codes))`` is the value per row, null where there is none."""
    import polars as pl

    c = np.asarray(codes, np.int64)
    return pl.Series(np.where(c < 0, 0, c), dtype=pl.UInt32).scatter(np.flatnonzero(c < 0), None)


def softmax(out: np.ndarray) -> np.ndarray:
    if not len(out):
        return np.zeros(out.shape, np.float32)
    z = out - out.max(1, keepdims=True)
    e = np.exp(z.astype(np.float64))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def class_dtype(classes: list[Any]):
    import polars as pl

    ints = all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
    return pl.Int64 if ints else pl.String


class Classify(Task):
    kind = "classify"
    metric_names = ("accuracy", "macro_f1")
    epoch_metrics_names = ("val_accuracy", "val_macro_f1")
    default_monitor = "val_macro_f1"

    # ---- data --------------------------------------------------------------------------------
    def targets(self, cut, classes=None) -> Targets:
        if self.window.label == "any_positive":
            y, keep = labels.any_positive(cut, set(self.window.drop_labels) or {0})
            cls = list(classes) if classes is not None else [0, 1]
            return Targets(y, keep, cls, ["normal", "anomaly"])
        cls = labels.class_list(cut, self.window, classes)
        y, keep = labels.class_labels(cut, self.window, cls)
        return Targets(y, keep, cls, labels.class_names(cut, cls))

    def n_outputs(self, ws) -> int:
        return len(ws.classes)

    # ---- model -------------------------------------------------------------------------------
    def loss_fn(self, train_y, train_cfg):
        k = len(self.state.get("classes") or []) or int(np.max(train_y)) + 1
        return cross_entropy_loss(k, train_y, train_cfg)

    def fit_state(self, train, ws, norm) -> None:
        self.state["classes"] = list(ws.classes)
        self.state["class_names"] = list(ws.class_names)

    # ---- metrics -----------------------------------------------------------------------------
    @property
    def classes(self) -> list[Any]:
        return list(self.state.get("classes") or [])

    @property
    def names(self) -> list[str]:
        return list(self.state.get("class_names") or [str(c) for c in self.classes])

    def epoch_metrics(self, out, w) -> dict[str, float]:
        m = classification_metrics(w.y, out.argmax(1), len(self.classes))
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}

    def evaluate(self, out, w) -> dict[str, Any]:
        pred = out.argmax(1) if len(out) else np.zeros(0, np.int64)
        m = classification_metrics(w.y, pred, len(self.classes), self.names)
        if self.cfg.aggregate != "none" and len(out):
            m["entity"] = self.entity_metrics(w.entity, softmax(out), w.y)
        return m

    def entity_metrics(self, entity, probs, y) -> dict[str, Any]:
        """One answer per entity (task.aggregate) graded against the entity's majority label."""
        ents, idx, _ = entity_answers(entity, probs, self.cfg.aggregate)
        t_ents, truth = entity_truth(entity, y, len(self.classes))
        assert (ents == t_ents).all()
        m = classification_metrics(truth, idx, len(self.classes), self.names)
        return m | {"aggregate": self.cfg.aggregate}

    @property
    def selection(self) -> Selection:
        return Selection("macro_f1", True)

    def summary_lines(self, part, m) -> list[str]:
        lines = [
            f"{part}: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  (n={m['n']})"
        ]
        if "entity" in m:
            e = m["entity"]
            lines.append(
                f"{part} per entity ({e['aggregate']}): accuracy {e['accuracy']:.4f}  "
                f"macro-F1 {e['macro_f1']:.4f}  (n={e['n']})"
            )
        return lines

    # ---- predictions -------------------------------------------------------------------------
    def prediction_columns(self, out, w, truth, meta) -> dict[str, Any]:
        import polars as pl

        classes = self.classes
        dt = class_dtype(classes)
        conv = int if dt == pl.Int64 else str
        idx = out.argmax(1) if len(out) else np.zeros(0, np.int64)
        prob = softmax(out) if len(out) else np.zeros((0, len(classes)), np.float32)
        # per-window values gathered by index (no Python loop over windows)
        values = pl.Series([conv(c) for c in classes], dtype=dt)
        names = pl.Series(list(self.names), dtype=pl.String)
        cols: dict[str, Any] = {
            "predicted": values.gather(idx),
            "predicted_name": names.gather(idx),
            "probability": pl.Series(prob.max(1) if len(prob) else [], dtype=pl.Float32),
        }
        for k, c in enumerate(classes):
            cols[f"prob_{c}"] = pl.Series(prob[:, k], dtype=pl.Float32)
        cols["label"] = (
            pl.Series([None] * len(w), dtype=dt)
            if truth is None
            else values.gather(index_or_null(truth))
        )
        if self.cfg.aggregate != "none":
            ents, eidx, conf = entity_answers(w.entity, prob, self.cfg.aggregate)
            pos = np.searchsorted(ents, np.asarray(w.entity).astype(str))
            cols["entity_predicted"] = values.gather(eidx[pos])
            cols["entity_confidence"] = pl.Series(conf[pos], dtype=pl.Float32)
        return cols

    def signature_columns(self, meta):
        from mlflow.types import ColSpec

        t = mlflow_type(class_dtype(self.classes))
        outputs = [
            ColSpec(t, "predicted"),
            ColSpec("string", "predicted_name"),
            ColSpec("float", "probability"),
            *[ColSpec("float", f"prob_{c}") for c in self.classes],
            ColSpec(t, "label", required=False),
        ]
        if self.cfg.aggregate != "none":
            outputs += [ColSpec(t, "entity_predicted"), ColSpec("float", "entity_confidence")]
        return [ColSpec(t, "label", required=False)], outputs

    def validate_predictions(self, df) -> None:
        from schemas.predictions import validate_class_predictions

        validate_class_predictions(df)

    def prediction_metrics(self, df) -> dict[str, Any]:
        lab = graded_rows(df)
        if not lab.height:
            return {}
        m: dict[str, Any] = {
            "labelled_windows": lab.height,
            "accuracy": float((lab["label"] == lab["predicted"]).mean()),
        }
        if "entity_predicted" in lab.columns:
            import polars as pl

            per = lab.group_by("entity_id").agg(
                pl.col("label").mode().sort().first(), pl.col("entity_predicted").first()
            )
            m["entity_accuracy"] = float((per["label"] == per["entity_predicted"]).mean())
            m["labelled_entities"] = per.height
        return m

    # ---- plots -------------------------------------------------------------------------------
    def plots(self, out: Path, ctx) -> list[Path]:
        from cnnlstm import plots

        metrics, prep = ctx["metrics"], ctx["prep"]
        part = "test" if "test" in metrics else "val" if "val" in metrics else None
        if part is None:
            return []
        paths = [
            plots.plot_confusion(
                metrics[part]["confusion_matrix"],
                self.names,
                out / f"confusion_{part}.png",
                f"{part} confusion",
            )
        ]
        if "entity" in metrics[part]:
            paths.append(
                plots.plot_confusion(
                    metrics[part]["entity"]["confusion_matrix"],
                    self.names,
                    out / f"confusion_{part}_entity.png",
                    f"{part} confusion, one answer per entity ({self.cfg.aggregate})",
                )
            )
        paths += plots.feature_embeddings(
            ctx["model"],
            prep.parts[part],
            prep.norm,
            ctx["device"],
            ctx["n_points"],
            ctx["seed"],
            self.names,
            out,
        )
        return paths
