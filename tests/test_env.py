"""The Gymnasium contract of RFTF-CALVIN-v0 (as gymnasium's tests/envs/test_envs.py checks its own envs)."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rftf_gym  # noqa: F401  (registers the env id)
from rftf_gym import language, sequences, tasks
from rftf_gym.conventions import EP_LEN
from rftf_gym.env import CalvinEnv

SMALL = {"static_size": 32, "gripper_size": 16}


def make(**kwargs):
    kwargs.setdefault("obs_mode", "state")
    return gym.make("RFTF-CALVIN-v0", **kwargs)


@pytest.mark.parametrize("scene", ["A", "B", "C", "D"])
@pytest.mark.parametrize("obs_mode", ["rgb", "state", "rgb+state"])
def test_check_env_every_scene_and_mode(scene, obs_mode):
    env = make(scene=scene, obs_mode=obs_mode, **SMALL)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_official_image_sizes_and_obs_keys():
    env = make(obs_mode="rgb+state")
    obs, info = env.reset(seed=0)
    assert obs["rgb_static"].shape == (200, 200, 3) and obs["rgb_static"].dtype == np.uint8
    assert obs["rgb_gripper"].shape == (84, 84, 3) and obs["rgb_gripper"].dtype == np.uint8
    assert obs["robot_obs"].shape == (15,) and obs["scene_obs"].shape == (24,)
    assert obs["instruction"] == info["instruction"]
    assert info["task"] in tasks.TASK_NAMES
    env.close()


def test_rgb_mode_has_no_state_and_state_mode_has_no_images():
    env = make(obs_mode="rgb", **SMALL)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"rgb_static", "rgb_gripper", "instruction"}
    env.close()
    env = make(obs_mode="state")
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"robot_obs", "scene_obs", "instruction"}
    env.close()


def test_seeded_reset_is_reproducible():
    env = make()
    first, info1 = env.reset(seed=123)
    second, info2 = env.reset(seed=123)
    np.testing.assert_array_equal(first["scene_obs"], second["scene_obs"])
    np.testing.assert_array_equal(first["robot_obs"], second["robot_obs"])
    assert info1["task"] == info2["task"] and info1["instruction"] == info2["instruction"]
    other, _ = env.reset(seed=124)
    assert not np.array_equal(first["scene_obs"], other["scene_obs"])
    env.close()


def test_explicit_reset_then_same_actions_gives_same_trajectory():
    env = make(task="open_drawer")
    obs, _ = env.reset(seed=5)
    robot_obs, scene_obs = obs["robot_obs"].copy(), obs["scene_obs"].copy()
    actions = np.random.default_rng(0).uniform(-1, 1, size=(40, 7))
    runs = []
    for _ in range(2):
        env.reset(options={"robot_obs": robot_obs, "scene_obs": scene_obs})
        runs.append(np.stack([np.concatenate([o["robot_obs"], o["scene_obs"]]) for o in
                              (env.step(a)[0] for a in actions)]))
    np.testing.assert_array_equal(runs[0], runs[1])
    env.close()


def test_fixed_task_is_applicable_after_random_reset():
    env = make(task="close_drawer")
    for seed in range(5):
        _, info = env.reset(seed=seed)
        assert info["task"] == "close_drawer"
        assert "close_drawer" in env.unwrapped.applicable_tasks()
    env.close()


def test_sampled_tasks_are_applicable():
    env = make()
    for seed in range(10):
        _, info = env.reset(seed=seed)
        assert info["task"] in env.unwrapped.applicable_tasks()
    env.close()


def test_eval_split_uses_the_fixed_sentence_and_train_split_a_paraphrase():
    env = make(task="open_drawer", instruction_split="eval")
    obs, _ = env.reset(seed=0)
    assert obs["instruction"] == language.EVAL_INSTRUCTIONS["open_drawer"]
    env.close()
    env = make(task="open_drawer", instruction_split="train")
    seen = {env.reset(seed=s)[0]["instruction"] for s in range(20)}
    assert seen <= set(language.TRAIN_INSTRUCTIONS["open_drawer"]) and len(seen) > 1
    env.close()


def test_step_info_keys_and_sparse_reward():
    env = make()
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(np.zeros(7))
    for key in ("task", "instruction", "success", "sparse_reward", "elapsed_steps"):
        assert key in info
    assert "completed_tasks" not in info  # the 34-task check is opt-in (info_completed_tasks)
    assert reward == info["sparse_reward"] == float(info["success"])
    assert terminated == info["success"] and not truncated
    env.close()


def test_info_completed_tasks_changes_nothing_else():
    # The same seeded episodes with and without the 34-task info: identical observations, rewards,
    # ends and tasks; success is the episode's task among the completed ones, on every step.
    runs = []
    for full in (False, True):
        env = make(info_completed_tasks=full)
        obs, info = env.reset(seed=3)
        trace = [(info["task"], obs["robot_obs"], obs["scene_obs"])]
        for action in np.random.default_rng(3).uniform(-1, 1, (150, 7)):
            obs, reward, terminated, truncated, info = env.step(action)
            trace.append((reward, terminated, truncated, info["success"], obs["robot_obs"], obs["scene_obs"]))
            if full:
                assert info["success"] == (info["task"] in info["completed_tasks"])
                assert info["completed_tasks"] == env.unwrapped.completed_tasks()
            if terminated or truncated:
                obs, info = env.reset()
                trace.append((info["task"], obs["robot_obs"], obs["scene_obs"]))
        runs.append(trace)
        env.close()
    assert len(runs[0]) == len(runs[1])
    for a, b in zip(*runs):
        for x, y in zip(a, b):
            assert np.array_equal(x, y)


def test_success_terminates_with_reward_one():
    env = make(task="open_drawer")
    obs, _ = env.reset(seed=0)
    scene_obs = obs["scene_obs"].copy()
    scene_obs[1] = 0.0
    env.reset(options={"robot_obs": obs["robot_obs"], "scene_obs": scene_obs, "task": "open_drawer"})
    # Open the drawer behind the env's back: the oracle compares against the episode's start.
    opened = scene_obs.copy()
    opened[1] = 0.2
    env.unwrapped.sim.reset(robot_obs=obs["robot_obs"], scene_obs=opened)
    _, reward, terminated, truncated, info = env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert info["success"] and terminated and not truncated and reward == 1.0
    assert "open_drawer" in env.unwrapped.completed_tasks()
    env.close()


@pytest.mark.parametrize("made", [True, False], ids=["gym.make", "CalvinEnv"])
def test_truncates_after_360_steps(made: bool):
    # Through gym.make the spec's TimeLimit shows the limit; the bare env truncates on its own.
    env = make(task="turn_on_led") if made else CalvinEnv(obs_mode="state", task="turn_on_led")
    if made:
        assert env.spec.max_episode_steps == EP_LEN == 360
    env.reset(seed=0)
    still = np.array([0, 0, 0, 0, 0, 0, 1.0])
    for step in range(1, EP_LEN + 1):
        _, _, terminated, truncated, info = env.step(still)
        assert not terminated
        assert truncated == (step == EP_LEN)
    assert info["elapsed_steps"] == EP_LEN
    env.close()


def test_continue_keeps_the_simulator_state():
    env = make()
    env.reset(seed=3)
    for _ in range(10):
        obs, *_ = env.step(np.array([0.5, 0, 0, 0, 0, 0, 1.0]))
    task = env.unwrapped.applicable_tasks()[0]
    cont, info = env.reset(options={"task": task, "continue": True})
    np.testing.assert_array_equal(cont["robot_obs"], obs["robot_obs"])
    np.testing.assert_array_equal(cont["scene_obs"], obs["scene_obs"])
    assert info["task"] == task and info["elapsed_steps"] == 0
    env.close()


@pytest.mark.parametrize(
    "action, message",
    [
        (np.zeros(6), "shape"),
        (np.zeros((7, 1)), "shape"),
        (np.array([0, 0, np.nan, 0, 0, 0, 1]), "finite"),
        (np.array([0, 0, 0, np.inf, 0, 0, 1]), "finite"),
        ("forward", "action"),
    ],
)
def test_bad_actions_raise_value_error(action, message):
    env = make()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)
    env.close()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scene": "E"}, "scene"),
        ({"task": "juggle_blocks"}, "juggle_blocks"),
        ({"obs_mode": "depth"}, "obs_mode"),
        ({"backend": "mujoco"}, "backend"),
        ({"reward_mode": "shaped"}, "reward_mode"),
        ({"instruction_split": "test"}, "instruction_split"),
        ({"static_size": 0}, "static_size"),
    ],
)
def test_bad_constructor_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gym.make("RFTF-CALVIN-v0", **kwargs)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"robot_obs": np.zeros(14), "scene_obs": np.zeros(24)}, "robot_obs"),
        ({"robot_obs": np.zeros(15), "scene_obs": np.zeros(23)}, "scene_obs"),
        ({"robot_obs": np.zeros(15)}, "both"),
        ({"robot_obs": np.full(15, np.nan), "scene_obs": np.zeros(24)}, "finite"),
        ({"task": "fly"}, "fly"),
        ({"teleport": True}, "teleport"),
    ],
)
def test_bad_reset_options_raise_value_error(options, message):
    env = make()
    with pytest.raises(ValueError, match=message):
        env.reset(seed=0, options=options)
    env.close()


def test_physics_blow_up_ends_the_episode_with_physics_error():
    env = make()
    obs, _ = env.reset(seed=0)
    sim = env.unwrapped.sim
    real_get_obs = sim.get_obs

    def broken_get_obs():
        raw = real_get_obs()
        raw["robot_obs"] = np.full_like(raw["robot_obs"], np.nan)
        return raw

    sim.get_obs = broken_get_obs
    returned, reward, terminated, truncated, info = env.step(np.zeros(7))
    assert info["physics_error"] and truncated and not terminated and reward == 0.0
    np.testing.assert_array_equal(returned["robot_obs"], obs["robot_obs"])
    env.close()


def test_render_rgb_array_gives_the_static_camera():
    env = make(render_mode="rgb_array", static_size=64)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and frame.std() > 0
    env.close()


def _assert_batch_equals(batch: dict, singles: list[dict]) -> None:
    for i, single in enumerate(singles):
        for key in ("robot_obs", "scene_obs"):
            np.testing.assert_array_equal(batch[key][i], single[key], err_msg=f"sub-env {i} {key}")
        assert batch["instruction"][i] == single["instruction"]


# gymnasium's AsyncVectorEnv reads a Text observation out of shared memory once, at construction
# (vector/utils/shared_memory.py), so the instruction needs shared_memory=False.
@pytest.mark.parametrize("vector_cls", [gym.vector.SyncVectorEnv,
                                        functools.partial(gym.vector.AsyncVectorEnv, shared_memory=False)],
                         ids=["sync", "async"])
def test_vector_envs_equal_single_envs(vector_cls):
    # 1000 seeded random steps of 2 sub-envs (each truncated and autoreset twice) against 2 single
    # envs seeded as the vector env seeds them (seed + i), with NEXT_STEP autoreset done by hand.
    n = 2
    envs = vector_cls([lambda: make() for _ in range(n)])
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    singles = [make() for _ in range(n)]
    obs, _ = envs.reset(seed=0)
    single_obs = [env.reset(seed=i)[0] for i, env in enumerate(singles)]
    _assert_batch_equals(obs, single_obs)
    envs.action_space.seed(0)
    ended, resets = [False] * n, 0
    for _ in range(1000):
        actions = envs.action_space.sample()
        obs, reward, terminated, truncated, _ = envs.step(actions)
        for i, env in enumerate(singles):
            if ended[i]:
                single_obs[i], _ = env.reset()
                outcome = (0.0, False, False)
                resets += 1
            else:
                single_obs[i], *outcome, _ = env.step(actions[i])
            assert (reward[i], terminated[i], truncated[i]) == tuple(outcome)
            ended[i] = outcome[1] or outcome[2]
        _assert_batch_equals(obs, single_obs)
    assert resets >= n
    envs.close()
    for env in singles:
        env.close()


def test_vector_env_with_images():
    # Images travel through the worker processes' shared memory unchanged: sub-env 1 renders what a
    # single env seeded 1 renders after the same actions.
    envs = gym.vector.AsyncVectorEnv([lambda: make(obs_mode="rgb+state", **SMALL) for _ in range(2)])
    single = make(obs_mode="rgb+state", **SMALL)
    obs, _ = envs.reset(seed=0)
    single.reset(seed=1)
    envs.action_space.seed(0)
    for _ in range(5):
        actions = envs.action_space.sample()
        obs, *_ = envs.step(actions)
        single_obs, *_ = single.step(actions[1])
    assert obs["rgb_static"].shape == (2, 32, 32, 3)
    for key in ("rgb_static", "rgb_gripper", "robot_obs"):
        np.testing.assert_array_equal(obs[key][1], single_obs[key])
    envs.close()
    single.close()


def test_door_and_drawer_moves_need_room_to_fire():
    env = make(scene="C")
    obs, _ = env.reset(seed=0)
    scene_obs = obs["scene_obs"].copy()
    scene_obs[0], scene_obs[1] = 0.0, 0.0  # door right, drawer closed: both can move fully
    env.reset(options={"robot_obs": obs["robot_obs"], "scene_obs": scene_obs})
    assert {"move_slider_left", "open_drawer"} <= set(env.unwrapped.applicable_tasks())
    # Still 'right' and 'closed' symbolically, but 0.14 m and 0.11 m of travel cannot beat the
    # oracle's 0.15 m and 0.12 m thresholds.
    scene_obs[0], scene_obs[1] = 0.10, 0.11
    env.reset(options={"robot_obs": obs["robot_obs"], "scene_obs": scene_obs})
    applicable = set(env.unwrapped.applicable_tasks())
    assert "move_slider_left" not in applicable and "open_drawer" not in applicable
    assert "move_slider_right" not in applicable and "close_drawer" not in applicable
    env.close()


def test_pushes_off_the_table_end_are_not_applicable():
    env = make(scene="D")
    obs, _ = env.reset(seed=0)
    scene_obs = obs["scene_obs"].copy()
    # Red near the right end of the table top (x 0.44), blue and pink in the middle.
    scene_obs[1] = 0.2  # drawer open
    scene_obs[6:24] = [0.35, -0.10, 0.46, 0, 0, 1.57, -0.05, -0.10, 0.46, 0, 0, 1.57, 0.12, -0.10, 0.46, 0, 0, 1.57]
    env.reset(options={"robot_obs": obs["robot_obs"], "scene_obs": scene_obs})
    applicable = set(env.unwrapped.applicable_tasks())
    assert "push_red_block_right" not in applicable  # 0.1 m more would leave 0.07 m to the end
    assert {"push_red_block_left", "push_blue_block_right", "push_blue_block_left"} <= applicable
    # push_into_drawer: one block on the table (alone on its top), the others on the shelf.
    scene_obs[6:24] = [0.1, -0.10, 0.46, 0, 0, 1.57, -0.2409, 0.0924, 0.461, 0, 0, 1.57,
                       0.0703, 0.0924, 0.461, 0, 0, 1.57]
    scene_obs[0] = 0.0
    env.reset(options={"robot_obs": obs["robot_obs"], "scene_obs": scene_obs})
    assert "push_into_drawer" in env.unwrapped.applicable_tasks()
    env.close()


@pytest.mark.parametrize("call", ["step", "reset", "render", "applicable_tasks"])
def test_calls_after_close_say_the_env_is_closed(call):
    env = make(render_mode="rgb_array", static_size=32)
    env.reset(seed=0)
    env.close()
    calls = {"step": lambda: env.step(np.zeros(7)), "reset": lambda: env.reset(seed=0),
             "render": env.render, "applicable_tasks": env.unwrapped.applicable_tasks}
    with pytest.raises(RuntimeError, match="env is closed"):
        calls[call]()


@pytest.mark.parametrize(
    "index, value, name",
    [(0, 1e6, "x"), (1, -1e30, "y"), (2, -0.5, "z"), (3, 4.0, "roll"), (5, -1e6, "yaw")],
)
def test_absolute_targets_outside_the_action_space_are_refused(index, value, name):
    env = make(action_mode="absolute")
    obs, _ = env.reset(seed=0)
    action = np.concatenate([obs["robot_obs"][:6], [1.0]])
    env.step(action)  # the current pose is a valid target
    action[index] = value
    with pytest.raises(ValueError, match=rf"absolute action {name} = .* outside its range \["):
        env.step(action)
    env.close()


def _valid_state():
    robot_obs, scene_obs = sequences.get_env_state_for_initial_condition(sequences.get_sequences(1)[0][0])
    return np.array(robot_obs, dtype=float), np.array(scene_obs, dtype=float)


def _edit(robot=None, scene=None):
    robot_obs, scene_obs = _valid_state()
    for index, value in (robot or {}).items():
        robot_obs[index] = value
    for index, value in (scene or {}).items():
        scene_obs[index] = value
    return robot_obs, scene_obs


# Red block pose: scene_obs[6:12]; blue 12:18; pink 18:24.
IMPOSSIBLE_STATES = {
    "block below the table top": (_edit(scene={8: 0.2}), r"block_red z = 0.2 is outside the workspace \[0.3, 1.3\]"),
    "block 5 m away": (_edit(scene={6: 5.0}), r"block_red x = 5 is outside the workspace \[-0.6, 0.6\]"),
    "drawer at 3.0": (_edit(scene={1: 3.0}), r"scene_obs\[1\] \(drawer\) = 3 is outside its range \[0, 0.22\]"),
    "drawer at 5.0": (_edit(scene={1: 5.0}), r"drawer\) = 5 is outside its range \[0, 0.22\]"),
    "door past its travel": (_edit(scene={0: 0.5}), r"sliding door\) = 0.5 is outside its range \[0, 0.28\]"),
    "light half on": (_edit(scene={5: 0.5}), r"LED\) = 0.5 must be 0 \(off\) or 1 \(on\)"),
    "arm joint 4 past its limit": (_edit(robot={10: 0.5}), r"arm joint 4\) = 0.5 is outside its range \[-3.0718, -0.0698\]"),
    "gripper wider than it opens": (_edit(robot={6: 0.3}), r"gripper width\) = 0.3 is outside its range \[0, 0.08\]"),
    "two blocks at the same pose": (_edit(scene={12: 0.05, 13: -0.12, 14: 0.46, 6: 0.05, 7: -0.12, 8: 0.46}),
                                    r"block_red is [\d.]+ cm inside block_blue"),
    "block inside the table top": (_edit(scene={6: -0.3, 7: -0.1, 8: 0.42}), r"block_red is [\d.]+ cm inside table base_link"),
}


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE_STATES))
def test_impossible_reset_states_are_refused_naming_the_value_and_range(case):
    (robot_obs, scene_obs), message = IMPOSSIBLE_STATES[case]
    env = make()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.reset(options={"robot_obs": robot_obs, "scene_obs": scene_obs, "task": "open_drawer"})
    with pytest.raises(RuntimeError, match="reset"):  # a refused reset leaves no episode to step
        env.step(np.zeros(7))
    env.close()


def test_value_checks_run_before_the_backend_sees_the_state():
    env = make()
    calls = []
    env.unwrapped.sim.reset = lambda **kwargs: calls.append(kwargs)
    robot_obs, scene_obs = _edit(scene={1: 3.0})
    with pytest.raises(ValueError, match="drawer"):
        env.reset(options={"robot_obs": robot_obs, "scene_obs": scene_obs, "task": "open_drawer"})
    assert calls == []
    env.close()


def test_blocks_in_the_open_drawer_on_the_shelf_and_stacked_are_accepted():
    # Drawer open: its tray floor (top z 0.34) spans y -0.38..-0.16 around the drawer's x (0.18 in D).
    robot_obs, scene_obs = _edit(scene={1: 0.22, 6: 0.18, 7: -0.27, 8: 0.361, 11: 0.0,
                                        12: 0.05, 13: -0.12, 14: 0.46, 18: 0.05, 19: -0.12, 20: 0.501})
    env = make()
    obs, _ = env.reset(options={"robot_obs": robot_obs, "scene_obs": scene_obs, "task": "close_drawer"})
    for _ in range(10):
        obs, _, _, truncated, info = env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
        assert not truncated and "physics_error" not in info
    np.testing.assert_allclose(obs["scene_obs"][6:9], [0.18, -0.27, 0.36], atol=0.005)  # still in the drawer
    assert obs["scene_obs"][20] > 0.49  # pink still stacked on blue
    env.close()


def test_a_block_leaving_the_workspace_is_reported_as_a_physics_error():
    # Past the table top's end (x 0.44): the block falls, and nothing below catches it.
    robot_obs, scene_obs = _edit(scene={6: 0.55, 7: -0.1, 8: 0.46})
    env = make()
    env.reset(options={"robot_obs": robot_obs, "scene_obs": scene_obs, "task": "open_drawer"})
    for _ in range(30):
        obs, reward, terminated, truncated, info = env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
        if truncated:
            break
    assert truncated and not terminated and reward == 0.0 and info["physics_error"]
    assert "block_red z = " in info["physics_error_detail"] and "outside the workspace" in info["physics_error_detail"]
    assert info["elapsed_steps"] < 30
    env.close()
