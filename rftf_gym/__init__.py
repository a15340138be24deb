"""rftf-gym: reinforcement fine-tuning with temporal feedback (RFTF) for VLA policies on CALVIN.

Importing the package registers the Gymnasium id ``RFTF-CALVIN-v0`` (see `rftf_gym.env`).
"""

from gymnasium.envs.registration import register

__version__ = "0.1.0"

register(id="RFTF-CALVIN-v0", entry_point="rftf_gym.env:CalvinEnv")
