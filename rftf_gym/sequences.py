"""The official CALVIN evaluation chains and their reset states, as pure functions.

Chains are drawn over the symbolic task table of `rftf_gym.symbolic`. Facts (the 192 initial
states, the order of the random draws, block spots, neutral robot pose) come from the public
mees/calvin repository:

- ``calvin_models/calvin_agent/evaluation/multistep_sequences.py`` (``get_sequences``,
  ``get_sequences_for_state2``, ``check_sequence``);
- ``calvin_models/calvin_agent/evaluation/utils.py`` (``get_env_state_for_initial_condition``,
  ``temp_seed``).

The code is our own; the output is identical to the official one: ``get_sequences()`` returns the
same 1000 (initial state, chain) pairs in the same order, and
``get_env_state_for_initial_condition`` the same ``robot_obs``/``scene_obs`` to the last digit.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rftf_gym.conventions import (
    BLOCK_OFFSETS,
    CHAIN_LEN,
    COLORS,
    DRAWER_RANGE,
    EVAL_BLOCK_YAW_RANGE,
    EVAL_SLIDER_LEFT_JOINT,
    EVAL_SLIDER_LEFT_SPOT,
    EVAL_SLIDER_RIGHT_SPOT,
    EVAL_TABLE_SPOTS,
    NEUTRAL_ROBOT_OBS,
    NUM_SEQUENCES,
    SCENE_OBS_DIM,
    SWITCH_RANGE,
)
from rftf_gym.symbolic import STATE_KEYS, TASK_CATEGORIES, TASKS, applicable_branches

_TASK_NAMES = tuple(TASKS)  # the official drawing order


def is_valid_chain(state: Mapping[str, Any], chain: Sequence[str]) -> bool:
    """Whether ``chain`` is a valid evaluation chain from ``state`` (official check_sequence).

    Args:
        state: the symbolic initial state.
        chain: task names.

    Returns:
        True when the tasks come from distinct categories and each has exactly one applicable
        branch in the state left by the tasks before it.
    """
    categories = [TASK_CATEGORIES[task] for task in chain]
    if len(set(categories)) != len(categories):
        return False
    for task in chain:
        branches = applicable_branches(task, state)
        if len(branches) != 1:
            return False
        state = {**state, **branches[0].effect}
    return True


def initial_states() -> list[dict[str, Any]]:
    """The 192 official initial states, in the official order (multistep_sequences.py, get_sequences).

    Every combination of the values below (itertools.product order) with one or two blocks on the
    table and at most one block on each half of the shelf.

    Returns:
        Fresh dicts with keys in `STATE_KEYS` order.
    """
    values = {
        "led": (0, 1),
        "lightbulb": (0, 1),
        "slider": ("right", "left"),
        "drawer": ("closed", "open"),
        "red_block": ("table", "slider_right", "slider_left"),
        "blue_block": ("table", "slider_right", "slider_left"),
        "pink_block": ("table", "slider_right", "slider_left"),
        "grasped": (0,),
    }
    states = []
    for combination in itertools.product(*values.values()):
        blocks = combination[4:7]
        if (
            blocks.count("table") in (1, 2)
            and blocks.count("slider_right") < 2
            and blocks.count("slider_left") < 2
        ):
            states.append(dict(zip(values, combination)))
    return states


# --- Replaying the official rejection sampling, fast -------------------------------------------
#
# Officially each state i draws ``np.random.choice(34 tasks, 5, replace=False)`` from a legacy RNG
# seeded i until ``count`` chains pass check_sequence: 7,142,044 draws for the 1000 chains (about a
# minute with the official code on this machine). Legacy ``choice`` without replacement is
# ``permutation(34)[:5]``: a Fisher-Yates shuffle of arange(34) swapping x[i] and x[j] for
# i = 33..1, each j drawn by masked rejection (``j = next_uint32 & mask``, retried while j > i,
# mask = smallest 2**k - 1 >= i). We replay exactly that from the raw MT19937 stream, vectorized:
# only the low 6 bits of each raw value matter (mask <= 63), a small automaton (state = steps
# done in the current draw) decides which raw values are accepted, and the stream is cut into
# chunks run side by side. A chunk's start state depends on the chunk before it, so chunks first
# start from a guess and are then re-run from their true start until their path joins the
# recorded one (paths that reach the same state at the same symbol agree from then on).

_SYMBOLS = 64  # values of the low 6 bits of a raw draw
_PAIR = _SYMBOLS * _SYMBOLS  # the automaton reads two symbols per lookup
_FY_STEPS = np.arange(len(_TASK_NAMES) - 1, 0, -1)  # Fisher-Yates positions i = 33..1
_CHUNK_PAIRS = 4096  # symbol pairs per chunk
_JOIN_CHECK_EVERY = 32  # columns between checks that a re-run path joined the recorded one
_DRAWS_PER_ROUND = 1 << 13  # draws generated per state and round, before checking validity
_STATES_PER_GROUP = 48  # states processed together (peak memory ~100 MB)


def _pair_tables() -> tuple[np.ndarray, np.ndarray]:
    """Automaton tables indexed by ``state * 4096 + a * 64 + b`` for a symbol pair (a, b).

    Returns:
        ``next_base`` (the next state * 4096, int32) and ``codes`` (little-endian uint16 whose
        low byte is the code of a, high byte the code of b: ``0x80 | j`` when the symbol is
        accepted with value j, else 0).
    """
    steps = len(_FY_STEPS)
    masks = np.array([(1 << int(i).bit_length()) - 1 for i in _FY_STEPS])
    symbols = np.arange(_SYMBOLS)
    j_value = symbols[None, :] & masks[:, None]  # (state, symbol)
    accepted = j_value <= _FY_STEPS[:, None]
    code = np.where(accepted, 0x80 | j_value, 0)
    after = (np.arange(steps)[:, None] + accepted) % steps
    state, a, b = np.meshgrid(np.arange(steps), symbols, symbols, indexing="ij")
    state_b = after[state, a]
    next_base = (after[state_b, b] * _PAIR).astype(np.int32)
    codes = (code[state, a] | (code[state_b, b] << 8)).astype("<u2")
    return next_base.ravel(), codes.ravel()


_NEXT_BASE, _CODES = _pair_tables()


def _run_chunks(pairs: np.ndarray, record: np.ndarray) -> np.ndarray:
    """Run every chunk (a column of ``pairs``) from state 0, writing the table index per symbol pair.

    Returns:
        The end index base (state * 4096) of every chunk.
    """
    base = np.zeros(pairs.shape[1], dtype=np.int32)
    for col in range(pairs.shape[0]):
        np.add(base, pairs[col], out=record[col])
        np.take(_NEXT_BASE, record[col], out=base)
    return base


def _rerun_chunks(
    pairs: np.ndarray, record: np.ndarray, lanes: np.ndarray, start: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Re-run chunks ``lanes`` from their true ``start`` until they join the recorded path.

    A lane stops as soon as its table index equals the recorded one: two paths in the same state
    at the same symbol agree from then on, so the rest of the record is already right.

    Returns:
        The lanes that never joined, and their end index bases.
    """
    base = start
    for col in range(pairs.shape[0]):
        index = base + pairs[col, lanes]
        if col % _JOIN_CHECK_EVERY == 0:
            apart = index != record[col, lanes]
            lanes, index = lanes[apart], index[apart]
        record[col, lanes] = index
        base = _NEXT_BASE[index]
        if not len(lanes):
            break
    return lanes, base


def _fisher_yates_draws(streams: list[np.ndarray]) -> list[tuple[np.ndarray, int]]:
    """Split symbol streams (each starting at a draw boundary) into complete draws.

    Args:
        streams: uint8 low-6-bit symbols, each of a length divisible by ``2 * _CHUNK_PAIRS``.

    Returns:
        Per stream: the j values of its complete draws, shape (n_draws, 33) in step order
        i = 33..1, and how many symbols those draws consumed.
    """
    chunks_per_stream = [len(stream) // (2 * _CHUNK_PAIRS) for stream in streams]
    symbols = np.concatenate(streams)
    pair_index = (symbols[0::2].astype(np.uint16) << 6) | symbols[1::2]
    pairs = _transpose(pair_index.reshape(-1, _CHUNK_PAIRS))  # (column, chunk)
    first = np.zeros(pairs.shape[1], dtype=bool)
    first[np.cumsum([0, *chunks_per_stream[:-1]])] = True  # these chunks start a draw for sure
    record = np.empty(pairs.shape, dtype=np.int32)
    # Every chunk is first run as if it started a draw, then fixed up from its true start.
    start = np.zeros(pairs.shape[1], dtype=np.int32)
    end = _run_chunks(pairs, record)
    while True:
        true_start = np.where(first, 0, np.roll(end, 1))
        redo = np.flatnonzero(true_start != start)
        if not len(redo):
            break
        start[redo] = true_start[redo]
        apart, apart_end = _rerun_chunks(pairs, record, redo, start[redo])
        end[apart] = apart_end
    codes = _transpose(_CODES[record]).view(np.uint8).ravel()  # stream order, one per symbol
    results = []
    offset = 0
    for n_chunks in chunks_per_stream:
        stream_codes = codes[offset : offset + 2 * n_chunks * _CHUNK_PAIRS]
        offset += len(stream_codes)
        accepted = stream_codes >= 0x80
        values = stream_codes[accepted] & 0x3F
        n_draws = len(values) // len(_FY_STEPS)
        draws = values[: n_draws * len(_FY_STEPS)].reshape(n_draws, len(_FY_STEPS))
        results.append((draws, _position_after(accepted, len(values) - n_draws * len(_FY_STEPS))))
    return results


def _transpose(matrix: np.ndarray, rows_per_block: int = 16) -> np.ndarray:
    """A contiguous transpose, by blocks of rows (several times faster than a plain copy of .T)."""
    out = np.empty(matrix.shape[::-1], dtype=matrix.dtype)
    for row in range(0, matrix.shape[0], rows_per_block):
        out[:, row : row + rows_per_block] = matrix[row : row + rows_per_block].T
    return out


def _position_after(accepted: np.ndarray, unused: int) -> int:
    """The index just past the accepted symbol followed by ``unused`` accepted ones (0 if none)."""
    window = 4096
    while True:
        tail = np.flatnonzero(accepted[-window:])
        if len(tail) > unused:
            return len(accepted) - min(window, len(accepted)) + int(tail[-1 - unused]) + 1
        if window >= len(accepted):
            return 0
        window *= 4


def _first_five(draws: np.ndarray) -> np.ndarray:
    """The first 5 entries of each legacy ``permutation(34)`` given its j values (n, 33).

    Returns:
        Task indices, shape (n, 5).
    """
    n = len(draws)
    perm = np.repeat(np.arange(len(_TASK_NAMES), dtype=np.int8), n)  # position-major (34 * n)
    lanes = np.arange(n)
    for column, i in enumerate(_FY_STEPS):
        target = draws[:, column].astype(np.intp) * n + lanes
        here = slice(i * n, (i + 1) * n)
        if i >= CHAIN_LEN:
            perm[target] = perm[here]  # x[i] is final and never read: only x[j] = x[i] matters
        else:
            moved = perm[target]
            perm[target] = perm[here]
            perm[here] = moved
    return perm[: CHAIN_LEN * n].reshape(CHAIN_LEN, n).T


@functools.lru_cache(maxsize=1)
def _transition_table() -> tuple[dict[tuple[Any, ...], int], np.ndarray, np.ndarray]:
    """Every symbolic state reachable from the initial states, and task -> next state.

    Returns:
        state values -> id, ``next_state[id, task]`` (the dead id ``len(ids)`` unless exactly one
        branch applies), and each task's category as a bit.
    """
    ids: dict[tuple[Any, ...], int] = {}
    frontier = [tuple(state.values()) for state in initial_states()]
    edges = []
    while frontier:
        values = frontier.pop()
        if values in ids:
            continue
        ids[values] = len(ids)
        state = dict(zip(STATE_KEYS, values))
        for task_id, task in enumerate(_TASK_NAMES):
            branches = applicable_branches(task, state)
            if len(branches) == 1:
                after = tuple({**state, **branches[0].effect}.values())
                edges.append((ids[values], task_id, after))
                frontier.append(after)
    dead = len(ids)
    next_state = np.full((dead + 1, len(_TASK_NAMES)), dead, dtype=np.int32)
    for source, task_id, after in edges:
        next_state[source, task_id] = ids[after]
    category_bit = np.array([1 << TASK_CATEGORIES[task] for task in _TASK_NAMES], dtype=np.int64)
    return ids, next_state, category_bit


def _valid_draws(state: Mapping[str, Any], firsts: np.ndarray) -> np.ndarray:
    """Vectorized `is_valid_chain` over drawn task indices (n, 5)."""
    ids, next_state, category_bit = _transition_table()
    current = np.full(len(firsts), ids[tuple(state.values())])
    bits_or = np.zeros(len(firsts), dtype=np.int64)
    bits_sum = np.zeros(len(firsts), dtype=np.int64)
    for column in firsts.T:
        current = next_state[current, column]
        bits_or |= category_bit[column]
        bits_sum += category_bit[column]
    return (current != len(ids)) & (bits_or == bits_sum)


def _official_draws(
    states: Sequence[Mapping[str, Any]], counts: Sequence[int]
) -> list[list[tuple[str, ...]]]:
    """The chains the official get_sequences_for_state2 draws for state i (seed i), count each."""
    rngs = [np.random.RandomState(seed) for seed in range(len(states))]
    leftover = [np.empty(0, dtype=np.uint8) for _ in states]
    found: list[list[tuple[str, ...]]] = [[] for _ in states]
    pending = [i for i, count in enumerate(counts) if count > 0]
    stream_quantum = 2 * _CHUNK_PAIRS
    while pending:
        for group_start in range(0, len(pending), _STATES_PER_GROUP):
            group = pending[group_start : group_start + _STATES_PER_GROUP]
            streams = []
            for i in group:
                # ~44.5 raw values per draw; round up to whole chunks.
                wanted = len(leftover[i]) + 45 * _DRAWS_PER_ROUND
                fresh = -(-wanted // stream_quantum) * stream_quantum - len(leftover[i])
                # Raw MT19937 outputs; randint over the full uint32 range consumes exactly one each.
                raw = rngs[i].randint(0, 2**32, size=fresh, dtype=np.uint32)
                low_bytes = raw.astype("<u4", copy=False).view(np.uint8)[::4]
                streams.append(np.concatenate([leftover[i], low_bytes & (_SYMBOLS - 1)]))
            for i, stream, (draws, consumed) in zip(group, streams, _fisher_yates_draws(streams)):
                leftover[i] = stream[consumed:]
                firsts = _first_five(draws)
                for row in np.flatnonzero(_valid_draws(states[i], firsts))[: counts[i] - len(found[i])]:
                    found[i].append(tuple(_TASK_NAMES[t] for t in firsts[row]))
        pending = [i for i in pending if len(found[i]) < counts[i]]
    return found


@functools.lru_cache(maxsize=8)
def _sequences(num_sequences: int) -> tuple[tuple[tuple[Any, ...], tuple[str, ...]], ...]:
    """Cached (state values, chain) pairs behind `get_sequences`."""
    states = initial_states()
    # Chains per state: np.array_split of range(num_sequences) into 192 parts (5 or 6 for 1000).
    counts = [len(part) for part in np.array_split(np.arange(num_sequences), len(states))]
    pairs = [
        (tuple(state.values()), chain)
        for state, chains in zip(states, _official_draws(states, counts))
        for chain in chains
    ]
    # The official code shuffles the list with numpy's legacy global RNG seeded 0 (temp_seed(0)).
    np.random.RandomState(0).shuffle(pairs)
    return tuple(pairs)


def get_sequences(num_sequences: int = NUM_SEQUENCES) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    """The official CALVIN evaluation chains (multistep_sequences.py, get_sequences).

    As in the official code, ``num_sequences`` is split over the 192 initial states with
    ``np.array_split`` before drawing and shuffling, so ``get_sequences(n)`` for n < 1000 is the
    official ``get_sequences(n)``, not the first n of the 1000 chains.

    Args:
        num_sequences: how many chains; 1000 is the official benchmark.

    Returns:
        ``(initial_state, chain)`` pairs: a fresh state dict (keys in `STATE_KEYS` order) and a
        tuple of 5 task names. Results are cached; callers may mutate what they get.

    Raises:
        ValueError: ``num_sequences`` is negative or not an int.
    """
    if (
        isinstance(num_sequences, bool)
        or not isinstance(num_sequences, (int, np.integer))
        or num_sequences < 0
    ):
        raise ValueError(f"num_sequences must be a non-negative int, got {num_sequences!r}")
    return [(dict(zip(STATE_KEYS, values)), chain) for values, chain in _sequences(int(num_sequences))]


def fnv1_32(data: bytes, seed: int = 0) -> int:
    """32-bit FNV-1 hash with ``seed`` as the starting value (pyhash's ``fnv1_32``).

    pyhash starts from its seed (default 0) instead of FNV's offset basis 2166136261, so with
    the default this is "FNV-1 with seed 0". Empty input returns the seed.

    Args:
        data: bytes to hash.
        seed: the starting hash value (32-bit).

    Returns:
        The hash as an int in [0, 2**32).
    """
    value = seed & 0xFFFFFFFF
    for byte in data:
        value = (value * 16777619) & 0xFFFFFFFF
        value ^= byte
    return value


def _canonical_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with keys in `STATE_KEYS` order and plain int / str values.

    Raises:
        ValueError: keys differ from `STATE_KEYS`.
    """
    missing = [key for key in STATE_KEYS if key not in state]
    extra = [key for key in state if key not in STATE_KEYS]
    if missing or extra:
        raise ValueError(
            f"a symbolic state has exactly the keys {STATE_KEYS}; missing {missing}, extra {extra}"
        )
    # numpy scalars would print as np.int64(1) and change the hash.
    return {
        key: int(state[key]) if isinstance(state[key], (bool, int, np.integer)) else str(state[key])
        for key in STATE_KEYS
    }


def state_seed(initial_state: Mapping[str, Any]) -> int:
    """The official reset-state seed: pyhash ``fnv1_32()(str(state.values()))``.

    pyhash hashes a ``str`` as its UTF-16 bytes without the BOM (little-endian on the x86/ARM
    machines CALVIN runs on). The values are taken in `STATE_KEYS` order as plain ints and
    strings, as in the official states, so key order and numpy scalars do not matter.

    Args:
        initial_state: a symbolic state with the keys of `STATE_KEYS`.

    Returns:
        The 32-bit seed.

    Raises:
        ValueError: keys differ from `STATE_KEYS`.
    """
    # The repr of the official dict_values object, e.g. "dict_values([1, 1, 'left', ...])".
    text = str(_canonical_state(initial_state).values())
    return fnv1_32(text.encode("utf-16-le"))


_INITIAL_STATES = initial_states()


def _normalize_initial_state(initial_state: Mapping[str, Any]) -> dict[str, Any]:
    state = _canonical_state(initial_state)
    if state not in _INITIAL_STATES:
        raise ValueError(f"{state} is not one of the 192 official initial states")
    return state


def get_env_state_for_initial_condition(
    initial_state: Mapping[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """The official reset state of a symbolic initial state (utils.py, same name).

    Robot at the neutral pose; door at 0.28 when ``slider == "left"``; drawer at 0.22 when open;
    switch at 0.088 when the lightbulb is on; lightbulb and LED logical states; blocks on their
    shelf half or on a table spot, each with roll = pitch = 0 and a yaw uniform in
    [pi/2 - pi/8, pi/2 + pi/8]. The RNG is numpy's legacy RNG seeded with `state_seed`; the draws
    are, in the official order: one shuffle of the two table spots, then one yaw per block in
    red, blue, pink order (drawn whatever the block's place).

    Args:
        initial_state: one of the 192 official initial states (any key order).

    Returns:
        ``(robot_obs, scene_obs)``: float64 arrays of shape (15,) and (24,), blocks in red, blue,
        pink order.

    Raises:
        ValueError: the state is not one of the official initial states.
    """
    state = _normalize_initial_state(initial_state)
    rng = np.random.RandomState(state_seed(state))
    table_spots = [np.array(spot) for spot in EVAL_TABLE_SPOTS]
    rng.shuffle(table_spots)

    scene_obs = np.zeros(SCENE_OBS_DIM)
    scene_obs[0] = EVAL_SLIDER_LEFT_JOINT if state["slider"] == "left" else 0.0
    scene_obs[1] = DRAWER_RANGE if state["drawer"] == "open" else 0.0
    scene_obs[3] = SWITCH_RANGE if state["lightbulb"] == 1 else 0.0
    scene_obs[4] = state["lightbulb"]
    scene_obs[5] = state["led"]
    # Official table-spot rule: red takes the first spot, blue the second if red is also on the
    # table (else the first), pink always the second. Valid states have at most two table blocks.
    table_spot_index = {"red": 0, "blue": 1 if state["red_block"] == "table" else 0, "pink": 1}
    for color in COLORS:
        place = state[f"{color}_block"]
        offset = BLOCK_OFFSETS[color]
        if place == "slider_left":
            scene_obs[offset : offset + 3] = EVAL_SLIDER_LEFT_SPOT
        elif place == "slider_right":
            scene_obs[offset : offset + 3] = EVAL_SLIDER_RIGHT_SPOT
        else:
            scene_obs[offset : offset + 3] = table_spots[table_spot_index[color]]
        scene_obs[offset + 5] = rng.uniform(*EVAL_BLOCK_YAW_RANGE)
    return np.array(NEUTRAL_ROBOT_OBS), scene_obs
