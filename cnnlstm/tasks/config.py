"""Typed config of the task around the model (no torch import): what is predicted, how it is
graded and how runs are compared. Reference: docs/tasks.md and docs/config.md (``task``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TaskKind = Literal["classify", "regress", "forecast", "anomaly"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TargetTransform(_Strict):
    """Regression target transforms, applied in this order for training and inverted in every
    reported metric and prediction: clip (cap) -> log1p -> standardise."""

    clip_min: float | None = Field(default=None, description="values below become clip_min")
    clip_max: float | None = Field(
        default=None, description="values above become clip_max (e.g. remaining useful life 125)"
    )
    log1p: bool = Field(default=False, description="train on log(1 + y) (y >= 0 after clipping)")
    standardize: bool = Field(default=True, description="train on (y - mean) / std")

    @model_validator(mode="after")
    def _order(self) -> TargetTransform:
        lo, hi = self.clip_min, self.clip_max
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("task.target: clip_min > clip_max")
        if self.log1p and (self.clip_min is None or self.clip_min < 0):
            raise ValueError("task.target.log1p needs clip_min >= 0 (log1p of y < -1 is undefined)")
        return self


_OPTIONS: dict[str, tuple[str, ...]] = {
    # the options that only mean something for one kind (others must stay at their default)
    "aggregate": ("classify",),
    "target": ("regress",),
    "evaluate_at": ("regress",),
    "quantiles": ("forecast",),
    "method": ("anomaly",),
    "normal_labels": ("anomaly",),
    "train_on": ("anomaly",),
    "threshold_quantile": ("anomaly",),
}


class TaskConfig(_Strict):
    """The task kind and its options.

    kind ``auto`` follows ``window.label``: ``regression_end`` -> regress, ``forecast`` ->
    forecast, anything else -> classify.
    """

    kind: Literal["auto", "classify", "regress", "forecast", "anomaly"] = "auto"
    aggregate: Literal["none", "vote", "mean_prob"] = Field(
        default="none",
        description="classify: also answer once per entity (recording) by majority vote of the "
        "windows or by the mean class probability; reported beside the per-window figures",
    )
    target: TargetTransform = Field(default_factory=TargetTransform)
    evaluate_at: Literal["all", "last"] = Field(
        default="all",
        description="regress: grade every window, or only each entity's last window "
        "(the remaining-useful-life protocol)",
    )
    quantiles: list[float] | None = Field(
        default=None,
        description="forecast: predict these quantiles (pinball loss) instead of one value; "
        "the point forecast is the median (0.5 is added when missing)",
    )
    method: Literal["supervised", "reconstruction"] = Field(
        default="reconstruction",
        description="anomaly: a classifier of labelled anomalies, or a reconstruction model "
        "whose error is the anomaly score (threshold chosen on validation)",
    )
    normal_labels: list[int | str] = Field(
        default_factory=lambda: [0],
        description="anomaly: label values meaning normal; a window is anomalous when any of "
        "its labelled samples has another value",
    )
    train_on: Literal["normal", "all"] = Field(
        default="normal",
        description="anomaly/reconstruction: train on windows labelled normal only, or on all",
    )
    threshold_quantile: float = Field(
        default=0.99,
        gt=0,
        lt=1,
        description="anomaly: when validation has no labelled anomalies (or both classes are "
        "not present), the threshold is this quantile of the validation scores (of the "
        "training scores without validation)",
    )

    @model_validator(mode="after")
    def _options_fit_kind(self) -> TaskConfig:
        if self.quantiles is not None:
            q = self.quantiles
            if not q or any(not 0 < v < 1 for v in q) or len(set(q)) != len(q):
                raise ValueError("task.quantiles: distinct values strictly between 0 and 1")
        if self.kind != "auto":
            self.check_options(self.kind)
        return self

    def check_options(self, kind: str) -> None:
        """Options that only mean something for another kind must stay at their default."""
        defaults = TaskConfig.model_construct()
        for opt, kinds in _OPTIONS.items():
            if kind not in kinds and getattr(self, opt) != getattr(defaults, opt):
                if opt == "target" and self.target == TargetTransform():
                    continue
                raise ValueError(
                    f"task.{opt} applies to task.kind {' or '.join(kinds)}, not {kind}"
                )
