"""The CLI through a subprocess: help, a real run, and one-line errors for user mistakes."""

import json

from testkit import fact_demos, run_cli, run_cli_many, write_jsonl


def test_help_lists_the_stages():
    r = run_cli(["--help"])
    assert r.returncode == 0
    for stage in ("sft", "rm", "ppo", "eval", "pretrain", "generate", "world", "label", "demo", "reproduce"):
        assert f"\n  {stage} " in r.stdout
    r = run_cli(["sft", "--help"])
    assert r.returncode == 0 and "--learning-rate" in r.stdout and "InstructGPT" in r.stdout


def test_sft_then_generate(tiny_model, demos_file, tmp_path):
    out = tmp_path / "o"
    r = run_cli(
        [
            "sft",
            "--model",
            str(tiny_model),
            "--data",
            str(demos_file),
            "--out",
            str(out),
            "--max-steps",
            "5",
            "--batch-size",
            "8",
            "--learning-rate",
            "1e-3",
            "--max-length",
            "64",
            "--no-progress",
        ]
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "sft: 5 steps" in r.stdout
    assert len((out / "metrics.jsonl").read_text().splitlines()) >= 5
    r = run_cli(
        [
            "generate",
            "--model",
            str(out),
            "--prompt",
            "What color is the flag of Zor1?",
            "--temperature",
            "0",
            "--max-new-tokens",
            "5",
        ]
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip()


def test_pretrain_from_a_weightless_config_dir(tmp_path):
    from instructrl.modeling.tiny import make_tiny_model_dir

    texts = [d["prompt"] + " " + d["completion"] for d in fact_demos(100)]
    init = make_tiny_model_dir(tmp_path / "init", texts, vocab_size=300)
    data = write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in texts])
    r = run_cli(
        [
            "pretrain",
            "--model",
            str(init),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "base"),
            "--max-length",
            "32",
            "--batch-size",
            "16",
            "--epochs",
            "2",
            "--warmup-steps",
            "2",
            "--no-progress",
        ]
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "base" / "model.safetensors").exists()
    sel = json.loads((tmp_path / "base" / "selection.json").read_text())
    assert sel["best_metric"] < 5.0  # from ~ln(300) = 5.7 at random init


def one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    assert "Traceback" not in r.stderr
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(line) == 1, r.stderr
    for n in needles:
        assert n in line[0], line[0]


def test_user_errors_are_one_clear_line(tiny_model, tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", fact_demos(5))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": oops}\n')
    missing = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "a", "response": "b"}])
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"prompt": "caf\xe9", "completion": "x"}\n')
    base = ["sft", "--model", str(tiny_model), "--out", str(tmp_path / "o"), "--no-progress"]
    cases = [
        (base + ["--data", str(bad)], ("bad.jsonl:2", "malformed JSON")),
        (base + ["--data", str(missing)], ("missing column 'completion'", "prompt, response")),
        (base + ["--data", str(tmp_path / "empty.jsonl")], ("is empty",)),
        (
            ["sft", "--model", "./nowhere/model", "--data", str(good), "--out", str(tmp_path / "o")],
            ("model path './nowhere/model' does not exist",),
        ),
        (base + ["--data", str(good), "--epochs", "many"], ("epochs", "expects int")),
        (base + ["--data", str(good), "--max-length", "8"], ("exceed max_length=8",)),
        (base + ["--data", str(tmp_path / "latin1.jsonl")], ("latin1.jsonl:1", "UTF-8")),
    ]
    *results, r = run_cli_many([args for args, _ in cases] + [["frobnicate"]])
    for (_, needles), result in zip(cases, results, strict=True):
        one_line_error(result, *needles)
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr
