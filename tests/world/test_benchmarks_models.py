"""Benchmarks, sampling on a tiny random model, shipped base models."""

import json

import pytest

from instructrl.world.base_models import RESOURCES, SIZES
from instructrl.world.benchmarks import BENCHMARKS, benchmark_items, f1, flan_dataset, run_benchmarks
from instructrl.world.kb import get_kb

KB = get_kb(0)


def test_f1_matches_squad_conventions():
    assert f1("the owl", "owl") == 1.0
    assert f1("not stated", "not stated") == 1.0
    assert f1("owl", "not stated") == 0.0
    assert abs(f1("red fox", "fox") - 2 / 3) < 1e-9


def test_benchmark_items_are_deterministic_and_well_formed():
    for name in BENCHMARKS:
        a, b = benchmark_items(KB, name, 20, seed=1), benchmark_items(KB, name, 20, seed=1)
        assert a == b
    for it in benchmark_items(KB, "hellaswag", 50):
        assert len(set(it["endings"])) == 4 and 0 <= it["label"] < 4
    squad = benchmark_items(KB, "squad", 200)
    unanswerable = sum(it["reference"] == "not stated" for it in squad) / 200
    assert 0.15 < unanswerable < 0.5
    for it in squad:
        assert it["prompt"].endswith("A:")


def test_flan_dataset_has_instruction_records():
    recs = flan_dataset(KB, 40)
    assert {r["source"] for r in recs} == set(BENCHMARKS)
    assert all(r["prompt"] and r["completion"] for r in recs)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructrl.experiments.pretrain import Size, write_init_dir
    from instructrl.world.corpus import generate_corpus
    from instructrl.world.tokenizer import save_tokenizer, train_tokenizer

    d = tmp_path_factory.mktemp("m")
    tok_dir = save_tokenizer(train_tokenizer((x["text"] for x in generate_corpus(KB, 800)), 500), d / "tok")
    init = write_init_dir(Size(1, 32, 2, 1, 1e-3), tok_dir, d / "model")
    model = AutoModelForCausalLM.from_config(__import__("transformers").GPT2Config.from_pretrained(init))
    model.save_pretrained(init)
    return model, AutoTokenizer.from_pretrained(init), init


def test_sampling_and_benchmarks_run_on_a_model(random_model):
    from instructrl.world.sampling import sample_responses

    model, tok, _ = random_model
    out = sample_responses(model, tok, ["Describe Varno.", "What is 2 plus 2?"], k=3, max_new_tokens=8)
    assert len(out) == 2 and all(len(x) == 3 for x in out)
    scores = run_benchmarks(model, tok, KB, n=4)
    assert set(scores) == {"squad_f1", "drop_f1", "hellaswag_acc", "wmt_bleu"}


def test_label_command_samples_from_a_model(random_model, tmp_path):
    import argparse

    from instructrl.experiments.world_cli import label
    from instructrl.world.build import build

    _, _, path = random_model
    build(tmp_path / "w", scale=0.01, pretrain_docs=10)
    args = argparse.Namespace(
        policy=str(path),
        prompts=str(tmp_path / "w" / "rm_prompts.jsonl"),
        k="4",
        out=str(tmp_path / "r.jsonl"),
        labelers="training",
        seed=0,
        limit=3,
        max_new_tokens=6,
        temperature=1.0,
    )
    assert label(args) == 0
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["completions"]) == 4 for r in rows)


@pytest.mark.parametrize("size", list(SIZES))
def test_shipped_base_models_load_with_plain_transformers(size):
    if not (RESOURCES / size / "config.json").exists():
        pytest.skip(f"base model {size} not installed")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(RESOURCES / size)
    assert next(model.parameters()).dtype == torch.float32  # stored in float16, trained in float32
    tok = AutoTokenizer.from_pretrained(RESOURCES / size)
    assert tok.pad_token_id != tok.eos_token_id and tok.chat_template
    assert model.config.vocab_size == len(tok)


def test_shipped_base_models_fit_the_size_budget():
    total = sum(p.stat().st_size for p in RESOURCES.rglob("*") if p.is_file()) if RESOURCES.exists() else 0
    assert total <= 25 * 2**20


@pytest.mark.slow
def test_pretrain_base_end_to_end(tmp_path):
    from instructrl.experiments.pretrain import pretrain_base

    report = pretrain_base(tmp_path, sizes=["tiny"], n_docs=600, steps_scale=0.01)
    assert report["sizes"]["tiny"]["heldout_perplexity"] > 1
    assert (tmp_path / "tiny" / "model.safetensors").exists()
