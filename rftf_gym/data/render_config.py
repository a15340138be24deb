"""``<split>/.hydra/merged_config.yaml``: the calvin_env configuration a split was rendered with.

The official evaluation builds its simulator from this file: ``calvin_env/envs/play_table_env.py``
``get_env(dataset_path, obs_space, show_gui, **kwargs)`` loads ``<dataset_path>/.hydra/
merged_config.yaml``, deletes the cameras the observation space does not use (a camera is kept when
``rgb_<name>`` or ``depth_<name>`` is in ``obs_space["rgb_obs"] + obs_space["depth_obs"]``),
replaces ``scene`` when given ``scene=``, and instantiates ``render_conf.env`` with
``show_gui``, ``use_vr=False`` and ``use_scene_info=True``. CALVIN's ``evaluate_policy.py`` calls it
on ``<dataset>/validation``; its rollout wrapper (``calvin_agent/wrappers/calvin_env_wrapper.py``)
passes the training data module's observation space.

The official file is calvin_env's ``datarenderer.py`` output: the data-collection config
(``conf/config_data_collection.yaml``: ``env``, ``robot``, ``scene``, ``cameras``, ...) merged
with the rendering config. `render_config` writes the keys that ``get_env`` and the env it
instantiates read, with the same structure and OmegaConf interpolations (``env.cameras`` is
``${cameras}``, so deleting a camera from ``cameras`` removes it from the env; ``env.scene_cfg``
is ``${scene}``, so ``get_env(scene=...)`` replaces the scene), and the values of the project's
own facts: the scene geometry of `rftf_gym.sim.layout`, the cameras of `rftf_gym.sim.cameras` at
the split's image sizes, and the robot of `rftf_gym.sim.robot` as calvin_env's
``panda_longer_finger``. One difference from the official scene files: the blocks are listed red,
blue, pink in every scene (scene A's YAML lists pink, blue, red and C's blue, red, pink), because
calvin_env orders ``scene_obs`` by this list and the toolkit always writes red, blue, pink.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rftf_gym.conventions import COLORS, CONTROL_HZ, PHYSICS_HZ, SCENES
from rftf_gym.data.format import MERGED_CONFIG_FILE
from rftf_gym.data.statistics import yaml_float
from rftf_gym.files import atomic_write_text
from rftf_gym.sim import cameras as cam
from rftf_gym.sim import robot
from rftf_gym.sim.layout import GLOBAL_SCALING, LAYOUTS, NEUTRAL_JOINTS, ROBOT_BASE_POS
from rftf_gym.sim.play_table import LIGHT_ON

# calvin_env conf/robot/panda_longer_finger.yaml (which overrides conf/robot/panda.yaml): the URDF
# and the link / joint ids in it. The toolkit's embedded robot is pybullet_data's Panda, whose
# ids differ; these are the official file's.
ROBOT_URDF = "franka_panda/panda_longer_finger.urdf"
GRIPPER_JOINT_IDS = (9, 11)
TCP_LINK_ID = 15
END_EFFECTOR_LINK_ID = 7
GRIPPER_CAM_LINK = 12
# calvin_env conf/scene/calvin_scene_*.yaml: the surfaces blocks are sampled on are at the height
# of a resting block's centre.
SURFACE_Z = 0.46


def robot_config() -> dict[str, Any]:
    """calvin_env's ``robot`` node (``calvin_env.robot.robot.Robot``), ``panda_longer_finger``."""
    return {
        "_target_": "calvin_env.robot.robot.Robot",
        "filename": ROBOT_URDF,
        "base_position": "${scene.robot_base_position}",
        "base_orientation": "${scene.robot_base_orientation}",
        "initial_joint_positions": "${scene.robot_initial_joint_positions}",
        "max_joint_force": robot.MAX_JOINT_FORCE,
        "gripper_force": int(robot.GRIPPER_FORCE),
        "arm_joint_ids": list(robot.ARM_JOINTS),
        "lower_joint_limits": list(robot.LOWER_LIMITS),
        "upper_joint_limits": list(robot.UPPER_LIMITS),
        "gripper_joint_ids": list(GRIPPER_JOINT_IDS),
        "gripper_joint_limits": [0, robot.FINGER_MAX],
        "tcp_link_id": TCP_LINK_ID,
        "end_effector_link_id": END_EFFECTOR_LINK_ID,
        "gripper_cam_link": GRIPPER_CAM_LINK,
        # conf/robot/panda.yaml: pybullet's null-space IK (not IKFast), actions on a target pose,
        # no extra action scaling, euler angles in robot_obs.
        "use_nullspace": True,
        "max_velocity": int(robot.MAX_VELOCITY),
        "use_ik_fast": False,
        "magic_scaling_factor_pos": 1,
        "magic_scaling_factor_orn": 1,
        "use_target_pose": True,
        "euler_obs": True,
    }


def scene_config(scene: str) -> dict[str, Any]:
    """calvin_env's ``scene`` node (``PlayTableScene``) for scene ``"A"`` .. ``"D"``."""
    layout = LAYOUTS[scene]
    surfaces = {
        name: [[x_lo, y_lo, SURFACE_Z], [x_hi, y_hi, SURFACE_Z]]
        for name, ((x_lo, y_lo), (x_hi, y_hi)) in layout.surfaces.items()
    }
    table = {
        "file": f"calvin_table_{scene}/urdf/calvin_table_{scene}.urdf",
        "initial_pos": [0, 0, 0],
        "initial_orn": [0, 0, 0],
        "joints": {"base__slide": {"initial_state": 0}, "base__drawer": {"initial_state": 0}},
        "buttons": {"base__button": {"initial_state": 0, "effect": "led"}},
        "switches": {"base__switch": {"initial_state": 0, "effect": "lightbulb"}},
        "lights": {
            "lightbulb": {"link": "light_link", "color": list(LIGHT_ON["lightbulb"])},
            "led": {"link": "led_link", "color": list(LIGHT_ON["led"])},
        },
    }
    blocks = {
        f"block_{color}": {
            "file": f"blocks/block_{color}_{layout.block_sizes[color]}.urdf",
            "initial_pos": "any",
            "initial_orn": "any",
        }
        for color in COLORS
    }
    return {
        "_target_": "calvin_env.scene.play_table_scene.PlayTableScene",
        "_recursive_": False,
        "data_path": "${data_path}",
        "global_scaling": GLOBAL_SCALING,
        "euler_obs": "${robot.euler_obs}",
        "robot_base_position": list(ROBOT_BASE_POS),
        "robot_base_orientation": [0, 0, 0],
        "robot_initial_joint_positions": list(NEUTRAL_JOINTS),
        "surfaces": surfaces,
        "objects": {"fixed_objects": {"table": table}, "movable_objects": blocks},
    }


def cameras_config(image_sizes: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    """calvin_env's ``cameras`` node for the static and gripper cameras at (height, width)."""
    (static_h, static_w), (gripper_h, gripper_w) = image_sizes["static"], image_sizes["gripper"]

    def aspect(w: int, h: int) -> float | int:  # width / height, as the cameras render (1 for CALVIN's square images)
        return 1 if w == h else w / h

    return {
        "static": {
            "_target_": "calvin_env.camera.static_camera.StaticCamera",
            "name": "static",
            "fov": cam.STATIC_FOV,
            "aspect": aspect(static_w, static_h),
            "nearval": cam.STATIC_NEAR,
            "farval": cam.STATIC_FAR,
            "width": int(static_w),
            "height": int(static_h),
            "look_at": list(cam.STATIC_LOOK_AT),
            "look_from": list(cam.STATIC_LOOK_FROM),
            "up_vector": list(cam.STATIC_UP),
        },
        "gripper": {
            "_target_": "calvin_env.camera.gripper_camera.GripperCamera",
            "name": "gripper",
            "fov": cam.GRIPPER_FOV,
            "aspect": aspect(gripper_w, gripper_h),
            "nearval": cam.GRIPPER_NEAR,
            "farval": cam.GRIPPER_FAR,
            "width": int(gripper_w),
            "height": int(gripper_h),
        },
    }


def render_config(scene: str, image_sizes: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    """The content of ``merged_config.yaml`` for frames of ``scene`` at ``image_sizes``.

    Args:
        scene: ``"A"`` .. ``"D"``.
        image_sizes: (height, width) of the ``"static"`` and ``"gripper"`` images.

    Raises:
        ValueError: Unknown scene, or a camera size missing.
    """
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")
    if set(image_sizes) != {"static", "gripper"}:
        raise ValueError(f"image_sizes needs exactly 'static' and 'gripper', got {sorted(image_sizes)}")
    return {
        # conf/config_data_collection.yaml
        "seed": 0,
        "use_vr": False,
        "data_path": "data",
        "show_gui": False,
        "cameras": cameras_config(image_sizes),
        "robot": robot_config(),
        "scene": scene_config(scene),
        # conf/env/play_table_env.yaml; the official evaluation renders with EGL.
        "env": {
            "_target_": "calvin_env.envs.play_table_env.PlayTableSimEnv",
            "_recursive_": False,
            "cameras": "${cameras}",
            "seed": 0,
            "bullet_time_step": float(PHYSICS_HZ),
            "use_vr": "${use_vr}",
            "show_gui": False,
            "robot_cfg": "${robot}",
            "scene_cfg": "${scene}",
            "use_scene_info": False,
            "use_egl": True,
            "control_freq": CONTROL_HZ,
        },
    }


# ---- a small YAML writer (PyYAML is not a dependency) -----------------------------------------
# Strings YAML 1.1 would read as booleans or null, which must be quoted.
_YAML_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"}
_PLAIN = re.compile(r"[A-Za-z_$][A-Za-z0-9_./${}\-]*")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return yaml_float(value)
    if isinstance(value, str):
        plain = _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS
        return value if plain else json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as YAML")


def to_yaml(config: Mapping[str, Any], indent: int = 0) -> str:
    """Block-style YAML of nested dicts whose leaves are bools, numbers, strings or lists."""
    lines = []
    for key, value in config.items():
        if not _PLAIN.fullmatch(key):
            raise ValueError(f"YAML key {key!r} needs quoting, which this writer does not do")
        if isinstance(value, Mapping) and value:
            lines.append(f"{' ' * indent}{key}:")
            lines.append(to_yaml(value, indent + 2).rstrip("\n"))
        else:
            lines.append(f"{' ' * indent}{key}: {'{}' if isinstance(value, Mapping) else _scalar(value)}")
    return "\n".join(lines) + "\n"


def write_render_config(
    split_dir: str | Path, scene: str, image_sizes: Mapping[str, tuple[int, int]]
) -> Path:
    """Write ``<split_dir>/.hydra/merged_config.yaml`` atomically.

    Args:
        split_dir: The split directory (CALVIN's evaluation reads ``validation/``).
        scene: The scene its frames were recorded in.
        image_sizes: (height, width) of the ``"static"`` and ``"gripper"`` images.

    Returns:
        The path written.
    """
    path = Path(split_dir) / MERGED_CONFIG_FILE
    header = (
        f"# calvin_env configuration of scene {scene} with the cameras of these frames, written by "
        "rftf-gym (rftf_gym/data/render_config.py):\n"
        "# calvin_env.envs.play_table_env.get_env(<this split>) builds the simulator from it.\n"
    )
    atomic_write_text(path, header + to_yaml(render_config(scene, image_sizes)))
    return path
