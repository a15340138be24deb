"""The CALVIN task oracle: which of the 34 tasks happened between two states.

A task is a change between the ``get_info()`` at the start of an instruction and the one now.
The rules, their parameters and the task order mirror the official
``calvin_env/conf/tasks/new_playtable_tasks.yaml`` and the base rules of
``calvin_env/envs/tasks.py`` (class ``Tasks``); each rule below cites the official function it
re-implements. The module is pure: it reads the info dicts described in `rftf_gym.backend` and
imports no simulator, so both backends share it.

Contacts are tuples in pybullet's ``getContactPoints`` layout seen from the object itself:
index 2 is the other body's uid and index 4 the other body's link.

Example::

    >>> from rftf_gym.tasks import completed_tasks, task_succeeded
    >>> task_succeeded("open_drawer", start_info, end_info)  # doctest: +SKIP
    True
    >>> completed_tasks(start_info, end_info)  # doctest: +SKIP
    {'open_drawer'}
"""

from __future__ import annotations

import functools
import math

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from rftf_gym.conventions import BLOCKS, COLORS

Info = Mapping[str, Any]


@dataclass(frozen=True)
class TaskSpec:
    """One row of the official task yaml: a base rule and its parameters.

    Attributes:
        rule: name of the official base rule (``rotate_object``, ``push_object``,
            ``move_door_rel``, ``lift_object``, ``place_object``, ``stack_objects``,
            ``unstack_objects``, ``toggle_light`` or ``push_object_into``).
        params: keyword arguments of that rule.
    """

    rule: str
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        # Read-only view so the shared registry cannot be edited by accident.
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


# ---------------------------------------------------------------------------------------------
# Rotation maths (numpy only; equal to scipy's Rotation.from_quat / inv / as_euler("xyz")).
# ---------------------------------------------------------------------------------------------


def _unit_quat(quat: Sequence[float] | np.ndarray) -> tuple[float, float, float, float]:
    """A quaternion (x, y, z, w) as four plain floats of unit norm.

    Plain floats because the oracle runs on every env step, where numpy's per-call overhead on
    4-element arrays dominated its cost.
    """
    values = quat if isinstance(quat, (tuple, list)) else np.asarray(quat, dtype=np.float64).reshape(-1)
    q = [float(v) for v in values]
    if len(q) != 4 or not all(math.isfinite(v) for v in q):
        raise ValueError(f"quat must be 4 finite numbers (x, y, z, w), got {quat!r}")
    norm = math.sqrt(sum(v * v for v in q))
    if norm == 0.0:
        raise ValueError("quat must not be zero")
    return q[0] / norm, q[1] / norm, q[2] / norm, q[3] / norm


def quat_to_matrix(quat: Sequence[float] | np.ndarray) -> np.ndarray:
    """Rotation matrix of a quaternion in pybullet's (x, y, z, w) order.

    Args:
        quat: four numbers (x, y, z, w); normalised here, as scipy's ``from_quat`` does.

    Returns:
        A (3, 3) rotation matrix.

    Raises:
        ValueError: not four finite numbers, or a zero quaternion.
    """
    x, y, z, w = _unit_quat(quat)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_euler_xyz(matrix: np.ndarray) -> np.ndarray:
    """Extrinsic x-y-z Euler angles (radians) of a rotation matrix, as scipy's ``as_euler("xyz")``.

    The matrix is ``Rz(c) @ Ry(b) @ Rx(a)``; ``b`` lies in [-pi/2, pi/2] and ``a``, ``c`` in
    [-pi, pi]. At gimbal lock (``|b| = pi/2``) only ``a - c`` or ``a + c`` is defined; like
    scipy, ``c`` is then set to 0.

    Args:
        matrix: a (3, 3) rotation matrix.

    Returns:
        ``np.array([a, b, c])`` in radians.
    """
    m = np.asarray(matrix, dtype=np.float64)
    cos_b = np.hypot(m[0, 0], m[1, 0])
    b = np.arctan2(-m[2, 0], cos_b)
    if cos_b > 1e-7:
        a = np.arctan2(m[2, 1], m[2, 2])
        c = np.arctan2(m[1, 0], m[0, 0])
    elif m[2, 0] < 0:  # b = +pi/2: m[0, 1] = sin(a - c), m[1, 1] = cos(a - c)
        a, c = np.arctan2(m[0, 1], m[1, 1]), 0.0
    else:  # b = -pi/2: m[0, 1] = -sin(a + c), m[1, 1] = cos(a + c)
        a, c = np.arctan2(-m[0, 1], m[1, 1]), 0.0
    return np.array([a, b, c])


def relative_euler_xyz_deg(
    start_quat: Sequence[float] | np.ndarray, end_quat: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Euler angles (degrees, extrinsic xyz) of the rotation that takes start to end.

    This is ``R.from_quat(end) * R.from_quat(start).inv()`` followed by
    ``as_euler("xyz", degrees=True)`` in the official ``Tasks.rotate_object``.

    Args:
        start_quat: start orientation, (x, y, z, w).
        end_quat: end orientation, (x, y, z, w).

    Returns:
        ``np.array([x, y, z])`` in degrees.
    """
    # Quaternion product end * conj(start) in plain floats (this runs on every env step), then
    # only the matrix entries the Euler extraction reads.
    x1, y1, z1, w1 = _unit_quat(end_quat)
    x0, y0, z0, w0 = _unit_quat(start_quat)
    x0, y0, z0 = -x0, -y0, -z0
    x = w1 * x0 + x1 * w0 + y1 * z0 - z1 * y0
    y = w1 * y0 - x1 * z0 + y1 * w0 + z1 * x0
    z = w1 * z0 + x1 * y0 - y1 * x0 + z1 * w0
    w = w1 * w0 - x1 * x0 - y1 * y0 - z1 * z0
    m00, m10, m20 = 1 - 2 * (y * y + z * z), 2 * (x * y + z * w), 2 * (x * z - y * w)
    m21, m22 = 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)
    m01, m11 = 2 * (x * y - z * w), 1 - 2 * (x * x + z * z)
    cos_b = math.hypot(m00, m10)
    b = math.atan2(-m20, cos_b)
    if cos_b > 1e-7:
        a, c = math.atan2(m21, m22), math.atan2(m10, m00)
    elif m20 < 0:
        a, c = math.atan2(m01, m11), 0.0
    else:
        a, c = math.atan2(-m01, m11), 0.0
    return np.degrees(np.array([a, b, c]))


# ---------------------------------------------------------------------------------------------
# Small readers of the info dict.
# ---------------------------------------------------------------------------------------------


def _vec(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float64).reshape(-1)


def _scalar(value: Any) -> float:
    # Official doors report a float; accept a length-1 array or list too.
    return float(_vec(value)[0])


def _contact_bodies(contacts: Iterable[Sequence[Any]]) -> set[int]:
    return {int(c[2]) for c in contacts}


def _contact_links(contacts: Iterable[Sequence[Any]]) -> set[tuple[int, int]]:
    return {(int(c[2]), int(c[4])) for c in contacts}


def _robot_uid(info: Info) -> int:
    return int(info["robot_info"]["uid"])


def _movable(info: Info, obj_name: str) -> Mapping[str, Any]:
    return info["scene_info"]["movable_objects"][obj_name]


def _fixed_link(info: Info, body: str, link: str) -> tuple[int, int]:
    fixed = info["scene_info"]["fixed_objects"][body]
    return int(fixed["uid"]), int(fixed["links"][link])


# ---------------------------------------------------------------------------------------------
# The base rules (official calvin_env/envs/tasks.py, class Tasks).
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _relative_euler_cached(start_quat: tuple[float, ...], end_quat: tuple[float, ...]) -> tuple[float, ...]:
    # The left and right rotate tasks of a block ask for the same rotation on every env step.
    return tuple(float(v) for v in relative_euler_xyz_deg(start_quat, end_quat))


def _rotate_object(
    start: Info,
    end: Info,
    *,
    obj_name: str,
    z_degrees: float,
    x_y_threshold: float = 30.0,
    z_threshold: float = 180.0,
    movement_threshold: float = 0.1,
) -> bool:
    # Tasks.rotate_object: relative rotation end * start^-1 as xyz Euler degrees; the block may
    # move at most 0.1 m and must touch something besides the robot at the end.
    obj_start, obj_end = _movable(start, obj_name), _movable(end, obj_name)
    moved = np.linalg.norm(_vec(obj_end["current_pos"]) - _vec(obj_start["current_pos"]))
    if moved > movement_threshold:
        return False
    if not _contact_bodies(obj_end["contacts"]) - {_robot_uid(start)}:
        return False
    x, y, z = _relative_euler_cached(tuple(obj_start["current_orn"]), tuple(obj_end["current_orn"]))
    tilt_ok = abs(x) < x_y_threshold and abs(y) < x_y_threshold
    if z_degrees > 0:
        return bool(z_degrees < z < z_threshold and tilt_ok)
    return bool(z_degrees > z > -z_threshold and tilt_ok)


def _push_object(
    start: Info, end: Info, *, obj_name: str, x_direction: float, y_direction: float
) -> bool:
    # Tasks.push_object: non-robot (body, link) contacts exist at start and end and the start
    # ones are a subset of the end ones; then the signed displacement along the axis beats it.
    # The cheap displacement test goes first: the rule is a conjunction, and the env evaluates
    # every task on every step.
    obj_start, obj_end = _movable(start, obj_name), _movable(end, obj_name)
    diff = _vec(obj_end["current_pos"]) - _vec(obj_start["current_pos"])
    axis, threshold = (0, x_direction) if x_direction != 0 else (1, y_direction)
    if not (diff[axis] > threshold if threshold > 0 else diff[axis] < threshold):
        return False
    robot = _robot_uid(start)
    start_contacts = {c for c in _contact_links(obj_start["contacts"]) if c[0] != robot}
    end_contacts = {c for c in _contact_links(obj_end["contacts"]) if c[0] != robot}
    return bool(start_contacts and end_contacts and start_contacts <= end_contacts)


def _move_door_rel(start: Info, end: Info, *, joint_name: str, threshold: float) -> bool:
    # Tasks.move_door_rel: the joint changed by more than the signed threshold.
    change = _scalar(end["scene_info"]["doors"][joint_name]["current_state"]) - _scalar(
        start["scene_info"]["doors"][joint_name]["current_state"]
    )
    return bool(0 < threshold < change or 0 > threshold > change)


def _lift_object(
    start: Info,
    end: Info,
    *,
    obj_name: str,
    z_direction: float,
    surface_body: str,
    surface_link: str,
) -> bool:
    # Tasks.lift_object: rose more than z_direction, touches only the robot at the end, and
    # touched the given surface link at the start (robot contact at start is allowed).
    obj_start, obj_end = _movable(start, obj_name), _movable(end, obj_name)
    rise = _vec(obj_end["current_pos"])[2] - _vec(obj_start["current_pos"])[2]
    if rise <= z_direction:  # cheap test first (see _push_object)
        return False
    on_surface = _fixed_link(start, surface_body, surface_link) in _contact_links(
        obj_start["contacts"]
    )
    held_only = _contact_bodies(obj_end["contacts"]) == {_robot_uid(start)}
    return bool(rise > z_direction and held_only and on_surface)


def _place_object(start: Info, end: Info, *, dest_body: str, dest_link: str) -> bool:
    # Tasks.place_object: at the start the robot touches exactly one body, a block touching only
    # the robot; at the end the robot no longer touches it and it touches the destination link.
    robot = _robot_uid(start)
    robot_start = _contact_bodies(start["robot_info"]["contacts"])
    if len(robot_start) != 1:
        return False
    (obj_uid,) = robot_start
    if obj_uid in _contact_bodies(end["robot_info"]["contacts"]):
        return False
    names = [
        name
        for name, obj in start["scene_info"]["movable_objects"].items()
        if int(obj["uid"]) == obj_uid
    ]
    if len(names) != 1:
        return False
    obj_start_bodies = _contact_bodies(_movable(start, names[0])["contacts"])
    end_links = _contact_links(_movable(end, names[0])["contacts"])
    return obj_start_bodies == {robot} and _fixed_link(end, dest_body, dest_link) in end_links


def _slow(obj: Mapping[str, Any], max_vel: float) -> bool:
    return bool(
        np.all(np.abs(_vec(obj["current_lin_vel"])) < max_vel)
        and np.all(np.abs(_vec(obj["current_ang_vel"])) < max_vel)
    )


def _block_uids(info: Info) -> set[int]:
    return {int(obj["uid"]) for obj in info["scene_info"]["movable_objects"].values()}


def _stack_objects(start: Info, end: Info, *, max_vel: float = 1.0) -> bool:
    # Tasks.stack_objects: some block touches no block at the start and touches blocks only
    # (at least one) at the end, with every end velocity component below max_vel.
    blocks = _block_uids(start)
    for name in start["scene_info"]["movable_objects"]:
        obj_end = _movable(end, name)
        start_bodies = _contact_bodies(_movable(start, name)["contacts"])
        end_bodies = _contact_bodies(obj_end["contacts"])
        if not blocks & start_bodies and blocks & end_bodies and not end_bodies - blocks:
            if _slow(obj_end, max_vel):
                return True
    return False


def _unstack_objects(start: Info, end: Info, *, max_vel: float = 1.0) -> bool:
    # Tasks.unstack_objects: some block touches blocks only (at least one) at the start and no
    # block at the end; the official rule checks the *start* velocities against max_vel.
    blocks = _block_uids(start)
    for name in start["scene_info"]["movable_objects"]:
        obj_start = _movable(start, name)
        start_bodies = _contact_bodies(obj_start["contacts"])
        end_bodies = _contact_bodies(_movable(end, name)["contacts"])
        if blocks & start_bodies and not start_bodies - blocks and not blocks & end_bodies:
            if _slow(obj_start, max_vel):
                return True
    return False


def _toggle_light(
    start: Info, end: Info, *, light_name: str, start_state: int, end_state: int
) -> bool:
    # Tasks.toggle_light: the logical light state went from start_state to end_state.
    lights_start = start["scene_info"]["lights"][light_name]
    lights_end = end["scene_info"]["lights"][light_name]
    return bool(
        _scalar(lights_start["logical_state"]) == start_state
        and _scalar(lights_end["logical_state"]) == end_state
    )


def _push_object_into(
    start: Info,
    end: Info,
    *,
    obj_names: tuple[str, ...],
    src_body: str,
    src_link: str,
    dest_body: str,
    dest_link: str,
) -> bool:
    # Tasks.push_object_into: some block's only start contact is the source link and at the end
    # it touches the destination link. The official code tests `robot_uid not in` a set of
    # (uid, link) pairs, which never matches, so in effect the robot is excluded at the start
    # only (through "exactly one start contact"); we keep that official behaviour.
    src = _fixed_link(start, src_body, src_link)
    dest = _fixed_link(end, dest_body, dest_link)
    for name in obj_names:
        start_links = _contact_links(_movable(start, name)["contacts"])
        end_links = _contact_links(_movable(end, name)["contacts"])
        if start_links == {src} and dest in end_links:
            return True
    return False


_RULES: Mapping[str, Callable[..., bool]] = MappingProxyType(
    {
        "rotate_object": _rotate_object,
        "push_object": _push_object,
        "move_door_rel": _move_door_rel,
        "lift_object": _lift_object,
        "place_object": _place_object,
        "stack_objects": _stack_objects,
        "unstack_objects": _unstack_objects,
        "toggle_light": _toggle_light,
        "push_object_into": _push_object_into,
    }
)


# ---------------------------------------------------------------------------------------------
# The 34 tasks, in the order of the official new_playtable_tasks.yaml.
# ---------------------------------------------------------------------------------------------


def _rotate(obj: str, degrees: float) -> TaskSpec:
    return TaskSpec("rotate_object", {"obj_name": obj, "z_degrees": degrees})


def _push(obj: str, dx: float) -> TaskSpec:
    return TaskSpec("push_object", {"obj_name": obj, "x_direction": dx, "y_direction": 0.0})


def _door(joint: str, threshold: float) -> TaskSpec:
    return TaskSpec("move_door_rel", {"joint_name": joint, "threshold": threshold})


def _lift(obj: str, rise: float, link: str) -> TaskSpec:
    params = {"obj_name": obj, "z_direction": rise, "surface_body": "table", "surface_link": link}
    return TaskSpec("lift_object", params)


def _place(link: str) -> TaskSpec:
    return TaskSpec("place_object", {"dest_body": "table", "dest_link": link})


def _light(light: str, before: int, after: int) -> TaskSpec:
    return TaskSpec(
        "toggle_light", {"light_name": light, "start_state": before, "end_state": after}
    )


TASK_SPECS: Mapping[str, TaskSpec] = MappingProxyType(
    {
        "rotate_red_block_right": _rotate("block_red", -60),
        "rotate_red_block_left": _rotate("block_red", 60),
        "rotate_blue_block_right": _rotate("block_blue", -60),
        "rotate_blue_block_left": _rotate("block_blue", 60),
        "rotate_pink_block_right": _rotate("block_pink", -60),
        "rotate_pink_block_left": _rotate("block_pink", 60),
        "push_red_block_right": _push("block_red", 0.1),
        "push_red_block_left": _push("block_red", -0.1),
        "push_blue_block_right": _push("block_blue", 0.1),
        "push_blue_block_left": _push("block_blue", -0.1),
        "push_pink_block_right": _push("block_pink", 0.1),
        "push_pink_block_left": _push("block_pink", -0.1),
        "move_slider_left": _door("base__slide", 0.15),
        "move_slider_right": _door("base__slide", -0.15),
        "open_drawer": _door("base__drawer", 0.12),
        "close_drawer": _door("base__drawer", -0.12),
        "lift_red_block_table": _lift("block_red", 0.05, "base_link"),
        "lift_red_block_slider": _lift("block_red", 0.03, "plank_link"),
        "lift_red_block_drawer": _lift("block_red", 0.05, "drawer_link"),
        "lift_blue_block_table": _lift("block_blue", 0.05, "base_link"),
        "lift_blue_block_slider": _lift("block_blue", 0.03, "plank_link"),
        "lift_blue_block_drawer": _lift("block_blue", 0.05, "drawer_link"),
        "lift_pink_block_table": _lift("block_pink", 0.05, "base_link"),
        "lift_pink_block_slider": _lift("block_pink", 0.03, "plank_link"),
        "lift_pink_block_drawer": _lift("block_pink", 0.05, "drawer_link"),
        "place_in_slider": _place("plank_link"),
        "place_in_drawer": _place("drawer_link"),
        "stack_block": TaskSpec("stack_objects", {}),
        "unstack_block": TaskSpec("unstack_objects", {}),
        "turn_on_lightbulb": _light("lightbulb", 0, 1),
        "turn_off_lightbulb": _light("lightbulb", 1, 0),
        "turn_on_led": _light("led", 0, 1),
        "turn_off_led": _light("led", 1, 0),
        "push_into_drawer": TaskSpec(
            "push_object_into",
            {
                "obj_names": BLOCKS,
                "src_body": "table",
                "src_link": "base_link",
                "dest_body": "table",
                "dest_link": "drawer_link",
            },
        ),
    }
)

TASK_NAMES: tuple[str, ...] = tuple(TASK_SPECS)


def _opposite_pairs() -> dict[str, str]:
    pairs = [("move_slider_left", "move_slider_right"), ("open_drawer", "close_drawer"),
             ("turn_on_lightbulb", "turn_off_lightbulb"), ("turn_on_led", "turn_off_led"), ("stack_block", "unstack_block")]
    for color in COLORS:
        pairs += [(f"rotate_{color}_block_right", f"rotate_{color}_block_left"), (f"push_{color}_block_right", f"push_{color}_block_left")]
    return {**dict(pairs), **{b: a for a, b in pairs}}


OPPOSITE_TASKS: Mapping[str, str] = MappingProxyType(_opposite_pairs())
"""Each task whose success undoes another's: the same rule of new_playtable_tasks.yaml with the
opposite sign (rotations, pushes, the slider and the drawer), the light states swapped, or stacking
against unstacking. Doing one moves the scene away from the other's goal, so a demonstration of one
is a demonstration of the other's progress undone (the value model's hardest wrong instruction)."""


def validate_task(name: str) -> str:
    """Check that a task name is one of the 34.

    Args:
        name: a task name such as ``"open_drawer"``.

    Returns:
        The name, unchanged.

    Raises:
        ValueError: the name is not a known task; the message lists the valid names.
    """
    if not isinstance(name, str) or name not in TASK_SPECS:
        raise ValueError(f"unknown task {name!r}; valid tasks are: {', '.join(TASK_NAMES)}")
    return name


def task_succeeded(task: str, start_info: Info, end_info: Info) -> bool:
    """Whether one task happened between two states.

    Args:
        task: one of `TASK_NAMES`.
        start_info: ``get_info()`` at the start of the instruction.
        end_info: ``get_info()`` now.

    Returns:
        True when the official rule for the task holds.

    Raises:
        ValueError: unknown task.
    """
    spec = TASK_SPECS[validate_task(task)]
    return _RULES[spec.rule](start_info, end_info, **spec.params)


def completed_tasks(
    start_info: Info, end_info: Info, tasks: Iterable[str] | None = None
) -> set[str]:
    """All tasks that happened between two states (official ``Tasks.get_task_info``).

    Args:
        start_info: ``get_info()`` at the start of the instruction.
        end_info: ``get_info()`` now.
        tasks: only check these tasks (``get_task_info_for_set``); None checks all 34 and a
            single string is one task.

    Returns:
        The names of the tasks whose rule holds.

    Raises:
        ValueError: an unknown name in ``tasks``.
    """
    if isinstance(tasks, str):
        tasks = (tasks,)
    names = TASK_NAMES if tasks is None else tuple(validate_task(t) for t in tasks)
    return {name for name in names if task_succeeded(name, start_info, end_info)}
