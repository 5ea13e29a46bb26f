"""Held-out evaluation of a reward model: pairwise accuracy and log loss per labeler group, with standard errors.

InstructGPT §3.5 compares reward models by validation accuracy and log loss over comparison pairs, and §3.4 /
App. C.2 reports them separately for training labelers and held-out labelers (72.4 +- 0.4% vs 69.6 +- 0.9%).
Each ranking's numbers come from :func:`instructrl.losses.ranking_loss` (accuracy: share of pairs with
r_w > r_l, a reward tie counting 1/2; log loss: mean -log sigmoid(r_w - r_l)); they are pooled over pairs.

Standard errors are cluster-robust by prompt: the comparisons of one prompt (all pairs of its rankings, by any
labeler) share their completions and are not independent, so the SE of the pooled ratio
sum_c S_c / sum_c n_c over prompts c is sqrt(C / (C - 1) * sum_c (S_c - mean * n_c)^2) / sum_c n_c.

When records carry ``reference_ranks`` (a noiseless judge, as in the miniature world), the judge's agreement with
the labels on the same pairs is reported as ``judge_accuracy``: the ceiling that label noise allows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch

from instructrl.losses import ranking_loss
from instructrl.reward.data import HELDOUT, TRAIN, Ranking, labeler_group

ALL = "all"


def _pooled(clusters: dict[str, list[float]]) -> tuple[float, float]:
    """(mean, cluster-robust SE) of a ratio of sums; ``clusters`` maps prompt -> [sum, count]."""
    sums = torch.tensor([v[0] for v in clusters.values()], dtype=torch.float64)
    counts = torch.tensor([v[1] for v in clusters.values()], dtype=torch.float64)
    total = float(counts.sum())
    if total == 0:
        return float("nan"), float("nan")
    mean = float(sums.sum()) / total
    c = len(clusters)
    if c < 2:
        return mean, float("nan")
    resid = sums - mean * counts
    return mean, math.sqrt(c / (c - 1) * float((resid**2).sum())) / total


def per_ranking_stats(rankings: list[Ranking], rewards: list[torch.Tensor]) -> list[dict[str, float]]:
    """Pairs, accuracy*pairs, log_loss*pairs and (when judged) judge_accuracy*pairs of each ranking."""
    rows = []
    for r, rew in zip(rankings, rewards):
        ranks = torch.tensor([r.ranks])  # (1, K)
        _, st = ranking_loss(rew.reshape(1, -1).float(), ranks)
        n = float(st["total_pairs"])
        row = {"pairs": n, "accuracy": float(st["accuracy"]) * n, "log_loss": float(st["log_loss"]) * n}
        if r.reference_ranks is not None:
            # The judge as a reward model: reward = -rank, so it "wins" a label pair when it ranks w above l.
            judge = -torch.tensor([r.reference_ranks], dtype=torch.float64)
            _, js = ranking_loss(judge, ranks)
            row["judge_accuracy"] = float(js["accuracy"]) * n
        rows.append(row)
    return rows


def comparison_report(
    rankings: list[Ranking], rewards: list[torch.Tensor], heldout: set[str] | frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Accuracy / log loss (and the judge's accuracy) per labeler group and overall, each with its SE.

    rankings[i] and rewards[i] (K_i,) belong together. Returns {"groups": {name: {...}}, "gaps": {...}}."""
    rows = per_ranking_stats(rankings, rewards)
    members: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rankings):
        members[ALL].append(i)
        group = labeler_group(r, heldout)
        if group is not None:
            members[f"{group}_labelers" if group in (TRAIN, HELDOUT) else group].append(i)
    groups = {}
    for name, idx in members.items():
        out: dict[str, Any] = {
            "rankings": len(idx),
            "prompts": len({rankings[i].prompt_key() for i in idx}),
            "pairs": int(sum(rows[i]["pairs"] for i in idx)),
        }
        for metric in ("accuracy", "log_loss", "judge_accuracy"):
            clusters: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
            for i in idx:
                if metric in rows[i]:
                    c = clusters[rankings[i].prompt_key()]
                    c[0] += rows[i][metric]
                    c[1] += rows[i]["pairs"]
            if clusters:
                out[metric], out[f"{metric}_se"] = _pooled(clusters)
                if metric == "judge_accuracy":
                    out["judge_pairs"] = int(sum(v[1] for v in clusters.values()))
        groups[name] = out
    return {"groups": groups, "gaps": _gaps(groups)}


def _gaps(groups: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The differences the quality targets are stated in (accuracy points, as fractions)."""
    gaps = {}
    train, held = groups.get(f"{TRAIN}_labelers"), groups.get(f"{HELDOUT}_labelers")
    if train and held:
        gaps["train_minus_heldout_accuracy"] = train["accuracy"] - held["accuracy"]
    for name in (f"{HELDOUT}_labelers", ALL):
        g = groups.get(name)
        if g and "judge_accuracy" in g:
            gaps[f"judge_minus_{name}_accuracy"] = g["judge_accuracy"] - g["accuracy"]
    return gaps


def flat_metrics(report: dict[str, Any], prefix: str = "rm/eval") -> dict[str, float]:
    """Namespaced scalars for metrics.jsonl: rm/eval_accuracy, rm/eval_loss, rm/eval/heldout_labelers/accuracy..."""
    out = {}
    for group, stats in report["groups"].items():
        for k, v in stats.items():
            out[f"{prefix}/{group}/{k}"] = v
    overall = report["groups"][ALL]
    out[f"{prefix}_accuracy"] = overall["accuracy"]
    out[f"{prefix}_loss"] = overall["log_loss"]  # the selection metric (select_by=loss)
    for k, v in report["gaps"].items():
        out[f"{prefix}/{k}"] = v
    return out


def format_report(report: dict[str, Any]) -> str:
    """A plain table for the terminal."""
    lines = [f"{'group':<20} {'rankings':>8} {'pairs':>7} {'accuracy':>17} {'log loss':>17} {'judge ceiling':>17}"]
    for name, g in report["groups"].items():

        def pm(key: str, g: dict = g) -> str:
            return f"{g[key]:.4f} ± {g[key + '_se']:.4f}" if key in g else "-"

        lines.append(
            f"{name:<20} {g['rankings']:>8} {g['pairs']:>7} {pm('accuracy'):>17} {pm('log_loss'):>17} "
            f"{pm('judge_accuracy'):>17}"
        )
    for k, v in report["gaps"].items():
        lines.append(f"{k}: {100 * v:+.2f} points")
    return "\n".join(lines)
