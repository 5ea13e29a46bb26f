"""Stage 2: training the reward model (InstructGPT §3.5). ``instructrl rm``; Python API in ``instructrl.reward.api``
(``run_rm``, ``evaluate_rm``). The model itself (``RewardModel``, ``load_reward_model``) is in
``instructrl.modeling.reward``."""
