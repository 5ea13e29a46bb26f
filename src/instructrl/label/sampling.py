"""Sample K outputs per prompt from a checkpoint, for ranking tasks (InstructGPT §3.5: temperature 1)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from instructrl.errors import ModelLoadError

log = logging.getLogger("instructrl.label")
PLAIN_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


def load_checkpoint(path: str):  # type: ignore[no-untyped-def]
    """(model, tokenizer) from a Hugging Face causal-LM directory, in eval mode."""
    # Imported here on purpose: transformers and torch take seconds to load and only queue-rankings needs
    # them, while every `instructrl label` command imports this module (through ``commands``).
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(path).is_dir():
        raise ModelLoadError(f"--checkpoint {path}: not a folder (expected a Hugging Face model directory)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"--checkpoint {path}: cannot load a causal LM and tokenizer: {e}") from None
    model.eval()
    return model, tokenizer


def format_prompt(tokenizer, prompt: str) -> str:  # type: ignore[no-untyped-def]
    """The tokenizer's chat template when it has one, else the plain instruction template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return PLAIN_TEMPLATE.format(prompt=prompt)


def eos_ids(model, tokenizer) -> set[int]:  # type: ignore[no-untyped-def]
    ids: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return ids


def sample_outputs(
    model, tokenizer, prompts: Sequence[str], k: int, *, max_new_tokens: int = 128, seed: int = 0
) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """K completions per prompt, sampled at temperature 1 with no top-k/top-p truncation, cut at EOS."""
    import torch  # here, not at the top: see load_checkpoint

    torch.manual_seed(seed)
    stops = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (min(stops) if stops else 0)
    out: list[list[str]] = []
    for i, prompt in enumerate(prompts):
        text = format_prompt(tokenizer, prompt)
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=not getattr(tokenizer, "chat_template", None))
        enc = {
            "input_ids": enc["input_ids"],
            "attention_mask": torch.ones_like(enc["input_ids"]),
        }  # one unpadded prompt
        with torch.no_grad():
            gen = model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                num_return_sequences=k,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=sorted(stops) or None,
            )
        new = gen[:, enc["input_ids"].shape[1] :]  # (K, T_new)
        samples = []
        for row in new.tolist():
            cut = next((j for j, t in enumerate(row) if t in stops), len(row))  # cut at the first EOS
            samples.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
        out.append(samples)
        log.info("sampled %d outputs for prompt %d/%d", k, i + 1, len(prompts))
    return out
