"""Expert iteration: best-of-n samples from the policy, scored by the frozen reward model, the best ones
fine-tuned on with the SFT stage, round after round (``instructrl expert-iteration``)."""
