"""Python API of expert iteration: ``run_expert_iteration(ExpertConfig(...))``.

Each round k = 1..R, starting from ``cfg.policy`` and then from round k-1's model:

1. **sample**: ``num_samples`` responses per prompt from the current policy (:func:`~instructrl.modeling.best_of_n.
   best_of_n`), each scored by the frozen reward model;
2. **select**: each prompt's best response (an empty one cannot be a demonstration and is never chosen), then only
   prompts whose best reaches ``min_score`` and, of those, the top ``keep_fraction`` by that score;
3. **fine-tune**: the current policy on the kept (prompt, best response) pairs with the SFT stage
   (:func:`~instructrl.sft.api.run_sft`, SFT's loss on response tokens, its optional pretraining mix).

Outputs in ``output_dir``::

    round_1/            samples.jsonl (every prompt: its n responses, their scores, the chosen one, kept or not),
                        kept.jsonl (the round's demonstrations), and the round's SFT run (model, metrics, .complete)
    round_2/ ...
    metrics.jsonl       one row per finished round: expert/score_mean_all, expert/score_mean_kept, ...
    config.yaml         the resolved ExpertConfig
    the final model     round_R's weights and tokenizer, loadable by plain transformers; .complete written last

A killed run continues with ``--resume``: finished rounds (their ``.complete``) are skipped, an unfinished
round reuses its cached ``samples.jsonl`` and resumes its SFT run from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from instructrl.data.formats import load_prompts
from instructrl.data.io import write_jsonl
from instructrl.errors import ConfigError, InstructRLError
from instructrl.expert.config import ExpertConfig
from instructrl.modeling.best_of_n import best_of_n, best_of_n_kl
from instructrl.modeling.loading import check_model_source, load_causal_lm, load_tokenizer
from instructrl.modeling.reward import load_frozen_reward
from instructrl.sft.api import run_sft
from instructrl.sft.config import SFTConfig
from instructrl.training.accelerator import resolve_mixed_precision
from instructrl.training.precision import autocast_dtype
from instructrl.training.validation import COMPLETE, check_context, check_finished, mark_complete, mark_unfinished

log = logging.getLogger("instructrl.expert")

SAMPLES, KEPT = "samples.jsonl", "kept.jsonl"
# files of an SFT run folder that are the run's, not the model's: not copied to the final model
RUN_FILES = {"config.yaml", "metrics.jsonl", "data_report.json", "selection.json", "dist_sync.json", COMPLETE}
RUN_FILES |= {SAMPLES, KEPT, "config_changes.jsonl"}


@dataclass
class ExpertResult:
    out_dir: Path  # the final model (round R's) with config.yaml, metrics.jsonl and .complete
    rounds: list[dict]  # the metrics row of each round, as in metrics.jsonl


def round_dir(out: Path, k: int) -> Path:
    return out / f"round_{k}"


def select(scores: list[list[float]], texts: list[list[str]], min_score: float | None, keep_fraction: float):
    """Per prompt the index of its best non-empty response (None when all are empty) and whether it is kept.

    (P, n) scores and texts -> (best, kept): kept are the prompts with a best whose score is >= ``min_score`` and,
    among those, the ceil(keep_fraction * count) with the highest best score (ties by prompt order)."""
    s = torch.tensor(scores, dtype=torch.float64)  # (P, n)
    empty = torch.tensor([[not t.strip() for t in row] for row in texts])  # (P, n)
    masked = torch.where(empty, torch.full_like(s, -math.inf), s)  # an empty response is never chosen
    best = masked.argmax(dim=1)  # (P,) first maximum
    best_score = masked.gather(1, best[:, None])[:, 0]  # (P,)
    eligible = torch.isfinite(best_score)
    if min_score is not None:
        eligible &= best_score >= min_score
    idx = torch.nonzero(eligible)[:, 0]
    n_keep = math.ceil(keep_fraction * len(idx))
    top = idx[torch.argsort(-best_score[idx], stable=True)[:n_keep]]
    kept = torch.zeros(len(scores), dtype=torch.bool)
    kept[top] = True
    return [int(b) if torch.isfinite(best_score[i]) else None for i, b in enumerate(best.tolist())], kept.tolist()


def round_prompts(prompts: list, cfg: ExpertConfig, k: int) -> list:
    """The prompts of round ``k``: all, or a seeded draw of ``prompts_per_round`` without replacement."""
    if not cfg.prompts_per_round or cfg.prompts_per_round >= len(prompts):
        return prompts
    order = np.random.default_rng([cfg.seed, k]).permutation(len(prompts))[: cfg.prompts_per_round]
    return [prompts[i] for i in sorted(order.tolist())]


def sample_round(cfg: ExpertConfig, k: int, policy_path: str, reward_model, prompts: list, path: Path) -> None:
    """Steps 1-2 of round ``k``: sample, score and select; ``samples.jsonl`` and ``kept.jsonl`` written atomically."""
    device = torch.device("cuda" if torch.cuda.is_available() and not cfg.cpu else "cpu")
    tokenizer = load_tokenizer(policy_path)
    model = load_causal_lm(policy_path, tokenizer, init_from_config=False).to(device)
    check_context(cfg, model)  # --max-length and --max-new-tokens against the model's positions
    torch.manual_seed(cfg.seed * 1000 + k)  # the same draws when an unfinished round is sampled again
    reward_model.to(device)
    result = best_of_n(
        model,
        tokenizer,
        reward_model,
        prompts,
        cfg.num_samples,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        batch_size=cfg.generation_batch_size,
        progress=cfg.progress,
        autocast_dtype=autocast_dtype(resolve_mixed_precision(cfg)),  # sampling as the rounds' SFT computes
    )
    reward_model.to("cpu")  # out of the way of the fine-tuning
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    texts = [[g.text for g in row] for row in result.samples]
    scores = result.scores.tolist()
    best, kept = select(scores, texts, cfg.min_score, cfg.keep_fraction)
    rows = [
        {"prompt": p, "responses": t, "scores": s, "best": b, "kept": keep}
        for p, t, s, b, keep in zip(prompts, texts, scores, best, kept)
    ]
    if not any(kept):
        raise InstructRLError(
            f"expert iteration round {k}: no prompt kept (every best response was empty"
            + (f" or scored below min_score={cfg.min_score}" if cfg.min_score is not None else "")
            + "); lower --min-score, raise --num-samples or --max-new-tokens"
        )
    write_jsonl(
        path / KEPT, [{"prompt": r["prompt"], "completion": r["responses"][r["best"]]} for r in rows if r["kept"]]
    )
    write_jsonl(path / SAMPLES, rows)  # last: its presence means the round's samples are complete


def round_metrics(k: int, path: Path, n: int) -> dict:
    """The metrics row of a round, from its cached samples (so a resumed run writes the same rows)."""
    rows = [json.loads(line) for line in (path / SAMPLES).read_text(encoding="utf-8").splitlines()]
    all_scores = [s for r in rows for s in r["scores"]]
    best = [r["scores"][r["best"]] for r in rows if r["best"] is not None]
    kept = [r["scores"][r["best"]] for r in rows if r["kept"]]
    sft = json.loads((path / COMPLETE).read_text()) if (path / COMPLETE).exists() else {}
    return {
        "round": k,
        "expert/prompts": len(rows),
        "expert/kept": len(kept),
        "expert/score_mean_all": float(np.mean(all_scores)),
        "expert/score_mean_best": float(np.mean(best)) if best else float("nan"),
        "expert/score_mean_kept": float(np.mean(kept)),
        "expert/empty_responses": sum(not t.strip() for r in rows for t in r["responses"]),
        "expert/best_of_n_kl_bound": best_of_n_kl(n),
        "expert/sft_steps": sft.get("steps"),
    }


def sft_config(cfg: ExpertConfig, k: int, model: str, path: Path) -> SFTConfig:
    """Round ``k``'s fine-tuning: SFT on the kept pairs, from the current model, into the round's folder."""
    return SFTConfig(
        model=model,
        data=str(path / KEPT),
        output_dir=str(path),
        resume=cfg.resume,
        seed=cfg.seed + k,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        micro_batch_size=cfg.micro_batch_size,
        learning_rate=cfg.learning_rate,
        lr_schedule=cfg.lr_schedule,
        warmup_steps=cfg.warmup_steps,
        max_length=cfg.max_length,
        residual_dropout=cfg.residual_dropout,
        pretrain_data=cfg.pretrain_data,
        pretrain_fraction=cfg.pretrain_fraction,
        eval_fraction=0.0,  # every kept pair is trained on; the round is judged by the next round's RM scores
        select_by="last",
        mixed_precision=cfg.mixed_precision,
        cpu=cfg.cpu,
        report_to=cfg.report_to,
        logging_steps=cfg.logging_steps,
        progress=cfg.progress,
    )


def copy_model(src: Path, out: Path) -> None:
    """The model and tokenizer files of a finished SFT run folder into ``out`` (plain transformers format)."""
    for f in src.iterdir():
        if f.is_file() and f.name not in RUN_FILES:
            shutil.copy2(f, out / f.name)


def check_inputs(cfg: ExpertConfig) -> None:
    cfg.validate()
    for field, flag in (("policy", "--policy"), ("reward_model", "--reward-model"), ("prompts", "--prompts")):
        if not getattr(cfg, field):
            raise ConfigError(f"expert-iteration: {flag} is required")
    if not cfg.output_dir:
        raise ConfigError("expert-iteration: an output directory is required (--out DIR)")
    check_model_source(cfg.policy)
    check_finished(cfg.policy, "--policy")
    check_finished(cfg.reward_model, "--reward-model")


def run_expert_iteration(cfg: ExpertConfig) -> ExpertResult:
    """Expert iteration from ``cfg.policy`` against ``cfg.reward_model``; see the module docstring."""
    check_inputs(cfg)
    prompts = [r.prompt for r in load_prompts(cfg.prompts)]  # data errors before any model loads
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path '{out}' exists and is not a directory: choose a directory for --out")
    if not cfg.resume and any(out.glob("round_*")):
        raise InstructRLError(
            f"'{out}' already holds rounds of an earlier expert-iteration run: pass --resume to continue it, or "
            f"choose another --out"
        )
    reward_model = load_frozen_reward(cfg.reward_model)  # refuses a causal LM with one line
    out.mkdir(parents=True, exist_ok=True)
    # on --resume: refuses settings that differ from the saved run's
    cfg.save(out, resolved_mixed_precision=resolve_mixed_precision(cfg))
    mark_unfinished(out)
    current, rows = cfg.policy, []
    for k in range(1, cfg.rounds + 1):
        path = round_dir(out, k)
        if (path / COMPLETE).exists() and (path / SAMPLES).exists():
            log.info("round %d: finished earlier, kept", k)
        else:
            if cfg.resume and (path / SAMPLES).exists():
                log.info("round %d: reusing the cached samples in %s", k, path / SAMPLES)
            else:
                if path.exists():  # a round killed while sampling: nothing of it is worth keeping
                    shutil.rmtree(path)
                path.mkdir(parents=True)
                ps = round_prompts(prompts, cfg, k)
                log.info("round %d: %d samples for each of %d prompts from %s", k, cfg.num_samples, len(ps), current)
                sample_round(cfg, k, current, reward_model, ps, path)
            run_sft(sft_config(cfg, k, current, path))
        rows.append(round_metrics(k, path, cfg.num_samples))
        write_jsonl(out / "metrics.jsonl", rows)
        log.info(
            "round %d: mean RM score %.3f of all samples, %.3f of the %d kept",
            k,
            rows[-1]["expert/score_mean_all"],
            rows[-1]["expert/score_mean_kept"],
            rows[-1]["expert/kept"],
        )
        current = str(path)
    copy_model(round_dir(out, cfg.rounds), out)
    mark_complete(out, stage="expert-iteration", rounds=cfg.rounds)  # last: the run is finished
    return ExpertResult(out, rows)
