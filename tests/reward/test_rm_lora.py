"""A reward model trained with LoRA: adapters and the head train, the base stays, the output is a plain RM."""

import json

import torch
from rm_helpers import write_rankings

from instructrl.data.tokenize import left_pad
from instructrl.modeling.reward import load_frozen_reward, sequence_rewards
from instructrl.reward.api import run_rm
from instructrl.reward.config import RMConfig


def test_lora_reward_model_trains_and_saves_a_model_that_load_frozen_reward_loads(tiny_model, tmp_path):
    data = write_rankings(tmp_path / "rankings.jsonl", 24)
    out = tmp_path / "rm"
    result = run_rm(
        RMConfig(
            model=str(tiny_model),
            data=str(data),
            output_dir=str(out),
            batch_size=8,
            epochs=1,
            learning_rate=3e-3,
            max_length=64,
            eval_fraction=0.0,
            progress=False,
            lora_r=4,
            lora_target_modules=["c_attn"],
        )
    )
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert result.steps == 3 and all(torch.isfinite(torch.tensor(r["rm/loss"])) for r in rows)
    rm = load_frozen_reward(out)  # merged: a plain sequence classifier, no peft
    assert not any("lora" in n for n, _ in rm.model.named_parameters())
    # the base was frozen: the backbone's unadapted weights are the initial model's
    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(tiny_model).transformer.state_dict()
    trained = rm.model.transformer.state_dict()
    assert torch.equal(trained["h.0.mlp.c_fc.weight"], initial["h.0.mlp.c_fc.weight"])
    assert not torch.equal(trained["h.0.attn.c_attn.weight"], initial["h.0.attn.c_attn.weight"])  # merged adapter
    ids, mask = left_pad(
        [[5, 6, 7, rm.tokenizer.eos_token_id], [8, 9, rm.tokenizer.eos_token_id]], rm.tokenizer.pad_token_id
    )
    with torch.no_grad():
        scores = sequence_rewards(rm.model, ids, mask)
    assert scores.shape == (2,) and torch.isfinite(scores).all() and scores[0] != scores[1]
