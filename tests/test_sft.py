"""Short real SFT runs on a tiny model."""

import json

import pytest
import torch
from testkit import fact_demos, write_jsonl

from instructrl.modeling.generation import generate
from instructrl.modeling.loading import load_causal_lm, load_tokenizer
from instructrl.sft.api import mixture_plan, run_sft
from instructrl.sft.config import SFTConfig
from instructrl.training.optim import lr_at
from instructrl.training.tracking import read_metrics


def quick_cfg(model, data, out, **kw):
    base = dict(
        model=str(model),
        data=str(data),
        output_dir=str(out),
        epochs=4,
        batch_size=8,
        learning_rate=3e-3,
        max_length=64,
        residual_dropout=0.0,
        progress=False,
        seed=0,
    )
    base.update(kw)
    return SFTConfig(**base)


def test_loss_falls_and_output_loads_with_plain_transformers(tiny_model, demos_file, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    out = tmp_path / "sft"
    result = run_sft(quick_cfg(tiny_model, demos_file, out, eval_fraction=0.1))
    rows = read_metrics(out)
    losses = [r["sft/loss"] for r in rows if "sft/loss" in r]
    evals = [r["sft/eval_loss"] for r in rows if "sft/eval_loss" in r]
    assert len(losses) == result.steps == 4 * 9  # 72 train examples / 8
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    assert evals[-1] < evals[0]
    assert (out / "config.yaml").exists() and json.loads((out / "selection.json").read_text())["select_by"] == "loss"
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.pad_token_id != tok.eos_token_id
    text = pipeline("text-generation", model=model, tokenizer=tok)(
        "### Instruction:\nWhat color is the flag of Zor3?\n\n### Response:\n", max_new_tokens=8, do_sample=False
    )
    assert text[0]["generated_text"].startswith("### Instruction")
    report = json.loads((out / "data_report.json").read_text())
    assert (report["train_demonstrations"], report["validation_demonstrations"]) == (72, 8)


def test_completion_only_loss_learns_the_answer_format(tiny_model, demos_file, tmp_path):
    out = tmp_path / "sft"
    run_sft(quick_cfg(tiny_model, demos_file, out, epochs=6, eval_fraction=0.0, select_by="last"))
    tok = load_tokenizer(str(out))
    model = load_causal_lm(str(out), tok)
    gens = generate(
        model, tok, [f"What color is the flag of Zor{i}?" for i in range(5)], temperature=0, max_new_tokens=16
    )
    assert all(g.text.startswith("The flag of Zor") for g in gens), [g.text for g in gens]
    assert all(g.finished for g in gens)  # learned to emit EOS


def test_pretraining_mix_fraction(tiny_model, demos_file, tmp_path):
    texts = write_jsonl(tmp_path / "pt.jsonl", [{"text": d["completion"] + " " + d["prompt"]} for d in fact_demos(300)])
    out = tmp_path / "sft"
    run_sft(
        quick_cfg(
            tiny_model, demos_file, out, epochs=1, pretrain_data=str(texts), pretrain_fraction=0.1, eval_fraction=0.0
        )
    )
    report = json.loads((out / "data_report.json").read_text())
    assert report["pretrain_examples_per_epoch"] == round(0.1 / 0.9 * 80)
    plan, size = mixture_plan(80, 30, 0.1, seed=0)
    p0, p1 = plan(0), plan(1)
    assert size == len(p0) == 89 and sorted(p0[p0 < 80].tolist()) == list(range(80))
    assert (p0 >= 80).sum() == 9 and not (p0 == p1).all()


def test_lora_run_saves_merged_weights(tiny_model, demos_file, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    run_sft(
        quick_cfg(tiny_model, demos_file, out, epochs=1, lora_r=4, lora_target_modules=["c_attn"], eval_fraction=0.0)
    )
    model = AutoModelForCausalLM.from_pretrained(out)  # no peft needed
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_gradient_accumulation_matches_full_batch(tiny_model, demos_file, tmp_path):
    a = run_sft(quick_cfg(tiny_model, demos_file, tmp_path / "a", epochs=1, eval_fraction=0.0, select_by="last"))
    b = run_sft(
        quick_cfg(
            tiny_model, demos_file, tmp_path / "b", epochs=1, eval_fraction=0.0, select_by="last", micro_batch_size=2
        )
    )
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert a.final_train_loss == pytest.approx(b.final_train_loss, rel=1e-4)


def test_max_steps_overrides_epochs_in_both_directions(tiny_model, demos_file, tmp_path):
    # 80 demonstrations / 8 = 10 steps per epoch; max_steps runs past one epoch or stops inside it
    longer = run_sft(
        quick_cfg(tiny_model, demos_file, tmp_path / "a", epochs=1, max_steps=25, eval_fraction=0.0, select_by="last")
    )
    shorter = run_sft(
        quick_cfg(tiny_model, demos_file, tmp_path / "b", epochs=3, max_steps=4, eval_fraction=0.0, select_by="last")
    )
    assert (longer.steps, shorter.steps) == (25, 4)
    rows = read_metrics(tmp_path / "a")
    epochs = [r["sft/epoch"] for r in rows if "sft/epoch" in r]
    assert epochs[-1] == pytest.approx(2.5)
    lrs = [r["sft/lr"] for r in rows if "sft/lr" in r]
    assert lrs[-1] == pytest.approx(0.1 * 3e-3)  # the cosine schedule spans the 25 steps


def test_cosine_schedule_to_ten_percent():
    assert lr_at(0, 100, 1.0) == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0) == pytest.approx(0.1)
    assert lr_at(49, 100, 1.0) == pytest.approx(0.55, abs=0.02)
    assert lr_at(0, 100, 1.0, warmup_steps=10, warmup_start=0.1) == pytest.approx(0.1)
    assert lr_at(5, 100, 1.0, warmup_steps=10, warmup_start=0.1) == pytest.approx(0.55)


def test_tensorboard_on_request(tiny_model, demos_file, tmp_path):
    out = tmp_path / "tb"
    run_sft(quick_cfg(tiny_model, demos_file, out, epochs=1, eval_fraction=0.0, report_to="tensorboard"))
    events = list(out.rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def conversations(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        turns = [{"role": "system", "content": "Answer in one sentence."}]
        for d in fact_demos(3, seed=i):
            turns += [{"role": "user", "content": d["prompt"]}, {"role": "assistant", "content": d["completion"]}]
        rows.append({"messages": turns})
    return rows


@pytest.mark.parametrize(("turns", "trained"), [("all", 3 * 24), ("last", 24)])
def test_sft_on_conversations_trains_the_chosen_assistant_turns(tiny_model, tmp_path, turns, trained):
    data = write_jsonl(tmp_path / "chat.jsonl", conversations(24))
    out = tmp_path / turns
    result = run_sft(
        quick_cfg(tiny_model, data, out, epochs=1, max_length=256, eval_fraction=0.0, assistant_turns=turns)
    )
    report = json.loads((out / "data_report.json").read_text())
    assert report["assistant_turns"] == turns and report["multi_turn_conversations"] == 24
    assert report["assistant_turns_trained"] == trained and report["truncated_responses"] == 0
    assert result.steps == 3 and result.final_train_loss > 0
