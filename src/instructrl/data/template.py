"""Turning prompts into model input text.

If the tokenizer has a chat template, it is used (``apply_chat_template`` with the generation prompt).
Otherwise instructrl uses this documented plain template::

    ### Instruction:
    {prompt}

    ### Response:
    {completion}<EOS>

Multi-turn conversations without a chat template render each user turn as an ``### Instruction:``
block and each assistant turn as a ``### Response:`` block ending with EOS (as SFT trains every
assistant turn to end); a system message comes first, as is. The completion is always followed by the
tokenizer's EOS token, so the model learns to stop.

A conversation with several assistant turns is encoded turn by turn (:func:`encode_turns`): the context
before each assistant turn, then the turn's tokens and EOS, so that every assistant turn can carry the
loss while the rest of the conversation is masked.
"""

from __future__ import annotations

from instructrl.data.formats import Messages, Prompt

INSTRUCTION_HEADER = "### Instruction:\n"
RESPONSE_HEADER = "### Response:\n"


def as_messages(prompt: Prompt) -> Messages:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def render_plain(messages: Messages, eos: str = "") -> str:
    """The plain template; earlier assistant turns end with ``eos`` (the EOS token's text), as trained."""
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(f"{m['content']}\n\n")
        elif m["role"] == "user":
            parts.append(f"{INSTRUCTION_HEADER}{m['content']}\n\n")
        else:
            parts.append(f"{RESPONSE_HEADER}{m['content']}{eos}\n\n")
    return "".join(parts) + RESPONSE_HEADER


def uses_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, prompt: Prompt) -> str:
    """The text the model sees before its response."""
    messages = as_messages(prompt)
    if uses_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return render_plain(messages, tokenizer.eos_token or "")


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


def assistant_turn_indices(messages: Messages) -> list[int]:
    """Indices of the assistant turns that can carry a loss (an assistant message with something before it)."""
    return [i for i, m in enumerate(messages) if m["role"] == "assistant" and i > 0]


def encode_turns(tokenizer, messages: Messages) -> list[tuple[list[int], list[int]]] | None:
    """A conversation as (context ids, response ids) per assistant turn; concatenated, they are the whole
    conversation. The first context is :func:`encode_prompt` of everything before the first assistant turn
    and every response is :func:`encode_completion` of the turn (its tokens, then EOS), exactly as in a
    single-turn demonstration. A later context is the text the template puts between the previous
    assistant turn and this one (for the plain template, the next ``### Instruction:`` block and
    ``### Response:`` header), without the EOS text it may start with, since the EOS is already there.

    None when the chat template does not render a conversation as an extension of its beginning (a template
    that rewrites earlier turns once later ones follow, e.g. one dropping reasoning from the history):
    its earlier turns cannot be cut out of the later contexts."""
    eos_text = tokenizer.eos_token or ""
    out: list[tuple[list[int], list[int]]] = []
    before = ""  # the rendered conversation up to the end of the previous assistant turn's content
    for k, i in enumerate(assistant_turn_indices(messages)):
        prompt_text = render_prompt(tokenizer, messages[:i])
        if k == 0:
            context = encode_prompt(tokenizer, messages[:i])
        else:
            if not prompt_text.startswith(before):
                return None
            between = prompt_text[len(before) :]
            if eos_text and between.startswith(eos_text):
                between = between[len(eos_text) :]
            context = tokenizer(between, add_special_tokens=False)["input_ids"]
        out.append((context, encode_completion(tokenizer, messages[i]["content"])))
        before = prompt_text + messages[i]["content"]
    return out
