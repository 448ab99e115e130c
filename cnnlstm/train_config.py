"""Typed config of the training stage (no torch import). Reference: docs/training.md."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class AugmentConfig(BaseModel):
    """Random per-window transforms of training batches (off by default)."""

    model_config = ConfigDict(extra="forbid")

    scale: float = Field(default=0.0, ge=0, description="std of a per-window, per-channel gain")
    jitter: float = Field(default=0.0, ge=0, description="std of additive noise (normalised units)")
    rotate_deg: float = Field(
        default=0.0, ge=0, le=180, description="random 3-D rotation of each channel triple, degrees"
    )
    rotate_groups: list[list[int]] = Field(
        default_factory=list, description="channel index triples rotated together (x, y, z axes)"
    )
    rotate_together: bool = Field(
        default=False,
        description="one rotation per window for all groups (sensors on one rigid device); "
        "false: an independent rotation per group",
    )

    @model_validator(mode="after")
    def _groups(self) -> AugmentConfig:
        if any(len(g) != 3 for g in self.rotate_groups):
            raise ValueError("train.augment.rotate_groups: each group is 3 channel indices")
        if self.rotate_deg and not self.rotate_groups:
            raise ValueError("train.augment.rotate_deg needs rotate_groups")
        return self


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=3e-3, gt=0, description="peak learning rate (all groups)")
    lr_cnn: float | None = Field(default=None, gt=0, description="override for the CNN")
    lr_rnn: float | None = Field(default=None, gt=0, description="override for the RNN")
    lr_head: float | None = Field(default=None, gt=0, description="override for the head")
    weight_decay: float = Field(default=1e-2, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup_frac: float = Field(default=0.2, ge=0, lt=1, description="onecycle warm-up share")
    grad_clip: float | None = Field(default=1.0, gt=0, description="max global grad norm")
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    ema_decay: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="keep an exponential moving average of the weights (and BatchNorm "
        "statistics) with this decay per step; validation, checkpoints' best weights and the "
        "final model use the average (e.g. 0.999)",
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    class_weights: Literal["none", "balanced"] | list[float] = "none"

    monitor: Literal[
        "auto",
        "val_loss",
        "val_accuracy",
        "val_macro_f1",
        "val_rmse",
        "val_mae",
        "val_pr_auc",
        "val_f1",
    ] = Field(
        default="auto",
        description="the validation figure early stopping and best-weights restore watch; "
        "auto: the task's (classify val_macro_f1, regress val_rmse, forecast val_loss, anomaly "
        "val_pr_auc when supervised else val_loss); each task accepts val_loss and its own "
        "figures (docs/tasks.md)",
    )
    patience: int | None = Field(default=10, ge=1, description="epochs without improvement")
    restore_best: bool = True
    refit_full: bool = Field(
        default=False,
        description="after the run on train (selection on validation), train a fresh model on "
        "train + validation entities for exactly `epochs` epochs and keep its final weights; "
        "val metrics are the selection model's, test metrics the refit's",
    )

    baseline: Literal["off", "report", "compete"] = Field(
        default="report",
        description="MiniRocket + ridge fitted on the same windows and split: report logs its "
        "figures beside the model's (baseline/... in MLflow, metrics.json 'baseline'); compete "
        "also keeps whichever of the two is better on validation as the run's model",
    )

    @field_validator("baseline", "amp", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        """YAML reads a bare `off` as false: take it as the word the user wrote."""
        return "off" if v is False else v

    seed: int = 0
    deterministic: bool = True
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    num_threads: int | None = Field(default=None, ge=1, description="torch CPU threads")
    amp: Literal["auto", "bf16", "off"] = Field(
        default="auto", description="auto: bf16 autocast on CUDA only"
    )

    checkpoint_every: int = Field(default=1, ge=1, description="epochs between checkpoints")
    progress: bool = True
    plots: bool = True
    embedding_points: int = Field(default=1500, ge=0, description="points in t-SNE/PCA plots")
