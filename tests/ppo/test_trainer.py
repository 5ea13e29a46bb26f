"""Whole PPO runs on tiny models: learning, outputs and metrics, guards, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from ppo_helpers import TokenRewardScorer, quick_cfg
from testkit import cli_env

from instructrl.errors import InstructRLError
from instructrl.ppo.api import run_ppo
from instructrl.training.tracking import read_metrics

METRICS = [
    "ppo/score_mean",
    "ppo/kl",
    "ppo/beta",
    "ppo/entropy",
    "ppo/response_length",
    "ppo/policy_clipfrac",
    "ppo/value_clipfrac",
    "ppo/approx_kl",
    "ppo/value_loss",
    "ppo/policy_loss",
    "ppo/eos_rate",
    "ppo/episodes_per_s",
    "time/generate_s",
    "time/train_s",
]


def test_reward_rises_and_kl_stays_bounded(ppo_world, tmp_path):
    scorer = TokenRewardScorer(below=32, scale=20.0)  # reward answers made of the 10% lowest token ids
    cfg = quick_cfg(
        ppo_world,
        tmp_path / "out",
        value_model=str(ppo_world["rm"]),
        reward_model=None,
        total_episodes=16 * 14,
        batch_size=16,
        mini_batch_size=4,
        ppo_epochs=1,
        response_length=8,
        learning_rate=1e-2,
        kl_coef=0.05,
        missing_eos_penalty=None,
        checkpoint_every=100,
        ema=True,
        sample_every=5,
    )
    result = run_ppo(cfg, reward_model=scorer)
    scores = [h["ppo/score_mean"] for h in result.history]
    kls = [h["ppo/kl"] for h in result.history]
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3 + 0.5, scores
    assert max(kls) < 20, kls
    rows = read_metrics(tmp_path / "out")
    assert len(rows) == 14 and all(m in rows[-1] for m in METRICS)
    samples = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert {s["iteration"] for s in samples} == {1, 5, 10} and "response" in samples[0]
    out = tmp_path / "out"
    assert (out / "model.safetensors").exists() and (out / "last_policy" / "model.safetensors").exists()
    assert (out / "value_model" / "config.json").exists() and (out / "dist_sync.json").exists()


def test_both_optimizers_are_fused_on_the_cpu(ppo_world, tmp_path):
    """torch's fused AdamW on a CPU run too (training/optim.py: one vectorized pass per tensor)."""
    from instructrl.ppo.api import build_trainer

    trainer = build_trainer(quick_cfg(ppo_world, tmp_path / "out", total_episodes=8))
    assert trainer.acc.device.type == "cpu"
    assert trainer.pol_opt.optimizer.defaults["fused"] and trainer.val_opt.optimizer.defaults["fused"]


@pytest.mark.slow  # about a minute of compilation on 2 cores for each
@pytest.mark.parametrize("lora_r", [0, 8])
def test_compiled_forwards_train_as_the_eager_ones(ppo_world, tmp_path, lora_r):
    """--compile: the same iteration as without it (its episodes are sampled eagerly, so they are the same; its
    scoring and training passes are compiled), up to float rounding. With LoRA the reference is the policy with its
    adapters switched off, which the compiled forward must see too."""
    from instructrl.ppo.trainer import cpp_compiler

    if cpp_compiler() is None:
        pytest.skip("no C++ compiler for torch.compile's CPU code")
    from safetensors.torch import load_file

    runs = {}
    for compiled in (False, True):
        out = tmp_path / f"compile-{compiled}"
        cfg = quick_cfg(
            ppo_world, out, total_episodes=8, mini_batch_size=8, compile=compiled, sample_every=0, lora_r=lora_r
        )
        runs[compiled] = (run_ppo(cfg).history[-1], load_file(out / "model.safetensors"))
    (eager, w_eager), (comp, w_comp) = runs[False], runs[True]
    assert comp["ppo/score_mean"] == eager["ppo/score_mean"]  # the same episodes
    for key in ("ppo/kl", "ppo/policy_loss", "ppo/value_loss", "ppo/entropy"):
        assert comp[key] == pytest.approx(eager[key], rel=1e-4, abs=1e-5), key
    assert w_comp.keys() == w_eager.keys()
    for name, w in w_eager.items():
        torch.testing.assert_close(w_comp[name], w, rtol=1e-4, atol=1e-5, msg=name)


def test_compile_is_refused_where_it_cannot_run(ppo_world, tmp_path, monkeypatch):
    """One clear error before the run: several processes, or no C++ compiler on a CPU."""
    from types import SimpleNamespace

    from instructrl.errors import ConfigError
    from instructrl.ppo import trainer as trainer_module

    with pytest.raises(ConfigError, match="one process only"):
        trainer_module.check_compile(SimpleNamespace(num_processes=2, device=torch.device("cpu")))
    monkeypatch.setattr(trainer_module, "cpp_compiler", lambda: None)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="needs a C\\+\\+ compiler"):
        run_ppo(quick_cfg(ppo_world, out, total_episodes=8, compile=True))
    assert not (out / "model.safetensors").exists()


class NaNAfter(TokenRewardScorer):
    def __init__(self, below, after):
        super().__init__(below)
        self.after = after

    def forward(self, input_ids, attention_mask):
        s = super().forward(input_ids, attention_mask)
        return s * float("nan") if self.calls > self.after else s


def test_nan_reward_stops_and_keeps_the_last_good_checkpoint(ppo_world, tmp_path):
    cfg = quick_cfg(ppo_world, tmp_path / "out", value_model=str(ppo_world["rm"]), reward_model=None, total_episodes=40)
    with pytest.raises(InstructRLError, match=r"non-finite score.*iteration 3.*step-2"):
        run_ppo(cfg, reward_model=NaNAfter(32, after=2))
    ckpts = sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    assert ckpts == ["step-1", "step-2"]


def test_exploding_kl_stops_the_run(ppo_world, tmp_path):
    cfg = quick_cfg(ppo_world, tmp_path / "out", max_kl=1e-6, kl_estimator="k3", learning_rate=1e-2)
    with pytest.raises(InstructRLError, match=r"above max_kl=1e-06.*Last good checkpoint: .*step-1"):
        run_ppo(cfg)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def test_resume_after_a_kill_gives_the_uninterrupted_result(ppo_world, tmp_path):
    """SIGKILL the CLI after its second checkpoint, resume, and compare with a run that was never stopped."""
    args = [
        "--policy",
        str(ppo_world["policy"]),
        "--reward-model",
        str(ppo_world["rm"]),
        "--prompts",
        str(ppo_world["prompts"]),
        "--total-episodes",
        "40",
        "--batch-size",
        "8",
        "--mini-batch-size",
        "4",
        "--response-length",
        "8",
        "--learning-rate",
        "1e-3",
        "--warmup-iterations",
        "2",
        "--ema",
        "--adaptive-kl",
        "--ptx-data",
        str(ppo_world["ptx"]),
        "--ptx-per-episode",
        "1",
        "--ptx-max-length",
        "16",
        "--checkpoint-every",
        "1",
        "--no-progress",
    ]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "instructrl", "ppo", *args, "--out", str(killed)]
    proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "step-2" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists()  # it really died mid-run
    resumed = subprocess.run(cmd + ["--resume"], env=cli_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr

    from instructrl.ppo.config import PPOConfig

    cfg = quick_cfg(
        ppo_world,
        tmp_path / "straight",
        total_episodes=40,
        learning_rate=1e-3,
        warmup_iterations=2,
        ema=True,
        adaptive_kl=True,
        ptx_data=str(ppo_world["ptx"]),
        ptx_per_episode=1,
        ptx_max_length=16,
        sample_every=10,
        num_samples=4,
    )
    assert isinstance(cfg, PPOConfig)
    run_ppo(cfg)
    a, b = _weights(killed), _weights(tmp_path / "straight")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    beta_a = [r["ppo/beta"] for r in read_metrics(killed)][-1]
    beta_b = [r["ppo/beta"] for r in read_metrics(tmp_path / "straight")][-1]
    assert beta_a == pytest.approx(beta_b, rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_ppo_ptx_on_cuda(ppo_world, tmp_path, precision):
    """PPO-ptx on a GPU, fp32 and bf16 autocast: fused AdamW, finite metrics, weights that move and
    a saved policy that plain transformers loads back exactly."""
    from transformers import AutoModelForCausalLM

    from instructrl.ppo.api import build_trainer

    cfg = quick_cfg(
        ppo_world,
        tmp_path / "out",
        total_episodes=24,
        ptx_data=str(ppo_world["ptx"]),
        ptx_per_episode=1,
        ptx_max_length=16,
        mixed_precision=precision,
    )
    trainer = build_trainer(cfg)
    assert trainer.acc.device.type == "cuda"
    assert trainer.pol_opt.optimizer.defaults["fused"] and trainer.val_opt.optimizer.defaults["fused"]
    before = [p.detach().clone() for p in trainer.raw_policy.parameters()]
    result = trainer.train()
    assert result.iterations == 3
    for h in result.history:
        bad = {k: v for k, v in h.items() if isinstance(v, float) and not torch.isfinite(torch.tensor(v))}
        assert not bad, bad
    after = list(trainer.raw_policy.parameters())
    assert any(not torch.equal(b, a.detach()) for b, a in zip(before, after))
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    for name, p in trainer.raw_policy.state_dict().items():
        if name in saved:
            assert torch.equal(saved[name], p.detach().cpu()), name
