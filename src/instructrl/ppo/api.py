"""Python API of stage 3: ``run_ppo(PPOConfig(...))`` (PPO, or PPO-ptx with ``ptx_data``).

The four models of stage 3 come from :mod:`instructrl.modeling`:

* **Policy**: the SFT model (:func:`~instructrl.modeling.loading.load_causal_lm`), LoRA-wrapped or not.
* **Reference**: a frozen copy of the initial policy (the KL anchor of InstructGPT Eq. 2), or, when the policy
  trains LoRA adapters, the same model with its adapters disabled (:func:`~instructrl.modeling.loading.make_reference`).
* **Reward model**: the stage-2 RM, frozen (:func:`~instructrl.modeling.reward.load_frozen_reward`), scoring
  prompt + response + EOS at the last non-PAD token with its normalization ``gain * raw + bias``.
* **Value model**: initialized from the RM (InstructGPT §3.5; :class:`~instructrl.modeling.value.ValueModel`).
  Only ``advantage=gae`` has one: the critic-free estimators (grpo, rloo, reinforce) load none.

The RM and the value model read the policy's token ids, so they must share its tokenizer (:func:`check_same_vocab`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from torch import nn

from instructrl.data.formats import load_prompts, load_texts
from instructrl.data.template import encode_prompt
from instructrl.data.tokenize import pack_texts
from instructrl.errors import DataError, InstructRLError, ModelLoadError
from instructrl.modeling.loading import apply_lora, disable_dropout, load_causal_lm, load_tokenizer, make_reference
from instructrl.modeling.memory import enable_gradient_checkpointing, trained_weights_in_fp32
from instructrl.modeling.reward import load_frozen_reward
from instructrl.modeling.value import SharedBaseValueModel, ValueModel
from instructrl.ppo.config import PPOConfig
from instructrl.ppo.trainer import Callback, PPOResult, PPOTrainer
from instructrl.training import engines
from instructrl.training.accelerator import check_levers, frozen_dtype, make_accelerator, trained_weights, weight_dtype
from instructrl.training.checkpoints import prepare_output_dir
from instructrl.training.validation import check_context, check_finished

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
        raise DataError(
            f"{source}: all {len(records)} prompts are longer than max_prompt_length="
            f"{cfg.max_prompt_length} tokens; raise --max-prompt-length"
        )
    if skipped:
        log.info(
            "skipped %d prompts longer than %d tokens (first: %s)", len(skipped), cfg.max_prompt_length, skipped[0]
        )
    return kept, {
        "prompts": len(records),
        "kept": len(kept),
        "skipped_long_prompts": len(skipped),
        "skipped_where": skipped[:100],
    }


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
    value_source = (cfg.value_model or cfg.reward_model) if cfg.uses_value_model else None
    if cfg.uses_value_model and not value_source and not cfg.value_shares_policy_base:
        raise InstructRLError(
            "ppo: a value model is required when the reward is a Python module (--value-model DIR), "
            "or choose a critic-free estimator (--advantage grpo|rloo|reinforce)"
        )
    check_levers(cfg)  # before anything is written
    engines.check_frozen_placement(cfg.frozen_placement, cfg.engine)
    out = prepare_output_dir(cfg.output_dir, cfg.resume, "ppo")
    for path, what in ((cfg.policy, "policy"), (cfg.reward_model, "reward model"), (cfg.value_model, "value model")):
        check_finished(path, what)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.policy)
    prompts, report = encode_prompts(cfg, tokenizer, cfg.prompts)  # data errors before any model loads
    ptx_pool = None
    if cfg.use_ptx:
        ptx_pool = pack_texts(load_texts(cfg.ptx_data), tokenizer, cfg.ptx_max_length)
        if not ptx_pool:
            raise DataError(f"{cfg.ptx_data}: too little text for one window of {cfg.ptx_max_length // 2}+ tokens")
        report["ptx_windows"] = len(ptx_pool)
    acc = make_accelerator(cfg, out)

    frozen = frozen_dtype(cfg, acc)
    weights = trained_weights(cfg, acc, lora=cfg.lora_r > 0)  # fp32 unless a LoRA base (modeling/memory.py)
    policy = load_causal_lm(cfg.policy, tokenizer, init_from_config=False, **weights)
    disable_dropout(policy)  # Huang et al. 2023: dropout off in policy, reference, value and reward models
    ref = None  # LoRA: the reference is the policy with its adapters disabled, no second copy
    if cfg.lora_r > 0:
        policy = apply_lora(policy, cfg.lora_r, cfg.lora_alpha, 0.0, cfg.lora_target_modules or None)
        trained_weights_in_fp32(policy)
    else:
        ref = make_reference(policy)  # frozen copy of the initial policy
        if frozen is not None and frozen != weights["dtype"]:
            ref.to(frozen)
    if reward_model is None:
        reward_model = load_frozen_reward(cfg.reward_model, dtype=frozen)
        check_same_vocab(tokenizer, cfg.reward_model, "reward model", _vocab_rows(reward_model))
    value = None
    if cfg.value_shares_policy_base:  # a second adapter on the policy's own base, and a scalar head
        value = SharedBaseValueModel(policy, cfg.value_lora_r or cfg.lora_r, cfg.lora_alpha)
    elif value_source:
        # a fully trained value model keeps fp32 weights (AdamW's master copy); a LoRA one's base may be 16-bit
        value_dtype = weight_dtype(cfg, acc, frozen_base=True) if cfg.value_lora_r > 0 else None
        value = ValueModel.from_reward_model(value_source, dtype=value_dtype)
        check_same_vocab(tokenizer, value_source, "value model", _vocab_rows(value))
        if cfg.value_lora_r > 0:
            value.add_lora(cfg.value_lora_r, cfg.lora_alpha, cfg.lora_target_modules or None)
    if cfg.gradient_checkpointing:  # after the reference was copied: it runs without gradients
        enable_gradient_checkpointing(policy, "policy")
        if value is not None:
            enable_gradient_checkpointing(value, "value model")
    scorers = [m for m in (reward_model, value) if m is not None]
    check_context(cfg, policy, *scorers, longest_prompt=max(map(len, prompts)))
    if acc.is_main_process:
        cfg.save(out, resolved_mixed_precision=acc.mixed_precision)
        (out / "data_report.json").write_text(json.dumps(report, indent=1))
    log.info(
        "ppo: %d iterations of %d episodes (%d prompts, %d response(s) each), advantage %s, minibatch %d, %d epoch(s)%s",
        cfg.num_iterations,
        cfg.batch_size,
        len(prompts),
        cfg.samples_per_prompt,
        cfg.advantage,
        cfg.mini_batch_size,
        cfg.ppo_epochs,
        f"; PPO-ptx with gamma={cfg.ptx_coef}, {cfg.ptx_per_episode:g} windows per episode" if ptx_pool else "",
    )
    return PPOTrainer(cfg, acc, policy, ref, reward_model, value, tokenizer, prompts, out, ptx_pool)


def check_same_vocab(tokenizer, path: str, what: str, vocab_rows: int) -> None:
    """The RM and value model read the policy's token ids: they must share its tokenizer."""
    p = Path(path)
    if (p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists():
        other = load_tokenizer(path)
        if other.get_vocab() != tokenizer.get_vocab():
            raise ModelLoadError(
                f"{what} '{path}' uses a different tokenizer than the policy; PPO scores the "
                f"policy's token ids, so train the {what} from the same model family/tokenizer"
            )
    if vocab_rows < len(tokenizer):
        raise ModelLoadError(
            f"{what} '{path}' has {vocab_rows} embedding rows but the policy's tokenizer has {len(tokenizer)} tokens"
        )


def _vocab_rows(model: nn.Module) -> int:
    inner = getattr(model, "model", model)
    try:
        return inner.get_input_embeddings().weight.shape[0]
    except (AttributeError, NotImplementedError):
        return 1 << 62  # a hand-made scorer without embeddings: nothing to check


def run_ppo(
    cfg: PPOConfig, reward_model: nn.Module | None = None, callbacks: list[Callback] | None = None
) -> PPOResult:
    """PPO against a reward model, or PPO-ptx when ``cfg.ptx_data`` is set (InstructGPT §3.5, Eq. 2)."""
    return build_trainer(cfg, reward_model).train(callbacks)
