"""`instructrl generate --model M [--prompt P ...]`: responses from a checkpoint, or an interactive chat.

Generation itself is :func:`instructrl.modeling.generation.generate`.
"""

from __future__ import annotations

import sys


def configure(parser) -> None:
    parser.add_argument("--model", required=True, help="Checkpoint directory or Hub id.")
    parser.add_argument(
        "--prompt", action="append", default=[], help="Prompt (repeatable). Without it: interactive chat."
    )
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.7, help="0 = greedy.")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)


def main(args) -> int:
    # torch and transformers load only when the command runs, so `instructrl generate --help` stays instant
    from transformers import set_seed

    from instructrl.modeling.generation import generate
    from instructrl.modeling.loading import load_causal_lm, load_tokenizer

    set_seed(args.seed)
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, tokenizer, init_from_config=False)
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
