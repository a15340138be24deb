"""rftf_gym.conventions: the shared CALVIN facts hold together and the helpers compute them."""

from __future__ import annotations

import numpy as np

from rftf_gym import conventions as c


def test_wrap_angle():
    angles = [np.pi + 0.1, -np.pi - 0.1, 0.3, 4 * np.pi, -np.pi]
    expected = [-np.pi + 0.1, np.pi - 0.1, 0.3, 0.0, -np.pi]
    np.testing.assert_allclose(c.wrap_angle(angles), expected, atol=1e-12)
    assert c.wrap_angle(np.pi) == -np.pi  # the interval is [-pi, pi)


def test_scene_obs_layout_ends_with_the_three_block_poses():
    assert list(c.BLOCK_OFFSETS) == list(c.COLORS)
    assert c.BLOCK_OFFSETS["pink"] + 6 == c.SCENE_OBS_DIM
    assert c.BLOCKS == ("block_red", "block_blue", "block_pink")


def test_evaluation_reset_values_lie_within_the_joint_ranges():
    assert len(c.NEUTRAL_ROBOT_OBS) == c.ROBOT_OBS_DIM
    assert all(c.EVAL_SLIDER_LEFT_JOINT <= c.SLIDER_RANGE[s] for s in ("A", "D"))
    low, high = c.EVAL_BLOCK_YAW_RANGE
    assert low < np.pi / 2 < high and np.isclose(high - low, 2 * c.EVAL_BLOCK_YAW_BAND)
    assert c.PHYSICS_HZ % c.CONTROL_HZ == 0
