"""Typed config of the training stage (no torch import). Reference: docs/training.md."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
    class_weights: Literal["none", "balanced"] | list[float] = "none"

    monitor: Literal["auto", "val_macro_f1", "val_accuracy", "val_loss", "val_rmse"] = Field(
        default="auto", description="auto: macro-F1 for classification, loss otherwise"
    )
    patience: int | None = Field(default=10, ge=1, description="epochs without improvement")
    restore_best: bool = True

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
