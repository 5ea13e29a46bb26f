"""The record formats each stage reads, normalized from the shapes users already have.

Demonstrations (SFT):
  * prompt/completion: ``{"prompt": str, "completion": str}``; the prompt may also be a list of chat
    messages and the completion a one-message assistant list (the conversational prompt/completion form)
  * conversational: ``{"messages": [{"role": ..., "content": ...}, ...]}``; the last message must be the
    assistant's and is the completion, everything before it is the prompt. The whole conversation is kept
    too (``messages``): SFT trains every assistant turn of it (or the last only, ``--assistant-turns last``)
  * instruction form: ``{"instruction": str, "input": str (optional), "output": str}``
Prompts (PPO, evaluation): ``{"prompt": str | messages}`` or ``{"messages": [...]}`` ending on a user turn.
Pretraining text: ``{"text": str}`` (JSONL) or a ``.txt`` file.

Other fields of a record are kept in ``meta`` (labeler, user, category, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from instructrl.data.io import Record, read_records
from instructrl.errors import DataError

Messages = list[dict[str, str]]
Prompt = str | Messages
ROLES = {"system", "user", "assistant"}


@dataclass
class Demonstration:
    prompt: Prompt
    completion: str
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    # the whole conversation of a ``messages`` row (prompt + [completion]); None for the other forms
    messages: Messages | None = None


@dataclass
class PromptRecord:
    prompt: Prompt
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def missing_columns_error(rec: Record, expected: str) -> DataError:
    found = ", ".join(sorted(rec.data)) or "none"
    return DataError(f"{rec.where}: expected {expected}; columns found: {found}")


def check_text(value: Any, rec: Record, column: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise DataError(f"{rec.where}: column '{column}' must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(f"{rec.where}: column '{column}' is empty")
    return value


def check_messages(value: Any, rec: Record, column: str) -> Messages:
    if not isinstance(value, list) or not value:
        raise DataError(f"{rec.where}: column '{column}' must be a non-empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"{rec.where}: {column}[{i}] must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(
                f"{rec.where}: {column}[{i}] has unknown role {m['role']!r} (expected one of {sorted(ROLES)})"
            )
        out.append(
            {"role": m["role"], "content": check_text(m["content"], rec, f"{column}[{i}].content", allow_empty=True)}
        )
    return out


def parse_prompt_value(value: Any, rec: Record, column: str = "prompt") -> Prompt:
    if isinstance(value, list):
        msgs = check_messages(value, rec, column)
        if msgs[-1]["role"] == "assistant":
            raise DataError(f"{rec.where}: the prompt's last message must not be the assistant's")
        return msgs
    return check_text(value, rec, column)


def _meta(rec: Record, used: set[str]) -> dict[str, Any]:
    return {k: v for k, v in rec.data.items() if k not in used}


def _instruction_prompt(rec: Record) -> str:
    """The instruction form: the instruction, then the optional input after a blank line."""
    instruction = check_text(rec.data["instruction"], rec, "instruction")
    extra = check_text(rec.data.get("input") or "", rec, "input", allow_empty=True)
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction


def to_demonstration(rec: Record) -> Demonstration:
    d = rec.data
    if "messages" in d:
        msgs = check_messages(d["messages"], rec, "messages")
        if msgs[-1]["role"] != "assistant":
            raise DataError(
                f"{rec.where}: the last message must be the assistant's response (found role {msgs[-1]['role']!r})"
            )
        if len(msgs) < 2:
            raise DataError(f"{rec.where}: 'messages' needs at least one message before the assistant's")
        completion = check_text(msgs[-1]["content"], rec, "messages[-1].content")
        return Demonstration(msgs[:-1], completion, rec.where, _meta(rec, {"messages"}), messages=msgs)
    if "prompt" in d and "completion" in d:
        prompt = parse_prompt_value(d["prompt"], rec)
        comp = d["completion"]
        if isinstance(comp, list):  # conversational prompt/completion: [{"role": "assistant", ...}]
            msgs = check_messages(comp, rec, "completion")
            if len(msgs) != 1 or msgs[0]["role"] != "assistant":
                raise DataError(f"{rec.where}: 'completion' as messages must be one assistant message")
            comp = msgs[0]["content"]
        completion = check_text(comp, rec, "completion")
        return Demonstration(prompt, completion, rec.where, _meta(rec, {"prompt", "completion"}))
    if "instruction" in d and "output" in d:
        return Demonstration(
            _instruction_prompt(rec),
            check_text(d["output"], rec, "output"),
            rec.where,
            _meta(rec, {"instruction", "input", "output"}),
        )
    if "prompt" in d:
        raise DataError(f"{rec.where}: missing column 'completion'; columns found: {', '.join(sorted(d))}")
    raise missing_columns_error(rec, "columns 'prompt' and 'completion', or 'messages', or 'instruction' and 'output'")


def to_prompt(rec: Record) -> PromptRecord:
    d = rec.data
    if "prompt" in d:
        return PromptRecord(parse_prompt_value(d["prompt"], rec), rec.where, _meta(rec, {"prompt"}))
    if "messages" in d:
        msgs = check_messages(d["messages"], rec, "messages")
        if msgs[-1]["role"] == "assistant":  # a demonstration file used as prompts: drop the answer
            msgs = msgs[:-1]
        if not msgs:
            raise DataError(f"{rec.where}: 'messages' holds no prompt")
        return PromptRecord(msgs, rec.where, _meta(rec, {"messages"}))
    if "instruction" in d:
        return PromptRecord(_instruction_prompt(rec), rec.where, _meta(rec, {"instruction", "input", "output"}))
    raise missing_columns_error(rec, "a 'prompt' or 'messages' column")


def to_text(rec: Record) -> str:
    if "text" not in rec.data:
        raise missing_columns_error(rec, "a 'text' column")
    return check_text(rec.data["text"], rec, "text")


def load_demonstrations(source: str, split: str = "train") -> list[Demonstration]:
    return [to_demonstration(r) for r in read_records(source, split=split, what="demonstration data")]


def load_prompts(source: str, split: str = "train") -> list[PromptRecord]:
    return [to_prompt(r) for r in read_records(source, split=split, what="prompt data")]


def load_texts(source: str, split: str = "train") -> list[str]:
    return [to_text(r) for r in read_records(source, split=split, what="pretraining text")]
