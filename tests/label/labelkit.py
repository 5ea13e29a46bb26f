"""Helpers for the labeling-app tests: seeded databases, sign-in, a live server, a tiny causal LM."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from testkit import free_port

ROOT = Path(__file__).resolve().parents[2]


def pg_base_url() -> str | None:
    return os.environ.get("INSTRUCTRL_PG_URL") or None


def chromium_path() -> str | None:
    return os.environ.get("INSTRUCTRL_CHROMIUM") or shutil.which("chromium")


def _pg_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@dataclass
class World:
    """A seeded database: an admin, labelers, tasks, and who holds which assignment."""

    url: str
    engine: object
    factory: object
    tokens: dict[str, str] = field(default_factory=dict)
    assignments: dict[str, list[int]] = field(default_factory=dict)  # labeler -> assignment ids

    def tx(self):  # type: ignore[no-untyped-def]
        from instructrl.label import db

        return db.transaction(self.factory)


DEMO_PROMPTS = ["Write a short poem about the sea.", "Explain why the sky is blue to a child."]
RANK_PROMPTS = [
    {
        "prompt": "Name a fruit that is <b>yellow</b>.",
        "category": "open qa",
        "completions": ["A banana.", "<script>alert('xss')</script>", "Lemons & pineapples.", "I don't know."],
    },
    {"prompt": "Say hello politely.", "user": "u42", "completions": ["Hello!", "Go away.", "Good day to you.", "hi"]},
]


def seed(
    url: str, labelers: list[str], *, overlap: int = 1, demo_prompts=DEMO_PROMPTS, rank_prompts=RANK_PROMPTS
) -> World:
    from instructrl.label import db, service

    engine = db.make_engine(url)
    db.migrate(engine)
    world = World(url, engine, db.session_factory(engine))
    with world.tx() as s:
        _, world.tokens["admin"] = service.create_labeler(s, "admin", "admin")
        for name in labelers:
            _, world.tokens[name] = service.create_labeler(s, name)
        lines = [service.PromptLine(p, None, "generation", None) for p in demo_prompts]
        lines += [
            service.PromptLine(r["prompt"], r.get("user"), r.get("category"), r["completions"]) for r in rank_prompts
        ]
        # Demonstration tasks only for the demonstration prompts; ranking prompts bring completions.
        service.import_prompts(s, lines[: len(demo_prompts)], tag="demo")
        service.import_prompts(s, lines[len(demo_prompts) :], tag="rank", demonstrations=False, source="test")
        service.assign(s, labelers=labelers, overlap=overlap)
    from sqlalchemy import select

    from instructrl.label.models import Assignment, Labeler

    with world.tx() as s:
        for name in labelers:
            world.assignments[name] = list(
                s.scalars(select(Assignment.id).join(Labeler).where(Labeler.name == name).order_by(Assignment.id))
            )
    return world


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def sign_in(client, token: str) -> str:
    """Sign in through the login form; returns the session's CSRF token."""
    page = client.get("/login")
    login_csrf = CSRF_RE.search(page.text).group(1)
    r = client.post("/login", data={"token": token, "csrf_token": login_csrf})
    assert r.status_code == 303, r.text
    home = client.get("/")
    assert home.status_code == 200
    return CSRF_RE.search(home.text).group(1)


# ---------------------------------------------------------------------------- live server
@dataclass
class LiveServer:
    url: str
    export_dir: Path
    process: subprocess.Popen


def start_server(db_url: str, export_dir: Path, workers: int = 1, timeout: float = 30.0) -> LiveServer:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "instructrl",
            "label",
            "serve",
            "--db",
            db_url,
            "--port",
            str(port),
            "--export-dir",
            str(export_dir),
            "--workers",
            str(workers),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return LiveServer(url, export_dir, proc)
        except httpx.HTTPError:
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"server did not answer on {url} within {timeout}s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers (its own process group)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


SENTENCES = [
    "the cat sat on the mat .",
    "a dog ran in the park .",
    "the sun is warm and bright .",
    "### Instruction : write a poem about the sea .",
    "### Response : the sea is blue and wide .",
    "hello there , how are you today ?",
    "bananas are yellow and lemons are yellow too .",
]


def build_tiny_model(folder: Path, chat_template: str | None = None) -> Path:
    """A 2-layer GPT-2 with a word-level tokenizer trained on a few sentences, saved as a HF folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<eos>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    if chat_template:
        fast.chat_template = chat_template
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(fast),
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=fast.eos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():  # make EOS likely so samples end at different lengths
        model.lm_head.weight[fast.eos_token_id] += 0.5
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------- evaluations judged by people
def build_eval_model(folder: Path) -> Path:
    """The eval command's tiny policy (a 2-layer GPT-2 with a BPE tokenizer and a chat template)."""
    from instructrl.modeling.tiny import make_tiny_model

    texts = [f"What color is the flag of Zor{i}? The flag of Zor{i} is red." for i in range(60)]
    return make_tiny_model(
        folder, texts + ["### Instruction:\n", "### Response:\n"], vocab_size=200, n_layer=1, n_embd=32
    )


def comparison_sides(world: World) -> dict[int, tuple[str | None, int, str | None]]:
    """{assignment id: (model or None for a check, model's side 0/1, a check's answer)}: what the labeler
    cannot see, for a test to decide its choices."""
    from sqlalchemy import select

    from instructrl.label.models import Assignment, ComparisonItem

    with world.tx() as s:
        rows = s.execute(
            select(
                Assignment.id, ComparisonItem.model, ComparisonItem.model_position, ComparisonItem.check_answer
            ).join(ComparisonItem, ComparisonItem.task_id == Assignment.task_id)
        ).all()
    return {aid: (model, pos, answer) for aid, model, pos, answer in rows}


class Shots:
    """Screenshots into $INSTRUCTRL_SCREENSHOTS (relative to the repository), when set."""

    def __init__(self, enabled: bool):
        folder = os.environ.get("INSTRUCTRL_SCREENSHOTS") if enabled else None
        self.folder = (ROOT / folder) if folder else None
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, page, name: str, full_page: bool = True) -> None:
        if self.folder:
            path = self.folder / f"{name}.png"
            page.screenshot(path=str(path), full_page=full_page)
            try:  # keep the committed images small: a 128-colour palette is plenty for these pages
                from PIL import Image
            except ImportError:
                return
            with Image.open(path) as img:
                small = img.convert("RGB").quantize(colors=128)
            small.save(path, optimize=True)
