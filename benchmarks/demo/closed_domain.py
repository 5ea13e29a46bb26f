"""Who prefers PPO-ptx's closed-domain answers: the world's noiseless judge, and the run's own reward model.

For each closed-domain evaluation prompt (summarize, closed QA, extract, polite rewrite) where SFT's and PPO-ptx's
responses differ and the judge does not tie them, the pair is ranked by the judge. Reported per run:
* how often the judge prefers PPO-ptx's answer, overall and where exactly one of the two hallucinates;
* the run's reward model's agreement with the judge on those pairs (``instructrl rm --eval-only``).

Usage:
    python benchmarks/demo/closed_domain.py runs/demo-t0 runs/demo-t1 runs/demo-t2 [--out closed_domain.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from collect import closed_domain_records  # this folder's collect.py (the script's own directory is on sys.path)

from instructrl.experiments.pipeline import world_seed_of
from instructrl.reward.api import evaluate_rm
from instructrl.reward.config import RMConfig
from instructrl.world.judge import score
from instructrl.world.labelers import make_pool

HERE = Path(__file__).parent


def judged_pairs(run: Path) -> list[dict]:
    """The (SFT, PPO-ptx) answer pairs of the run's closed-domain evaluation prompts, ranked by the judge."""
    records = closed_domain_records(run)
    answers: dict[str, dict[str, str]] = {}
    for line in (run / "eval" / "responses.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["prompt"] in records and r["model"] in ("SFT", "PPO-ptx"):
            answers.setdefault(r["prompt"], {})[r["model"]] = r["response"]
    judge = make_pool(world_seed_of(run / "world")).reference
    pairs = []
    for prompt, a in answers.items():
        if len(a) < 2 or a["SFT"] == a["PPO-ptx"]:
            continue
        rec, completions = records[prompt], [a["SFT"], a["PPO-ptx"]]
        ranks = judge.rank(rec, completions)
        if ranks[0] == ranks[1]:
            continue
        pairs.append(
            {
                "prompt": prompt,
                "completions": completions,
                "ranks": ranks,
                "labeler": "reference",
                "hallucination": [bool(score(rec, c)["hallucination"]) for c in completions],
            }
        )
    return pairs


def summarize(run: Path) -> dict:
    pairs = judged_pairs(run)

    def ppo_preferred(rows: list[dict]) -> list[int]:
        return [sum(r["ranks"][1] < r["ranks"][0] for r in rows), len(rows)]

    only_ppo = [r for r in pairs if r["hallucination"] == [False, True]]
    only_sft = [r for r in pairs if r["hallucination"] == [True, False]]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"
        data.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "hallucination"}) + "\n" for r in pairs))
        report = evaluate_rm(RMConfig(model=str(run / "rm"), eval_data=str(data), cpu=True))
    rm = report["groups"]["all"]
    return {
        "pairs": len(pairs),
        "judge_prefers_ppo_ptx": ppo_preferred(pairs),
        "judge_prefers_ppo_ptx_where_only_it_hallucinates": ppo_preferred(only_ppo),
        "judge_prefers_ppo_ptx_where_only_sft_hallucinates": ppo_preferred(only_sft),
        "rm_agrees_with_judge": [round(rm["accuracy"], 3), round(rm["accuracy_se"], 3)],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="finished demo run folders")
    ap.add_argument("--out", default=str(HERE / "closed_domain.json"))
    a = ap.parse_args()
    result = {run: summarize(Path(run)) for run in a.runs}
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
