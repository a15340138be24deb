"""Start states: random layouts where a task applies, including those no layout sampler gives."""

from __future__ import annotations

from typing import Any

import numpy as np

from rftf_gym.conventions import BLOCK_OFFSETS, COLORS, DRAWER_RANGE
from rftf_gym.experts.expert import make_expert
from rftf_gym.experts.geometry import (
    BLOCK_Z, DRAWER_FLOOR_Z, DRAWER_FRONT_Y, DRAWER_INNER_Y, drawer_grasp_yaw,
    drawer_hand_reach,
)
from rftf_gym.sim.layout import LAYOUTS, SHELF_Y, SceneLayout

# Tasks whose condition needs the robot to hold a block: reached by running a lift expert first.
_NEEDS_GRASP = ("place_in_slider", "place_in_drawer", "stack_block")


def _explicit_scene(task: str, scene_obs: np.ndarray, layout: SceneLayout, rng: np.random.Generator) -> np.ndarray:
    """Edit a random layout so a block is in the open drawer or two blocks are stacked."""
    scene_obs = scene_obs.copy()
    if task.startswith("lift_") and task.endswith("_drawer"):
        # The block rests on the tray floor where a top-down hand could have put it: the hand that
        # grasps it fits between the table's front edge and the drawer front.
        color = task.split("_")[1]
        joint = float(rng.uniform(0.16, DRAWER_RANGE))
        scene_obs[1] = joint
        for _ in range(100):
            yaw = float(rng.uniform(-np.pi, np.pi))
            reach = drawer_hand_reach(drawer_grasp_yaw(yaw, layout.block_size(color)[0])) + 0.005
            lo, hi = DRAWER_INNER_Y[0] - joint + reach, DRAWER_FRONT_Y - reach
            if lo < hi:
                break
        i = BLOCK_OFFSETS[color]
        scene_obs[i:i + 6] = [layout.drawer_x + rng.uniform(-0.1, 0.1), rng.uniform(lo, max(lo, hi)),
                              DRAWER_FLOOR_Z + 0.02, 0.0, 0.0, yaw]
    else:  # unstack_block: one block on another, both on the table
        bottom, top = rng.choice(len(COLORS), size=2, replace=False)
        (x0, y0), (x1, y1) = layout.surfaces["table"]
        x, y, yaw = rng.uniform(x0 + 0.05, x1 - 0.05), rng.uniform(y0 + 0.02, y1 - 0.02), rng.uniform(-np.pi, np.pi)
        # Keep the third block out of the way: park it on the shelf's open half if it is on the table.
        for k in range(3):
            j = BLOCK_OFFSETS[COLORS[k]]
            if np.hypot(scene_obs[j] - x, scene_obs[j + 1] - y) < 0.12 and k not in (bottom, top):
                scene_obs[j:j + 3] = [x + (0.15 if x < 0.5 * (x0 + x1) else -0.15), y, BLOCK_Z]
        for k, z in ((bottom, BLOCK_Z), (top, BLOCK_Z + 0.0398)):
            j = BLOCK_OFFSETS[COLORS[k]]
            scene_obs[j:j + 6] = [x, y, z, 0.0, 0.0, yaw + (0.0 if k == bottom else rng.uniform(-0.2, 0.2))]
    return scene_obs


def needs_constructed_start(task: str) -> bool:
    """Whether no random layout starts ``task`` (a block held, in the drawer, or stacked), so
    `reset_to_task` builds its start state: a lift first, or an edited layout."""
    return task in _NEEDS_GRASP or task == "unstack_block" or (task.startswith("lift_") and task.endswith("_drawer"))


def _wedged_block(env: Any) -> bool:
    """A block over the shelf that counts as on the table: sampled with its footprint in the
    cabinet's side wall, it touches base_link and not the shelf (a state no play data reaches)."""
    state = env.symbolic_state()
    blocks = env.sim.get_info()["scene_info"]["movable_objects"]
    return any(state[f"{c}_block"] == "table" and blocks[f"block_{c}"]["current_pos"][1] > SHELF_Y[0] for c in COLORS)


def reset_to_task(env: Any, task: str, rng: np.random.Generator, tries: int = 20) -> tuple[dict, dict]:
    """Reset a ``RFTF-CALVIN-v0`` env to a random start state where ``task`` applies.

    Layouts come from the env's own sampler (which retries until the task applies and can fire,
    `CalvinEnv.applicable_tasks`), less, for tasks on table blocks, those where a block over the
    shelf is wedged in the cabinet wall (and so counts as on the table). Tasks that need the robot to
    hold a block start after a successful ``lift_<color>_block_table`` by the expert (chained with
    ``options["continue"]``, as in evaluation); a block in the drawer (where a top-down hand fits)
    and a stack are written into a random layout as an explicit ``scene_obs``.

    Args:
        env: the env (wrapped or not); it must observe ``robot_obs`` and ``scene_obs``.
        task: the task to start.
        rng: randomness for seeds, layouts and the lift expert.
        tries: attempts before giving up.

    Returns:
        ``(obs, info)`` of the reset that starts ``task``.

    Raises:
        RuntimeError: no valid start state in ``tries`` attempts.
    """
    base = env.unwrapped
    layout = LAYOUTS[base.scene]
    for _ in range(tries):
        seed = int(rng.integers(2**31))
        if task in _NEEDS_GRASP:
            color = COLORS[int(rng.integers(3))]
            lift = f"lift_{color}_block_table"
            obs, _ = env.reset(seed=seed, options={"task": lift})
            expert = make_expert(lift, base.scene, rng)
            for _ in range(200):
                obs, _, terminated, truncated, info = env.step(expert.act(obs))
                if terminated or truncated:
                    break
            if not info.get("success") or task not in base.applicable_tasks():
                continue
            return env.reset(options={"continue": True, "task": task})
        if task == "unstack_block" or (task.startswith("lift_") and task.endswith("_drawer")):
            obs, _ = env.reset(seed=seed)
            scene_obs = _explicit_scene(task, obs["scene_obs"], layout, rng)
            obs, info = env.reset(options={"robot_obs": obs["robot_obs"], "scene_obs": scene_obs, "task": task})
            if task in base.applicable_tasks():
                return obs, info
            continue
        obs, info = env.reset(seed=seed, options={"task": task})
        table_block_task = task.startswith(("rotate_", "push_")) or task.endswith("_table")
        wedged = table_block_task and _wedged_block(base)
        if not wedged:
            return obs, info
    raise RuntimeError(f"no valid start state for {task!r} in scene {base.scene} after {tries} tries")
