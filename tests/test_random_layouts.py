"""Random layouts draw the table's joints and lights as well as the blocks, on both backends.

A random reset (no explicit ``scene_obs``) must be able to start every task whose condition is
about the door, the drawer or a light (CALVIN's evaluation initial states have each of them
either way, calvin_agent/evaluation/utils.py get_env_state_for_initial_condition). The tests on
the official simulator are marked ``calvin`` and skipped when calvin_env is not importable
(docs/calvin_backend.md says how to install it).
"""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest

import rftf_gym  # noqa: F401  (registers RFTF-CALVIN-v0)
from rftf_gym.conventions import DRAWER_RANGE, SLIDER_RANGE, SWITCH_RANGE
from rftf_gym.experts import reset_to_task
from rftf_gym.sim.layout import LAYOUTS, sample_articulation
from rftf_gym.tasks import TASK_NAMES

HAVE_CALVIN = importlib.util.find_spec("calvin_env") is not None
needs_calvin = pytest.mark.skipif(
    not HAVE_CALVIN,
    reason="calvin_env is not installed; see docs/calvin_backend.md to run the official-simulator tests",
)
# Tasks no random layout can start: they need a block held, in the drawer, or stacked (the
# experts' reset_to_task reaches them by a lift or an edited layout).
NOT_FROM_A_RANDOM_LAYOUT = frozenset(
    {"place_in_slider", "place_in_drawer", "stack_block", "unstack_block"}
    | {f"lift_{color}_block_drawer" for color in ("red", "blue", "pink")}
)
FROM_A_RANDOM_LAYOUT = tuple(task for task in TASK_NAMES if task not in NOT_FROM_A_RANDOM_LAYOUT)
# Needs the door, the drawer or a light away from its initial state (0): never applicable in
# calvin_env's own random reset.
NEED_A_MOVED_JOINT_OR_LIGHT = ("close_drawer", "move_slider_right", "turn_off_lightbulb", "turn_off_led",
                               "push_into_drawer")
SEEDS = 48


def _check_random_layouts(backend: str, scene: str) -> None:
    env = gym.make("RFTF-CALVIN-v0", backend=backend, scene=scene, obs_mode="state")
    try:
        joints, seen = [], set()
        for seed in range(SEEDS):
            obs, _ = env.reset(seed=seed)
            joints.append(obs["scene_obs"][:6])
            seen.update(env.unwrapped.applicable_tasks())
        door, drawer, button, switch, bulb, led = np.asarray(joints).T
        travel = SLIDER_RANGE[scene]
        assert door.min() < 0.2 * travel and door.max() > 0.8 * travel, door
        assert drawer.min() < 0.2 * DRAWER_RANGE and drawer.max() > 0.8 * DRAWER_RANGE, drawer
        assert np.all(door >= -1e-3) and np.all(door <= travel + 1e-3)
        assert np.all(drawer >= -1e-3) and np.all(drawer <= DRAWER_RANGE + 1e-3)
        np.testing.assert_allclose(button, 0.0, atol=2e-3)
        # The switch rests at either end stop and the lightbulb follows it.
        on = switch > SWITCH_RANGE / 2
        assert on.any() and (~on).any()
        np.testing.assert_allclose(switch[on], SWITCH_RANGE, atol=2e-3)
        np.testing.assert_allclose(switch[~on], 0.0, atol=2e-3)
        np.testing.assert_array_equal(bulb, on.astype(float))
        assert set(led) == {0.0, 1.0}
        missing = set(FROM_A_RANDOM_LAYOUT) - seen
        assert not missing, f"never applicable in {SEEDS} random layouts of scene {scene}: {sorted(missing)}"
        # A fixed task that needs a moved joint or a lit light starts from a random layout.
        for task in NEED_A_MOVED_JOINT_OR_LIGHT:
            _, info = env.reset(seed=3, options={"task": task})
            assert info["task"] == task and task in env.unwrapped.applicable_tasks()
    finally:
        env.close()


def test_sample_articulation_draws_each_joint_and_light() -> None:
    layout = LAYOUTS["B"]
    draws = np.array([sample_articulation(layout, np.random.default_rng(seed)) for seed in range(200)])
    assert draws.shape == (200, 6)
    assert 0.0 <= draws[:, 0].min() < 0.03 and layout.slider_range - 0.03 < draws[:, 0].max() <= layout.slider_range
    assert 0.0 <= draws[:, 1].min() < 0.03 and DRAWER_RANGE - 0.03 < draws[:, 1].max() <= DRAWER_RANGE
    np.testing.assert_array_equal(draws[:, 2], 0.0)
    assert set(draws[:, 3]) == {0.0, SWITCH_RANGE}
    np.testing.assert_array_equal(draws[:, 4], (draws[:, 3] > 0).astype(float))
    assert set(draws[:, 5]) == {0.0, 1.0}
    # Reproducible from the generator's state.
    assert sample_articulation(layout, np.random.default_rng(5)) == sample_articulation(layout, np.random.default_rng(5))


@pytest.mark.parametrize("scene", ["A", "B", "C", "D"])
def test_embedded_random_layouts_draw_joints_lights_and_every_task(scene: str) -> None:
    _check_random_layouts("embedded", scene)


@pytest.mark.calvin
@needs_calvin
@pytest.mark.parametrize("scene", ["A", "D"])
def test_official_random_layouts_draw_joints_lights_and_every_task(scene: str) -> None:
    _check_random_layouts("calvin", scene)


@pytest.mark.calvin
@needs_calvin
def test_official_random_layout_is_the_embedded_one_for_the_same_seed() -> None:
    # The official env first: calvin_env's Robot adds a body to pybullet client 0, which would
    # otherwise be the embedded env's (docs/calvin_backend.md).
    official = gym.make("RFTF-CALVIN-v0", backend="calvin", scene="C", obs_mode="state")
    embedded = gym.make("RFTF-CALVIN-v0", backend="embedded", scene="C", obs_mode="state")
    try:
        first, _ = official.reset(seed=11)
        again, _ = official.reset(seed=11)
        np.testing.assert_allclose(again["scene_obs"], first["scene_obs"], atol=1e-4)
        for seed in range(10):
            ours, _ = embedded.reset(seed=seed)
            theirs, _ = official.reset(seed=seed)
            # Joints and lights exactly; blocks where both put them (the embedded backend lets
            # them settle for one control period after the reset, the official for one substep).
            np.testing.assert_allclose(theirs["scene_obs"][:6], ours["scene_obs"][:6], atol=2e-3)
            np.testing.assert_allclose(theirs["scene_obs"][6:].reshape(3, 6)[:, :2],
                                       ours["scene_obs"][6:].reshape(3, 6)[:, :2], atol=2e-3)
    finally:
        embedded.close()
        official.close()


@pytest.mark.calvin
@needs_calvin
def test_official_reset_to_task_reaches_place_in_drawer() -> None:
    env = gym.make("RFTF-CALVIN-v0", backend="calvin", scene="D", obs_mode="state")
    try:
        _, info = reset_to_task(env, "place_in_drawer", np.random.default_rng(0), tries=30)
        assert info["task"] == "place_in_drawer"
        assert "place_in_drawer" in env.unwrapped.applicable_tasks()
    finally:
        env.close()
