"""The symbolic state (rftf_gym.symbolic): the official task table, transitions, and inference
from a physical state's contacts.

The task table is checked against the official ``tasks`` and ``task_categories`` of
calvin_models/calvin_agent/evaluation/multistep_sequences.py (mees/calvin).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rftf_gym.symbolic import (
    STATE_KEYS,
    TASK_CATEGORIES,
    TASKS,
    applicable_tasks,
    apply_task,
    infer_symbolic_state,
)

# The official `tasks` key order, which is the order np.random.choice draws from.
OFFICIAL_TASK_ORDER = [
    "rotate_red_block_right", "rotate_red_block_left", "rotate_blue_block_right",
    "rotate_blue_block_left", "rotate_pink_block_right", "rotate_pink_block_left",
    "push_red_block_right", "push_red_block_left", "push_blue_block_right",
    "push_blue_block_left", "push_pink_block_right", "push_pink_block_left",
    "move_slider_left", "move_slider_right", "open_drawer", "close_drawer",
    "lift_red_block_table", "lift_red_block_slider", "lift_red_block_drawer",
    "lift_blue_block_table", "lift_blue_block_slider", "lift_blue_block_drawer",
    "lift_pink_block_table", "lift_pink_block_slider", "lift_pink_block_drawer",
    "place_in_slider", "place_in_drawer", "stack_block", "unstack_block",
    "turn_on_lightbulb", "turn_off_lightbulb", "turn_on_led", "turn_off_led", "push_into_drawer",
]  # fmt: skip

# The initial state of the first official chain.
FIRST_STATE = {
    "led": 1, "lightbulb": 1, "slider": "left", "drawer": "open", "red_block": "slider_left",
    "blue_block": "table", "pink_block": "slider_right", "grasped": 0,
}  # fmt: skip


# --- tables --------------------------------------------------------------------------------------


def test_task_tables_follow_official_order_and_categories():
    assert list(TASKS) == OFFICIAL_TASK_ORDER
    assert set(TASK_CATEGORIES) == set(TASKS)
    sizes = Counter(TASK_CATEGORIES.values())
    assert sizes == {1: 12, 2: 2, 3: 2, 4: 3, 5: 3, 6: 3, 7: 2, 8: 4, 9: 1, 10: 1, 11: 1}
    assert [
        len(TASKS[name]) for name in ("lift_red_block_slider", "place_in_slider", "stack_block")
    ] == [2, 6, 6]


# --- symbolic transitions ------------------------------------------------------------------------


def test_applicable_tasks_and_apply_task():
    tasks = applicable_tasks(FIRST_STATE)
    assert "move_slider_right" in tasks and "move_slider_left" not in tasks
    assert "lift_red_block_slider" not in tasks  # red is behind the door while it is left
    assert "push_into_drawer" in tasks  # blue on the table, the others on the shelf, drawer open
    after = apply_task(FIRST_STATE, "move_slider_right")
    assert after["slider"] == "right" and FIRST_STATE["slider"] == "left"
    assert "lift_red_block_slider" in applicable_tasks(after)
    held = apply_task(after, "lift_red_block_slider")
    assert held["red_block"] == "grasped" and held["grasped"] == 1
    assert applicable_tasks(held) == ["place_in_slider", "place_in_drawer", "stack_block"]
    stacked = apply_task(held, "stack_block")
    assert (stacked["red_block"], stacked["blue_block"], stacked["grasped"]) == (
        "stacked_top",
        "stacked_bottom",
        0,
    )
    assert apply_task(stacked, "unstack_block")["red_block"] == "table"
    with pytest.raises(ValueError, match="applicable branches"):
        apply_task(FIRST_STATE, "open_drawer")
    assert apply_task(FIRST_STATE, "push_into_drawer")["blue_block"] == "drawer"
    assert "push_into_drawer" not in applicable_tasks(dict(FIRST_STATE, red_block="table"))


# --- physical state -> symbolic state ------------------------------------------------------------

ROBOT, TABLE, BLOCKS = 1, 2, {"red": 10, "blue": 11, "pink": 12}
LINKS = {"base_link": -1, "plank_link": 3, "drawer_link": 4, "slide_link": 5}


def _contact(own: int, other: int, link: int = -1) -> tuple:
    return (0, own, other, -1, link, (0, 0, 0), (0, 0, 0), (0, 0, 1), 0.0, 1.0)


def _info(contacts: dict[str, list[tuple[int, int]]], x: dict[str, float] | None = None) -> dict:
    x = x or {}
    movable = {
        f"block_{color}": {
            "uid": uid,
            "current_pos": (x.get(color, 0.0), 0.0, 0.46),
            "contacts": [_contact(uid, other, link) for other, link in contacts.get(color, [])],
        }
        for color, uid in BLOCKS.items()
    }
    return {
        "robot_info": {"uid": ROBOT},
        "scene_info": {
            "fixed_objects": {"table": {"uid": TABLE, "links": LINKS}},
            "movable_objects": movable,
        },
    }


def _scene_obs(
    door: float = 0.0, drawer: float = 0.0, lightbulb: float = 0.0, led: float = 0.0
) -> np.ndarray:
    scene_obs = np.zeros(24)
    scene_obs[[0, 1, 4, 5]] = door, drawer, lightbulb, led
    return scene_obs


def test_infer_symbolic_state_places_and_joints():
    info = _info(
        {
            "red": [(TABLE, LINKS["base_link"]), (ROBOT, 7)],  # on the table, robot touching it
            "blue": [(TABLE, LINKS["plank_link"]), (TABLE, LINKS["slide_link"])],
            "pink": [(TABLE, LINKS["drawer_link"])],
        },
        x={"blue": -0.2},
    )
    state = infer_symbolic_state(
        _scene_obs(door=0.2, drawer=0.15, lightbulb=1.0), info, slider_mid_x=-0.08
    )
    assert list(state) == list(STATE_KEYS)
    assert state == {
        "led": 0, "lightbulb": 1, "slider": "left", "drawer": "open", "red_block": "table",
        "blue_block": "slider_left", "pink_block": "drawer", "grasped": 0,
    }  # fmt: skip
    state = infer_symbolic_state(
        _scene_obs(door=0.1, drawer=0.05, led=1.0), _info({}, {}), slider_mid_x=-0.08
    )
    assert (state["slider"], state["drawer"], state["led"]) == ("right", "closed", 1)
    assert state["red_block"] == "unknown" and applicable_tasks(state)[:1] == ["move_slider_left"]
    info = _info({"blue": [(TABLE, LINKS["plank_link"])]}, x={"blue": 0.05})
    assert infer_symbolic_state(_scene_obs(), info, slider_mid_x=-0.08)["blue_block"] == "slider_right"


def test_infer_symbolic_state_grasped_and_stacked():
    info = _info({"red": [(ROBOT, 9), (ROBOT, 10)], "blue": [(TABLE, -1)], "pink": [(TABLE, -1)]})
    state = infer_symbolic_state(_scene_obs(), info, slider_mid_x=-0.08)
    assert (state["red_block"], state["grasped"]) == ("grasped", 1)
    # stack_block has two applicable branches (blue and pink both on the table): not valid.
    assert applicable_tasks(state) == ["place_in_slider"]
    info = _info(
        {
            "red": [(BLOCKS["blue"], -1)],
            "blue": [(TABLE, -1), (BLOCKS["red"], -1)],
            "pink": [(TABLE, -1)],
        }
    )
    state = infer_symbolic_state(_scene_obs(), info, slider_mid_x=-0.08)
    assert (state["red_block"], state["blue_block"], state["pink_block"]) == (
        "stacked_top",
        "stacked_bottom",
        "table",
    )
    assert "unstack_block" in applicable_tasks(state)
