"""Rollout helpers: EOS masking, left padding and position ids, right alignment for the RM, sampling."""

import logging

import pytest
import torch

from instructrl.data.tokenize import left_pad
from instructrl.ppo.rollout import (
    mask_after_eos,
    policy_forward,
    position_ids_from_mask,
    response_mask_after_eos,
    right_align,
    sample_categorical,
    sample_fast,
    sample_responses,
    sample_responses_static,
    trim_responses,
)

EOS, PAD = 0, 1


def test_response_mask_keeps_the_first_eos_and_masks_after_it():
    r = torch.tensor([[5, 6, EOS, 7, EOS], [5, 6, 7, 8, 9], [EOS, 4, 4, 4, 4]])
    mask = response_mask_after_eos(r, EOS)
    assert mask.tolist() == [[True, True, True, False, False], [True] * 5, [True, False, False, False, False]]
    cleaned, mask2, has_eos = mask_after_eos(r, EOS, PAD)
    assert cleaned.tolist() == [[5, 6, EOS, PAD, PAD], [5, 6, 7, 8, 9], [EOS, PAD, PAD, PAD, PAD]]
    assert torch.equal(mask, mask2) and has_eos.tolist() == [True, False, True]
    ids, m = trim_responses(cleaned[[0, 2]], mask[[0, 2]])
    assert ids.tolist() == [[5, 6, EOS], [EOS, PAD, PAD]] and m.shape == (2, 3)


def test_position_ids_for_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]]
    # a response cut at EOS: padding after the real tokens keeps counting harmlessly
    assert position_ids_from_mask(torch.tensor([[0, 1, 1, 0]])).tolist() == [[0, 0, 1, 1]]


def test_left_pad_and_right_align_round_trip():
    ids, mask = left_pad([[7, 8, 9], [5]], PAD)
    assert ids.tolist() == [[7, 8, 9], [PAD, PAD, 5]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    full = torch.tensor([[PAD, 3, 4, 5, EOS, PAD], [2, 3, 4, 5, 6, 7], [PAD, PAD, PAD, 3, EOS, PAD]])
    fmask = (full != PAD).long()
    r_ids, r_mask = right_align(full, fmask, PAD)
    assert r_ids.tolist() == [[3, 4, 5, EOS, PAD, PAD], [2, 3, 4, 5, 6, 7], [3, EOS, PAD, PAD, PAD, PAD]]
    assert r_mask.tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6, [1, 1, 0, 0, 0, 0]]


def _tiny_lm(vocab=50, seed=0, attn_implementation="sdpa"):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=EOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    cfg._attn_implementation = attn_implementation
    return GPT2LMHeadModel(cfg).eval()


def _ragged_prompts(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(2, 50, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist() for _ in range(n)
    ]


def test_left_padded_rows_score_like_unpadded_rows():
    model = _tiny_lm()
    prompts = [[5, 6, 7, 8], [9, 10]]
    ids, mask = left_pad(prompts, PAD)
    resp = torch.tensor([[11, 12, EOS], [13, EOS, PAD]])
    rmask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    full, fmask = torch.cat([ids, resp], 1), torch.cat([mask, rmask], 1)
    with torch.no_grad():
        lp, ent = policy_forward(model, full, fmask, 3, temperature=0.7, with_entropy=True)
        for b, p in enumerate(prompts):
            n = int(rmask[b].sum())
            row = torch.tensor([p + resp[b, :n].tolist()])
            logits = model(row).logits[0, len(p) - 1 : -1] / 0.7
            expected = torch.log_softmax(logits, -1).gather(-1, resp[b, :n, None]).squeeze(-1)
            torch.testing.assert_close(lp[b, :n], expected, atol=1e-5, rtol=1e-5)
    assert ent[1, 2] == 0 and (ent[0] > 0).all()


def test_sampling_puts_pad_after_eos_and_matches_unpadded_greedy():
    model = _tiny_lm()
    with torch.no_grad():
        model.lm_head.weight[EOS] += 0.5  # make EOS likely enough to appear
    ids, mask = left_pad([[5, 6, 7, 8], [9, 10]], PAD)
    torch.manual_seed(0)
    resp, rmask, has_eos = sample_responses(model, ids, mask, max_new_tokens=12, eos_id=EOS, pad_id=PAD)
    for b in range(2):
        row = resp[b].tolist()
        if has_eos[b]:
            k = row.index(EOS)
            assert all(t == PAD for t in row[k + 1 :]) and rmask[b, : k + 1].all() and not rmask[b, k + 1 :].any()
        else:
            assert rmask[b].all()
    # a near-zero temperature is greedy: the padded batch gives what each prompt gives alone
    greedy, _gmask, _ = sample_responses(model, ids, mask, max_new_tokens=6, eos_id=EOS, pad_id=PAD, temperature=1e-4)
    alone, amask, _ = sample_responses(
        model,
        torch.tensor([[9, 10]]),
        torch.ones(1, 2, dtype=torch.long),
        max_new_tokens=6,
        eos_id=EOS,
        pad_id=PAD,
        temperature=1e-4,
    )
    n = int(amask.sum())
    assert greedy[1, :n].tolist() == alone[0, :n].tolist()


def test_sample_categorical_draws_from_the_given_distribution():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.5, 0.0, 0.2, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    n = 40000
    draws = sample_categorical(probs.repeat(n, 1), g).view(n, 2)  # rows alternate between the two
    freq0 = torch.bincount(draws[:, 0], minlength=5).float() / n
    torch.testing.assert_close(freq0, probs[0], atol=0.01, rtol=0)  # 4.5 standard errors at most
    assert freq0[1] == 0 and freq0[4] == 0  # zero-probability entries are never drawn
    assert (draws[:, 1] == 4).all()
    # unnormalized rows (a mass below 1 after rounding) and the top of the uniform range stay in bounds
    top = sample_categorical(torch.tensor([[0.25, 0.25, 0.0]]).repeat(1000, 1), g)
    assert set(top.tolist()) <= {0, 1}


def _tiny_llama(attn_implementation):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=EOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    cfg._attn_implementation = attn_implementation
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_static_cache_sampling_draws_what_the_dynamic_cache_draws(arch, attn):
    """The fixed-shape decoding loop (static KV cache, prepared 4-D mask: what the CUDA graph replays)
    gives the same responses as the plain KV-cached loop from the same random numbers, with ragged
    left-padded prompts, EOS mid-way and PAD after it (GPT-2: learned positions; Llama: rotary, grouped
    KV heads)."""
    model = _tiny_lm(attn_implementation=attn) if arch == "gpt2" else _tiny_llama(attn)
    assert model.config._attn_implementation == attn
    with torch.no_grad():
        model.get_output_embeddings().weight[EOS] += 0.6  # some rows end early, some run to the limit
    ids, mask = left_pad(_ragged_prompts(), PAD)
    outs = []
    for fn in (sample_responses, sample_responses_static):
        g = torch.Generator().manual_seed(3)
        outs.append(fn(model, ids, mask, max_new_tokens=10, eos_id=EOS, pad_id=PAD, temperature=0.9, generator=g))
    (r1, m1, e1), (r2, m2, e2) = outs
    assert torch.equal(r1, r2) and torch.equal(m1, m2) and torch.equal(e1, e2)
    assert e1.any() and not e1.all()  # both kinds of row were exercised
    assert m1.sum(-1).min() < m1.shape[1]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_finished_rows_leaving_the_batch_change_no_sample(arch):
    """Rows that have ended leave the sampling batch (their cache rows dropped): the responses are those of
    the loop that carries every row to the end, from the same random numbers, and later forwards see fewer rows."""
    model = _tiny_lm() if arch == "gpt2" else _tiny_llama("sdpa")
    with torch.no_grad():
        model.get_output_embeddings().weight[EOS] += 0.6  # some rows end early, some run to the limit
    ids, mask = left_pad(_ragged_prompts(), PAD)
    rows_seen = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kw: rows_seen.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    outs = []
    for compact_at in (0.01, 2.0):  # drop finished rows at once; never
        g = torch.Generator().manual_seed(5)
        outs.append(
            sample_responses(
                model, ids, mask, max_new_tokens=10, eos_id=EOS, pad_id=PAD, generator=g, compact_at=compact_at
            )
        )
    hook.remove()
    (r1, m1, e1), (r2, m2, e2) = outs
    assert torch.equal(r1, r2) and torch.equal(m1, m2) and torch.equal(e1, e2)
    assert e1.any() and not e1.all()
    compacted, full = rows_seen[: len(rows_seen) // 2], rows_seen[len(rows_seen) // 2 :]
    assert min(compacted) < ids.shape[0] and set(full) == {ids.shape[0]}


def test_top_k_draws_only_the_k_likeliest_tokens():
    """With ``top_k`` every response token is among the k likeliest at its step (read back by one forward over
    prompt + response); top-k 1 is greedy decoding. The rankings sample this way, PPO never."""
    model = _tiny_lm()
    ids, mask = left_pad(_ragged_prompts(), PAD)
    g = torch.Generator().manual_seed(3)
    resp, rmask, _ = sample_responses(model, ids, mask, max_new_tokens=10, eos_id=EOS, pad_id=PAD, generator=g, top_k=3)
    full_mask = torch.cat([mask.long(), rmask.long()], dim=1)
    with torch.no_grad():
        logits = model(
            input_ids=torch.cat([ids, resp], dim=1),
            attention_mask=full_mask,
            position_ids=position_ids_from_mask(full_mask),
        ).logits[:, ids.shape[1] - 1 : -1]  # (B, R, V): the step that drew each response token
    rank = (logits > logits.gather(-1, resp.unsqueeze(-1))).sum(-1)  # (B, R) tokens likelier than the drawn one
    assert rank[rmask].max() < 3 and rank[rmask].float().mean() > 0  # within the top 3, not always the top 1
    one, one_mask, _ = sample_responses(model, ids, mask, max_new_tokens=8, eos_id=EOS, pad_id=PAD, top_k=1)
    greedy, greedy_mask, _ = sample_responses(
        model, ids, mask, max_new_tokens=8, eos_id=EOS, pad_id=PAD, temperature=1e-4
    )
    assert torch.equal(one, greedy) and torch.equal(one_mask, greedy_mask)
    with pytest.raises(ValueError, match="top_k"):
        sample_responses(model, ids, mask, max_new_tokens=2, eos_id=EOS, pad_id=PAD, top_k=0)


def test_static_cache_greedy_rows_do_not_see_their_padding():
    """Near-greedy decoding of a left-padded batch gives each row what its prompt gives alone."""
    model = _tiny_lm(seed=1)
    prompts = _ragged_prompts(6, seed=1)
    ids, mask = left_pad(prompts, PAD)
    kw = dict(max_new_tokens=6, eos_id=EOS, pad_id=PAD, temperature=1e-4)
    batch, bmask, _ = sample_responses_static(model, ids, mask, **kw)
    for b, p in enumerate(prompts):
        alone, amask, _ = sample_responses_static(
            model, torch.tensor([p]), torch.ones(1, len(p), dtype=torch.long), **kw
        )
        n = int(amask.sum())
        assert batch[b, :n].tolist() == alone[0, :n].tolist() and int(bmask[b].sum()) == n


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_cuda_graph_sampling_matches_the_eager_static_loop(dtype):
    model = _tiny_lm().cuda()
    with torch.no_grad():
        model.lm_head.weight[EOS] += 0.6
    ids, mask = left_pad(_ragged_prompts(), PAD)
    ids, mask = ids.cuda(), mask.cuda()
    outs = []
    for graph in (False, True):
        g = torch.Generator(device="cuda").manual_seed(5)
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            outs.append(
                sample_responses_static(
                    model, ids, mask, max_new_tokens=10, eos_id=EOS, pad_id=PAD, generator=g, cuda_graph=graph
                )
            )
    (r1, m1, _), (r2, m2, _) = outs
    assert r1.shape[1] > 2  # the graph was captured and replayed
    assert torch.equal(r1, r2) and torch.equal(m1, m2)


class _NoStaticCache(torch.nn.Module):
    """A causal LM that refuses prepared 4-D masks (as some attention kernels do)."""

    def __init__(self, lm):
        super().__init__()
        self.lm, self.config = lm, lm.config

    def forward(self, attention_mask=None, **kw):
        if attention_mask is not None and attention_mask.dim() == 4:
            raise NotImplementedError("4-D masks are not supported")
        return self.lm(attention_mask=attention_mask, **kw)


@cuda
def test_cuda_graph_sampling_falls_back_with_a_warning(caplog):
    model = _NoStaticCache(_tiny_lm().cuda())
    ids, mask = left_pad(_ragged_prompts(4), PAD)
    with caplog.at_level(logging.WARNING, logger="instructrl.ppo"):
        resp, rmask, _ = sample_fast(
            model, ids.cuda(), mask.cuda(), cuda_graph=True, max_new_tokens=5, eos_id=EOS, pad_id=PAD
        )
    assert "CUDA-graph sampling is not available" in caplog.text and "4-D masks" in caplog.text
    assert resp.shape[0] == 4 and rmask[:, 0].all()


def test_sampling_tracks_no_gradients_whoever_calls_it():
    """A caller outside torch.no_grad must not build an autograd graph through every decoding step."""
    model = _tiny_lm()
    seen = []
    model.register_forward_hook(lambda *_: seen.append(torch.is_grad_enabled()))
    ids, mask = left_pad([[5, 6, 7, 8], [9, 10]], PAD)
    assert torch.is_grad_enabled()
    for sample in (sample_responses, sample_responses_static):
        seen.clear()
        sample(model, ids, mask, max_new_tokens=4, eos_id=EOS, pad_id=PAD)
        assert seen and not any(seen)
