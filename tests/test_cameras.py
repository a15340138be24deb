"""The layered static camera must draw what a plain render of the physics client draws."""

import numpy as np
import pytest

from rftf_gym.sim.cameras import StaticCamera, zbuffer_to_depth
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



# ----------------------------------------------------------------------------- depth


def test_zbuffer_to_depth_is_calvins_formula() -> None:
    near, far = 0.01, 10.0
    z = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    depth = zbuffer_to_depth(z, near, far)
    assert depth.dtype == np.float32 and depth.shape == (1, 3)
    # far * near / (far - (far - near) * z): near at z 0, far at z 1, 2 far near / (far + near) at 0.5
    np.testing.assert_allclose(depth[0], [near, 2 * far * near / (far + near), far], rtol=1e-6)


def _view_depth(cam: StaticCamera, point: np.ndarray) -> tuple[int, int, float]:
    """Pixel (row, col) of a world point and its distance along the camera's view axis."""
    view = np.asarray(cam.view).reshape(4, 4).T
    proj = np.asarray(cam.proj).reshape(4, 4).T
    eye = view @ np.append(point, 1.0)
    clip = proj @ eye
    ndc = clip[:3] / clip[3]
    col = int((ndc[0] + 1) / 2 * cam.width)
    row = int((1 - ndc[1]) / 2 * cam.height)
    return row, col, float(-eye[2])


@pytest.mark.parametrize("scene", ["A", "D"])
def test_static_depth_is_metres_along_the_view_axis(scene: str) -> None:
    env = EmbeddedPlayTable(scene, cameras={"static": (200, 200)}, depth=True)
    try:
        env.reset(rng=np.random.default_rng(4))
        full = StaticCamera(env.client, 200, 200)
        rng = np.random.default_rng(5)
        for _ in range(3):
            env.step(rng.uniform(-1, 1, 7))
        rgb, depth = env.render_rgbd("static")
        np.testing.assert_array_equal(rgb, env.render("static"))
        assert depth.dtype == np.float32 and depth.shape == (200, 200)
        # The layered camera's depth is the full render's, where the layers agree on what is nearest.
        _, full_depth = full.render_rgbd()
        assert np.median(np.abs(depth - full_depth)) < 1e-4
        assert (np.abs(depth - full_depth) > 0.01).mean() < 0.005
        # A point on the bare table top, away from the blocks, sits at its view-axis distance.
        blocks = env.scene_obs()[6:].reshape(3, 6)[:, :2]
        points = [np.array([x, y, 0.44]) for x in (0.3, 0.2, -0.25) for y in (-0.05, -0.12)]
        point = max(points, key=lambda q: np.linalg.norm(blocks - q[:2], axis=1).min())
        assert np.linalg.norm(blocks - point[:2], axis=1).min() > 0.08
        row, col, expected = _view_depth(full, point)
        assert abs(depth[row, col] - expected) < 0.01, (depth[row, col], expected)
        # Nothing behind the table: the far plane (10 m).
        assert depth.max() == pytest.approx(10.0, abs=0.01)
    finally:
        env.close()


def test_depth_is_opt_in_and_changes_nothing_else() -> None:
    import gymnasium as gym

    import rftf_gym  # noqa: F401  (registers the env)

    plain = gym.make("RFTF-CALVIN-v0", scene="D", static_size=64, gripper_size=32)
    deep = gym.make("RFTF-CALVIN-v0", scene="D", static_size=64, gripper_size=32, depth=True)
    try:
        assert sorted(plain.observation_space.spaces) == [
            "instruction", "rgb_gripper", "rgb_static", "robot_obs", "scene_obs"]
        assert set(deep.observation_space.spaces) - set(plain.observation_space.spaces) == {
            "depth_static", "depth_gripper"}
        assert deep.observation_space["depth_static"].shape == (64, 64)
        assert deep.observation_space["depth_gripper"].dtype == np.float32
        obs_plain, _ = plain.reset(seed=7)
        obs_deep, _ = deep.reset(seed=7)
        rng = np.random.default_rng(0)
        for step in range(4):
            for key, value in obs_plain.items():
                assert key == "instruction" or np.array_equal(value, obs_deep[key]), (step, key)
            assert deep.observation_space.contains(obs_deep)
            gripper = obs_deep["depth_gripper"]
            assert gripper.shape == (32, 32) and 0.01 <= gripper.min() and gripper.max() <= 2.0 + 1e-3
            action = rng.uniform(-1, 1, 7)
            obs_plain, *_ = plain.step(action)
            obs_deep, *_ = deep.step(action)
    finally:
        plain.close()
        deep.close()
    with pytest.raises(ValueError, match="depth=True needs"):
        gym.make("RFTF-CALVIN-v0", scene="D", obs_mode="state", depth=True)
