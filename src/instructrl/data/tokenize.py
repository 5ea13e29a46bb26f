"""Tokenized training examples, and the padding of token lists into (B, T) batches.

An example is ``{"input_ids": [...], "labels": [...]}`` with ``-100`` on tokens that carry no loss
(the prompt, for SFT). Over-long examples follow a stated policy and are counted, never dropped
silently: a prompt that leaves no room for a response is skipped; a response that does not fit is
truncated (it then has no EOS).

:func:`collate` right-pads training examples; :func:`left_pad` left-pads prompts for generation and scoring.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from instructrl.data.formats import Demonstration
from instructrl.data.template import encode_completion, encode_prompt

log = logging.getLogger("instructrl.data")
IGNORE_INDEX = -100


@dataclass
class TokenizeReport:
    kept: int = 0
    skipped_long_prompt: int = 0
    truncated_completion: int = 0
    skipped_where: list[str] = field(default_factory=list)

    def log(self, what: str) -> None:
        log.info(
            "%s: %d examples kept, %d truncated responses, %d skipped (prompt longer than max_length)",
            what,
            self.kept,
            self.truncated_completion,
            self.skipped_long_prompt,
        )
        if self.skipped_where:
            log.info(
                "  skipped: %s%s",
                ", ".join(self.skipped_where[:5]),
                f" and {len(self.skipped_where) - 5} more" if len(self.skipped_where) > 5 else "",
            )


def tokenize_demonstrations(
    demos: list[Demonstration], tokenizer, max_length: int, min_response_tokens: int = 1
) -> tuple[list[dict], TokenizeReport]:
    """SFT examples: loss on completion tokens only (the prompt is masked with -100)."""
    report = TokenizeReport()
    examples = []
    for demo in demos:
        p_ids = encode_prompt(tokenizer, demo.prompt)
        c_ids = encode_completion(tokenizer, demo.completion)
        if len(p_ids) + min_response_tokens > max_length:
            report.skipped_long_prompt += 1
            report.skipped_where.append(demo.where)
            continue
        if len(p_ids) + len(c_ids) > max_length:
            c_ids = c_ids[: max_length - len(p_ids)]
            report.truncated_completion += 1
        examples.append({"input_ids": p_ids + c_ids, "labels": [IGNORE_INDEX] * len(p_ids) + c_ids})
        report.kept += 1
    return examples, report


def pack_texts(texts: list[str], tokenizer, max_length: int) -> list[dict]:
    """Pretraining examples: documents joined with EOS and cut into full windows of max_length.
    The final partial window is kept if it holds at least half a window."""
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.append(tokenizer.eos_token_id)
    examples = []
    for start in range(0, len(stream), max_length):
        chunk = stream[start : start + max_length]
        if len(chunk) >= max(2, max_length // 2):
            examples.append({"input_ids": chunk, "labels": list(chunk)})
    return examples


def collate(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples into (B, T) tensors; padding gets label -100 and mask 0."""
    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        input_ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into (B, T) ids and mask, so every prompt ends where new tokens start (generation)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, T)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, width - len(s) :] = 1
    return ids, mask


def count_loss_tokens(example: dict) -> int:
    """Tokens that contribute to the next-token loss (labels shifted by one)."""
    return sum(1 for t in example["labels"][1:] if t != IGNORE_INDEX)
