"""The whole method on the miniature world, stage by stage, each stage cached in its own folder.

Used by ``instructrl demo`` (the smallest size) and ``instructrl reproduce`` (every arm, every size).
A stage whose folder holds a ``.done`` marker is skipped, so an interrupted run continues where it
stopped; a stage interrupted mid-way resumes from its own checkpoints.

Stages (InstructGPT §3): world datasets -> SFT (the PPO-init recipe: 10% pretraining mix, App. C.3)
-> rankings of K samples of the SFT policy (by the training labelers, or by the noiseless judge) -> reward
model (from the policy's SFT, or from an SFT of a larger base model) -> PPO / PPO-ptx -> evaluation by
held-out labelers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from instructrl.config import BaseConfig, coerce, load_yaml, seed_type
from instructrl.data.io import read_records, write_jsonl
from instructrl.data.template import encode_prompt
from instructrl.data.tokenize import left_pad
from instructrl.errors import ConfigError
from instructrl.evaluate.config import SUITES, EvalConfig
from instructrl.evaluate.runner import run_eval
from instructrl.modeling.loading import load_causal_lm, load_tokenizer, save_pretrained_atomic
from instructrl.ppo.api import build_trainer
from instructrl.ppo.config import PPOConfig
from instructrl.ppo.rollout import COMPACT_AT, sample_responses
from instructrl.reward.api import run_rm
from instructrl.reward.config import RMConfig
from instructrl.sft.api import run_sft
from instructrl.sft.config import SFTConfig
from instructrl.world.base_models import SIZES
from instructrl.world.build import build, sizes
from instructrl.world.labelers import make_pool
from instructrl.world.sampling import share_slots


@dataclass(frozen=True)
class StageOverrides:
    """Typed overrides of one stage's config: every key is a field of ``config_cls``, every value is coerced to
    that field's type when the overrides are made, so a typo or a wrong type fails before any stage runs."""

    stage: str
    config_cls: type[BaseConfig]
    values: Mapping[str, Any] = field(default_factory=dict)
    # fields the pipeline sets itself (paths between stages, and the response length every stage shares)
    owned: frozenset[str] = frozenset()

    def merged(self, more: Mapping[str, Any], source: str = "recipe") -> StageOverrides:
        """These overrides with ``more`` applied on top, key by key."""
        if not isinstance(more, Mapping):
            raise ConfigError(
                f"{source}: '{self.stage}' expects a table of {self.config_cls.__name__} fields, got {more!r}"
            )
        known = {f.name: f for f in dataclasses.fields(self.config_cls)}
        values = dict(self.values)
        for key, value in more.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(
                    f"{source}: unknown field '{self.stage}.{key}' ({self.config_cls.__name__} has no such field)"
                )
            if name in self.owned:
                raise ConfigError(f"{source}: '{self.stage}.{key}' is set by the pipeline and cannot be overridden")
            values[name] = coerce(value, known[name], source)
        return dataclasses.replace(self, values=values)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def check(self, preset: str, pipeline: Mapping[str, Any]) -> None:
        """Validate the stage's config as the pipeline will build it (``preset``, then what the pipeline sets, a
        placeholder for each path, then these overrides), so a value its config refuses fails when the recipe is
        made, not after the stages before it have run."""
        placeholders = {name: "<set by the pipeline>" for name in self.owned if name not in pipeline}
        try:
            self.config_cls.from_dict({**load_yaml(preset), **placeholders, **pipeline, **self.values})
        except ConfigError as e:
            raise ConfigError(
                f"recipe: stage '{self.stage}' (the {preset} preset with the recipe's {self.stage} table on top): {e}"
            ) from None


def _stage(stage: str, config_cls: type[BaseConfig], owned: set[str], **values: Any):
    return field(default_factory=lambda: StageOverrides(stage, config_cls, {}, frozenset(owned)).merged(values))


@dataclass(frozen=True)
class Recipe:
    """What a run on the miniature world does: the data sizes of every stage (the paper's proportions, scaled
    down for a CPU) and typed overrides of each stage's config on top of its ``*-tiny`` preset.

    The pipeline sets the paths between stages, the run's seed and ``ppo.response_length`` (=
    ``max_new_tokens``); a stage's overrides apply on top of those (a ``seed`` there re-seeds that stage
    alone). ``Recipe.from_dict({"scale": 1.0, "ppo": {"kl_coef": 0.04}})`` merges the given stage tables over
    the defaults below, key by key."""

    scale: float = 0.75  # world build scale (SFT : RM : PPO prompts about 13 : 33 : 31)
    rank_prompts: int = 2000  # prompts ranked for RM training
    rank_eval_prompts: int = 200  # held-out prompts ranked by training and held-out labelers
    # who ranks the RM's training samples: "labelers" (the training labelers) or "reference" (the noiseless judge,
    # the preference every labeler shares before their own noise and quirks)
    rank_labels: str = "labelers"
    # draw the ranked prompts from a build of the same world (same knowledge base) at this scale, leaving out the
    # held-out comparisons' prompts and every prompt the evaluation scores; None: the world's own RM prompts
    rank_scale: float | None = None
    # the RM (and the PPO value model, which starts from it) is trained from an SFT of this base model size
    # ("small", "medium"; the paper: one 6B RM for every policy size); None: from the policy's own SFT
    rm_size: str | None = None
    k: tuple[int, int] = (4, 6)  # K samples per prompt (InstructGPT: 4..9)
    # the ranked samples come from each step's rank_top_k likeliest tokens (as the evaluation samples: transformers'
    # top-k 50); None: from the whole distribution, as PPO's rollouts do
    rank_top_k: int | None = 50
    eval_prompts: int = 200
    world_eval_prompts: int | None = None  # build this many evaluation prompts (default: 320 x scale)
    benchmark_n: int = 60
    max_new_tokens: int = 40  # every sampled response: rankings, PPO rollouts, evaluation
    # InstructGPT App. C.3: the SFT model PPO starts from was trained with 10% pretraining data
    sft: StageOverrides = _stage(
        "sft",
        SFTConfig,
        {"model", "data", "output_dir", "pretrain_data", "resume"},
        epochs=6,
        pretrain_fraction=0.1,
        max_length=192,
    )
    rm: StageOverrides = _stage(
        "rm",
        RMConfig,
        {"model", "data", "eval_data", "output_dir", "demonstrations", "resume"},
        normalize="demonstrations",
    )
    # InstructGPT used 8 pretraining examples per episode; 1 keeps the same expected ptx gradient (the ptx loss
    # is a mean over its windows) at an eighth of the cost, which a CPU demo needs
    ppo: StageOverrides = _stage(
        "ppo",
        PPOConfig,
        {"policy", "reward_model", "value_model", "prompts", "output_dir", "ptx_data", "response_length", "resume"},
        total_episodes=2048,
        ptx_coef=27.8,
        ptx_per_episode=1.0,
    )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "recipe") -> Recipe:
        return cls().with_overrides(values, source)

    def with_overrides(self, values: Mapping[str, Any], source: str = "recipe") -> Recipe:
        """A copy with ``values`` applied: sizes replaced, stage tables merged key by key."""
        known = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key in ("sft", "rm", "ppo"):
                changes[key] = getattr(self, key).merged(value, source)
            elif key == "k":
                low, high = (value, value) if isinstance(value, int) else tuple(value)
                changes[key] = (int(low), int(high))
            elif key in known:
                changes[key] = coerce(value, known[key], source)
            else:
                raise ConfigError(f"{source}: unknown recipe field '{key}' (known: {', '.join(known)})")
        try:
            return dataclasses.replace(self, **changes)
        except ConfigError as e:  # a value the recipe's checks refuse: say where it came from
            raise _from_source(e, source) from None

    def __post_init__(self) -> None:
        self._check_sizes()
        if self.rank_labels not in RANK_LABELS:
            raise ConfigError(f"recipe: rank_labels must be one of {', '.join(RANK_LABELS)}, got {self.rank_labels!r}")
        if self.rank_scale is not None:
            if not self.rank_scale > 0:  # NaN too
                raise ConfigError(f"recipe: rank_scale must be positive, got {self.rank_scale}")
            available = sizes(self.rank_scale)["rm"]
            if available < self.rank_prompts:
                raise ConfigError(
                    f"recipe: rank_scale {self.rank_scale} builds {available} RM prompts, fewer than rank_prompts "
                    f"{self.rank_prompts}: raise rank_scale"
                )
        else:  # the world's own RM prompts: the ranked ones, then the held-out comparisons'
            available = sizes(self.scale)["rm"]
            if available < self.rank_prompts + self.rank_eval_prompts:
                raise ConfigError(
                    f"recipe: the world at scale {self.scale:g} builds {available} RM prompts, fewer than rank_prompts "
                    f"{self.rank_prompts} + rank_eval_prompts {self.rank_eval_prompts}: lower rank_prompts, raise "
                    "scale, or draw the ranked prompts from a larger build with rank_scale"
                )
        if self.rank_top_k is not None and self.rank_top_k < 1:
            raise ConfigError(
                f"recipe: rank_top_k must be >= 1 (or null: the whole distribution), got {self.rank_top_k}"
            )
        if self.rm_size is not None and self.rm_size not in SIZES and not Path(self.rm_size).is_dir():
            raise ConfigError(
                f"recipe: rm_size must be a base model size ({', '.join(SIZES)}) or a model directory, "
                f"got {self.rm_size!r}"
            )
        self.sft.check("sft-tiny", {"resume": False})
        self.rm.check("rm-tiny", {"resume": False})
        self.check_ppo({})

    def check_ppo(self, overrides: Mapping[str, Any], source: str = "recipe") -> None:
        """Validate PPO's config as :func:`run_ppo_stage` builds it with ``overrides`` (an arm's, e.g. a
        critic-free advantage) on top of the recipe's, before any stage runs."""
        ppo = self.ppo.merged(overrides, source)
        try:
            ppo.check("ppo-tiny", {"resume": False, "response_length": self.max_new_tokens, "value_model": None})
        except ConfigError as e:
            raise _from_source(e, source) from None

    def _check_sizes(self) -> None:
        """The data sizes: each a count the stages can use, and no more evaluation prompts than the world builds
        (the evaluation would use fewer than the report states)."""
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"recipe: scale must be a positive number, got {self.scale}")
        least = {"rank_prompts": 1, "rank_eval_prompts": 2, "eval_prompts": 1, "benchmark_n": 1, "max_new_tokens": 1}
        for name, low in least.items():
            value = getattr(self, name)
            if value < low:
                why = (
                    " (half go to the training labelers, half to the held-out ones)"
                    if name == "rank_eval_prompts"
                    else ""
                )
                raise ConfigError(f"recipe: {name} must be at least {low}{why}, got {value}")
        if self.world_eval_prompts is not None and self.world_eval_prompts < 1:
            raise ConfigError(f"recipe: world_eval_prompts must be at least 1 (or null), got {self.world_eval_prompts}")
        low, high = self.k
        if not 2 <= low <= high:
            raise ConfigError(
                f"recipe: k must be K or [low, high] with 2 <= low <= high (responses ranked per prompt), "
                f"got {list(self.k)}"
            )
        built = self.world_eval_prompts if self.world_eval_prompts is not None else sizes(self.scale)["eval"]
        if self.eval_prompts > built:
            raise ConfigError(
                f"recipe: eval_prompts {self.eval_prompts} is more than the {built} evaluation prompts the world "
                f"builds at scale {self.scale:g}: lower eval_prompts, or raise world_eval_prompts"
            )


def _from_source(e: ConfigError, source: str) -> ConfigError:
    """``e`` naming where the refused value came from (an option, an arm), unless that is the recipe itself, which
    every recipe message already names."""
    return e if source == "recipe" else ConfigError(f"{source}: {e}")


RANK_LABELS = ("labelers", "reference")


# a seconds-long smoke run: toy data sizes (its numbers mean nothing)
MICRO = dict(
    scale=0.02,
    rank_prompts=16,
    rank_eval_prompts=8,
    k=(4, 4),
    eval_prompts=8,
    benchmark_n=4,
    max_new_tokens=12,
    sft={"epochs": 1},
    ppo={"total_episodes": 32, "batch_size": 16, "mini_batch_size": 8},
)


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


def add_seed_arguments(parser) -> None:
    """``--seed`` (training) and ``--world-seed`` (the world) of the commands that run the pipeline."""
    parser.add_argument(
        "--seed",
        type=seed_type,
        default=0,
        help="Training seed: SFT, the ranked samples, the reward model, PPO and the evaluation's sampling.",
    )
    parser.add_argument(
        "--world-seed",
        type=seed_type,
        default=0,
        help="The world: its knowledge base, labelers and prompts (default 0, the world the shipped base models "
        "were pretrained on; another seed is a world whose facts they never read).",
    )


def build_world(out: Path, world_seed: int, recipe: Recipe) -> None:
    """The world ``world_seed`` (its knowledge base, labelers and prompts) at the recipe's scale. World 0 is the
    one the shipped base models were pretrained on; another seed is a world whose facts they never read."""
    build(out, seed=world_seed, scale=recipe.scale, eval_prompts=recipe.world_eval_prompts)


def world_seed_of(world: Path) -> int:
    """The seed a built world folder was made from (its ``world.json``)."""
    return int(json.loads((world / "world.json").read_text())["seed"])


def run_sft_stage(out: Path, base: str, world: Path, recipe: Recipe, seed: int, data: str | None = None) -> None:
    """The ``sft-tiny`` preset with ``recipe.sft`` on top, from ``base`` on the world's demonstrations (or
    ``data``), mixing in the world's pretraining text."""
    cfg = SFTConfig.from_dict(
        {
            **load_yaml("sft-tiny"),
            "model": base,
            "data": data or str(world / "sft.jsonl"),
            "output_dir": str(out),
            "pretrain_data": str(world / "pretrain.jsonl"),
            "seed": seed,
            "resume": (out / "checkpoints").exists(),
            **recipe.sft.as_dict(),
        }
    )
    run_sft(cfg)


@torch.no_grad()
def sample_texts(
    model,
    tokenizer,
    prompts: list,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    batch_size: int = 256,
    by_length: bool = True,
    compact_at: float = COMPACT_AT,
    top_k: int | None = None,
) -> list[str]:
    """One response per prompt (temperature 1 by default), in the prompts' order, drawn with the PPO rollout's
    KV-cached sampler (:func:`instructrl.ppo.rollout.sample_responses`): prompts of similar length batched together
    (``by_length``), and finished rows leaving the batch (``compact_at``). About 3-5x faster than transformers'
    ``generate`` for the rankings on a 2-core CPU (``benchmarks/demo``). It samples from the whole distribution, as
    PPO's rollouts do, or with ``top_k`` from each step's ``top_k`` likeliest tokens (as ``generate`` with that
    ``top_k``)."""
    model.eval()
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i])) if by_length else list(range(len(encoded)))
    texts = [""] * len(encoded)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = left_pad([encoded[i] for i in idx], pad)  # (b, P)
        resp, rmask, _ = sample_responses(
            model,
            ids.to(device),
            mask.to(device),
            max_new_tokens=max_new_tokens,
            eos_id=eos,
            pad_id=pad,
            temperature=temperature,
            compact_at=compact_at,
            top_k=top_k,
        )
        for i, row, keep in zip(idx, resp.tolist(), rmask.tolist()):
            texts[i] = tokenizer.decode([t for t, k in zip(row, keep) if k and t != eos], skip_special_tokens=True)
    return texts


def collect_rankings(
    policy: str | Sequence[str],
    records: list[dict],
    labelers: list,
    reference,
    k_range: tuple[int, int],
    seed: int,
    max_new_tokens: int,
    group: str,
    top_k: int | None = None,
) -> list[dict]:
    """Sample K responses per prompt (temperature 1; from the ``top_k`` likeliest tokens when given) and have
    labelers rank them (InstructGPT §3.2: rankings of K = 4..9 outputs of the models being trained). With
    several policies, a prompt's K samples are shared out among them in turn (sample j from policy j mod n):
    comparisons between, say, the SFT policy and a PPO policy trained against the previous reward model, as in
    the paper's later rounds of data collection. Each row's ``sources`` gives the index of the policy behind
    each sample."""
    policies = [policy] if isinstance(policy, (str, Path)) else list(policy)
    rng = random.Random(f"rank:{seed}:{group}")
    ks = [rng.randint(*k_range) for _ in records]
    texts: list[list[str | None]] = [[None] * k for k in ks]
    for j, (path, slots) in enumerate(zip(policies, share_slots(ks, len(policies)))):
        torch.manual_seed(seed + j)
        tok = load_tokenizer(str(path))
        model = load_causal_lm(str(path), tok, init_from_config=False)
        prompts = [records[i]["prompt"] for i, _ in slots]
        flat = sample_texts(model, tok, prompts, max_new_tokens=max_new_tokens, top_k=top_k)
        for (i, s), text in zip(slots, flat):
            texts[i][s] = text
        del model
    rows = []
    for rec, k, completions in zip(records, ks, texts):
        lab = labelers[len(rows) % len(labelers)]
        row = {
            "prompt": rec["prompt"],
            "completions": completions,
            "ranks": lab.rank(rec, completions),
            "reference_ranks": reference.rank(rec, completions),
            "labeler": lab.id,
            "labeler_group": group,
            "category": rec.get("category"),
            "task": rec.get("task"),
        }
        if len(policies) > 1:
            row["sources"] = [s % len(policies) for s in range(k)]
        rows.append(row)
    return rows


def by_reference(rows: list[dict]) -> list[dict]:
    """The same samples, ranked by the noiseless judge."""
    return [{**r, "ranks": r["reference_ranks"], "labeler": "reference"} for r in rows]


def run_rankings_stage(out: Path, policy: str, world: Path, recipe: Recipe, seed: int) -> None:
    """Training rankings (by the training labelers, or by the noiseless judge with ``rank_labels="reference"``);
    held-out comparisons on separate prompts, ranked by training labelers and by held-out labelers (for the RM's
    per-group accuracy, §3.5).

    With ``rank_scale`` the training prompts come from a larger build of the same world (``out/world``), minus
    every prompt whose text is one of the held-out comparisons' or one the evaluation scores (win rates,
    truthfulness, toxicity); the held-out comparisons are then the first ``rank_eval_prompts`` of the world's
    own RM prompts. The labelers and the larger build are the world folder's own (its seed); ``seed`` draws the
    samples, the K of each prompt and which labeler ranks it."""
    world_seed = world_seed_of(world)
    pool = make_pool(world_seed)
    prompts = [r.data for r in read_records(world / "rm_prompts.jsonl", what="prompt data")]
    if recipe.rank_scale is None:
        train = prompts[: recipe.rank_prompts]
        held = prompts[recipe.rank_prompts : recipe.rank_prompts + recipe.rank_eval_prompts]
        if len(held) < recipe.rank_eval_prompts:  # a world built at another scale than the recipe's
            raise ConfigError(
                f"{world / 'rm_prompts.jsonl'} holds {len(prompts)} RM prompts, fewer than rank_prompts "
                f"{recipe.rank_prompts} + rank_eval_prompts {recipe.rank_eval_prompts}"
            )
    else:
        held = prompts[: recipe.rank_eval_prompts]
        big = out / "world"
        build(big, seed=world_seed, scale=recipe.rank_scale, pretrain_docs=1000)
        # every prompt an evaluation scores, so the RM never learns on them: the win-rate prompts, the
        # TruthfulQA analogue's questions and the toxicity prompts (the world's templates repeat across builds)
        scored = [
            r.data
            for name in ("eval_prompts.jsonl", "truthfulqa.jsonl", "toxicity_prompts.jsonl")
            for r in read_records(world / name, what="prompt data")
        ]
        leave_out = {p["prompt"] for p in held + scored}
        pool_prompts = read_records(big / "rm_prompts.jsonl", what="prompt data")
        train = [r.data for r in pool_prompts if r.data["prompt"] not in leave_out][: recipe.rank_prompts]
        if len(train) < recipe.rank_prompts:
            raise ConfigError(
                f"rank_scale {recipe.rank_scale} gives {len(train)} prompts to rank, fewer than rank_prompts "
                f"{recipe.rank_prompts}: raise rank_scale"
            )
    kw = dict(
        reference=pool.reference,
        k_range=recipe.k,
        seed=seed,
        max_new_tokens=recipe.max_new_tokens,
        top_k=recipe.rank_top_k,
    )
    rows = collect_rankings(policy, train, pool.training, group="training", **kw)
    write_jsonl(out / "rankings.jsonl", by_reference(rows) if recipe.rank_labels == "reference" else rows)
    half = len(held) // 2
    evals = collect_rankings(policy, held[:half], pool.training, group="training", **kw)
    evals += collect_rankings(policy, held[half:], pool.heldout, group="heldout", **kw)
    write_jsonl(out / "rankings_eval.jsonl", evals)


def run_rm_stage(out: Path, sft: str, rankings: Path, world: Path, recipe: Recipe, seed: int) -> None:
    """The ``rm-tiny`` preset with ``recipe.rm`` on top, from ``sft`` on the rankings in ``rankings``."""
    cfg = RMConfig.from_dict(
        {
            **load_yaml("rm-tiny"),
            "model": sft,
            "data": str(rankings / "rankings.jsonl"),
            "eval_data": str(rankings / "rankings_eval.jsonl"),
            "output_dir": str(out),
            "demonstrations": str(world / "sft.jsonl"),
            "seed": seed,
            "resume": (out / "checkpoints").exists(),
            **recipe.rm.as_dict(),
        }
    )
    run_rm(cfg)


def run_ppo_stage(
    out: Path,
    sft: str,
    rm: str,
    world: Path,
    recipe: Recipe,
    seed: int,
    ptx: bool,
    reward_fn=None,
    overrides: Mapping[str, Any] | None = None,
    snapshots: Sequence[int] = (),
) -> None:
    """PPO (``ptx=False``) or PPO-ptx: the ``ppo-tiny`` preset with ``recipe.ppo`` on top, from ``sft`` against
    the RM directory ``rm``; with ``reward_fn`` (a module scoring right-padded rows, e.g.
    :class:`instructrl.world.reward.JudgeReward`) against that instead, the value model still starting from ``rm``.

    ``overrides`` (PPOConfig fields, e.g. a critic-free ``advantage``) apply last. ``snapshots``: iterations after
    which the policy that would be the output (the EMA, or the policy itself) is saved to ``out/snapshots/it_N``,
    the points of an over-optimization curve."""
    ppo = recipe.ppo.merged(overrides or {}, "stage overrides").as_dict()
    value_keys = {"value_model": rm} if reward_fn is not None and ppo.get("advantage", "gae") == "gae" else {}
    rm_keys = {"reward_model": rm} if reward_fn is None else {"reward_model": None, **value_keys}
    ptx_keys = {"ptx_data": str(world / "pretrain.jsonl")} if ptx else {}
    values = {
        **load_yaml("ppo-tiny"),
        "policy": sft,
        **rm_keys,
        "prompts": str(world / "ppo_prompts.jsonl"),
        "output_dir": str(out),
        "seed": seed,
        "response_length": recipe.max_new_tokens,
        "resume": (out / "checkpoints").exists(),
        **ptx_keys,
        **ppo,
    }
    trainer = build_trainer(PPOConfig.from_dict(values), reward_model=reward_fn)
    wanted = set(snapshots)

    def save_snapshot(done: int, metrics: dict[str, float]) -> None:
        if done in wanted and trainer.acc.is_main_process:
            policy = trainer.ema if trainer.ema is not None else trainer.raw_policy
            save_pretrained_atomic(policy, trainer.tokenizer, out / "snapshots" / f"it_{done}")

    trainer.train(callbacks=[save_snapshot])


def run_eval_stage(
    out: Path,
    models: list[str],
    baseline: str,
    world: Path,
    recipe: Recipe,
    seed: int,
    suites: list[str] | None = None,
    head_to_head: Sequence[str] = (),
) -> dict:
    cfg = EvalConfig(
        models=models,
        baseline=baseline,
        head_to_head=list(head_to_head),
        world_dir=str(world),
        output_dir=str(out),
        seed=seed,
        num_prompts=recipe.eval_prompts,
        benchmark_n=recipe.benchmark_n,
        max_new_tokens=recipe.max_new_tokens,
        suites=list(suites or SUITES),
    )
    return run_eval(cfg)
