"""What limits PPO / PPO-ptx at the smallest size: reward models and PPO settings, side by side.

Reuses a demo run (``bash scripts/demo.sh`` -> runs/demo: world, SFT, rankings, RM) and adds, each stage
cached in OUT like the demo's:

* ``world-eval``: the demo world rebuilt with more held-out evaluation prompts (``--eval-prompts``; the
  training files are checked to be identical), for win rates with standard errors near 0.017;
* ``world-big`` + ``rankings-N``: N more prompts ranked by the training labelers, from the demo's SFT
  policy (prompts of the held-out comparisons left out);
* ``world-xl`` + ``rankings-xl-N``: the paper's amount of ranking data (``--xl-prompts``, 32,000 by
  default; the paper: 33k prompts) from a 12x build of the same world, prompts of the held-out
  comparisons and of the evaluation left out, and second rounds on 8,000 of them (XL_ROUNDS: samples of a
  PPO-ptx policy next to SFT's, ranked by the noiseless judge);
* reward models: ``rm-small`` and ``rm-medium`` (from an SFT of the ``small`` / ``medium`` base on the
  demo's data and rankings; the value model starts from the RM, so it has that size too), ``rm-N``
  (the demo's RM recipe on the N-prompt rankings), ``rm-N-medium`` (the same from the medium SFT model),
  ``rm-clean`` / ``rm-N-clean`` (the demo's / the N-prompt rankings re-ranked by the noiseless reference
  judge: the cost of label noise), ``rm-xl-clean-small`` / ``rm-xl-clean-medium`` (the 32k noiseless
  rankings, from the small / medium SFT model), ``rm-xl-clean-small-1ep`` (the same for 1 epoch) and
  ``rm-xl-clean-small-s1`` (a second build of the small one, seed 1; RM_OVERRIDES), ``rm-xl-small-iter-clean``
  (the small one on both rounds), ``rm-xl-clean-medium-lr5`` / ``-lr2`` (the medium one at LR 5e-4 / 2e-4);
* PPO / PPO-ptx runs from the demo's SFT policy with each RM, coefficient and episode count of ARMS;
  the ``oracle`` arms optimize the noiseless reference judge itself (``instructrl.world.reward.JudgeReward``,
  scaled to the demo RM's mean and spread; value model from the demo RM): the same PPO with an exact reward;
* one evaluation of every run against the SFT policy by the held-out labelers, the judge's criteria
  of every model's responses (the paper's metadata), the judge's mean utility by task type, and each RM's
  accuracy against the noiseless reference judge, split by the criterion that decides each held-out pair.

Writes OUT/sweep.json and prints the tables. With ``--tag T --arms A ...`` only the arms A are evaluated,
side by side, in their own stage ``eval-T`` (written to OUT/sweep-T.json; the main evaluation is kept).
``--train-only`` stops before the evaluation, ``--rms-only`` once the arms' reward models are trained: stages
trained elsewhere (a GPU machine) are copied into OUT and evaluated with the others.

    python benchmarks/ppo_quality/sweep.py --demo runs/demo --out runs/ppo-sweep
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from collections import Counter, defaultdict
from pathlib import Path

import yaml



def g1(rm: str, episodes: int, **ppo) -> tuple:
    """A PPO-ptx arm with gamma 1 against ``rm`` for ``episodes``; ``ppo`` overrides the PPO config."""
    return (rm, True, {"ptx_coef": 1.0, "ppo_episodes": episodes, **ppo})


# name: (reward model, PPO-ptx, overrides of the demo recipe or of the PPO config)
ARMS = {
    "ppo": ("demo", False, {}),
    "ppo_ptx": ("demo", True, {}),
    "ppo_ptx-seed1": ("demo", True, {"seed": 1}),  # the same run with other PPO seeds: run-to-run spread
    "ppo_ptx-seed2": ("demo", True, {"seed": 2}),
    "ppo-rm_small-1024": ("rm-small", False, {"ppo_episodes": 1024}),
    "ppo_ptx-rm_small": ("rm-small", True, {}),
    "ppo_ptx-rm_small-g3": ("rm-small", True, {"ptx_coef": 3.0}),
    "ppo_ptx-rm_small-g1": ("rm-small", True, {"ptx_coef": 1.0}),
    "ppo_ptx-rm_small-1024": ("rm-small", True, {"ppo_episodes": 1024}),
    "ppo_ptx-rm_small-g1-1024": g1("rm-small", 1024),
    "ppo_ptx-rm_small-g1-1024-seed1": g1("rm-small", 1024, seed=1),
    "ppo_ptx-rm_small-g1-1024-seed2": g1("rm-small", 1024, seed=2),
    "ppo-rm_medium": ("rm-medium", False, {}),
    "ppo_ptx-rm_medium": ("rm-medium", True, {}),
    "ppo_ptx-rm_medium-g1-1024": g1("rm-medium", 1024),
    "ppo-rm_more": ("rm-more", False, {}),
    "ppo_ptx-rm_more": ("rm-more", True, {}),
    "ppo-rm_more_medium": ("rm-more-medium", False, {}),
    "ppo_ptx-rm_more_medium": ("rm-more-medium", True, {}),
    # the reward is the reference judge itself (no RM; scaled to the demo RM's spread): what PPO reaches
    # when the reward is exact, i.e. how much of the gap to the target is the reward model's
    "ppo-oracle": ("oracle", False, {}),
    "ppo_ptx-oracle": ("oracle", True, {}),
    "ppo_ptx-oracle-g1": ("oracle", True, {"ptx_coef": 1.0}),
    # longer runs (the demo: 2,048 episodes), against the judge and against learned RMs
    "ppo-oracle-8k": ("oracle", False, {"ppo_episodes": 8192}),
    "ppo_ptx-oracle-8k": ("oracle", True, {"ppo_episodes": 8192}),
    "ppo_ptx-oracle-g1-8k": g1("oracle", 8192),
    "ppo_ptx-oracle-g1-8k-seed1": g1("oracle", 8192, seed=1),
    "ppo_ptx-oracle-g0.3-8k": ("oracle", True, {"ptx_coef": 0.3, "ppo_episodes": 8192}),
    "ppo_ptx-oracle-g1-16k": g1("oracle", 16384),
    "ppo_ptx-oracle-g1-16k-seed1": g1("oracle", 16384, seed=1),
    "ppo_ptx-oracle-g1-16k-seed2": g1("oracle", 16384, seed=2),
    "ppo_ptx-oracle-g1-32k": g1("oracle", 32768),
    "ppo_ptx-g1-4k": g1("demo", 4096),
    "ppo_ptx-g1-8k": g1("demo", 8192),
    "ppo_ptx-rm_small-g1-8k": g1("rm-small", 8192),
    "ppo_ptx-rm_more-g1-4k": g1("rm-more", 4096),
    "ppo_ptx-rm_more-g1-8k": g1("rm-more", 8192),
    "ppo_ptx-rm_more_medium-g1-8k": g1("rm-more-medium", 8192),
    # an RM from the demo's rankings with the noiseless judge's ranks in place of the labelers': label noise?
    "ppo_ptx-rm_clean": ("rm-clean", True, {}),
    "ppo_ptx-rm_clean-g1-4k": g1("rm-clean", 4096),
    "ppo_ptx-rm_clean-g1-8k": g1("rm-clean", 8192),
    "ppo_ptx-rm_more_clean": ("rm-more-clean", True, {}),
    "ppo_ptx-rm_more_clean-g1-4k": g1("rm-more-clean", 4096),
    "ppo_ptx-rm_more_clean-g1-8k": g1("rm-more-clean", 8192),
    "ppo_ptx-rm_more_clean-g1-4k-seed1": g1("rm-more-clean", 4096, seed=1),
    "ppo_ptx-rm_more_clean-g1-8k-kl05": g1("rm-more-clean", 8192, kl_coef=0.05),
    "ppo_ptx-rm_more_clean-g1-16k-kl05": g1("rm-more-clean", 16384, kl_coef=0.05),
    # a second round of comparisons (the paper's later rounds): 2,000 more prompts whose K samples come
    # half from the SFT policy, half from the PPO-ptx policy that over-optimized the first RM; the RM is
    # retrained on both rounds and PPO-ptx starts again from SFT. rm-8000: the same 8,000 prompts with
    # SFT samples only (the control for the amount of data)
    "ppo_ptx-rm_iter-g1-4k": g1("rm-iter", 4096),
    "ppo_ptx-rm_iter-g1-8k": g1("rm-iter", 8192),
    "ppo_ptx-rm_8000-g1-4k": g1("rm-8000", 4096),
    "ppo_ptx-rm_iter_clean-g1-4k": g1("rm-iter-clean", 4096),
    "ppo_ptx-rm_iter_clean-g1-8k": g1("rm-iter-clean", 8192),
    "ppo_ptx-rm_iter_clean-g1-16k": g1("rm-iter-clean", 16384),
    # a third round (noiseless labels): the next prompts, samples from SFT and the second round's 8k policy
    "ppo_ptx-rm_iter3_clean-g1-8k": g1("rm-iter3-clean", 8192),
    "ppo_ptx-rm_iter3_clean-g1-16k": g1("rm-iter3-clean", 16384),
    # reward-model ensembles (instructrl.ppo.models.EnsembleReward) of the RMs above
    "ppo_ptx-ens_clean-g1-8k": g1("ens-clean", 8192),
    "ppo_ptx-ens-g1-8k": g1("ens", 8192),
    "ppo_ptx-ens_min-g1-8k": g1("ens-min", 8192),
    # the paper's amount of ranking data (33k prompts): --xl-prompts prompts of a larger build of the same
    # world, SFT samples, ranked by the training labelers / by the noiseless judge
    "ppo_ptx-rm_xl-g1-8k": g1("rm-xl", 8192),
    "ppo_ptx-rm_xl-g1-16k": g1("rm-xl", 16384),
    "ppo_ptx-rm_xl_clean-g1-8k": g1("rm-xl-clean", 8192),
    "ppo_ptx-rm_xl_clean-g1-16k": g1("rm-xl-clean", 16384),
    "ppo_ptx-rm_xl_clean-g1-8k-seed1": g1("rm-xl-clean", 8192, seed=1),
    "ppo_ptx-rm_xl_clean-g1-32k": g1("rm-xl-clean", 32768),
    "ppo_ptx-rm_xl_clean-g1-16k-lr2": g1("rm-xl-clean", 16384, learning_rate=2e-4),
    "ppo_ptx-rm_xl_clean-g1-16k-ep2": g1("rm-xl-clean", 16384, ppo_epochs=2),
    "ppo_ptx-rm_xl_clean-g1-16k-lr2-seed1": g1("rm-xl-clean", 16384, learning_rate=2e-4, seed=1),
    # a second round on top of it: the last 8,000 of those prompts sampled anew, half by SFT, half by the
    # 32k policy that over-optimized rm-xl-clean, ranked by the noiseless judge; the RM retrained on both
    "ppo_ptx-rm_xl_iter_clean-g1-8k": g1("rm-xl-iter-clean", 8192),
    "ppo_ptx-rm_xl_iter_clean-g1-16k": g1("rm-xl-iter-clean", 16384),
    "ppo_ptx-rm_xl_iter_clean-g1-16k-lr2": g1("rm-xl-iter-clean", 16384, learning_rate=2e-4),
    "ppo_ptx-rm_xl_iter_clean-g1-16k-lr2-seed1": g1("rm-xl-iter-clean", 16384, learning_rate=2e-4, seed=1),
    # the same 32k noiseless rankings for an RM larger than the policy (the paper: a 6B RM for every policy
    # size); the value model starts from the RM, so it has that size too
    "ppo_ptx-rm_xl_clean_small-g1-16k": g1("rm-xl-clean-small", 16384),
    "ppo_ptx-rm_xl_clean_small-g1-16k-seed1": g1("rm-xl-clean-small", 16384, seed=1),
    "ppo_ptx-rm_xl_clean_small-g1-16k-seed2": g1("rm-xl-clean-small", 16384, seed=2),
    "ppo_ptx-rm_xl_clean_small-g1-24k": g1("rm-xl-clean-small", 24576),
    "ppo_ptx-rm_xl_clean_small-g1-16k-lr2": g1("rm-xl-clean-small", 16384, learning_rate=2e-4),
    "ppo_ptx-rm_xl_clean_medium-g1-16k": g1("rm-xl-clean-medium", 16384),
    "ppo_ptx-rm_xl_clean_medium-g1-16k-lr2": g1("rm-xl-clean-medium", 16384, learning_rate=2e-4),
    # the small RM trained for 1 epoch, as the paper trains its RM (there it overfits after one); a second build of
    # the small RM (seed 1: other head initialization and data order); a stronger KL penalty over more
    # episodes; the two small builds as one ensemble
    "ppo_ptx-rm_xl_clean_small_1ep-g1-16k": g1("rm-xl-clean-small-1ep", 16384),
    "ppo_ptx-rm_xl_clean_small_1ep-g1-16k-seed1": g1("rm-xl-clean-small-1ep", 16384, seed=1),
    "ppo_ptx-rm_xl_clean_small_s1-g1-16k": g1("rm-xl-clean-small-s1", 16384),
    "ppo_ptx-rm_xl_clean_small-g1-24k-kl4": g1("rm-xl-clean-small", 24576, kl_coef=0.04),
    "ppo_ptx-rm_xl_clean_small-g1-24k-kl4-seed1": g1("rm-xl-clean-small", 24576, kl_coef=0.04, seed=1),
    "ppo_ptx-rm_xl_clean_small-g1-24k-kl4-seed2": g1("rm-xl-clean-small", 24576, kl_coef=0.04, seed=2),
    "ppo_ptx-rm_xl_clean_small-g1-32k-kl4": g1("rm-xl-clean-small", 32768, kl_coef=0.04),
    "ppo_ptx-rm_xl_clean_small_s1-g1-24k-kl4": g1("rm-xl-clean-small-s1", 24576, kl_coef=0.04),
    "ppo_ptx-rm_xl_clean_small_s1-g1-24k-kl4-seed1": g1("rm-xl-clean-small-s1", 24576, kl_coef=0.04, seed=1),
    "ppo_ptx-rm_xl_clean_small_s1-g1-24k-kl4-seed2": g1("rm-xl-clean-small-s1", 24576, kl_coef=0.04, seed=2),
    "ppo_ptx-ens_xl_clean_small2-g1-16k": g1("ens-xl-clean-small2", 16384),
    "ppo_ptx-ens_xl_clean_small2-g1-16k-seed1": g1("ens-xl-clean-small2", 16384, seed=1),
    "ppo_ptx-ens_xl_clean_small2-g1-24k-kl4": g1("ens-xl-clean-small2", 24576, kl_coef=0.04),
    # a second round for the small RM: the last 8,000 of the 32k prompts sampled anew, half by SFT, half by the
    # best small-RM policy (KL 0.04, 24k episodes, which does not over-optimize), ranked by the noiseless
    # judge; the small RM retrained on both rounds
    "ppo_ptx-rm_xl_small_iter_clean-g1-24k-kl4": g1("rm-xl-small-iter-clean", 24576, kl_coef=0.04),
    "ppo_ptx-rm_xl_small_iter_clean-g1-24k-kl4-seed1": g1("rm-xl-small-iter-clean", 24576, kl_coef=0.04, seed=1),
    "ppo_ptx-rm_xl_small_iter_clean-g1-24k-kl4-seed2": g1("rm-xl-small-iter-clean", 24576, kl_coef=0.04, seed=2),
    # the two small builds and the second-round RM as one ensemble
    "ppo_ptx-ens_xl_clean_small3-g1-24k-kl4": g1("ens-xl-clean-small3", 24576, kl_coef=0.04),
    "ppo_ptx-ens_xl_clean_small3-g1-24k-kl4-seed1": g1("ens-xl-clean-small3", 24576, kl_coef=0.04, seed=1),
    # the medium RM with learning rates below the tiny recipe's 1e-3, for its 20x the parameters
    "ppo_ptx-rm_xl_clean_medium_lr5-g1-24k-kl4": g1("rm-xl-clean-medium-lr5", 24576, kl_coef=0.04),
    "ppo_ptx-rm_xl_clean_medium_lr2-g1-24k-kl4": g1("rm-xl-clean-medium-lr2", 24576, kl_coef=0.04),
    "ppo_ptx-rm_xl_clean_medium_lr2-g1-24k-kl4-seed1": g1("rm-xl-clean-medium-lr2", 24576, kl_coef=0.04, seed=1),
    "ppo_ptx-rm_xl_clean_medium_lr2-g1-24k-kl4-seed2": g1("rm-xl-clean-medium-lr2", 24576, kl_coef=0.04, seed=2),
    # the tiny, small and medium RMs of the 32k rankings (rm-xl-clean*) as one ensemble: members of different
    # sizes and initializations
    "ppo_ptx-ens_xl_clean-g1-16k-lr2": g1("ens-xl-clean", 16384, learning_rate=2e-4),
    "ppo_ptx-ens_xl_clean_uwo-g1-16k": g1("ens-xl-clean-uwo", 16384),
    "ppo_ptx-ens_xl_clean_uwo-g1-16k-lr2": g1("ens-xl-clean-uwo", 16384, learning_rate=2e-4),
}
# reward models besides the demo's: name: (size of the SFT model it starts from, ranking data)
RMS = {"rm-small": ("small", "demo"), "rm-medium": ("medium", "demo"), "rm-more": ("tiny", "more"),
       "rm-more-medium": ("medium", "more"), "rm-clean": ("tiny", "clean"),
       "rm-more-clean": ("tiny", "more-clean"), "rm-iter": ("tiny", "iter"), "rm-iter-clean": ("tiny", "iter-clean"),
       "rm-8000": ("tiny", "sft8000"), "rm-iter3-clean": ("tiny", "iter3-clean"), "rm-xl": ("tiny", "xl"),
       "rm-xl-clean": ("tiny", "xl-clean"), "rm-xl-iter-clean": ("tiny", "xl-iter-clean"),
       "rm-xl-clean-small": ("small", "xl-clean"), "rm-xl-clean-medium": ("medium", "xl-clean"),
       "rm-xl-clean-small-1ep": ("small", "xl-clean"), "rm-xl-clean-small-s1": ("small", "xl-clean"),
       "rm-xl-small-iter-clean": ("small", "xl-small-iter-clean"),
       "rm-xl-clean-medium-lr5": ("medium", "xl-clean"), "rm-xl-clean-medium-lr2": ("medium", "xl-clean")}
# reward models whose recipe differs from the demo's (rm-tiny): name: overrides of the RM config
RM_OVERRIDES = {"rm-xl-clean-small-1ep": {"epochs": 1}, "rm-xl-clean-small-s1": {"seed": 1},
                "rm-xl-clean-medium-lr5": {"learning_rate": 5e-4}, "rm-xl-clean-medium-lr2": {"learning_rate": 2e-4}}
# ensembles: name: (member RMs, how their rewards combine); the value model starts from the first member
ENSEMBLES = {"ens-clean": (["rm-more-clean", "rm-iter-clean"], "mean"),
             "ens": (["rm-more", "rm-8000", "rm-iter"], "mean"), "ens-min": (["rm-more", "rm-8000", "rm-iter"], "min"),
             "ens-xl-clean": (["rm-xl-clean", "rm-xl-clean-small", "rm-xl-clean-medium"], "mean"),
             "ens-xl-clean-uwo": (["rm-xl-clean", "rm-xl-clean-small", "rm-xl-clean-medium"], "uwo"),
             "ens-xl-clean-small2": (["rm-xl-clean-small", "rm-xl-clean-small-s1"], "mean"),
             "ens-xl-clean-small3": (["rm-xl-clean-small", "rm-xl-clean-small-s1", "rm-xl-small-iter-clean"], "mean")}
# later rounds of ranking data: name: (the data of the round before, the PPO-ptx arm trained on it whose
# samples are ranked next to the SFT policy's, whose labels, round number). Round r ranks the r-th block
# of 2,000 prompts after the first --more-prompts
ROUNDS = {"iter": ("more", "ppo_ptx-rm_more-g1-4k", "labelers", 2),
          "iter-clean": ("more-clean", "ppo_ptx-rm_more_clean-g1-8k", "reference", 2),
          "iter3-clean": ("iter-clean", "ppo_ptx-rm_iter_clean-g1-8k", "reference", 3)}
# second rounds on the 32k rankings: name: (the PPO-ptx arm whose samples are ranked next to the SFT policy's on
# the last 8,000 of the 32k prompts by the noiseless judge, the stage of that round's rankings)
XL_ROUNDS = {"xl-iter-clean": ("ppo_ptx-rm_xl_clean-g1-32k", "rankings-xl-round2-clean"),
             "xl-small-iter-clean": ("ppo_ptx-rm_xl_clean_small-g1-24k-kl4", "rankings-xl-small-round2-clean")}


def uses_xl(arm: str) -> bool:
    """Whether an arm's reward model (or one of its ensemble's members) learns from the 32k rankings."""
    rm = ARMS[arm][0]
    return any(RMS.get(m, ("", ""))[1].startswith("xl") for m in ENSEMBLES.get(rm, ([rm], ""))[0])


CRITERIA = ["follows", "correct", "hallucination", "polite", "idk", "repetition", "constraints", "n_words", "success"]
RECIPE_KEYS = ("ptx_coef", "ptx_per_episode", "ppo_episodes")


def rm_by_criterion(rms: dict[str, Path], rankings: Path, reference) -> dict:
    """Accuracy of each RM (and of the ranking labeler) against the noiseless reference judge, per
    criterion that contributes most to the reference's preference in each pair."""
    from instructrl.reward.model import RewardModel

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
    return {k: {"pairs": st["pairs"], **{n: st[n] / st["pairs"] for n in ["labeler", *models]}}
            for k, st in sorted(stats.items(), key=lambda kv: -kv[1]["pairs"])}


def oracle_reward(sft: Path, rm: Path, world: Path, rankings: Path, reference):
    """The reference judge as a reward module for PPO prompts, calibrated to the demo RM's mean and
    spread on the held-out ranked samples of the SFT policy."""
    from instructrl.modeling.loading import load_tokenizer
    from instructrl.reward.model import RewardModel
    from instructrl.world.reward import JudgeReward, calibrate

    model = RewardModel.from_pretrained(rm)
    util, scores = [], []
    for line in rankings.read_text().splitlines():
        row = json.loads(line)
        util += [reference.utility(row, c) for c in row["completions"]]
        scores += model.score([row["prompt"]] * len(row["completions"]), row["completions"]).tolist()
    scale, shift = calibrate(util, scores)
    records = [json.loads(x) for x in (world / "ppo_prompts.jsonl").read_text().splitlines()]
    return JudgeReward(load_tokenizer(str(sft)), records, reference, scale=scale, shift=shift)


def judge_by_model(responses: Path, prompts: Path, reference) -> tuple[dict, dict]:
    """Each model's evaluation responses judged once: the mean of each judge criterion, and the noiseless
    judge's mean utility by task type (where a policy gains on SFT and where it loses)."""
    from instructrl.world.judge import score

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


def training_curve(run: Path) -> dict:
    """Mean RM score of the first and last quarter of a PPO run's iterations, and its KL at the end."""
    from instructrl.evaluate.report import metrics_series
    from instructrl.evaluate.reproduce import ppo_curve_summary

    s = ppo_curve_summary(run / "metrics.jsonl")
    return {"score_first_quarter": s["ppo/score_mean"]["first_quarter"],
            "score_last_quarter": s["ppo/score_mean"]["last_quarter"], "kl_last_quarter": s["ppo/kl"]["last_quarter"],
            "iterations": len(metrics_series(run / "metrics.jsonl", "ppo/score_mean")[1])}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", default="runs/demo", help="a finished demo run (world, sft, rankings, rm)")
    ap.add_argument("--out", default="runs/ppo-sweep")
    ap.add_argument("--more-prompts", type=int, default=6000, help="prompts ranked for the rm-more reward model")
    ap.add_argument("--xl-prompts", type=int, default=32000, help="prompts ranked for the rm-xl reward models")
    ap.add_argument("--eval-prompts", type=int, default=800)
    ap.add_argument("--arms", nargs="*", default=[a for a in ARMS if not uses_xl(a)],
                    help=f"which of {list(ARMS)} (default: all but those on the 32k rankings, run with --tag)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="", help="evaluate the --arms in their own stage eval-TAG and write "
                    "sweep-TAG.json (the main evaluation, of every arm side by side, is left as it is)")
    ap.add_argument("--train-only", action="store_true", help="stop once the arms' stages are trained (to train "
                    "on one machine, a GPU say, and evaluate on another: copy the stage folders into OUT there)")
    ap.add_argument("--rms-only", action="store_true", help="stop once the arms' reward models are trained (to "
                    "train them on a GPU and run PPO on another machine)")
    args = ap.parse_args()

    from instructrl.data.io import read_records, write_jsonl
    from instructrl.pipeline import (Recipe, Stages, build_world, collect_rankings, run_eval_stage, run_ppo_stage,
                                     run_rm_stage, run_sft_stage)
    from instructrl.world.labelers import make_pool
    from instructrl.world.pretrain import resolve_model

    demo, out, seed = Path(args.demo), Path(args.out), args.seed
    for stage in ("world", "sft", "rankings", "rm"):
        if not (demo / stage / ".done").exists():
            raise SystemExit(f"error: {demo / stage} is not a finished demo stage; run `bash scripts/demo.sh` first")
    world, sft, ranks = demo / "world", demo / "sft", demo / "rankings"
    scale = json.loads((world / "world.json").read_text())["scale"]
    st = Stages(out, {})
    pool = make_pool(seed)

    ev_world = st.run("world-eval", lambda o: build_world(o, seed, Recipe(scale=scale,
                                                                          world_eval_prompts=args.eval_prompts)))
    n_eval = len((ev_world / "eval_prompts.jsonl").read_text().splitlines())
    if n_eval != args.eval_prompts:  # the stage is cached by name; the 32k rankings leave its prompts out
        raise SystemExit(f"error: {ev_world} holds {n_eval} evaluation prompts, not --eval-prompts "
                         f"{args.eval_prompts}; use another --out for another evaluation size")
    for f in ("sft.jsonl", "rm_prompts.jsonl", "ppo_prompts.jsonl", "pretrain.jsonl"):
        if (ev_world / f).read_bytes() != (world / f).read_bytes():
            raise SystemExit(f"error: {ev_world / f} differs from the demo's: the demo was built with other settings")

    rms = {"demo": demo / "rm"}
    needs = {ARMS[a][0] for a in args.arms}
    needs |= {m for e in needs & set(ENSEMBLES) for m in ENSEMBLES[e][0]}
    sfts = {"tiny": sft}
    for size in ("small", "medium"):  # reward models from a larger SFT model (the paper: a 6B RM for every policy)
        if any(RMS[n][0] == size for n in needs if n in RMS):
            sfts[size] = st.run(f"sft-{size}", lambda o, s=size: run_sft_stage(o, resolve_model(s), world, Recipe(), seed))
    rankings = {"demo": ranks}
    datasets = {RMS[n][1] for n in needs if n in RMS}
    for data in list(datasets):  # a later round needs the data of the rounds before it
        while data in ROUNDS:
            data = ROUNDS[data][0]
            datasets.add(data)
    def save_rankings(o: Path, rows: list[dict]) -> None:  # a ranking stage: its rows and the demo's held-out pairs
        write_jsonl(o / "rankings.jsonl", rows)
        (o / "rankings_eval.jsonl").write_bytes((ranks / "rankings_eval.jsonl").read_bytes())

    def by_reference(rows: list[dict]) -> list[dict]:  # the same samples, ranked by the noiseless judge
        return [{**r, "ranks": r["reference_ranks"], "labeler": "reference"} for r in rows]

    def rank(o: Path, policies: list[str], prompts: list[dict], labels: str = "labelers") -> None:
        """A ranking stage: K samples of each prompt shared out among ``policies``, ranked by the training
        labelers or (``reference``) by the noiseless judge."""
        rows = collect_rankings(policies, prompts, pool.training, pool.reference, Recipe().k, seed,
                                Recipe().max_new_tokens, "training")
        save_rankings(o, by_reference(rows) if labels == "reference" else rows)

    held = {json.loads(x)["prompt"] for x in (ranks / "rankings_eval.jsonl").read_text().splitlines()}
    if datasets & {"more", "more-clean", "sft8000", *ROUNDS}:
        big = st.run("world-big", lambda o: build_world(o, seed, Recipe(scale=max(3.0, 1.3 * args.more_prompts / 3321))))

        big_prompts = [r.data for r in read_records(big / "rm_prompts.jsonl", what="prompt data")]
        big_prompts = [p for p in big_prompts if p["prompt"] not in held]

        rankings["more"] = st.run(f"rankings-{args.more_prompts}",
                                  lambda o: rank(o, [str(sft)], big_prompts[: args.more_prompts]))

    def clean_rankings(src: Path, o: Path) -> None:  # same prompts and samples, ranked by the reference judge
        save_rankings(o, by_reference([json.loads(x) for x in (src / "rankings.jsonl").read_text().splitlines()]))

    def round_rankings(policies: list[str], labels: str, round_: int, o: Path) -> None:
        """A ranking stage on round ``round_``'s block of 2,000 prompts."""
        start = args.more_prompts + 2000 * (round_ - 2)
        rank(o, policies, big_prompts[start : start + 2000], labels)

    def joined(parts: list[Path], o: Path) -> None:  # one training file of several rounds
        (o / "rankings.jsonl").write_text("".join((p / "rankings.jsonl").read_text() for p in parts))
        (o / "rankings_eval.jsonl").write_bytes((ranks / "rankings_eval.jsonl").read_bytes())

    if datasets & {"xl", "xl-clean", *XL_ROUNDS}:
        # a build of the same world (same knowledge base) with 12x the demo's prompts; prompts whose text is
        # one of the held-out comparisons' or of the evaluation's are left out
        xl = st.run("world-xl", lambda o: build_world(o, seed, Recipe(scale=12.0)))
        held_out = held | {json.loads(x)["prompt"] for x in (ev_world / "eval_prompts.jsonl").read_text().splitlines()}
        xl_prompts = [r.data for r in read_records(xl / "rm_prompts.jsonl", what="prompt data")]
        xl_prompts = [p for p in xl_prompts if p["prompt"] not in held_out][: args.xl_prompts]
        rankings["xl"] = st.run(f"rankings-xl-{args.xl_prompts}", lambda o: rank(o, [str(sft)], xl_prompts))
        rankings["xl-clean"] = st.run(f"rankings-xl-{args.xl_prompts}-clean", lambda o: clean_rankings(rankings["xl"], o))
    if any(RMS[n][1] == "clean" for n in needs if n in RMS):
        rankings["clean"] = st.run("rankings-clean", lambda o: clean_rankings(ranks, o))
    if datasets & {"more-clean", "iter-clean"}:
        rankings["more-clean"] = st.run(f"rankings-{args.more_prompts}-clean",
                                        lambda o: clean_rankings(rankings["more"], o))

    def make_rm(name: str) -> Path:
        size, data = RMS[name]
        stage = name.replace("more", str(args.more_prompts)) if data.startswith("more") else name
        rms[name] = st.run(stage, lambda o, m=sfts[size], d=rankings[data]: run_rm_stage(o, str(m), d, world, seed,
                                                                                       RM_OVERRIDES.get(name)))
        return rms[name]

    runs = {}
    judge = None

    def run_arm(name: str) -> Path:
        nonlocal judge
        rm_name, ptx, over = ARMS[name]
        recipe = Recipe(**{k: v for k, v in over.items() if k in RECIPE_KEYS})
        recipe.extra = {"ppo": {k: v for k, v in over.items() if k not in RECIPE_KEYS}}
        if name in ("ppo", "ppo_ptx") and (demo / name / ".done").exists():
            return demo / name  # the demo's own run (ppo: from benchmarks/ppo_quality/run.py)
        if rm_name == "oracle" and judge is None and not (out / name / ".done").exists():
            # the judge as a reward, built once (it loads the demo RM and scores its held-out samples to
            # calibrate) when an oracle arm still has to run
            judge = oracle_reward(sft, rms["demo"], world, ranks / "rankings_eval.jsonl", pool.reference)
        fn = judge if rm_name == "oracle" else None
        if rm_name in ENSEMBLES:
            from instructrl.ppo.models import EnsembleReward

            members, mode = ENSEMBLES[rm_name]
            dirs = [rms.get(m) or make_rm(m) for m in members]
            if not (out / name / ".done").exists():
                fn = EnsembleReward.from_dirs([str(d) for d in dirs], mode)
            rm_dir = dirs[0]
        else:  # oracle: the value model from the demo RM
            rm_dir = rms["demo"] if rm_name == "oracle" else rms.get(rm_name) or make_rm(rm_name)
        return st.run(name, lambda o, rm=rm_dir, r=recipe, p=ptx, f=fn: run_ppo_stage(o, str(sft), str(rm), world,
                                                                                      r, seed, ptx=p, reward_fn=f))

    for data, (arm, stage) in XL_ROUNDS.items():
        if data in datasets:
            policy = run_arm(arm)
            new = st.run(stage, lambda o, pol=policy: rank(o, [str(sft), str(pol)], xl_prompts[-8000:], "reference"))
            rankings[data] = st.run(f"rankings-{data}", lambda o, parts=[rankings["xl-clean"], new]: joined(parts, o))
    for data, (before, arm, labels, round_) in ROUNDS.items():  # in round order
        if data in datasets:  # the RM and PPO-ptx run of the round before come first
            policy = run_arm(arm)
            new = st.run(f"rankings-round{round_}-{data}", lambda o, pol=policy, lab=labels, r=round_:
                         round_rankings([str(sft), str(pol)], lab, r, o))
            rankings[data] = st.run(f"rankings-{data}", lambda o, parts=[rankings[before], new]: joined(parts, o))
    if "sft8000" in datasets:
        extra = st.run("rankings-round2-sft", lambda o: round_rankings([str(sft)], "labelers", 2, o))
        rankings["sft8000"] = st.run("rankings-sft8000", lambda o: joined([rankings["more"], extra], o))
    for name in RMS:
        if name in needs and name not in rms:
            make_rm(name)
    if args.rms_only:
        print(f"trained: {', '.join(n for n in rms if n in needs)} (stage times: {st.timings})")
        return 0
    for name in args.arms:
        runs[name] = run_arm(name)
    if args.train_only:
        print(f"trained: {', '.join(runs)} (stage times: {st.timings})")
        return 0
    wanted = {"SFT-2", *runs}
    suffix = f"-{args.tag}" if args.tag else ""
    eval_stage = f"eval{suffix}"
    done = out / eval_stage / "results.json"
    if done.exists() and set(json.loads(done.read_text())["models"]) != wanted:
        shutil.rmtree(out / eval_stage)  # evaluated with another set of arms: evaluate them all again, side by side
    ev = st.run(eval_stage, lambda o: run_eval_stage(o, [f"SFT-2={sft}"] + [f"{n}={p}" for n, p in runs.items()],
                                                 f"SFT={sft}", ev_world, Recipe(eval_prompts=args.eval_prompts), seed,
                                                 suites=["winrate"]))
    models = json.loads((ev / "results.json").read_text())["models"]
    criteria, utility = judge_by_model(ev / "responses.jsonl", ev_world / "eval_prompts.jsonl", pool.reference)
    from instructrl.evaluate.lm_loss import checkpoint_heldout_loss, world_heldout_texts

    texts = world_heldout_texts(seed)
    base = yaml.safe_load((sft / "config.yaml").read_text())["model"]  # the demo's base model
    lm_loss = {n: checkpoint_heldout_loss(str(p), texts) for n, p in {"base": base, "SFT-2": sft, **runs}.items()}
    report = {
        "demo": str(demo), "eval_prompts": args.eval_prompts, "arms": {n: ARMS[n] for n in runs},
        "win_rate_vs_sft": {m: v.get("win_rate") for m, v in models.items()},
        "heldout_lm_loss": lm_loss,
        "training": {n: training_curve(p) for n, p in runs.items()},
        "criteria": criteria,
        "utility_by_task": utility,
        "rm_accuracy": {n: json.loads((p / "eval_results.json").read_text())["groups"]["all"]["accuracy"]
                        for n, p in rms.items()},
        "rm_vs_reference": rm_by_criterion(rms, ranks / "rankings_eval.jsonl", pool.reference),
        "stage_seconds": st.timings,
    }
    (out / f"sweep{suffix}.json").write_text(json.dumps(report, indent=1))
    print(f"{'model':32s} {'win vs SFT':>16s} {'LM loss':>8s} {'RM score':>14s} {'KL':>5s} "
          + " ".join(f"{k[:7]:>7s}" for k in CRITERIA))
    for m, w in report["win_rate_vs_sft"].items():
        c, t = report["criteria"].get(m, {}), report["training"].get(m)
        curve = f"{t['score_first_quarter']:6.2f} > {t['score_last_quarter']:5.2f} {t['kl_last_quarter']:5.1f}" if t else " " * 20
        print(f"{m:32s} {w['mean']:8.3f} ± {w['se']:.3f} {lm_loss.get(m, float('nan')):8.4f} {curve} "
              + " ".join(f"{c.get(k, 0):7.3f}" for k in CRITERIA))
    print(f"held-out LM loss of the base model: {lm_loss['base']:.4f}")
    by_task = report["utility_by_task"]
    types = sorted(by_task["SFT-2"], key=lambda t: -by_task["SFT-2"][t]["n"])
    print("\nthe judge's mean utility by task type: SFT-2, and each arm's difference from it")
    print(f"{'model':32s} " + " ".join(f"{t[:9]:>9s}" for t in types))
    print(f"{'(prompts)':32s} " + " ".join(f"{by_task['SFT-2'][t]['n']:9d}" for t in types))
    for m, row in by_task.items():
        base = {t: 0.0 for t in types} if m == "SFT-2" else {t: by_task["SFT-2"][t]["utility"] for t in types}
        print(f"{m:32s} " + " ".join(f"{row[t]['utility'] - base[t]:+9.3f}" if t in row else " " * 9 for t in types))
    print("\nRM accuracy vs the reference judge, by the criterion deciding each held-out pair")
    names = ["labeler", *rms]
    print(f"{'criterion':14s} {'pairs':>6s} " + " ".join(f"{n:>10s}" for n in names))
    for k, v in report["rm_vs_reference"].items():
        print(f"{k:14s} {v['pairs']:6d} " + " ".join(f"{v[n]:10.3f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
