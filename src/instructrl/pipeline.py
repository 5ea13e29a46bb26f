"""The whole method on the miniature world, stage by stage, each stage cached in its own folder.

Used by ``instructrl demo`` (the smallest size) and ``instructrl reproduce`` (every arm, every size).
A stage whose folder holds a ``.done`` marker is skipped, so an interrupted run continues where it
stopped; a stage interrupted mid-way resumes from its own checkpoints.

Stages (InstructGPT §3): world datasets -> SFT (the PPO-init recipe: 10% pretraining mix, App. C.3)
-> rankings of K samples of the SFT policy by training labelers -> reward model -> PPO / PPO-ptx ->
evaluation by held-out labelers.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from instructrl.data.io import read_records, write_jsonl



@dataclass
class Recipe:
    """Sizes of every stage for a run on a CPU (the paper's proportions, scaled down)."""

    scale: float = 0.75            # world build scale (SFT : RM : PPO prompts about 13 : 33 : 31)
    sft_epochs: int = 6
    sft_pretrain_fraction: float = 0.1
    rank_prompts: int = 2000       # prompts ranked for RM training
    rank_eval_prompts: int = 200   # held-out prompts ranked by training and held-out labelers
    k: tuple[int, int] = (4, 6)    # K samples per prompt (InstructGPT: 4..9)
    ppo_episodes: int = 2048
    ptx_coef: float = 27.8
    # InstructGPT used 8 pretraining examples per episode; 1 keeps the same expected ptx gradient
    # (the ptx loss is a mean over its windows) at an eighth of the cost, which a CPU demo needs
    ptx_per_episode: float = 1.0
    eval_prompts: int = 200
    world_eval_prompts: int | None = None  # build this many evaluation prompts (default: 320 x scale)
    benchmark_n: int = 60
    max_new_tokens: int = 40
    extra: dict = field(default_factory=dict)


MICRO = dict(scale=0.02, sft_epochs=1, rank_prompts=16, rank_eval_prompts=8, k=(4, 4), ppo_episodes=32,
             eval_prompts=8, benchmark_n=4, max_new_tokens=12, extra={"ppo": {"batch_size": 16, "mini_batch_size": 8}})


class Stages:
    """Runs named stages under ``root``, skipping finished ones and printing progress with an ETA."""

    def __init__(self, root: Path, expected_seconds: dict[str, float], printer: Callable[[str], None] = print):
        self.root, self.expected, self.print = root, expected_seconds, printer
        self.t0 = time.time()
        self.timings: dict[str, float] = {}
        root.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, fn: Callable[[Path], object]) -> Path:
        out = self.root / name
        done = out / ".done"
        if done.exists():
            self.timings[name] = json.loads(done.read_text()).get("seconds", 0.0)
            self.print(f"[{name}] cached")
            return out
        remaining = sum(v for k, v in self.expected.items() if not (self.root / k / ".done").exists())
        eta = f", about {remaining / 60:.1f} min left" if self.expected else ""
        self.print(f"[{name}] starting ({time.time() - self.t0:.0f}s elapsed{eta})")
        t = time.time()
        out.mkdir(parents=True, exist_ok=True)
        fn(out)
        self.timings[name] = round(time.time() - t, 1)
        done.write_text(json.dumps({"seconds": self.timings[name]}))
        self.print(f"[{name}] done in {self.timings[name]:.0f}s")
        return out


def build_world(out: Path, seed: int, recipe: Recipe) -> None:
    from instructrl.world.build import build

    build(out, seed=seed, scale=recipe.scale, eval_prompts=recipe.world_eval_prompts)


def run_sft_stage(out: Path, base: str, world: Path, recipe: Recipe, seed: int, data: str | None = None) -> None:
    from instructrl.sft.api import run_sft
    from instructrl.sft.config import SFTConfig

    cfg = SFTConfig.from_dict({**_preset("sft-tiny"), "model": base, "data": data or str(world / "sft.jsonl"),
                               "output_dir": str(out), "epochs": recipe.sft_epochs,
                               "pretrain_data": str(world / "pretrain.jsonl"),
                               "pretrain_fraction": recipe.sft_pretrain_fraction, "seed": seed,
                               "resume": (out / "checkpoints").exists(), "max_length": 192})
    run_sft(cfg)


def _preset(name: str) -> dict:
    from instructrl.config import load_yaml

    return load_yaml(name)


def collect_rankings(policy: str | Sequence[str], records: list[dict], labelers: list, reference,
                     k_range: tuple[int, int], seed: int, max_new_tokens: int, group: str) -> list[dict]:
    """Sample K responses per prompt (temperature 1) and have labelers rank them (InstructGPT §3.2:
    rankings of K = 4..9 outputs of the models being trained). With several policies, a prompt's K
    samples are shared out among them in turn (sample j from policy j mod n): comparisons between, say,
    the SFT policy and a PPO policy trained against the previous reward model, as in the paper's later
    rounds of data collection. Each row's ``sources`` gives the index of the policy behind each sample."""
    import torch

    from instructrl.generate import generate
    from instructrl.modeling.loading import load_causal_lm, load_tokenizer
    from instructrl.world.sampling import share_slots

    policies = [policy] if isinstance(policy, (str, Path)) else list(policy)
    rng = random.Random(f"rank:{seed}:{group}")
    ks = [rng.randint(*k_range) for _ in records]
    texts: list[list[str | None]] = [[None] * k for k in ks]
    for j, (path, slots) in enumerate(zip(policies, share_slots(ks, len(policies)))):
        torch.manual_seed(seed + j)
        tok = load_tokenizer(str(path))
        model = load_causal_lm(str(path), tok, init_from_config=False)
        flat = generate(model, tok, [records[i]["prompt"] for i, _ in slots], max_new_tokens=max_new_tokens,
                        temperature=1.0, batch_size=256)
        for (i, s), g in zip(slots, flat):
            texts[i][s] = g.text
        del model
    rows = []
    for rec, k, completions in zip(records, ks, texts):
        lab = labelers[len(rows) % len(labelers)]
        row = {"prompt": rec["prompt"], "completions": completions, "ranks": lab.rank(rec, completions),
               "reference_ranks": reference.rank(rec, completions), "labeler": lab.id, "labeler_group": group,
               "category": rec.get("category"), "task": rec.get("task")}
        if len(policies) > 1:
            row["sources"] = [s % len(policies) for s in range(k)]
        rows.append(row)
    return rows


def run_rankings_stage(out: Path, policy: str, world: Path, recipe: Recipe, seed: int) -> None:
    """Training rankings by training labelers; held-out comparisons on separate prompts, ranked by
    training labelers and by held-out labelers (for the RM's per-group accuracy, §3.5)."""
    from instructrl.world.labelers import make_pool

    pool = make_pool(int(seed))
    prompts = [r.data for r in read_records(world / "rm_prompts.jsonl", what="prompt data")]
    train = prompts[: recipe.rank_prompts]
    held = prompts[recipe.rank_prompts : recipe.rank_prompts + recipe.rank_eval_prompts]
    kw = dict(reference=pool.reference, k_range=recipe.k, seed=seed, max_new_tokens=recipe.max_new_tokens)
    write_jsonl(out / "rankings.jsonl", collect_rankings(policy, train, pool.training, group="training", **kw))
    half = len(held) // 2
    evals = collect_rankings(policy, held[:half], pool.training, group="training", **kw)
    evals += collect_rankings(policy, held[half:], pool.heldout, group="heldout", **kw)
    write_jsonl(out / "rankings_eval.jsonl", evals)


def run_rm_stage(out: Path, sft: str, rankings: Path, world: Path, seed: int, overrides: dict | None = None) -> None:
    """The ``rm-tiny`` recipe from ``sft`` on ``rankings``; ``overrides`` replace entries of the RM config."""
    from instructrl.reward.api import run_rm
    from instructrl.reward.config import RMConfig

    cfg = RMConfig.from_dict({**_preset("rm-tiny"), "model": sft, "data": str(rankings / "rankings.jsonl"),
                              "eval_data": str(rankings / "rankings_eval.jsonl"), "output_dir": str(out),
                              "demonstrations": str(world / "sft.jsonl"), "normalize": "demonstrations",
                              "seed": seed, "resume": (out / "checkpoints").exists(), **(overrides or {})})
    run_rm(cfg)


def run_ppo_stage(out: Path, sft: str, rm: str, world: Path, recipe: Recipe, seed: int, ptx: bool,
                  reward_fn=None) -> None:
    """PPO / PPO-ptx from ``sft`` against the RM directory ``rm``; with ``reward_fn`` (a module scoring
    right-padded rows, e.g. :class:`instructrl.world.reward.JudgeReward`) against that instead, the
    value model still starting from ``rm``."""
    from instructrl.ppo.api import run_ppo
    from instructrl.ppo.config import PPOConfig

    rm_keys = {"reward_model": rm} if reward_fn is None else {"reward_model": None, "value_model": rm}
    values = {**_preset("ppo-tiny"), "policy": sft, **rm_keys, "prompts": str(world / "ppo_prompts.jsonl"),
              "output_dir": str(out), "total_episodes": recipe.ppo_episodes, "seed": seed,
              "response_length": recipe.max_new_tokens, "resume": (out / "checkpoints").exists(),
              **recipe.extra.get("ppo", {})}
    if ptx:
        values.update(ptx_data=str(world / "pretrain.jsonl"), ptx_coef=recipe.ptx_coef,
                      ptx_per_episode=recipe.ptx_per_episode)
    run_ppo(PPOConfig.from_dict(values), reward_model=reward_fn)


def run_eval_stage(out: Path, models: list[str], baseline: str, world: Path, recipe: Recipe, seed: int,
                   suites: list[str] | None = None) -> dict:
    from instructrl.evaluate.config import SUITES, EvalConfig
    from instructrl.evaluate.runner import run_eval

    cfg = EvalConfig(models=models, baseline=baseline, world_dir=str(world), output_dir=str(out), seed=seed,
                     num_prompts=recipe.eval_prompts, benchmark_n=recipe.benchmark_n,
                     max_new_tokens=recipe.max_new_tokens, suites=list(suites or SUITES))
    return run_eval(cfg)
