"""Typed config of the CNN -> RNN model family (no torch import: configs load without it).

``arch`` picks the architecture:

- ``serial``: 1-D conv stack along time -> LSTM/GRU over the conv features -> pooling -> head.
- ``subseq``: the window is cut into ``n_subsequences`` pieces, the same conv stack reads each
  (folded into the batch), the RNN runs over the per-piece features.
- ``frame``: image sequences: each time step's channels are the pixels of a frame
  (``frame.height`` x ``frame.width``); a 2-D conv stack per frame, then the RNN over time.
- ``parallel``: a CNN branch and an RNN branch read two inputs (or two channel subsets, the RNN one
  optionally at a lower rate); their features are fused by concatenation or attention.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConvConfig(_Strict):
    channels: list[int] = Field(default_factory=lambda: [64, 64], min_length=1)
    kernel_size: int | list[int] = 5
    dilation: int | list[int] = 1
    pool: Literal["max", "avg", "none"] = "max"
    pool_size: int = Field(default=2, ge=1)
    norm: Literal["batch", "layer", "none"] = "batch"
    separable: bool = Field(default=False, description="depthwise-separable (MobileNet-style)")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)

    def per_layer(self, name: str) -> list[int]:
        v = getattr(self, name)
        vals = [v] * len(self.channels) if isinstance(v, int) else list(v)
        if len(vals) != len(self.channels):
            raise ValueError(
                f"model.conv.{name} needs one value per conv layer "
                f"({len(self.channels)}), got {len(vals)}"
            )
        return vals

    @model_validator(mode="after")
    def _check(self) -> ConvConfig:
        for k in self.per_layer("kernel_size"):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"model.conv.kernel_size must be odd and >= 1 (got {k})")
        if any(d < 1 for d in self.per_layer("dilation")):
            raise ValueError("model.conv.dilation must be >= 1")
        if any(c < 1 for c in self.channels):
            raise ValueError("model.conv.channels must be >= 1")
        return self


class RNNConfig(_Strict):
    cell: Literal["lstm", "gru"] = "lstm"
    hidden_size: int = Field(default=128, ge=1)
    num_layers: int = Field(default=1, ge=1, le=4)
    bidirectional: bool = False
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="between RNN layers")


class HeadConfig(_Strict):
    hidden: int = Field(default=0, ge=0, description="0: a single linear layer")
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0)


N_KERNELS_MIN = 84  # MiniRocket's kernel count: one feature per kernel at least


class FrameConfig(_Strict):
    """arch=frame: each time step of a window is an image. The window's channels (raw, then
    derived) are its pixels, read row-major as ``planes x height x width`` (channel
    ``(plane * height + row) * width + col``); a 4x4 thermal array is 16 channels, ``height: 4,
    width: 4``; an RGB 8x8 camera 192 channels, three planes."""

    channels: list[int] = Field(default_factory=lambda: [16, 32], min_length=1)
    kernel_size: int = Field(default=3, ge=1)
    height: int | None = Field(default=None, ge=1, description="pixel rows of a frame")
    width: int | None = Field(default=None, ge=1, description="pixel columns of a frame")


class ParallelConfig(_Strict):
    fusion: Literal["concat", "attention"] = "concat"
    fusion_dim: int = Field(default=64, ge=1, description="projection size for attention fusion")
    cnn_inputs: list[int] | None = Field(default=None, description="channel indices (default all)")
    rnn_inputs: list[int] | None = Field(default=None, description="channel indices (default all)")
    rnn_downsample: int = Field(default=1, ge=1, description="avg-pool factor of the RNN input")


class MiniRocketConfig(_Strict):
    features: int = Field(
        default=10_000, ge=N_KERNELS_MIN, description="PPV features (a multiple of 84 is used)"
    )
    max_dilations: int = Field(default=32, ge=1, description="most dilations per kernel")
    max_windows: int | None = Field(
        default=8192,
        ge=2,
        description="fit on at most this many training windows (a seeded random subset): the "
        "ridge fit grows with windows x features; null: all",
    )


class AutoConfig(_Strict):
    budget_s: float | None = Field(
        default=None, gt=0, description="time for the choice (all presets when unset)"
    )
    presets: list[str] | None = Field(
        default=None, description="presets to try (default: all, cnnlstm.auto.PRESET_NAMES)"
    )


class ModelConfig(_Strict):
    arch: Literal["serial", "subseq", "frame", "parallel", "minirocket", "auto"] = "serial"
    conv: ConvConfig = Field(default_factory=ConvConfig)
    rnn: RNNConfig = Field(default_factory=RNNConfig)
    pooling: Literal["last", "mean", "attention"] = "mean"
    head: HeadConfig = Field(default_factory=HeadConfig)
    n_subsequences: int = Field(default=4, ge=1, description="arch=subseq")
    frame: FrameConfig = Field(default_factory=FrameConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    minirocket: MiniRocketConfig = Field(
        default_factory=MiniRocketConfig, description="arch=minirocket (and the baseline)"
    )
    auto: AutoConfig = Field(default_factory=AutoConfig, description="arch=auto")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"arch": "auto"} if v == "auto" else v

    @model_validator(mode="after")
    def _frame_size(self) -> ModelConfig:
        if self.arch == "frame" and (self.frame.height is None or self.frame.width is None):
            raise ValueError(
                "model.arch frame needs model.frame.height and model.frame.width: each time "
                "step's channels are read as frames of height x width pixels"
            )
        return self
