"""Typed config of the windowing stage: how lake rows become labelled, split, normalised windows.

No torch here: the config layer must import without the training stack.
Reference: docs/training.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

LabelStrategy = Literal["last", "majority", "any_positive", "regression_end", "forecast", "entity"]
DerivedKind = Literal["gravity", "body"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitConfig(_Strict):
    """How windows are divided into train / val / test.

    - ``entity``: whole entities go to one part (seeded shuffle of the entity ids).
    - ``time``: every entity is cut in time (train first, then val, then test) and windows that
      come within ``purge_s`` of a cut are dropped, so no window of a later part overlaps an
      earlier part.
    - ``column``: an entity-level metadata column decides test (``test_values``); validation is
      carved from the remaining entities, by entity (or by ``val_group_column`` if set, e.g. the
      user, so no user is in both train and val).
    """

    method: Literal["entity", "time", "column"] = "entity"
    column: str = "split"
    test_values: list[str | int] = Field(default_factory=lambda: ["test"])
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    test_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    val_group_column: str | None = Field(
        default=None, description="carve validation by this entity-level column (e.g. user)"
    )
    val_folds: int | None = Field(
        default=None,
        ge=2,
        description="cross-validation: deal the (seeded, shuffled) training groups into this many "
        "folds and validate on fold `val_fold` (replaces val_fraction)",
    )
    val_fold: int = Field(default=0, ge=0, description="which of the val_folds is validation")
    purge_s: float = Field(default=0.0, ge=0.0, description="gap kept around time cuts (seconds)")
    stratify: bool = Field(
        default=False,
        description="deal each class's entities (by their windows' most frequent class) into "
        "test and validation in proportion (entity: test and validation; column: validation "
        "by entity); classification only",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.method != "column" and self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("window.split: val_fraction + test_fraction must be < 1")
        if self.val_folds is not None and self.val_fold >= self.val_folds:
            raise ValueError(
                f"window.split.val_fold={self.val_fold} must be < val_folds={self.val_folds}"
            )
        if self.method == "time":
            given = [k for k in ("val_folds", "val_group_column") if getattr(self, k) is not None]
            given += ["stratify"] if self.stratify else []
            if given:  # the time split cuts each entity's span: it has no groups to deal
                raise ValueError(
                    f"window.split.{given[0]} applies to method entity or column, not time "
                    "(the time split validates on the val_fraction after each training span)"
                )
        return self


class WindowConfig(_Strict):
    """Sliding windows over each entity's time-ordered stream.

    Defaults are HAPT's: 128 samples (2.56 s at 50 Hz), 50 % overlap, majority label.
    """

    size: int = Field(default=128, gt=0, description="samples per window (L)")
    stride: int = Field(default=64, gt=0, description="samples between window starts")
    train_stride: int | None = Field(
        default=None, gt=0, description="denser stride for training windows only (augmentation)"
    )
    sample_rate_hz: float | None = Field(
        default=None, gt=0, description="resample every stream to this rate (linear)"
    )
    gap_tolerance_s: float | None = Field(
        default=None,
        gt=0,
        description="a time step over this splits the stream (and a run of nulls spanning more "
        "is cut out, see impute); default 1.5x the 90th percentile of the positive time steps "
        "within entities, at most 10x the median step (a regular stream: 1.5x its step)",
    )
    impute: Literal["none", "linear", "ffill", "zero"] = Field(
        default="none",
        description="null channel values inside a stream piece: none (an error), linear "
        "(interpolation in time between the neighbouring observed values; ends: the nearest), "
        "ffill (the last observed value; leading nulls: the first observed) or zero; a run of "
        "nulls spanning more than the gap tolerance is dropped and cuts the stream, and a piece "
        "with a channel never observed is dropped",
    )
    min_observed: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="windows whose share of observed (not imputed) values over their valid "
        "samples and raw channels is below this are not cut (neither trained on nor scored)",
    )
    short: Literal["drop", "pad"] = Field(
        default="drop", description="stream pieces shorter than size: drop, or pad (lengths kept)"
    )
    min_length: int = Field(default=1, gt=0, description="shortest piece kept when short=pad")

    label: LabelStrategy = "majority"
    min_purity: float = Field(default=0.0, ge=0.0, le=1.0, description="for label=majority")
    classes: list[int | str] | None = Field(
        default=None, description="class values kept, in order (default: all seen minus drop)"
    )
    drop_labels: list[int | str] = Field(
        default_factory=list, description="label values never used as a class (e.g. 0 unlabeled)"
    )
    label_names_column: str | None = Field(
        default=None, description="column holding a readable name per label value"
    )
    target_column: str | None = Field(
        default=None, description="numeric column regressed at the window end (regression_end)"
    )
    target_from_end: Literal["seconds", "samples"] | None = Field(
        default=None,
        description="instead of target_column: the target is derived as the time (seconds) or "
        "the number of samples from each row to its entity's last row (remaining useful life of "
        "run-to-failure recordings)",
    )
    horizon: int = Field(default=1, gt=0, description="steps ahead predicted (forecast)")
    target_channels: list[str] | None = Field(
        default=None, description="channels forecast (default: all)"
    )

    derived: list[DerivedKind] = Field(
        default_factory=list,
        description="channels derived per stream piece before windowing and appended after the "
        "raw ones: gravity = Butterworth low-pass of derived_from, body = raw - gravity",
    )
    derived_from: list[str] | None = Field(
        default=None, description="channels split into gravity/body (default: the first three)"
    )
    gravity_cutoff_hz: float = Field(default=0.3, gt=0, description="low-pass cut-off (Hz)")
    gravity_order: int = Field(default=3, ge=1, le=8, description="Butterworth order")
    gravity_zero_phase: bool = Field(
        default=True,
        description="forward-backward filtering (no lag; uses the whole piece); false: causal "
        "filter started in steady state at the first sample (streaming-friendly)",
    )

    normalize: Literal["standard", "robust", "none"] = "standard"
    split: SplitConfig = Field(default_factory=SplitConfig)

    @property
    def target(self) -> str | None:
        """What is regressed, for messages and plots: the column, or ``time_to_end_<unit>``."""
        if self.target_from_end is not None:
            return f"time_to_end_{self.target_from_end}"
        return self.target_column

    @model_validator(mode="after")
    def _check(self) -> WindowConfig:
        if self.target_from_end is not None and self.target_column:
            raise ValueError(
                "window.target_from_end and window.target_column: give one (the target is "
                "either derived from the time to the entity's end or read from a column)"
            )
        if self.target_from_end is not None and self.label != "regression_end":
            raise ValueError(
                f"window.target_from_end is for label=regression_end, not {self.label}"
            )
        if self.label == "regression_end" and not self.target:
            raise ValueError(
                "window.target_column (or window.target_from_end) is required for "
                "label=regression_end"
            )
        if self.short == "pad" and self.min_length > self.size:
            raise ValueError("window.min_length must be <= window.size")
        if len(set(self.derived)) != len(self.derived):
            raise ValueError("window.derived: each kind at most once")
        if self.derived_from is not None and not self.derived_from:
            raise ValueError("window.derived_from is empty")
        return self
