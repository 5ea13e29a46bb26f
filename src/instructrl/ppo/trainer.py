"""The PPO / PPO-ptx loop (InstructGPT §3.5, App. C.4). It only orchestrates; the math is in ``losses.py``.

One PPO iteration, on every process for its share of the batch:

1. **Rollout**: ``batch_size / processes`` prompts (a seeded permutation per pass over the prompt set),
   one sampled response each (KV-cached sampling loop, ``rollout.sample_responses``).
2. **Scoring** (no grad): reference log-probs, RM score at the EOS token (right-aligned rows), and the
   rollout ("old") log-probs and values. When a process's whole batch is one minibatch, the first
   training forward *is* the rollout forward: the old log-probs and values are its detached outputs
   (the policy has not changed since sampling), which saves one policy and one value pass.
3. **Rewards and advantages**: per-token -beta*KL_t plus the score at the last token; GAE (gamma = 1);
   advantages whitened over the process's batch. Critic-free estimators (``advantage`` = grpo, rloo,
   reinforce) replace GAE and the value model: ``samples_per_prompt`` responses per prompt, each group on
   one process, and a group baseline (grpo, rloo) or the whitened reward-to-go (reinforce). With
   ``kl_in=loss`` the KL leaves the reward and enters the policy loss as beta * KL_t (GRPO).
4. **Optimization**: ``ppo_epochs`` passes over shuffled minibatches; each minibatch's clipped
   surrogate + value loss gradient (no value loss without a value model), plus (PPO-ptx) ``ptx_coef`` times the gradient of the LM loss on
   ``ptx_per_episode`` pretraining windows per episode, accumulated into ONE optimizer step
   (InstructGPT App. C.4/E). Gradients are averaged over processes by DDP.

Matmuls run under bf16 autocast when ``mixed_precision=bf16`` (fp32 master weights; log-probs in fp32).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from accelerate.utils import DistributedType
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from instructrl.data.tokenize import IGNORE_INDEX, collate, left_pad
from instructrl.errors import ConfigError
from instructrl.losses import (
    AdaptiveKLController,
    FixedKLController,
    ema_update,
    eos_penalty,
    gae,
    group_advantages,
    kl_penalty,
    masked_mean,
    masked_whiten,
    per_token_rewards,
    policy_loss,
    ptx_loss,
    sequence_advantages,
    value_loss,
)
from instructrl.modeling.loading import adapters_disabled, save_pretrained_atomic
from instructrl.modeling.memory import checkpointing_enabled, evaluation_mode, train_mode_without_dropout
from instructrl.ppo.config import PPOConfig
from instructrl.ppo.rollout import Episodes, policy_forward, right_align, sample_fast, value_forward
from instructrl.training import engines, precision
from instructrl.training.accelerator import resolve_mixed_precision
from instructrl.training.checkpoints import Checkpoints
from instructrl.training.optim import clip_and_step, fused_adamw, lr_at, set_lr
from instructrl.training.tracking import MetricsLogger, truncate_jsonl
from instructrl.training.validation import mark_complete, mark_unfinished

log = logging.getLogger("instructrl.ppo")

Callback = Callable[[int, dict[str, float]], None]


@dataclass
class PPOResult:
    out_dir: Path
    iterations: int
    episodes: int
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU code would be built with, or None when there is none."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # an older or newer layout of torch's private module: look on the PATH
        return shutil.which(os.environ.get("CXX") or "g++")
    try:
        return get_cpp_compiler()
    except Exception:  # torch raises its InvalidCxxCompiler when none of its candidates runs
        return None


def check_compile(accelerator) -> None:
    """``--compile``'s preconditions, refused before the run starts: one process (the compiled forwards are not
    tested under DDP, FSDP or DeepSpeed yet), and on a CPU a C++ compiler for the generated code."""
    if accelerator.num_processes > 1:
        raise ConfigError(
            f"--compile with {accelerator.num_processes} processes: it runs in one process only for now; drop it"
        )
    if accelerator.device.type == "cpu" and cpp_compiler() is None:
        raise ConfigError(
            "--compile on a CPU needs a C++ compiler (g++, or the one $CXX names) and none was found: install one "
            "or drop --compile"
        )


def _pad_right(t: torch.Tensor, width: int, value) -> torch.Tensor:
    if t.shape[1] == width:
        return t
    pad = torch.full((t.shape[0], width - t.shape[1]), value, dtype=t.dtype, device=t.device)
    return torch.cat([t, pad], dim=1)


def _cat_episodes(parts: list[Episodes], pad_id: int) -> Episodes:
    width = max(p.responses.shape[1] for p in parts)
    return Episodes(
        prompt_ids=torch.cat([p.prompt_ids for p in parts]),
        prompt_mask=torch.cat([p.prompt_mask for p in parts]),
        responses=torch.cat([_pad_right(p.responses, width, pad_id) for p in parts]),
        response_mask=torch.cat([_pad_right(p.response_mask, width, False) for p in parts]),
        has_eos=torch.cat([p.has_eos for p in parts]),
        prompt_index=torch.cat([p.prompt_index for p in parts]),
    )


class PPOTrainer:
    """Runs one PPO / PPO-ptx job; see the module docstring."""

    def __init__(
        self,
        cfg: PPOConfig,
        accelerator,
        policy,
        ref_model,
        reward_model,
        value_model,
        tokenizer,
        prompts: list[list[int]],
        out_dir: Path,
        ptx_pool: list[dict] | None = None,
    ):
        self.cfg, self.acc, self.tokenizer, self.out = cfg, accelerator, tokenizer, Path(out_dir)
        self.prompts, self.ptx_pool = prompts, ptx_pool if cfg.use_ptx else None
        world = accelerator.num_processes
        for name in ("batch_size", "mini_batch_size"):
            if getattr(cfg, name) % world:
                raise ConfigError(f"{name}={getattr(cfg, name)} must be divisible by the number of processes ({world})")
        self.group = cfg.samples_per_prompt
        if (cfg.batch_size // self.group) % world:
            raise ConfigError(
                f"batch_size / samples_per_prompt = {cfg.batch_size // self.group} prompts per iteration must be "
                f"divisible by the number of processes ({world}): each prompt's group of responses stays on one process"
            )
        if (value_model is None) == cfg.uses_value_model:
            raise ConfigError(
                f"advantage={cfg.advantage} {'needs' if cfg.uses_value_model else 'takes no'} value model"
            )
        self.local_batch = cfg.batch_size // world
        self.local_mini = cfg.mini_batch_size // world
        self.n_minibatches = self.local_batch // self.local_mini
        self.chunk = cfg.rollout_batch_size or self.local_batch
        # the rollout forward doubles as the first training forward when one minibatch is the whole batch
        self.fused = self.n_minibatches == 1
        self.total_iterations = cfg.num_iterations
        self.eos_id, self.pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
        if self.eos_id is None or self.pad_id is None or self.eos_id == self.pad_id:
            raise ConfigError("PPO needs a tokenizer with an EOS and a distinct PAD token")
        self.precision = resolve_mixed_precision(cfg)  # resolved: bf16, fp16 or no
        # sharded policies (FSDP, DeepSpeed ZeRO) gather their weights with collectives inside the forward:
        # those are not captured in a CUDA graph, and a rank falling back alone would desynchronize them
        self.cuda_graphs = cfg.cuda_graphs and accelerator.distributed_type not in (
            DistributedType.FSDP,
            DistributedType.DEEPSPEED,
        )

        # opt-in torch.compile of the scoring and training forwards; sampling stays eager (its shapes grow per token)
        self.policy_forward, self.value_forward = policy_forward, value_forward
        if cfg.compile:
            check_compile(accelerator)
            self.policy_forward = torch.compile(policy_forward)
            self.value_forward = torch.compile(value_forward)

        device = accelerator.device
        for m in (policy, value_model):
            if m is None:
                continue
            # dropout off in every model during RL (Huang et al. 2023): evaluation mode, or, for a model whose
            # layers recompute their activations (transformers checkpoints only in training mode), training
            # mode with every dropout at 0, which computes the same
            if checkpointing_enabled(m):
                train_mode_without_dropout(m)
            else:
                m.eval()
        # a value model sharing the policy's base has its adapter inside the policy's layers: those parameters
        # are the value model's (its optimizer, its gradient clipping, its DDP all-reduce), not the policy's
        value_ids = {id(p) for p in value_model.parameters()} if value_model is not None else set()
        pol_params = [p for p in policy.parameters() if p.requires_grad and id(p) not in value_ids]
        self.shares_base = any(id(p) in value_ids for p in policy.parameters())
        if self.shares_base:
            shared = [n for n, p in policy.named_parameters() if id(p) in value_ids]
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(policy, shared)
        self.pol_params = pol_params
        betas = (cfg.adam_beta1, cfg.adam_beta2)
        # torch's fused AdamW (same update up to float rounding): on a GPU a couple of kernels per step instead of a
        # few per parameter tensor (at PPO's small minibatches the step is launch-bound); on a CPU one vectorized
        # pass per tensor instead of several, about 3x faster (training/optim.py)
        fused = fused_adamw(device)
        pol_opt = torch.optim.AdamW(
            pol_params, lr=cfg.learning_rate, betas=betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay, **fused
        )
        if engines.is_sharded(accelerator):
            self._check_sharded(cfg)
        clip = {"max_grad_norm": cfg.max_grad_norm, "micro_batch": self.local_mini}
        self.policy, self.pol_opt = engines.prepare(accelerator, policy, pol_opt, **clip)
        if value_model is None:  # critic-free: one trained model, one optimizer
            self.value = self.val_opt = None
        else:
            val_opt = torch.optim.AdamW(
                [p for p in value_model.parameters() if p.requires_grad],
                lr=cfg.value_learning_rate or cfg.learning_rate,
                betas=betas,
                eps=cfg.adam_eps,
                weight_decay=cfg.weight_decay,
                **fused,
            )
            self.value, self.val_opt = engines.prepare(accelerator, value_model, val_opt, **clip)
        self.frozen_placement = engines.frozen_placement(accelerator, cfg.frozen_placement)
        self.ref = engines.place_frozen(accelerator, ref_model, self.frozen_placement, cfg.frozen_placement)
        self.rm = engines.place_frozen(accelerator, reward_model, self.frozen_placement, cfg.frozen_placement)
        self.ema = self.ema_shards = None
        if cfg.ema and engines.is_sharded(accelerator):  # each process averages its own shards
            self.ema_shards = engines.ShardEMA(self.raw_policy)
        elif cfg.ema:
            self.ema = copy.deepcopy(self.acc.unwrap_model(self.policy)).requires_grad_(False)
        if cfg.adaptive_kl:
            self.kl_ctl = AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        else:
            self.kl_ctl = FixedKLController(cfg.kl_coef)
        self.ckpts = Checkpoints(self.out, accelerator, keep=cfg.keep_checkpoints)
        self.metrics = MetricsLogger(self.out, accelerator, run_name="ppo", config=cfg.to_dict())
        self.state: dict[str, Any] = {"iteration": 0, "episodes": 0, "ptx_position": 0}

    def _check_sharded(self, cfg: PPOConfig) -> None:
        """What PPO does not do yet with sharded weights, refused before the run starts (LoRA: engines.prepare)."""
        if self.shares_base:
            raise ConfigError("--value-shares-policy-base with a sharding engine: use --engine ddp")
        world, ptx = self.acc.num_processes, round(cfg.ptx_per_episode * cfg.mini_batch_size)
        if cfg.use_ptx and ptx % world:
            raise ConfigError(
                f"ptx_per_episode * mini_batch_size = {ptx} pretraining windows per minibatch must be divisible by the "
                f"number of processes ({world}) under a sharding engine: every process runs the same forwards"
            )

    # ------------------------------------------------------------------ small helpers
    def autocast(self):
        return precision.autocast(self.precision, self.acc.device.type)

    @property
    def raw_policy(self):
        return self.acc.unwrap_model(self.policy)

    def _no_sync_policy(self, active: bool):
        """Defer the policy's gradient all-reduce (PPO-ptx: the pretraining backward follows)."""
        return engines.no_sync(self.acc, self.policy, active)

    def _permuted(self, n: int, position: int, count: int, salt: int) -> np.ndarray:
        """``count`` indices of an endless stream of seeded permutations of range(n), from ``position``."""
        out = []
        while count > 0:
            epoch, k = divmod(position, n)
            order = np.random.default_rng([self.cfg.seed, salt, epoch]).permutation(n)
            take = min(count, n - k)
            out.append(order[k : k + take])
            position, count = position + take, count - take
        return np.concatenate(out)

    def prompt_indices(self, iteration: int) -> np.ndarray:
        """This process's prompts for ``iteration`` (its share of the global batch), each repeated
        ``samples_per_prompt`` times in a row: the rows of one group are adjacent and on one process."""
        per_iteration = self.cfg.batch_size // self.group
        idx = self._permuted(len(self.prompts), iteration * per_iteration, per_iteration, salt=0)
        return np.repeat(idx[self.acc.process_index :: self.acc.num_processes], self.group)

    def ptx_examples(self) -> list[dict]:
        """This process's pretraining windows for one minibatch (ptx_per_episode per episode)."""
        n = round(self.cfg.ptx_per_episode * self.cfg.mini_batch_size)
        idx = self._permuted(len(self.ptx_pool), self.state["ptx_position"], n, salt=1)
        self.state["ptx_position"] += n
        return [self.ptx_pool[i] for i in idx[self.acc.process_index :: self.acc.num_processes]]

    # ------------------------------------------------------------------ rollout and scoring
    @torch.no_grad()
    def rollout(self, iteration: int) -> Episodes:
        idx = self.prompt_indices(iteration)
        device = self.acc.device
        ids, mask = left_pad([self.prompts[i] for i in idx], self.pad_id)  # (B, P) one width for the batch
        whole = self.cfg.rollout_gather == "whole"
        parts = []
        for s in range(0, len(idx), self.chunk):
            p_ids, p_mask = ids[s : s + self.chunk].to(device), mask[s : s + self.chunk].to(device)
            with self.autocast(), evaluation_mode(self.raw_policy), engines.gathered(self.acc, self.policy, whole):
                # the KV cache is on in evaluation mode only; sharded weights gathered once for all decoding steps
                # (rollout_gather=whole), or per layer in each forward, every process then sampling to the same step
                resp, rmask, has_eos = sample_fast(
                    self.raw_policy,
                    p_ids,
                    p_mask,
                    cuda_graph=self.cuda_graphs,
                    max_new_tokens=self.cfg.response_length,
                    eos_id=self.eos_id,
                    pad_id=self.pad_id,
                    temperature=self.cfg.temperature,
                    **({} if whole or not engines.is_sharded(self.acc) else {"all_done": engines.every_process_done}),
                )
            parts.append(
                Episodes(p_ids, p_mask, resp, rmask, has_eos, torch.as_tensor(idx[s : s + self.chunk], device=device))
            )
        return _cat_episodes(parts, self.pad_id)

    @torch.no_grad()
    def score(self, ep: Episodes, need_old: bool) -> dict[str, torch.Tensor]:
        """Reference log-probs, RM scores and (when not fused) old log-probs, values and entropy."""
        R = ep.responses.shape[1]
        out: dict[str, list[torch.Tensor]] = {"ref_logprobs": [], "scores": []}
        if need_old:
            out.update(old_logprobs=[], old_values=[], entropy=[])
        ids_all, attn_all = ep.input_ids, ep.attention_mask
        with engines.frozen_resharded(self.acc, self.ref, self.rm):
            self._score_chunks(ep, ids_all, attn_all, R, need_old, out)
        return {k: torch.cat(v) for k, v in out.items() if v}

    def _score_chunks(self, ep: Episodes, ids_all, attn_all, R: int, need_old: bool, out: dict) -> None:
        for s in range(0, len(ep), self.chunk):
            ids, attn = ids_all[s : s + self.chunk], attn_all[s : s + self.chunk]
            with self.autocast():
                if self.ref is not None:
                    ref_lp, _ = self.policy_forward(self.ref, ids, attn, R, self.cfg.temperature)
                else:  # LoRA: the reference is the policy with its adapters disabled
                    with adapters_disabled(self.raw_policy):
                        ref_lp, _ = self.policy_forward(self.raw_policy, ids, attn, R, self.cfg.temperature)
                rm_ids, rm_mask = right_align(ids, attn, self.pad_id)  # RM reads prompt+response+EOS from column 0
                out["scores"].append(self.rm(input_ids=rm_ids, attention_mask=rm_mask).float())
                out["ref_logprobs"].append(ref_lp)
                if need_old:
                    lp, ent = self.policy_forward(
                        self.raw_policy, ids, attn, R, self.cfg.temperature, with_entropy=True
                    )
                    out["old_logprobs"].append(lp)
                    out["entropy"].append(ent)
                    if self.value is not None:
                        out["old_values"].append(self.value_forward(self.acc.unwrap_model(self.value), ids, attn, R))

    def advantages(self, ep: Episodes, scored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-token rewards and advantages: GAE over the value model's estimates, whitened, with its returns
        (InstructGPT Eq. 2; App. C.4), or a critic-free estimator (``cfg.advantage``)."""
        cfg, mask = self.cfg, ep.response_mask
        kl = kl_penalty(scored["old_logprobs"], scored["ref_logprobs"], cfg.kl_kind, cfg.kl_clamp_min, mask)  # (B, R)
        scores = scored["scores"]  # (B,)
        if cfg.score_clip is not None:  # the RM score only: the EOS penalty below is the user's own number
            scores = scores.clamp(-cfg.score_clip, cfg.score_clip)
        if cfg.missing_eos_penalty is not None:
            scores = eos_penalty(scores, ep.has_eos, cfg.missing_eos_penalty)  # Huang et al. 2023 policy detail 5
        beta = self.kl_ctl.beta if cfg.kl_in == "reward" else 0.0  # kl_in=loss: the KL is a loss term instead
        rewards = per_token_rewards(scores, kl, beta, mask)  # (B, R) -beta*KL_t, + score at the last token
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        out = {"kl": kl, "final_scores": scores, "rewards": rewards}
        if cfg.advantage == "gae":
            adv, returns = gae(rewards, scored["old_values"], mask, gamma=cfg.gamma, lam=cfg.lam)  # (B, R)
            out["returns"] = returns
            adv = masked_whiten(adv, mask)  # Huang et al. 2023 policy detail 9
        elif cfg.advantage == "reinforce":
            # REINFORCE++ (Hu 2025): the reward-to-go of each token (GAE with V = 0 and lambda = 1), whitened
            # over the batch in place of a learned baseline
            togo, _ = gae(rewards, torch.zeros_like(rewards), mask, gamma=cfg.gamma, lam=1.0)  # (B, R)
            adv = masked_whiten(togo, mask)
        else:  # grpo / rloo: the sequence's total reward against the other responses to its prompt
            seq = rewards.sum(dim=-1).view(-1, self.group)  # (G, n) score - beta * sum_t KL_t
            adv = sequence_advantages(group_advantages(seq, cfg.advantage).view(-1), mask)  # (B, R)
            out["group_std"] = seq.std(dim=1, unbiased=False)  # (G,)
        out["advantages"] = adv
        return out

    # ------------------------------------------------------------------ optimization
    def ptx_backward(self, examples: list[dict]) -> torch.Tensor:
        """Accumulate ptx_coef * grad of the mean token NLL over ``examples`` (InstructGPT Eq. 2, App. C.4)."""
        total_tokens = max(1, sum(len(e["input_ids"]) - 1 for e in examples))
        mb = self.cfg.ptx_micro_batch_size
        loss_sum = torch.zeros((), device=self.acc.device)
        for j in range(0, len(examples), mb):
            part = examples[j : j + mb]
            batch = {k: v.to(self.acc.device) for k, v in collate(part, self.pad_id).items()}
            last = j + mb >= len(examples)
            with self._no_sync_policy(not last):
                with self.autocast():
                    logits = self.policy(
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
                    ).logits[:, :-1]  # (b, T-1, V)
                labels = batch["labels"][:, 1:]  # (b, T-1)
                mask = labels != IGNORE_INDEX
                n_tok = int(mask.sum())
                loss = ptx_loss(logits, labels.clamp(min=0), mask) * (n_tok / total_tokens)  # share of the token mean
                # gamma * LM-loss gradient, accumulated
                engines.backward(self.acc, self.policy, self.cfg.ptx_coef * loss, last)
            loss_sum += loss.detach()
        return loss_sum

    def minibatch_backward(
        self,
        mb: dict[str, torch.Tensor],
        graph: tuple[torch.Tensor, torch.Tensor] | None = None,
        ptx_examples: list[dict] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Gradients of one minibatch: PPO (policy + value) and, for PPO-ptx, the scaled pretraining loss,
        accumulated in .grad; no optimizer step. ``graph`` = (logprobs, values) of a forward already done."""
        cfg, mask, R = self.cfg, mb["response_mask"], mb["responses"].shape[1]
        with self._no_sync_policy(bool(ptx_examples)):
            if graph is None:
                ids = torch.cat([mb["prompt_ids"], mb["responses"]], dim=1)
                attn = torch.cat([mb["prompt_mask"].long(), mask.long()], dim=1)
                with self.autocast():
                    logprobs, _ = self.policy_forward(self.policy, ids, attn, R, cfg.temperature)
                    values = self.value_forward(self.value, ids, attn, R) if self.value is not None else None
            else:
                logprobs, values = graph
            pg, pg_stats = policy_loss(logprobs, mb["old_logprobs"], mb["advantages"], mask, cfg.cliprange)
            loss = pg
            stats = {
                "policy_loss": pg.detach(),
                "policy_clipfrac": pg_stats["clipfrac"],
                "approx_kl": pg_stats["approx_kl"],
                "ratio_mean": pg_stats["ratio_mean"],
            }
            if cfg.kl_in == "loss":  # GRPO (Shao et al. 2024 Eq. 3): + beta * KL(pi || pi_ref) per token, k3
                kl_t = kl_penalty(logprobs, mb["ref_logprobs"], cfg.kl_kind, cfg.kl_clamp_min, mask)  # (B, R)
                kl_term = masked_mean(kl_t, mask)
                loss = loss + self.kl_ctl.beta * kl_term
                stats["kl_loss"] = kl_term.detach()
            if values is not None:
                vf, vf_stats = value_loss(values, mb["old_values"], mb["returns"], mask, cfg.cliprange_value)
                stats.update(value_loss=vf.detach(), value_clipfrac=vf_stats["clipfrac"], value_mse=vf_stats["mse"])
            if engines.is_deepspeed(self.acc):  # one DeepSpeed engine per model, each with its own backward
                engines.backward(self.acc, self.policy, loss, last=not ptx_examples)
                if values is not None:
                    engines.backward(self.acc, self.value, cfg.vf_coef * vf)
            else:  # separate models: pg reaches the policy, vf the value model
                self.acc.backward(loss + cfg.vf_coef * vf if values is not None else loss)
        if ptx_examples:
            # the PPO part of the policy gradient alone, before gamma * ptx is added: next to
            # ppo/policy_grad_norm (the sum) it shows which of the two drives the update. Not measured under a sharding
            # engine: FSDP2 holds each process's shard of it (the norm would need a collective here), DeepSpeed its
            # own buffers until the minibatch's last backward.
            if not engines.is_sharded(self.acc):
                grads = [p.grad.detach().norm() for p in self.policy.parameters() if p.grad is not None]
                stats["pg_grad_norm"] = torch.linalg.vector_norm(torch.stack(grads)) if grads else torch.zeros(())
            stats["ptx_loss"] = self.ptx_backward(ptx_examples)
        return stats

    def optimizer_step(self, lr: float, value_lr: float) -> tuple[float, float]:
        """Clip, step both optimizers (the shared guarded step), update the EMA. Returns the gradient norms
        (equal on every rank)."""
        set_lr(self.pol_opt, lr)
        if self.val_opt is not None:
            set_lr(self.val_opt, value_lr)
        # the policy's own parameters only when the value model's adapter lives in its layers
        models = [("policy", self.pol_params if self.shares_base else self.policy, self.pol_opt)]
        if self.value is not None:
            models.append(("value", self.value, self.val_opt))
        norms = clip_and_step(self.acc, models, self.cfg.max_grad_norm, self._fail)
        if self.ema is not None:
            ema_update(self.ema, self.raw_policy, self.cfg.ema_decay)  # InstructGPT App. C.4: EMA 0.992
        if self.ema_shards is not None:
            self.ema_shards.update(self.cfg.ema_decay)
        return norms[0], norms[1] if len(norms) > 1 else 0.0

    def _fail(self, what: str) -> NoReturn:
        raise self.ckpts.diverged(
            "ppo",
            what,
            f"iteration {self.state['iteration'] + 1}",
            "Lower the learning rate, raise kl_coef or turn on adaptive_kl, then continue with --resume.",
        )

    # ------------------------------------------------------------------ one iteration
    def collect(self, it: int) -> tuple[Episodes, dict[str, torch.Tensor], dict[str, torch.Tensor], tuple | None]:
        """Rollout, scoring, rewards and advantages of iteration ``it``. Returns the episodes, the scored
        tensors, the advantages and, when fused, the (logprobs, values) graph of the first minibatch."""
        ep = self.rollout(it)
        self._t_gen = time.perf_counter()
        R = ep.responses.shape[1]
        scored = self.score(ep, need_old=not self.fused)
        graph = None
        if self.fused:  # one forward gives the old log-probs/values and the first minibatch's graph
            with self._no_sync_policy(self.ptx_pool is not None), self.autocast():
                logprobs, entropy = self.policy_forward(
                    self.policy, ep.input_ids, ep.attention_mask, R, self.cfg.temperature, with_entropy=True
                )
                values = None
                if self.value is not None:
                    values = self.value_forward(self.value, ep.input_ids, ep.attention_mask, R)
                    scored["old_values"] = values.detach()
            graph = (logprobs, values)
            scored.update(old_logprobs=logprobs.detach(), entropy=entropy)
        return ep, scored, self.advantages(ep, scored), graph

    @staticmethod
    def batch_tensors(
        ep: Episodes, scored: dict[str, torch.Tensor], adv: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The per-episode tensors a minibatch is cut from (rows = episodes)."""
        tensors = {
            "prompt_ids": ep.prompt_ids,
            "prompt_mask": ep.prompt_mask,
            "responses": ep.responses,
            "response_mask": ep.response_mask,
            "old_logprobs": scored["old_logprobs"],
            "ref_logprobs": scored["ref_logprobs"],
            "advantages": adv["advantages"],
        }
        if "old_values" in scored:
            tensors.update(old_values=scored["old_values"], returns=adv["returns"])
        return tensors

    def iteration(self, it: int) -> tuple[dict[str, float], Episodes, dict[str, torch.Tensor]]:
        cfg, t0 = self.cfg, time.perf_counter()
        lr = lr_at(
            it,
            self.total_iterations,
            cfg.learning_rate,
            warmup_steps=cfg.warmup_iterations,
            warmup_start=cfg.warmup_start,
            schedule="constant",
        )  # InstructGPT App. C.4
        value_lr = lr_at(
            it,
            self.total_iterations,
            cfg.value_learning_rate or cfg.learning_rate,
            warmup_steps=cfg.warmup_iterations,
            warmup_start=cfg.warmup_start,
            schedule="constant",
        )
        ep, scored, adv, graph = self.collect(it)
        t_gen, t_score = self._t_gen, time.perf_counter()

        # guards on the rollout: a NaN anywhere or an exploding KL stops before any weight changes
        seq_kl = adv["kl"].sum(dim=-1)  # (B,)
        guard = self.acc.reduce(torch.stack([seq_kl.mean(), scored["scores"].mean()]).float(), reduction="mean")
        kl_now, score_now = float(guard[0]), float(guard[1])
        if not math.isfinite(score_now):
            self._fail(f"the reward model returned a non-finite score ({score_now})")
        if not math.isfinite(kl_now):
            self._fail(f"the KL from the reference became {kl_now}")
        if cfg.max_kl is not None and kl_now > cfg.max_kl:
            self._fail(f"the KL from the reference reached {kl_now:.3g} nats per response, above max_kl={cfg.max_kl}")

        batch = self.batch_tensors(ep, scored, adv)
        sums: dict[str, torch.Tensor] = {}
        steps, gnorm = 0, (0.0, 0.0)
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(len(ep), device=ep.responses.device) if self.n_minibatches > 1 else None
            for k in range(self.n_minibatches):
                if order is None:
                    mb = batch
                else:
                    rows = order[k * self.local_mini : (k + 1) * self.local_mini]
                    mb = {name: t[rows] for name, t in batch.items()}
                use_graph = graph if (epoch == 0 and k == 0) else None
                stats = self.minibatch_backward(mb, use_graph, self.ptx_examples() if self.ptx_pool else None)
                gnorm = self.optimizer_step(lr, value_lr)
                steps += 1
                for name, v in stats.items():
                    sums[name] = sums.get(name, 0) + v
        graph = None
        t_train = time.perf_counter()

        mask = ep.response_mask
        local = {
            "score_mean": scored["scores"].mean(),
            "score_std": scored["scores"].std(unbiased=False),
            "reward_mean": adv["final_scores"].mean(),
            "kl": seq_kl.mean(),
            "non_score_reward": adv["rewards"].sum(-1).mean() - adv["final_scores"].mean(),
            "entropy": masked_mean(scored["entropy"], mask),
            "response_length": mask.float().sum(-1).mean(),
            "eos_rate": ep.has_eos.float().mean(),
            **{name: v / steps for name, v in sums.items()},
        }
        if "old_values" in scored:
            local.update(
                value_mean=masked_mean(scored["old_values"], mask), return_mean=masked_mean(adv["returns"], mask)
            )
        if "group_std" in adv:  # how much the responses to one prompt differ; a group with none teaches nothing
            local.update(group_score_std=adv["group_std"].mean(), flat_groups=(adv["group_std"] < 1e-6).float().mean())
        names = list(local)
        reduced = self.acc.reduce(
            torch.stack([torch.as_tensor(local[n], dtype=torch.float32, device=self.acc.device) for n in names]),
            reduction="mean",
        )
        metrics = {f"ppo/{n}": float(v) for n, v in zip(names, reduced.tolist())}
        beta_used = self.kl_ctl.beta
        self.kl_ctl.update(kl_now, cfg.batch_size)  # Ziegler et al. 2019 (no-op for the fixed coefficient)
        t_end = time.perf_counter()
        metrics.update(
            {
                "ppo/beta": beta_used,
                "ppo/lr": lr,
                "ppo/policy_grad_norm": gnorm[0],
                **({"ppo/value_grad_norm": gnorm[1]} if self.value is not None else {}),
                "ppo/optimizer_steps": steps,
                "ppo/episodes_per_s": cfg.batch_size / (t_end - t0),
                "time/generate_s": t_gen - t0,
                "time/score_s": t_score - t_gen,
                "time/train_s": t_train - t_score,
                "time/iteration_s": t_end - t0,
            }
        )
        return metrics, ep, {**scored, **adv}

    # ------------------------------------------------------------------ checkpoints
    def _save_extra(self, directory: Path) -> None:
        if self.ema is not None:
            torch.save(self.ema.state_dict(), directory / "ema.pt")

    def _ema_shard_file(self, directory: Path) -> Path:
        return directory / f"ema-shard-{self.acc.process_index}.pt"

    def _save_ema_shard(self, directory: Path) -> None:
        if self.ema_shards is not None:
            torch.save(self.ema_shards.state_dict(), self._ema_shard_file(directory))

    def save_checkpoint(self) -> Path:
        state = {**self.state, "kl_controller": self.kl_ctl.state_dict()}
        return self.ckpts.save(
            self.state["iteration"], state, extra_save=self._save_extra, extra_save_every_process=self._save_ema_shard
        )

    def resume(self) -> None:
        found = self.ckpts.start(self.cfg.resume)
        done = found[1]["iteration"] if found is not None else 0
        if self.acc.is_main_process:  # rows written after the checkpoint are written again from here
            mark_unfinished(self.out)
            truncate_jsonl(self.metrics.path, done)
            truncate_jsonl(self.out / "samples.jsonl", done, key="iteration")
        if found is None:
            return
        latest, state = found
        self.kl_ctl.load_state_dict(state.pop("kl_controller"))
        self.state = state
        if self.ema is not None:
            self.ema.load_state_dict(torch.load(latest / "ema.pt", map_location=self.acc.device, weights_only=True))
        if self.ema_shards is not None:
            shard = torch.load(self._ema_shard_file(latest), map_location="cpu", weights_only=True)  # copied in place
            self.ema_shards.load_state_dict(shard)
        log.info("resumed from %s (iteration %d of %d)", latest, state["iteration"], self.total_iterations)

    # ------------------------------------------------------------------ samples and outputs
    def write_samples(self, it: int, ep: Episodes, info: dict[str, torch.Tensor]) -> None:
        if not self.acc.is_main_process or not self.cfg.num_samples:
            return
        rows = []
        for i in range(min(self.cfg.num_samples, len(ep))):
            prompt = ep.prompt_ids[i][ep.prompt_mask[i].bool()].tolist()
            resp = ep.responses[i][ep.response_mask[i]].tolist()
            rows.append(
                {
                    "iteration": it,
                    "episodes": self.state["episodes"],
                    "prompt": self.tokenizer.decode(prompt),
                    "response": self.tokenizer.decode(resp, skip_special_tokens=True),
                    "score": float(info["scores"][i]),
                    "has_eos": bool(ep.has_eos[i]),
                    "kl": float(info["kl"][i].sum()),
                }
            )
        with open(self.out / "samples.jsonl", "a", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")

    def finish(self) -> None:
        """Output: the EMA policy (or the last policy) in OUT, plus OUT/value_model and a sync check."""
        save_value = self.cfg.save_value_model and self.value is not None
        # sharded weights gathered whole onto the main process (collectives: every process takes part)
        policy_state = engines.full_state_dict(self.acc, self.policy)
        value_state = engines.full_state_dict(self.acc, self.value) if save_value else None
        average_state = None
        if self.ema_shards is not None:
            with self.ema_shards.swapped_in():
                average_state = engines.full_state_dict(self.acc, self.policy)
        if self.acc.is_main_process:
            if average_state is not None:  # sharded: the average, gathered, goes into the policy's own files
                save_pretrained_atomic(self.raw_policy, self.tokenizer, self.out, state_dict=average_state)
            else:
                final = self.ema if self.ema is not None else self.raw_policy
                save_pretrained_atomic(final, self.tokenizer, self.out, state_dict=policy_state)
            if self.ema is not None or average_state is not None:
                save_pretrained_atomic(
                    self.raw_policy, self.tokenizer, self.out / "last_policy", state_dict=policy_state
                )
            if save_value:
                vm = self.acc.unwrap_model(self.value)
                vm.save_pretrained(self.out / "value_model", state_dict=value_state)
                self.tokenizer.save_pretrained(self.out / "value_model")
        value = self.acc.unwrap_model(self.value) if self.value is not None else None
        checks, shares = engines.sync_record(self.acc, self.raw_policy, value, self.ref, self.rm)
        if self.acc.is_main_process:
            (self.out / "dist_sync.json").write_text(
                json.dumps(
                    {
                        "num_processes": self.acc.num_processes,
                        "param_checksums": [c[0] for c in checks],
                        "value_param_checksums": [c[1] for c in checks],
                        "parameters_held": [s[0] for s in shares],
                        "value_parameters_held": [s[1] for s in shares],
                        "frozen_placement": self.frozen_placement,
                        "reference_parameters_held": [s[2] for s in shares],
                        "reward_parameters_held": [s[3] for s in shares],
                        "distributed_type": str(self.acc.distributed_type),
                    },
                    indent=1,
                )
            )
        self.metrics.close()
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            mark_complete(self.out, stage="ppo", iterations=self.state["iteration"])  # last: the run is finished
        self.acc.wait_for_everyone()

    # ------------------------------------------------------------------ loop
    def train(self, callbacks: list[Callback] | None = None) -> PPOResult:
        self.resume()
        cfg, history = self.cfg, []
        total = self.total_iterations * cfg.batch_size
        bar = tqdm(
            total=total,
            initial=self.state["episodes"],
            desc="ppo",
            unit="ep",
            dynamic_ncols=True,
            disable=not (cfg.progress and self.acc.is_main_process),
        )
        for it in range(self.state["iteration"], self.total_iterations):
            metrics, ep, info = self.iteration(it)
            self.state["iteration"] = done = it + 1
            self.state["episodes"] += cfg.batch_size
            metrics["ppo/episodes"] = self.state["episodes"]
            history.append(metrics)
            if done % cfg.logging_steps == 0 or done == self.total_iterations:
                self.metrics.log(metrics, step=done)
            if cfg.sample_every and (done % cfg.sample_every == 0 or done == 1):
                self.write_samples(done, ep, info)
            if done % cfg.checkpoint_every == 0 and done < self.total_iterations:
                self.save_checkpoint()
            bar.set_postfix(
                score=f"{metrics['ppo/score_mean']:.3f}",
                kl=f"{metrics['ppo/kl']:.2f}",
                ep_s=f"{metrics['ppo/episodes_per_s']:.1f}",
            )
            bar.update(cfg.batch_size)
            for cb in callbacks or []:
                cb(done, metrics)
        bar.close()
        self.finish()
        return PPOResult(self.out, self.state["iteration"], self.state["episodes"], history)
