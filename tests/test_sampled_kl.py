"""modeling.kl.sampled_kl: KL(pi || pi_ref) from the policy's own samples."""

import copy

import torch
from testkit import fact_demos

from instructrl.modeling.kl import sampled_kl
from instructrl.modeling.loading import load_causal_lm, load_tokenizer


def test_sampled_kl_is_zero_against_itself_positive_against_another_and_leaves_the_rng(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    model = load_causal_lm(str(tiny_model), tok, init_from_config=False)
    prompts = [d["prompt"] for d in fact_demos(12)]
    same = sampled_kl(model, copy.deepcopy(model), tok, prompts, max_new_tokens=6, batch_size=5)
    assert same["kl"] == 0.0 and same["n"] == 12 and 1 <= same["response_length"] <= 6
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = sampled_kl(model, other, tok, prompts, max_new_tokens=6, seed=7)
    assert torch.rand(1) == before  # the caller's random stream is untouched
    b = sampled_kl(model, other, tok, prompts, max_new_tokens=6, seed=7)
    assert a == b  # the same samples every time
    assert a["kl"] > 0 and a["kl_se"] > 0
