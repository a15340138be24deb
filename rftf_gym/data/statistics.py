"""``statistics.yaml``: the normalisation statistics CALVIN's training code reads from a split.

The official data module (``calvin_agent/datasets/utils/episode_utils.py``,
``load_dataset_statistics``) loads ``<split>/statistics.yaml`` and replaces the
``NormalizeVector`` transforms of ``robot_obs`` and ``scene_obs`` in its hydra config with the ones
in the file; the logistic action decoder reads ``act_min_bound`` / ``act_max_bound`` from
``training/statistics.yaml`` (``logistic_policy_network.py``, ``_setup_action_bounds``). The values
are those ``calvin_agent/utils/compute_proprioception_statistics.py`` prints: per-dimension mean
and population standard deviation of ``robot_obs`` and ``scene_obs`` over every frame, and the
per-dimension minimum and maximum of the absolute ``actions``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rftf_gym.data.format import STATISTICS_FILE
from rftf_gym.files import atomic_write
from rftf_gym.data.reader import CalvinDataset

NORMALIZE_TARGET = "calvin_agent.utils.transforms.NormalizeVector"
"""The transform the official config builds for a vector (``calvin_agent/utils/transforms.py``)."""


@dataclass(frozen=True)
class SplitStatistics:
    """Per-dimension statistics of one split."""

    num_frames: int
    robot_obs_mean: np.ndarray
    robot_obs_std: np.ndarray
    scene_obs_mean: np.ndarray
    scene_obs_std: np.ndarray
    act_min_bound: np.ndarray
    act_max_bound: np.ndarray


class _Moments:
    """Count, mean and sum of squared deviations, merged batch by batch (Chan et al.)."""

    def __init__(self, dim: int) -> None:
        self.count, self.mean, self.m2 = 0, np.zeros(dim), np.zeros(dim)

    def add(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, dtype=np.float64)
        n, mean = len(batch), batch.mean(axis=0)
        delta, total = mean - self.mean, self.count + n
        self.m2 += ((batch - mean) ** 2).sum(axis=0) + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.count = total

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.count)


def compute_statistics(dataset: CalvinDataset) -> SplitStatistics:
    """Statistics over every frame of every episode of a split (reads three small keys per frame).

    Raises:
        ValueError: The split has no frames.
        DatasetError: A frame is missing or malformed.
    """
    if len(dataset.episodes) == 0:
        raise ValueError(f"{dataset.path}: no episodes, no statistics")
    robot, scene = _Moments(15), _Moments(24)
    act_min, act_max = np.full(7, np.inf), np.full(7, -np.inf)
    for start, end in dataset.episodes:
        frames = dataset.load_frames(
            range(int(start), int(end) + 1), ("robot_obs", "scene_obs", "actions")
        )
        robot.add(frames["robot_obs"])
        scene.add(frames["scene_obs"])
        act_min = np.minimum(act_min, frames["actions"].min(axis=0))
        act_max = np.maximum(act_max, frames["actions"].max(axis=0))
    return SplitStatistics(
        num_frames=robot.count,
        robot_obs_mean=robot.mean,
        robot_obs_std=robot.std(),
        scene_obs_mean=scene.mean,
        scene_obs_std=scene.std(),
        act_min_bound=act_min,
        act_max_bound=act_max,
    )


def yaml_float(x: float) -> str:
    """A float YAML 1.1 (PyYAML, OmegaConf) reads back as a float: ``1e-05`` would be a string."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"statistics must be finite, got {x}")
    mantissa, e, exponent = repr(x).partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + (e + exponent if e else "")


def _yaml_list(values: np.ndarray) -> str:
    return "[" + ", ".join(yaml_float(v) for v in values) + "]"


def statistics_yaml(stats: SplitStatistics) -> str:
    """The text of ``statistics.yaml`` in the layout of the released files."""
    lines = [
        f"# robot_obs / scene_obs mean and std and actions bounds over {stats.num_frames} frames"
    ]
    for key in ("robot_obs", "scene_obs"):
        lines += [
            f"{key}:",
            f"- _target_: {NORMALIZE_TARGET}",
            f"  mean: {_yaml_list(getattr(stats, key + '_mean'))}",
            f"  std: {_yaml_list(getattr(stats, key + '_std'))}",
        ]
    lines += [
        f"act_min_bound: {_yaml_list(stats.act_min_bound)}",
        f"act_max_bound: {_yaml_list(stats.act_max_bound)}",
    ]
    return "\n".join(lines) + "\n"


def write_statistics(dataset: CalvinDataset) -> Path:
    """Compute a split's statistics and write ``<split>/statistics.yaml`` atomically.

    Returns:
        The path written.
    """
    text = statistics_yaml(compute_statistics(dataset))
    path = dataset.path / STATISTICS_FILE
    atomic_write(path, lambda f: f.write(text.encode()), sync=True)
    return path
