"""Stage 2: the reward model (InstructGPT §3.5). ``instructrl rm``; Python API in ``instructrl.reward.model``
(``RewardModel``, ``load_reward_model``) and ``instructrl.reward.api`` (``run_rm``, ``evaluate_rm``)."""
