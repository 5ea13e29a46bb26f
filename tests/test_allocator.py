"""glibc's malloc tuned for one-process CPU runs on request (training/allocator.py), and the fused AdamW of every
stage."""

import json
import os
import platform
import subprocess
import sys

import pytest
import torch

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# allocates, touches and frees a 48 MiB block again and again (above glibc's largest automatic mmap threshold,
# 32 MiB: by default each one is a fresh mmap, every page faulted in again) and reports the page faults of the last
# ten rounds (glibc settles on reusing one block after a few rounds)
PROBE = """
import json, resource, sys
import torch
from instructrl.training.allocator import keep_freed_memory
result = keep_freed_memory()
for _ in range(20):
    torch.empty(12 << 20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(12 << 20).fill_(1.0)
print(json.dumps({"result": result, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(tuning: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "INSTRUCTRL_MALLOC_TUNING"}
    if tuning is not None:
        env["INSTRUCTRL_MALLOC_TUNING"] = tuning
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt")
def test_a_tuned_process_reuses_a_large_freed_block_without_page_faults():
    off, tuned = _probe(None), _probe("1")  # off unless asked for: it costs memory
    assert off["result"] == "off" and tuned["result"] == "tuned"
    pages = 10 * (48 << 20) // 4096  # what ten fresh blocks fault in
    assert off["faults"] > pages // 2, off
    assert tuned["faults"] < pages // 20, tuned


def test_a_one_process_cpu_run_asks_for_the_malloc_tuning(tmp_path, monkeypatch):
    from instructrl.sft.config import SFTConfig
    from instructrl.training import accelerator

    calls = []
    monkeypatch.setattr(accelerator, "keep_freed_memory", lambda: calls.append(1) or "tuned")
    acc = accelerator.make_accelerator(SFTConfig(mixed_precision="no", cpu=True), tmp_path)
    assert acc.device.type == "cpu" and acc.num_processes == 1
    assert calls == [1]


def test_the_shared_loop_steps_a_fused_adamw_on_the_cpu(tiny_model):
    from transformers import AutoModelForCausalLM

    from instructrl.sft.config import SFTConfig
    from instructrl.training.optim import adamw

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    cfg = SFTConfig(weight_decay=0.1)
    fused = adamw(model, cfg, device=torch.device("cpu"))
    plain = adamw(AutoModelForCausalLM.from_pretrained(tiny_model), cfg)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    # the same update as the default implementation, to float rounding
    for opt in (fused, plain):
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.ones_like(p) * 0.01
        opt.step()
    for a, b in zip(fused.param_groups, plain.param_groups):
        for p, q in zip(a["params"], b["params"]):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
