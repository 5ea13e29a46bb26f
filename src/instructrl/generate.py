"""`instructrl generate --model M [--prompt P ...]`: responses from a checkpoint, or an interactive chat.

Generation itself is :func:`instructrl.modeling.generation.generate`.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from instructrl.errors import ConfigError
from instructrl.training.validation import check_context, check_finished, context_length, run_stage


def configure(parser) -> None:
    parser.add_argument("--model", required=True, help="Checkpoint directory or Hub id.")
    parser.add_argument(
        "--prompt", action="append", default=[], help="Prompt (repeatable). Without it: interactive chat."
    )
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.7, help="0 = greedy.")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)


def check_args(args) -> None:
    """The numbers a user gives, before anything loads: finite and in range, in one line naming the flag."""
    bounds = {
        "max_new_tokens": (args.max_new_tokens, 1, "a whole number >= 1"),
        "temperature": (args.temperature, 0, "a finite number >= 0"),
        "top_p": (args.top_p, 0, "a number in (0, 1]"),
        "seed": (args.seed, 0, "a whole number >= 0"),
    }
    for name, (value, low, expected) in bounds.items():
        bad = not math.isfinite(value) or value < low or (name == "top_p" and not 0 < value <= 1)
        if bad:
            raise ConfigError(f"--{name.replace('_', '-')} {value}: expected {expected}")


def check_policy_folder(path: str) -> None:
    """A finished run of a causal LM: not a reward model's folder, not a run stopped before its final save."""
    check_finished(path, "model")
    config = Path(path) / "config.json"
    if not config.is_file():
        return
    try:
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return
    if run_stage(path) == "RMConfig" or any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ConfigError(
            f"--model '{path}' is a reward model (a scoring head, no language-model head): give a policy "
            f"(an SFT or PPO output, or any causal LM)"
        )


def main(args) -> int:
    check_args(args)
    check_policy_folder(args.model)
    # torch and transformers load only when the command runs, so `instructrl generate --help` stays instant
    from transformers import set_seed

    from instructrl.data.template import encode_prompt
    from instructrl.modeling.generation import generate
    from instructrl.modeling.loading import load_causal_lm, load_tokenizer

    set_seed(args.seed)
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, tokenizer, init_from_config=False)
    check_context(args, model)
    context = context_length(model)
    for i, prompt in enumerate(args.prompt if context else []):
        n = len(encode_prompt(tokenizer, prompt))
        if n + args.max_new_tokens > context:
            raise ConfigError(
                f"--prompt #{i + 1} is {n} tokens; with --max-new-tokens {args.max_new_tokens} it exceeds the "
                f"model's context of {context} tokens: shorten the prompt or lower --max-new-tokens"
            )
    if args.prompt:
        for g in generate(
            model,
            tokenizer,
            args.prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
        ):
            print(g.text)
        return 0
    history: list[dict[str, str]] = []
    print("chat with the model; an empty line ends", file=sys.stderr)
    for line in sys.stdin:
        if not line.strip():
            break
        history.append({"role": "user", "content": line.strip()})
        reply = generate(
            model,
            tokenizer,
            [history],
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
        )[0].text
        history.append({"role": "assistant", "content": reply})
        print(reply, flush=True)
    return 0
