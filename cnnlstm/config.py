"""One YAML config, validated by typed models (pydantic).

Sections: ``data`` (how landing files map to the readings contract), ``lake`` (where the lake
lives and its safety limits), ``window``, ``model``, ``train`` (owned by their components), and
``tracking``/``score`` (later stages). ``load_config`` reads a file and applies ``a.b.c=value``
overrides from the CLI; the resolved config is what every run logs.

Reference: docs/config.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cnnlstm.models.config import ModelConfig
from cnnlstm.tasks.config import TaskConfig
from cnnlstm.train_config import TrainConfig
from cnnlstm.window_config import WindowConfig


class ConfigError(ValueError):
    """A user mistake in the config file or a CLI override (exit status 2 in the CLI)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EntitySpec(_Strict):
    """Where a row's entity id comes from: exactly one of column, constant, from_filename."""

    column: str | None = None
    constant: str | None = None
    from_filename: str | None = Field(
        default=None,
        description="regex applied to the file name (without .csv/.csv.gz/.parquet); the group "
        "named 'entity' (or the whole match) is the id. Use '.*' for the file stem.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> EntitySpec:
        given = [k for k in ("column", "constant", "from_filename") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "data.entity needs exactly one of column, constant, from_filename "
                f"(got {given or 'none'})"
            )
        if self.from_filename is not None:
            try:
                re.compile(self.from_filename)
            except re.error as e:
                raise ValueError(f"data.entity.from_filename is not a valid regex: {e}") from e
        return self


TimestampFormat = Literal["iso", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "sample_index"]


class TimestampSpec(_Strict):
    """How the source expresses time. Everything becomes UTC microseconds in the lake."""

    column: str
    format: TimestampFormat = "iso"
    timezone: str = Field(
        default="UTC", description="zone assumed for ISO strings without an offset"
    )
    sample_rate_hz: float | None = Field(default=None, gt=0)
    start: str | None = Field(
        default=None, description="ISO instant of sample 0 (format: sample_index)"
    )

    @model_validator(mode="after")
    def _sample_index_needs_rate(self) -> TimestampSpec:
        if self.format == "sample_index" and (self.sample_rate_hz is None or self.start is None):
            raise ValueError("data.timestamp.format=sample_index needs sample_rate_hz and start")
        return self


class ChannelSpec(_Strict):
    name: str = Field(description="name in the lake (float32 column)")
    source: str | None = Field(
        default=None, description="column in the landing file (default: name)"
    )
    unit: str | None = None
    min: float | None = Field(default=None, description="smallest plausible value (inclusive)")
    max: float | None = Field(default=None, description="largest plausible value (inclusive)")

    @property
    def src(self) -> str:
        return self.source or self.name

    @model_validator(mode="after")
    def _range(self) -> ChannelSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"channel {self.name}: min {self.min} > max {self.max}")
        return self


class LabelSpec(_Strict):
    column: str
    dtype: Literal["int", "string"] = "int"


ExtraType = Literal["string", "int", "float", "bool"]

_RESERVED = {"entity_id", "timestamp", "label", "date"}


class CsvOptions(_Strict):
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote_char: str | None = '"'
    null_values: list[str] = Field(default_factory=lambda: [""])


class DataConfig(_Strict):
    """Maps landing-file columns to the readings contract."""

    name: str = "dataset"
    landing: str | None = Field(
        default=None,
        description="where new files land (folder, glob or URI; relative to the config file): "
        "what `cnnlstm run` and the ingest flow read",
    )
    entity: EntitySpec
    timestamp: TimestampSpec
    channels: list[ChannelSpec] = Field(min_length=1)
    label: LabelSpec | None = None
    columns: dict[str, ExtraType] = Field(
        default_factory=dict, description="extra metadata columns to keep, with their type"
    )
    keep_other_columns: bool = Field(
        default=False, description="keep undeclared columns too (as strings)"
    )
    allow_missing_channels: bool = Field(
        default=False, description="accept null channel values (NaN and inf are always rejected)"
    )
    csv: CsvOptions = Field(default_factory=CsvOptions)

    @model_validator(mode="after")
    def _names(self) -> DataConfig:
        names = [c.name for c in self.channels]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"data.channels: duplicate names {sorted(dup)}")
        bad = (set(names) | set(self.columns)) & _RESERVED
        if bad:
            raise ValueError(f"data: reserved column names used: {sorted(bad)}")
        clash = set(names) & set(self.columns)
        if clash:
            raise ValueError(f"data.columns repeats channel names {sorted(clash)}")
        return self

    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.channels]

    def required_source_columns(self) -> list[str]:
        cols = [c.src for c in self.channels] + [self.timestamp.column]
        if self.entity.column:
            cols.append(self.entity.column)
        if self.label:
            cols.append(self.label.column)
        cols += list(self.columns)
        return list(dict.fromkeys(cols))


class LakeConfig(_Strict):
    uri: str = Field(default="lake", description="local folder (relative to the config) or a URI")
    max_file_bytes: int = Field(
        default=4 * 1024**3, gt=0, description="files over this are rejected"
    )
    max_rows_per_file: int = Field(default=500_000_000, gt=0)
    compression: Literal["zstd", "snappy", "lz4", "none"] = "zstd"

    @field_validator("uri")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("lake.uri is empty")
        return v


class TrackingConfig(_Strict):
    uri: str | None = Field(default=None, description="MLflow tracking URI (default: sqlite file)")
    experiment: str = "cnnlstm"
    registered_model: str | None = Field(
        default=None, description="registry name of trained models (default: data.name)"
    )
    artifact_location: str | None = Field(
        default=None,
        description="where new experiments keep artifacts (e.g. s3://bucket/mlartifacts); "
        "default: mlartifacts/ beside a sqlite store, the server's choice otherwise",
    )
    register_model: bool = Field(default=True, description="register each trained model")
    champion_metric: str = Field(
        default="auto",
        description="validation metric deciding champion promotion (a metric of the task, "
        "e.g. macro_f1, accuracy, rmse, f1); auto: the task's selection metric (classify "
        "macro_f1, regress and forecast rmse, anomaly f1). Test metrics are never used",
    )
    greater_is_better: bool | None = Field(
        default=None, description="direction of champion_metric (default: from its name)"
    )


class ScoreConfig(_Strict):
    model_uri: str | None = Field(
        default=None, description="model to score with (default: models:/<registered>@champion)"
    )
    output: str = "predictions"
    batch_size: int = Field(default=4096, gt=0, description="windows per forward pass")
    files_per_batch: int = Field(default=16, gt=0, description="lake files read per commit")
    where: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="score only rows whose (entity-level) columns equal these"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"


class RunnerConfig(_Strict):
    """How the Prefect flows fan out their mapped tasks (ingest: one task per file)."""

    kind: Literal["threads", "dask"] = Field(
        default="threads",
        description="threads: Prefect's ThreadPoolTaskRunner in the flow's process; dask: "
        "prefect-dask's DaskTaskRunner (pip install 'cnnlstm[dask]')",
    )
    address: str | None = Field(
        default=None,
        description="an existing Dask scheduler (tcp://host:8786); default: a temporary "
        "LocalCluster of worker processes on this machine",
    )
    n_workers: int | None = Field(
        default=None, ge=1, description="LocalCluster worker processes (default: Dask's choice)"
    )
    threads_per_worker: int = Field(default=1, ge=1, description="LocalCluster threads/worker")


class Config(_Strict):
    data: DataConfig
    lake: LakeConfig = Field(default_factory=LakeConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)

    # where the file was read from: relative paths (lake.uri, outputs) resolve against it
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @model_validator(mode="after")
    def _task_fits(self) -> Config:
        from cnnlstm.tasks import check_config, make_task

        check_config(self.task, self.window, self.train.refit_full)
        task = make_task(self.task, self.window)
        task.check_monitor(self.train.monitor)
        task.selection_for(self.tracking.champion_metric)
        return self

    def resolve_path(self, p: str) -> str:
        """A local relative path is taken relative to the config file; URIs pass through."""
        if "://" in p or Path(p).is_absolute():
            return p
        return str((self.base_dir / p).resolve())

    @property
    def lake_uri(self) -> str:
        return self.resolve_path(self.lake.uri)


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form section.key=value")
    key, _, value = item.partition("=")
    parts = key.strip().split(".")
    node = raw
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node = nxt
    node[parts[-1]] = yaml.safe_load(value)


ENV_PREFIX = "CNNLSTM__"


def env_overrides(environ: dict[str, str] | None = None) -> list[str]:
    """Overrides from the environment: ``CNNLSTM__LAKE__URI=s3://b/lake`` is ``lake.uri=...``.
    For containers and work pools, where the config file is baked into the image; applied
    before the CLI's ``--set`` values, so those win."""
    env = os.environ if environ is None else environ
    return [
        f"{k[len(ENV_PREFIX) :].lower().replace('__', '.')}={v}"
        for k, v in sorted(env.items())
        if k.startswith(ENV_PREFIX) and len(k) > len(ENV_PREFIX)
    ]


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a config file. Raises ConfigError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    for item in env_overrides() + list(overrides or []):
        _apply_override(raw, item)
    return config_from_dict(raw, base_dir=path.resolve().parent, source=str(path))


def config_from_dict(
    raw: dict[str, Any], base_dir: Path | None = None, source: str = "config"
) -> Config:
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError(f"{source}: invalid config\n" + "\n".join(lines)) from None
    if base_dir is not None:
        cfg.base_dir = base_dir
    return cfg


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML (what runs log)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
