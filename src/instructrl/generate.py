"""Batched generation from a checkpoint, and `instructrl generate`.

Prompts are rendered with the same template as training (chat template or the plain one), left-padded,
and sampled with ``model.generate``; responses are cut at EOS.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from instructrl.data.formats import Prompt
from instructrl.data.template import encode_prompt


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    finished: bool  # ended with EOS within max_new_tokens


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, T)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
    return ids, mask


@torch.no_grad()
def generate(model, tokenizer, prompts: list[Prompt], *, max_new_tokens: int = 64, temperature: float = 1.0,
             top_p: float = 1.0, batch_size: int = 32, max_prompt_tokens: int | None = None,
             progress: bool = False) -> list[Generation]:
    """Sample one response per prompt (temperature 0 = greedy)."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    if max_prompt_tokens:
        encoded = [e[-max_prompt_tokens:] for e in encoded]
    out: list[Generation] = []
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for start in tqdm(range(0, len(encoded), batch_size), disable=not progress, desc="generate"):
        ids, mask = left_pad(encoded[start : start + batch_size], pad)
        kwargs = dict(do_sample=False) if temperature == 0 else dict(do_sample=True, temperature=temperature, top_p=top_p)
        seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                              pad_token_id=pad, eos_token_id=eos, **kwargs)
        for row in seqs[:, ids.shape[1]:].tolist():
            finished = eos in row
            resp = row[: row.index(eos)] if finished else [t for t in row if t != pad]
            out.append(Generation(tokenizer.decode(resp, skip_special_tokens=True), resp, finished))
    model.train(was_training)
    return out


def configure(parser) -> None:
    parser.add_argument("--model", required=True, help="Checkpoint directory or Hub id.")
    parser.add_argument("--prompt", action="append", default=[], help="Prompt (repeatable). Without it: interactive chat.")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.7, help="0 = greedy.")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)


def main(args) -> int:
    from transformers import set_seed

    from instructrl.modeling.loading import load_causal_lm, load_tokenizer

    set_seed(args.seed)
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, tokenizer, init_from_config=False)
    if args.prompt:
        for g in generate(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_p=args.top_p):
            print(g.text)
        return 0
    history: list[dict[str, str]] = []
    print("chat with the model; an empty line ends", file=sys.stderr)
    for line in sys.stdin:
        if not line.strip():
            break
        history.append({"role": "user", "content": line.strip()})
        reply = generate(model, tokenizer, [history], max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_p=args.top_p)[0].text
        history.append({"role": "assistant", "content": reply})
        print(reply, flush=True)
    return 0
