"""The admin CLI (`instructrl label ...`) end to end, and sampling ranking outputs from a tiny checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from labelkit import ROOT, build_tiny_model, seed
from sqlalchemy import func, select

from instructrl.cli import main as cli
from instructrl.label import db, service
from instructrl.label.models import Completion, Task


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli(["label", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_admin_flow(db_url, tiny_model, tmp_path, capsys):
    assert run(capsys, "migrate", "--db", db_url)[0] == 0
    tokens = {}
    for name, role in (("boss", "admin"), ("ana", "labeler"), ("ben", "labeler")):
        rc, out, err = run(capsys, "create-labeler", "--db", db_url, name, "--role", role)
        assert rc == 0 and out.count("\n") == 1 and out.startswith("irl_") and "shown only once" in err
        tokens[name] = out.strip()
    rc, _, err = run(capsys, "create-labeler", "--db", db_url, "ana")
    assert rc == 2 and "already exists" in err
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": p, "user": f"u{i}"}) + "\n"
            for i, p in enumerate(["write a poem about the sea .", "hello there", "the cat sat"])
        )
    )
    rc, _, err = run(capsys, "import-prompts", "--db", db_url, str(prompts), "--tag", "rm", "--no-demonstrations")
    assert rc == 0 and "3 prompts, 0 demonstration tasks, 0 ranking tasks" in err
    rc, _, err = run(
        capsys,
        "queue-rankings",
        "--db",
        db_url,
        "--checkpoint",
        str(tiny_model),
        "--k",
        "4",
        "--tag",
        "rm",
        "--max-new-tokens",
        "12",
        "--seed",
        "1",
    )
    assert rc == 0 and "queued 3 ranking tasks with K=4" in err
    engine = db.make_engine(db_url)
    factory = db.session_factory(engine)
    with db.transaction(factory) as s:
        tasks = list(s.scalars(select(Task).where(Task.kind == "ranking")))
        assert len(tasks) == 3 and all(t.source == str(tiny_model) for t in tasks)
        assert s.scalar(select(func.count(Completion.id))) == 12
        texts = [c.text for t in tasks for c in t.completions]
        assert all("<eos>" not in x for x in texts) and len(set(texts)) > 1
    # Nothing left to sample: a second run is a no-op.
    rc, _, err = run(capsys, "queue-rankings", "--db", db_url, "--checkpoint", str(tiny_model), "--tag", "rm")
    assert rc == 0 and "no prompts without a ranking task" in err
    rc, _, err = run(capsys, "assign", "--db", db_url, "--kind", "ranking", "--overlap", "2")
    assert rc == 0 and "made 6 assignments" in err
    with db.transaction(factory) as s:
        for name, order in (("ana", [1, 2, 3, 4]), ("ben", [1, 2, 4, 3])):
            me = service.labeler_by_name(s, name)
            for a in service.assignments_of(s, me):
                comps = service.own_assignment(s, me, a.id).task.completions
                service.submit_ranking(s, me, a.id, {c.id: service.OutputLabel(4, [], r) for c, r in zip(comps, order)})
    rc, out, _ = run(capsys, "progress", "--db", db_url, "--json")
    report = json.loads(out)
    assert report["tasks"]["ranking"] == {"tasks": 3, "unassigned": 0, "pending": 0, "submitted": 6}
    rc, out, _ = run(capsys, "progress", "--db", db_url)
    assert rc == 0 and "ana" in out and "ranking" in out
    rc, out, _ = run(capsys, "agreement", "--db", db_url, "--json")
    agreement = json.loads(out)
    assert (agreement["agreeing_pairs"], agreement["compared_pairs"]) == (15, 18)  # (C, D) flipped in each of 3 tasks
    rc, out, _ = run(capsys, "agreement", "--db", db_url)
    assert "agreement 83.3%" in out
    rc, out, _ = run(capsys, "export", "--db", db_url, "--out", str(tmp_path / "ex"), "--by-labeler")
    assert rc == 0 and "ana/rankings" in out and "demonstrations" not in out  # no empty files
    rec = json.loads((tmp_path / "ex/ben/rankings.jsonl").read_text().splitlines()[0])
    assert rec["ranks"] == [1, 2, 4, 3] and rec["labeler"] == "ben" and len(rec["completions"]) == 4
    rc, out, _ = run(
        capsys, "export", "--db", db_url, "--out", str(tmp_path / "all"), "--kind", "rankings", "--labeler", "ana"
    )
    assert len((tmp_path / "all/rankings.jsonl").read_text().splitlines()) == 3
    rc, _, err = run(capsys, "reset-token", "--db", db_url, "ana")
    assert rc == 0
    rc, _, err = run(capsys, "deactivate", "--db", db_url, "ben")
    assert rc == 0 and "deactivated" in err
    with db.transaction(factory) as s:
        assert service.authenticate(s, tokens["ana"]) is None and service.authenticate(s, tokens["ben"]) is None
        assert service.authenticate(s, tokens["boss"]).name == "boss"
    engine.dispose()


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": "x", "completions": ["a"]}\n')
    rc, _out, err = run(capsys, "import-prompts", "--db", url, str(bad))
    assert (
        rc == 2
        and err.strip()
        == f"error: {bad}:2: 'completions' holds 1 outputs; a ranking needs 2-9 (InstructGPT ranks K = 4..9)"
    )
    # The whole file is checked first: the good first line was not stored either.
    with db.transaction(db.session_factory(db.make_engine(url))) as s:
        assert service.progress(s)["tasks"]["demonstration"]["tasks"] == 0
    for argv, message in [
        (["import-prompts", "--db", url, str(tmp_path / "missing.jsonl")], "missing.jsonl: no such file"),
        (["queue-rankings", "--db", url, "--checkpoint", str(tmp_path), "--k", "12"], "--k 12"),
        (["assign", "--db", url, "--labelers", "nobody"], "no labeler named 'nobody'"),
        (["create-labeler", "--db", url, "../x"], "labeler name '../x'"),
        (["progress", "--db", "mysql://x"], "expected sqlite:///FILE.db or postgresql+psycopg"),
        (["progress", "--db", f"sqlite:///{tmp_path}/no/such/dir/x.db"], "does not exist"),
    ]:
        rc, _, err = run(capsys, *argv)
        assert rc == 2 and message in err and err.count("\n") == 1, (argv, err)


def test_queue_rankings_reports_a_bad_checkpoint(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    assert run(capsys, "import-prompts", "--db", url, str(tmp_path / "p.jsonl"))[0] == 0
    (tmp_path / "empty").mkdir()
    rc, _, err = run(capsys, "queue-rankings", "--db", url, "--checkpoint", str(tmp_path / "empty"))
    assert rc == 2 and "cannot load a causal LM" in err


def test_cli_subprocess_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "instructrl",
            "label",
            "import-prompts",
            "--db",
            f"sqlite:///{tmp_path / 'l.db'}",
            str(bad),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {bad}:1: not valid JSON (Expecting value at column 1)"
    assert "Traceback" not in proc.stderr


def test_prompt_format_uses_the_chat_template_when_present(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructrl.label.sampling import format_prompt, sample_outputs

    plain = AutoTokenizer.from_pretrained(tiny_model)
    assert format_prompt(plain, "hi") == "### Instruction:\nhi\n\n### Response:\n"
    chat_dir = build_tiny_model(
        tmp_path / "chat",
        chat_template=(
            "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
            "{% if add_generation_prompt %}<|assistant|> {% endif %}"
        ),
    )
    chat = AutoTokenizer.from_pretrained(chat_dir)
    assert format_prompt(chat, "hi") == "<|user|> hi <|assistant|> "
    model = AutoModelForCausalLM.from_pretrained(chat_dir)
    outs = sample_outputs(model, chat, ["hello there"], 5, max_new_tokens=8, seed=0)
    assert len(outs) == 1 and len(outs[0]) == 5 and all(isinstance(x, str) for x in outs[0])
    assert outs == sample_outputs(model, chat, ["hello there"], 5, max_new_tokens=8, seed=0)  # seeded


def test_seed_helper_assigns_with_overlap(db_url):
    world = seed(db_url, ["ana", "ben", "cy"], overlap=2)
    assert sum(len(v) for v in world.assignments.values()) == 8  # 4 tasks x 2 labelers
    world.engine.dispose()
