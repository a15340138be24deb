"""Which reset states a simulator can hold, and when a block has left the play table.

An explicit reset state (``robot_obs`` + ``scene_obs``) is refused, with every offending value,
its name and its allowed range in the message, when:

- an arm joint is outside the Panda's limits (calvin_env ``conf/robot/panda.yaml``
  ``lower_joint_limits`` / ``upper_joint_limits``), the gripper width outside 0..0.08 m (two
  fingers of ``gripper_joint_limits`` [0, 0.04]) or the gripper action outside [-1, 1];
- a table joint is outside its travel (door: the scene's slider range; drawer 0.22, button 0.02,
  switch 0.088, calvin_env ``data/calvin_table_*/urdf`` limits scaled by 0.8) or a light is not
  0 (off) or 1 (on);
- a block centre is outside `WORKSPACE_LOW`..`WORKSPACE_HIGH`, the box around the play table in
  which blocks can rest or be carried (below z 0.3 it is under the drawer's floor, in the table);
- a block reaches more than `OVERLAP_TOLERANCE` into a part of the table or another block.

The first three are pure checks of the vectors (`state_problems`); the last needs the simulator's
geometry and is asked of pybullet once the state is applied (`overlap_problems`). Both backends
are pybullet and describe their bodies with the same ``get_info()`` structure, so the same two
functions serve both. During an episode, `blocks_outside_workspace` tells a block that fell off the
table or was flung away; the env reports it as a physics error.

Tolerances: states read back from the simulator sit slightly past the limits (measured on the
embedded backend's demonstrations: arm joints up to 0.003 rad, the button 0.005 m, the gripper
width 0.006 m past theirs), so limits are widened by `JOINT_TOLERANCE_RAD` / `JOINT_TOLERANCE_M`;
resting contacts penetrate by about a millimetre, and up to 5 mm in the demonstrations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pybullet as p

from rftf_gym.conventions import BUTTON_RANGE, COLORS, DRAWER_RANGE, SLIDER_RANGE, SWITCH_RANGE

# calvin_env conf/robot/panda.yaml.
ARM_JOINT_LOW = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
ARM_JOINT_HIGH = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)
GRIPPER_WIDTH_MAX = 0.08
JOINT_TOLERANCE_RAD = 0.02
JOINT_TOLERANCE_M = 0.01
# Block centres stay in this box while they are on the table, the shelf, in the drawer or in the
# hand: the table spans x -0.44..0.44 and y -0.18..0.18 (the open drawer reaches y -0.40), its
# lowest surface is the drawer floor at z 0.34, and the arm reaches about 0.85 m from its base
# at (-0.34, -0.46, 0.24).
WORKSPACE_LOW = (-0.6, -0.7, 0.3)
WORKSPACE_HIGH = (0.6, 0.3, 1.3)
OVERLAP_TOLERANCE = 0.01
_AXES = ("x", "y", "z")


def _range_problem(name: str, value: float, low: float, high: float, tolerance: float) -> str | None:
    if low - tolerance <= value <= high + tolerance:
        return None
    return f"{name} = {value:.6g} is outside its range [{low:.6g}, {high:.6g}]"


def blocks_outside_workspace(scene_obs: np.ndarray) -> list[str]:
    """One message per block whose centre (in ``scene_obs``, red, blue, pink) left the workspace.

    Args:
        scene_obs: CALVIN scene_obs (24,).

    Returns:
        Messages such as ``"block_red z = 0.2 is outside the workspace [0.3, 1.3]"``; empty when
        every block is inside.
    """
    problems = []
    for i, color in enumerate(COLORS):
        for axis, value, low, high in zip(_AXES, scene_obs[6 + 6 * i: 9 + 6 * i], WORKSPACE_LOW, WORKSPACE_HIGH):
            if not low <= value <= high:
                problems.append(f"block_{color} {axis} = {value:.6g} is outside the workspace [{low:.6g}, {high:.6g}]")
    return problems


def state_problems(robot_obs: np.ndarray, scene_obs: np.ndarray, scene: str) -> list[str]:
    """Values of a reset state that no simulator can hold (everything but overlaps).

    Args:
        robot_obs: CALVIN robot_obs (15,); the arm joints [7:14], gripper width [6] and gripper
            action [14] are checked (the tcp pose [0:6] follows from the joints).
        scene_obs: CALVIN scene_obs (24,), blocks red, blue, pink.
        scene: ``"A"``..``"D"`` (the door's travel differs).

    Returns:
        One message per bad value, naming it, its value and its allowed range.
    """
    checks: list[str | None] = []
    for j in range(7):
        checks.append(_range_problem(f"robot_obs[{7 + j}] (arm joint {j + 1})", robot_obs[7 + j], ARM_JOINT_LOW[j],
                                     ARM_JOINT_HIGH[j], JOINT_TOLERANCE_RAD))
    checks.append(_range_problem("robot_obs[6] (gripper width)", robot_obs[6], 0.0, GRIPPER_WIDTH_MAX,
                                 JOINT_TOLERANCE_M))
    checks.append(_range_problem("robot_obs[14] (gripper action)", robot_obs[14], -1.0, 1.0, 0.0))
    joints = (("sliding door", SLIDER_RANGE[scene]), ("drawer", DRAWER_RANGE), ("button", BUTTON_RANGE),
              ("switch", SWITCH_RANGE))
    for k, (name, travel) in enumerate(joints):
        checks.append(_range_problem(f"scene_obs[{k}] ({name})", scene_obs[k], 0.0, travel, JOINT_TOLERANCE_M))
    for k, name in ((4, "lightbulb"), (5, "LED")):
        if scene_obs[k] not in (0.0, 1.0):
            checks.append(f"scene_obs[{k}] ({name}) = {scene_obs[k]:.6g} must be 0 (off) or 1 (on)")
    problems = [c for c in checks if c is not None]
    return problems + [f"scene_obs: {m}" for m in blocks_outside_workspace(scene_obs)]


def overlap_problems(client: int, info: Mapping[str, Any], tolerance: float = OVERLAP_TOLERANCE) -> list[str]:
    """Blocks reaching into a table part or into each other, as pybullet measures them now.

    Args:
        client: pybullet physics client id of the backend.
        info: the backend's ``get_info()`` (uids of the table, its links and the blocks).
        tolerance: allowed penetration in metres (resting contacts sink about a millimetre).

    Returns:
        One message per overlapping pair, with the depth.
    """
    table = info["scene_info"]["fixed_objects"]["table"]
    link_names = {int(link): name for name, link in table["links"].items()}
    blocks = [(name, int(obj["uid"])) for name, obj in info["scene_info"]["movable_objects"].items()]
    problems = []
    for i, (name, uid) in enumerate(blocks):
        others = [(link_names, int(table["uid"]), "table")] + [({}, other, other_name)
                                                                for other_name, other in blocks[i + 1:]]
        for names, other, label in others:
            points = p.getClosestPoints(uid, other, 0.0, physicsClientId=client)
            deepest: dict[str, float] = {}
            for point in points:
                part = f"{label} {names.get(int(point[4]), '')}".strip() if names else label
                deepest[part] = min(deepest.get(part, 0.0), float(point[8]))
            for part, depth in deepest.items():
                if depth < -tolerance:
                    problems.append(f"{name} is {-depth * 100:.1f} cm inside {part} (allowed: {tolerance * 100:.1f} cm)")
    return problems


def check_reset_state(robot_obs: np.ndarray, scene_obs: np.ndarray, scene: str) -> None:
    """Raise ValueError listing every value of a reset state that no simulator can hold.

    Raises:
        ValueError: the message names each bad value and its allowed range.
    """
    problems = state_problems(robot_obs, scene_obs, scene)
    if problems:
        raise ValueError("impossible reset state: " + "; ".join(problems))
