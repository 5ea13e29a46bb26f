"""Python API of DPO: ``run_dpo(DPOConfig(...))`` trains a policy directly on comparisons (Rafailov et al. 2023).

The two models come from :mod:`instructrl.modeling`: the policy (the SFT model, LoRA-wrapped or not) and the
reference pi_ref, a frozen copy of it taken before any update (or, with LoRA, the policy with its adapters
disabled: :func:`~instructrl.modeling.loading.make_reference`, as PPO's KL anchor).

Outputs in ``output_dir``: the policy (transformers format, LoRA merged) with its tokenizer, ``config.yaml``,
``data_report.json``, ``metrics.jsonl`` (``dpo/...``), ``selection.json`` and ``checkpoints/`` for ``--resume``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

from instructrl.data.formats import load_texts
from instructrl.data.rankings import comparison_counts, load_rankings, split_by_prompt
from instructrl.data.tokenize import pack_texts
from instructrl.dpo.config import DPOConfig
from instructrl.dpo.data import encode_for_dpo
from instructrl.dpo.trainer import DPOTrainer
from instructrl.errors import DataError, InstructRLError
from instructrl.modeling.loading import apply_lora, disable_dropout, load_causal_lm, load_tokenizer, make_reference
from instructrl.modeling.memory import enable_gradient_checkpointing, trained_weights_in_fp32
from instructrl.training.accelerator import check_levers, frozen_dtype, make_accelerator, trained_weights
from instructrl.training.checkpoints import prepare_output_dir
from instructrl.training.loop import TrainResult
from instructrl.training.validation import check_context, check_finished

log = logging.getLogger("instructrl.dpo")


def run_dpo(cfg: DPOConfig) -> TrainResult:
    """Train the policy ``cfg.model`` on the comparisons ``cfg.data`` with a DPO loss; see the module docstring."""
    if not cfg.model:
        raise InstructRLError("dpo: a model to start from is required (--model PATH, normally the SFT checkpoint)")
    if not cfg.data:
        raise InstructRLError("dpo: comparison data is required (--data FILE)")
    check_levers(cfg)  # before anything is written
    out = prepare_output_dir(cfg.output_dir, cfg.resume, "dpo")
    rankings, load_report = load_rankings(cfg.data)  # data errors before any model loads
    if cfg.eval_data:
        train_r, eval_r = rankings, load_rankings(cfg.eval_data, what="evaluation data")[0]
    else:
        train_r, eval_r = split_by_prompt(rankings, cfg.eval_fraction, cfg.seed)
    if any(r.margin is not None for r in train_r):
        log.info("the comparisons' 'margin' fields are not used by DPO (they are the reward model's, Llama 2)")
    check_finished(cfg.model, "model")
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    train_r, train_enc, enc_report = encode_for_dpo(train_r, tokenizer, cfg.max_length, cfg.min_response_tokens)
    enc_report.log("dpo train")
    eval_r, eval_enc, eval_enc_report = encode_for_dpo(eval_r, tokenizer, cfg.max_length, cfg.min_response_tokens)
    if eval_r:
        eval_enc_report.log("dpo evaluation")
    if not train_r:
        raise DataError(
            f"{cfg.data}: every ranking was skipped because its prompt leaves fewer than min_response_tokens="
            f"{cfg.min_response_tokens} of max_length={cfg.max_length} tokens; raise --max-length"
        )
    ptx_windows = None
    if cfg.use_ptx:
        ptx_windows = pack_texts(load_texts(cfg.ptx_data), tokenizer, cfg.ptx_max_length)
        if not ptx_windows:
            raise DataError(f"{cfg.ptx_data}: too little text for one window of {cfg.ptx_max_length // 2}+ tokens")

    acc = make_accelerator(cfg, out)
    frozen = frozen_dtype(cfg, acc)
    weights = trained_weights(cfg, acc, lora=cfg.lora_r > 0)  # fp32 unless a LoRA base (modeling/memory.py)
    policy = load_causal_lm(cfg.model, tokenizer, init_from_config=False, **weights)
    check_context(cfg, policy)  # --max-length and --ptx-max-length against the model's positions
    if cfg.disable_dropout:
        disable_dropout(policy)
    ref = None  # LoRA: the reference is the policy with its adapters disabled, no second copy
    if cfg.lora_r > 0:
        policy = apply_lora(policy, cfg.lora_r, cfg.lora_alpha, 0.0, cfg.lora_target_modules or None)
        trained_weights_in_fp32(policy)
    else:
        ref = make_reference(policy)  # frozen copy of the initial policy, dropout off, eval mode
        if frozen is not None and frozen != weights["dtype"]:
            ref.to(frozen)
    if cfg.gradient_checkpointing:  # after the reference was copied: it runs without gradients
        enable_gradient_checkpointing(policy, "policy")
    if acc.is_main_process:
        cfg.save(out, resolved_mixed_precision=acc.mixed_precision)
        (out / "data_report.json").write_text(
            json.dumps(
                {
                    "load": asdict(load_report),
                    **comparison_counts(train_r, eval_r),
                    "train_encoding": asdict(enc_report),
                    "eval_encoding": asdict(eval_enc_report),
                    "ptx_windows": len(ptx_windows or []),
                },
                indent=1,
            )
        )
    log.info(
        "dpo: %d prompts (%d pairs), %s loss%s, beta=%g%s",
        len(train_r),
        sum(len(r.pairs) for r in train_r),
        cfg.loss_type if cfg.ranking_loss == "pairs" else "Plackett-Luce",
        f" with label smoothing {cfg.label_smoothing:g}" if cfg.label_smoothing else "",
        cfg.beta,
        f"; DPO-ptx with gamma={cfg.ptx_coef:g}, {cfg.ptx_per_unit} window(s) per prompt" if ptx_windows else "",
    )
    trainer = DPOTrainer(
        cfg,
        acc,
        policy,
        ref,
        tokenizer,
        train_enc,
        [r.ranks for r in train_r],
        eval_enc,
        [r.ranks for r in eval_r],
        out,
        ptx_windows,
    )
    return trainer.train()
