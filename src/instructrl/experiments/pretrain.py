"""Regenerating the world's base models: GPT-2 at three sizes (:mod:`instructrl.world.base_models`),
pretrained on the world's corpus by the toolkit's ``instructrl pretrain``.

``instructrl world pretrain-base --out DIR`` runs :func:`pretrain_base`: it writes the corpus (train and
held-out documents), trains the tokenizer, writes one initialization directory per size (a
``config.json`` and the tokenizer, no weights: "initialize randomly from this config"), runs the
toolkit's pretraining (the same trainer as SFT) on each, measures held-out perplexity, and saves
the weights in float16 safetensors (``--install`` copies them into the package, where
:func:`base_model_path` finds them).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config

from instructrl.data.tokenize import pack_texts
from instructrl.sft.api import run_pretrain
from instructrl.sft.config import PretrainConfig
from instructrl.world.base_models import N_POSITIONS, RESOURCES, SIZES, Size, count_parameters, resolve_model
from instructrl.world.corpus import generate_corpus
from instructrl.world.kb import get_kb
from instructrl.world.tokenizer import save_tokenizer, train_tokenizer

log = logging.getLogger("instructrl.world")
__all__ = ["SIZES", "pretrain_base", "resolve_model", "write_init_dir"]


def write_init_dir(size: Size, tokenizer_dir: Path, out: Path) -> Path:
    """A config.json plus tokenizer files and no weights: ``instructrl pretrain`` initializes randomly."""
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    GPT2Config(
        vocab_size=len(tok),
        n_positions=N_POSITIONS,
        n_embd=size.n_embd,
        n_layer=size.n_layer,
        n_head=size.n_head,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
    ).save_pretrained(out)
    return out


def perplexity(model_dir: Path, texts: list[str], max_length: int = 128) -> float:
    """Held-out perplexity over documents packed like the training data."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    windows = pack_texts(texts, tok, max_length)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(windows), 32):
            batch = [w["input_ids"] for w in windows[i : i + 32] if len(w["input_ids"]) == max_length]
            if not batch:
                continue
            ids = torch.tensor(batch)  # (B, T)
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss.item()
            total += loss * len(batch) * (max_length - 1)
            count += len(batch) * (max_length - 1)
    return math.exp(total / count)


def to_half(src: Path, dst: Path) -> None:
    """Save a checkpoint's weights as float16 safetensors next to its config and tokenizer.

    The config still says float32, so a plain ``from_pretrained`` upcasts on load and fine-tuning runs
    in float32 (training a float16 model on a CPU turns the loss into NaN).
    """
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    dst.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(dst, safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    mark_float32(dst)


def mark_float32(model_dir: Path) -> None:
    """Make ``from_pretrained`` load a float16 checkpoint as float32."""
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text())
    config["dtype"] = "float32"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def pretrain_base(
    out_dir: str | Path,
    sizes: list[str] | None = None,
    seed: int = 0,
    n_docs: int = 60_000,
    steps_scale: float = 1.0,
    install: bool = False,
) -> dict:
    """Regenerate the base models (see the module docstring); returns the report (also report.json)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kb = get_kb(seed)
    docs = generate_corpus(kb, n_docs, seed=seed)
    heldout = [d["text"] for d in generate_corpus(kb, 2000, seed=seed + 10_000)]
    with open(out / "corpus.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d["text"]}) + "\n")
    tok_dir = save_tokenizer(train_tokenizer((d["text"] for d in docs), vocab_size=2048), out / "tokenizer")
    report: dict = {"seed": seed, "n_docs": n_docs, "sizes": {}}
    for name in sizes or list(SIZES):
        size = SIZES[name]
        init = write_init_dir(size, tok_dir, out / "init" / name)
        steps = max(10, round(size.max_steps * steps_scale))
        cfg = PretrainConfig(
            model=str(init),
            data=str(out / "corpus.jsonl"),
            output_dir=str(out / "runs" / name),
            max_steps=steps,
            learning_rate=size.learning_rate,
            batch_size=size.batch_size,
            max_length=size.max_length,
            warmup_steps=min(100, steps // 10),
            eval_fraction=0.0,
            select_by="last",
            seed=seed,
            progress=False,
            mixed_precision="no",
        )
        start = time.time()
        result = run_pretrain(cfg)
        seconds = time.time() - start
        to_half(Path(result.out_dir), out / name)
        ppl = perplexity(out / name, heldout, size.max_length)
        report["sizes"][name] = {
            "parameters": count_parameters(out / name),
            "n_layer": size.n_layer,
            "n_embd": size.n_embd,
            "steps": steps,
            "tokens": steps * size.batch_size * size.max_length,
            "train_seconds": round(seconds, 1),
            "heldout_perplexity": round(ppl, 3),
        }
        log.info("%s: %s", name, report["sizes"][name])
        if install:
            target = RESOURCES / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(out / name, target)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
