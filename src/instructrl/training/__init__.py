"""The training loop every stage shares, below the stage packages (sft, reward, ppo) and above modeling/data.

* :mod:`~instructrl.training.loop`: :class:`Trainer`, the loop of the supervised stages (a stage supplies its loss);
* :mod:`~instructrl.training.config`: :class:`TrainLoopConfig`, the loop's fields;
* :mod:`~instructrl.training.optim`: the LR schedule, AdamW and the guarded clip-and-step (PPO uses it too);
* :mod:`~instructrl.training.checkpoints`: atomic checkpoints, resume, the output directory;
* :mod:`~instructrl.training.validation`: the checks before any work (lengths against the model's context) and the
  completion marker a finished run writes last;
* :mod:`~instructrl.training.tracking`: ``metrics.jsonl``, trackers, throughput;
* :mod:`~instructrl.training.accelerator`: the accelerator (one CPU, several processes, GPUs);
* :mod:`~instructrl.training.allocator`: glibc's malloc kept from returning freed blocks on a one-process CPU run,
  on request.
"""
