"""The DPO stage: its loss is the DPO loss on the policy's and the reference's completion log-probs, each completion
forwarded once; short real runs learn an easy preference, save a plain transformers checkpoint, and resume exactly."""

import json
import math
import shutil

import torch
from dpo_helpers import flag_pairs, flag_rankings
from testkit import fact_demos, write_jsonl

from instructrl.data.rankings import load_rankings, split_by_prompt
from instructrl.dpo.api import run_dpo
from instructrl.dpo.config import DPOConfig
from instructrl.dpo.data import EpochUnits, encode_for_dpo
from instructrl.dpo.trainer import DPOTrainer
from instructrl.losses import dpo_ranking_loss
from instructrl.modeling.loading import load_causal_lm, load_tokenizer, make_reference
from instructrl.training.accelerator import make_accelerator
from instructrl.training.tracking import read_metrics


def config(tiny_model, tmp_path, data, **kw) -> DPOConfig:
    base = dict(
        model=str(tiny_model),
        data=str(data),
        output_dir=str(tmp_path / "out"),
        cpu=True,
        mixed_precision="no",
        progress=False,
        max_length=64,
        batch_size=8,
        learning_rate=1e-3,
        warmup_steps=0,
        eval_kl_prompts=4,
        eval_max_new_tokens=8,
    )
    return DPOConfig(**{**base, **kw})


def test_encoding_scores_completion_tokens_only_and_counts_what_it_cuts(tiny_model, tmp_path):
    tok = load_tokenizer(str(tiny_model))
    rows = flag_rankings(3, k=3) + [{"prompt": "Q " * 80, "chosen": "a", "rejected": "b"}]
    path = write_jsonl(tmp_path / "enc.jsonl", rows)
    rankings, _ = load_rankings(str(path))
    _, full, full_report = encode_for_dpo(rankings[:3], tok, max_length=64)
    ex = full[0][0]
    n_prompt = ex["labels"].count(-100)
    assert n_prompt > 0 and ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]  # loss on the completion only
    assert ex["input_ids"][-1] == tok.eos_token_id and full_report.truncated_completion == 0
    # a prompt longer than max_length skips its ranking; completions that do not fit are cut (no EOS), counted
    limit = n_prompt + 3
    kept, encoded, report = encode_for_dpo(rankings, tok, max_length=limit)
    assert len(kept) == 3 and report.skipped_long_prompt == 1 and report.skipped_where == [f"{path}:4"]
    cut = [e for rows_ in encoded for e in rows_ if e["input_ids"][-1] != tok.eos_token_id]
    assert report.truncated_completion == len(cut) > 0 and all(len(e["input_ids"]) == limit for e in cut)


def test_units_draw_fresh_pretraining_windows_each_epoch_and_the_same_on_a_rerun():
    units = EpochUnits(5, n_windows=100, per_unit=3, seed=7)
    assert sorted(units.plan(0)) == list(range(5)) and sorted(units.plan(2)) == list(range(10, 15))
    first, again, next_epoch = units[3], EpochUnits(5, 100, 3, seed=7)[3], units[5 + 3]
    assert first == again and first[0] == next_epoch[0] == 3 and first[1] != next_epoch[1] and len(first[1]) == 3
    assert EpochUnits(5)[7] == (2, ())


def make_trainer(tiny_model, tmp_path, rows, **kw):
    data = write_jsonl(tmp_path / "r.jsonl", rows)
    cfg = config(tiny_model, tmp_path, data, batch_size=len(rows), **kw)
    acc = make_accelerator(cfg, tmp_path / "out")
    tok = load_tokenizer(str(tiny_model))
    policy = load_causal_lm(str(tiny_model), tok)
    ref = make_reference(policy)
    rankings, _ = load_rankings(str(data))
    rankings, encoded, _ = encode_for_dpo(rankings, tok, cfg.max_length)
    ranks = [r.ranks for r in rankings]
    return DPOTrainer(cfg, acc, policy, ref, tok, encoded, ranks, [], [], tmp_path / "out"), encoded, ranks


def sequence_logprob(model, example) -> float:
    """log p(completion | prompt) of one unpadded example, token by token."""
    ids = torch.tensor([example["input_ids"]])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
    return sum(float(logp[t - 1, tok]) for t, tok in enumerate(example["input_ids"]) if example["labels"][t] != -100)


def test_the_loss_is_dpo_on_completion_logprobs_each_completion_forwarded_once(tiny_model, tmp_path):
    rows = flag_rankings(4, k=4, tie_every=2) + flag_pairs(2, seed=1)
    trainer, encoded, ranks = make_trainer(tiny_model, tmp_path, rows, beta=0.5)
    with torch.no_grad():  # a policy that differs from its reference
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    calls = []
    hooks = [
        m.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["input_ids"].shape[0]), with_kwargs=True)
        for m in (trainer.model, trainer.ref)
    ]
    units = [trainer.pool[i] for i in range(len(rows))]
    total, sums = trainer.loss(units)
    for h in hooks:
        h.remove()
    n = sum(len(e) for e in encoded)
    assert calls == [n, n]  # one policy pass and one reference pass, each completion once
    with torch.no_grad():
        h = torch.zeros(len(rows), 4, dtype=torch.float64)
        rank_t = torch.zeros(len(rows), 4, dtype=torch.long)
        for i, (rows_i, rk) in enumerate(zip(encoded, ranks)):
            for k, ex in enumerate(rows_i):
                h[i, k] = sequence_logprob(trainer.model, ex) - sequence_logprob(trainer.ref, ex)
            rank_t[i, : len(rk)] = torch.tensor(rk)
        expected, stats = dpo_ranking_loss(h, rank_t, rank_t > 0, beta=0.5)
    assert abs(float(total.detach()) / len(rows) - float(expected)) < 1e-4
    assert sums["pairs"] == float(stats["total_pairs"]) == 4 * 6 - 2 + 2  # two tied rankings lose one pair each
    assert abs(float(sums["accuracy"] / sums["pairs"]) - float(stats["accuracy"])) < 1e-6


def test_api_run_learns_an_easy_preference_and_saves_a_plain_checkpoint(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "pairs.jsonl", flag_pairs(64))
    cfg = config(
        tiny_model, tmp_path, data, epochs=2, eval_fraction=0.25, eval_every=6, eval_kl_prompts=16, select_by="loss"
    )
    result = run_dpo(cfg)
    rows = read_metrics(tmp_path / "out")
    first, evals = rows[0], [r for r in rows if "dpo/eval_accuracy" in r]
    # the policy starts as its reference: every log-ratio is 0, so the loss is ln 2 and every pair a tie
    assert abs(first["dpo/loss"] - math.log(2)) < 1e-6 and first["dpo/accuracy"] == 0.5
    assert first["dpo/chosen_reward"] == first["dpo/rejected_reward"] == 0.0
    assert result.steps == 12 and evals[-1]["dpo/eval_accuracy"] >= 0.9 and rows[-1]["dpo/accuracy"] >= 0.9
    assert evals[-1]["dpo/eval_margin"] > 0 and evals[-1]["dpo/eval_kl"] > 0  # the policy moved away from pi_ref
    assert rows[-1]["dpo/chosen_reward"] > rows[-1]["dpo/rejected_reward"]
    assert {"dpo/eval_loss", "dpo/eval_chosen_reward", "dpo/eval_rejected_reward", "dpo/grad_norm"} <= set(evals[-1])
    assert json.loads((tmp_path / "out" / "selection.json").read_text())["best_step"] is not None
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["train_pairs"] + report["eval_pairs"] == 64 and report["eval_rankings"] == 16
    assert (tmp_path / "out" / "config.yaml").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")  # plain transformers, no instructrl
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape[-1] >= 320


def test_kway_rankings_plackett_luce_and_ptx_under_lora(tiny_model, tmp_path):
    """Ties, the Plackett-Luce loss, the pretraining term and the adapters-disabled reference in one short run;
    with a learning rate too small to move a weight, the held-out metrics are those of pi = pi_ref by hand."""
    data = write_jsonl(tmp_path / "rank.jsonl", flag_rankings(24, k=4, tie_every=3))
    ptx = write_jsonl(tmp_path / "pt.jsonl", [{"text": d["prompt"] + " " + d["completion"]} for d in fact_demos(60)])
    cfg = config(
        tiny_model,
        tmp_path,
        data,
        ranking_loss="plackett-luce",
        ptx_data=str(ptx),
        ptx_max_length=32,
        ptx_per_unit=2,
        lora_r=4,
        learning_rate=1e-30,
        max_steps=1,
        eval_fraction=0.25,
    )
    run_dpo(cfg)
    (row,) = read_metrics(tmp_path / "out")
    # 4 completions, all log-ratios 0: Plackett-Luce gives ln 4 + ln 3 + ln 2 (each choice among the rest); with
    # the two worst tied, the best chooses among 4, the second among 3, and neither tied one competes: ln 12
    _, held = split_by_prompt(load_rankings(str(data))[0], 0.25, 0)
    expected = [math.log(12) if len(set(r.ranks)) == 3 else math.log(24) for r in held]
    assert abs(row["dpo/eval_loss"] - sum(expected) / len(expected)) < 1e-5
    assert row["dpo/eval_accuracy"] == 0.5 and row["dpo/eval_margin"] == 0.0 and abs(row["dpo/eval_kl"]) < 1e-6
    assert row["dpo/ptx_loss"] > 0 and row["dpo/eval_response_length"] > 0
    assert not (tmp_path / "out" / "adapter_config.json").exists()  # LoRA merged: a plain checkpoint


def test_resume_after_a_kill_gives_the_same_weights(tiny_model, tmp_path):
    """With DPO-ptx, so that the pretraining windows a resumed run draws are checked too."""
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "r.jsonl", flag_rankings(16, k=3))
    texts = [{"text": d["prompt"] + " " + d["completion"]} for d in fact_demos(40)]
    extra = dict(ptx_data=str(write_jsonl(tmp_path / "pt.jsonl", texts)), ptx_max_length=32)
    a, b = tmp_path / "a", tmp_path / "b"
    run_dpo(config(tiny_model, a, data, epochs=2, checkpoint_every=2, eval_fraction=0, micro_batch_size=4, **extra))
    # as if killed after step 2 of 4: only its checkpoint is left; the resumed run ends with the same weights
    shutil.copytree(a / "out" / "checkpoints" / "step-2", b / "out" / "checkpoints" / "step-2")
    cfg = config(tiny_model, b, data, epochs=2, checkpoint_every=2, eval_fraction=0, micro_batch_size=4, **extra)
    assert run_dpo(cfg.replace(resume=True)).steps == 4
    for pa, pb in zip(
        AutoModelForCausalLM.from_pretrained(a / "out").parameters(),
        AutoModelForCausalLM.from_pretrained(b / "out").parameters(),
    ):
        torch.testing.assert_close(pa, pb)
    assert [r["step"] for r in read_metrics(b / "out")][-2:] == [3, 4]
