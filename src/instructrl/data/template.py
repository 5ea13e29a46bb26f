"""Turning prompts into model input text.

If the tokenizer has a chat template, it is used (``apply_chat_template`` with the generation prompt).
Otherwise instructrl uses this documented plain template::

    ### Instruction:
    {prompt}

    ### Response:
    {completion}<EOS>

Multi-turn conversations without a chat template render each user turn as an ``### Instruction:``
block and each assistant turn as a ``### Response:`` block; a system message comes first, as is.
The completion is always followed by the tokenizer's EOS token, so the model learns to stop.
"""

from __future__ import annotations

from instructrl.data.formats import Messages, Prompt

INSTRUCTION_HEADER = "### Instruction:\n"
RESPONSE_HEADER = "### Response:\n"


def as_messages(prompt: Prompt) -> Messages:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def render_plain(messages: Messages) -> str:
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(f"{m['content']}\n\n")
        elif m["role"] == "user":
            parts.append(f"{INSTRUCTION_HEADER}{m['content']}\n\n")
        else:
            parts.append(f"{RESPONSE_HEADER}{m['content']}\n\n")
    return "".join(parts) + RESPONSE_HEADER


def uses_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, prompt: Prompt) -> str:
    """The text the model sees before its response."""
    messages = as_messages(prompt)
    if uses_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return render_plain(messages)


def encode_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of the rendered prompt. Chat templates carry their own special tokens; the plain
    template gets the tokenizer's usual ones (a BOS for Llama-style tokenizers, none for GPT-2)."""
    text = render_prompt(tokenizer, prompt)
    return tokenizer(text, add_special_tokens=not uses_chat_template(tokenizer))["input_ids"]


def encode_completion(tokenizer, completion: str) -> list[int]:
    """Token ids of a response, ending with EOS."""
    return tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def encode_pair_text(
    tokenizer, prompt: Prompt, completion: str, raw_prompt: bool = False
) -> tuple[list[int], list[int]]:
    """Token ids of what the reward model reads: the rendered prompt, then the response and EOS."""
    p_ids = tokenizer(prompt)["input_ids"] if raw_prompt else encode_prompt(tokenizer, prompt)
    return p_ids, encode_completion(tokenizer, completion)
