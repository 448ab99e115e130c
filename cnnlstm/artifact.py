"""The model artifact's metadata: a typed, versioned record of everything needed to rebuild the
model and score raw readings (task and its fitted state, window config, channels, normaliser,
label map). Written and read only through `cnnlstm.checkpoint` (safetensors header)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cnnlstm.drift import TrainingStats

ARTIFACT_FORMAT = "cnnlstm-model/2"


class ModelArtifact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["cnnlstm-model/2"] = ARTIFACT_FORMAT
    task: dict[str, Any] = Field(description="the TaskConfig, kind resolved")
    task_state: dict[str, Any] = Field(
        default_factory=dict,
        description="what the task fitted on training data (class map, target transform, "
        "forecast scaling, anomaly threshold)",
    )
    model: dict[str, Any] = Field(description="the ModelConfig")
    window: dict[str, Any] = Field(description="the WindowConfig")
    channels: list[str] = Field(description="raw reading channels the model reads, in order")
    input_channels: list[str] = Field(description="channels the network sees (raw + derived)")
    n_channels: int
    n_outputs: int
    normalizer: dict[str, Any]
    classes: list[Any] = Field(default_factory=list)
    class_names: list[str] = Field(default_factory=list)
    target_channels: list[str] = Field(default_factory=list)
    training_stats: TrainingStats | None = Field(
        default=None,
        description="the training data's statistics that scoring compares the scored data "
        "with (cnnlstm.drift); None in artifacts written before they were stored",
    )

    # ---- rebuilt objects ---------------------------------------------------------------------
    def window_config(self):
        from cnnlstm.window_config import WindowConfig

        return WindowConfig.model_validate(self.window)

    def model_config_(self):
        from cnnlstm.models.config import ModelConfig

        return ModelConfig.model_validate(self.model)

    def make_task(self):
        from cnnlstm.tasks import make_task

        return make_task(self.task, self.window_config(), self.task_state)

    def norm(self):
        from cnnlstm.windows import Normalizer

        return Normalizer.from_dict(self.normalizer)

    @property
    def kind(self) -> str:
        return str(self.task["kind"])
