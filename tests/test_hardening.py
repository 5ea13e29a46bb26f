"""User errors a new user meets first: every config field against bad values, lengths past the model's
context, environment errors, resume and the completion marker."""

from __future__ import annotations

import dataclasses
import errno
import importlib
import importlib.util
import json
import math
import pkgutil
import sqlite3

import pytest
from testkit import run_cli, run_cli_many

import instructrl
from instructrl import cli
from instructrl.config import BaseConfig, _base_type, _field_type, field_range, is_numeric
from instructrl.errors import ConfigError, InstructRLError, ModelLoadError
from instructrl.sft.api import run_sft
from instructrl.sft.config import SFTConfig
from instructrl.training.checkpoints import prepare_output_dir
from instructrl.training.tracking import read_metrics, truncate_jsonl
from instructrl.training.validation import COMPLETE, check_finished


def config_modules() -> list[str]:
    """Every stage's config module: ``instructrl.<package>.config`` wherever one exists."""
    names = [m.name for m in pkgutil.iter_modules(instructrl.__path__) if m.ispkg]
    return [f"instructrl.{n}.config" for n in names if importlib.util.find_spec(f"instructrl.{n}.config")]


def config_classes() -> list[type[BaseConfig]]:
    """BaseConfig and every subclass the stages define (found, not listed)."""
    for module in config_modules():
        importlib.import_module(module)
    found, todo = [], [BaseConfig]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda c: c.__name__)


def bad_values(cls: type[BaseConfig], f: dataclasses.Field) -> list:
    """Values the field must refuse, derived from its type, choices and declared range."""
    base = _base_type(_field_type(f))
    if is_numeric(f):
        values = ["abc", [1, 2], {"a": 1}, math.nan, math.inf, -math.inf]
        if base is int:
            values.append(1.5)
        r = field_range(cls, f.name)
        step = 1 if base is int else 0.5
        if r.get("minimum") is not None:
            values.append(r["minimum"] if r.get("exclusive_minimum") else r["minimum"] - step)
        if r.get("maximum") is not None:
            values.append(r["maximum"] if r.get("exclusive_maximum") else r["maximum"] + step)
        return values
    if base is bool:
        return ["maybe", [True]]
    if "choices" in f.metadata:
        return ["no-such-choice", {"a": 1}]
    return [{"a": 1}] if base is list else [{"a": 1}, [1, 2]]


def test_every_numeric_field_declares_its_range():
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in config_classes()
        for f in dataclasses.fields(cls)
        if is_numeric(f) and not field_range(cls, f.name)
    ]
    assert not missing, f"numeric fields without minimum/maximum/unbounded in their help_field: {missing}"


def test_every_config_class_validates_its_defaults():
    for cls in config_classes():
        cls.from_dict({})


@pytest.mark.parametrize("cls", config_classes(), ids=lambda c: c.__name__)
def test_every_field_refuses_bad_values_in_one_line(cls):
    """Each field with each bad value its type, choices and range imply: a ConfigError of one line naming it."""
    accepted = []
    for f in dataclasses.fields(cls):
        for value in bad_values(cls, f):
            try:
                cls.from_dict({f.name: value})
            except ConfigError as e:
                assert f.name in str(e) and "\n" not in str(e), str(e)
            else:
                accepted.append(f"{f.name}={value!r}")
    assert not accepted, f"{cls.__name__} accepted {accepted}"


def test_none_is_settable_for_every_optional_field():
    for cls in config_classes():
        for f in dataclasses.fields(cls):
            if "None" in str(f.type) and "choices" not in f.metadata:
                assert getattr(cls.from_dict({f.name: "none"}), f.name) is None, f"{cls.__name__}.{f.name}"


BAD_NUMBERS = [
    ["sft", "--learning-rate", "nan", "--max-length", "64"],
    ["sft", "--max-steps", "0"],
    ["rm", "--max-steps", "-3"],
    ["ppo", "--batch-size", "-1"],
    ["ppo", "--kl-coef", "inf"],
    ["eval", "--temperature", "-0.5"],
    ["eval", "--models", "sft"],
    ["generate", "--model", "x", "--max-new-tokens", "-5"],
    ["generate", "--model", "x", "--top-p", "nan"],
]


def test_cli_bad_numbers_are_one_line_and_exit_2():
    for args, r in zip(BAD_NUMBERS, run_cli_many(BAD_NUMBERS), strict=True):
        assert r.returncode == 2, (args, r.stderr[-1500:])
        assert "Traceback" not in r.stderr, args
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_missing_eos_penalty_none_from_the_command_line(tmp_path):
    import argparse

    from instructrl.ppo.cli import configure
    from instructrl.ppo.config import PPOConfig

    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(["--missing-eos-penalty", "none", "--max-kl", "None"])
    from instructrl.config import resolve_config

    cfg = resolve_config(PPOConfig, args)
    assert cfg.missing_eos_penalty is None and cfg.max_kl is None


# ---------------------------------------------------------------------------- lengths against the context
def quick(model, data, out, **kw) -> SFTConfig:
    base = dict(
        model=str(model),
        data=str(data),
        output_dir=str(out),
        epochs=1,
        max_steps=4,
        batch_size=8,
        learning_rate=3e-3,
        max_length=64,
        residual_dropout=0.0,
        progress=False,
        checkpoint_every=2,
        keep_checkpoints=5,
        eval_fraction=0.0,
        select_by="last",
    )
    base.update(kw)
    return SFTConfig.from_dict(base)


def test_sft_max_length_beyond_the_context_is_refused_before_training(tiny_model, demos_file, tmp_path):
    with pytest.raises(ConfigError, match=r"--max-length = 1024 tokens exceeds the model's context of 256"):
        run_sft(quick(tiny_model, demos_file, tmp_path / "out", max_length=1024))
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_rm_max_length_beyond_the_context_is_refused(tiny_model, tmp_path):
    from reward.rm_helpers import write_rankings

    from instructrl.reward.api import run_rm
    from instructrl.reward.config import RMConfig

    data = write_rankings(tmp_path / "r.jsonl", 20)
    cfg = RMConfig.from_dict(
        dict(model=str(tiny_model), data=str(data), output_dir=str(tmp_path / "rm"), max_length=4096, progress=False)
    )
    with pytest.raises(ConfigError, match="--max-length = 4096"):
        run_rm(cfg)


def test_generate_refuses_lengths_past_the_context_and_reward_models(tiny_model, tmp_path):
    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / "config.json").write_text(json.dumps({"architectures": ["GPT2ForSequenceClassification"]}))
    r, rm_as_policy = run_cli_many(
        [
            ["generate", "--model", str(tiny_model), "--prompt", "hi", "--max-new-tokens", "5000"],
            ["generate", "--model", str(rm), "--prompt", "hi"],
        ]
    )
    assert r.returncode == 2 and "context of 256" in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]
    r = rm_as_policy
    assert r.returncode == 2 and "is a reward model" in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]


# ---------------------------------------------------------------------------- environment errors
def test_out_below_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"is a file|not a directory"):
        prepare_output_dir(str(tmp_path / "file" / "run"), False, "sft")
    with pytest.raises(ConfigError, match="not a directory"):
        prepare_output_dir(str(tmp_path / "file"), False, "sft")


def test_unwritable_out_is_refused_up_front(tmp_path, monkeypatch):
    import os

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith("locked") else real(p, mode))
    with pytest.raises(ConfigError, match=r"'.*locked' is not writable"):
        prepare_output_dir(str(tmp_path / "locked"), False, "sft")


def _main_raising(monkeypatch, exc: BaseException) -> int:
    class Module:
        @staticmethod
        def main(args):
            raise exc

    monkeypatch.setattr(cli, "build_parser", lambda name: (__import__("argparse").ArgumentParser(), Module))
    return cli.main(["sft"])


def test_environment_errors_are_one_line_naming_the_path(monkeypatch, capsys):
    err = PermissionError(errno.EACCES, "Permission denied", "/data/run/metrics.jsonl")
    assert _main_raising(monkeypatch, err) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "/data/run/metrics.jsonl" in line and "permissions" in line


def test_sqlite_in_an_unwritable_folder_is_one_line(monkeypatch, capsys, tmp_path):
    try:
        sqlite3.connect(tmp_path / "missing" / "labels.db")
    except sqlite3.OperationalError as e:
        err = e
    assert _main_raising(monkeypatch, err) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "database" in line


# ---------------------------------------------------------------------------- resume and completion
def test_resume_truncates_metrics_refuses_changes_and_marks_completion(tiny_model, demos_file, tmp_path):
    out = tmp_path / "run"
    run_sft(quick(tiny_model, demos_file, out))
    assert (out / COMPLETE).exists()
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4]
    # resumed from step 2: steps 3 and 4 are written once, not twice
    run_sft(quick(tiny_model, demos_file, out, resume=True))
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4]
    # a changed setting that alters the run is refused, unless allowed (and then recorded)
    with pytest.raises(ConfigError, match=r"batch_size: 8 -> 4.*--allow-config-change"):
        run_sft(quick(tiny_model, demos_file, out, resume=True, batch_size=4))
    run_sft(quick(tiny_model, demos_file, out, resume=True, learning_rate=1e-3, allow_config_change=True))
    change = json.loads((out / "config_changes.jsonl").read_text().splitlines()[-1])
    assert change["learning_rate"] == {"saved": 0.003, "now": 0.001}
    # a run folder without its marker (killed during the final save) is refused by the next stage
    (out / COMPLETE).unlink()
    with pytest.raises(ModelLoadError, match="unfinished SFTConfig run"):
        run_sft(quick(out, demos_file, tmp_path / "next"))
    r = run_cli(["generate", "--model", str(out), "--prompt", "hi"])
    assert r.returncode == 2 and "unfinished" in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]
    check_finished(str(tiny_model))  # a folder instructrl did not write loads as before
    check_finished("openai-community/gpt2")  # and so does a Hub id


def test_truncate_jsonl_drops_rows_after_the_checkpoint_and_a_cut_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps({"iteration": i}) + "\n" for i in (1, 2, 3, 3)) + '{"iterat')
    truncate_jsonl(path, 2, key="iteration")
    assert [json.loads(x)["iteration"] for x in path.read_text().splitlines()] == [1, 2]


def test_instructrl_errors_stay_one_line(monkeypatch, capsys):
    assert _main_raising(monkeypatch, InstructRLError("bad thing in x.jsonl")) == 2
    assert capsys.readouterr().err.strip() == "error: bad thing in x.jsonl"


def test_every_stage_refuses_an_unfinished_run_as_input(tmp_path):
    from instructrl.evaluate.runner import parse_model_spec
    from instructrl.ppo.api import run_ppo
    from instructrl.ppo.config import PPOConfig
    from instructrl.reward.api import evaluate_rm
    from instructrl.reward.config import RMConfig

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("stage: RMConfig\nseed: 0\n")
    (run / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"reward model '.*' is an unfinished RMConfig run"):
        evaluate_rm(RMConfig(model=str(run), eval_data="x.jsonl"))
    with pytest.raises(ModelLoadError, match=r"reward model '.*' is an unfinished RMConfig run"):
        run_ppo(PPOConfig(policy="p", reward_model=str(run), prompts="x.jsonl", output_dir=str(tmp_path / "o")))
    with pytest.raises(ModelLoadError, match=r"model 'a' .* is an unfinished RMConfig run"):
        parse_model_spec(f"a={run}")


@pytest.mark.parametrize(
    ("ranks", "ok"),
    [
        ([1, 2, 3, 4], True),
        ([2, 1, 1, 3], True),
        ([1, 2, 2, 4], True),
        ([1, 2, 3, 9], False),
        ([1, 1, 3, 4], True),
        ([1, 3, 3, 4], False),
        ([2, 3, 4, 5], False),
        ([1, 2, 4, 4], False),
    ],
)
def test_ranks_above_k_or_with_gaps_are_refused(tmp_path, ranks, ok):
    from instructrl.errors import DataError
    from instructrl.reward.data import load_rankings

    row = {"prompt": "p", "completions": ["a", "b", "c", "d"], "ranks": ranks}
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(row) + "\n")
    if ok:
        load_rankings(str(path))
    else:
        with pytest.raises(DataError, match=r"r\.jsonl:1: .*without gaps"):
            load_rankings(str(path))


def test_eval_models_name_without_a_path_is_refused_before_any_hub_lookup(tmp_path):
    from instructrl.evaluate.config import EvalConfig

    with pytest.raises(ConfigError, match="--models 'sft': no folder of that name; give PATH, NAME=PATH"):
        EvalConfig.from_dict({"models": ["sft"]})
    with pytest.raises(ConfigError, match="--baseline 'base'"):
        EvalConfig.from_dict({"baseline": "base"})
    EvalConfig.from_dict({"models": [f"sft={tmp_path}", str(tmp_path), "openai-community/gpt2+fewshot"]})


def test_out_of_range_seeds_and_world_sizes_are_usage_errors_that_write_nothing(tmp_path):
    """numpy takes seeds below 2**32; a world of scale nan or 0, or no benchmark items, has nothing to build."""
    huge = str(2**64)
    calls = {
        "--seed": ["generate", "--model", "tiny", "--prompt", "hi", "--seed", huge],
        "--world-seed": ["demo", "--micro", "--world-seed", "-1", "--out", tmp_path / "demo"],
        "--scale": ["world", "build", "--scale", "nan", "--out", tmp_path / "world"],
        "--pretrain-docs": ["world", "build", "--pretrain-docs", "0", "--out", tmp_path / "world"],
        "--n": ["world", "bench", "--model", "tiny", "--n", "0"],
        "--max-new-tokens": ["world", "label", "--policy", "tiny", "--prompts", "p.jsonl", "--max-new-tokens", "0",
                             "--out", tmp_path / "r.jsonl"],
    }  # fmt: skip
    for flag, r in zip(calls, run_cli_many(list(calls.values())), strict=True):
        assert r.returncode == 2, (flag, r.stderr[-500:])
        assert "Traceback" not in r.stderr
        assert f"argument {flag}:" in r.stderr.splitlines()[-1], r.stderr
    r = run_cli(["sft", "--model", "tiny", "--data", "d.jsonl", "--seed", huge, "--out", tmp_path / "sft"])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"error: seed={huge} (--seed) must be <= {2**32 - 1}"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"not a database at all\n" * 100, "damaged"])
def test_a_file_that_is_not_a_usable_sqlite_database_is_one_line(tmp_path, content):
    db = tmp_path / "labels.db"
    if content == "damaged":  # a real database cut short
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE t (x TEXT)")
            conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
        db.write_bytes(db.read_bytes()[:6000])
    else:
        db.write_bytes(content)
    before = db.read_bytes()
    r = run_cli(["label", "progress", "--db", f"sqlite:///{db}"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-800:]
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: {db} is not a usable SQLite database (") and "choose another --db" in line
    assert db.read_bytes() == before


def test_a_python_judge_that_is_not_callable_or_a_bad_labelers_seed_is_refused():
    from instructrl.evaluate.judges import load_judge

    with pytest.raises(ConfigError, match=r"--judge python:os:sep: sep is a str, not a class or function"):
        load_judge("python:os:sep")
    with pytest.raises(ConfigError, match=r"--judge labelers:abc: the labelers' seed must be a whole number"):
        load_judge("labelers:abc")


def test_a_folder_without_tokenizer_files_is_refused_not_encoded_to_nothing(tiny_model, tmp_path):
    from instructrl.modeling.loading import load_tokenizer

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((tiny_model / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="has no usable tokenizer files: its tokenizer encodes text to no tokens"):
        load_tokenizer(str(bare))


def test_world_policies_need_a_directory_and_a_chat_template(tiny_model, tmp_path):
    from instructrl.world.tokenizer import load_world_policy

    with pytest.raises(InstructRLError, match=r"--model .*nowhere: no such directory \(or a base-model size"):
        load_world_policy(str(tmp_path / "nowhere"))
    with pytest.raises(InstructRLError, match="its tokenizer has no chat template"):
        load_world_policy(str(tiny_model), "--policy")
    tok, model = load_world_policy("tiny")  # a shipped base model: the world's chat template
    assert tok.chat_template and not model.training


def test_a_finished_run_is_not_trained_over_and_a_damaged_checkpoint_is_named(tiny_model, demos_file, tmp_path):
    import re

    out = tmp_path / "run"
    run_sft(quick(tiny_model, demos_file, out, max_steps=6))
    weights = (out / "model.safetensors").read_bytes()
    with pytest.raises(InstructRLError, match="holds a finished run: choose another --out, pass --resume"):
        run_sft(quick(tiny_model, demos_file, out, max_steps=6))
    assert (out / "model.safetensors").read_bytes() == weights
    latest = out / "checkpoints" / "step-4"
    good = (latest / "model.safetensors").read_bytes()
    (latest / "model.safetensors").write_bytes(b"cut short")
    earlier = re.escape(str(out / "checkpoints" / "step-2"))
    with pytest.raises(
        InstructRLError, match=rf"step-4 cannot be read \(SafetensorError: .*Remove it to resume from {earlier}"
    ):
        run_sft(quick(tiny_model, demos_file, out, resume=True, max_steps=6))
    (latest / "model.safetensors").write_bytes(good)
    (latest / "trainer_state.json").write_text('{"step": ')
    with pytest.raises(InstructRLError, match=r"step-4 cannot be read \(JSONDecodeError"):
        run_sft(quick(tiny_model, demos_file, out, resume=True, max_steps=6))


def test_a_config_file_that_is_not_yaml_text_is_one_line(tmp_path):
    from instructrl.config import load_yaml

    binary = tmp_path / "c.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=r"c.yaml: not a text file \(byte 0 is not UTF-8\); give a YAML file$"):
        load_yaml(binary)
    broken = tmp_path / "b.yaml"
    broken.write_text("lr: [1, 2\nseed: 3\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(broken)
    assert "\n" not in str(e.value) and "b.yaml: not valid YAML at line" in str(e.value)


def test_a_tracker_that_cannot_start_is_one_line_saying_what_to_do(tmp_path):
    from instructrl.training.tracking import MetricsLogger

    class NoKey:
        log_with = ("wandb",)

        def init_trackers(self, *args, **kwargs):
            raise RuntimeError("No API key configured.\nUse `wandb login`.")

    with pytest.raises(
        InstructRLError,
        match=r"--report-to wandb: the tracker could not start \(RuntimeError: No API key configured.\); log in",
    ):
        MetricsLogger(tmp_path, NoKey(), "sft")


def test_a_reward_model_path_that_is_not_there_names_it_in_one_line(tmp_path):
    from instructrl.modeling.reward import RewardModel

    folder = tmp_path / "rm"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(
        ModelLoadError, match=r"could not load reward model '.*rm' \(ValueError: Unrecognized model"
    ) as e:
        RewardModel.from_pretrained(folder)
    assert "\n" not in str(e.value)


def test_a_damaged_demo_recipe_is_refused_not_read_as_a_traceback(tmp_path):
    from instructrl.experiments.demo import claim_folder

    (tmp_path / "recipe.json").write_text('{"seed": 0, ')
    with pytest.raises(
        ConfigError, match=r"recipe.json cannot be read \(JSONDecodeError\): the folder's recipe is damaged"
    ):
        claim_folder(tmp_path, {"seed": 0})


def test_a_refused_run_leaves_no_empty_output_folder_but_keeps_one_that_was_there(tiny_model, tmp_path):
    kept = tmp_path / "kept"
    kept.mkdir()
    missing = tmp_path / "no-such-data.jsonl"
    new, old = run_cli_many(
        [
            ["sft", "--model", tiny_model, "--data", missing, "--cpu", "--out", tmp_path / "new" / "deeper"],
            ["sft", "--model", tiny_model, "--data", missing, "--cpu", "--out", kept],
        ]
    )
    for r in (new, old):
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-800:]
        assert "no-such-data.jsonl" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "new").exists()  # created by the refused run, and the folder above it too
    assert kept.is_dir() and list(kept.iterdir()) == []  # given by the user: left as it was
