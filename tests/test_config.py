"""The typed config: bad values rejected with messages that name the key; CLI-style overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import base_config_dict, deep_merge, make_config

from cnnlstm.config import ConfigError, config_from_dict, dump_config, load_config

REPO = Path(__file__).resolve().parents[1]


def test_bundled_hapt_config_loads() -> None:
    cfg = load_config(REPO / "configs" / "hapt.yaml")
    assert cfg.data.channel_names == ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
    assert cfg.data.timestamp.format == "sample_index"
    assert cfg.lake_uri == str((REPO / "lake").resolve())  # relative to the config file


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        (
            {"data": {"entity": {"column": "device", "constant": "x"}}},
            [
                "data.entity",
                "exactly one of column, constant, from_filename",
                "['column', 'constant']",
            ],
        ),
        ({"data": {"entity": {"column": None}}}, ["data.entity", "exactly one", "none"]),
        (
            {"data": {"entity": {"column": None, "from_filename": "(unclosed"}}},
            ["data.entity.from_filename is not a valid regex"],
        ),
        (
            {"data": {"timestamp": {"column": "time", "format": "sample_index"}}},
            ["data.timestamp", "sample_index needs sample_rate_hz and start"],
        ),
        (
            {
                "data": {
                    "timestamp": {"column": "time", "format": "sample_index", "sample_rate_hz": 50}
                }
            },
            ["sample_index needs sample_rate_hz and start"],
        ),
        (
            {"data": {"timestamp": {"column": "time", "format": "epoch_minutes"}}},
            ["data.timestamp.format"],
        ),
        (
            {"data": {"timestamp": {"column": "time", "sample_rate_hz": 0}}},
            ["data.timestamp.sample_rate_hz", "greater than 0"],
        ),
        (
            {"data": {"channels": [{"name": "ch_a"}, {"name": "ch_a"}]}},
            ["data.channels: duplicate names ['ch_a']"],
        ),
        ({"data": {"channels": []}}, ["data.channels"]),
        (
            {"data": {"channels": [{"name": "ch_a", "min": 5, "max": 1}]}},
            ["data.channels.0", "channel ch_a: min 5.0 > max 1.0"],
        ),
        ({"data": {"columns": {"timestamp": "string"}}}, ["reserved column names", "timestamp"]),
        ({"data": {"columns": {"ch_b": "float"}}}, ["data.columns repeats channel names"]),
        ({"data": {"columns": {"site": "complex"}}}, ["data.columns.site"]),
        ({"data": {"bogus": 1}}, ["data.bogus", "Extra inputs are not permitted"]),
        ({"lake": {"max_file_bytes": 0}}, ["lake.max_file_bytes", "greater than 0"]),
        ({"lake": {"uri": "  "}}, ["lake.uri", "lake.uri is empty"]),
        ({"data": {"csv": {"delimiter": ";;"}}}, ["data.csv.delimiter"]),
        ({"data": {"csv": {"quote_char": "''"}}}, ["data.csv.quote_char", "at most 1"]),
        (
            {"window": {"split": {"method": "time", "val_folds": 3}}},
            ["window.split.val_folds applies to method entity or column, not time"],
        ),
        (
            {"window": {"split": {"method": "time", "val_group_column": "user"}}},
            ["window.split.val_group_column applies to method entity or column"],
        ),
        ({"lake": {"compression": "brotli"}}, ["lake.compression"]),
    ],
)
def test_bad_values_are_rejected_naming_the_key(
    tmp_path: Path, override: dict, needles: list[str]
) -> None:
    with pytest.raises(ConfigError) as e:
        make_config(tmp_path, **override)
    msg = str(e.value)
    assert msg.startswith("config: invalid config")
    for n in needles:
        assert n in msg, msg


def test_missing_section_is_named(tmp_path: Path) -> None:
    raw = base_config_dict(tmp_path)
    del raw["data"]["timestamp"]
    with pytest.raises(ConfigError, match=r"data\.timestamp: Field required"):
        config_from_dict(raw)


def _yaml(tmp_path: Path, raw: dict | str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return p


def test_load_config_with_overrides(tmp_path: Path) -> None:
    raw = base_config_dict(tmp_path)
    raw["lake"]["uri"] = "rel/lake"
    p = _yaml(tmp_path, raw)
    cfg = load_config(
        p,
        [
            "data.timestamp.format=epoch_ms",
            "lake.max_file_bytes=1000",
            "data.keep_other_columns=true",
            "data.columns={site: string}",
            "tracking.experiment=exp one",
        ],
    )
    assert cfg.data.timestamp.format == "epoch_ms"
    assert cfg.lake.max_file_bytes == 1000 and isinstance(cfg.lake.max_file_bytes, int)
    assert cfg.data.keep_other_columns is True
    assert cfg.data.columns == {"site": "string"}
    assert cfg.tracking.experiment == "exp one"
    assert cfg.lake_uri == str((tmp_path / "rel" / "lake").resolve())
    assert load_config(p).data.timestamp.format == "iso"  # the file itself is unchanged


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["data.timestamp.format"], "is not of the form section.key=value"),
        (["data.name.x=1"], "'name' is not a section"),
        (["data.timestamp.format=sample_index"], "sample_index needs sample_rate_hz"),
        (["lake.bogus=1"], "lake.bogus"),
        (["data.channels=[{name: a}, {name: a}]"], "duplicate names ['a']"),
    ],
)
def test_bad_overrides(tmp_path: Path, overrides: list[str], needle: str) -> None:
    p = _yaml(tmp_path, base_config_dict(tmp_path))
    with pytest.raises(ConfigError) as e:
        load_config(p, overrides)
    assert needle in str(e.value)


def test_load_config_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_yaml(tmp_path, "data: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(_yaml(tmp_path, "- a\n- b\n"))
    p = _yaml(tmp_path, deep_merge(base_config_dict(tmp_path), {"data": {"entitiy": {}}}))
    with pytest.raises(ConfigError, match=r"data\.entitiy: Extra inputs") as e:
        load_config(p)
    assert str(p) in str(e.value)  # the message names the file too


def test_dump_config_round_trips(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, data={"timestamp": {"column": "t", "timezone": "Europe/Berlin"}})
    again = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert again.model_dump() == cfg.model_dump()


def test_environment_overrides_apply_before_cli_overrides(tmp_path, monkeypatch) -> None:
    from cnnlstm.config import env_overrides, load_config

    assert env_overrides({"CNNLSTM__LAKE__URI": "s3://b/lake", "OTHER": "x"}) == [
        "lake.uri=s3://b/lake"
    ]
    src = Path(__file__).resolve().parents[1] / "configs" / "hapt.yaml"
    monkeypatch.setenv("CNNLSTM__LAKE__URI", "s3://bucket/lake")
    monkeypatch.setenv("CNNLSTM__LAKE__MAX_FILE_BYTES", "1000")
    cfg = load_config(src)
    assert cfg.lake.uri == "s3://bucket/lake" and cfg.lake.max_file_bytes == 1000
    cfg = load_config(src, ["lake.uri=/tmp/elsewhere"])
    assert cfg.lake.uri == "/tmp/elsewhere"


def test_a_bare_yaml_off_means_off(tmp_path):
    # YAML 1.1 reads `off` as false; `baseline: off` and `--set train.amp=off` mean the word
    text = yaml.safe_dump(base_config_dict(tmp_path)) + "train:\n  baseline: off\n"
    assert yaml.safe_load(text)["train"]["baseline"] is False  # what YAML makes of it
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(text)
    cfg = load_config(cfg_file, ["train.amp=off"])
    assert cfg.train.baseline == "off" and cfg.train.amp == "off"
    with pytest.raises(ConfigError, match="baseline"):
        load_config(cfg_file, ["train.baseline=on"])  # true is not a setting


def test_overrides_reach_into_the_model_auto_shorthand(tmp_path):
    """`cnnlstm init` writes `model: auto`; `--set model.arch=serial` (or a preset list) must
    still apply to it."""
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(base_config_dict(tmp_path) | {"model": "auto"}))
    assert load_config(cfg_file).model.arch == "auto"
    assert load_config(cfg_file, ["model.arch=serial"]).model.arch == "serial"
    cfg = load_config(cfg_file, ["model.auto.presets=[minirocket]"])
    assert cfg.model.arch == "auto" and cfg.model.auto.presets == ["minirocket"]
