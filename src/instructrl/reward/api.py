"""Python API of stage 2: ``run_rm(RMConfig(...))`` trains a reward model, ``evaluate_rm(RMConfig(...))`` evaluates one.

Outputs of ``run_rm`` in ``output_dir``: the reward model (transformers format, see ``modeling/reward.py``) with its
tokenizer and ``reward_normalization.json``, ``config.yaml``, ``data_report.json``, ``metrics.jsonl``,
``eval_results.json`` (per labeler group, with standard errors), ``selection.json`` and ``checkpoints/``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from instructrl.data.rankings import comparison_counts
from instructrl.errors import DataError, InstructRLError
from instructrl.modeling.loading import apply_lora, load_tokenizer
from instructrl.modeling.memory import enable_gradient_checkpointing, trained_weights_in_fp32
from instructrl.modeling.reward import RewardModel, build_reward_model, write_normalization
from instructrl.reward.config import RMConfig
from instructrl.reward.data import HELDOUT, encode_rankings, labeler_group, load_rankings, split_by_prompt
from instructrl.reward.evaluation import flat_metrics, format_report
from instructrl.reward.normalize import demonstration_normalization, reference_normalization
from instructrl.reward.trainer import RMTrainer, evaluate_rankings
from instructrl.training.accelerator import check_levers, make_accelerator, trained_weights
from instructrl.training.checkpoints import prepare_output_dir
from instructrl.training.validation import check_context, check_finished, mark_complete

log = logging.getLogger("instructrl.reward")


@dataclass
class RMResult:
    out_dir: Path
    steps: int
    final_train_loss: float
    forward_passes: int
    normalization: dict
    eval_report: dict | None


def _heldout(cfg: RMConfig) -> frozenset[str]:
    return frozenset(str(x).strip() for x in cfg.heldout_labelers if str(x).strip())


def run_rm(cfg: RMConfig) -> RMResult:
    """Train a reward model on rankings (InstructGPT §3.5), normalize it, evaluate it on held-out comparisons."""
    if not cfg.model:
        raise InstructRLError("rm: a model to start from is required (--model PATH, normally the SFT checkpoint)")
    if not cfg.data:
        raise InstructRLError("rm: comparison data is required (--data FILE)")
    check_levers(cfg)  # before anything is written
    out = prepare_output_dir(cfg.output_dir, cfg.resume, "rm")
    heldout = _heldout(cfg)
    rankings, load_report = load_rankings(cfg.data)
    if cfg.eval_data:
        train_r, eval_r = rankings, load_rankings(cfg.eval_data, what="evaluation data")[0]
    else:
        train_r, eval_r = split_by_prompt(rankings, cfg.eval_fraction, cfg.seed)
    # Held-out labelers' comparisons are never trained on (InstructGPT §3.4: held-out labelers).
    n_heldout_dropped = sum(labeler_group(r, heldout) == HELDOUT for r in train_r)
    train_r = [r for r in train_r if labeler_group(r, heldout) != HELDOUT]
    if n_heldout_dropped:
        log.info("%d rankings by held-out labelers on training prompts are left out of training", n_heldout_dropped)

    acc = make_accelerator(cfg, out)
    check_finished(cfg.model, "model")
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    weights = trained_weights(cfg, acc, lora=cfg.lora_r > 0)  # fp32 unless a LoRA base (modeling/memory.py)
    model = build_reward_model(cfg.model, tokenizer, no_dropout=cfg.disable_dropout, **weights)
    if cfg.lora_r > 0:  # the head is trained whole (peft's sequence-classification task), in fp32
        model = apply_lora(
            model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules or None, task_type="SEQ_CLS"
        )
        trained_weights_in_fp32(model)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model, "reward model")
    check_context(cfg, model)
    train_r, train_enc, enc_report = encode_rankings(train_r, tokenizer, cfg.max_length, cfg.min_response_tokens)
    enc_report.log("rm train")
    eval_r, eval_enc, eval_enc_report = encode_rankings(eval_r, tokenizer, cfg.max_length, cfg.min_response_tokens)
    if eval_r:
        eval_enc_report.log("rm evaluation")
    if not train_r:
        raise DataError(
            f"{cfg.data}: no ranking is left to train on (held-out labelers, prompts longer than "
            f"max_length={cfg.max_length}, or all tied)"
        )
    if acc.is_main_process:
        cfg.save(out, resolved_mixed_precision=acc.mixed_precision)
        (out / "data_report.json").write_text(
            json.dumps(
                {
                    "load": asdict(load_report),
                    **comparison_counts(train_r, eval_r),
                    "heldout_labeler_rankings_left_out_of_training": n_heldout_dropped,
                    "train_encoding": asdict(enc_report),
                    "eval_encoding": asdict(eval_enc_report),
                },
                indent=1,
            )
        )
    trainer = RMTrainer(cfg, acc, model, tokenizer, train_r, train_enc, eval_r, eval_enc, out, heldout)
    trainer.completes_run = False  # complete once normalized and evaluated (mark_complete below)
    result = trainer.train()

    normalization = {"gain": 1.0, "bias": 0.0, "method": "none"}
    if acc.is_main_process:
        normalization = normalize_saved(cfg, out, acc.device)
    report = trainer.selected_report()
    if acc.is_main_process and report is not None:
        report = {**report, "model": str(out), "data": cfg.eval_data or f"{cfg.data} (held-out prompts)"}
        (out / "eval_results.json").write_text(json.dumps(report, indent=1))
        print(format_report(report))
    acc.wait_for_everyone()
    if acc.is_main_process:
        mark_complete(out, stage="rm", steps=result.steps)
    return RMResult(out, result.steps, result.final_train_loss, trainer.state["forward_passes"], normalization, report)


def normalize_saved(cfg: RMConfig, out: Path, device: torch.device) -> dict:
    """Compute the normalization of the saved reward model in ``out`` and store it beside it."""
    method = cfg.normalize_method
    normalization = {"gain": 1.0, "bias": 0.0, "method": "none"}
    if method != "none":
        rm = RewardModel.from_pretrained(out, device=device)
        if method == "demonstrations":
            normalization = demonstration_normalization(
                rm, cfg.demonstrations, cfg.normalize_samples, cfg.eval_batch_size
            )
        else:
            normalization = reference_normalization(
                rm,
                cfg.reference_policy,
                cfg.normalize_prompts,
                limit=cfg.normalize_samples,
                max_new_tokens=cfg.normalize_max_new_tokens,
                seed=cfg.seed,
                batch_size=cfg.eval_batch_size,
            )
    else:
        log.info("no reward normalization (pass --demonstrations FILE for the paper's: demonstrations score mean 0)")
    write_normalization(out, normalization)
    return normalization


def evaluate_rm(cfg: RMConfig) -> dict:
    """Evaluate an existing reward model (``cfg.model``) on ``cfg.eval_data`` (or ``cfg.data``)."""
    source = cfg.eval_data or cfg.data
    if not cfg.model or not source:
        raise InstructRLError("rm --eval-only needs --model REWARD_MODEL_DIR and --eval-data FILE")
    check_finished(cfg.model, "reward model")
    device = "cpu" if cfg.cpu or not torch.cuda.is_available() else "cuda"
    rm = RewardModel.from_pretrained(cfg.model, device=device)
    rankings, load_report = load_rankings(source, what="evaluation data")
    rankings, encoded, enc_report = encode_rankings(rankings, rm.tokenizer, cfg.max_length, cfg.min_response_tokens)
    enc_report.log("rm evaluation")
    if not rankings:
        raise DataError(f"{source}: every ranking was skipped (prompts longer than max_length={cfg.max_length})")
    report = evaluate_rankings(
        rm.model, rm.tokenizer.pad_token_id, rankings, encoded, _heldout(cfg), cfg.eval_batch_size
    )
    report = {
        "model": cfg.model,
        "data": source,
        "skipped_all_tied": load_report.skipped_all_tied,
        "skipped_long_prompt": enc_report.skipped_long_prompt,
        **report,
    }
    if cfg.output_dir:
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval_results.json").write_text(json.dumps(report, indent=1))
        with open(out / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": 0, **flat_metrics(report)}) + "\n")
    print(format_report(report))
    return report
