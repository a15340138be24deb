"""The scripted experts solve representative tasks from fixed seeds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import rftf_gym  # noqa: F401
from rftf_gym.experts import ExpertPolicy, make_expert, reset_to_task, task_for_instruction
from rftf_gym.language import EVAL_INSTRUCTIONS, TRAIN_INSTRUCTIONS
from rftf_gym.tasks import TASK_NAMES


def _run(task: str, scene: str, seed: int) -> tuple[bool, list[np.ndarray]]:
    env = gym.make("RFTF-CALVIN-v0", scene=scene, obs_mode="state")
    rng = np.random.default_rng(seed)
    obs, _ = reset_to_task(env, task, rng)
    expert = make_expert(task, scene, rng)
    actions = []
    info: dict = {}
    for _ in range(360):
        action = expert.act(obs)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    env.close()
    return bool(info["success"]), actions


@pytest.mark.parametrize(
    "task,scene,seed",
    [("lift_red_block_table", "D", 0), ("open_drawer", "A", 1), ("rotate_blue_block_left", "D", 5),
     ("push_pink_block_right", "C", 4)],
)
def test_expert_succeeds(task: str, scene: str, seed: int) -> None:
    success, actions = _run(task, scene, seed)
    assert success, f"{task} in {scene} from seed {seed}"
    assert len(actions) < 200
    stacked = np.array(actions)
    assert np.all(np.abs(stacked[:, :6]) <= 1.0) and set(np.unique(stacked[:, 6])) <= {-1.0, 1.0}


def test_instruction_maps_to_task() -> None:
    for task in TASK_NAMES:
        assert task_for_instruction(EVAL_INSTRUCTIONS[task]) == task
        for sentence in TRAIN_INSTRUCTIONS[task]:
            assert task_for_instruction(sentence) == task
    with pytest.raises(ValueError, match="unknown instruction"):
        task_for_instruction("dance")


def test_expert_policy_interface() -> None:
    # Through the policy interface, the instruction alone picks the task, and the task gets done:
    # close the drawer, then (policy reset, env continued) open it again.
    env = gym.make("RFTF-CALVIN-v0", scene="D", obs_mode="state", task="close_drawer")
    obs, _ = env.reset(seed=0)
    policy = ExpertPolicy(scene="D", seed=0)
    for task in ("close_drawer", "open_drawer"):
        if task != "close_drawer":
            obs, _ = env.reset(options={"continue": True, "task": task})
        policy.reset()
        for _ in range(360):
            action = policy.act(obs, EVAL_INSTRUCTIONS[task])
            assert action.shape == (7,) and action[6] in (-1.0, 1.0)
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        assert info["success"] and info["task"] == task, f"{task}: {info}"
    env.close()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_expert("fly", "D")
    with pytest.raises(ValueError):
        make_expert("open_drawer", "E")
