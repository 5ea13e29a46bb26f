"""The RM trainer: its loss is Eq. 1 on the model's rewards, one forward pass per completion, real short runs."""

import json

import pytest
import torch
from rm_helpers import color_rankings, write_rankings
from testkit import fact_demos, write_jsonl

from instructrl.data.tokenize import left_pad
from instructrl.losses import ranking_loss
from instructrl.modeling.loading import load_tokenizer
from instructrl.modeling.reward import RewardModel, build_reward_model, sequence_rewards
from instructrl.reward.api import run_rm
from instructrl.reward.config import RMConfig
from instructrl.reward.data import encode_rankings, load_rankings
from instructrl.reward.trainer import RMTrainer
from instructrl.training.accelerator import make_accelerator
from instructrl.training.tracking import read_metrics


def make_trainer(tiny_model, tmp_path, rows, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_jsonl(tmp_path / "r.jsonl", rows)
    cfg = RMConfig(
        model=str(tiny_model),
        data=str(data),
        output_dir=str(tmp_path / "out"),
        progress=False,
        max_length=64,
        learning_rate=1e-3,
        **{"batch_size": len(rows), **kw},
    )
    acc = make_accelerator(cfg, tmp_path / "out")
    tok = load_tokenizer(str(tiny_model))
    model = build_reward_model(str(tiny_model), tok)
    rankings, _ = load_rankings(str(data))
    rankings, encoded, _ = encode_rankings(rankings, tok, cfg.max_length)
    return RMTrainer(cfg, acc, model, tok, rankings, encoded, [], [], tmp_path / "out"), rankings, encoded


def count_rows(model) -> tuple[list[int], object]:
    """Rows (sequences) passed to each call of the model's forward."""
    calls: list[int] = []
    handle = model.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    return calls, handle


def test_one_step_loss_is_ranking_loss_on_the_models_rewards(tiny_model, tmp_path):
    rows = color_rankings(6, k=4) + [{"prompt": "Tie?", "completions": ["a", "b", "c"], "ranks": [1, 1, 2]}]
    trainer, rankings, encoded = make_trainer(tiny_model, tmp_path, rows)
    with torch.no_grad():  # rewards of the initial model, each ranking on its own, padded to K = 4
        rewards = torch.zeros(len(rankings), 4)
        ranks = torch.zeros(len(rankings), 4, dtype=torch.long)
        mask = torch.zeros(len(rankings), 4, dtype=torch.bool)
        for i, (r, seqs) in enumerate(zip(rankings, encoded)):
            ids, m = left_pad(seqs, trainer.tokenizer.pad_token_id)
            rewards[i, : len(seqs)] = sequence_rewards(trainer.model, ids, m)
            ranks[i, : len(seqs)] = torch.tensor(r.ranks)
            mask[i, : len(seqs)] = True
    expected, _ = ranking_loss(rewards, ranks, mask)
    loss = trainer.train_step(0)["loss"]
    assert loss == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("k", [4, 9])
def test_one_forward_pass_per_completion(tiny_model, tmp_path, k):
    rows = color_rankings(4, k=k)
    trainer, _, _ = make_trainer(tiny_model, tmp_path, rows, share_prompt=False)
    calls, handle = count_rows(trainer.model)
    trainer.train_step(0)
    handle.remove()
    assert sum(calls) == 4 * k and len(calls) == 1  # K passes per prompt, not 2 * C(K, 2)
    assert trainer.state["forward_passes"] == 4 * k


@pytest.mark.parametrize("buckets", [1, 4])
def test_shared_prompt_forwards_each_prompt_once_with_the_plain_loss(tiny_model, tmp_path, buckets):
    rows = color_rankings(4, k=4) + color_rankings(3, k=3, seed=1)
    torch.manual_seed(0)
    plain, _, _ = make_trainer(tiny_model, tmp_path / "plain", rows, share_prompt=False)
    shared, _, _ = make_trainer(tiny_model, tmp_path / "shared", rows, length_buckets=buckets)
    shared.model.load_state_dict(plain.model.state_dict())
    calls, handle = count_rows(shared.model)
    losses = [(plain.train_step(s)["loss"], shared.train_step(s)["loss"]) for s in range(3)]
    handle.remove()
    assert shared.share_prompt is True
    if buckets == 1:
        # the first batch's check (shared: prompts, then completions; plain), then per step: 7 prompts, 25 completions
        assert calls == [7, 25, 25] + [7, 25] * 3
    else:  # the 25 completions in groups of similar length, after each step's 7 prompts
        steps = "".join("p" if c == 7 else "c" for c in calls)
        assert steps.count("p") == 4 and len(calls) > 2 * 4 + 1
        assert sum(calls) == 4 * 7 + 25 + 4 * 25
    for a, b in losses:  # later steps' losses follow the updated weights (gradients: test_rm_shared_prompt.py)
        assert a == pytest.approx(b, rel=1e-4)


def test_shared_prompt_stays_off_where_it_cannot_hold(tiny_model, tmp_path):
    rows = color_rankings(3, k=4)
    pairs, _, _ = make_trainer(tiny_model, tmp_path / "p", rows, batching="pairs", batch_size=18)
    checkpointed, _, _ = make_trainer(tiny_model, tmp_path / "c", rows, gradient_checkpointing=True)
    assert pairs.share_prompt is False and checkpointed.share_prompt is False
    # a model whose shared-prompt rewards differ from its plain ones (here: made to) keeps the plain forward
    odd, _, _ = make_trainer(tiny_model, tmp_path / "o", rows)
    import instructrl.reward.trainer as rm_trainer

    real = rm_trainer.prompt_shared_rewards
    rm_trainer.prompt_shared_rewards = lambda *a, **k: real(*a, **k) + 1.0
    try:
        calls, handle = count_rows(odd.model)
        odd.train_step(0)
        handle.remove()
    finally:
        rm_trainer.prompt_shared_rewards = real
    assert odd.share_prompt is False and calls[-1] == 12 and len(calls) == 4  # check (2 + 1), then plain


def test_pairs_batching_forwards_two_completions_per_comparison(tiny_model, tmp_path):
    trainer, _, _ = make_trainer(tiny_model, tmp_path / "p", color_rankings(3, k=4), batching="pairs", batch_size=18)
    assert len(trainer.pool) == 3 * 6 and trainer.steps_per_epoch == 1
    calls, handle = count_rows(trainer.model)
    trainer.train_step(0)
    handle.remove()
    assert sum(calls) == 2 * 18  # the ablation: 2 * C(K, 2) passes per prompt


def test_gradient_accumulation_matches_full_batch(tiny_model, tmp_path):
    rows = color_rankings(4, k=4) + color_rankings(4, k=3, seed=1)  # mixed K: unequal units per micro-batch
    full, _, _ = make_trainer(tiny_model, tmp_path / "a", rows)
    torch.manual_seed(0)
    micro, _, _ = make_trainer(tiny_model, tmp_path / "b", rows, micro_batch_size=2)
    micro.model.load_state_dict(full.model.state_dict())  # same head init
    grads = {}
    for name, trainer in (("full", full), ("micro", micro)):
        step = trainer.optimizer.step

        def capture(*a, _name=name, _trainer=trainer, _step=step, **k):  # the gradient the optimizer sees
            grads[_name] = [p.grad.clone() for p in _trainer.model.parameters()]
            return _step(*a, **k)

        trainer.optimizer.step = capture
    la, lb = full.train_step(0)["loss"], micro.train_step(0)["loss"]
    assert la == pytest.approx(lb, rel=1e-5)
    for (n, _), ga, gb in zip(full.model.named_parameters(), grads["full"], grads["micro"]):
        assert torch.allclose(ga, gb, rtol=1e-4, atol=1e-7), n


def test_margin_pairs_use_the_margin_loss(tiny_model, tmp_path):
    rows = [{"prompt": f"Q{i}?", "chosen": "yes", "rejected": "no", "margin": 1.0} for i in range(4)]
    trainer, _, _ = make_trainer(tiny_model, tmp_path, rows)
    assert trainer.use_margin
    step = trainer.train_step(0)
    assert step["log_loss"] < step["loss"]  # the margin raises the loss above plain log loss


def test_short_run_learns_an_easy_preference_and_normalizes(tiny_model, tmp_path):
    """Labelers prefer some flag colours: held-out accuracy > 0.9 after 2 epochs on 160 rankings."""
    data = write_rankings(tmp_path / "r.jsonl", 160)
    demos = write_jsonl(tmp_path / "demos.jsonl", fact_demos(20))
    out = tmp_path / "rm"
    result = run_rm(
        RMConfig(
            model=str(tiny_model),
            data=str(data),
            output_dir=str(out),
            epochs=2,
            batch_size=8,
            learning_rate=3e-3,
            max_length=64,
            eval_fraction=0.25,
            heldout_labelers=["L3"],
            demonstrations=str(demos),
            progress=False,
        )
    )
    report = json.loads((out / "eval_results.json").read_text())
    groups = report["groups"]
    assert groups["all"]["accuracy"] > 0.9, groups
    assert set(groups) == {"all", "train_labelers", "heldout_labelers"}
    assert groups["heldout_labelers"]["pairs"] + groups["train_labelers"]["pairs"] == groups["all"]["pairs"]
    assert all(g["accuracy_se"] > 0 or g["accuracy"] == 1.0 for g in groups.values())
    data_report = json.loads((out / "data_report.json").read_text())
    assert data_report["heldout_labeler_rankings_left_out_of_training"] > 0  # L3 never trained on
    assert result.forward_passes == 2 * 4 * data_report["train_rankings"]  # K = 4 passes per ranking, 2 epochs
    rows = read_metrics(out)
    assert "rm/eval_accuracy" in rows[-1] and "rm/eval/heldout_labelers/accuracy_se" in rows[-1]
    assert all("rm/accuracy" in r for r in rows)
    # normalized so that demonstrations score mean 0 (InstructGPT §3.5), applied on load
    rm = RewardModel.from_pretrained(out)
    assert rm.normalization["method"] == "demonstrations" == result.normalization["method"]
    d = fact_demos(20)
    assert abs(float(rm.score([r["prompt"] for r in d], [r["completion"] for r in d]).mean())) < 1e-4
    assert (out / "config.yaml").exists() and (out / "reward_normalization.json").exists()


def test_resume_continues_to_the_same_weights(tiny_model, tmp_path):
    import shutil

    from safetensors.torch import load_file

    data = write_rankings(tmp_path / "r.jsonl", 16)
    base = dict(
        model=str(tiny_model),
        data=str(data),
        batch_size=4,
        learning_rate=1e-3,
        max_length=64,
        eval_fraction=0.0,
        checkpoint_every=2,
        progress=False,
    )
    run_rm(RMConfig(output_dir=str(tmp_path / "a"), **base))  # 4 steps, checkpoint at step 2
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints")  # as if killed after step 2
    result = run_rm(RMConfig(output_dir=str(tmp_path / "b"), resume=True, **base))
    assert result.steps == 4 and result.forward_passes == 4 * 16
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
