"""The instruction sets: coverage, disjoint splits, charset, and the sampling helper."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rftf_gym.language import (
    EVAL_INSTRUCTIONS,
    INSTRUCTION_CHARSET,
    MAX_INSTRUCTION_LENGTH,
    SPLITS,
    TRAIN_INSTRUCTIONS,
    insert_noise_words,
    instruction_for,
)
from rftf_gym.tasks import TASK_NAMES

ALL_SENTENCES = [s for p in TRAIN_INSTRUCTIONS.values() for s in p]
ALL_SENTENCES += EVAL_INSTRUCTIONS.values()


def test_every_task_has_both_splits_in_task_order() -> None:
    assert tuple(TRAIN_INSTRUCTIONS) == TASK_NAMES
    assert tuple(EVAL_INSTRUCTIONS) == TASK_NAMES
    assert SPLITS == ("train", "eval")


@pytest.mark.parametrize("task", TASK_NAMES)
def test_train_paraphrases_are_several_and_distinct(task: str) -> None:
    paraphrases = TRAIN_INSTRUCTIONS[task]
    assert isinstance(paraphrases, tuple)
    assert 5 <= len(paraphrases) <= 10
    assert len(set(paraphrases)) == len(paraphrases)
    assert isinstance(EVAL_INSTRUCTIONS[task], str)


def test_eval_sentences_are_never_train_paraphrases() -> None:
    train = {s for p in TRAIN_INSTRUCTIONS.values() for s in p}
    assert not train & set(EVAL_INSTRUCTIONS.values())


def test_no_sentence_is_shared_between_tasks() -> None:
    assert len(ALL_SENTENCES) == len(set(ALL_SENTENCES))


@pytest.mark.parametrize("sentence", ALL_SENTENCES)
def test_sentence_format(sentence: str) -> None:
    assert 0 < len(sentence) <= MAX_INSTRUCTION_LENGTH
    assert set(sentence) <= set(INSTRUCTION_CHARSET)
    assert sentence == sentence.lower() == sentence.strip()
    assert "  " not in sentence


def test_charset_is_small_and_plain() -> None:
    assert len(set(INSTRUCTION_CHARSET)) == len(INSTRUCTION_CHARSET)
    assert set("abcdefghijklmnopqrstuvwxyz0123456789 ") <= set(INSTRUCTION_CHARSET)
    assert all(c.isascii() and not c.isupper() for c in INSTRUCTION_CHARSET)


def test_sentences_fit_a_gymnasium_text_space() -> None:
    spaces = pytest.importorskip("gymnasium.spaces")
    space = spaces.Text(max_length=MAX_INSTRUCTION_LENGTH, charset=INSTRUCTION_CHARSET)
    assert all(space.contains(s) for s in ALL_SENTENCES)


@pytest.mark.parametrize("task", [t for t in TASK_NAMES if re.search("red|blue|pink", t)])
def test_block_tasks_name_their_colour_only(task: str) -> None:
    (color,) = [c for c in ("red", "blue", "pink") if c in task]
    for sentence in (*TRAIN_INSTRUCTIONS[task], EVAL_INSTRUCTIONS[task]):
        words = set(sentence.split())
        assert color in words
        assert not {"red", "blue", "pink"} - {color} & words


@pytest.mark.parametrize("task", [t for t in TASK_NAMES if t.endswith(("_left", "_right"))])
def test_directional_tasks_say_their_direction(task: str) -> None:
    right = task.endswith("right")
    for sentence in (*TRAIN_INSTRUCTIONS[task], EVAL_INSTRUCTIONS[task]):
        words = set(re.findall(r"[a-z]+", sentence))
        if right:
            assert words & {"right", "rightwards", "clockwise"}, sentence
            assert not words & {"left", "leftwards", "counterclockwise"}, sentence
        else:
            assert words & {"left", "leftwards", "counterclockwise"}, sentence
            assert not words & {"right", "rightwards", "clockwise"}, sentence


def test_lift_tasks_name_their_surface() -> None:
    keywords = {"table": ("table",), "slider": ("shelf", "sliding", "slider", "cupboard"),
                "drawer": ("drawer",)}
    for task in TASK_NAMES:
        if task.startswith("lift_"):
            surface = task.rsplit("_", 1)[1]
            for sentence in (*TRAIN_INSTRUCTIONS[task], EVAL_INSTRUCTIONS[task]):
                assert any(k in sentence for k in keywords[surface]), sentence


def test_instruction_for_eval_is_fixed() -> None:
    for task in TASK_NAMES:
        assert instruction_for(task, "eval") == EVAL_INSTRUCTIONS[task]
        seeded = instruction_for(task, "eval", rng=np.random.default_rng(3))
        assert seeded == EVAL_INSTRUCTIONS[task]


def test_instruction_for_train_is_seeded_and_covers_all_paraphrases() -> None:
    task = "open_drawer"
    first = [instruction_for(task, "train", np.random.default_rng(7)) for _ in range(3)]
    assert len(set(first)) == 1
    rng = np.random.default_rng(0)
    drawn = [instruction_for(task, "train", rng) for _ in range(200)]
    assert set(drawn) == set(TRAIN_INSTRUCTIONS[task])
    assert instruction_for(task) in TRAIN_INSTRUCTIONS[task]  # default split, unseeded rng


def test_instruction_for_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'open drawer'.*open_drawer"):
        instruction_for("open drawer", "train")
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'eval'\), got 'test'"):
        instruction_for("open_drawer", "test")


def test_noise_words_keep_the_sentence_and_its_order():
    sentence = "pull out the drawer"
    assert insert_noise_words(sentence, 0, np.random.default_rng(0)) == sentence
    noisy = insert_noise_words(sentence, 3, np.random.default_rng(0))
    words = noisy.split()
    assert len(words) == 7 and noisy == " ".join(words)
    it = iter(words)
    assert all(w in it for w in sentence.split())  # the own words, in order
    extra = list(words)
    for w in sentence.split():
        extra.remove(w)
    assert all(3 <= len(w) <= 7 and w.isalpha() and w.islower() for w in extra)
    assert noisy == insert_noise_words(sentence, 3, np.random.default_rng(0))
    draws = {insert_noise_words(sentence, 2, np.random.default_rng(s)) for s in range(20)}
    assert len(draws) == 20
    with pytest.raises(ValueError, match="noise words must be >= 0"):
        insert_noise_words(sentence, -1, np.random.default_rng(0))
