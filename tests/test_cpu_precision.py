"""`mixed_precision: auto` on a CPU: bf16 autocast only where it is clearly faster (training/precision.py).

The CPU's flags and the timed probe are replaced by known answers here (this suite runs on CPUs with and
without native bf16); the real probe runs once, briefly, to check that it measures and leaves the RNG alone.
"""

import json
import logging

import pytest
import torch
import yaml
from testkit import fact_demos, run_cli, write_jsonl

from instructrl.errors import ConfigError
from instructrl.evaluate.config import EvalConfig
from instructrl.modeling.generation import generate
from instructrl.modeling.loading import load_causal_lm, load_tokenizer
from instructrl.sft.config import SFTConfig
from instructrl.training import precision
from instructrl.training.accelerator import resolve_mixed_precision
from instructrl.training.precision import CPUInfo, Probe


class LongerWins:
    """A toy judge (as in tests/evaluate): the longer response wins."""

    name = "longer-wins"

    def compare(self, prompts, responses, baselines):
        return [1.0 if len(a) > len(b) else 0.5 if len(a) == len(b) else 0.0 for a, b in zip(responses, baselines)]


AMX = CPUInfo("Test CPU with AMX", x86=True, native=("amx_bf16", "avx512_bf16"))
ZEN4 = CPUInfo("Test CPU with AVX512-BF16", x86=True, native=("avx512_bf16",))
PLAIN_X86 = CPUInfo("Test CPU without bf16", x86=True, native=())
ARM = CPUInfo("Test ARM CPU", x86=False, native=())


@pytest.fixture()
def machine(monkeypatch, tmp_path):
    """The real decision (no INSTRUCTRL_CPU_BF16), a fresh cache folder, nothing decided yet in this process;
    ``machine(cpu, probe)`` sets the CPU and the probe's answer (None: the probe must not run)."""
    monkeypatch.delenv(precision.ENV_FORCE, raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv(precision.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "_decided", {})

    def setup(cpu: CPUInfo, probe: tuple[float, float] | None):
        calls = []  # one entry per probe run

        def fake_probe(*args, **kwargs):
            assert probe is not None, "the probe ran where the flags alone decide"
            calls.append(1)
            return Probe(probe[0], probe[1], torch.get_num_threads())

        monkeypatch.setattr(precision, "cpu_info", lambda *a: cpu)
        monkeypatch.setattr(precision, "probe", fake_probe)
        return calls

    return setup


def auto_on_cpu() -> str:
    return resolve_mixed_precision(SFTConfig(mixed_precision="auto", cpu=True))


def test_auto_picks_bf16_where_the_probe_finds_it_clearly_faster_and_says_so_once(machine, caplog):
    calls = machine(AMX, (100.0, 580.0))
    with caplog.at_level(logging.INFO, logger="instructrl"):
        assert auto_on_cpu() == "bf16"
        assert auto_on_cpu() == "bf16"  # every later call of the run: decided once
    lines = [r.getMessage() for r in caplog.records if "mixed precision auto" in r.getMessage()]
    assert lines == ["mixed precision auto -> bf16 (CPU has AMX and AVX512-BF16; probe 5.8x fp32)"]
    assert len(calls) == 1
    # what is asked explicitly is not decided
    assert resolve_mixed_precision(SFTConfig(mixed_precision="no", cpu=True)) == "no"


@pytest.mark.parametrize(
    ("cpu", "probe", "expected", "reason"),
    [
        (ZEN4, (113.0, 477.0), "bf16", "CPU has AVX512-BF16; probe 4.2x fp32"),
        (ZEN4, (100.0, 120.0), "no", "probe 1.2x fp32, below the 1.3x that bf16 needs"),  # not clearly faster
        (ARM, (50.0, 100.0), "bf16", "probe 2.0x fp32"),  # flags say nothing about bf16: the probe decides
        (ARM, (50.0, 10.0), "no", "probe 0.2x fp32"),
        (PLAIN_X86, None, "no", "CPU has neither AMX nor AVX512-BF16"),  # no probe at all
    ],
)
def test_auto_on_cpus_with_and_without_native_bf16(machine, cpu, probe, expected, reason):
    machine(cpu, probe)
    decision = precision.cpu_bf16()
    assert decision.precision == expected and reason in decision.reason
    assert auto_on_cpu() == expected


def test_the_environment_forces_the_choice(machine, monkeypatch):
    machine(PLAIN_X86, None)
    monkeypatch.setenv(precision.ENV_FORCE, "1")
    assert auto_on_cpu() == "bf16" and precision.cpu_bf16().reason == "INSTRUCTRL_CPU_BF16=1"
    machine(AMX, None)
    monkeypatch.setenv(precision.ENV_FORCE, "0")
    assert auto_on_cpu() == "no"
    monkeypatch.setenv(precision.ENV_FORCE, "maybe")
    with pytest.raises(ConfigError, match="INSTRUCTRL_CPU_BF16='maybe': expected 1"):
        auto_on_cpu()


def test_the_probe_is_cached_per_machine_and_reused(machine, monkeypatch, tmp_path):
    calls = machine(ZEN4, (113.0, 477.0))
    assert precision.cpu_bf16().bf16 and len(calls) == 1
    cache = tmp_path / "cache" / precision.CACHE_FILE
    entries = json.loads(cache.read_text())
    key = precision.cache_key(ZEN4, torch.get_num_threads())
    assert key in entries and "avx512_bf16" in key and torch.__version__ in key
    assert entries[key]["fp32_gflops"] == 113.0 and entries[key]["bf16_gflops"] == 477.0
    assert entries[key]["speedup"] == 4.22

    machine(ZEN4, None)  # the same machine again: no probe
    decision = precision.cpu_bf16()
    assert decision.bf16 and "cached probe 4.2x fp32" in decision.reason
    calls = machine(AMX, (100.0, 580.0))  # another CPU model: its own entry
    assert precision.cpu_bf16().bf16 and len(calls) == 1
    assert len(json.loads(cache.read_text())) == 2
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the default place, under XDG_CACHE_HOME
    monkeypatch.delenv(precision.ENV_CACHE_DIR)
    assert precision.cache_dir() == tmp_path / "xdg" / "instructrl"


def test_an_unusable_cache_never_stops_a_run(machine, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(precision.ENV_CACHE_DIR, str(blocker / "cache"))  # cannot be created
    calls = machine(ZEN4, (113.0, 477.0))
    assert precision.cpu_bf16().bf16 and precision.cpu_bf16().bf16
    assert len(calls) == 2  # nothing cached: measured again, and still decided

    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / precision.CACHE_FILE).write_text("{not json")
    monkeypatch.setenv(precision.ENV_CACHE_DIR, str(folder))
    assert precision.cpu_bf16().bf16  # a broken file reads as empty and is replaced
    assert len(json.loads((folder / precision.CACHE_FILE).read_text())) == 1

    unreadable = tmp_path / "dir-as-file"
    (unreadable / precision.CACHE_FILE).mkdir(parents=True)  # reading and replacing it both fail
    monkeypatch.setenv(precision.ENV_CACHE_DIR, str(unreadable))
    assert precision.cpu_bf16().bf16
    assert list(unreadable.iterdir()) == [unreadable / precision.CACHE_FILE]  # no temporary file left


def test_several_processes_decide_alike_without_a_probe(machine, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    machine(AMX, None)
    assert precision.cpu_bf16().bf16
    machine(ARM, None)
    assert not precision.cpu_bf16().bf16
    monkeypatch.setenv("WORLD_SIZE", "1")
    machine(ARM, (50.0, 100.0))
    assert precision.cpu_bf16().bf16  # measured and cached ...
    monkeypatch.setenv("WORLD_SIZE", "2")
    machine(ARM, None)
    assert "cached probe" in precision.cpu_bf16().reason  # ... which every rank then reads


def test_the_real_probe_measures_quickly_and_leaves_the_random_state_alone():
    state = torch.random.get_rng_state()
    result = precision.probe(threads=1, shape=(64, 128, 256), seconds=0.01)
    assert result.fp32_gflops > 0 and result.bf16_gflops > 0 and result.threads == 1
    assert torch.equal(torch.random.get_rng_state(), state)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx512f amx_bf16 avx512_bf16 amx_tile\n")
    assert precision.cpu_info(path) == CPUInfo("Some Xeon", True, ("amx_bf16", "avx512_bf16"))
    path.write_text("model name\t: Old Xeon\nflags\t\t: fpu avx2 avx512f\n")
    assert precision.cpu_info(path) == CPUInfo("Old Xeon", True, ())
    path.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")  # ARM: no x86 flags, the probe decides
    info = precision.cpu_info(path)
    assert not info.x86 and info.native == ()


# ---------------------------------------------------------------------------------------------- config.yaml
def test_config_yaml_records_the_resolved_precision_of_a_real_run(tiny_model, demos_file, tmp_path, monkeypatch):
    """A tiny SFT run from the command line with auto forced to bf16: the log line, and config.yaml says so."""
    out = tmp_path / "sft"
    monkeypatch.setenv(precision.ENV_FORCE, "1")  # the run's environment
    r = run_cli(
        ["sft", "--model", str(tiny_model), "--data", str(demos_file), "--out", str(out), "--cpu"]
        + ["--max-steps", "1", "--batch-size", "4", "--max-length", "48", "--no-progress"]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mixed precision auto -> bf16 (INSTRUCTRL_CPU_BF16=1)" in r.stderr
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["mixed_precision"] == "auto" and saved["resolved_mixed_precision"] == "bf16"
    keys = list(saved)
    assert keys.index("resolved_mixed_precision") == keys.index("mixed_precision") + 1
    # the saved file is still a preset: --config OUT/config.yaml reads it back (the record is skipped)
    again = SFTConfig.from_dict(saved)
    assert again.mixed_precision == "auto" and again.output_dir == str(out) and again.max_steps == 1


def test_a_resume_that_would_change_the_resolved_precision_is_refused(tmp_path):
    cfg = SFTConfig(output_dir=str(tmp_path), resume=True)
    cfg.save(tmp_path, resolved_mixed_precision="bf16")
    (tmp_path / "checkpoints" / "step-1").mkdir(parents=True)
    cfg.save(tmp_path, resolved_mixed_precision="bf16")  # the same machine: fine
    with pytest.raises(ConfigError, match=r"resolved_mixed_precision: 'bf16' -> 'no'.*INSTRUCTRL_CPU_BF16=1 or 0"):
        cfg.save(tmp_path, resolved_mixed_precision="no")
    cfg.replace(allow_config_change=True).save(tmp_path, resolved_mixed_precision="no")
    assert "resolved_mixed_precision" in (tmp_path / "config_changes.jsonl").read_text()


# ---------------------------------------------------------------------------------------------- sampling and eval
def lm_head_dtypes(model) -> list:
    seen = []
    model.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    return seen


def test_sampling_runs_under_the_requested_autocast_with_fp32_sampling(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    model = load_causal_lm(str(tiny_model), tok, init_from_config=False)
    seen = lm_head_dtypes(model)
    generate(model, tok, ["What color is the flag of Zor1?"], max_new_tokens=3, temperature=1.0)
    assert set(seen) == {torch.float32}
    seen.clear()
    torch.manual_seed(0)
    gens = generate(model, tok, ["Hi"], max_new_tokens=3, temperature=1.0, autocast_dtype=torch.bfloat16)
    assert set(seen) == {torch.bfloat16} and len(gens) == 1
    assert next(model.parameters()).dtype == torch.float32  # weights untouched


def test_eval_samples_every_model_in_one_resolved_precision(tiny_model, tmp_path, monkeypatch):
    """bf16 where auto resolves so, the same for the baseline and every model; recorded in both outputs."""
    from instructrl.evaluate import runner

    monkeypatch.setenv(precision.ENV_FORCE, "1")
    seen = []
    real = runner.generate

    def spy(model, *args, **kwargs):
        seen.append(kwargs.get("autocast_dtype"))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(runner, "generate", spy)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": d["prompt"]} for d in fact_demos(3)])
    cfg = EvalConfig(
        models=[f"a={tiny_model}", f"c={tiny_model}"],
        baseline=f"b={tiny_model}",
        prompts=str(prompts),
        output_dir=str(tmp_path / "ev"),
        max_new_tokens=4,
        progress=False,
    )
    res = runner.run_eval(cfg, judge=LongerWins())
    assert seen == [torch.bfloat16] * 3
    assert res["mixed_precision"] == "bf16"
    assert yaml.safe_load((tmp_path / "ev" / "config.yaml").read_text())["resolved_mixed_precision"] == "bf16"
    monkeypatch.setenv(precision.ENV_FORCE, "0")
    seen.clear()
    assert runner.run_eval(cfg.replace(models=[f"a={tiny_model}"]), judge=LongerWins())["mixed_precision"] == "no"
    assert seen == [None, None]
    with pytest.raises(ConfigError, match="fp16: evaluation samples on the CPU"):
        runner.run_eval(cfg.replace(mixed_precision="fp16"), judge=LongerWins())


def test_generate_command_samples_in_the_resolved_precision(tiny_model):
    from types import SimpleNamespace

    from instructrl.generate import answer

    tok = load_tokenizer(str(tiny_model))
    model = load_causal_lm(str(tiny_model), tok, init_from_config=False)
    seen = lm_head_dtypes(model)
    args = SimpleNamespace(best_of=1, max_new_tokens=2, temperature=1.0, top_p=1.0)
    answer(model, tok, ["Hi"], args, precision="bf16")
    assert set(seen) == {torch.bfloat16}
    r = run_cli(["generate", "--model", str(tiny_model), "--prompt", "Hi", "--max-new-tokens", "2"])
    assert r.returncode == 0 and "mixed precision auto -> no (fp32: INSTRUCTRL_CPU_BF16=0)" in r.stderr, r.stderr
