"""The index files of a split: episode ranges, scene ranges and language annotations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rftf_gym.data.format import EPISODE_IDS_FILE, LANG_ANN_FILE, SCENE_INFO_FILE, DatasetError
from rftf_gym.data.safe_pickle import load_pickled_npy


@dataclass(frozen=True)
class Annotation:
    """One language-annotated window: inclusive frame ids, instruction and task id."""

    start: int
    end: int
    ann: str
    task: str | None
    """Task id; None when the file stores no ``language.task``."""


@dataclass(frozen=True)
class TaskEmbeddings:
    """The evaluation sentences of one task and their embeddings, one row per sentence."""

    ann: tuple[str, ...]
    emb: np.ndarray


def read_episode_ids(path: Path) -> np.ndarray:
    """Episode (first, last) frame ids of the split directory ``path``, as int64 (N, 2).

    The episodes are returned sorted by first frame. The file may list them in any order (the
    official loader iterates them as stored and never sorts), but they must not overlap.
    """
    file = path / EPISODE_IDS_FILE
    if not file.is_file():
        raise DatasetError(f"{file}: file is missing")
    try:
        ids = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{file}: unreadable ({e})") from None
    if ids.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if ids.ndim != 2 or ids.shape[1] != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise DatasetError(f"{file}: expected an integer array (N, 2), got {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64)
    ids = ids[np.argsort(ids[:, 0], kind="stable")]
    if np.any(ids[:, 0] > ids[:, 1]) or np.any(ids < 0):
        raise DatasetError(f"{file}: episodes must be non-empty ranges of non-negative frame ids")
    overlap = np.flatnonzero(ids[1:, 0] <= ids[:-1, 1])
    if overlap.size:
        a, b = ids[overlap[0]], ids[overlap[0] + 1]
        raise DatasetError(
            f"{file}: episodes must not overlap, but ({a[0]}, {a[1]}) and ({b[0]}, {b[1]}) do"
        )
    return ids


def read_scene_info(path: Path) -> dict[str, tuple[int, int]]:
    """Scene name -> inclusive (first, last) frame ids of the split directory ``path``."""
    file = path / SCENE_INFO_FILE
    info = load_pickled_npy(file)
    if not isinstance(info, dict):
        raise DatasetError(
            f"{file}: expected a dict scene -> [first, last], got {type(info).__name__}"
        )
    out = {}
    for scene, interval in info.items():
        try:
            first, last = (int(v) for v in interval)
        except (TypeError, ValueError):
            raise DatasetError(f"{file}: scene {scene!r} must map to [first, last]") from None
        if not isinstance(scene, str) or first > last:
            raise DatasetError(f"{file}: bad entry {scene!r}: {interval!r}")
        out[scene] = (first, last)
    return out


def language_file(path: Path, lang_folder: str) -> Path:
    """The ``auto_lang_ann.npy`` a split's language comes from.

    ``<split>/<lang_folder>/auto_lang_ann.npy`` if it exists, else ``<split>/auto_lang_ann.npy``
    (the fallback of the official ``DiskDataset._build_file_indices_lang``).

    Raises:
        DatasetError: Neither file exists; the message names both.
    """
    if not lang_folder or Path(lang_folder).name != lang_folder:
        raise DatasetError(
            f"lang_folder must be a folder name such as 'lang_annotations', got {lang_folder!r}"
        )
    file = path / lang_folder / LANG_ANN_FILE
    fallback = path / LANG_ANN_FILE
    if file.is_file():
        return file
    if fallback.is_file():
        return fallback
    raise DatasetError(f"{file}: file is missing (and there is no {fallback} either)")


def read_annotations(file: Path) -> tuple[list[Annotation], np.ndarray | None]:
    """Language windows of an ``auto_lang_ann.npy`` and its ``language.emb`` if stored.

    ``language.task`` may be absent (the official loader never reads it): tasks are then None.
    """
    data = load_pickled_npy(file)
    try:
        language, indx = data["language"], data["info"]["indx"]
        anns = list(language["ann"])
        tasks = list(language["task"]) if "task" in language else [None] * len(anns)
        emb = language.get("emb")
    except (TypeError, KeyError) as e:
        raise DatasetError(f"{file}: missing key {e} (need language.ann and info.indx)") from None
    if not len(anns) == len(tasks) == len(indx):
        raise DatasetError(
            f"{file}: {len(anns)} ann, {len(tasks)} task and {len(indx)} indx entries differ"
        )
    if emb is not None and (isinstance(emb, list) and len(emb) == 0):
        emb = None  # CALVIN's annotator initialises emb to [] before embedding
    if emb is not None:
        emb = np.asarray(emb)
        if emb.shape[:1] != (len(anns),):
            raise DatasetError(
                f"{file}: language.emb has {emb.shape[:1]} rows for {len(anns)} anns"
            )
    annotations = []
    for i, (window, ann, task) in enumerate(zip(indx, anns, tasks)):
        try:
            start, end = (int(v) for v in window)
        except (TypeError, ValueError):
            raise DatasetError(f"{file}: info.indx[{i}] = {window!r} is not (start, end)") from None
        if not isinstance(ann, str) or not (task is None or isinstance(task, str)):
            raise DatasetError(f"{file}: annotation {i} must have a str ann and task")
        annotations.append(Annotation(start, end, ann, task))
    return annotations, emb


def read_eval_embeddings(file: Path) -> dict[str, TaskEmbeddings]:
    """The evaluation sentences and their embeddings of an ``embeddings.npy``.

    The official annotator (``automatic_lang_annotator_mp.py``, ``compute_val_embeddings``) saves
    a dict task -> {"ann": [sentence, ...], "emb": array (len(ann), ...)}; the official policies
    condition rollouts on ``emb`` looked up by ``ann[0]`` (``mcil.py``, ``load_lang_embeddings``).
    """
    data = load_pickled_npy(file)
    if not isinstance(data, dict):
        raise DatasetError(
            f"{file}: expected a dict task -> {{ann, emb}}, got {type(data).__name__}"
        )
    out = {}
    for task, entry in data.items():
        try:
            anns, emb = entry["ann"], np.asarray(entry["emb"])
        except (TypeError, KeyError) as e:
            raise DatasetError(
                f"{file}: task {task!r} is missing key {e} (need ann and emb)"
            ) from None
        out[task] = TaskEmbeddings(tuple([anns] if isinstance(anns, str) else anns), emb)
    problem = check_eval_embeddings(out)
    if problem:
        raise DatasetError(f"{file}: {problem}")
    return out


def check_eval_embeddings(embeddings: Mapping[str, TaskEmbeddings]) -> str | None:
    """Problem with evaluation embeddings, or None: every task needs sentences and one float
    ``emb`` row per sentence."""
    for task, entry in embeddings.items():
        anns, emb = entry.ann, np.asarray(entry.emb)
        if not isinstance(task, str) or not anns or not all(isinstance(a, str) for a in anns):
            return f"task {task!r} must map to a non-empty list of sentences"
        if emb.shape[:1] != (len(anns),) or not np.issubdtype(emb.dtype, np.floating):
            return f"task {task!r} has {len(anns)} sentences but emb {emb.dtype} {emb.shape}"
    return None


def episode_index(episodes: np.ndarray, start: int, end: int) -> int | None:
    """Index of the episode that contains frames start..end, or None."""
    i = int(np.searchsorted(episodes[:, 0], start, side="right")) - 1
    if i < 0 or start > end or end > episodes[i, 1]:
        return None
    return i
