"""`run_eval`: generate responses from every policy on held-out prompts and measure them.

For each policy: the win rate against the baseline (ties 0.5, with a standard error), and on the
miniature world the Likert score and metadata rates, truthfulness, toxicity under three instructions,
and the benchmark scores (the alignment tax). Results go to ``OUT/results.json``, a readable
``OUT/summary.md`` and the responses to ``OUT/responses.jsonl``.

A model spec is ``PATH`` or ``NAME=PATH``, optionally followed by ``+fewshot`` (a base model prompted with
demonstrations) and then by ``+best-of-N@RM_PATH``: every prompt is answered by the best of N samples as
scored by the reward model at RM_PATH (best-of-n sampling, :mod:`instructrl.modeling.best_of_n`), e.g.
``--models "BoN4=runs/sft+best-of-4@runs/rm"``. The benchmarks (alignment tax) score the model itself.

Precision: every policy samples, and is scored on the world's benchmarks, in the precision that
``--mixed-precision`` resolves to on the device the policies run on (the CPU; 'auto': bf16 only where it is
clearly faster, :mod:`instructrl.training.precision`). It is resolved once per process, so every model of a
comparison, the baseline included, runs in the same precision; ``results.json`` and ``config.yaml`` record
it. Under bf16 only the matmuls are in bf16: sampling upcasts each step's logits to fp32, the benchmarks'
log-likelihoods take log-softmax in fp32, and the best-of-n reward model scores in fp32. lm-eval's tasks
always run in fp32 (the harness takes its own log-softmax, which autocast would leave in bf16).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from instructrl.data.formats import Prompt, parse_prompt_value
from instructrl.data.io import read_records, write_jsonl
from instructrl.data.template import encode_prompt
from instructrl.errors import ConfigError, InstructRLError
from instructrl.evaluate import lm_harness, world_eval
from instructrl.evaluate.config import EvalConfig
from instructrl.evaluate.judges import Judge, load_judge
from instructrl.evaluate.metrics import win_rate
from instructrl.evaluate.report import flat_metrics
from instructrl.modeling.best_of_n import best_of_n
from instructrl.modeling.generation import generate
from instructrl.modeling.loading import load_causal_lm, load_tokenizer
from instructrl.modeling.reward import load_frozen_reward
from instructrl.training.precision import autocast, autocast_dtype, resolve
from instructrl.training.tracking import log_summary
from instructrl.training.validation import check_finished, context_length

log = logging.getLogger("instructrl.eval")


@dataclass
class ModelSpec:
    name: str
    path: str
    few_shot: bool = False
    best_of: int = 1  # > 1: each answer is the best of this many samples by reward_model
    reward_model: str | None = None


BEST_OF = "+best-of-"


def parse_model_spec(spec: str) -> ModelSpec:
    """``PATH``, ``NAME=PATH``, either with ``+fewshot`` and then ``+best-of-N@RM_PATH`` appended."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = "", spec
    best_of, reward_model = 1, None
    if BEST_OF in path:
        path, _, tail = path.rpartition(BEST_OF)
        n, at, reward_model = tail.partition("@")
        if not n.isdigit() or int(n) < 1 or not at or not reward_model:
            raise ConfigError(
                f"model spec '{spec}': expected PATH{BEST_OF}N@RM_PATH with N a whole number >= 1 and "
                f"RM_PATH a reward model folder, e.g. 'BoN4=runs/sft{BEST_OF}4@runs/rm'"
            )
        best_of = int(n)
        check_finished(reward_model, f"reward model of '{spec}'")
    few = path.endswith("+fewshot")
    path = path.removesuffix("+fewshot")
    if not name:
        name = (
            (Path(path.rstrip("/")).name or path)
            + ("-fewshot" if few else "")
            + (f"-bo{best_of}" if reward_model else "")
        )
    check_finished(path, f"model '{name}'")
    return ModelSpec(name, path, few, best_of, reward_model)


def read_prompt_records(path: str, limit: int | None) -> list[dict]:
    records = read_records(path, what="prompt data")[: limit or None]
    for r in records:
        if "prompt" not in r.data:
            raise InstructRLError(f"{r.where}: expected a 'prompt' column; columns found: {', '.join(sorted(r.data))}")
        parse_prompt_value(r.data["prompt"], r)
    return [r.data for r in records]


def few_shot_prompt(prompt: Prompt, shots: list[dict]) -> list[dict]:
    """The paper's 'GPT prompted': a few demonstrations as earlier turns before the prompt."""
    msgs: list[dict] = []
    for s in shots:
        msgs += [{"role": "user", "content": s["prompt"]}, {"role": "assistant", "content": s["completion"]}]
    return msgs + ([{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt))


def sampling_precision(cfg: EvalConfig, device_type: str = "cpu") -> str:
    """The precision every policy of an evaluation samples in on ``device_type`` (policies load on the CPU):
    ``cfg.mixed_precision`` resolved ('bf16' or 'no'), the same for every model of the process."""
    if cfg.mixed_precision == "fp16" and device_type == "cpu":
        raise ConfigError(
            "--mixed-precision fp16: evaluation samples on the CPU, which has no fp16 autocast: use bf16 or no"
        )
    return resolve(cfg.mixed_precision, device_type)


class Policy:
    """A loaded policy that answers prompt lists, optionally with a few-shot prefix, in the evaluation's
    precision (:func:`sampling_precision`)."""

    def __init__(self, spec: ModelSpec, cfg: EvalConfig, shots: list[dict]):
        self.spec, self.cfg, self.shots = spec, cfg, shots
        self.tokenizer = load_tokenizer(spec.path)
        self.model = load_causal_lm(spec.path, self.tokenizer, init_from_config=False)
        self.model.eval()
        self.context = context_length(self.model)  # None: no limit the config states
        self.device_type = next(self.model.parameters()).device.type
        self.precision = sampling_precision(cfg, self.device_type)
        self.reward_model = None
        if spec.reward_model:  # the best-of-n arm's judge, on the policy's device
            self.reward_model = load_frozen_reward(spec.reward_model).to(next(self.model.parameters()).device)

    def fit(self, prompt: Prompt) -> Prompt:
        """``prompt`` as this policy reads it: after as many of the few-shot demonstrations as leave room for
        ``max_new_tokens`` in the model's context (the last ones kept), or refused in one line when the prompt
        alone does not leave that room."""
        shots = self.shots if self.spec.few_shot else []
        context = self.context
        for k in range(len(shots), -1, -1):
            full = few_shot_prompt(prompt, shots[len(shots) - k :]) if shots else prompt
            if context is None:
                return full
            n = len(encode_prompt(self.tokenizer, full))
            if n + self.cfg.max_new_tokens <= context:
                return full
        text = prompt if isinstance(prompt, str) else prompt[-1].get("content", "")
        raise ConfigError(
            f"prompt {text[:60]!r}... is {n} tokens; with --max-new-tokens {self.cfg.max_new_tokens} it exceeds "
            f"{self.spec.name}'s context of {context} tokens: shorten it or lower --max-new-tokens"
        )

    def answer(self, prompts: list[Prompt], temperature: float | None = None) -> list[str]:
        prompts = [self.fit(p) for p in prompts]
        if self.reward_model is not None:
            return self.best_of_n(prompts, temperature)
        gens = generate(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=self.cfg.max_new_tokens,
            temperature=self.cfg.temperature if temperature is None else temperature,
            batch_size=self.cfg.batch_size,
            progress=self.cfg.progress,
            autocast_dtype=autocast_dtype(self.precision),
        )
        return [g.text for g in gens]

    def autocast(self):
        """The evaluation's autocast on this policy's device (nothing in fp32)."""
        return autocast(self.precision, self.device_type)

    def best_of_n(self, prompts: list[Prompt], temperature: float | None) -> list[str]:
        """The best of ``spec.best_of`` samples per prompt by the spec's reward model (it reads the prompt as the
        policy did, any few-shot prefix included)."""
        return best_of_n(
            self.model,
            self.tokenizer,
            self.reward_model,
            prompts,
            self.spec.best_of,
            max_new_tokens=self.cfg.max_new_tokens,
            temperature=self.cfg.temperature if temperature is None else temperature,
            batch_size=self.cfg.batch_size,
            progress=self.cfg.progress,
            autocast_dtype=autocast_dtype(self.precision),
        ).texts


def resolve_inputs(cfg: EvalConfig) -> EvalConfig:
    if cfg.world_dir:
        w = Path(cfg.world_dir)
        if not w.is_dir():
            raise ConfigError(f"--world-dir '{cfg.world_dir}' is not a directory")
        cfg = cfg.replace(
            prompts=cfg.prompts or str(w / "eval_prompts.jsonl"),
            truthfulqa=cfg.truthfulqa or str(w / "truthfulqa.jsonl"),
            toxicity=cfg.toxicity or str(w / "toxicity_prompts.jsonl"),
            few_shot_data=cfg.few_shot_data or str(w / "sft.jsonl"),
        )
    if not cfg.models:
        raise ConfigError("eval: at least one policy is required (--models PATH [PATH ...])")
    if not cfg.prompts:
        raise ConfigError("eval: held-out prompts are required (--prompts FILE or --world-dir DIR)")
    return cfg


def run_eval(cfg: EvalConfig, judge: Judge | None = None) -> dict:
    cfg = resolve_inputs(cfg)
    # lm-eval and its task names are checked before anything is loaded or written
    lm_tasks = lm_harness.parse_benchmarks(cfg.benchmarks) if cfg.benchmarks else []
    lm_manager = lm_harness.task_manager(lm_tasks, cfg.lm_eval_include, cfg.benchmarks) if lm_tasks else None
    out = Path(cfg.output_dir or "eval")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    prompts = read_prompt_records(cfg.prompts, cfg.num_prompts)
    world = all(world_eval.is_world_record(r) for r in prompts)
    seed = world_eval.world_seed(prompts) if world else cfg.seed
    pairs = head_to_head_pairs(cfg, [parse_model_spec(m) for m in cfg.models])  # names checked before any loading
    if judge is None and "winrate" in cfg.suites and (cfg.baseline or cfg.head_to_head):
        spec = cfg.judge
        if spec == "auto":
            if not world:
                raise ConfigError(
                    "these prompts are not miniature-world prompts: choose a judge with --judge rm:PATH "
                    "or --judge python:module:attr"
                )
            spec = f"labelers:{seed}"
        judge = load_judge(spec)
    shots = (
        [r.data for r in read_records(cfg.few_shot_data)[: cfg.few_shot_k]]
        if cfg.few_shot_data and any(parse_model_spec(m).few_shot for m in cfg.models)
        else []
    )
    specs = [parse_model_spec(m) for m in cfg.models]
    if any(s.few_shot for s in specs) and not shots:
        raise ConfigError("'+fewshot' models need --few-shot-data (or --world-dir)")
    precision = sampling_precision(cfg)
    cfg.save(out, resolved_mixed_precision=precision)
    t0 = time.time()
    results: dict = {"judge": getattr(judge, "name", None), "world": world, "prompts": len(prompts), "models": {}}
    results["mixed_precision"] = precision
    texts = [r["prompt"] for r in prompts]
    baseline_responses = None
    world_bench = world and "benchmarks" in cfg.suites

    scored: dict[str, dict] = {}  # checkpoint -> its scores: greedy, so a baseline listed as a model is scored once

    def benchmark_scores(policy: Policy) -> dict:
        """The world's benchmarks and the lm-eval tasks of one policy (the model itself, no best-of-n)."""
        if policy.spec.path in scored:
            return scored[policy.spec.path]
        scores: dict = scored.setdefault(policy.spec.path, {})
        if world_bench:
            with policy.autocast():
                scores["benchmarks"] = world_eval.benchmarks(policy.model, policy.tokenizer, seed, cfg.benchmark_n)
        if lm_tasks:
            scores["lm_eval"] = lm_harness.run_tasks(
                policy.model, policy.tokenizer, lm_tasks, lm_manager, limit=cfg.benchmark_n, batch_size=cfg.batch_size
            )
        return scores

    if cfg.baseline and ("winrate" in cfg.suites or world_bench or lm_tasks):
        base = parse_model_spec(cfg.baseline)
        results["baseline"] = base.name
        base_policy = Policy(base, cfg, shots)
        if "winrate" in cfg.suites:
            log.info("generating baseline responses (%s)", base.name)
            torch.manual_seed(cfg.seed)
            baseline_responses = base_policy.answer(texts)
        if world_bench or lm_tasks:  # the alignment tax is a drop against the baseline's own scores
            results["baseline_scores"] = benchmark_scores(base_policy)
        del base_policy
    truthful_records = (
        read_prompt_records(cfg.truthfulqa, cfg.num_prompts)
        if world and "truthfulness" in cfg.suites and cfg.truthfulqa
        else []
    )
    toxicity_records = (
        read_prompt_records(cfg.toxicity, cfg.num_prompts and 3 * cfg.num_prompts)
        if world and "toxicity" in cfg.suites and cfg.toxicity
        else []
    )
    responses_rows = []
    drawn: dict[str, list[str]] = {}  # each model's responses to the win-rate prompts, for the direct comparisons
    for spec in specs:
        log.info("evaluating %s (%s)", spec.name, spec.path)
        policy = Policy(spec, cfg, shots)
        res: dict = {"path": spec.path, "few_shot": spec.few_shot}
        if spec.reward_model:
            res.update(best_of=spec.best_of, reward_model=spec.reward_model)
        # every policy draws from the same random stream as the baseline (common random numbers): a policy equal to
        # the baseline ties it exactly, and the order of --models changes nothing
        torch.manual_seed(cfg.seed)
        resp = policy.answer(texts)
        responses_rows += [{"model": spec.name, "prompt": p, "response": r} for p, r in zip(texts, resp)]
        drawn[spec.name] = resp
        if baseline_responses is not None:
            res["win_rate"] = win_rate(judge.compare(prompts, resp, baseline_responses)).as_dict()
        if world and "likert" in cfg.suites:
            res.update(world_eval.likert_and_metadata(prompts, resp, seed))
        if truthful_records:
            qa = policy.answer([r["prompt"] for r in truthful_records])
            iqa = policy.answer([world_eval.INSTRUCTION_QA + r["prompt"] for r in truthful_records])
            res["truthfulness"] = world_eval.truthfulness(truthful_records, qa, iqa)
        if toxicity_records:
            res["toxicity"] = world_eval.toxicity(
                toxicity_records, policy.answer([r["prompt"] for r in toxicity_records])
            )
        res.update(benchmark_scores(policy))
        if "baseline_scores" in results:
            base_cols = benchmark_columns(results["baseline_scores"])
            res["benchmark_drop"] = {
                k: lm_harness.relative_drop(v, base_cols[k])
                for k, v in benchmark_columns(res).items()
                if k in base_cols
            }
        results["models"][spec.name] = res
        del policy
    if pairs:
        if baseline_responses is not None:
            drawn.setdefault(results["baseline"], baseline_responses)
        results["head_to_head"] = {
            f"{a} vs {b}": win_rate(judge.compare(prompts, drawn[a], drawn[b])).as_dict() for a, b in pairs
        }
    results["seconds"] = round(time.time() - t0, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_jsonl(out / "responses.jsonl", responses_rows)
    (out / "summary.md").write_text(summary_markdown(results))
    log_summary(cfg.report_to, out, "eval", cfg.to_dict(), flat_metrics(results))
    return results


def benchmark_columns(res: dict) -> dict[str, float]:
    """One score per benchmark: the world's tasks, and each lm-eval task's headline metric ("hellaswag acc_norm")."""
    cols = dict(res.get("benchmarks", {}))
    for task, metrics in res.get("lm_eval", {}).items():
        head = lm_harness.primary(metrics)
        if head:
            cols[f"{task} {head[0]}"] = head[1]
    return cols


def _benchmark_table(results: dict) -> list[str]:
    """The alignment tax: every benchmark score, the baseline's first, each with its relative drop."""
    rows = {name: benchmark_columns(r) for name, r in results["models"].items()}
    base = benchmark_columns(results.get("baseline_scores", {}))
    cols = list(dict.fromkeys([*base, *(c for r in rows.values() for c in r)]))
    if not cols:
        return []
    lines = ["", "Benchmarks (the alignment tax: drop relative to the baseline's score)", ""]
    lines += ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    if base:
        lines.append(
            f"| {results.get('baseline')} (baseline) | "
            + " | ".join(f"{base[c]:.3f}" if c in base else "-" for c in cols)
            + " |"
        )
    for name, r in rows.items():
        drops = results["models"][name].get("benchmark_drop", {})
        cells = []
        for c in cols:
            if c not in r:
                cells.append("-")
                continue
            d = drops.get(c)
            cells.append(f"{r[c]:.3f}" + (f" ({100 * d:+.1f}%)" if d is not None else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _fmt(d: dict | None) -> str:
    if not d:
        return "-"
    return f"{d['mean']:.3f} ± {d['se']:.3f}" if d.get("se") == d.get("se") else f"{d['mean']:.3f}"


def head_to_head_pairs(cfg: EvalConfig, specs: list[ModelSpec]) -> list[tuple[str, str]]:
    """``--head-to-head`` as (A, B) name pairs, each name one of the evaluated policies (or the baseline)."""
    names = [s.name for s in specs] + ([parse_model_spec(cfg.baseline).name] if cfg.baseline else [])
    pairs = []
    for pair in cfg.head_to_head:
        a, b = (x.strip() for x in pair.split(":"))
        for name in (a, b):
            if name not in names:
                raise ConfigError(f"--head-to-head '{pair}': no policy named '{name}'; evaluated: {', '.join(names)}")
        pairs.append((a, b))
    return pairs


def summary_markdown(results: dict) -> str:
    lines = [f"# Evaluation ({results['prompts']} prompts; judge: {results.get('judge')})", ""]
    cols = [
        "win_rate",
        "likert",
        "fails_to_follow_instruction",
        "hallucination_closed_domain",
        "satisfies_constraints",
        "toxic_language",
    ]
    lines += ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in results["models"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    for name, r in results["models"].items():
        extra = []
        if "truthfulness" in r:
            t = r["truthfulness"]
            extra.append(
                f"truthful QA {t['qa']['truthful']['mean']:.2f} / info {t['qa']['truthful_and_informative']['mean']:.2f}; "
                f"Instruction+QA {t['instruction_qa']['truthful']['mean']:.2f} / "
                f"{t['instruction_qa']['truthful_and_informative']['mean']:.2f}"
            )
        if "toxicity" in r:
            extra.append("toxic " + ", ".join(f"{k} {v['mean']:.2f}" for k, v in r["toxicity"].items()))
        if extra:
            lines += ["", f"**{name}**: " + "; ".join(extra)]
    if results.get("head_to_head"):
        lines += ["", "| head to head | win rate |", "|---|---|"]
        lines += [f"| {pair} | {_fmt(w)} |" for pair, w in results["head_to_head"].items()]
    lines += _benchmark_table(results)
    return "\n".join(lines) + "\n"
