"""The interface every simulator backend implements (`rftf_gym.backends.make_backend` builds one).

Two backends sit behind `rftf_gym.env.CalvinEnv`:

- ``embedded`` (`rftf_gym.sim.play_table.EmbeddedPlayTable`): the project's own pybullet
  re-creation of the CALVIN play table. Always available.
- ``calvin`` (`rftf_gym.calvin_backend.OfficialPlayTable`): an adapter over the official
  ``calvin_env.envs.play_table_env.PlayTableSimEnv``, used when calvin_env is installed.

Both speak CALVIN's conventions (`rftf_gym.conventions`) so that the oracle in `rftf_gym.tasks`, the chain
evaluation and every script work unchanged on either:

- ``robot_obs`` (15,): tcp pos (3), tcp euler xyz (3), gripper opening width (1), 7 arm joints,
  last gripper action (-1 close / +1 open).
- ``scene_obs`` (24,): sliding door joint, drawer joint, button joint, switch joint, lightbulb,
  LED, then red, blue, pink block poses as pos (3) + euler xyz (3). Always red, blue, pink.
- ``get_info()`` returns the official ``PlayTableSimEnv.get_info()`` structure (with scene info),
  which is what `rftf_gym.tasks` reads::

      {"robot_info": {"tcp_pos", "tcp_orn", "gripper_opening_width", "arm_joint_states",
                      "gripper_action", "uid", "contacts"},
       "scene_info": {"fixed_objects": {"table": {"uid", "links": {link_name: link_id},
                                                   "contacts"}},
                      "movable_objects": {"block_red" | "block_blue" | "block_pink":
                                          {"uid", "current_pos", "current_orn" (xyzw quaternion),
                                           "current_lin_vel", "current_ang_vel", "contacts"}},
                      "doors": {"base__slide" | "base__drawer": {"current_state"}},
                      "buttons": {"base__button": {"joint_state", "logical_state"}},
                      "switches": {"base__switch": {"joint_state", "logical_state"}},
                      "lights": {"lightbulb" | "led": {"logical_state"}}}}

  Contacts are tuples in pybullet's ``getContactPoints`` layout seen from the object itself:
  index 1 is the object's own uid, index 2 the other body's uid, index 3 the own link and
  index 4 the other body's link. The table's links include ``base_link`` (table top),
  ``plank_link`` (the shelf behind the sliding door), ``drawer_link``, ``slide_link``,
  ``button_link``, ``switch_link``, ``light_link`` and ``led_link``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

class PlayTableBackend(Protocol):
    """What `CalvinEnv` needs from a simulator.

    Inputs are validated by the env before they reach a backend: actions are finite float64
    arrays of shape (7,) with the gripper already binarised to exactly -1.0 or +1.0, and reset
    states have the right lengths.
    """

    scene: str
    cameras: dict[str, tuple[int, int]]

    def reset(
        self,
        robot_obs: np.ndarray | None = None,
        scene_obs: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        """Reset to an explicit state, or to the neutral robot and a random layout drawn from rng."""

    def step(self, action: np.ndarray, action_mode: str = "relative") -> None:
        """Apply one 30 Hz control step (8 physics substeps at 240 Hz)."""

    def get_obs(self) -> dict[str, np.ndarray]:
        """``robot_obs``, ``scene_obs`` and ``rgb_<camera>`` (uint8 HxWx3) for each camera; with
        ``depth=True`` at construction also ``depth_<camera>`` (float32 HxW, metres)."""

    def get_info(self) -> dict[str, Any]:
        """The official ``get_info()`` structure described in this module's docstring."""

    def render(self, camera: str = "static") -> np.ndarray:
        """One uint8 HxWx3 image from a camera, at the size configured for it."""

    def slider_mid_x(self) -> float:
        """World x that splits the shelf into its ``slider_left`` and ``slider_right`` halves."""

    def close(self) -> None:
        """Free the physics client."""
