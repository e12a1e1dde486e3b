"""Config files, overrides, unknown keys and cross-field checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from arabic_events.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_there_are_configs_for_every_backbone():
    folders = {p.parent.name for p in CONFIGS}
    assert {"arabert", "offline", "debug"} <= folders


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_loads_and_validates(path: Path):
    cfg = load_config(path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#"), "each config starts with a header comment"
    assert "arabic-events" in text.split("\n\n")[0] or "arabic-events" in text[:800]
    assert cfg.model.name_or_path
    for name in cfg.data.labels:
        assert name in ("airstrike", "arrest", "base_handover", "statement", "political_pressure")


def test_overrides_are_coerced_to_field_types():
    cfg = load_config(
        ROOT / "configs/debug/tiny-bert.yaml",
        [
            "train.epochs=2",
            "train.batch_size=8",
            "model.normalize.alef=false",
            "train.max_steps=null",
            "model.dropout=0.3",
            "train.run_name=123",
        ],
    )
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)
    assert cfg.train.batch_size == 8
    assert cfg.model.normalize.alef is False
    assert cfg.train.max_steps is None
    assert cfg.model.dropout == pytest.approx(0.3)
    assert cfg.train.run_name == "123"


def test_unknown_override_key_names_section_suggestion_and_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.epoch=3"])
    message = str(err.value)
    assert "'epoch'" in message and "'train'" in message
    assert "Did you mean 'epochs'" in message
    assert "batch_size" in message and "learning_rate" in message


def test_unknown_key_in_file_names_the_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name_or_pth: e5-small\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "'model'" in message
    assert "Did you mean 'name_or_path'" in message


def test_unknown_section_is_an_error(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("trainer:\n  epochs: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="Did you mean 'train'"):
        load_config(path)


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match=r"train.batch_size: expected an integer, found 'many'"):
        load_config(None, ["train.batch_size=many"])
    with pytest.raises(ConfigError, match="expected true or false"):
        load_config(None, ["model.normalize.alef=perhaps"])


def test_cross_field_problems_are_reported_together():
    with pytest.raises(ConfigError) as err:
        load_config(
            None,
            [
                "train.batch_size=0",
                "train.precision=fp8",
                "train.warmup_ratio=1.5",
                "data.dev_file=data/splits/test.jsonl",
                "train.device=cpu",
            ],
        )
    message = str(err.value)
    assert message.startswith("4 problem(s)")
    assert "train.batch_size=0" in message
    assert "train.precision='fp8'" in message
    assert "train.warmup_ratio=1.5" in message
    assert "held-out sets must not be" in message


def test_fp16_on_cpu_and_arabert_preprocessing_mismatch():
    with pytest.raises(ConfigError) as err:
        load_config(
            None,
            [
                "train.precision=fp16",
                "train.device=cpu",
                "model.preprocessing=arabert",
                "model.name_or_path=e5-small",
            ],
        )
    assert "fp16 needs a GPU" in str(err.value)
    assert "AraBERT preprocessing only suits AraBERT" in str(err.value)


def test_unknown_label_in_config():
    with pytest.raises(ConfigError, match="unknown label"):
        load_config(None, ["data.labels=[airstrike,airstrikes]"])


def test_bad_override_grammar():
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        load_config(None, ["train.epochs"])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/nope.yaml")
