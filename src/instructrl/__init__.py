"""instructrl: instruction following with human feedback (SFT, reward model, PPO-ptx, evaluation)."""

__version__ = "0.1.0"

from instructrl.errors import InstructRLError  # noqa: F401
