"""Paired and two-way bootstrap of chain results (rftf_gym.evaluation), checked by hand."""

import itertools

import numpy as np
import pytest

from rftf_gym.evaluation import bootstrap_mean, paired_bootstrap


def test_constant_difference_has_a_point_interval():
    # Per-chain results vary wildly, but the new policy is always exactly one better: paired, the
    # difference is 1 on every chain, so every resample gives 1.
    before = np.array([0, 5, 2, 0, 4, 1])
    after = before + 1
    out = paired_bootstrap(after, before, num_bootstrap=500)
    assert out["value"] == 1.0
    assert out["ci"] == [1.0, 1.0]
    assert out["share_above_zero"] == 1.0 and out["share_below_zero"] == 0.0
    # Unpaired, the same data gives a wide interval around the mean of `after`.
    alone = bootstrap_mean(after, num_bootstrap=500)
    assert alone["ci"][1] - alone["ci"][0] > 1.0


def test_two_chains_by_hand():
    # Differences (+1, -1): a resample of 2 chains is (+1,+1) -> 1, mixed -> 0 or (-1,-1) -> -1
    # with probabilities 1/4, 1/2, 1/4, so the 2.5 % and 97.5 % points are -1 and +1.
    out = paired_bootstrap([3, 0], [2, 1], num_bootstrap=4000, seed=3)
    assert out["value"] == 0.0
    assert out["ci"] == [-1.0, 1.0]
    assert out["num_chains"] == 2 and out["num_seeds"] == 1


def test_seed_resampling_by_hand():
    # Seed 0 gains nothing on any chain, seed 1 gains 2 on every chain: the mean is 1; resampling
    # the two seeds gives 0, 1 or 2 with probabilities 1/4, 1/2, 1/4 (the chains cancel out), so
    # the 95 % interval is [0, 2]. With one seed only the chains are resampled.
    before = np.zeros((2, 5))
    after = np.array([[0.0] * 5, [2.0] * 5])
    out = paired_bootstrap(after, before, num_bootstrap=4000, seed=1)
    assert out["value"] == 1.0
    assert out["ci"] == [0.0, 2.0]
    assert out["num_seeds"] == 2
    assert paired_bootstrap(after[1:], before[1:])["ci"] == [2.0, 2.0]


def test_interval_matches_the_exact_bootstrap_distribution():
    # Four chains with differences (0, 1, 3, 7): the 4**4 = 256 equally likely resamples have
    # means with CDF F(0.25) = 5/256 < 0.025 <= F(0.5) = 11/256 and
    # F(5.25) = 247/256 < 0.975 <= F(5.5) = 251/256, so the exact 95 % percentile interval is
    # [0.5, 5.5] (both quantiles far from a jump, so Monte Carlo lands on them).
    diff = np.array([0.0, 1.0, 3.0, 7.0])
    means = np.sort([diff[list(idx)].mean() for idx in itertools.product(range(4), repeat=4)])
    cdf = np.arange(1, means.size + 1) / means.size
    exact = [means[np.argmax(cdf >= 0.025)], means[np.argmax(cdf >= 0.975)]]
    assert exact == [0.5, 5.5]
    out = bootstrap_mean(diff, num_bootstrap=200_000, seed=0)
    assert out["value"] == 2.75
    assert out["ci"] == pytest.approx(exact, abs=1e-9)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same chains"):
        paired_bootstrap([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="not be empty"):
        bootstrap_mean([])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_mean([1.0, float("nan")])
    with pytest.raises(ValueError, match="num_bootstrap"):
        bootstrap_mean([1.0], num_bootstrap=0)
