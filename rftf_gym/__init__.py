"""rftf-gym: reinforcement fine-tuning with temporal feedback (RFTF) for VLA policies on CALVIN.

Importing the package registers the Gymnasium id ``RFTF-CALVIN-v0``: the env of `rftf_gym.env`,
wrapped in the value-model reward wrapper of `rftf_gym.wrappers` when ``value_model`` is given.
"""

from gymnasium.envs.registration import register

from rftf_gym.conventions import EP_LEN

__version__ = "0.1.0"

# The env truncates at EP_LEN itself (CalvinEnv works without gym.make too); the spec states the
# limit so that env.spec.max_episode_steps and vector envs show it.
register(id="RFTF-CALVIN-v0", entry_point="rftf_gym.wrappers:make_calvin_env", max_episode_steps=EP_LEN)
