"""The official CALVIN chains and reset states (rftf_gym.sequences) against official facts.

Regression numbers marked "official" were produced by running the official
calvin_models/calvin_agent/evaluation/{multistep_sequences,utils}.py (mees/calvin) on this
machine, with pyhash's fnv1_32 replaced by the same FNV-1 recurrence.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rftf_gym import sequences
from rftf_gym.sequences import (
    fnv1_32,
    get_env_state_for_initial_condition,
    get_sequences,
    initial_states,
    is_valid_chain,
    state_seed,
)
from rftf_gym.symbolic import STATE_KEYS, TASK_CATEGORIES, TASKS, apply_task

FIRST_STATE = {
    "led": 1, "lightbulb": 1, "slider": "left", "drawer": "open", "red_block": "slider_left",
    "blue_block": "table", "pink_block": "slider_right", "grasped": 0,
}  # fmt: skip
FIRST_CHAIN = (
    "rotate_blue_block_right", "move_slider_right", "lift_red_block_slider", "place_in_slider",
    "turn_off_lightbulb",
)  # fmt: skip

NEUTRAL_ROBOT_OBS = [
    0.02586889, -0.2313129, 0.5712808, 3.09045411, -0.02908596, 1.50013585, 0.07999963,
    -1.21779124, 1.03987629, 2.11978254, -2.34205014, -0.87015899, 1.64119093, 0.55344928, 1.0,
]  # fmt: skip
SLIDER_LEFT = [-0.240851662, 0.0924044687, 0.460990009]
SLIDER_RIGHT = [0.070341633, 0.0924044687, 0.460990009]
TABLE_SPOTS = [[0.0500000896, -0.120000177, 0.459990009], [0.229995412, -0.11999514, 0.45999001]]
YAW_RANGE = (np.pi / 2 - np.pi / 8, np.pi / 2 + np.pi / 8)


@pytest.fixture(scope="module")
def chains() -> list[tuple[dict, tuple[str, ...]]]:
    # Its speed is measured by bench/eval_throughput.py (BENCHMARKS.md), not asserted here.
    return get_sequences(1000)


# --- initial states ------------------------------------------------------------------------------


def test_initial_states_are_the_official_192():
    states = initial_states()
    assert len(states) == 192
    assert len({tuple(s.values()) for s in states}) == 192
    assert list(states[0]) == list(STATE_KEYS)
    # itertools.product order, (table, table, table) filtered out.
    assert states[0] == {
        "led": 0, "lightbulb": 0, "slider": "right", "drawer": "closed", "red_block": "table",
        "blue_block": "table", "pink_block": "slider_right", "grasped": 0,
    }  # fmt: skip
    assert states[-1]["led"] == 1 and states[-1]["pink_block"] == "table"
    for state in states:
        blocks = [state[f"{c}_block"] for c in ("red", "blue", "pink")]
        assert blocks.count("table") in (1, 2)
        assert blocks.count("slider_left") <= 1 and blocks.count("slider_right") <= 1


def test_is_valid_chain_rules():
    assert is_valid_chain(FIRST_STATE, FIRST_CHAIN)
    # Two tasks of category 8 (lights).
    assert not is_valid_chain(FIRST_STATE, ("turn_off_led", "turn_off_lightbulb"))
    # Opening an open drawer.
    assert not is_valid_chain(FIRST_STATE, ("open_drawer",))


# --- the 1000 chains -----------------------------------------------------------------------------


def test_first_chains_match_official(chains):
    assert chains[0] == (FIRST_STATE, FIRST_CHAIN)
    assert list(chains[0][0]) == list(STATE_KEYS)
    # official
    assert chains[1] == (
        {"led": 1, "lightbulb": 1, "slider": "right", "drawer": "open", "red_block": "slider_right",
         "blue_block": "table", "pink_block": "slider_left", "grasped": 0},
        ("turn_off_led", "push_into_drawer", "lift_blue_block_drawer", "place_in_slider",
         "close_drawer"),
    )  # fmt: skip
    assert chains[999] == (
        {"led": 1, "lightbulb": 0, "slider": "left", "drawer": "closed", "red_block": "slider_right",
         "blue_block": "slider_left", "pink_block": "table", "grasped": 0},
        ("move_slider_right", "turn_on_lightbulb", "push_pink_block_left", "open_drawer",
         "push_into_drawer"),
    )  # fmt: skip


def test_chain_statistics_match_official(chains):
    assert len(chains) == 1000
    assert len({chain for _, chain in chains}) == 997
    assert len({tuple(state.values()) for state, _ in chains}) == 192
    per_state = Counter(tuple(state.values()) for state, _ in chains)
    assert sorted(Counter(per_state.values()).items()) == [(5, 152), (6, 40)]  # np.array_split
    tasks = Counter(task for _, chain in chains for task in chain)
    assert set(tasks) == set(TASKS)
    share = {task: round(100 * count / 5000, 2) for task, count in tasks.items()}
    assert share["place_in_slider"] == 7.96
    assert share["open_drawer"] == 7.58
    assert share["lift_pink_block_drawer"] == 0.34


def test_every_chain_is_valid(chains):
    for state, chain in chains:
        assert len(chain) == 5 and all(isinstance(task, str) for task in chain)
        assert len({TASK_CATEGORIES[task] for task in chain}) == 5
        for task in chain:
            state = apply_task(state, task)  # raises unless exactly one branch applies


def test_results_are_fresh_copies(chains):
    chains[0][0]["led"] = 0
    assert get_sequences(1000)[0][0]["led"] == 1


def _reference_sequences(num_sequences: int) -> list[tuple[dict, tuple[str, ...]]]:
    """The official algorithm written plainly (slow: only for a few chains)."""
    states = initial_states()
    counts = [len(part) for part in np.array_split(np.arange(num_sequences), len(states))]
    pairs = []
    for seed, (state, count) in enumerate(zip(states, counts)):
        rng = np.random.RandomState(seed)
        found = 0
        while found < count:
            chain = tuple(rng.choice(list(TASKS), size=5, replace=False).tolist())
            if is_valid_chain(state, chain):
                pairs.append((state, chain))
                found += 1
    np.random.RandomState(0).shuffle(pairs)
    return pairs


def test_fewer_sequences_follow_the_official_split():
    # n < 192: the first n states get one chain each; the result is not a prefix of the 1000.
    assert get_sequences(7) == _reference_sequences(7)
    # official
    assert [chain[0] for _, chain in get_sequences(7)] == [
        "rotate_blue_block_right", "turn_on_led", "push_blue_block_right", "push_red_block_left",
        "open_drawer", "open_drawer", "move_slider_left",
    ]  # fmt: skip
    assert get_sequences(0) == []
    with pytest.raises(ValueError):
        get_sequences(-1)


def test_replay_matches_numpy_legacy_choice():
    """The vectorized replay draws exactly what RandomState.choice(34, 5, replace=False) draws."""
    for seed in (0, 17, 191):
        rng = np.random.RandomState(seed)
        raw = rng.randint(0, 2**32, size=8 * sequences._CHUNK_PAIRS, dtype=np.uint32)
        ((draws, consumed),) = sequences._fisher_yates_draws([(raw & 63).astype(np.uint8)])
        firsts = sequences._first_five(draws)
        expected = np.random.RandomState(seed)
        assert len(firsts) > 100
        for drawn in firsts:
            assert drawn.tolist() == expected.choice(34, size=5, replace=False).tolist()
        # ... and stops exactly where numpy's stream is.
        assert expected.randint(0, 2**32, dtype=np.uint64) == raw[consumed]


# --- the FNV hash and reset states ---------------------------------------------------------------


def test_fnv1_32_hand_computed():
    assert fnv1_32(b"") == 0
    assert fnv1_32(b"", seed=12345) == 12345
    assert fnv1_32(b"a") == 0x61  # 0 * prime = 0, then xor 0x61
    # (0x61 * 16777619) mod 2**32 = 1627429043; its low byte 0xB3 xor 0x62 ("b") = 0xD1.
    assert fnv1_32(b"ab") == 1627429043 - 0xB3 + 0xD1
    # pyhash's own test vectors (flier/pyfasthash tests/test_fnv1.py): bytes, seeded, unicode.
    assert fnv1_32(b"test") == 3698262380
    assert fnv1_32(b"test", seed=3698262380) == 660137056
    assert fnv1_32("test".encode("utf-16-le")) == 3910690890


def test_state_seed_is_official():
    assert state_seed(FIRST_STATE) == 2138410836  # official
    assert state_seed(dict(reversed(list(FIRST_STATE.items())))) == 2138410836
    numpy_valued = {key: np.int64(v) if isinstance(v, int) else v for key, v in FIRST_STATE.items()}
    assert state_seed(numpy_valued) == 2138410836


def test_reset_state_of_first_chain_is_official():
    robot_obs, scene_obs = get_env_state_for_initial_condition(FIRST_STATE)
    assert robot_obs.shape == (15,) and scene_obs.shape == (24,)
    assert robot_obs.dtype == np.float64 and scene_obs.dtype == np.float64
    np.testing.assert_array_equal(robot_obs, NEUTRAL_ROBOT_OBS)
    # official
    expected = [
        0.28, 0.22, 0.0, 0.088, 1.0, 1.0,
        -0.240851662, 0.0924044687, 0.460990009, 0.0, 0.0, 1.88594100641,
        0.229995412, -0.11999514, 0.45999001, 0.0, 0.0, 1.488143437706,
        0.070341633, 0.0924044687, 0.460990009, 0.0, 0.0, 1.468398686319,
    ]  # fmt: skip
    np.testing.assert_allclose(scene_obs, expected, rtol=0, atol=1e-11)


def test_lone_pink_block_takes_the_second_table_spot():
    state = dict(FIRST_STATE, led=1, lightbulb=0, slider="right", drawer="closed")
    state.update(red_block="slider_left", blue_block="slider_right", pink_block="table")
    _, scene_obs = get_env_state_for_initial_condition(state)
    # official: the shuffle put table spot 0 second, so pink lands on (0.05, -0.12).
    expected_pink = [0.0500000896, -0.120000177, 0.459990009, 0.0, 0.0, 1.226230027892]
    np.testing.assert_allclose(scene_obs[18:24], expected_pink, rtol=0, atol=1e-11)
    np.testing.assert_allclose(scene_obs[[11, 17]], [1.601661037334, 1.549711564021], rtol=0, atol=1e-11)


def test_reset_states_of_all_initial_states():
    for state in initial_states():
        robot_obs, scene_obs = get_env_state_for_initial_condition(state)
        again = get_env_state_for_initial_condition(dict(reversed(list(state.items()))))
        np.testing.assert_array_equal(scene_obs, again[1])
        np.testing.assert_array_equal(robot_obs, NEUTRAL_ROBOT_OBS)
        assert scene_obs[0] == (0.28 if state["slider"] == "left" else 0.0)
        assert scene_obs[1] == (0.22 if state["drawer"] == "open" else 0.0)
        assert scene_obs[2] == 0.0
        assert scene_obs[3] == (0.088 if state["lightbulb"] else 0.0)
        assert (scene_obs[4], scene_obs[5]) == (state["lightbulb"], state["led"])
        table_spots_used = []
        for offset, color in ((6, "red"), (12, "blue"), (18, "pink")):
            pos, euler = scene_obs[offset : offset + 3].tolist(), scene_obs[offset + 3 : offset + 6]
            place = state[f"{color}_block"]
            if place == "table":
                assert pos in TABLE_SPOTS
                table_spots_used.append(pos)
            else:
                assert pos == (SLIDER_LEFT if place == "slider_left" else SLIDER_RIGHT)
            assert euler[0] == euler[1] == 0.0
            assert YAW_RANGE[0] <= euler[2] <= YAW_RANGE[1]
        assert len(table_spots_used) == len({tuple(p) for p in table_spots_used})


def test_reset_state_input_checks():
    numpy_valued = {k: np.int64(v) if isinstance(v, int) else v for k, v in FIRST_STATE.items()}
    np.testing.assert_array_equal(
        get_env_state_for_initial_condition(numpy_valued)[1],
        get_env_state_for_initial_condition(FIRST_STATE)[1],
    )
    with pytest.raises(ValueError, match="keys"):
        get_env_state_for_initial_condition({k: v for k, v in FIRST_STATE.items() if k != "led"})
    with pytest.raises(ValueError, match="192"):
        get_env_state_for_initial_condition(dict(FIRST_STATE, red_block="drawer"))
