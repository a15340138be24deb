"""The index files of a split: episode ranges, scene ranges and language annotations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rftf_gym.data.format import EPISODE_IDS_FILE, LANG_FILE, SCENE_INFO_FILE, DatasetError
from rftf_gym.data.safe_pickle import load_pickled_npy


@dataclass(frozen=True)
class Annotation:
    """One language-annotated window: inclusive frame ids, instruction and task id."""

    start: int
    end: int
    ann: str
    task: str


def read_episode_ids(path: Path) -> np.ndarray:
    """Episode (first, last) frame ids of the split directory ``path``, as int64 (N, 2)."""
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
    if np.any(ids[:, 0] > ids[:, 1]) or np.any(ids[1:, 0] <= ids[:-1, 1]) or np.any(ids < 0):
        raise DatasetError(f"{file}: episodes must be non-empty, sorted and not overlapping")
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


def read_annotations(path: Path, lang_folder: str = LANG_FILE.parent.name) -> tuple[list[Annotation], np.ndarray | None]:
    """Language windows of the split directory ``path`` and ``language.emb`` if stored.

    ``lang_folder`` names the annotation folder inside the split (CALVIN's releases ship
    ``lang_annotations`` and may carry others with the same file name and layout).
    """
    file = path / lang_folder / LANG_FILE.name
    data = load_pickled_npy(file)
    try:
        language, indx = data["language"], data["info"]["indx"]
        anns, tasks = list(language["ann"]), list(language["task"])
        emb = language.get("emb")
    except (TypeError, KeyError) as e:
        raise DatasetError(
            f"{file}: missing key {e} (need language.ann, language.task, info.indx)"
        ) from None
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
        if not isinstance(ann, str) or not isinstance(task, str):
            raise DatasetError(f"{file}: annotation {i} must have str ann and task")
        annotations.append(Annotation(start, end, ann, task))
    return annotations, emb


def episode_index(episodes: np.ndarray, start: int, end: int) -> int | None:
    """Index of the episode that contains frames start..end, or None."""
    i = int(np.searchsorted(episodes[:, 0], start, side="right")) - 1
    if i < 0 or start > end or end > episodes[i, 1]:
        return None
    return i
