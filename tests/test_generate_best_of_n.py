"""`instructrl generate --best-of N --reward-model RM`: the best sample by the RM, and one-line refusals."""

from types import SimpleNamespace

import pytest
import torch
from test_cli import one_line_error
from testkit import length_reward_model, run_cli, run_cli_many, save_tiny_reward_model

from instructrl.generate import answer
from instructrl.modeling.best_of_n import sample_n
from instructrl.modeling.loading import load_causal_lm, load_tokenizer


@pytest.fixture(scope="module")
def tiny_rm(tiny_model, tmp_path_factory):
    return save_tiny_reward_model(tiny_model, tmp_path_factory.mktemp("bon") / "rm")


def test_answer_prints_the_sample_the_reward_model_prefers(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    model = load_causal_lm(str(tiny_model), tok, init_from_config=False)
    rm = length_reward_model(tok)  # prefers the longest response
    args = SimpleNamespace(best_of=8, max_new_tokens=10, temperature=1.0, top_p=1.0)
    prompts = ["What color is the flag of Zor1?", "What color is the flag of Zor2?"]
    torch.manual_seed(3)
    best = answer(model, tok, prompts, args, rm)
    torch.manual_seed(3)  # the same draws again, all of them
    rows = sample_n(model, tok, prompts, 8, max_new_tokens=10)
    for p, b, row in zip(prompts, best, rows):
        lengths = [len(rm.encode([p], [g.text])[0]) for g in row]
        assert b in [g.text for g in row]
        assert len(rm.encode([p], [b])[0]) == max(lengths)


def test_generate_best_of_n_from_the_command_line(tiny_model, tiny_rm):
    r = run_cli(
        ["generate", "--model", str(tiny_model), "--prompt", "What color is the flag of Zor1?", "--prompt", "Hi"]
        + ["--best-of", "4", "--reward-model", str(tiny_rm), "--max-new-tokens", "6"]
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("best of 4: sample") == 2


def test_generate_best_of_n_refusals(tiny_model, tiny_rm):
    base = ["generate", "--model", str(tiny_model), "--prompt", "hi"]
    cases = [
        (base + ["--best-of", "4"], ("--best-of 4 needs --reward-model",)),
        (base + ["--best-of", "0", "--reward-model", str(tiny_rm)], ("--best-of 0", ">= 1")),
        (base + ["--reward-model", str(tiny_rm)], ("--reward-model is used only with --best-of",)),
        (base + ["--best-of", "2", "--reward-model", str(tiny_model)], ("is not a reward model",)),  # a policy as RM
        (
            ["generate", "--model", str(tiny_rm), "--prompt", "hi", "--best-of", "2", "--reward-model", str(tiny_rm)],
            ("is a reward model",),
        ),  # an RM folder as the policy
    ]
    for (_, needles), r in zip(cases, run_cli_many([args for args, _ in cases]), strict=True):
        one_line_error(r, *needles)
