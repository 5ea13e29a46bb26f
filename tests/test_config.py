import argparse

import pytest

from instructrl.config import add_config_arguments, resolve_config
from instructrl.errors import ConfigError
from instructrl.sft.config import SFTConfig


def parse(argv):
    p = argparse.ArgumentParser()
    add_config_arguments(p, SFTConfig, aliases={"output_dir": ["--out"]})
    return resolve_config(SFTConfig, p.parse_args(argv))


def test_defaults_are_the_papers_recipe():
    cfg = SFTConfig()
    assert (
        cfg.epochs,
        cfg.batch_size,
        cfg.learning_rate,
        cfg.lr_final_fraction,
        cfg.warmup_steps,
        cfg.residual_dropout,
    ) == (16, 32, 9.65e-6, 0.1, 0, 0.2)


def test_precedence_yaml_then_set_then_flags(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text("epochs: 3\nlearning_rate: 1.0e-4\nbatch_size: 8\n")
    cfg = parse(
        [
            "--config",
            str(y),
            "--set",
            "batch_size=4",
            "--set",
            "lr_schedule=constant",
            "--learning-rate",
            "2e-4",
            "--out",
            "o",
            "--no-progress",
        ]
    )
    assert (cfg.epochs, cfg.batch_size, cfg.learning_rate, cfg.lr_schedule, cfg.output_dir, cfg.progress) == (
        3,
        4,
        2e-4,
        "constant",
        "o",
        False,
    )


def test_every_field_has_help_and_a_flag():
    import dataclasses

    for f in dataclasses.fields(SFTConfig):
        assert f.metadata.get("help"), f.name
    assert parse(["--max-steps", "5"]).max_steps == 5


def test_bad_values_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="field 'epochs' expects int, got 'many'"):
        parse(["--set", "epochs=many"])
    with pytest.raises(ConfigError, match="unknown field 'epoch'"):
        parse(["--set", "epoch=3"])
    with pytest.raises(ConfigError, match="pretrain_fraction > 0 needs --pretrain-data"):
        parse(["--pretrain-fraction", "0.1"])
    with pytest.raises(ConfigError, match=r"config file 'nope\.yaml' not found"):
        parse(["--config", "nope.yaml"])


def test_saved_config_round_trips(tmp_path):
    import yaml

    cfg = SFTConfig(epochs=2, output_dir=str(tmp_path))
    cfg.save(tmp_path)
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert data["stage"] == "SFTConfig"
    assert SFTConfig.from_dict(data) == cfg


@pytest.mark.parametrize("preset", ["sft-paper", "sft-ppo-init", "sft-tiny"])
def test_shipped_presets_resolve_by_name(preset):
    cfg = parse(["--config", preset, "--pretrain-data", "x.jsonl"])
    assert cfg.lr_final_fraction == 0.1


@pytest.mark.parametrize("command", ["sft", "rm"])
def test_help_renders_help_texts_with_percent_signs(command):
    from instructrl.cli import build_parser

    parser, _ = build_parser(command)
    assert "10%" in parser.format_help()
