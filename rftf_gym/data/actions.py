"""CALVIN's relative actions (``rel_actions``) from consecutive robot poses."""

from __future__ import annotations

import numpy as np

from rftf_gym.conventions import MAX_REL_ORN, MAX_REL_POS, wrap_angle


def to_relative_actions(
    robot_obs_t: np.ndarray, robot_obs_t1: np.ndarray, gripper: np.ndarray | float
) -> np.ndarray:
    """CALVIN ``rel_actions`` that move the tcp from one pose to the next.

    The position change is clipped to +-0.02 m and the euler change (wrapped to [-pi, pi)) to
    +-0.05 rad, then both are divided by the clip so that they lie in [-1, 1]
    (calvin_env ``utils.to_relative_action``; README scaling factors 50 and 20). The gripper
    action is copied.

    Args:
        robot_obs_t: Current ``robot_obs`` (..., >= 6), tcp pos then euler xyz.
        robot_obs_t1: Next ``robot_obs`` with the same leading shape.
        gripper: Gripper action (-1 close, +1 open), scalar or shaped like the leading dims.

    Returns:
        float64 array (..., 7).
    """
    obs_t = np.asarray(robot_obs_t, dtype=np.float64)
    obs_t1 = np.asarray(robot_obs_t1, dtype=np.float64)
    if obs_t.shape != obs_t1.shape or obs_t.shape[-1] < 6:
        raise ValueError(f"robot_obs shapes {obs_t.shape} and {obs_t1.shape} must match, >= 6 long")
    pos = np.clip(obs_t1[..., :3] - obs_t[..., :3], -MAX_REL_POS, MAX_REL_POS) / MAX_REL_POS
    orn = np.clip(wrap_angle(obs_t1[..., 3:6] - obs_t[..., 3:6]), -MAX_REL_ORN, MAX_REL_ORN)
    grip = np.broadcast_to(np.asarray(gripper, dtype=np.float64), obs_t.shape[:-1])[..., None]
    return np.concatenate([pos, orn / MAX_REL_ORN, grip], axis=-1)
