"""Does SFT unlock instruction following in the world? Base vs SFT on held-out-user prompts.

    PYTHONPATH=src python benchmarks/world/sft_check.py [--size tiny --epochs 8]

Builds the datasets, fine-tunes a shipped base model on sft.jsonl with 'instructrl sft', and
measures the reference judge's success rate (greedy, zero-shot) of both models on eval prompts.
Appends the result to benchmarks/world/sft_check.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--n", type=int, default=200, help="Evaluation prompts.")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructrl.sft.api import run_sft
    from instructrl.sft.config import SFTConfig
    from instructrl.world.base_models import base_model_path
    from instructrl.world.build import build
    from instructrl.world.measure import instruction_success

    with tempfile.TemporaryDirectory() as d:
        build(d, seed=0, scale=1.0, pretrain_docs=200)
        cfg = SFTConfig(
            model=str(base_model_path(args.size)),
            data=f"{d}/sft.jsonl",
            output_dir=f"{d}/sft",
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            batch_size=32,
            max_length=256,
            eval_fraction=0.0,
            select_by="last",
            residual_dropout=0.0,
            progress=False,
            mixed_precision="no",
        )
        start = time.time()
        result = run_sft(cfg)
        seconds = time.time() - start
        evals = [json.loads(x) for x in Path(f"{d}/eval_prompts.jsonl").read_text().splitlines()][: args.n]
        out = {
            "size": args.size,
            "epochs": args.epochs,
            "learning_rate": args.learning_rate,
            "sft_seconds": round(seconds, 1),
        }
        for name, path in (("base", base_model_path(args.size)), ("sft", result.out_dir)):
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path).float()
            m = instruction_success(model, tok, evals)
            out[name] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in m.items()}
    print(json.dumps(out, indent=2))
    path = HERE / "sft_check.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(runs + [out], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
