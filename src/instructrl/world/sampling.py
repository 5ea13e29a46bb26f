"""Small generation helpers on plain transformers: sampling, greedy answers and log-likelihoods.

Generation pads on the left so every prompt ends where the new tokens start (Huang et al. 2023), and
samples at temperature 1 for ranking data (InstructGPT App. C.4). Benchmarks decode greedily and
cut at the first newline (§4.3 / App. E).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from instructrl.data.tokenize import right_pad
from instructrl.world.tokenizer import format_prompt


def share_slots(ks: list[int], n: int) -> list[list[tuple[int, int]]]:
    """Who writes which sample when prompt i gets ``ks[i]`` samples from ``n`` policies in turn: for each
    policy j, the (prompt index, sample index) pairs with sample index = j mod n, in prompt order."""
    return [[(i, s) for i, k in enumerate(ks) for s in range(j, k, n)] for j in range(n)]


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    *,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    stop_at_newline: bool = False,
) -> list[str]:
    """Continue each text; ``temperature == 0`` means greedy. Returns the new text only."""
    model.eval()
    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"  # an over-long prompt loses its beginning, never its end
    max_len = getattr(model.config, "n_positions", 1024) - max_new_tokens
    out: list[str] = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        enc = tokenizer(
            chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_len, add_special_tokens=False
        )
        kwargs = dict(
            do_sample=temperature > 0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        if temperature > 0:
            kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
        ids = model.generate(**enc.to(model.device), **kwargs)  # (B, T_prompt + T_new)
        for row in ids[:, enc["input_ids"].shape[1] :]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            out.append(text.split("\n")[0].strip() if stop_at_newline else text.strip())
    return out


def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    k: int,
    *,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
) -> list[list[str]]:
    """``k`` samples per user prompt, each prompt formatted with the chat template."""
    texts = [format_prompt(tokenizer, p) for p in prompts for _ in range(k)]
    flat = generate(
        model,
        tokenizer,
        texts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        batch_size=batch_size,
    )
    return [flat[i * k : (i + 1) * k] for i in range(len(prompts))]


@torch.no_grad()
def continuation_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]], batch_size: int = 32
) -> list[tuple[float, int]]:
    """(sum of log-probabilities, token count) of each continuation given its context."""
    model.eval()
    limit = getattr(model.config, "n_positions", 1024)
    results: list[tuple[float, int]] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        seqs, spans = [], []
        for context, cont in chunk:
            c = tokenizer(context, add_special_tokens=False)["input_ids"]
            x = tokenizer(cont, add_special_tokens=False)["input_ids"]
            c = c[-(limit - len(x)) :]  # keep the end of an over-long context
            seqs.append(c + x)
            spans.append((len(c), len(c) + len(x)))
        ids, mask = right_pad(seqs, tokenizer.pad_token_id)  # right padding: positions stay 0..len-1
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # (B, T, V)
        logp = torch.log_softmax(logits.float(), dim=-1)
        for i, (a, b) in enumerate(spans):
            tgt = ids[i, a:b]
            lp = logp[i, a - 1 : b - 1].gather(-1, tgt[:, None]).sum().item()
            results.append((lp, b - a))
    return results
