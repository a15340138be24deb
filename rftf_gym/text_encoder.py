"""A self-contained instruction encoder: hashed word and character n-grams.

CALVIN conditions its policies on MiniLM sentence embeddings (``language.emb`` of its
``auto_lang_ann.npy``), but no weights can be downloaded here. The evaluation sentences of CALVIN
are paraphrases that never occur in the training annotations, and some of their words occur in
no training sentence at all, so a lookup table of training sentences would not do. Hashing word
unigrams, word bigrams and character n-grams of each word (with word-boundary marks) into a fixed
number of buckets gives a deterministic embedding with no weights in which unseen paraphrases
still share most features with the training sentences they paraphrase ("block" / "blocks",
"lift" in "lift the red block" / "lift up the red block").

The encoder is swappable: models store its `name` in their config and look it up with
`make_text_encoder`; a dataset's precomputed ``language.emb`` may replace it (``lang_emb``).

Example:
    >>> enc = HashedNgramEncoder(dim=64)
    >>> enc.encode(["open the drawer", "pull the handle to open the drawer"]).shape
    (2, 64)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

_WORD_RE = re.compile(r"[a-z0-9]+")
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


@runtime_checkable
class TextEncoder(Protocol):
    """Sentences in, one float32 row per sentence out."""

    @property
    def name(self) -> str:
        """Identifier stored in model configs and dataset folder names."""

    @property
    def dim(self) -> int:
        """Width of one embedding."""

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        """Embeddings of shape (len(sentences), dim), float32."""


def fnv1a_64(text: str) -> int:
    """64-bit FNV-1a hash of the UTF-8 bytes of ``text`` (stable across processes and runs,
    unlike Python's salted ``hash``)."""
    h = _FNV_OFFSET
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return h


class HashedNgramEncoder:
    """Deterministic bag of hashed n-grams, L2-normalised.

    Features of a sentence (lower-cased, split on anything but letters and digits):
    each word (weight 1), each pair of adjacent words (weight 0.5) and each character n-gram,
    n in ``char_ngrams``, of each word padded as ``<word>`` (weight 1 / number of n-grams of the
    word, so long words do not dominate). Each feature adds ``+-weight`` to one of ``dim``
    buckets, bucket and sign taken from its FNV-1a hash (the signed hashing trick keeps
    collisions unbiased).

    Args:
        dim: embedding width.
        char_ngrams: character n-gram lengths.

    Raises:
        ValueError: ``dim`` < 8 or empty / non-positive ``char_ngrams``.
    """

    def __init__(self, dim: int = 384, char_ngrams: Sequence[int] = (3, 4)) -> None:
        if int(dim) < 8:
            raise ValueError(f"HashedNgramEncoder dim must be >= 8, got {dim}")
        grams = tuple(int(n) for n in char_ngrams)
        if not grams or min(grams) < 1:
            raise ValueError(f"char_ngrams must be positive lengths, got {char_ngrams!r}")
        self._dim = int(dim)
        self.char_ngrams = grams
        self._cache: dict[str, np.ndarray] = {}

    @property
    def name(self) -> str:
        grams = "".join(str(n) for n in self.char_ngrams)
        return f"hashed-ngram-d{self._dim}-c{grams}"

    @property
    def dim(self) -> int:
        return self._dim

    def _features(self, sentence: str) -> list[tuple[str, float]]:
        words = _WORD_RE.findall(sentence.lower())
        feats: list[tuple[str, float]] = [("w:" + w, 1.0) for w in words]
        feats += [(f"b:{a}_{b}", 0.5) for a, b in zip(words, words[1:])]
        for w in words:
            padded = f"<{w}>"
            grams = [padded[i : i + n] for n in self.char_ngrams for i in range(len(padded) - n + 1)]
            feats += [("c:" + g, 1.0 / len(grams)) for g in grams]
        return feats

    def _encode_one(self, sentence: str) -> np.ndarray:
        vec = np.zeros(self._dim, dtype=np.float64)
        for feature, weight in self._features(sentence):
            h = fnv1a_64(feature)
            vec[h % self._dim] += weight if (h >> 63) & 1 else -weight
        norm = np.linalg.norm(vec)
        return (vec / norm if norm > 0 else vec).astype(np.float32)

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        """Embed sentences.

        Args:
            sentences: one string per row (a bare string is refused: it would be read as a list
                of characters).

        Returns:
            float32 array (len(sentences), dim); unit rows (an empty sentence gives zeros).

        Raises:
            TypeError: ``sentences`` is a string or holds a non-string.
        """
        if isinstance(sentences, str):
            raise TypeError("encode takes a sequence of sentences, got a single str; wrap it in a list")
        out = np.zeros((len(sentences), self._dim), dtype=np.float32)
        for i, sentence in enumerate(sentences):
            if not isinstance(sentence, str):
                raise TypeError(f"sentence {i} is {type(sentence).__name__}, not str")
            if sentence not in self._cache:
                self._cache[sentence] = self._encode_one(sentence)
            out[i] = self._cache[sentence]
        return out


def _words(sentence: str) -> tuple[str, ...]:
    """The words of a sentence as `HashedNgramEncoder` reads them (lower case, no punctuation)."""
    return tuple(_WORD_RE.findall(sentence.lower()))


class SnapEncoder:
    """Maps a sentence to its nearest task's first training paraphrase, then embeds that.

    A hashing encoder gives every paraphrase its own point (`HashedNgramEncoder`), so a policy
    that learned its tasks at the training paraphrases meets CALVIN's evaluation sentences, which
    training never shows, at points it was not fitted on. CALVIN's own policies avoid this with
    a pretrained sentence encoder (MiniLM), in which paraphrases land close together; no such
    weights can be downloaded here. This encoder gives the same property from the training
    annotations alone: a training paraphrase is read as its own task, any other sentence as the
    task whose training paraphrases have the highest mean cosine similarity with it under
    ``base`` (a kernel nearest-class-mean classifier, no trained weights), and the sentence is
    embedded as that task's first training paraphrase. Every sentence of a task, seen or
    unseen, thus gives the policy one point; a sentence read as another task gives that task's
    point. The evaluation sentences are never used to build it. It is no general paraphrase
    model: it reads 33 of the 34 evaluation sentences of `rftf_gym.language` right, but a
    training paraphrase left out of the means only about half the time (RESULTS.md, "A sentence encoder for the held-out sentences").

    Args:
        base: the encoder of the sentences and of the output.
        paraphrases: task -> its training paraphrases (default `rftf_gym.language.TRAIN_INSTRUCTIONS`).

    Raises:
        ValueError: a task without paraphrases.

    Example:
        >>> enc = SnapEncoder(HashedNgramEncoder())
        >>> enc.task_of("slide the door all the way to the left")
        'move_slider_left'
    """

    PREFIX = "snap-"

    def __init__(self, base: TextEncoder, paraphrases: Mapping[str, Sequence[str]] | None = None) -> None:
        if paraphrases is None:
            from rftf_gym.language import TRAIN_INSTRUCTIONS  # deferred: language imports the task table

            paraphrases = TRAIN_INSTRUCTIONS
        empty = [task for task, sentences in paraphrases.items() if not sentences]
        if empty or not paraphrases:
            raise ValueError(f"SnapEncoder needs training paraphrases for every task; none for {empty}")
        self.base = base
        self.tasks = tuple(paraphrases)
        self.canonical = tuple(str(paraphrases[task][0]) for task in self.tasks)
        # the mean of unit rows: its dot product with a unit row is the mean cosine similarity
        self._means = np.stack([base.encode(list(paraphrases[task])).mean(axis=0) for task in self.tasks])
        self._targets = base.encode(list(self.canonical))
        self._known = {_words(sentence): i for i, task in enumerate(self.tasks) for sentence in paraphrases[task]}

    @property
    def name(self) -> str:
        return self.PREFIX + self.base.name

    @property
    def dim(self) -> int:
        return self.base.dim

    def task_indices(self, sentences: Sequence[str]) -> np.ndarray:
        """Index into `tasks` of each sentence's task (int64, one per sentence). A training
        paraphrase is recognised up to case and punctuation, as the base encoder reads it; a
        sentence without words (a zero embedding) is read as the first task."""
        nearest = np.argmax(self.base.encode(sentences) @ self._means.T, axis=1)
        return np.array([self._known.get(_words(sentence), i) for sentence, i in zip(sentences, nearest)], dtype=np.int64)

    def task_of(self, sentence: str) -> str:
        """The task a sentence is read as."""
        return self.tasks[int(self.task_indices([sentence])[0])]

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        """Embeddings (len(sentences), dim), float32: each row is the base embedding of the
        sentence's task's first training paraphrase (TypeError as `HashedNgramEncoder.encode`)."""
        if isinstance(sentences, str):
            raise TypeError("encode takes a sequence of sentences, got a single str; wrap it in a list")
        if len(sentences) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._targets[self.task_indices(sentences)].copy()


_NAME_RE = re.compile(r"^hashed-ngram-d(\d+)-c(\d+)$")


def make_text_encoder(name: str) -> TextEncoder:
    """Rebuild an encoder from its `name` (as stored in a model's config.json).

    Raises:
        ValueError: an unknown name; the message lists the known forms.
    """
    if isinstance(name, str) and name.startswith(SnapEncoder.PREFIX):
        base = name[len(SnapEncoder.PREFIX):]
        if base.startswith(SnapEncoder.PREFIX) or not base:
            raise ValueError(f"text encoder {name!r}: 'snap-' takes the name of a base encoder, for example "
                             f"{SnapEncoder.PREFIX + HashedNgramEncoder().name!r}")
        return SnapEncoder(make_text_encoder(base))
    match = _NAME_RE.match(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(
            f"unknown text encoder {name!r}; known: 'hashed-ngram-d<dim>-c<ngram lengths>' "
            f"(for example {HashedNgramEncoder().name!r}) and 'snap-' + a known name (`SnapEncoder`)"
        )
    return HashedNgramEncoder(dim=int(match.group(1)), char_ngrams=[int(c) for c in match.group(2)])
