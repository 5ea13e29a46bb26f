"""Python API of stage 3: ``run_ppo(PPOConfig(...))`` (PPO, or PPO-ptx with ``ptx_data``)."""

from __future__ import annotations

import json
import logging

from torch import nn

from instructrl.data.formats import load_prompts, load_texts
from instructrl.data.template import encode_prompt
from instructrl.data.tokenize import pack_texts
from instructrl.errors import DataError, InstructRLError
from instructrl.modeling.loading import apply_lora, disable_dropout, load_causal_lm, load_tokenizer
from instructrl.ppo.config import PPOConfig
from instructrl.ppo.models import ValueModel, check_same_vocab, load_reward_model, make_reference
from instructrl.ppo.trainer import Callback, PPOResult, PPOTrainer
from instructrl.runtime import make_accelerator, prepare_output_dir

log = logging.getLogger("instructrl.ppo")


def encode_prompts(cfg: PPOConfig, tokenizer, source: str) -> tuple[list[list[int]], dict]:
    """Rendered, tokenized prompts; prompts over max_prompt_length are skipped and reported."""
    records = load_prompts(source)
    kept, skipped = [], []
    for rec in records:
        ids = encode_prompt(tokenizer, rec.prompt)
        if len(ids) > cfg.max_prompt_length:
            skipped.append(rec.where)
        else:
            kept.append(ids)
    if not kept:
        raise DataError(f"{source}: all {len(records)} prompts are longer than max_prompt_length="
                        f"{cfg.max_prompt_length} tokens; raise --max-prompt-length")
    if skipped:
        log.info("skipped %d prompts longer than %d tokens (first: %s)", len(skipped), cfg.max_prompt_length, skipped[0])
    return kept, {"prompts": len(records), "kept": len(kept), "skipped_long_prompts": len(skipped),
                  "skipped_where": skipped[:100]}


def build_trainer(cfg: PPOConfig, reward_model: nn.Module | None = None) -> PPOTrainer:
    """Load data and the four models and return a ready :class:`PPOTrainer` (``.train()`` runs it).

    ``reward_model`` replaces ``cfg.reward_model`` with any module ``forward(input_ids, attention_mask)
    -> (B,)`` scoring right-padded rows (a programmatic reward); the value model then comes from
    ``cfg.value_model``."""
    if not cfg.policy:
        raise InstructRLError("ppo: a policy is required (--policy PATH_OR_HUB_ID, the SFT model)")
    if reward_model is None and not cfg.reward_model:
        raise InstructRLError("ppo: a reward model is required (--reward-model DIR)")
    if not cfg.prompts:
        raise InstructRLError("ppo: prompt data is required (--prompts FILE)")
    value_source = cfg.value_model or cfg.reward_model
    if not value_source:
        raise InstructRLError("ppo: a value model is required when the reward is a Python module (--value-model DIR)")
    out = prepare_output_dir(cfg.output_dir, cfg.resume, "ppo")
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.policy)
    prompts, report = encode_prompts(cfg, tokenizer, cfg.prompts)  # data errors before any model loads
    ptx_pool = None
    if cfg.use_ptx:
        ptx_pool = pack_texts(load_texts(cfg.ptx_data), tokenizer, cfg.ptx_max_length)
        if not ptx_pool:
            raise DataError(f"{cfg.ptx_data}: too little text for one window of {cfg.ptx_max_length // 2}+ tokens")
        report["ptx_windows"] = len(ptx_pool)
    acc = make_accelerator(cfg, out)

    policy = load_causal_lm(cfg.policy, tokenizer, init_from_config=False)
    disable_dropout(policy)  # Huang et al. 2023: dropout off in policy, reference, value and reward models
    ref = make_reference(policy)  # frozen copy of the initial policy (taken before any LoRA wrapping)
    if cfg.lora_r > 0:
        policy = apply_lora(policy, cfg.lora_r, cfg.lora_alpha, 0.0, cfg.lora_target_modules or None)
        ref = None  # the reference is the policy with its adapters disabled: no second copy
    if reward_model is None:
        reward_model = load_reward_model(cfg.reward_model)
        check_same_vocab(tokenizer, cfg.reward_model, "reward model", _vocab_rows(reward_model))
    value = ValueModel.from_reward_model(value_source)
    check_same_vocab(tokenizer, value_source, "value model", _vocab_rows(value))
    if acc.is_main_process:
        cfg.save(out)
        (out / "data_report.json").write_text(json.dumps(report, indent=1))
    log.info("ppo: %d iterations of %d episodes (%d prompts), minibatch %d, %d epoch(s)%s",
             cfg.num_iterations, cfg.batch_size, len(prompts), cfg.mini_batch_size, cfg.ppo_epochs,
             f"; PPO-ptx with gamma={cfg.ptx_coef}, {cfg.ptx_per_episode:g} windows per episode" if ptx_pool else "")
    return PPOTrainer(cfg, acc, policy, ref, reward_model, value, tokenizer, prompts, out, ptx_pool)


def _vocab_rows(model: nn.Module) -> int:
    inner = getattr(model, "model", model)
    try:
        return inner.get_input_embeddings().weight.shape[0]
    except (AttributeError, NotImplementedError):
        return 1 << 62  # a hand-made scorer without embeddings: nothing to check


def run_ppo(cfg: PPOConfig, reward_model: nn.Module | None = None,
            callbacks: list[Callback] | None = None) -> PPOResult:
    """PPO against a reward model, or PPO-ptx when ``cfg.ptx_data`` is set (InstructGPT §3.5, Eq. 2)."""
    return build_trainer(cfg, reward_model).train(callbacks)
