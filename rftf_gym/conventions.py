"""CALVIN's conventions: the facts of the benchmark that the whole toolkit shares, in one place.

Every other module imports these names instead of restating a number. Each fact cites the
official file it comes from, in the public repositories mees/calvin_env (the simulator) and
mees/calvin (the evaluation); the configuration files among them are also in CALVIN's releases.

Observation layout (both backends, `rftf_gym.env.CalvinEnv`):

- ``robot_obs`` (15,): tcp position xyz [0:3], tcp euler xyz [3:6], gripper opening width
  0..0.08 m [6], the 7 arm joints [7:14], last gripper action -1 close / +1 open [14]
  (calvin_env ``Robot.get_observation``).
- ``scene_obs`` (24,): sliding door joint [0], drawer joint [1], button joint [2], switch joint
  [3], lightbulb on/off [4], LED on/off [5], then the red, blue and pink block poses as
  position xyz + euler xyz at `BLOCK_OFFSETS` (calvin_env ``PlayTableScene.get_obs``; the
  official env orders blocks by each scene's YAML, this toolkit always red, blue, pink).
- images: uint8 arrays of shape (height, width, 3), sizes in `IMAGE_HW`.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

# The four CALVIN scenes (calvin_env conf/scene/calvin_scene_{A,B,C,D}.yaml).
Scene = Literal["A", "B", "C", "D"]
SCENES: tuple[str, ...] = get_args(Scene)
# The two RGB cameras (calvin_env conf/cameras/cameras/{static,gripper}.yaml).
CAMERAS = ("static", "gripper")
# Official image sizes as (height, width), the order of the image arrays' shapes
# (conf/cameras/cameras/static.yaml and gripper.yaml: width = height = 200 and 84).
IMAGE_HW: dict[str, tuple[int, int]] = {"static": (200, 200), "gripper": (84, 84)}

# The three blocks, in the order this toolkit writes them into scene_obs, and their body names in
# the official get_info() (conf/scene/calvin_scene_*.yaml, objects.movable_objects).
COLORS = ("red", "blue", "pink")
BLOCKS = tuple(f"block_{color}" for color in COLORS)
# Start index of each block's pose (pos 3 + euler 3) in scene_obs.
BLOCK_OFFSETS: dict[str, int] = {color: 6 + 6 * i for i, color in enumerate(COLORS)}

ROBOT_OBS_DIM = 15
SCENE_OBS_DIM = 24
ACTION_DIM = 7  # (dx, dy, dz, droll, dpitch, dyaw, gripper)
# Cartesian action kinds the official robot accepts (calvin_env robot/robot.py, apply_action:
# "cartesian_rel" deltas scaled as below, "cartesian_abs" tcp position, euler xyz and gripper).
ACTION_MODES = ("relative", "absolute")

# Relative actions: one unit of action moves the tcp target by this much per control step
# (calvin_env robot/robot.py, Robot(max_rel_pos=0.02, max_rel_orn=0.05); the dataset's
# rel_actions are clipped and scaled by the same numbers, utils/utils.py to_relative_action).
MAX_REL_POS = 0.02  # metres
MAX_REL_ORN = 0.05  # radians

# Simulation rates (conf/env/play_table_env.yaml: bullet_time_step 240, control_freq 30).
PHYSICS_HZ = 240
CONTROL_HZ = 30


def wrap_angle(angle: np.ndarray | float) -> np.ndarray:
    """Wrap angles to [-pi, pi), as calvin_env's ``utils.angle_between_angles`` does.

    Args:
        angle: angles in radians, any shape.

    Returns:
        float64 angles in [-pi, pi), same shape.
    """
    return (np.asarray(angle, dtype=np.float64) + np.pi) % (2 * np.pi) - np.pi


# Joint travel in metres after the scenes' global_scaling 0.8 (upper limits of the official
# data/calvin_table_{A,B,C,D}/urdf joints): the sliding door differs per scene; the drawer
# (0.275 * 0.8), button (0.025 * 0.8) and switch (0.11 * 0.8) are the same in every scene.
SLIDER_RANGE: dict[str, float] = {"A": 0.28, "B": 0.304, "C": 0.24, "D": 0.28}
DRAWER_RANGE = 0.22
BUTTON_RANGE = 0.02
SWITCH_RANGE = 0.088
# The table top's slab spans x -0.44..0.44 in every scene (official base_link mesh, scaled 0.8).
TABLE_TOP_HALF_X = 0.44

# The evaluation protocol (mees/calvin calvin_models/calvin_agent/evaluation/evaluate_policy.py):
# 360 control steps per instruction (EP_LEN), 1000 chains (NUM_SEQUENCES) of 5 instructions
# (multistep_sequences.py, get_sequences_for_state2 draws 5 tasks).
EP_LEN = 360
NUM_SEQUENCES = 1000
CHAIN_LEN = 5

# Reset states of the evaluation (calvin_agent/evaluation/utils.py,
# get_env_state_for_initial_condition): the neutral robot_obs, the block spots on the shelf
# halves behind the sliding door and the two table spots (shuffled per state), the block yaw band,
# and the door joint written for slider "left" (0.28 in every scene; the drawer is written at
# DRAWER_RANGE when open and the switch at SWITCH_RANGE when the lightbulb is on).
NEUTRAL_ROBOT_OBS = (
    0.02586889, -0.2313129, 0.5712808, 3.09045411, -0.02908596, 1.50013585, 0.07999963,
    -1.21779124, 1.03987629, 2.11978254, -2.34205014, -0.87015899, 1.64119093, 0.55344928, 1.0,
)  # fmt: skip
EVAL_SLIDER_LEFT_SPOT = (-2.40851662e-01, 9.24044687e-02, 4.60990009e-01)
EVAL_SLIDER_RIGHT_SPOT = (7.03416330e-02, 9.24044687e-02, 4.60990009e-01)
EVAL_TABLE_SPOTS = (
    (5.00000896e-02, -1.20000177e-01, 4.59990009e-01),
    (2.29995412e-01, -1.19995140e-01, 4.59990010e-01),
)
EVAL_BLOCK_YAW_BAND = np.pi / 8  # block yaw uniform in pi/2 +- this
EVAL_BLOCK_YAW_RANGE = (np.pi / 2 - EVAL_BLOCK_YAW_BAND, np.pi / 2 + EVAL_BLOCK_YAW_BAND)
EVAL_SLIDER_LEFT_JOINT = 0.28
