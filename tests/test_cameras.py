"""The layered static camera must draw what a plain render of the physics client draws."""

import numpy as np
import pytest

from rftf_gym.sim.cameras import StaticCamera
from rftf_gym.conventions import DRAWER_RANGE, SWITCH_RANGE
from rftf_gym.sim.play_table import EmbeddedPlayTable


def _assert_close(fast: np.ndarray, full: np.ndarray) -> None:
    """Same scene: tiny mean difference, and almost no pixel far off (depth ties on edges aside)."""
    diff = np.abs(fast.astype(int) - full.astype(int)).max(axis=-1)
    assert diff.mean() < 0.5
    assert (diff > 30).mean() < 0.005


@pytest.mark.parametrize("scene,size", [("A", (200, 200)), ("D", (200, 200)), ("B", (64, 48))])
def test_static_camera_matches_full_render(scene: str, size: tuple[int, int]) -> None:
    env = EmbeddedPlayTable(scene, cameras={"static": size})
    try:
        env.reset(rng=np.random.default_rng(0))
        full = StaticCamera(env.client, *size)
        rng = np.random.default_rng(1)
        for _ in range(5):
            env.step(rng.uniform(-1, 1, 7))
            _assert_close(env.render("static"), full.render())
        # Drawer open, door moved, both lights toggled: the cached table parts must follow.
        scene_obs = env.scene_obs()
        scene_obs[:6] = [0.6 * env.layout.slider_range, DRAWER_RANGE, 0.0, SWITCH_RANGE, 1.0, 1.0 - scene_obs[5]]
        env.reset(robot_obs=env.robot.get_obs(), scene_obs=scene_obs)
        for _ in range(3):
            env.step(rng.uniform(-1, 1, 7))
            _assert_close(env.render("static"), full.render())
        # Only the door and drawer move (same lights), then only the LED toggles.
        scene_obs = env.scene_obs()
        scene_obs[:2] = [0.0, 0.3 * DRAWER_RANGE]
        env.reset(robot_obs=env.robot.get_obs(), scene_obs=scene_obs)
        _assert_close(env.render("static"), full.render())
        scene_obs[5] = 1.0 - scene_obs[5]
        env.reset(robot_obs=env.robot.get_obs(), scene_obs=scene_obs)
        _assert_close(env.render("static"), full.render())
    finally:
        env.close()

