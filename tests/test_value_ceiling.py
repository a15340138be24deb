"""bench/value_ceiling.py: the nearest-neighbour and final-state references on hand-made episodes."""

import numpy as np
import pytest
from conftest import load_bench_module

from rftf_gym import value_diagnostics as diag


@pytest.fixture(scope="module")
def bench():
    return load_bench_module("value_ceiling")


def episode(task: str, length: int, offset: float, speed: float = 1.0) -> diag.Episode:
    """The drawer (scene_obs[1]) opens at ``speed`` per frame from a start that differs by ``offset``,
    with the arm at a position that differs by ``offset`` too (another table layout)."""
    t = np.arange(length, dtype=float)
    robot, scene = np.zeros((length, 15)), np.zeros((length, 24))
    robot[:, 0] = offset
    scene[:, 1] = offset + speed * t
    return diag.Episode({"robot_obs": robot, "scene_obs": scene}, task, task)


def test_knn_votes_the_elapsed_fraction_of_the_same_task(bench):
    train = [episode("open_drawer", 11, 0.0), episode("open_drawer", 11, 0.1), episode("close_drawer", 11, 0.0, -1.0)]
    # Same layout as a training episode: every frame finds its twin, the fraction elapsed exactly.
    [same] = bench.knn_progress(train, [episode("open_drawer", 11, 0.0)], "absolute", 1)
    np.testing.assert_allclose(same, np.arange(11) / 10)
    # Another layout (offset 5): absolute features match one end of the training data only,
    # differences from the first frame still read the motion.
    far = episode("open_drawer", 11, 5.0)
    [absolute] = bench.knn_progress(train, [far], "absolute", 1)
    [relative] = bench.knn_progress(train, [far], "start difference", 1)
    assert absolute[0] >= 0.5  # its first frame reads as half done
    np.testing.assert_allclose(relative, np.arange(11) / 10)
    # A task without training episodes gets no estimate.
    assert bench.knn_progress(train, [episode("turn_on_led", 5, 0.0)], "both", 3) == [None]
    with pytest.raises(ValueError, match="k must be"):
        bench.knn_progress(train, [far], "absolute", 0)
    with pytest.raises(ValueError, match="features must be one of"):
        bench.frame_features(far, "velocity")


def test_final_state_distance_rises_to_zero(bench):
    e = episode("open_drawer", 6, 0.0)
    [v] = bench.final_state_distance([e], np.ones(39), tcp_only=False)
    np.testing.assert_allclose(v, -np.arange(5, -1, -1.0))
    [tcp] = bench.final_state_distance([e], np.ones(39), tcp_only=True)
    np.testing.assert_allclose(tcp, 0.0)  # the arm does not move
