"""PPO-ptx keeps the language model: on a synthetic task, held-out LM loss drifts less with ptx."""

import torch
from ppo_helpers import TokenRewardScorer, quick_cfg
from testkit import fact_demos, write_jsonl

from instructrl.ppo.api import run_ppo


def heldout_loss(model_dir, texts) -> float:
    from instructrl.data.tokenize import collate, pack_texts
    from instructrl.modeling.loading import load_causal_lm, load_tokenizer

    tok = load_tokenizer(str(model_dir))
    model = load_causal_lm(str(model_dir), tok).eval()
    batch = collate(pack_texts(texts, tok, 32), tok.pad_token_id)
    with torch.no_grad():
        return float(
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        )


def test_ptx_keeps_heldout_lm_loss_closer_to_the_initial_model(ppo_world, tmp_path):
    from instructrl.sft.api import run_pretrain
    from instructrl.sft.config import PretrainConfig

    texts = [d["prompt"] + " " + d["completion"] for d in fact_demos(400, seed=5)]
    train_file = write_jsonl(tmp_path / "pt.jsonl", [{"text": t} for t in texts[:300]])
    heldout = texts[300:]
    base = tmp_path / "base"
    run_pretrain(
        PretrainConfig(
            model=str(ppo_world["policy"]),
            data=str(train_file),
            output_dir=str(base),
            epochs=6,
            batch_size=16,
            max_length=32,
            learning_rate=3e-3,
            warmup_steps=5,
            eval_fraction=0.0,
            select_by="last",
            progress=False,
        )
    )
    world = {**ppo_world, "policy": base}
    common = dict(
        value_model=str(ppo_world["rm"]),
        reward_model=None,
        total_episodes=16 * 12,
        batch_size=16,
        mini_batch_size=4,
        response_length=8,
        learning_rate=1e-2,
        kl_coef=0.02,
        missing_eos_penalty=None,
        checkpoint_every=100,
        sample_every=0,
    )
    plain = run_ppo(quick_cfg(world, tmp_path / "ppo", **common), reward_model=TokenRewardScorer(32, scale=20.0))
    ptx = run_ppo(
        quick_cfg(
            world,
            tmp_path / "ptx",
            ptx_data=str(train_file),
            ptx_coef=1.0,
            ptx_per_episode=2,
            ptx_max_length=32,
            **common,
        ),
        reward_model=TokenRewardScorer(32, scale=20.0),
    )
    initial = heldout_loss(base, heldout)
    loss_plain, loss_ptx = heldout_loss(tmp_path / "ppo", heldout), heldout_loss(tmp_path / "ptx", heldout)
    assert abs(loss_ptx - initial) < abs(loss_plain - initial), (initial, loss_plain, loss_ptx)
    assert loss_plain > initial + 0.1  # plain PPO did move away from the pretrained model
    # both still learned the reward
    for r in (plain, ptx):
        s = [h["ppo/score_mean"] for h in r.history]
        assert sum(s[-3:]) / 3 > sum(s[:3]) / 3
