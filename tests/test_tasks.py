"""The 34-task oracle on synthetic info dicts: one edit that fires each task, one just below.

The info dicts follow the official ``get_info()`` structure (see `rftf_gym.backend`); contacts
are pybullet ``getContactPoints`` tuples (index 2 other uid, index 4 other link).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from rftf_gym.tasks import (
    OPPOSITE_TASKS,
    TASK_NAMES,
    TASK_SPECS,
    completed_tasks,
    matrix_to_euler_xyz,
    quat_to_matrix,
    relative_euler_xyz_deg,
    task_succeeded,
    validate_task,
)

ROBOT, TABLE = 1, 2
BLOCK_UIDS = {"block_red": 3, "block_blue": 4, "block_pink": 5}
# Link ids as calvin_env's FixedObject numbers them: base_link is pybullet's base, -1.
LINKS = {"base_link": -1, "slide_link": 0, "plank_link": 1, "drawer_link": 2, "button_link": 3,
         "switch_link": 4, "light_link": 5, "led_link": 6}
TABLE_TOP = (TABLE, LINKS["base_link"])
SHELF = (TABLE, LINKS["plank_link"])
DRAWER = (TABLE, LINKS["drawer_link"])
GRIPPER_LINK = 10
COLORS = ("red", "blue", "pink")

Edit = Callable[[dict, dict], None]


# ----------------------------------------------------------------------------- info builder


def contact(own: int, other: int, other_link: int = -1) -> tuple:
    """A pybullet getContactPoints tuple of `own` touching `other`'s `other_link`."""
    return (0, own, other, -1, other_link, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0),
            0.0, 1.0, 0.0, (1.0, 0.0, 0.0), 0.0, (0.0, 1.0, 0.0))


def yaw_quat(degrees: float) -> tuple[float, float, float, float]:
    half = math.radians(degrees) / 2
    return (0.0, 0.0, math.sin(half), math.cos(half))


def make_info() -> dict[str, Any]:
    """A neutral start: red and blue on the table top, pink on the shelf, nothing held.

    Slider right (0), drawer closed (0), lights off, blocks at rest with yaw 90 deg.
    """
    positions = {"block_red": (0.05, -0.12, 0.46), "block_blue": (0.23, -0.12, 0.46),
                 "block_pink": (-0.24, 0.09, 0.46)}
    surfaces = {"block_red": TABLE_TOP, "block_blue": TABLE_TOP, "block_pink": SHELF}
    movable = {}
    for name, uid in BLOCK_UIDS.items():
        movable[name] = {
            "uid": uid,
            "current_pos": positions[name],
            "current_orn": yaw_quat(90.0),
            "current_lin_vel": (0.0, 0.0, 0.0),
            "current_ang_vel": (0.0, 0.0, 0.0),
            "contacts": (contact(uid, *surfaces[name]),),
        }
    return {
        "robot_info": {"uid": ROBOT, "tcp_pos": (0.026, -0.231, 0.571),
                       "tcp_orn": (3.09, -0.03, 1.5), "gripper_opening_width": 0.08,
                       "arm_joint_states": [0.0] * 7, "gripper_action": 1, "contacts": ()},
        "scene_info": {
            "fixed_objects": {"table": {"uid": TABLE, "links": dict(LINKS), "contacts": ()}},
            "movable_objects": movable,
            "doors": {"base__slide": {"current_state": 0.0},
                      "base__drawer": {"current_state": 0.0}},
            "buttons": {"base__button": {"joint_state": 0.0, "logical_state": 0}},
            "switches": {"base__switch": {"joint_state": 0.0, "logical_state": 0}},
            "lights": {"lightbulb": {"logical_state": 0}, "led": {"logical_state": 0}},
        },
    }


def block(info: dict, name: str) -> dict:
    return info["scene_info"]["movable_objects"][name]


def touch(info: dict, name: str, *others: tuple[int, int]) -> None:
    """Replace a block's contacts by contacts with the given (uid, link) pairs."""
    uid = BLOCK_UIDS[name]
    block(info, name)["contacts"] = tuple(contact(uid, other, link) for other, link in others)


def hold(info: dict, name: str) -> None:
    """The robot grasps the block in the air: each touches only the other."""
    touch(info, name, (ROBOT, GRIPPER_LINK))
    info["robot_info"]["contacts"] = (contact(ROBOT, BLOCK_UIDS[name]),)


def release(info: dict) -> None:
    info["robot_info"]["contacts"] = ()


def shift(info: dict, name: str, dx: float = 0.0, dy: float = 0.0, dz: float = 0.0) -> None:
    x, y, z = block(info, name)["current_pos"]
    block(info, name)["current_pos"] = (x + dx, y + dy, z + dz)


def set_door(info: dict, joint: str, value: float) -> None:
    info["scene_info"]["doors"][joint]["current_state"] = value


def set_light(info: dict, light: str, value: int) -> None:
    info["scene_info"]["lights"][light]["logical_state"] = value


def run_edit(edit: Edit) -> tuple[dict, dict]:
    start = make_info()
    end = make_info()
    edit(start, end)
    return start, end


# ----------------------------------------------------------------------------- per-task edits


def rotate(name: str, degrees: float) -> Edit:
    def edit(start: dict, end: dict) -> None:
        block(end, name)["current_orn"] = yaw_quat(90.0 + degrees)

    return edit


def push(name: str, dx: float) -> Edit:
    return lambda start, end: shift(end, name, dx=dx)


def door(joint: str, start_value: float, change: float) -> Edit:
    def edit(start: dict, end: dict) -> None:
        set_door(start, joint, start_value)
        set_door(end, joint, start_value + change)

    return edit


def lift(name: str, surface: tuple[int, int], rise: float) -> Edit:
    def edit(start: dict, end: dict) -> None:
        touch(start, name, surface)
        touch(end, name, surface)
        shift(end, name, dz=rise)
        hold(end, name)

    return edit


def place(surface: tuple[int, int]) -> Edit:
    def edit(start: dict, end: dict) -> None:
        hold(start, "block_red")
        shift(start, "block_red", dz=0.1)
        touch(end, "block_red", surface)
        release(end)

    return edit


def stack(end_speed: float) -> Edit:
    def edit(start: dict, end: dict) -> None:
        touch(end, "block_red", (BLOCK_UIDS["block_blue"], -1))
        touch(end, "block_blue", TABLE_TOP, (BLOCK_UIDS["block_red"], -1))
        shift(end, "block_red", dx=0.18, dz=0.04)
        block(end, "block_red")["current_lin_vel"] = (0.0, 0.0, -end_speed)

    return edit


def unstack(end_surfaces: tuple[tuple[int, int], ...]) -> Edit:
    def edit(start: dict, end: dict) -> None:
        touch(start, "block_red", (BLOCK_UIDS["block_blue"], -1))
        touch(start, "block_blue", TABLE_TOP, (BLOCK_UIDS["block_red"], -1))
        touch(end, "block_red", *end_surfaces)

    return edit


def light(name: str, before: int, after: int) -> Edit:
    def edit(start: dict, end: dict) -> None:
        set_light(start, name, before)
        set_light(end, name, after)

    return edit


def into_drawer(robot_at_start: bool) -> Edit:
    def edit(start: dict, end: dict) -> None:
        if robot_at_start:
            touch(start, "block_red", TABLE_TOP, (ROBOT, GRIPPER_LINK))
        touch(end, "block_red", DRAWER)
        shift(end, "block_red", dy=-0.2, dz=-0.1)

    return edit


def _cases() -> dict[str, tuple[Edit, Edit]]:
    """task -> (edit that must fire it, edit just below the threshold that must not)."""
    cases: dict[str, tuple[Edit, Edit]] = {}
    for color in COLORS:
        name = f"block_{color}"
        cases[f"rotate_{color}_block_right"] = (rotate(name, -70), rotate(name, -50))
        cases[f"rotate_{color}_block_left"] = (rotate(name, 70), rotate(name, 50))
        cases[f"push_{color}_block_right"] = (push(name, 0.11), push(name, 0.09))
        cases[f"push_{color}_block_left"] = (push(name, -0.11), push(name, -0.09))
        cases[f"lift_{color}_block_table"] = (lift(name, TABLE_TOP, 0.06),
                                              lift(name, TABLE_TOP, 0.04))
        cases[f"lift_{color}_block_slider"] = (lift(name, SHELF, 0.035), lift(name, SHELF, 0.025))
        cases[f"lift_{color}_block_drawer"] = (lift(name, DRAWER, 0.06), lift(name, DRAWER, 0.04))
    cases["move_slider_left"] = (door("base__slide", 0.0, 0.16), door("base__slide", 0.0, 0.14))
    cases["move_slider_right"] = (door("base__slide", 0.28, -0.16),
                                  door("base__slide", 0.28, -0.14))
    cases["open_drawer"] = (door("base__drawer", 0.0, 0.13), door("base__drawer", 0.0, 0.11))
    cases["close_drawer"] = (door("base__drawer", 0.22, -0.13), door("base__drawer", 0.22, -0.11))
    # Place: the miss puts the block down on the wrong surface.
    cases["place_in_slider"] = (place(SHELF), place(TABLE_TOP))
    cases["place_in_drawer"] = (place(DRAWER), place(TABLE_TOP))
    # Stack: the miss lands too fast (velocity limit 1, official Tasks.stack_objects).
    cases["stack_block"] = (stack(0.5), stack(1.5))
    # Unstack: the miss leaves the block still touching the other block.
    cases["unstack_block"] = (unstack((TABLE_TOP,)),
                              unstack((TABLE_TOP, (BLOCK_UIDS["block_blue"], -1))))
    cases["turn_on_lightbulb"] = (light("lightbulb", 0, 1), light("lightbulb", 1, 1))
    cases["turn_off_lightbulb"] = (light("lightbulb", 1, 0), light("lightbulb", 0, 0))
    cases["turn_on_led"] = (light("led", 0, 1), light("led", 1, 1))
    cases["turn_off_led"] = (light("led", 1, 0), light("led", 0, 0))
    # Push into drawer: the miss has the robot touching the block at the start.
    cases["push_into_drawer"] = (into_drawer(robot_at_start=False),
                                 into_drawer(robot_at_start=True))
    return cases


CASES = _cases()


def test_every_task_has_cases() -> None:
    assert set(CASES) == set(TASK_NAMES)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_edit_fires_task(task: str) -> None:
    start, end = run_edit(CASES[task][0])
    assert task_succeeded(task, start, end)
    assert task in completed_tasks(start, end)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_edit_below_threshold_does_not_fire(task: str) -> None:
    start, end = run_edit(CASES[task][1])
    assert not task_succeeded(task, start, end)
    assert task not in completed_tasks(start, end)


def test_fire_edits_complete_only_the_expected_tasks() -> None:
    # Guards against rules that leak: each edit fires its task and only related ones.
    start, end = run_edit(CASES["open_drawer"][0])
    assert completed_tasks(start, end) == {"open_drawer"}
    start, end = run_edit(CASES["push_red_block_right"][0])
    assert completed_tasks(start, end) == {"push_red_block_right"}
    start, end = run_edit(CASES["rotate_blue_block_left"][0])
    assert completed_tasks(start, end) == {"rotate_blue_block_left"}
    start, end = run_edit(CASES["lift_pink_block_slider"][0])
    assert completed_tasks(start, end) == {"lift_pink_block_slider"}
    start, end = run_edit(CASES["place_in_drawer"][0])
    assert completed_tasks(start, end) == {"place_in_drawer"}


# ----------------------------------------------------------------------------- contact rules


def test_identical_infos_complete_nothing() -> None:
    assert completed_tasks(make_info(), make_info()) == set()
    busy = make_info()
    hold(busy, "block_red")
    touch(busy, "block_pink", (BLOCK_UIDS["block_blue"], -1))
    touch(busy, "block_blue", TABLE_TOP, (BLOCK_UIDS["block_pink"], -1))
    set_light(busy, "led", 1)
    set_door(busy, "base__drawer", 0.22)
    assert completed_tasks(busy, copy.deepcopy(busy)) == set()


def test_rotate_rules() -> None:
    def check(edit_end: Callable[[dict], None], expected: bool) -> None:
        start, end = make_info(), make_info()
        block(end, "block_red")["current_orn"] = yaw_quat(90.0 + 70.0)
        edit_end(end)
        assert task_succeeded("rotate_red_block_left", start, end) is expected

    check(lambda end: None, True)
    check(lambda end: shift(end, "block_red", dx=0.09), True)
    check(lambda end: shift(end, "block_red", dx=0.12), False)  # moved more than 0.1 m
    check(lambda end: shift(end, "block_red", dx=0.06, dy=0.06, dz=0.06), False)  # norm 0.104
    check(lambda end: hold(end, "block_red"), False)  # touches only the robot at the end
    check(lambda end: touch(end, "block_red", TABLE_TOP, (ROBOT, GRIPPER_LINK)), True)
    check(lambda end: touch(end, "block_red", (BLOCK_UIDS["block_blue"], -1)), True)
    check(lambda end: touch(end, "block_red"), False)  # no contact at all

    # Tilt: relative rotation Rz(70) @ Rx(roll), i.e. euler xyz (roll, 0, 70); |x| must stay
    # below 30 degrees.
    def tilt(degrees: float) -> Callable[[dict], None]:
        def edit(end: dict) -> None:
            half = math.radians(degrees) / 2
            roll = np.array([math.sin(half), 0.0, 0.0, math.cos(half)])
            relative = quat_mul(np.array(yaw_quat(70.0)), roll)
            block(end, "block_red")["current_orn"] = quat_mul(relative, np.array(yaw_quat(90.0)))

        return edit

    check(tilt(25.0), True)
    check(tilt(35.0), False)


def test_rotate_measures_relative_rotation_from_any_start_yaw() -> None:
    start, end = make_info(), make_info()
    block(start, "block_blue")["current_orn"] = yaw_quat(170.0)
    block(end, "block_blue")["current_orn"] = yaw_quat(-120.0)  # +70 across the +-180 wrap
    assert completed_tasks(start, end) == {"rotate_blue_block_left"}
    block(end, "block_blue")["current_orn"] = tuple(-v for v in yaw_quat(-120.0))  # same rotation
    assert completed_tasks(start, end) == {"rotate_blue_block_left"}


def test_push_needs_surface_contact_at_start_and_end() -> None:
    start, end = make_info(), make_info()
    shift(end, "block_red", dx=0.15)
    hold(end, "block_red")  # carried through the air, touching only the robot
    assert not task_succeeded("push_red_block_right", start, end)

    start, end = make_info(), make_info()
    touch(start, "block_red")  # no start contact at all
    shift(end, "block_red", dx=0.15)
    assert not task_succeeded("push_red_block_right", start, end)

    # Start surface contacts must be a subset of the end ones: shelf -> table top fails.
    start, end = make_info(), make_info()
    shift(end, "block_pink", dx=0.15)
    touch(end, "block_pink", TABLE_TOP)
    assert not task_succeeded("push_pink_block_right", start, end)

    # Extra end contacts are fine, and the robot's contacts are ignored on both sides.
    start, end = make_info(), make_info()
    touch(start, "block_red", TABLE_TOP, (ROBOT, GRIPPER_LINK))
    touch(end, "block_red", TABLE_TOP, (BLOCK_UIDS["block_blue"], -1), (ROBOT, GRIPPER_LINK))
    shift(end, "block_red", dx=0.15)
    assert task_succeeded("push_red_block_right", start, end)


def test_push_ignores_y_movement() -> None:
    start, end = make_info(), make_info()
    shift(end, "block_red", dy=0.3)
    assert not {"push_red_block_right", "push_red_block_left"} & completed_tasks(start, end)


def test_lift_contact_rules() -> None:
    # Still touching the table top at the end: not lifted.
    start, end = run_edit(lift("block_red", TABLE_TOP, 0.06))
    touch(end, "block_red", (ROBOT, GRIPPER_LINK), TABLE_TOP)
    assert not task_succeeded("lift_red_block_table", start, end)
    # Lifted by something other than the robot (resting on another block).
    start, end = run_edit(lift("block_red", TABLE_TOP, 0.06))
    touch(end, "block_red", (BLOCK_UIDS["block_blue"], -1))
    assert not task_succeeded("lift_red_block_table", start, end)
    # The surface is the one at the start: a table-top block lifted is not a slider lift.
    start, end = run_edit(lift("block_red", TABLE_TOP, 0.06))
    assert completed_tasks(start, end) == {"lift_red_block_table"}
    # Already held at the start (robot and surface contacts) still counts, as officially.
    start, end = run_edit(lift("block_red", TABLE_TOP, 0.06))
    touch(start, "block_red", TABLE_TOP, (ROBOT, GRIPPER_LINK))
    assert task_succeeded("lift_red_block_table", start, end)


def test_place_contact_rules() -> None:
    # The robot still touches the block at the end.
    start, end = run_edit(place(SHELF))
    end["robot_info"]["contacts"] = (contact(ROBOT, BLOCK_UIDS["block_red"]),)
    assert not task_succeeded("place_in_slider", start, end)
    # The robot touched two bodies at the start (block and table).
    start, end = run_edit(place(SHELF))
    start["robot_info"]["contacts"] = (contact(ROBOT, BLOCK_UIDS["block_red"]),
                                       contact(ROBOT, TABLE))
    assert not task_succeeded("place_in_slider", start, end)
    # The held block also touched the table at the start.
    start, end = run_edit(place(SHELF))
    touch(start, "block_red", (ROBOT, GRIPPER_LINK), TABLE_TOP)
    assert not task_succeeded("place_in_slider", start, end)
    # The robot touched the table, not a block.
    start, end = run_edit(place(SHELF))
    start["robot_info"]["contacts"] = (contact(ROBOT, TABLE),)
    assert not task_succeeded("place_in_slider", start, end)
    # The dropped block may touch other things too, as long as it touches the shelf.
    start, end = run_edit(place(SHELF))
    touch(end, "block_red", SHELF, (BLOCK_UIDS["block_pink"], -1))
    assert task_succeeded("place_in_slider", start, end)


def test_stack_contact_rules() -> None:
    # Resting on a block and the table is not a stack.
    start, end = run_edit(stack(0.0))
    touch(end, "block_red", (BLOCK_UIDS["block_blue"], -1), TABLE_TOP)
    assert not task_succeeded("stack_block", start, end)
    # Touching a block at the start already (e.g. side by side) does not count.
    start, end = run_edit(stack(0.0))
    touch(start, "block_red", TABLE_TOP, (BLOCK_UIDS["block_blue"], -1))
    touch(start, "block_blue", TABLE_TOP, (BLOCK_UIDS["block_red"], -1))
    assert not task_succeeded("stack_block", start, end)
    # The angular velocity limit applies too.
    start, end = run_edit(stack(0.0))
    block(end, "block_red")["current_ang_vel"] = (0.0, 1.2, 0.0)
    assert not task_succeeded("stack_block", start, end)
    # Still held by the robot while touching the block below: not a stack.
    start, end = run_edit(stack(0.0))
    touch(end, "block_red", (BLOCK_UIDS["block_blue"], -1), (ROBOT, GRIPPER_LINK))
    assert not task_succeeded("stack_block", start, end)


def test_unstack_contact_rules() -> None:
    # The top block was also held at the start: it did not rest on blocks only.
    start, end = run_edit(unstack((TABLE_TOP,)))
    touch(start, "block_red", (BLOCK_UIDS["block_blue"], -1), (ROBOT, GRIPPER_LINK))
    assert not task_succeeded("unstack_block", start, end)
    # Lifted off and held in the air counts (no block contact at the end).
    start, end = run_edit(unstack(((ROBOT, GRIPPER_LINK),)))
    assert task_succeeded("unstack_block", start, end)
    # Official quirk: the velocity limit is checked on the start state.
    start, end = run_edit(unstack((TABLE_TOP,)))
    block(start, "block_red")["current_lin_vel"] = (1.5, 0.0, 0.0)
    assert not task_succeeded("unstack_block", start, end)


def test_push_into_drawer_rules() -> None:
    # Any of the three blocks counts.
    start, end = make_info(), make_info()
    touch(end, "block_blue", DRAWER)
    assert completed_tasks(start, end) == {"push_into_drawer"}
    # It must start on the table top only: a shelf block dropped in the drawer does not count.
    start, end = make_info(), make_info()
    touch(end, "block_pink", DRAWER)
    assert not task_succeeded("push_into_drawer", start, end)
    # Touching the table top and another block at the start does not count either.
    start, end = make_info(), make_info()
    touch(start, "block_red", TABLE_TOP, (BLOCK_UIDS["block_blue"], -1))
    touch(end, "block_red", DRAWER)
    assert not task_succeeded("push_into_drawer", start, end)
    # Official behaviour: robot contact at the end is not checked (the official membership test
    # compares a uid with (uid, link) pairs and never matches), so this still fires.
    start, end = make_info(), make_info()
    touch(end, "block_red", DRAWER, (ROBOT, GRIPPER_LINK))
    assert task_succeeded("push_into_drawer", start, end)


def test_lights_read_logical_state_only() -> None:
    start, end = make_info(), make_info()
    end["scene_info"]["switches"]["base__switch"]["joint_state"] = 0.088
    assert completed_tasks(start, end) == set()
    set_light(end, "lightbulb", 1)
    assert completed_tasks(start, end) == {"turn_on_lightbulb"}


# ----------------------------------------------------------------------------- input handling


def test_accepts_lists_arrays_and_numpy_scalars() -> None:
    start, end = make_info(), make_info()
    for info in (start, end):
        for obj in info["scene_info"]["movable_objects"].values():
            obj["current_pos"] = np.array(obj["current_pos"], dtype=np.float32)
            obj["current_orn"] = list(obj["current_orn"])
            obj["uid"] = np.int64(obj["uid"])
            obj["contacts"] = [list(c) for c in obj["contacts"]]
    set_door(start, "base__drawer", np.array([0.0]))
    set_door(end, "base__drawer", np.float32(0.13))
    set_light(end, "led", np.int64(1))
    shift(end, "block_red", dx=0.11)
    assert completed_tasks(start, end) == {"open_drawer", "turn_on_led", "push_red_block_right"}


def test_unknown_task_raises_with_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'open_the_drawer'.*close_drawer"):
        task_succeeded("open_the_drawer", make_info(), make_info())
    with pytest.raises(ValueError, match="unknown task"):
        completed_tasks(make_info(), make_info(), tasks=["open_drawer", "fly"])
    with pytest.raises(ValueError, match="unknown task"):
        validate_task(3)  # type: ignore[arg-type]
    assert validate_task("stack_block") == "stack_block"


def test_completed_tasks_filter() -> None:
    start, end = run_edit(CASES["open_drawer"][0])
    shift(end, "block_red", dx=0.11)
    assert completed_tasks(start, end, tasks=["open_drawer"]) == {"open_drawer"}
    assert completed_tasks(start, end, tasks="push_red_block_right") == {"push_red_block_right"}
    assert completed_tasks(start, end, tasks=[]) == set()
    assert completed_tasks(start, end) == {"open_drawer", "push_red_block_right"}


# ----------------------------------------------------------------------------- registry vs yaml

OFFICIAL_YAML = Path(__file__).resolve().parents[2] / (
    "shared/calvin_reference/calvin_env/conf/tasks/new_playtable_tasks.yaml"
)


def test_task_names() -> None:
    assert len(TASK_NAMES) == 34 == len(set(TASK_NAMES))
    assert TASK_NAMES[0] == "rotate_red_block_right" and TASK_NAMES[-1] == "push_into_drawer"


@pytest.mark.skipif(not OFFICIAL_YAML.exists(), reason="official calvin reference not present")
def test_registry_matches_official_yaml() -> None:
    yaml = pytest.importorskip("yaml")
    rows = yaml.safe_load(OFFICIAL_YAML.read_text())["tasks"]
    assert tuple(rows) == TASK_NAMES
    for name, (rule, *args) in rows.items():
        spec = TASK_SPECS[name]
        assert spec.rule == rule, name
        values = [list(v) if isinstance(v, tuple) else v for v in spec.params.values()]
        assert values == args, name


# ----------------------------------------------------------------------------- rotation maths


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (x, y, z, w) quaternions: the rotation b then a."""
    (ax, ay, az, aw), (bx, by, bz, bw) = a, b
    return np.array([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ])


def test_quat_to_matrix_hand_values() -> None:
    np.testing.assert_allclose(quat_to_matrix(yaw_quat(90.0)), [[0, -1, 0], [1, 0, 0], [0, 0, 1]],
                               atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix((0, 0, 0, 2.0)), np.eye(3))  # normalised
    with pytest.raises(ValueError, match="quat"):
        quat_to_matrix((0, 0, 1))
    with pytest.raises(ValueError, match="zero"):
        quat_to_matrix((0, 0, 0, 0))


@pytest.mark.parametrize(
    ("quat", "euler_deg"),
    [
        ((0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0)),
        (yaw_quat(90.0), (0.0, 0.0, 90.0)),
        (yaw_quat(-135.0), (0.0, 0.0, -135.0)),
        ((math.sin(math.radians(15)), 0.0, 0.0, math.cos(math.radians(15))), (30.0, 0.0, 0.0)),
        ((0.0, math.sin(math.radians(20)), 0.0, math.cos(math.radians(20))), (0.0, 40.0, 0.0)),
        # Rz(90) @ Rx(90): q = qz * qx = (1/2, 1/2, 1/2, 1/2) by hand.
        ((0.5, 0.5, 0.5, 0.5), (90.0, 0.0, 90.0)),
        # Gimbal lock, Ry(90): like scipy, the z angle is set to 0.
        ((0.0, math.sqrt(0.5), 0.0, math.sqrt(0.5)), (0.0, 90.0, 0.0)),
    ],
)
def test_euler_xyz_hand_values(quat: tuple, euler_deg: tuple) -> None:
    got = np.degrees(matrix_to_euler_xyz(quat_to_matrix(quat)))
    np.testing.assert_allclose(got, euler_deg, atol=1e-9)
    np.testing.assert_allclose(relative_euler_xyz_deg((0, 0, 0, 1), quat), euler_deg, atol=1e-9)


def test_relative_rotation_is_end_times_start_inverse() -> None:
    start = yaw_quat(30.0)
    end = quat_mul(np.array(yaw_quat(45.0)), np.array(start))  # 45 deg more yaw, applied after
    np.testing.assert_allclose(relative_euler_xyz_deg(start, end), (0.0, 0.0, 45.0), atol=1e-9)
    np.testing.assert_allclose(relative_euler_xyz_deg(end, end), (0.0, 0.0, 0.0), atol=1e-9)


def test_euler_matches_scipy_on_random_rotations() -> None:
    transform = pytest.importorskip("scipy.spatial.transform")
    rotation = transform.Rotation
    rng = np.random.default_rng(0)
    starts = rotation.random(500, random_state=1)
    ends = rotation.random(500, random_state=2)
    for start, end in zip(starts, ends):
        expected = (end * start.inv()).as_euler("xyz", degrees=True)
        got = relative_euler_xyz_deg(start.as_quat() * rng.uniform(0.5, 2.0), end.as_quat())
        np.testing.assert_allclose(got, expected, atol=1e-8)


def test_opposite_tasks_are_symmetric_pairs() -> None:
    assert set(OPPOSITE_TASKS) <= set(TASK_NAMES)
    for task, other in OPPOSITE_TASKS.items():
        assert other != task and OPPOSITE_TASKS[other] == task


@pytest.mark.parametrize("task", sorted(OPPOSITE_TASKS))
def test_opposite_task_fires_on_the_edit_played_backwards(task: str) -> None:
    start, end = run_edit(CASES[task][0])
    assert not task_succeeded(OPPOSITE_TASKS[task], start, end)
    assert task_succeeded(OPPOSITE_TASKS[task], end, start)
