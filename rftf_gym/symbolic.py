"""CALVIN's symbolic state: the task table over it, and its inference from a physical state.

The official evaluation reasons about a scene in symbols: which lights are on, where the door and
the drawer are, and where each block is. Facts (the state keys and values, each task's
conditions and effects, the task categories and the order tasks are drawn in) come from the
public mees/calvin repository, ``calvin_models/calvin_agent/evaluation/multistep_sequences.py``
(``tasks``, ``task_categories``, ``check_sequence``). The evaluation chains built on this table
are in `rftf_gym.sequences`; the env uses `infer_symbolic_state` and `applicable_tasks` to draw
tasks that apply in its current state.

A symbolic state is a dict with the keys of `STATE_KEYS`, for example::

    {"led": 1, "lightbulb": 1, "slider": "left", "drawer": "open", "red_block": "slider_left",
     "blue_block": "table", "pink_block": "slider_right", "grasped": 0}

Block values are ``table``, ``slider_left``, ``slider_right``, ``drawer``, ``grasped``,
``stacked_top`` and ``stacked_bottom`` (the official vocabulary), plus ``unknown`` from
`infer_symbolic_state` for a block that rests on nothing the vocabulary names (no task applies).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from rftf_gym.conventions import COLORS, DRAWER_RANGE, EVAL_SLIDER_LEFT_JOINT

# Key order of the official initial states (multistep_sequences.py, get_sequences). It matters:
# the reset-state seed hashes ``str(state.values())`` in this order.
STATE_KEYS = ("led", "lightbulb", "slider", "drawer", "red_block", "blue_block", "pink_block", "grasped")
UNKNOWN = "unknown"


class Branch(NamedTuple):
    """One way a task can apply: if every condition holds, the effect is written into the state.

    A condition value is either the required value or a tuple of allowed values.
    """

    condition: Mapping[str, Any]
    effect: Mapping[str, Any]


def _branch(condition: dict[str, Any], effect: dict[str, Any]) -> Branch:
    return Branch(MappingProxyType(condition), MappingProxyType(effect))



def _build_tasks() -> dict[str, tuple[Branch, ...]]:
    """The official ``tasks`` table, in the official key order (the order tasks are drawn in)."""
    tasks: dict[str, tuple[Branch, ...]] = {}
    for kind in ("rotate", "push"):
        for color in COLORS:
            block = f"{color}_block"
            for side in ("right", "left"):
                tasks[f"{kind}_{block}_{side}"] = (
                    _branch({block: "table", "grasped": 0}, {block: "table"}),
                )
    tasks["move_slider_left"] = (_branch({"slider": "right", "grasped": 0}, {"slider": "left"}),)
    tasks["move_slider_right"] = (_branch({"slider": "left", "grasped": 0}, {"slider": "right"}),)
    tasks["open_drawer"] = (_branch({"drawer": "closed", "grasped": 0}, {"drawer": "open"}),)
    tasks["close_drawer"] = (_branch({"drawer": "open", "grasped": 0}, {"drawer": "closed"}),)
    for color in COLORS:
        block = f"{color}_block"
        lifted = {block: "grasped", "grasped": 1}
        tasks[f"lift_{block}_table"] = (_branch({block: "table", "grasped": 0}, lifted),)
        # A block on the shelf can only be reached when the door covers the other half.
        tasks[f"lift_{block}_slider"] = (
            _branch({block: "slider_left", "slider": "right", "grasped": 0}, lifted),
            _branch({block: "slider_right", "slider": "left", "grasped": 0}, lifted),
        )
        tasks[f"lift_{block}_drawer"] = (
            _branch({block: "drawer", "drawer": "open", "grasped": 0}, lifted),
        )
    tasks["place_in_slider"] = tuple(
        _branch(
            {f"{color}_block": "grasped", "slider": side, "grasped": 1},
            {f"{color}_block": f"slider_{side}", "grasped": 0},
        )
        for color in COLORS
        for side in ("right", "left")
    )
    tasks["place_in_drawer"] = tuple(
        _branch(
            {f"{color}_block": "grasped", "drawer": "open", "grasped": 1},
            {f"{color}_block": "drawer", "grasped": 0},
        )
        for color in COLORS
    )
    pairs = [(top, bottom) for top in COLORS for bottom in COLORS if top != bottom]
    tasks["stack_block"] = tuple(
        _branch(
            {f"{top}_block": "grasped", f"{bottom}_block": "table", "grasped": 1},
            {f"{top}_block": "stacked_top", f"{bottom}_block": "stacked_bottom", "grasped": 0},
        )
        for top, bottom in pairs
    )
    tasks["unstack_block"] = tuple(
        _branch(
            {f"{top}_block": "stacked_top", f"{bottom}_block": "stacked_bottom", "grasped": 0},
            {f"{top}_block": "table", f"{bottom}_block": "table"},
        )
        for top, bottom in pairs
    )
    for light in ("lightbulb", "led"):
        tasks[f"turn_on_{light}"] = (_branch({light: 0, "grasped": 0}, {light: 1}),)
        tasks[f"turn_off_{light}"] = (_branch({light: 1, "grasped": 0}, {light: 0}),)
    on_shelf = ("slider_right", "slider_left")
    tasks["push_into_drawer"] = tuple(
        _branch(
            {
                f"{color}_block": "table",
                **{f"{other}_block": on_shelf for other in COLORS if other != color},
                "drawer": "open",
                "grasped": 0,
            },
            {f"{color}_block": "drawer", "grasped": 0},
        )
        for color in COLORS
    )
    return tasks


TASKS: Mapping[str, tuple[Branch, ...]] = MappingProxyType(_build_tasks())
"""Task name -> its (condition, effect) branches; key order is the official drawing order."""

TASK_CATEGORIES: Mapping[str, int] = MappingProxyType(
    {
        **{
            f"{kind}_{c}_block_{side}": 1
            for kind in ("rotate", "push")
            for c in COLORS
            for side in ("right", "left")
        },
        "move_slider_left": 2,
        "move_slider_right": 2,
        "open_drawer": 3,
        "close_drawer": 3,
        **{f"lift_{c}_block_table": 4 for c in COLORS},
        **{f"lift_{c}_block_slider": 5 for c in COLORS},
        **{f"lift_{c}_block_drawer": 6 for c in COLORS},
        "place_in_slider": 7,
        "place_in_drawer": 7,
        "turn_on_lightbulb": 8,
        "turn_off_lightbulb": 8,
        "turn_on_led": 8,
        "turn_off_led": 8,
        "push_into_drawer": 9,
        "stack_block": 10,
        "unstack_block": 11,
    }
)
"""Task name -> category; a chain never holds two tasks of one category (official task_categories)."""


def _holds(condition: Mapping[str, Any], state: Mapping[str, Any]) -> bool:
    for key, wanted in condition.items():
        value = state[key]
        if isinstance(wanted, tuple):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True


def applicable_branches(task: str, state: Mapping[str, Any]) -> list[Branch]:
    """The branches of ``task`` whose condition holds in ``state``.

    Args:
        task: one of the 34 task names.
        state: a symbolic state (keys of `STATE_KEYS`).

    Returns:
        The applicable branches, in table order; a task is valid when exactly one applies.

    Raises:
        KeyError: unknown task name.
    """
    return [branch for branch in TASKS[task] if _holds(branch.condition, state)]


def applicable_tasks(state: Mapping[str, Any]) -> list[str]:
    """The tasks that can be asked for in ``state``: exactly one branch applies (check_sequence).

    Args:
        state: a symbolic state (keys of `STATE_KEYS`).

    Returns:
        Task names in the official table order.
    """
    return [task for task in TASKS if len(applicable_branches(task, state)) == 1]


def apply_task(state: Mapping[str, Any], task: str) -> dict[str, Any]:
    """The symbolic state after ``task`` succeeds in ``state``.

    Args:
        state: a symbolic state (keys of `STATE_KEYS`); not modified.
        task: one of the 34 task names.

    Returns:
        A new state dict with the effect of the single applicable branch written in.

    Raises:
        KeyError: unknown task name.
        ValueError: no branch, or more than one, applies.
    """
    branches = applicable_branches(task, state)
    if len(branches) != 1:
        raise ValueError(
            f"{task} has {len(branches)} applicable branches in {dict(state)}, needs exactly 1"
        )
    return {**state, **branches[0].effect}


def _block_place(
    color: str,
    info: Mapping[str, Any],
    robot_uid: int,
    table_uid: int,
    table_links: Mapping[str, int],
    block_uids: Mapping[int, str],
    slider_mid_x: float,
) -> tuple[str, set[str]]:
    """A block's place before stacking is resolved, and the colours of the blocks it touches."""
    block = info["scene_info"]["movable_objects"][f"block_{color}"]
    contacts = block["contacts"]
    touched_links = {contact[4] for contact in contacts if contact[2] == table_uid}
    touched_blocks = {block_uids[contact[2]] for contact in contacts if contact[2] in block_uids}
    touched_blocks.discard(color)
    others = [contact for contact in contacts if contact[2] != robot_uid]
    touches_robot = len(others) < len(contacts)
    if table_links.get("drawer_link") in touched_links:
        return "drawer", touched_blocks
    if table_links.get("plank_link") in touched_links:
        side = "slider_left" if block["current_pos"][0] < slider_mid_x else "slider_right"
        return side, touched_blocks
    if table_links.get("base_link") in touched_links:
        return "table", touched_blocks
    if others and all(contact[2] in block_uids for contact in others):
        return "stacked_top", touched_blocks
    if not others and touches_robot:
        return "grasped", touched_blocks
    return UNKNOWN, touched_blocks


def infer_symbolic_state(
    scene_obs: np.ndarray,
    info: Mapping[str, Any],
    slider_mid_x: float,
    slider_joint_mid: float = EVAL_SLIDER_LEFT_JOINT / 2,
    drawer_open_joint: float = DRAWER_RANGE / 2,
) -> dict[str, Any]:
    """Map a physical state to the official symbolic state, to sample valid tasks and drive experts.

    Mapping:

    - ``led`` / ``lightbulb``: ``scene_obs[5]`` / ``scene_obs[4]`` (logical states, 0 or 1).
    - ``slider``: ``"left"`` when the door joint ``scene_obs[0] > slider_joint_mid``, else
      ``"right"``. ``drawer``: ``"open"`` when ``scene_obs[1] > drawer_open_joint``.
    - each block, from its contacts (first rule that matches):
      touches the table's ``drawer_link`` -> ``"drawer"``; ``plank_link`` (the shelf) ->
      ``"slider_left"`` if its x < ``slider_mid_x`` else ``"slider_right"``; ``base_link`` (the
      table top) -> ``"table"``; touches only blocks, or blocks and the robot ->
      ``"stacked_top"``; touches only the robot -> ``"grasped"``; otherwise (in flight, on the
      floor, leaning on the door only) -> ``"unknown"``. Then every block touched by a
      ``stacked_top`` block, and not itself on top, becomes ``"stacked_bottom"``, the official
      bookkeeping of stack_block / unstack_block.
    - ``grasped``: 1 when some block is ``"grasped"``, else 0.

    Args:
        scene_obs: (24,) scene observation (layout in `rftf_gym.conventions`).
        info: the backend's ``get_info()`` (see `rftf_gym.backend`): robot uid, table uid and
            link ids, and each block's ``current_pos`` and contacts (pybullet getContactPoints
            tuples: index 2 other body uid, index 4 other link index).
        slider_mid_x: world x splitting the shelf into halves (``backend.slider_mid_x()``).
        slider_joint_mid: door joint value between "right" (0) and "left" (scene A/D: 0.28).
        drawer_open_joint: drawer joint above which the drawer counts as open.

    Returns:
        A symbolic state with the keys of `STATE_KEYS`.
    """
    scene = info["scene_info"]
    robot_uid = info["robot_info"]["uid"]
    table = scene["fixed_objects"]["table"]
    block_uids = {scene["movable_objects"][f"block_{color}"]["uid"]: color for color in COLORS}
    places: dict[str, str] = {}
    touching: dict[str, set[str]] = {}
    for color in COLORS:
        places[color], touching[color] = _block_place(
            color, info, robot_uid, table["uid"], table["links"], block_uids, slider_mid_x
        )
    for color in COLORS:
        if places[color] == "stacked_top":
            for other in touching[color]:
                if places[other] != "stacked_top":
                    places[other] = "stacked_bottom"
    state: dict[str, Any] = {
        "led": int(scene_obs[5] > 0.5),
        "lightbulb": int(scene_obs[4] > 0.5),
        "slider": "left" if scene_obs[0] > slider_joint_mid else "right",
        "drawer": "open" if scene_obs[1] > drawer_open_joint else "closed",
    }
    for color in COLORS:
        state[f"{color}_block"] = places[color]
    state["grasped"] = int("grasped" in places.values())
    return state
