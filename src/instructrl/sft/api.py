"""Python API of stage 1: ``run_sft(SFTConfig(...))`` and ``run_pretrain(PretrainConfig(...))``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from instructrl.data.formats import load_demonstrations, load_texts
from instructrl.data.tokenize import pack_texts, tokenize_demonstrations
from instructrl.errors import DataError, InstructRLError
from instructrl.modeling.loading import (
    apply_lora,
    check_model_source,
    load_causal_lm,
    load_tokenizer,
    residual_dropout_report,
)
from instructrl.modeling.memory import enable_gradient_checkpointing, trained_weights_in_fp32
from instructrl.sft.config import LMTrainConfig, PretrainConfig, SFTConfig
from instructrl.sft.selection import RewardSelector
from instructrl.sft.trainer import LMTrainer, Selector, packing_problem
from instructrl.training.accelerator import check_levers, make_accelerator, trained_weights
from instructrl.training.checkpoints import prepare_output_dir
from instructrl.training.loop import EpochPlan, TrainResult, shuffled_plan
from instructrl.training.validation import check_context, check_finished

log = logging.getLogger("instructrl.sft")


def split_eval(items: list, fraction: float, seed: int, min_records: int = 20) -> tuple[list, list]:
    """Deterministic train/validation split; no split when the data is too small."""
    if fraction <= 0 or len(items) < min_records:
        return items, []
    order = np.random.default_rng(seed).permutation(len(items))
    n_eval = max(1, round(fraction * len(items)))
    eval_idx = set(order[:n_eval].tolist())
    return [x for i, x in enumerate(items) if i not in eval_idx], [x for i, x in enumerate(items) if i in eval_idx]


def load_train_eval(cfg: LMTrainConfig, load) -> tuple[list, list]:
    """Training and validation records: --eval-data when given, else a split of --data."""
    items = load(cfg.data)
    if cfg.eval_data:
        return items, load(cfg.eval_data)
    return split_eval(items, cfg.eval_fraction, cfg.seed)


def _load_model(cfg: LMTrainConfig, acc):
    if not cfg.model:
        raise InstructRLError("a model is required (--model PATH_OR_HUB_ID)")
    check_model_source(cfg.model)
    check_finished(cfg.model, "model")
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    weights = trained_weights(cfg, acc, lora=cfg.lora_r > 0)  # fp32 unless a LoRA base (modeling/memory.py)
    model = load_causal_lm(cfg.model, tokenizer, residual_dropout=cfg.residual_dropout, **weights)
    dropout = residual_dropout_report(model)
    if dropout["requested"] is not None:
        log.info("residual dropout %s: %s", dropout["requested"], dropout["how"])
    if cfg.lora_r > 0:
        model = apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules or None)
        trained_weights_in_fp32(model)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, tokenizer


def decide_packing(cfg: LMTrainConfig, model) -> dict:
    """Whether this run packs its batches (``--packing``, and the model keeps packed examples apart: see
    :func:`~instructrl.sft.trainer.packing_problem`), as recorded in data_report.json."""
    if not cfg.packing:
        return {"requested": False, "applied": False}
    problem = packing_problem(model)
    if problem is None:
        log.info(
            "packing: each micro-batch packed into rows of up to %d tokens, attention kept inside each example",
            cfg.max_length,
        )
        return {"requested": True, "applied": True, "row_tokens": cfg.max_length}
    log.warning("--packing: %s; training on padded batches instead", problem)
    return {"requested": True, "applied": False, "reason": problem}


def mixture_plan(n_main: int, n_extra: int, fraction: float, seed: int) -> tuple[EpochPlan, int]:
    """Each epoch: every main example once plus a fresh sample of extra (pretraining) examples making up
    ``fraction`` of the epoch, shuffled together. Extra examples live at pool indices n_main.."""
    n_mix = round(fraction / (1.0 - fraction) * n_main) if n_extra else 0

    def plan(epoch: int) -> np.ndarray:
        rng = np.random.default_rng([seed, epoch])
        extra = n_main + rng.choice(n_extra, size=n_mix, replace=n_mix > n_extra) if n_mix else np.array([], int)
        return rng.permutation(np.concatenate([np.arange(n_main), extra]))

    return plan, n_main + n_mix


def run_sft(cfg: SFTConfig, selector: Selector | None = None) -> TrainResult:
    """Supervised fine-tuning on demonstrations (InstructGPT §3.5): loss on response tokens only."""
    if not cfg.data:
        raise InstructRLError("sft: demonstration data is required (--data FILE)")
    check_levers(cfg)  # before anything is written
    out = prepare_output_dir(cfg.output_dir, cfg.resume, "sft")
    train_demos, eval_demos = load_train_eval(cfg, load_demonstrations)
    acc = make_accelerator(cfg, out)
    model, tokenizer = _load_model(cfg, acc)
    check_context(cfg, model)
    packing = decide_packing(cfg, model)
    train, report = tokenize_demonstrations(
        train_demos, tokenizer, cfg.max_length, cfg.min_response_tokens, cfg.assistant_turns
    )
    report.log("sft train")
    evals, eval_report = tokenize_demonstrations(
        eval_demos, tokenizer, cfg.max_length, cfg.min_response_tokens, cfg.assistant_turns
    )
    if eval_demos:
        eval_report.log("sft validation")
    if not train:
        raise DataError(
            f"{cfg.data}: all {len(train_demos)} demonstrations were skipped because their prompts "
            f"exceed max_length={cfg.max_length} tokens; raise --max-length"
        )
    pool, plan, epoch_size = train, shuffled_plan(len(train), cfg.seed), len(train)
    n_pretrain = 0
    if cfg.pretrain_data and cfg.pretrain_fraction > 0:
        pt = pack_texts(load_texts(cfg.pretrain_data), tokenizer, cfg.max_length, documents=packing["applied"])
        if not pt:
            raise DataError(f"{cfg.pretrain_data}: too little text for one window of {cfg.max_length // 2}+ tokens")
        pool = train + pt
        plan, epoch_size = mixture_plan(len(train), len(pt), cfg.pretrain_fraction, cfg.seed)
        n_pretrain = epoch_size - len(train)
        log.info(
            "mixing %d pretraining windows into each epoch of %d demonstrations (%.0f%%)",
            n_pretrain,
            len(train),
            100 * cfg.pretrain_fraction,
        )
    if selector is None and cfg.select_by == "reward":
        selector = make_reward_selector(cfg, eval_demos or train_demos)
    if acc.is_main_process:
        cfg.save(out, resolved_mixed_precision=acc.mixed_precision)
        (out / "data_report.json").write_text(
            json.dumps(
                {
                    "train_demonstrations": len(train_demos),
                    "validation_demonstrations": len(eval_demos),
                    "train_examples": report.kept,
                    "truncated_responses": report.truncated_completion,
                    "skipped_long_prompts": report.skipped_long_prompt,
                    "skipped_where": report.skipped_where,
                    "validation_examples": eval_report.kept,
                    "pretrain_examples_per_epoch": n_pretrain,
                    "assistant_turns": cfg.assistant_turns,
                    "multi_turn_conversations": report.conversations,
                    "assistant_turns_trained": report.assistant_turns_trained,
                    "conversations_trained_on_last_turn_only_by_template": report.last_turn_only_template,
                    "residual_dropout": residual_dropout_report(model),
                    "packing": packing,
                },
                indent=1,
            )
        )
    trainer = LMTrainer(
        cfg, acc, model, tokenizer, pool, plan, epoch_size, evals, out, "sft", selector, packing=packing["applied"]
    )
    return trainer.train()


def make_reward_selector(cfg: SFTConfig, demos) -> Selector:
    prompts = [d.prompt for d in demos[: cfg.select_prompts]]
    return RewardSelector(cfg.reward_model, prompts, max_new_tokens=cfg.select_max_new_tokens, seed=cfg.seed)


def run_pretrain(cfg: PretrainConfig) -> TrainResult:
    """Next-token training on plain text (documents packed into windows of max_length)."""
    if not cfg.data:
        raise InstructRLError("pretrain: text data is required (--data FILE)")
    check_levers(cfg)  # before anything is written
    out = prepare_output_dir(cfg.output_dir, cfg.resume, "pretrain")
    train_texts, eval_texts = load_train_eval(cfg, load_texts)
    acc = make_accelerator(cfg, out)
    model, tokenizer = _load_model(cfg, acc)
    check_context(cfg, model)
    packing = decide_packing(cfg, model)
    train = pack_texts(train_texts, tokenizer, cfg.max_length, documents=packing["applied"])
    evals = pack_texts(eval_texts, tokenizer, cfg.max_length, documents=packing["applied"])
    if not train:
        raise DataError(f"{cfg.data}: too little text for one window of {cfg.max_length // 2}+ tokens")
    log.info("pretraining on %d windows of %d tokens (%d validation windows)", len(train), cfg.max_length, len(evals))
    if acc.is_main_process:
        cfg.save(out, resolved_mixed_precision=acc.mixed_precision)
        report = {
            "train_windows": len(train),
            "validation_windows": len(evals),
            "residual_dropout": residual_dropout_report(model),
            "packing": packing,
        }
        (out / "data_report.json").write_text(json.dumps(report, indent=1))
    trainer = LMTrainer(
        cfg,
        acc,
        model,
        tokenizer,
        train,
        shuffled_plan(len(train), cfg.seed),
        len(train),
        evals,
        out,
        "pretrain",
        packing=packing["applied"],
    )
    return trainer.train()


def load_result_summary(out_dir: str | Path) -> dict:
    """selection.json of a finished run."""
    return json.loads((Path(out_dir) / "selection.json").read_text())
