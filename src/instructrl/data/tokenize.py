"""Tokenized training examples, and the padding of token lists into (B, T) batches.

An example is ``{"input_ids": [...], "labels": [...]}`` with ``-100`` on tokens that carry no loss
(the prompt, for SFT). Over-long examples follow a stated policy and are counted, never dropped
silently: a prompt that leaves no room for a response is skipped; a response that does not fit is
truncated (it then has no EOS). A conversation (a ``messages`` row with several assistant turns) trains
every assistant turn, each with its EOS, and masks the system and user turns (``assistant_turns="last"``:
the last turn only); it is skipped when its first trained turn does not fit, and truncated (counted) when
a later part does not.

:func:`collate` right-pads training examples; :func:`collate_packed` packs them into rows of at most
``capacity`` tokens instead (position ids restarting at each example, which keeps attention inside each
example for models that build a block mask from them; see ``instructrl.sft.trainer.packing_problem``);
:func:`left_pad` left-pads prompts for generation and scoring.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import pairwise

import torch

from instructrl.data.formats import Demonstration
from instructrl.data.template import assistant_turn_indices, encode_completion, encode_prompt, encode_turns

log = logging.getLogger("instructrl.data")
IGNORE_INDEX = -100


@dataclass
class TokenizeReport:
    kept: int = 0
    skipped_long_prompt: int = 0
    truncated_completion: int = 0
    skipped_where: list[str] = field(default_factory=list)
    conversations: int = 0  # kept examples with several assistant turns
    assistant_turns_trained: int = 0  # assistant turns carrying the loss, over all kept examples
    last_turn_only_template: int = 0  # conversations trained on their last turn only: see encode_turns
    last_turn_only_where: list[str] = field(default_factory=list)

    def log(self, what: str) -> None:
        log.info(
            "%s: %d examples kept, %d truncated responses, %d skipped (prompt longer than max_length)",
            what,
            self.kept,
            self.truncated_completion,
            self.skipped_long_prompt,
        )
        if self.conversations:
            log.info(
                "%s: %d multi-turn conversations; %d assistant turns carry the loss",
                what,
                self.conversations,
                self.assistant_turns_trained,
            )
        if self.last_turn_only_template:
            log.warning(
                "%s: %d conversations trained on their last assistant turn only: the chat template renders "
                "their earlier turns differently once later turns follow (first: %s)",
                what,
                self.last_turn_only_template,
                self.last_turn_only_where[0],
            )
        if self.skipped_where:
            log.info(
                "  skipped: %s%s",
                ", ".join(self.skipped_where[:5]),
                f" and {len(self.skipped_where) - 5} more" if len(self.skipped_where) > 5 else "",
            )


def tokenize_demonstrations(
    demos: list[Demonstration],
    tokenizer,
    max_length: int,
    min_response_tokens: int = 1,
    assistant_turns: str = "all",
) -> tuple[list[dict], TokenizeReport]:
    """SFT examples: loss on completion tokens only (the prompt is masked with -100). A ``messages`` row
    with several assistant turns is a conversation: every assistant turn carries the loss
    (``assistant_turns="all"``) or the last one only (``"last"``); see :func:`tokenize_conversation`."""
    if assistant_turns not in ("all", "last"):
        raise ValueError(f"assistant_turns must be 'all' or 'last', got {assistant_turns!r}")
    report = TokenizeReport()
    examples = []
    for demo in demos:
        if demo.messages is not None and len(assistant_turn_indices(demo.messages)) > 1:
            ex = tokenize_conversation(demo, tokenizer, max_length, min_response_tokens, assistant_turns, report)
            if ex is not None:
                examples.append(ex)
            continue
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
        report.assistant_turns_trained += 1
    return examples, report


def tokenize_conversation(
    demo: Demonstration,
    tokenizer,
    max_length: int,
    min_response_tokens: int,
    assistant_turns: str,
    report: TokenizeReport,
) -> dict | None:
    """One conversation as one example: context and response tokens of each assistant turn in order
    (:func:`~instructrl.data.template.encode_turns`); response tokens (each turn's tokens and EOS) carry the
    loss for the trained turns, everything else is -100. Whatever ``assistant_turns``, the tokens are the
    same; only the labels differ. Returns None (counted) when the first trained turn does not fit."""
    segments = encode_turns(tokenizer, demo.messages)
    if segments is None:  # the template rewrites earlier turns: the last turn only, as a prompt/completion pair
        segments = [(encode_prompt(tokenizer, demo.prompt), encode_completion(tokenizer, demo.completion))]
        report.last_turn_only_template += 1
        report.last_turn_only_where.append(demo.where)
    ids: list[int] = []
    labels: list[int] = []
    starts = []  # where each trained response starts
    for k, (context, response) in enumerate(segments):
        train = assistant_turns == "all" or k == len(segments) - 1
        ids += context
        labels += [IGNORE_INDEX] * len(context)
        if train:
            starts.append(len(ids))
        ids += response
        labels += response if train else [IGNORE_INDEX] * len(response)
    if starts[0] + min_response_tokens > max_length:
        report.skipped_long_prompt += 1
        report.skipped_where.append(demo.where)
        return None
    if len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
        report.truncated_completion += 1
    report.kept += 1
    report.conversations += 1
    report.assistant_turns_trained += sum(1 for start in starts if start < max_length)
    return {"input_ids": ids, "labels": labels}


def pack_texts(texts: list[str], tokenizer, max_length: int, documents: bool = False) -> list[dict]:
    """Pretraining examples: documents joined with EOS and cut into full windows of max_length.
    The final partial window is kept if it holds at least half a window.

    ``documents=True`` (packed training) also records where each document starts: the window gets
    ``segments`` (the lengths of its document pieces), and the first token of each document after the first
    piece carries no loss (it would be predicted from the previous document, which it no longer sees)."""
    stream: list[int] = []
    doc_starts: list[int] = []
    for text in texts:
        doc_starts.append(len(stream))
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.append(tokenizer.eos_token_id)
    examples = []
    for start in range(0, len(stream), max_length):
        chunk = stream[start : start + max_length]
        if len(chunk) >= max(2, max_length // 2):
            example = {"input_ids": chunk, "labels": list(chunk)}
            if documents:
                inner = [d - start for d in doc_starts if start < d < start + len(chunk)]
                bounds = [0, *inner, len(chunk)]
                example["segments"] = [b - a for a, b in pairwise(bounds)]
                for d in inner:
                    example["labels"][d] = IGNORE_INDEX
            examples.append(example)
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


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of examples grouped into rows of at most ``capacity`` tokens (first fit, longest first; an
    example longer than ``capacity`` gets a row of its own). Deterministic: ties keep the input order."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def collate_packed(examples: list[dict], fill_token_id: int, capacity: int) -> dict[str, torch.Tensor]:
    """Pack examples into (R, T) rows of at most ``capacity`` tokens (T: the longest row), with
    ``position_ids`` restarting at 0 at each example (and at each document of a pretraining window with
    ``segments``) and no attention mask: a model that builds its block-diagonal causal mask from the
    position ids (transformers' sdpa / eager / flex attention; flash-attention's variable-length path)
    keeps attention inside each example, so the loss equals that of :func:`collate`'s padded batch. The
    first token of each piece carries no loss (the previous piece's last token would predict it). The rest of
    a row is one more piece, of ``fill_token_id`` with label -100: it attends only to itself."""
    rows = pack_rows([len(e["input_ids"]) for e in examples], capacity)
    packed = []
    for row in rows:
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for i in row:
            e = examples[i]
            offset = 0
            for n in e.get("segments") or [len(e["input_ids"])]:
                ids += e["input_ids"][offset : offset + n]
                labels += [IGNORE_INDEX] + list(e["labels"][offset + 1 : offset + n])
                positions += range(n)
                offset += n
        packed.append((ids, labels, positions))
    width = max(len(ids) for ids, _, _ in packed)
    input_ids = torch.full((len(packed), width), fill_token_id, dtype=torch.long)  # (R, T)
    labels_t = torch.full((len(packed), width), IGNORE_INDEX, dtype=torch.long)  # (R, T)
    position_ids = torch.zeros((len(packed), width), dtype=torch.long)  # (R, T)
    for r, (ids, labels, positions) in enumerate(packed):
        n = len(ids)
        input_ids[r, :n] = torch.tensor(ids)
        labels_t[r, :n] = torch.tensor(labels)
        position_ids[r, :n] = torch.tensor(positions)
        position_ids[r, n:] = torch.arange(width - n)  # the padding: a piece of its own
    return {"input_ids": input_ids, "labels": labels_t, "position_ids": position_ids}


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


def right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into (B, T) ids and mask, so every row's positions run 0..len-1 from the left."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, T)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def count_loss_tokens(example: dict) -> int:
    """Tokens that contribute to the next-token loss (labels shifted by one)."""
    return sum(1 for t in example["labels"][1:] if t != IGNORE_INDEX)
