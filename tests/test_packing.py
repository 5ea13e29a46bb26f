"""--packing: examples packed into rows with restarted position ids, attention kept inside each example, the
same loss as the padded batch; a model that cannot keep packed examples apart trains unpacked, and says so."""

import json
import logging

import pytest
import torch
import transformers.masking_utils
from testkit import fact_demos, write_jsonl
from tiny_archs import FAMILIES, load_family

from instructrl.data.tokenize import IGNORE_INDEX, collate, collate_packed, count_loss_tokens, pack_rows, pack_texts
from instructrl.modeling.loading import load_tokenizer
from instructrl.sft.api import run_sft
from instructrl.sft.config import SFTConfig
from instructrl.sft.trainer import packing_problem, token_nll


def random_examples(vocab: int, lengths=(5, 17, 9, 30, 3, 12, 21), seed: int = 1) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(3, vocab, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (n // 2) + ids[n // 2 :]})  # a prompt, a response
    return out


def test_rows_positions_and_labels():
    a = {"input_ids": [10, 11, 12], "labels": [-100, 11, 12]}
    b = {"input_ids": [20, 21], "labels": [20, 21]}
    c = {"input_ids": [30, 31, 32, 33], "labels": [-100, -100, 32, 33]}
    assert pack_rows([3, 2, 4], capacity=6) == [[2, 1], [0]]  # longest first, first fit
    batch = collate_packed([a, b, c], fill_token_id=0, capacity=6)
    assert batch["input_ids"].tolist() == [[30, 31, 32, 33, 20, 21], [10, 11, 12, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]]
    # each example's first token is never a target (the previous example's last token would predict it)
    assert batch["labels"].tolist() == [[-100, -100, 32, 33, -100, 21], [-100, 11, 12, -100, -100, -100]]
    assert "attention_mask" not in batch  # the block mask comes from the position ids


def test_pretraining_windows_record_their_documents(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    texts = [d["prompt"] for d in fact_demos(30)]
    plain = pack_texts(texts, tok, max_length=32)
    docs = pack_texts(texts, tok, max_length=32, documents=True)
    assert [w["input_ids"] for w in docs] == [w["input_ids"] for w in plain]  # the same windows
    for w in docs:
        assert sum(w["segments"]) == len(w["input_ids"])
        starts = [sum(w["segments"][:k]) for k in range(1, len(w["segments"]))]
        assert all(w["labels"][s] == IGNORE_INDEX and w["input_ids"][s - 1] == tok.eos_token_id for s in starts)
        assert sum(1 for t in w["labels"] if t == IGNORE_INDEX) == len(starts)
    assert "segments" not in plain[0]  # unpacked runs see exactly what they saw before


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_loss_and_gradients_equal_the_padded_batch(family, tiny_model, tmp_path):
    model, tok = load_family(tiny_model, tmp_path / family, family, residual_dropout=0.0)
    assert packing_problem(model) is None
    model.eval()
    examples = random_examples(len(tok))
    padded = collate(examples, tok.pad_token_id)
    packed = collate_packed(examples, tok.eos_token_id, capacity=40)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    grads = []
    for batch in (padded, packed):
        model.zero_grad()
        nll, n = token_nll(model, batch)
        nll.backward()
        grads.append((nll.detach(), n, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (a, na, ga), (b, nb, gb) = grads
    assert na == nb == sum(count_loss_tokens(e) for e in examples)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_packed_pretraining_window_equals_its_documents_alone(family, tiny_model, tmp_path):
    model, tok = load_family(tiny_model, tmp_path / family, family, residual_dropout=0.0)
    model.eval()
    texts = [d["prompt"] + " " + d["completion"] for d in fact_demos(12)]
    (window, *_) = pack_texts(texts, tok, max_length=64, documents=True)
    assert len(window["segments"]) > 2
    pieces, start = [], 0
    for n in window["segments"]:
        ids = window["input_ids"][start : start + n]
        pieces.append({"input_ids": ids, "labels": list(ids)})
        start += n
    with torch.no_grad():
        alone = token_nll(model, collate(pieces, tok.pad_token_id))
        packed = token_nll(model, collate_packed([window], tok.eos_token_id, capacity=64))
    assert packed[1] == alone[1] == count_loss_tokens(window)
    torch.testing.assert_close(packed[0], alone[0], rtol=1e-5, atol=1e-5)


@pytest.fixture()
def no_packed_masks(monkeypatch):
    """An architecture that ignores the position-id restarts when it builds its attention mask."""
    monkeypatch.setattr(transformers.masking_utils, "find_packed_sequence_indices", lambda position_ids: None)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_check_catches_a_model_that_attends_across_examples(family, tiny_model, tmp_path, no_packed_masks):
    model, _ = load_family(tiny_model, tmp_path / family, family)
    problem = packing_problem(model)
    assert problem is not None and "attends across packed examples" in problem
    assert model.training  # the check restores the mode


def sft_cfg(model, data, out, **kw):
    base = dict(
        model=str(model),
        data=str(data),
        output_dir=str(out),
        epochs=1,
        batch_size=8,
        learning_rate=3e-3,
        max_length=64,
        residual_dropout=0.0,
        eval_fraction=0.1,
        select_by="last",
        progress=False,
        seed=0,
    )
    base.update(kw)
    return SFTConfig(**base)


def test_packed_sft_run_matches_the_padded_run(tiny_model, tmp_path):
    from safetensors.torch import load_file

    # lengths that vary, so that padding costs something: one to four sentences per answer
    rows = [
        {"prompt": d["prompt"], "completion": " ".join([d["completion"]] * (1 + i % 4))}
        for i, d in enumerate(fact_demos(80))
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    text = write_jsonl(tmp_path / "pt.jsonl", [{"text": d["completion"]} for d in fact_demos(200, seed=5)])
    mix = dict(pretrain_data=str(text), pretrain_fraction=0.2)
    a = run_sft(sft_cfg(tiny_model, data, tmp_path / "a"))
    b = run_sft(sft_cfg(tiny_model, data, tmp_path / "b", packing=True))
    assert a.final_train_loss == pytest.approx(b.final_train_loss, rel=1e-4)
    assert a.eval_history[-1]["sft/eval_loss"] == pytest.approx(b.eval_history[-1]["sft/eval_loss"], rel=1e-4)
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    report = json.loads((tmp_path / "b" / "data_report.json").read_text())
    assert report["packing"] == {"requested": True, "applied": True, "row_tokens": 64}
    assert json.loads((tmp_path / "a" / "data_report.json").read_text())["packing"]["applied"] is False
    # with the pretraining mix (72 demonstrations + 18 windows an epoch): it runs packed, documents kept apart
    c = run_sft(sft_cfg(tiny_model, data, tmp_path / "c", packing=True, **mix))
    assert c.steps == 12 and json.loads((tmp_path / "c" / "data_report.json").read_text())["packing"]["applied"]


def test_a_model_that_cannot_pack_trains_unpacked_and_says_so(
    tiny_model, demos_file, tmp_path, no_packed_masks, caplog
):
    with caplog.at_level(logging.WARNING, logger="instructrl"):
        run_sft(sft_cfg(tiny_model, demos_file, tmp_path / "out", packing=True))
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())["packing"]
    assert report["requested"] and not report["applied"]
    assert "GPT2LMHeadModel attends across packed examples" in report["reason"]
    assert any("--packing: GPT2LMHeadModel attends across" in r.getMessage() for r in caplog.records)
