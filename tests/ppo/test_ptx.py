"""PPO-ptx as InstructGPT did it: per minibatch, the PPO gradient plus gamma times the pretraining
LM-loss gradient, accumulated into one optimizer step (App. C.4)."""

import torch
from ppo_helpers import quick_cfg

from instructrl.data.tokenize import collate
from instructrl.losses import policy_loss, ptx_loss
from instructrl.ppo.api import build_trainer
from instructrl.ppo.rollout import policy_forward


def _grads(params):
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def test_one_step_gradient_is_ppo_plus_gamma_times_lm(ppo_world, tmp_path):
    cfg = quick_cfg(
        ppo_world,
        tmp_path / "out",
        ptx_data=str(ppo_world["ptx"]),
        ptx_coef=27.8,
        ptx_per_episode=2,
        ptx_max_length=16,
        ptx_micro_batch_size=3,
        mixed_precision="no",
    )  # exact sums, also on a GPU
    trainer = build_trainer(cfg)
    policy = trainer.raw_policy
    params = [p for p in policy.parameters() if p.requires_grad]
    ep, scored, adv, graph = trainer.collect(0)
    assert graph is None  # two minibatches per batch: no fused forward
    mb = {k: v[:4] for k, v in trainer.batch_tensors(ep, scored, adv).items()}
    examples = trainer.ptx_examples()
    assert len(examples) == 2 * 4  # ptx_per_episode x minibatch episodes

    stats = trainer.minibatch_backward(mb, None, examples)  # what the trainer accumulates before its one step
    total = _grads(params)
    trainer.pol_opt.zero_grad(set_to_none=True)
    trainer.val_opt.zero_grad(set_to_none=True)

    # independent PPO gradient of the same minibatch
    ids = torch.cat([mb["prompt_ids"], mb["responses"]], 1)
    attn = torch.cat([mb["prompt_mask"].long(), mb["response_mask"].long()], 1)
    lp, _ = policy_forward(policy, ids, attn, mb["responses"].shape[1], cfg.temperature)
    pg, _ = policy_loss(lp, mb["old_logprobs"], mb["advantages"], mb["response_mask"], cfg.cliprange)
    g_ppo = torch.autograd.grad(pg, params, allow_unused=True)
    # independent LM gradient: all windows in one batch, mean NLL over their tokens
    batch = {k: v.to(trainer.acc.device) for k, v in collate(examples, trainer.pad_id).items()}
    logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    lm = ptx_loss(logits, labels.clamp(min=0), labels != -100)
    g_lm = torch.autograd.grad(lm, params, allow_unused=True)

    for t, a, b in zip(total, g_ppo, g_lm):
        expected = (a if a is not None else 0) + 27.8 * (b if b is not None else 0)
        torch.testing.assert_close(t, expected + torch.zeros_like(t), atol=2e-5, rtol=1e-4)
    assert any(b is not None and b.abs().sum() > 0 for b in g_lm)
    # pg_grad_norm is the norm of the PPO part alone, measured before the pretraining gradient is added
    want = torch.linalg.vector_norm(torch.stack([a.norm() for a in g_ppo if a is not None]))
    torch.testing.assert_close(stats["pg_grad_norm"], want, atol=1e-5, rtol=1e-4)
    assert float(stats["pg_grad_norm"]) < float(torch.linalg.vector_norm(torch.stack([t.norm() for t in total])))


def test_ptx_run_takes_one_optimizer_step_per_minibatch(ppo_world, tmp_path):
    cfg = quick_cfg(
        ppo_world,
        tmp_path / "out",
        total_episodes=16,
        ppo_epochs=2,
        ptx_data=str(ppo_world["ptx"]),
        ptx_per_episode=1,
        ptx_max_length=16,
    )
    trainer = build_trainer(cfg)
    result = trainer.train()
    steps = [h["ppo/optimizer_steps"] for h in result.history]
    assert steps == [4, 4]  # (8 / 4 minibatches) x 2 epochs, per iteration
    assert trainer.pol_opt.state[next(iter(trainer.pol_opt.state))]["step"] == 8
    assert all(h["ppo/ptx_loss"] > 0 and h["ppo/pg_grad_norm"] > 0 for h in result.history)
    assert trainer.state["ptx_position"] == 2 * 2 * 2 * 4  # iterations x epochs x minibatches x windows
