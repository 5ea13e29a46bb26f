"""`instructrl generate --model M [--prompt P ...]`: responses from a checkpoint, or an interactive chat.

With ``--best-of N --reward-model RM``: N samples per prompt, and the one the reward model scores highest is
printed (best-of-n sampling, :mod:`instructrl.modeling.best_of_n`). ``--reward-model`` without
``--best-of`` > 1 is refused (one sample leaves nothing to choose).

Generation itself is :func:`instructrl.modeling.generation.generate`, under autocast in the precision that
``--mixed-precision`` resolves to on the model's device ('auto', the default: bf16 only where it is clearly
faster, :mod:`instructrl.training.precision`; each step's logits are upcast to fp32 before sampling and the
reward model scores in fp32).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from instructrl.config import seed_type
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
    parser.add_argument("--seed", type=seed_type, default=0)
    parser.add_argument(
        "--mixed-precision",
        choices=["auto", "no", "bf16"],
        default="auto",
        help="Sampling precision: bf16 autocast, 'no' (fp32), or 'auto' (bf16 on a GPU that supports it, on a "
        "CPU only where it is clearly faster than fp32: AMX or AVX512-BF16). Default auto.",
    )
    parser.add_argument(
        "--best-of",
        type=int,
        default=1,
        metavar="N",
        help="Sample N responses per prompt and print the one --reward-model scores highest (best-of-n: "
        "Stiennon et al. 2020; its KL from the model is at most log N - (N-1)/N nats). Default 1.",
    )
    parser.add_argument(
        "--reward-model",
        default=None,
        metavar="RM",
        help="Reward model folder (an `instructrl rm` output) that picks the best of --best-of N > 1 samples.",
    )


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
    if args.best_of < 1:
        raise ConfigError(f"--best-of {args.best_of}: expected a whole number >= 1 (samples per prompt)")
    if args.best_of > 1 and not args.reward_model:
        raise ConfigError(f"--best-of {args.best_of} needs --reward-model RM to choose the best of the samples")
    if args.reward_model and args.best_of == 1:
        raise ConfigError("--reward-model is used only with --best-of N > 1 (one sample leaves nothing to choose)")


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
    from instructrl.modeling.loading import load_causal_lm, load_tokenizer
    from instructrl.modeling.reward import load_frozen_reward
    from instructrl.training.precision import resolve

    set_seed(args.seed)
    reward_model = None
    if args.reward_model:  # before the policy loads: a wrong folder fails at once
        check_finished(args.reward_model, "--reward-model")
        reward_model = load_frozen_reward(args.reward_model)  # refuses a causal LM (num_labels != 1)
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

    precision = resolve(getattr(args, "mixed_precision", "auto"), next(model.parameters()).device.type)

    def respond(prompts: list) -> list[str]:
        return answer(model, tokenizer, prompts, args, reward_model, precision)

    if args.prompt:
        for text in respond(args.prompt):
            print(text)
        return 0
    history: list[dict[str, str]] = []
    print("chat with the model; an empty line ends", file=sys.stderr)
    for line in sys.stdin:
        if not line.strip():
            break
        history.append({"role": "user", "content": line.strip()})
        reply = respond([history])[0]
        history.append({"role": "assistant", "content": reply})
        print(reply, flush=True)
    return 0


def answer(model, tokenizer, prompts: list, args, reward_model=None, precision: str = "no") -> list[str]:
    """One response per prompt: a sample, or with a reward model the best of ``args.best_of`` samples; sampled
    under autocast in ``precision`` (a resolved one: 'bf16' or 'no')."""
    from instructrl.modeling.best_of_n import best_of_n, sample_n
    from instructrl.training.precision import autocast_dtype

    kwargs = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    kwargs["autocast_dtype"] = autocast_dtype(precision)
    if reward_model is None:
        return [row[0].text for row in sample_n(model, tokenizer, prompts, 1, **kwargs)]
    result = best_of_n(model, tokenizer, reward_model, prompts, args.best_of, **kwargs)
    for i, b in enumerate(result.best.tolist()):
        row = result.scores[i]
        print(f"best of {args.best_of}: sample {b + 1}, reward {row[b]:.3f} (mean {row.mean():.3f})", file=sys.stderr)
    return result.texts
