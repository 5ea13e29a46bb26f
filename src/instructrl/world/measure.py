"""Measured properties of a model in the world: benchmarks and instruction-following success.

Instruction success is the reference judge's ``success`` criterion on held-out-user prompts, with
the prompt given zero-shot (chat template) or few-shot (three demonstrations as earlier turns of the
conversation: the "GPT prompted" baseline of InstructGPT §4).
"""

from __future__ import annotations

import random
from collections import defaultdict

from instructrl.world.benchmarks import run_benchmarks
from instructrl.world.judge import score
from instructrl.world.kb import get_kb
from instructrl.world.tasks import Style, demonstrate, make_prompt
from instructrl.world.tokenizer import load_world_policy


def eval_records(seed: int, n: int, sample_seed: int = 0) -> list[dict]:
    kb = get_kb(seed)
    rng = random.Random(f"measure:{seed}:{sample_seed}")
    return [make_prompt(kb, rng) for _ in range(n)]


def few_shot_messages(seed: int, prompt: str, shots: int = 3, sample_seed: int = 0) -> list[dict]:
    """``shots`` demonstrations as earlier conversation turns, then the prompt."""
    kb = get_kb(seed)
    rng = random.Random(f"shots:{seed}:{sample_seed}:{prompt}")
    messages = []
    for _ in range(shots):
        rec = make_prompt(kb, rng)
        messages += [
            {"role": "user", "content": rec["prompt"]},
            {"role": "assistant", "content": demonstrate(kb, rec, Style(), rng)},
        ]
    return messages + [{"role": "user", "content": prompt}]


def instruction_success(
    model, tokenizer, records: list[dict], few_shot: bool = False, seed: int = 0, temperature: float = 0.0
) -> dict:
    """Share of responses the reference judge counts as a success, overall and per category."""
    from instructrl.world.sampling import generate  # torch, transformers: only where a model runs (__init__.py)

    texts = []
    for rec in records:
        msgs = (
            few_shot_messages(rec["task"].get("world", 0), rec["prompt"], sample_seed=seed)
            if few_shot
            else [{"role": "user", "content": rec["prompt"]}]
        )
        texts.append(tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
    responses = generate(model, tokenizer, texts, max_new_tokens=48, temperature=temperature, seed=seed)
    per: dict[str, list[float]] = defaultdict(list)
    crit = defaultdict(list)
    for rec, resp in zip(records, responses):
        c = score(rec, resp)
        per[rec["category"]].append(float(c["success"]))
        for k in ("success", "follows", "correct", "hallucination", "harmless"):
            crit[k].append(float(c[k]))
    out = {k: sum(v) / len(v) for k, v in crit.items()}
    out["by_category"] = {k: round(sum(v) / len(v), 3) for k, v in sorted(per.items())}
    out["examples"] = [{"prompt": r["prompt"], "response": s} for r, s in list(zip(records, responses))[:5]]
    return out


def measure_model(model_name: str, n: int = 100, seed: int = 0, world: int = 0) -> dict:
    """Benchmarks and zero-/few-shot instruction success of a model (a directory or a size name)."""
    tok, model = load_world_policy(model_name)
    records = eval_records(world, n, seed)
    return {
        "model": model_name,
        "benchmarks": run_benchmarks(model, tok, get_kb(world), n=n, seed=seed),
        "zero_shot": instruction_success(model, tok, records, few_shot=False, seed=seed),
        "few_shot": instruction_success(model, tok, records, few_shot=True, seed=seed),
    }
