"""What limits PPO / PPO-ptx at the smallest size: reward models and PPO settings, side by side.

The arms, the reward models they learn from and those models' ranking data are data, in sweep.toml (each
table is described there). From a finished demo run of the 5-minute recipe (``instructrl demo --quick --out runs/demo``: world,
SFT, rankings, RM) the sweep runs these stages, each cached in OUT like the demo's:

1. the evaluation world: ``world-eval``, the demo world rebuilt with ``--eval-prompts`` evaluation prompts
   (win rates with standard errors near 0.017; its training files are checked to be the demo's); and SFT
   models of the small / medium base for reward models of that size;
2. rankings: K samples of the demo's SFT policy per prompt of larger builds of the same world
   (``world-big``, ``world-xl``; prompts of the held-out comparisons and of the evaluation left out),
   ranked by the training labelers or by the noiseless judge, and the later rounds, whose samples come
   from the SFT policy and a PPO-ptx arm in turn;
3. reward models: those the arms need, each from an SFT model of its size;
4. PPO arms: each arm from the demo's SFT policy, against its RM, an ensemble, or the judge itself;
5. evaluation: every arm against the SFT policy by the held-out labelers, the judge's criteria (the paper's
   metadata) and its utility by task type for every model, each RM's accuracy against the judge by the
   criterion deciding each held-out pair, and the held-out LM loss;
6. report: OUT/sweep.json, in the shape of schema.md, and its tables printed.

With ``--tag T --arms A ...`` only the arms A are evaluated, side by side, in their own stage ``eval-T``
(written to OUT/sweep-T.json; the main evaluation is kept). ``--train-only`` stops before the evaluation,
``--rms-only`` once the arms' reward models are trained: stages trained elsewhere (a GPU machine) are
copied into OUT and evaluated with the others.

    python benchmarks/ppo_quality/sweep.py --demo runs/demo --out runs/ppo-sweep
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from record import header

from instructrl.data.io import read_records, write_jsonl
from instructrl.errors import ConfigError
from instructrl.evaluate.lm_loss import checkpoint_heldout_loss, world_heldout_texts
from instructrl.evaluate.report import metrics_series
from instructrl.experiments.demo import is_quick_run
from instructrl.experiments.pipeline import (
    Recipe,
    Stages,
    build_world,
    by_reference,
    collect_rankings,
    run_eval_stage,
    run_ppo_stage,
    run_rm_stage,
    run_sft_stage,
)
from instructrl.experiments.pretrain import resolve_model
from instructrl.experiments.reproduce import ppo_curve_summary
from instructrl.modeling.loading import load_tokenizer
from instructrl.modeling.reward import EnsembleReward, RewardModel
from instructrl.world.judge import score
from instructrl.world.labelers import make_pool
from instructrl.world.reward import JudgeReward, calibrate

SWEEP_FILE = Path(__file__).with_name("sweep.toml")
CRITERIA = ["follows", "correct", "hallucination", "polite", "idk", "repetition", "constraints", "n_words", "success"]
FIRST_DATA = {"demo", "clean", "more", "more-clean", "sft8000", "xl", "xl-clean"}  # ranking data besides the rounds


# ---------------------------------------------------------------- the arms, as data


def arm_recipe(arm: dict, source: str = str(SWEEP_FILE)) -> Recipe:
    """The demo's recipe with the arm's PPO overrides (a ``seed`` there re-seeds PPO alone)."""
    return Recipe.from_dict({"ppo": arm.get("ppo", {})}, source)


def rm_recipe(rm: dict, source: str = str(SWEEP_FILE)) -> Recipe:
    """The demo's recipe with the reward model's RM overrides (the demo's RM recipe, rm-tiny, otherwise)."""
    return Recipe.from_dict({"rm": rm.get("rm", {})}, source)


def load_sweep(path: Path = SWEEP_FILE) -> dict:
    """The sweep's tables, checked before any stage runs: every name an arm, ensemble or round refers to is
    defined, and every arm's and reward model's overrides make a valid Recipe."""
    try:
        sweep = tomllib.loads(path.read_text())
        arms, rms, ens = sweep["arms"], sweep["reward_models"], sweep["ensembles"]
        rounds, xl_rounds = sweep["rounds"], sweep["xl_rounds"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as e:
        raise SystemExit(
            f"error: {path}: {e} (it needs the tables arms, reward_models, ensembles, rounds and xl_rounds)"
        ) from None

    def check(ok: bool, what: str) -> None:
        if not ok:
            raise SystemExit(f"error: {path}: {what}")

    try:
        for name, arm in arms.items():
            check(
                arm.get("rm") in {"demo", "oracle", *rms, *ens}, f"arms.{name}: unknown reward model {arm.get('rm')!r}"
            )
            check(isinstance(arm.get("ptx"), bool), f"arms.{name}: ptx must be true or false")
            arm_recipe(arm, f"{path}: arms.{name}")
        for name, rm in rms.items():
            check(
                rm.get("sft") in ("tiny", "small", "medium"), f"reward_models.{name}: sft must be tiny, small or medium"
            )
            check(rm.get("data") in FIRST_DATA | set(rounds) | set(xl_rounds), f"reward_models.{name}: unknown data")
            rm_recipe(rm, f"{path}: reward_models.{name}")
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    for name, e in ens.items():
        check(bool(e.get("members")) and set(e["members"]) <= set(rms), f"ensembles.{name}: unknown members")
    for name, r in {**rounds, **xl_rounds}.items():
        check(r.get("policy") in arms, f"rounds.{name}: unknown policy arm {r.get('policy')!r}")
    for name, r in rounds.items():
        check(r.get("before") in FIRST_DATA | set(rounds), f"rounds.{name}: unknown data before it")
    return sweep


SWEEP = load_sweep()
ARMS, REWARD_MODELS, ENSEMBLES = SWEEP["arms"], SWEEP["reward_models"], SWEEP["ensembles"]
ROUNDS, XL_ROUNDS = SWEEP["rounds"], SWEEP["xl_rounds"]


def uses_xl(arm: str) -> bool:
    """Whether an arm's reward model (or one of its ensemble's members) learns from the xl rankings."""
    rm = ARMS[arm]["rm"]
    members = ENSEMBLES[rm]["members"] if rm in ENSEMBLES else [rm]
    return any(REWARD_MODELS.get(m, {}).get("data", "").startswith("xl") for m in members)


def default_arms() -> list[str]:
    """Every arm but those on the xl rankings (those run with --tag)."""
    return [a for a in ARMS if not uses_xl(a)]


def needed(arms: list[str]) -> tuple[set[str], set[str]]:
    """The reward models the arms need (ensemble members included) and the ranking data those learn from,
    with the data of every round before a later round."""
    needs = {ARMS[a]["rm"] for a in arms}
    needs |= {m for e in needs & set(ENSEMBLES) for m in ENSEMBLES[e]["members"]}
    datasets = {REWARD_MODELS[n]["data"] for n in needs if n in REWARD_MODELS}
    for data in list(datasets):
        while data in ROUNDS:
            data = ROUNDS[data]["before"]
            datasets.add(data)
    return needs, datasets


@dataclass
class Sweep:
    """What the stages share: the options, the demo's stages, the stage runner, and what each stage made."""

    args: argparse.Namespace
    st: Stages
    pool: object  # the world's labelers: training, held-out, and the noiseless reference judge
    demo: Path
    world: Path = field(init=False)
    sft: Path = field(init=False)
    ranks: Path = field(init=False)
    ev_world: Path | None = None
    held: set[str] = field(default_factory=set)  # prompts of the held-out comparisons: never ranked for training
    prompts: dict[str, list[dict]] = field(default_factory=dict)  # "big", "xl": prompt records to rank
    rankings: dict[str, Path] = field(default_factory=dict)
    sfts: dict[str, Path] = field(default_factory=dict)
    rms: dict[str, Path] = field(default_factory=dict)
    runs: dict[str, Path] = field(default_factory=dict)
    judge: JudgeReward | None = None

    def __post_init__(self) -> None:
        self.world, self.sft, self.ranks = self.demo / "world", self.demo / "sft", self.demo / "rankings"
        self.sfts["tiny"], self.rms["demo"], self.rankings["demo"] = self.sft, self.demo / "rm", self.ranks

    @property
    def seed(self) -> int:
        return self.args.seed


# ---------------------------------------------------------------- 1. the evaluation world, the SFT models


def prompt_records(world: Path) -> list[dict]:
    """The prompts a world built for ranking."""
    return [r.data for r in read_records(world / "rm_prompts.jsonl", what="prompt data")]


def eval_world(sw: Sweep) -> None:
    """The demo world rebuilt with --eval-prompts evaluation prompts, its training files checked to be the
    demo's."""
    a = sw.args
    scale = json.loads((sw.world / "world.json").read_text())["scale"]
    recipe = Recipe.from_dict({"scale": scale, "world_eval_prompts": a.eval_prompts})
    sw.ev_world = sw.st.run("world-eval", lambda o: build_world(o, sw.seed, recipe))
    n_eval = len((sw.ev_world / "eval_prompts.jsonl").read_text().splitlines())
    if n_eval != a.eval_prompts:  # the stage is cached by name; the xl rankings leave its prompts out
        raise SystemExit(
            f"error: {sw.ev_world} holds {n_eval} evaluation prompts, not --eval-prompts "
            f"{a.eval_prompts}; use another --out for another evaluation size"
        )
    for f in ("sft.jsonl", "rm_prompts.jsonl", "ppo_prompts.jsonl", "pretrain.jsonl"):
        if (sw.ev_world / f).read_bytes() != (sw.world / f).read_bytes():
            raise SystemExit(
                f"error: {sw.ev_world / f} differs from the demo's: the demo was built with other settings"
            )
    sw.held = {json.loads(x)["prompt"] for x in (sw.ranks / "rankings_eval.jsonl").read_text().splitlines()}


def sft_models(sw: Sweep, needs: set[str]) -> None:
    """SFT of the small / medium base model on the demo's demonstrations, where a reward model starts from
    one (the paper: a 6B RM for every policy size)."""
    for size in ("small", "medium"):
        if any(REWARD_MODELS[n]["sft"] == size for n in needs if n in REWARD_MODELS):
            sw.sfts[size] = sw.st.run(
                f"sft-{size}", lambda o, s=size: run_sft_stage(o, resolve_model(s), sw.world, Recipe(), sw.seed)
            )


# ---------------------------------------------------------------- 2. rankings


def save_rankings(sw: Sweep, o: Path, rows: list[dict]) -> None:
    """A ranking stage's output: its rows, and the demo's held-out pairs to evaluate an RM on."""
    write_jsonl(o / "rankings.jsonl", rows)
    (o / "rankings_eval.jsonl").write_bytes((sw.ranks / "rankings_eval.jsonl").read_bytes())


def rank(sw: Sweep, o: Path, policies: list[str], prompts: list[dict], labels: str = "labelers") -> None:
    """K samples of each prompt shared out among ``policies``, ranked by the training labelers or
    (``reference``) by the noiseless judge."""
    recipe = Recipe()
    rows = collect_rankings(
        policies,
        prompts,
        sw.pool.training,
        sw.pool.reference,
        recipe.k,
        sw.seed,
        recipe.max_new_tokens,
        "training",
        top_k=recipe.rank_top_k,  # the distribution the recorded sweeps drew from (transformers' top-k 50)
    )
    save_rankings(sw, o, by_reference(rows) if labels == "reference" else rows)


def clean_rankings(sw: Sweep, src: Path, o: Path) -> None:
    """The rankings in ``src`` ranked again by the noiseless judge: the same prompts and samples."""
    save_rankings(sw, o, by_reference([json.loads(x) for x in (src / "rankings.jsonl").read_text().splitlines()]))


def joined(sw: Sweep, parts: list[Path], o: Path) -> None:
    """One training file of several rounds."""
    (o / "rankings.jsonl").write_text("".join((p / "rankings.jsonl").read_text() for p in parts))
    (o / "rankings_eval.jsonl").write_bytes((sw.ranks / "rankings_eval.jsonl").read_bytes())


def round_prompts(sw: Sweep, round_: int) -> list[dict]:
    """Round ``round_``'s block of 2,000 prompts after the first --more-prompts of the big world."""
    start = sw.args.more_prompts + 2000 * (round_ - 2)
    return sw.prompts["big"][start : start + 2000]


def first_rankings(sw: Sweep, datasets: set[str]) -> None:
    """Rankings of the SFT policy's samples on the prompts of larger builds of the same world (the same
    knowledge base; prompts of the held-out comparisons, and for xl of the evaluation, left out), and the
    noiseless judge's ranks of the same samples."""
    a, sft, r = sw.args, str(sw.sft), sw.rankings
    if datasets & {"more", "more-clean", "sft8000", *ROUNDS}:
        big = sw.st.run(
            "world-big",
            lambda o: build_world(o, sw.seed, Recipe.from_dict({"scale": max(3.0, 1.3 * a.more_prompts / 3321)})),
        )
        sw.prompts["big"] = [p for p in prompt_records(big) if p["prompt"] not in sw.held]
        r["more"] = sw.st.run(
            f"rankings-{a.more_prompts}", lambda o: rank(sw, o, [sft], sw.prompts["big"][: a.more_prompts])
        )
    if datasets & {"xl", "xl-clean", *XL_ROUNDS}:  # 12x the demo's prompts: the paper's amount of ranking data
        xl = sw.st.run("world-xl", lambda o: build_world(o, sw.seed, Recipe.from_dict({"scale": 12.0})))
        evals = (sw.ev_world / "eval_prompts.jsonl").read_text().splitlines()
        held_out = sw.held | {json.loads(x)["prompt"] for x in evals}
        sw.prompts["xl"] = [p for p in prompt_records(xl) if p["prompt"] not in held_out][: a.xl_prompts]
        r["xl"] = sw.st.run(f"rankings-xl-{a.xl_prompts}", lambda o: rank(sw, o, [sft], sw.prompts["xl"]))
        r["xl-clean"] = sw.st.run(f"rankings-xl-{a.xl_prompts}-clean", lambda o: clean_rankings(sw, r["xl"], o))
    if "clean" in datasets:
        r["clean"] = sw.st.run("rankings-clean", lambda o: clean_rankings(sw, sw.ranks, o))
    if datasets & {"more-clean", "iter-clean"}:
        r["more-clean"] = sw.st.run(f"rankings-{a.more_prompts}-clean", lambda o: clean_rankings(sw, r["more"], o))


def later_rounds(sw: Sweep, datasets: set[str]) -> None:
    """Rounds whose samples come from the SFT policy and a PPO-ptx arm in turn (the paper's later rounds of
    comparisons), each joined to the rankings before it; the arm (and its RM) is trained first."""
    sft, r = str(sw.sft), sw.rankings
    for data, spec in XL_ROUNDS.items():  # the last 8,000 xl prompts, ranked by the judge
        if data in datasets:
            policy = ppo_arm(sw, spec["policy"])
            new = sw.st.run(
                spec["stage"], lambda o, p=policy: rank(sw, o, [sft, str(p)], sw.prompts["xl"][-8000:], "reference")
            )
            r[data] = sw.st.run(f"rankings-{data}", lambda o, parts=[r["xl-clean"], new]: joined(sw, parts, o))
    for data, spec in ROUNDS.items():  # in round order
        if data in datasets:
            policy = ppo_arm(sw, spec["policy"])
            new = sw.st.run(
                f"rankings-round{spec['round']}-{data}",
                lambda o, p=policy, s=spec: rank(sw, o, [sft, str(p)], round_prompts(sw, s["round"]), s["labels"]),
            )
            r[data] = sw.st.run(f"rankings-{data}", lambda o, parts=[r[spec["before"]], new]: joined(sw, parts, o))
    if "sft8000" in datasets:  # the control for a round's amount of data: round 2's prompts, SFT samples only
        extra = sw.st.run("rankings-round2-sft", lambda o: rank(sw, o, [sft], round_prompts(sw, 2)))
        r["sft8000"] = sw.st.run("rankings-sft8000", lambda o: joined(sw, [r["more"], extra], o))


# ---------------------------------------------------------------- 3. reward models


def reward_model(sw: Sweep, name: str) -> Path:
    """The reward model ``name``, trained once in its own stage."""
    if name not in sw.rms:
        spec = REWARD_MODELS[name]
        stage = name.replace("more", str(sw.args.more_prompts)) if spec["data"].startswith("more") else name
        sft, data, recipe = sw.sfts[spec["sft"]], sw.rankings[spec["data"]], rm_recipe(spec)
        sw.rms[name] = sw.st.run(stage, lambda o: run_rm_stage(o, str(sft), data, sw.world, recipe, sw.seed))
    return sw.rms[name]


def reward_models(sw: Sweep, needs: set[str]) -> None:
    """Every reward model the arms need, in the order of sweep.toml."""
    for name in REWARD_MODELS:
        if name in needs:
            reward_model(sw, name)


# ---------------------------------------------------------------- 4. PPO arms


def ppo_arm(sw: Sweep, name: str) -> Path:
    """The PPO / PPO-ptx run ``name`` from the demo's SFT policy; the value model starts from its RM (an
    ensemble's first member; the demo RM for the judge)."""
    arm, done = ARMS[name], (sw.st.root / name / ".done").exists()
    if name in ("ppo", "ppo_ptx") and (sw.demo / name / ".done").exists():
        return sw.demo / name  # the demo's own run (ppo: from benchmarks/ppo_quality/run.py)
    reward_fn = None
    if arm["rm"] == "oracle":
        rm_dir = sw.rms["demo"]
        if not done:  # built once: it loads the demo RM and scores the held-out samples to calibrate
            sw.judge = sw.judge or oracle_reward(
                sw.sft, rm_dir, sw.world, sw.ranks / "rankings_eval.jsonl", sw.pool.reference
            )
            reward_fn = sw.judge
    elif arm["rm"] in ENSEMBLES:
        ens = ENSEMBLES[arm["rm"]]
        dirs = [reward_model(sw, m) for m in ens["members"]]
        rm_dir = dirs[0]
        if not done:
            reward_fn = EnsembleReward.from_dirs([str(d) for d in dirs], ens["mode"])
    else:
        rm_dir = reward_model(sw, arm["rm"])
    recipe = arm_recipe(arm)
    return sw.st.run(
        name,
        lambda o: run_ppo_stage(
            o, str(sw.sft), str(rm_dir), sw.world, recipe, sw.seed, ptx=arm["ptx"], reward_fn=reward_fn
        ),
    )


def oracle_reward(sft: Path, rm: Path, world: Path, rankings: Path, reference) -> JudgeReward:
    """The reference judge as a reward module for PPO prompts, calibrated to the demo RM's mean and
    spread on the held-out ranked samples of the SFT policy."""
    model = RewardModel.from_pretrained(rm)
    util, scores = [], []
    for line in rankings.read_text().splitlines():
        row = json.loads(line)
        util += [reference.utility(row, c) for c in row["completions"]]
        scores += model.score([row["prompt"]] * len(row["completions"]), row["completions"]).tolist()
    scale, shift = calibrate(util, scores)
    records = [json.loads(x) for x in (world / "ppo_prompts.jsonl").read_text().splitlines()]
    return JudgeReward(load_tokenizer(str(sft)), records, reference, scale=scale, shift=shift)


# ---------------------------------------------------------------- 5. evaluation


def evaluate(sw: Sweep) -> Path:
    """Every run and a second SFT sample against the SFT policy, side by side, by the held-out labelers."""
    stage = f"eval-{sw.args.tag}" if sw.args.tag else "eval"
    done = sw.st.root / stage / "results.json"
    if done.exists() and set(json.loads(done.read_text())["models"]) != {"SFT-2", *sw.runs}:
        shutil.rmtree(sw.st.root / stage)  # evaluated with another set of arms: evaluate them all again
    models = [f"SFT-2={sw.sft}"] + [f"{n}={p}" for n, p in sw.runs.items()]
    n = sw.args.eval_prompts  # all of the evaluation world's prompts (eval_world checks it holds n)
    recipe = Recipe.from_dict({"eval_prompts": n, "world_eval_prompts": n})
    return sw.st.run(
        stage, lambda o: run_eval_stage(o, models, f"SFT={sw.sft}", sw.ev_world, recipe, sw.seed, suites=["winrate"])
    )


def judge_by_model(responses: Path, prompts: Path, reference) -> tuple[dict, dict]:
    """Each model's evaluation responses judged once: the mean of each judge criterion, and the noiseless
    judge's mean utility by task type (where a policy gains on SFT and where it loses)."""
    records = {json.loads(x)["prompt"]: json.loads(x) for x in prompts.read_text().splitlines()}
    sums: dict[str, Counter] = defaultdict(Counter)
    by_task: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))
    for line in responses.read_text().splitlines():
        r = json.loads(line)
        rec = records[r["prompt"]]
        c = score(rec, r["response"])
        sums[r["model"]]["n"] += 1
        for k in CRITERIA:
            sums[r["model"]][k] += float(c[k] or 0)
        cell = by_task[r["model"]][rec["task"]["type"]]
        cell[0] += reference.utility(rec, r["response"], c)
        cell[1] += 1
    criteria = {m: {k: s[k] / s["n"] for k in CRITERIA} for m, s in sums.items()}
    utility = {m: {t: {"utility": u / n, "n": n} for t, (u, n) in types.items()} for m, types in by_task.items()}
    return criteria, utility


def rm_by_criterion(rms: dict[str, Path], rankings: Path, reference) -> dict:
    """Accuracy of each RM (and of the ranking labeler) against the noiseless reference judge, per
    criterion that contributes most to the reference's preference in each pair."""
    models = {name: RewardModel.from_pretrained(path) for name, path in rms.items()}
    stats: dict[str, Counter] = defaultdict(Counter)
    for line in rankings.read_text().splitlines():
        row = json.loads(line)
        comps = row["completions"]
        terms = [reference.utility_terms(row, c) for c in comps]
        util = [sum(t.values()) for t in terms]
        scores = {n: m.score([row["prompt"]] * len(comps), comps).tolist() for n, m in models.items()}
        for i, j in itertools.combinations(range(len(comps)), 2):
            if abs(util[i] - util[j]) < 1e-9:
                continue
            a, b = (i, j) if util[i] > util[j] else (j, i)
            deciding = max(terms[a], key=lambda k: terms[a][k] - terms[b][k])
            for key in (deciding, "all"):
                st = stats[key]
                st["pairs"] += 1
                st["labeler"] += row["ranks"][a] < row["ranks"][b]
                for n, s in scores.items():
                    st[n] += s[a] > s[b]
    return {
        k: {"pairs": st["pairs"], **{n: st[n] / st["pairs"] for n in ["labeler", *models]}}
        for k, st in sorted(stats.items(), key=lambda kv: -kv[1]["pairs"])
    }


def training_curve(run: Path) -> dict:
    """Mean RM score of the first and last quarter of a PPO run's iterations, and its KL at the end."""
    s = ppo_curve_summary(run / "metrics.jsonl")
    return {
        "score_first_quarter": s["ppo/score_mean"]["first_quarter"],
        "score_last_quarter": s["ppo/score_mean"]["last_quarter"],
        "kl_last_quarter": s["ppo/kl"]["last_quarter"],
        "iterations": len(metrics_series(run / "metrics.jsonl", "ppo/score_mean")[1]),
    }


# ---------------------------------------------------------------- 6. report


def report(sw: Sweep, ev: Path) -> dict:
    """The evaluation in the shape of schema.md (instructrl.ppo_quality/1)."""
    win = {m: v.get("win_rate") for m, v in json.loads((ev / "results.json").read_text())["models"].items()}
    criteria, utility = judge_by_model(ev / "responses.jsonl", sw.ev_world / "eval_prompts.jsonl", sw.pool.reference)
    texts = world_heldout_texts(sw.seed)
    base = yaml.safe_load((sw.sft / "config.yaml").read_text())["model"]  # the demo's base model
    lm_loss = {n: checkpoint_heldout_loss(str(p), texts) for n, p in {"base": base, "SFT-2": sw.sft, **sw.runs}.items()}
    by_criterion = rm_by_criterion(sw.rms, sw.ranks / "rankings_eval.jsonl", sw.pool.reference)
    rm_accuracy = {
        n: json.loads((p / "eval_results.json").read_text())["groups"]["all"]["accuracy"] for n, p in sw.rms.items()
    }

    def measured(m: str) -> dict:
        return {"win_rate_vs_sft": win.get(m), "heldout_lm_loss": lm_loss[m]}

    def judged(m: str) -> dict:
        return {"criteria": criteria.get(m), "utility_by_task": utility.get(m)}

    a = sw.args
    return {
        **header(
            {
                "demo": str(sw.demo),
                "eval_prompts": a.eval_prompts,
                "seed": a.seed,
                "more_prompts": a.more_prompts,
                "xl_prompts": a.xl_prompts,
            }
        ),
        "references": {"base": {"heldout_lm_loss": lm_loss["base"]}, "SFT-2": {**measured("SFT-2"), **judged("SFT-2")}},
        "arms": {
            n: {
                "recipe": {"rm": ARMS[n]["rm"], "ptx": ARMS[n]["ptx"], "ppo": ARMS[n].get("ppo", {})},
                **measured(n),
                "training": training_curve(p),
                **judged(n),
            }
            for n, p in sw.runs.items()
        },
        "reward_models": {
            n: {"accuracy_vs_labelers": acc, "vs_reference": {c: v[n] for c, v in by_criterion.items()}}
            for n, acc in rm_accuracy.items()
        },
        "labelers_vs_reference": {c: {"pairs": v["pairs"], "accuracy": v["labeler"]} for c, v in by_criterion.items()},
        "stage_seconds": sw.st.timings,
    }


def print_report(rep: dict) -> None:
    models = {"SFT-2": rep["references"]["SFT-2"], **rep["arms"]}
    print(
        f"{'model':32s} {'win vs SFT':>16s} {'LM loss':>8s} {'RM score':>14s} {'KL':>5s} "
        + " ".join(f"{k[:7]:>7s}" for k in CRITERIA)
    )
    for m, r in models.items():
        w, c, t = r["win_rate_vs_sft"], r["criteria"] or {}, r.get("training")
        curve = (
            f"{t['score_first_quarter']:6.2f} > {t['score_last_quarter']:5.2f} {t['kl_last_quarter']:5.1f}"
            if t
            else " " * 20
        )
        print(
            f"{m:32s} {w['mean']:8.3f} ± {w['se']:.3f} {r['heldout_lm_loss']:8.4f} {curve} "
            + " ".join(f"{c.get(k, 0):7.3f}" for k in CRITERIA)
        )
    print(f"held-out LM loss of the base model: {rep['references']['base']['heldout_lm_loss']:.4f}")
    sft2 = models["SFT-2"]["utility_by_task"]
    types = sorted(sft2, key=lambda t: -sft2[t]["n"])
    print("\nthe judge's mean utility by task type: SFT-2, and each arm's difference from it")
    print(f"{'model':32s} " + " ".join(f"{t[:9]:>9s}" for t in types))
    print(f"{'(prompts)':32s} " + " ".join(f"{sft2[t]['n']:9d}" for t in types))
    for m, r in models.items():
        row = r["utility_by_task"] or {}
        base = {t: 0.0 if m == "SFT-2" else sft2[t]["utility"] for t in types}
        print(f"{m:32s} " + " ".join(f"{row[t]['utility'] - base[t]:+9.3f}" if t in row else " " * 9 for t in types))
    print("\nRM accuracy vs the reference judge, by the criterion deciding each held-out pair")
    rms = rep["reward_models"]
    print(f"{'criterion':14s} {'pairs':>6s} {'labeler':>10s} " + " ".join(f"{n:>10s}" for n in rms))
    for c, lab in rep["labelers_vs_reference"].items():
        print(
            f"{c:14s} {lab['pairs']:6d} {lab['accuracy']:10.3f} "
            + " ".join(f"{r['vs_reference'][c]:10.3f}" for r in rms.values())
        )


# ---------------------------------------------------------------- the sweep


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", default="runs/demo", help="a finished demo run (world, sft, rankings, rm)")
    ap.add_argument("--out", default="runs/ppo-sweep")
    ap.add_argument("--more-prompts", type=int, default=6000, help="prompts ranked for the rm-more reward model")
    ap.add_argument("--xl-prompts", type=int, default=32000, help="prompts ranked for the rm-xl reward models")
    ap.add_argument("--eval-prompts", type=int, default=800)
    ap.add_argument(
        "--arms",
        nargs="*",
        default=default_arms(),
        choices=list(ARMS),
        metavar="ARM",
        help="arms of sweep.toml (default: all but those on the xl rankings, run with --tag)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--tag",
        default="",
        help="evaluate the --arms in their own stage eval-TAG and write "
        "sweep-TAG.json (the main evaluation, of every arm side by side, is left as it is)",
    )
    ap.add_argument(
        "--train-only",
        action="store_true",
        help="stop once the arms' stages are trained (to train "
        "on one machine, a GPU say, and evaluate on another: copy the stage folders into OUT there)",
    )
    ap.add_argument(
        "--rms-only",
        action="store_true",
        help="stop once the arms' reward models are trained (to train them on a GPU and run PPO on another machine)",
    )
    return ap.parse_args(argv)


def main() -> int:
    args = parse_args()
    demo = Path(args.demo)
    for stage in ("world", "sft", "rankings", "rm"):
        if not (demo / stage / ".done").exists():
            raise SystemExit(
                f"error: {demo / stage} is not a finished demo stage; run `instructrl demo --quick --out DIR` first"
            )
    if not is_quick_run(demo):
        raise SystemExit(f"error: {demo} is a run of the default demo recipe; start from `instructrl demo --quick`")
    sw = Sweep(args, Stages(Path(args.out), {}), make_pool(args.seed), demo)
    needs, datasets = needed(args.arms)
    eval_world(sw)
    sft_models(sw, needs)
    first_rankings(sw, datasets)
    later_rounds(sw, datasets)
    reward_models(sw, needs)
    if args.rms_only:
        print(f"trained: {', '.join(n for n in sw.rms if n in needs)} (stage times: {sw.st.timings})")
        return 0
    sw.runs = {name: ppo_arm(sw, name) for name in args.arms}
    if args.train_only:
        print(f"trained: {', '.join(sw.runs)} (stage times: {sw.st.timings})")
        return 0
    rep = report(sw, evaluate(sw))
    (sw.st.root / f"sweep{'-' + args.tag if args.tag else ''}.json").write_text(json.dumps(rep, indent=1) + "\n")
    print_report(rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
