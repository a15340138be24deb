"""The oracle on real simulator contacts: the contact-based tasks fire exactly when the
physical state crosses the official rule, step by step, while a scripted expert does the task.

`tests/test_tasks.py` pins every rule on hand-made info dicts; here the contacts come from
pybullet. For each task the expert runs from a seeded start state; at every step the oracle's
verdict is compared with the measured quantity the rule thresholds (rise, robot contact, ...):
the states just below the threshold must not fire, and the task must fire in the end.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import rftf_gym  # noqa: F401  (registers the env id)
from rftf_gym.experts import make_expert, reset_to_task
from rftf_gym.tasks import task_succeeded


def _rollout(task: str, scene: str, seed: int) -> tuple[dict, list[tuple[dict, bool]]]:
    """Start info and (info, oracle verdict) per step of the expert doing ``task``."""
    env = gym.make("RFTF-CALVIN-v0", scene=scene, obs_mode="state")
    rng = np.random.default_rng(seed)
    obs, _ = reset_to_task(env, task, rng)
    sim = env.unwrapped.sim
    start = sim.get_info()
    expert = make_expert(task, scene, rng)
    steps = []
    for _ in range(300):
        obs, _, terminated, truncated, _ = env.step(expert.act(obs))
        info = sim.get_info()
        steps.append((info, task_succeeded(task, start, info)))
        if terminated or truncated:
            break
    env.close()
    return start, steps


def _bodies(obj: dict) -> set[int]:
    return {int(c[2]) for c in obj["contacts"]}


def _held_block(info: dict) -> str:
    robot = int(info["robot_info"]["uid"])
    held = [name for name, obj in info["scene_info"]["movable_objects"].items() if _bodies(obj) == {robot}]
    assert len(held) == 1, "the start state must have exactly one block in the hand"
    return held[0]


@pytest.mark.parametrize(
    "task, scene, seed, rise",
    [("lift_red_block_table", "D", 0, 0.05), ("lift_blue_block_slider", "A", 1, 0.03),
     ("lift_pink_block_drawer", "B", 2, 0.05)],
)
def test_lift_fires_only_above_the_rise_with_the_robot_alone(task, scene, seed, rise):
    start, steps = _rollout(task, scene, seed)
    block = f"block_{task.split('_')[1]}"
    robot = int(start["robot_info"]["uid"])
    z0 = start["scene_info"]["movable_objects"][block]["current_pos"][2]
    below = 0
    for info, fired in steps:
        obj = info["scene_info"]["movable_objects"][block]
        lifted = obj["current_pos"][2] - z0
        held_only = _bodies(obj) == {robot}
        assert fired == (lifted > rise and held_only), (lifted, _bodies(obj))
        below += held_only and rise - 0.02 < lifted <= rise
    assert steps[-1][1], f"{task} never fired"
    assert below >= 1, "the rollout must pass through held states just below the threshold"


@pytest.mark.parametrize("task, scene, seed, link", [("place_in_slider", "D", 1, "plank_link"),
                                                     ("place_in_drawer", "C", 1, "drawer_link")])
def test_place_fires_once_released_onto_the_surface(task, scene, seed, link):
    start, steps = _rollout(task, scene, seed)
    block = _held_block(start)
    table = start["scene_info"]["fixed_objects"]["table"]
    dest = (int(table["uid"]), int(table["links"][link]))
    for info, fired in steps:
        obj = info["scene_info"]["movable_objects"][block]
        on_dest = dest in {(int(c[2]), int(c[4])) for c in obj["contacts"]}
        released = int(obj["uid"]) not in {int(c[2]) for c in info["robot_info"]["contacts"]}
        assert fired == (on_dest and released)
    assert steps[-1][1], f"{task} never fired"
    assert any(not fired for _, fired in steps)


def test_stack_fires_only_when_a_block_rests_on_blocks_alone():
    start, steps = _rollout("stack_block", "D", 0)
    block = _held_block(start)
    uids = {int(obj["uid"]) for obj in start["scene_info"]["movable_objects"].values()}
    for info, fired in steps:
        obj = info["scene_info"]["movable_objects"][block]
        slow = max(map(abs, (*obj["current_lin_vel"], *obj["current_ang_vel"]))) < 1
        if fired:
            assert _bodies(obj) and _bodies(obj) <= uids and slow
        if _bodies(obj) - uids:  # still touching the robot or the table
            assert not fired
    assert steps[-1][1], "stack_block never fired"


def test_unstack_fires_once_the_top_block_leaves_the_other():
    start, steps = _rollout("unstack_block", "A", 0)
    uids = {int(obj["uid"]) for obj in start["scene_info"]["movable_objects"].values()}
    stacked = [name for name, obj in start["scene_info"]["movable_objects"].items()
               if _bodies(obj) and _bodies(obj) <= uids]
    assert len(stacked) == 1
    for info, fired in steps:
        assert fired == (not _bodies(info["scene_info"]["movable_objects"][stacked[0]]) & uids)
    assert steps[-1][1], "unstack_block never fired"


def test_push_into_drawer_fires_when_a_block_reaches_the_drawer():
    start, steps = _rollout("push_into_drawer", "D", 0)
    table = start["scene_info"]["fixed_objects"]["table"]
    drawer = (int(table["uid"]), int(table["links"]["drawer_link"]))
    for info, fired in steps:
        in_drawer = any(drawer in {(int(c[2]), int(c[4])) for c in obj["contacts"]}
                        for obj in info["scene_info"]["movable_objects"].values())
        if fired:
            assert in_drawer
    assert steps[-1][1], "push_into_drawer never fired"
    assert not steps[0][1]
