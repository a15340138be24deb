"""Scores of a value model's output: does it rise with task progress, and only with progress?

Pure numpy functions over value sequences (one 1-d array per episode, in time order):

- `value_order_correlation` (VOC): Spearman rank correlation of the values with the time index,
  the measure of GVL (Ma et al. 2024, "Vision Language Models are In-Context Value Learners");
  1 for values that rise at every step, -1 for values that fall at every step.
- `pairwise_accuracy`: share of frame pairs (i < j) whose later frame has the higher value, the
  accuracy RFTF reports for its value model (arXiv 2505.19767, section 4.3 and Fig. 5).
- `pairwise_accuracy_at_lag`: the same over pairs a fixed number of frames apart (near pairs
  are the hard ones).
- `same_time_accuracy` and `roc_auc`: success against failure at the same time step, and of the
  final values; pairs that elapsed time alone cannot order.
- `clock_values`: the baseline V = t / T, a pure clock. It scores VOC 1 and pairwise accuracy 1 on
  every successful demonstration, so only negatives (reversed clips, wrong instructions,
  failures) separate a progress model from it.

Ties count half in every accuracy (as in the Mann-Whitney U statistic), so a constant value
model scores 0.5 and never looks better than chance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_sequence(values: np.ndarray | Sequence[float], name: str = "values") -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-d sequence, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds non-finite numbers")
    return array


def rankdata(values: np.ndarray | Sequence[float]) -> np.ndarray:
    """Ranks 1..n of a 1-d array, tied values sharing their average rank."""
    array = _as_sequence(values)
    order = np.argsort(array, kind="mergesort")
    sorted_values = array[order]
    # Boundaries of runs of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], array.size]
    ranks = np.empty(array.size, dtype=np.float64)
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0  # mean of ranks start+1 .. end
    return ranks


def spearman(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of the tie-averaged ranks).

    A constant sequence has no rank order to correlate with; the result is then 0.0 rather than
    undefined, so a flat value curve counts as "no progress signal" in averages.

    Raises:
        ValueError: Sequences of different lengths or shorter than 2.
    """
    rx, ry = rankdata(x), rankdata(y)
    if rx.size != ry.size or rx.size < 2:
        raise ValueError(f"need two sequences of equal length >= 2, got {rx.size} and {ry.size}")
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    return float(np.sum(dx * dy) / denom) if denom > 0 else 0.0


def value_order_correlation(values: np.ndarray | Sequence[float]) -> float:
    """VOC of one episode: Spearman correlation of its values with time 0..T-1."""
    array = _as_sequence(values)
    return spearman(np.arange(array.size), array)


def mean_voc(episodes: Sequence[np.ndarray | Sequence[float]]) -> float:
    """Mean VOC over episodes (each episode weighs the same, as GVL averages per trajectory)."""
    if len(episodes) == 0:
        raise ValueError("mean_voc needs at least one episode")
    return float(np.mean([value_order_correlation(v) for v in episodes]))


def net_progress(episodes: Sequence[np.ndarray | Sequence[float]]) -> float:
    """Mean over episodes of (v_T - v_0) / (max v - min v): the net change of the per-episode
    min-max normalised values, which is what RFTF's dense rewards (Eq. 2, from values normalised
    per episode, section 3.3) add up to over an episode up to discounting; 0 for a flat episode."""
    if len(episodes) == 0:
        raise ValueError("net_progress needs at least one episode")
    out = []
    for v in episodes:
        array = _as_sequence(v)
        span = float(array.max() - array.min())
        out.append((float(array[-1]) - float(array[0])) / span if span > 0 else 0.0)
    return float(np.mean(out))


def pairwise_counts(values: np.ndarray | Sequence[float]) -> tuple[float, int]:
    """Correctly ordered pairs (i < j with v_j > v_i; ties count half) and the number of pairs."""
    array = _as_sequence(values)
    diff = array[None, :] - array[:, None]  # diff[i, j] = v_j - v_i
    upper = np.triu(np.ones(diff.shape, dtype=bool), k=1)
    d = diff[upper]
    return float(np.sum(d > 0) + 0.5 * np.sum(d == 0)), int(d.size)


def pairwise_accuracy(episodes: Sequence[np.ndarray | Sequence[float]]) -> float:
    """Share of ordered frame pairs, pooled over all pairs of all episodes.

    RFTF's accuracy (section 4.3): two frames of one demonstration are scored correctly when the
    later frame has the higher value.

    Raises:
        ValueError: No episode with at least two frames.
    """
    correct, total = 0.0, 0
    for values in episodes:
        c, n = pairwise_counts(values)
        correct, total = correct + c, total + n
    if total == 0:
        raise ValueError("pairwise_accuracy needs an episode with at least two frames")
    return correct / total


def pairwise_accuracy_at_lag(episodes: Sequence[np.ndarray | Sequence[float]], lag: int) -> float | None:
    """Share of frame pairs exactly ``lag`` steps apart (v_{t+lag} > v_t; ties half), pooled.

    Returns:
        The accuracy, or None when no episode is longer than ``lag`` frames.
    """
    if lag < 1:
        raise ValueError(f"lag must be >= 1, got {lag}")
    correct, total = 0.0, 0
    for values in episodes:
        array = _as_sequence(values)
        d = array[lag:] - array[:-lag]
        correct += float(np.sum(d > 0) + 0.5 * np.sum(d == 0))
        total += int(d.size)
    return correct / total if total else None


def same_time_accuracy(
    successes: Sequence[np.ndarray | Sequence[float]],
    failures: Sequence[np.ndarray | Sequence[float]],
) -> tuple[float, int]:
    """Share of (success, failure) frame pairs at the same time step where the success is higher.

    Every successful episode is paired with every failed one (of the same task: the caller groups
    them), at each step t that both reached. A clock gives both frames the same value, so it
    scores exactly 0.5.

    Returns:
        (accuracy, number of compared pairs); accuracy is NaN when no pair exists.
    """
    correct, total = 0.0, 0
    succ = [_as_sequence(v, "success values") for v in successes]
    fail = [_as_sequence(v, "failure values") for v in failures]
    for s in succ:
        for f in fail:
            t = min(s.size, f.size)
            d = s[:t] - f[:t]
            correct += float(np.sum(d > 0) + 0.5 * np.sum(d == 0))
            total += int(t)
    return (correct / total if total else float("nan")), total


def roc_auc(positive: Sequence[float] | np.ndarray, negative: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve: probability that a positive scores above a negative.

    Computed as the Mann-Whitney U statistic over all (positive, negative) pairs, ties half.

    Raises:
        ValueError: Either group is empty.
    """
    pos = _as_sequence(positive, "positive scores")
    neg = _as_sequence(negative, "negative scores")
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"roc_auc needs both groups, got {pos.size} positives, {neg.size} negatives")
    d = pos[:, None] - neg[None, :]
    return float((np.sum(d > 0) + 0.5 * np.sum(d == 0)) / d.size)


def clock_values(length: int, horizon: int | None = None) -> np.ndarray:
    """The clock baseline V = t / T for t = 0..length-1.

    Args:
        length: Number of frames of the episode.
        horizon: T; defaults to ``length``. Give the episode cap (CALVIN's 360 steps) to get a
            clock that does not know when an episode ends, the same for every episode, so that
            same-time pairs tie.
    """
    horizon = length if horizon is None else horizon
    if length < 1 or horizon < 1:
        raise ValueError(f"length and horizon must be >= 1, got {length} and {horizon}")
    return np.arange(length, dtype=np.float64) / horizon
