"""Ranking data collection: K samples per prompt from one or several policies, ranked by labelers."""

import random

import torch

from instructrl.experiments.pipeline import collect_rankings
from instructrl.world.kb import get_kb
from instructrl.world.labelers import make_pool
from instructrl.world.tasks import make_prompt


def _mute_policy(src, out):
    """A copy of ``src`` that says EOS at once (empty responses): tells its samples from the others."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        wte = model.get_input_embeddings().weight
        wte[tok.eos_token_id] *= 10.0
        model.transformer.ln_f.weight.zero_()  # every hidden state becomes the EOS direction
        model.transformer.ln_f.bias.copy_(100.0 * wte[tok.eos_token_id] / wte[tok.eos_token_id].norm())
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_k_samples_are_shared_out_among_policies(tiny_model, tmp_path):
    kb, pool, rng = get_kb(0), make_pool(0), random.Random(1)
    records = [make_prompt(kb, rng) for _ in range(6)]
    mute = _mute_policy(tiny_model, tmp_path / "mute")
    kw = dict(
        labelers=pool.training, reference=pool.reference, k_range=(3, 5), seed=0, max_new_tokens=6, group="training"
    )
    rows = collect_rankings([str(tiny_model), str(mute)], records, **kw)
    assert len(rows) == 6
    spoke = 0
    for rec, row in zip(records, rows):
        k = len(row["completions"])
        assert 3 <= k <= 5 and row["prompt"] == rec["prompt"]
        assert row["sources"] == [s % 2 for s in range(k)]
        assert len(row["ranks"]) == len(row["reference_ranks"]) == k
        assert all(c == "" for c, s in zip(row["completions"], row["sources"]) if s == 1)  # the mute policy's
        spoke += sum(c != "" for c, s in zip(row["completions"], row["sources"]) if s == 0)
    assert spoke >= 6  # the other policy's samples are its own
    # one policy, named alone or in a list: the same samples (seeded), and the rows carry no sources
    one = collect_rankings(str(tiny_model), records, **kw)
    again = collect_rankings([str(tiny_model)], records, **kw)
    assert "sources" not in one[0] and [r["completions"] for r in one] == [r["completions"] for r in again]


def test_sampled_texts_keep_the_prompts_order(tiny_model):
    """The rankings' sampler batches prompts by length and drops finished rows: near-greedy, each prompt gets
    what it gets alone, in the order given."""
    from instructrl.experiments.pipeline import sample_texts
    from instructrl.modeling.loading import load_causal_lm, load_tokenizer

    kb, rng = get_kb(0), random.Random(3)
    prompts = [make_prompt(kb, rng)["prompt"] for _ in range(7)]
    tok = load_tokenizer(str(tiny_model))
    model = load_causal_lm(str(tiny_model), tok, init_from_config=False)
    torch.manual_seed(0)
    with torch.no_grad():  # weights that make each prompt's greedy continuation its own
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    kw = dict(max_new_tokens=8, temperature=1e-4)
    together = sample_texts(model, tok, prompts, batch_size=3, **kw)
    alone = [sample_texts(model, tok, [p], **kw)[0] for p in prompts]
    assert together == alone and len(set(together)) > 1
    # top-k 1 at temperature 1 is the same greedy decoding
    assert sample_texts(model, tok, prompts, batch_size=3, max_new_tokens=8, top_k=1) == together
