"""TRL side of the PPO speed benchmark; runs in its own venv (trl 1.12.0, the last release with PPO).

usage: trl_run.py WORK_DIR RESULT.jsonl ITERATIONS PRECISION(bf16|fp32) [--device cpu|cuda] [--fused-gelu]
                  [--profile FILE]

With ``--fused-gelu`` the four models run GPT-2's gelu_new as PyTorch's fused tanh GELU, as instructrl's
loader does: it shows how much of the difference is that kernel and how much the organization of the passes.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
from trl.experimental.ppo import PPOConfig, PPOTrainer

ap = argparse.ArgumentParser()
ap.add_argument("work")
ap.add_argument("result_path")
ap.add_argument("iterations", type=int)
ap.add_argument("precision", choices=["bf16", "fp32"])
ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
ap.add_argument("--fused-gelu", action="store_true")
ap.add_argument("--profile", help="write a torch.profiler table of iterations 4-5 to this file")
a = ap.parse_args()
work, result_path, iterations, precision, fused_gelu = a.work, a.result_path, a.iterations, a.precision, a.fused_gelu
setting = json.load(open(os.path.join(work, "setting.json")))
torch.manual_seed(setting["seed"])
tok = AutoTokenizer.from_pretrained(os.path.join(work, "policy"), padding_side="left")
policy = AutoModelForCausalLM.from_pretrained(os.path.join(work, "policy"))
ref = AutoModelForCausalLM.from_pretrained(os.path.join(work, "policy"))
rm = AutoModelForSequenceClassification.from_pretrained(os.path.join(work, "rm"), num_labels=1)
value = AutoModelForSequenceClassification.from_pretrained(os.path.join(work, "rm"), num_labels=1)
if fused_gelu:
    from transformers.activations import NewGELUActivation

    for model in (policy, ref, rm, value):
        for parent in model.modules():
            for name, child in list(parent.named_children()):
                if isinstance(child, NewGELUActivation):
                    setattr(parent, name, torch.nn.GELU(approximate="tanh"))
prompts = json.load(open(os.path.join(work, "prompts.json")))
ds = Dataset.from_dict({"input_ids": prompts})

B = setting["batch_size"]
args = PPOConfig(
    output_dir=os.path.join(work, "trl_out"),
    per_device_train_batch_size=B,
    gradient_accumulation_steps=1,
    num_mini_batches=setting["num_mini_batches"],
    num_ppo_epochs=setting["ppo_epochs"],
    response_length=setting["response_length"],
    total_episodes=B * iterations,
    learning_rate=setting["learning_rate"],
    lr_scheduler_type="constant",
    kl_coef=setting["kl_coef"],
    temperature=1.0,
    stop_token="eos",
    missing_eos_penalty=None,
    cliprange=0.2,
    cliprange_value=0.2,
    vf_coef=0.1,
    gamma=1.0,
    lam=0.95,
    local_rollout_forward_batch_size=B,
    num_sample_generations=0,
    report_to=[],
    save_strategy="no",
    logging_steps=1,
    use_cpu=(a.device == "cpu"),
    bf16=(precision == "bf16"),
    seed=setting["seed"],
    dataloader_drop_last=True,
)


class Clock(TrainerCallback):
    def __init__(self, profiler=None):
        self.rows, self.t0, self.profiler = [], time.perf_counter(), profiler

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "objective/scores" in logs:
            now = time.perf_counter()  # TRL's logged metrics are .item()s: the GPU has finished the iteration
            self.rows.append(
                {
                    "iteration": len(self.rows) + 1,
                    "t": now - self.t0,
                    "score_mean": logs["objective/scores"],
                    "kl": logs["objective/kl"],
                }
            )
            if self.profiler is not None:
                self.profiler.step()


profiler = None
if a.profile:  # iterations 4 and 5 (after 3 left out)
    from torch.profiler import ProfilerActivity, profile, schedule

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device == "cuda" else [])
    profiler = profile(activities=acts, schedule=schedule(wait=2, warmup=1, active=2, repeat=1))
    profiler.start()
clock = Clock(profiler)
trainer = PPOTrainer(
    args=args,
    processing_class=tok,
    model=policy,
    ref_model=ref,
    reward_model=rm,
    train_dataset=ds,
    value_model=value,
    callbacks=[clock],
)
clock.t0 = time.perf_counter()
trainer.train()
if profiler is not None:
    profiler.stop()
    sort = "self_cuda_time_total" if a.device == "cuda" else "self_cpu_time_total"
    with open(a.profile, "w") as fh:
        fh.write(profiler.key_averages().table(sort_by=sort, row_limit=40))
with open(result_path, "w") as fh:
    for r in clock.rows:
        fh.write(json.dumps(r) + "\n")
