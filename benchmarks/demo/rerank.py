"""The demo at one seed with labelers given another misleading penalty, reusing a finished run's samples.

The shipped labelers penalize a closed-domain response that states what its input does not say (base weight 2.5,
times a personal log-normal factor drawn after a labeler's other traits, so its styles and demonstrations do not
depend on it; ``instructrl.world.labelers``). ``--misleading W`` sets that base weight (0: the labelers before the
penalty, who gave such a response no "truthful" credit and nothing worse, so a fluent answer about the wrong land
outranked a non-answer); without ``--closed-only`` it applies to every task; ``--train-noise LO,HI`` sets the
training labelers' noise range, to keep their agreement near the paper's. The script patches the labelers in its
own process.

A demo run's rankings stage samples K responses per prompt from the small SFT policy, then has the labelers (or
the noiseless judge) rank them. The samples do not depend on what the labelers prefer, so ranking a finished run's
samples again, in the order the stage ranks them (each labeler's noise is seeded by how many judgments it has
made), gives the rankings a run from scratch would give, without the stage's sampling time.

``check``: rank a finished run's samples again and count the rows ranked as in its files (without options, on the
labelers its rankings were made with, this shows that the re-ranking reproduces the stage)::

    python benchmarks/demo/rerank.py check --src runs/demo-c1

``run``: hard-link the world and both SFT stages of ``--src`` into ``--out``, write the re-ranked rankings there,
then run the demo, which trains the reward model and PPO-ptx and evaluates, as ``instructrl demo`` does::

    OMP_NUM_THREADS=1 python benchmarks/demo/rerank.py run --src runs/demo-b1 --out runs/demo-m1 --seed 1 \\
        --misleading 2.5 --train-noise 0.18,0.34

``agreement``: the labelers' pairwise agreement on the synthetic policy with the patch, for pools 0-2, as
``benchmarks/world/run.py`` measures it for the shipped labelers::

    python benchmarks/demo/rerank.py agreement --misleading 2.5 --train-noise 0.18,0.34

``judge``: the held-out labelers' direct comparisons (GPT prompted vs GPT, PPO-ptx vs SFT) of finished runs'
evaluation responses, judged again for each penalty, on every task and on closed-domain tasks only::

    python benchmarks/demo/rerank.py judge runs/demo-m0 runs/demo-m1 runs/demo-m2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path

from collect import finish_demo, link_stages  # this folder's collect.py (the script's own directory is on sys.path)

REUSED = ("world", "sft", "sft_rm")


def read_jsonl(path: Path) -> list[dict]:
    from instructrl.data.io import read_records

    return [r.data for r in read_records(path, what="demo run data")]


def patch_labelers(misleading: float, closed_only: bool = False, train_noise: tuple[float, float] | None = None):
    """Labelers with another misleading penalty, in this process: returns a function that undoes the patch.

    The penalty's base weight becomes ``misleading`` (the reference judge's weight, and each labeler's times its
    personal factor, drawn as shipped); without ``closed_only`` it applies to every task, not only the
    closed-domain ones."""
    from instructrl.world import labelers as L
    from instructrl.world.judge import score

    saved = (L.Labeler.utility_terms, L.BASE_WEIGHTS, L.TRAIN_NOISE)
    terms0 = saved[0]
    L.BASE_WEIGHTS = {**L.BASE_WEIGHTS, "misleading": misleading}
    if train_noise:
        L.TRAIN_NOISE = train_noise

    def every_task(self, record, response, criteria=None):
        c = criteria or score(record, response)
        return {**terms0(self, record, response, c), "misleading": -self.weights["misleading"] * c["hallucination"]}

    if not closed_only:
        L.Labeler.utility_terms = every_task

    def undo():
        L.Labeler.utility_terms, L.BASE_WEIGHTS, L.TRAIN_NOISE = saved

    return undo


def rerank(src: Path) -> tuple[list[dict], list[dict]]:
    """The rows of ``src``'s rankings.jsonl and rankings_eval.jsonl, ranked again by the labelers as patched."""
    from instructrl.experiments.pipeline import world_seed_of
    from instructrl.world.labelers import make_pool

    pool = make_pool(world_seed_of(src / "world"))
    by_reference = json.loads((src / "recipe.json").read_text()).get("rank_labels") == "reference"

    def again(rows: list[dict], labelers: list) -> list[dict]:
        out = []
        for i, row in enumerate(rows):
            lab = labelers[i % len(labelers)]  # as collect_rankings deals the prompts out
            rec = {"prompt": row["prompt"], "task": row["task"], "category": row.get("category")}
            out.append(
                {
                    **row,
                    "ranks": lab.rank(rec, row["completions"]),
                    "reference_ranks": pool.reference.rank(rec, row["completions"]),
                    "labeler": lab.id,
                }
            )
        return out

    train = again(read_jsonl(src / "rankings" / "rankings.jsonl"), pool.training)
    if by_reference:
        train = [{**r, "ranks": r["reference_ranks"], "labeler": "reference"} for r in train]
    evals = read_jsonl(src / "rankings" / "rankings_eval.jsonl")
    half = sum(r["labeler_group"] == "training" for r in evals)
    return train, again(evals[:half], pool.training) + again(evals[half:], pool.heldout)


def check(args) -> int:
    src = Path(args.src)
    train, evals = rerank(src)
    for name, new in (("rankings.jsonl", train), ("rankings_eval.jsonl", evals)):
        old = read_jsonl(src / "rankings" / name)
        same = sum(a["ranks"] == b["ranks"] and a["reference_ranks"] == b["reference_ranks"] for a, b in zip(old, new))
        print(f"{name}: {same} of {len(old)} rows ranked as in {src}")
    return 0


def run(args) -> int:
    from instructrl.data.io import write_jsonl

    src, out = Path(args.src), Path(args.out)
    if not (src / "rankings" / ".done").exists():
        sys.exit(f"{src}: no finished rankings stage (rankings/.done)")
    link_stages(src, out, REUSED)
    ranks = out / "rankings"
    if not (ranks / ".done").exists():
        train, evals = rerank(src)
        link_stages(src / "rankings", ranks, ("world",))  # the larger build the prompts came from
        write_jsonl(ranks / "rankings.jsonl", train)
        write_jsonl(ranks / "rankings_eval.jsonl", evals)
        shutil.copy(src / "rankings" / ".done", ranks / ".done")  # the sampling's time, as the stage took it
    return finish_demo(out, args.seed)


def judge(args) -> int:
    """Direct comparisons of each run's evaluation responses by the held-out labelers, for each penalty."""
    from instructrl.world.labelers import make_pool

    runs = {}  # each run's evaluation prompts and responses, read once
    for run_dir in map(Path, args.runs):
        recs = {r["prompt"]: r for r in read_jsonl(run_dir / "world" / "eval_prompts.jsonl")}
        by = defaultdict(dict)
        for r in read_jsonl(run_dir / "eval" / "responses.jsonl"):
            by[r["prompt"]][r["model"]] = r["response"]
        runs[run_dir] = (recs, by)
    out = {}
    for closed_only in (False, True):
        for w in args.weights:
            undo = patch_labelers(w, closed_only)
            try:
                rows = []
                for recs, by in runs.values():
                    labs = make_pool(0).heldout
                    res = {}
                    for a, b in (("GPT prompted", "GPT"), ("PPO-ptx", "SFT")):
                        v = [
                            (labs[i % len(labs)].compare(recs[p], d[a], d[b]) + 1) / 2
                            for i, (p, d) in enumerate(by.items())
                            if p in recs
                        ]
                        res[f"{a} vs {b}"] = round(sum(v) / len(v), 3)
                    rows.append(res)
            finally:
                undo()
            key = f"{'closed-domain only' if closed_only else 'every task'}, penalty {w:g}"
            out[key] = dict(zip(args.runs, rows))
            print(key, json.dumps(rows))
    if args.write:
        Path(args.write).write_text(json.dumps(out, indent=1) + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("check", "run", "agreement"):
        p = sub.add_parser(name)
        if name != "agreement":
            p.add_argument("--src", required=True)
        p.add_argument(
            "--misleading",
            type=float,
            default=None,
            help="The penalty's base weight (none: as shipped, 2.5 on closed-domain tasks).",
        )
        p.add_argument("--closed-only", action="store_true")
        p.add_argument("--train-noise", default=None, help="LO,HI: the training labelers' noise range.")
        if name == "run":
            p.add_argument("--out", required=True)
            p.add_argument("--seed", type=int, required=True)
    p = sub.add_parser("judge")
    p.add_argument("runs", nargs="+")
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 1.5, 2.0, 2.5])
    p.add_argument("--write", default=None, help="A JSON file for the results.")
    args = ap.parse_args()
    if args.cmd == "judge":
        return judge(args)
    if args.misleading is not None:
        noise = tuple(float(x) for x in args.train_noise.split(",")) if args.train_noise else None
        patch_labelers(args.misleading, args.closed_only, noise)
    if args.cmd == "agreement":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "world"))
        from run import agreement  # benchmarks/world/run.py

        print(json.dumps(agreement(400)))
        return 0
    return check(args) if args.cmd == "check" else run(args)


if __name__ == "__main__":
    raise SystemExit(main())
