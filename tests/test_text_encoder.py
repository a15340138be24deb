"""The hashed n-gram instruction encoder: deterministic, normalised, paraphrase-aware."""

import numpy as np
import pytest

from rftf_gym.language import TRAIN_INSTRUCTIONS, instruction_for
from rftf_gym.tasks import TASK_NAMES
from rftf_gym.text_encoder import HashedNgramEncoder, fnv1a_64, make_text_encoder


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
