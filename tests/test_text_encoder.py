"""The hashed n-gram instruction encoder: deterministic, normalised, paraphrase-aware."""

import numpy as np
import pytest

from rftf_gym.language import TRAIN_INSTRUCTIONS, instruction_for
from rftf_gym.tasks import TASK_NAMES
from rftf_gym.text_encoder import HashedNgramEncoder, SnapEncoder, fnv1a_64, make_text_encoder


def test_fnv1a_64_reference_values():
    # FNV-1a 64 of "" is the offset basis; of "a" the published test vector 0xaf63dc4c8601ec8c.
    assert fnv1a_64("") == 0xCBF29CE484222325
    assert fnv1a_64("a") == 0xAF63DC4C8601EC8C


def test_encode_shape_norm_and_determinism():
    enc = HashedNgramEncoder(dim=64)
    out = enc.encode(["open the drawer", "Open the drawer!", ""])
    assert out.shape == (3, 64) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out[:2], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(out[0], out[1])  # case and punctuation are ignored
    np.testing.assert_array_equal(out[2], 0.0)
    np.testing.assert_array_equal(HashedNgramEncoder(dim=64).encode(["open the drawer"])[0], out[0])


def test_paraphrase_closer_than_other_task():
    enc = HashedNgramEncoder()
    a, b, c = enc.encode(["lift the red block from the table", "pick up the red block on the table", "turn on the led light"])
    assert a @ b > a @ c + 0.2


def test_eval_sentence_nearest_train_paraphrase_is_often_same_task():
    """The language gap: evaluation sentences are unseen paraphrases; the encoder should still put
    most of them nearest to a training paraphrase of their own task."""
    enc = HashedNgramEncoder()
    tasks, sentences = [], []
    for task in TASK_NAMES:
        for s in TRAIN_INSTRUCTIONS[task]:
            tasks.append(task)
            sentences.append(s)
    train = enc.encode(sentences)
    evals = enc.encode([instruction_for(t, "eval") for t in TASK_NAMES])
    nearest = np.asarray(tasks)[np.argmax(evals @ train.T, axis=1)]
    assert np.mean(nearest == np.asarray(TASK_NAMES)) >= 0.5


def test_name_round_trip_and_errors():
    enc = HashedNgramEncoder(dim=128, char_ngrams=(2, 3))
    again = make_text_encoder(enc.name)
    np.testing.assert_array_equal(again.encode(["press the button"]), enc.encode(["press the button"]))
    with pytest.raises(ValueError, match="unknown text encoder"):
        make_text_encoder("minilm")
    with pytest.raises(TypeError, match="single str"):
        enc.encode("open the drawer")
    with pytest.raises(ValueError, match="dim"):
        HashedNgramEncoder(dim=2)


def test_snap_encoder_reads_each_sentence_as_one_point_per_task():
    base = HashedNgramEncoder()
    snap = make_text_encoder("snap-" + base.name)
    assert isinstance(snap, SnapEncoder) and snap.name == "snap-" + base.name and snap.dim == base.dim
    # every training paraphrase of a task gives the base embedding of the task's first one
    for task in ("rotate_red_block_right", "open_drawer", "turn_off_led"):
        first = base.encode([TRAIN_INSTRUCTIONS[task][0]])[0]
        out = snap.encode(list(TRAIN_INSTRUCTIONS[task]))
        assert out.shape == (len(TRAIN_INSTRUCTIONS[task]), base.dim) and out.dtype == np.float32
        np.testing.assert_array_equal(out, np.tile(first, (len(out), 1)))
        assert all(snap.task_of(s) == task for s in TRAIN_INSTRUCTIONS[task])
    # an unseen sentence goes to the task whose paraphrases it is most similar to on average
    sentence = "please open the drawer now"
    scores = {t: float(np.mean(base.encode([sentence]) @ base.encode(list(p)).T)) for t, p in TRAIN_INSTRUCTIONS.items()}
    assert snap.task_of(sentence) == max(scores, key=scores.get) == "open_drawer"
    assert snap.encode([]).shape == (0, base.dim)
    with pytest.raises(TypeError, match="single str"):
        snap.encode("open the drawer")


def test_snap_encoder_reads_most_evaluation_sentences_right():
    """The held-out sentences are never used to build it; 33 of the 34 land on their own task."""
    snap = SnapEncoder(HashedNgramEncoder())
    read = {t: snap.task_of(instruction_for(t, "eval")) for t in TASK_NAMES}
    assert {t: r for t, r in read.items() if r != t} == {"unstack_block": "lift_red_block_table"}


def test_snap_encoder_with_own_paraphrases_and_errors():
    snap = SnapEncoder(HashedNgramEncoder(dim=64), {"a": ("open the drawer", "pull the drawer open"), "b": ("press the button",)})
    assert snap.tasks == ("a", "b") and snap.task_of("push the button") == "b"
    np.testing.assert_array_equal(snap.encode(["drawer open please"])[0], HashedNgramEncoder(dim=64).encode(["open the drawer"])[0])
    with pytest.raises(ValueError, match="paraphrases"):
        SnapEncoder(HashedNgramEncoder(dim=64), {"a": ()})
    with pytest.raises(ValueError, match="unknown text encoder"):
        make_text_encoder("snap-minilm")
    for bad in ("snap-", "snap-snap-hashed-ngram-d64-c34"):
        with pytest.raises(ValueError, match="name of a base encoder"):
            make_text_encoder(bad)


def test_snap_encoder_knows_training_paraphrases_up_to_case_and_punctuation():
    snap = SnapEncoder(HashedNgramEncoder())
    for task, sentences in TRAIN_INSTRUCTIONS.items():
        for sentence in sentences:
            assert snap.task_of(sentence.upper() + "!") == task
