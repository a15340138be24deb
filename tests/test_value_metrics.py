"""Value-model scores against hand-computed answers on hand-made value sequences."""

from __future__ import annotations

import numpy as np
import pytest

from rftf_gym import value_metrics as vm


def test_rankdata_averages_ties():
    np.testing.assert_allclose(vm.rankdata([10, 30, 20, 20]), [1, 4, 2.5, 2.5])
    np.testing.assert_allclose(vm.rankdata([5, 5, 5]), [2, 2, 2])


def test_voc_of_monotone_reversed_and_flat_sequences():
    assert vm.value_order_correlation([0.1, 0.2, 0.5, 0.9]) == pytest.approx(1.0)
    assert vm.value_order_correlation([3.0, 2.0, 1.0, -4.0]) == pytest.approx(-1.0)
    assert vm.value_order_correlation([7.0, 7.0, 7.0]) == 0.0  # no progress signal


def test_voc_hand_computed_with_a_swap():
    # values 1, 3, 2, 4 -> ranks 1, 3, 2, 4 against time ranks 1..4:
    # d = 0, 1, -1, 0; rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60 = 0.8
    assert vm.value_order_correlation([1.0, 3.0, 2.0, 4.0]) == pytest.approx(0.8)
    # With a tie: values 1, 2, 2 -> ranks 1, 2.5, 2.5; Pearson with 1, 2, 3:
    # dx = -1, 0, 1; dy = -1, .5, .5 -> cov 1.5, |dx| = sqrt 2, |dy| = sqrt 1.5 -> 0.8660
    assert vm.value_order_correlation([1.0, 2.0, 2.0]) == pytest.approx(1.5 / np.sqrt(3.0))


def test_mean_voc_weighs_episodes_equally():
    assert vm.mean_voc([[0, 1, 2, 3, 4, 5, 6], [2, 1]]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="at least one"):
        vm.mean_voc([])


def test_pairwise_accuracy_hand_computed():
    # [1, 3, 2]: pairs (0,1) up, (0,2) up, (1,2) down -> 2 of 3
    assert vm.pairwise_counts([1.0, 3.0, 2.0]) == (2.0, 3)
    # tie counts half: [1, 1] -> 0.5 of 1
    assert vm.pairwise_counts([1.0, 1.0]) == (0.5, 1)
    # pooled over pairs, not averaged over episodes: (2 + 0.5 + 0) / (3 + 1 + 1)
    assert vm.pairwise_accuracy([[1, 3, 2], [1, 1], [2, 1]]) == pytest.approx(2.5 / 5)
    assert vm.pairwise_accuracy([[0, 1, 2, 3]]) == 1.0
    with pytest.raises(ValueError, match="two frames"):
        vm.pairwise_accuracy([[1.0]])


def test_same_time_accuracy_pairs_every_success_with_every_failure_up_to_the_shorter():
    successes = [[0.0, 2.0, 4.0]]
    failures = [[0.0, 1.0, 5.0, 9.0], [1.0, 1.0]]
    # vs failure 0 (3 steps): tie, win, loss -> 1.5; vs failure 1 (2 steps): loss, win -> 1
    acc, n = vm.same_time_accuracy(successes, failures)
    assert n == 5
    assert acc == pytest.approx(2.5 / 5)
    assert np.isnan(vm.same_time_accuracy([], failures)[0])


def test_a_clock_ties_every_same_time_pair():
    successes = [vm.clock_values(n, horizon=360) for n in (40, 55)]
    failures = [vm.clock_values(360, horizon=360)]
    assert vm.same_time_accuracy(successes, failures) == (0.5, 95)


def test_roc_auc_hand_computed():
    # positives 0.9, 0.4 vs negatives 0.5, 0.4, 0.1: wins 3 + (0.5 tie + 1) = 4.5 of 6
    assert vm.roc_auc([0.9, 0.4], [0.5, 0.4, 0.1]) == pytest.approx(4.5 / 6)
    assert vm.roc_auc([1.0], [0.0]) == 1.0
    with pytest.raises(ValueError, match="both groups"):
        vm.roc_auc([], [0.0])


def test_clock_values_and_bad_input():
    np.testing.assert_allclose(vm.clock_values(4), [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(vm.clock_values(2, horizon=4), [0, 0.25])
    assert vm.value_order_correlation(vm.clock_values(50)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="1-d"):
        vm.value_order_correlation(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        vm.pairwise_accuracy([[0.0, np.nan]])
    with pytest.raises(ValueError, match=">= 1"):
        vm.clock_values(0)


def test_net_progress_is_the_normalised_net_change():
    assert vm.net_progress([np.array([0.0, 2.0, 1.0])]) == pytest.approx(0.5)  # (1 - 0) / (2 - 0)
    assert vm.net_progress([np.arange(5.0), np.arange(5.0)[::-1], np.ones(3)]) == pytest.approx(0.0)  # +1, -1, flat 0
    with pytest.raises(ValueError, match="at least one episode"):
        vm.net_progress([])
