"""`CalvinDatasetWriter`: append episodes to a split, crash-safely and resumably."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from rftf_gym.data.format import (
    DEPTH_KEYS,
    EPISODE_IDS_FILE,
    FRAME_RE,
    LANG_FILE,
    MAX_WINDOW,
    OFFICIAL_IMAGE_SIZES,
    SCENE_INFO_FILE,
    VECTOR_DIMS,
    atomic_write,
    check_frame_array,
    frame_name,
)
from rftf_gym.data.index import Annotation, read_annotations, read_episode_ids, read_scene_info
from rftf_gym.data.safe_pickle import save_pickled_npy


class CalvinDatasetWriter:
    """Append episodes to one split in CALVIN's format, crash-safely and resumably.

    Frame ids are global and continuous across episodes. Usage::

        with CalvinDatasetWriter(root, "training") as writer:
            writer.start_episode("calvin_scene_A")
            first = writer.add_frame(actions=..., rel_actions=..., robot_obs=..., scene_obs=...,
                                     rgb_static=..., rgb_gripper=...)
            ...
            writer.add_annotation(first, last, "open the drawer", "open_drawer")
            writer.end_episode()  # index files rewritten here

    Opening a directory that already holds a dataset continues after its last finished episode;
    frames of an unfinished episode (and stray temporary files) are deleted. CALVIN's
    ``scene_info.npy`` gives one frame range per scene, so the episodes of a scene must be
    written one after another.

    Args:
        root: Dataset root; ``root/split`` is created if needed.
        split: Split directory name, ``"training"`` or ``"validation"``.
        image_sizes: (height, width) per camera (``"static"``, ``"gripper"``); defaults to the
            official 200x200 and 84x84.
        compress: Write frames with ``np.savez_compressed`` (as the released files) or uncompressed.
        max_window: Longest language window accepted, in frames.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_sizes: Mapping[str, tuple[int, int]] | None = None,
        compress: bool = True,
        max_window: int = MAX_WINDOW,
    ) -> None:
        self.path = Path(root) / split
        self.image_sizes = dict(image_sizes if image_sizes is not None else OFFICIAL_IMAGE_SIZES)
        if set(self.image_sizes) != set(OFFICIAL_IMAGE_SIZES):
            raise ValueError(f"image_sizes needs keys {sorted(OFFICIAL_IMAGE_SIZES)}")
        self.compress = compress
        self.max_window = max_window
        (self.path / LANG_FILE.parent).mkdir(parents=True, exist_ok=True)
        self._episodes: list[tuple[int, int]] = []
        self._scene_info: dict[str, list[int]] = {}
        self._annotations: list[Annotation] = []
        self._embs: list[np.ndarray] | None = None
        self._resume()
        self._next = self._episodes[-1][1] + 1 if self._episodes else 0
        self._episode: tuple[str, int] | None = None  # scene and first frame of the open episode
        self._pending: list[tuple[Annotation, np.ndarray | None]] = []
        self._frame_keys: frozenset[str] | None = None

    @property
    def next_frame_id(self) -> int:
        """Global id the next frame will get."""
        return self._next

    @property
    def episodes(self) -> list[tuple[int, int]]:
        """(first, last) frame ids of the finished episodes, inclusive."""
        return list(self._episodes)

    # ---- resume -----------------------------------------------------------------------------
    def _resume(self) -> None:
        if (self.path / EPISODE_IDS_FILE).is_file():
            self._episodes = [(int(s), int(e)) for s, e in read_episode_ids(self.path)]
            if (self.path / SCENE_INFO_FILE).is_file():
                self._scene_info = {s: [a, b] for s, (a, b) in read_scene_info(self.path).items()}
            if (self.path / LANG_FILE).is_file():
                annotations, emb = read_annotations(self.path)
                self._annotations = annotations
                self._embs = list(emb) if emb is not None else None
        last = self._episodes[-1][1] if self._episodes else -1
        # Drop what an interrupted episode left: its frames, temporary files and, if the crash
        # fell between the annotation file and the commit of ep_start_end_ids.npy, its windows.
        for directory in (self.path, self.path / LANG_FILE.parent):
            for entry in directory.iterdir():
                match = FRAME_RE.match(entry.name)
                if (match and int(match.group(1)) > last) or entry.name.endswith(".tmp"):
                    entry.unlink()
        keep = [i for i, a in enumerate(self._annotations) if a.end <= last]
        self._annotations = [self._annotations[i] for i in keep]
        if self._embs is not None:
            self._embs = [self._embs[i] for i in keep]
        for scene in list(self._scene_info):
            first, end = self._scene_info[scene]
            if first > last:
                del self._scene_info[scene]
            else:
                self._scene_info[scene] = [first, min(end, last)]
        self._write_index()

    # ---- episodes -----------------------------------------------------------------------------
    def start_episode(self, scene: str) -> int:
        """Open a new episode recorded in ``scene`` (e.g. ``"calvin_scene_A"``).

        Returns:
            The frame id its first frame will get.

        Raises:
            RuntimeError: An episode is already open.
            ValueError: The scene already has episodes and another scene came after them.
        """
        if self._episode is not None:
            raise RuntimeError("end_episode() or abort_episode() the open episode first")
        if not scene:
            raise ValueError("scene must be a non-empty name such as 'calvin_scene_A'")
        last_scene = max(self._scene_info, key=lambda s: self._scene_info[s][1], default=None)
        if scene in self._scene_info and scene != last_scene:
            raise ValueError(
                f"scene {scene!r} already has frames {self._scene_info[scene]} and {last_scene!r} "
                "came after them; scene_info.npy holds one range per scene, write scenes in blocks"
            )
        self._episode = (scene, self._next)
        self._pending = []
        return self._next

    def add_frame(
        self,
        *,
        actions: np.ndarray,
        rel_actions: np.ndarray,
        robot_obs: np.ndarray,
        scene_obs: np.ndarray,
        rgb_static: np.ndarray,
        rgb_gripper: np.ndarray,
        depth_static: np.ndarray | None = None,
        depth_gripper: np.ndarray | None = None,
    ) -> int:
        """Write one frame of the open episode.

        Float vectors are stored as given if float32/float64 (other numbers become float32),
        images must be uint8 of the writer's sizes, depth is stored as float32. Every frame of a
        writer must have the same keys.

        Returns:
            The frame's global id.

        Raises:
            RuntimeError: No episode is open.
            ValueError: A value with the wrong shape or dtype, or keys differing from the first
                frame.
        """
        if self._episode is None:
            raise RuntimeError("start_episode() first")
        given = {
            "actions": actions,
            "rel_actions": rel_actions,
            "robot_obs": robot_obs,
            "scene_obs": scene_obs,
            "rgb_static": rgb_static,
            "rgb_gripper": rgb_gripper,
            "depth_static": depth_static,
            "depth_gripper": depth_gripper,
        }
        frame = {}
        for key, value in given.items():
            if value is None:
                continue
            array = np.asarray(value)
            if key in VECTOR_DIMS and array.dtype not in (np.float32, np.float64):
                array = array.astype(np.float32)
            elif key in DEPTH_KEYS and np.issubdtype(array.dtype, np.floating):
                array = array.astype(np.float32)
            problem = check_frame_array(key, array, self.image_sizes)
            if problem:
                raise ValueError(f"frame {self._next}: {problem}")
            frame[key] = array
        keys = frozenset(frame)
        if self._frame_keys is not None and keys != self._frame_keys:
            raise ValueError(
                f"frame keys {sorted(keys)} differ from earlier {sorted(self._frame_keys)}"
            )
        self._frame_keys = keys
        save = np.savez_compressed if self.compress else np.savez
        atomic_write(self.path / frame_name(self._next), lambda f: save(f, **frame))
        self._next += 1
        return self._next - 1

    def add_annotation(
        self, start: int, end: int, ann: str, task: str, emb: np.ndarray | None = None
    ) -> None:
        """Label frames start..end (inclusive, already written, in the open episode).

        The annotation is saved when the episode ends and dropped if it is aborted.

        Args:
            start: First frame id of the window.
            end: Last frame id of the window (inclusive).
            ann: Instruction text.
            task: Task id (e.g. ``"open_drawer"``).
            emb: Language embedding; give it for all annotations of a split or for none.

        Raises:
            RuntimeError: No episode is open.
            ValueError: The window is outside the open episode's frames or too long, or the
                embedding is given for some annotations only.
        """
        if self._episode is None:
            raise RuntimeError("add_annotation() needs an open episode")
        first = self._episode[1]
        if not first <= start <= end < self._next:
            raise ValueError(
                f"window ({start}, {end}) is not inside the written frames "
                f"{first}..{self._next - 1}"
            )
        if end - start + 1 > self.max_window:
            raise ValueError(f"window ({start}, {end}) is longer than {self.max_window} frames")
        earlier = [e for _, e in self._pending] + (self._embs or [None] * len(self._annotations))
        if earlier and (earlier[0] is None) != (emb is None):
            raise ValueError("give emb for every annotation of a split or for none")
        if emb is not None:
            emb = np.asarray(emb)
            if earlier and (emb.shape, emb.dtype) != (earlier[0].shape, earlier[0].dtype):
                raise ValueError(
                    f"emb shape/dtype {emb.shape} {emb.dtype} differs from earlier "
                    f"{earlier[0].shape} {earlier[0].dtype}"
                )
        self._pending.append((Annotation(int(start), int(end), str(ann), str(task)), emb))

    def end_episode(self) -> tuple[int, int]:
        """Finish the open episode and rewrite the index files.

        Returns:
            The episode's (first, last) frame ids, inclusive.

        Raises:
            RuntimeError: No episode is open, or it has no frames.
        """
        if self._episode is None:
            raise RuntimeError("no open episode")
        scene, first = self._episode
        last = self._next - 1
        if last < first:
            raise RuntimeError("an episode needs at least one frame")
        self._episodes.append((first, last))
        self._scene_info[scene] = [self._scene_info.get(scene, [first])[0], last]
        for annotation, emb in self._pending:
            self._annotations.append(annotation)
            if emb is not None:
                self._embs = (self._embs or []) + [emb]
        self._episode, self._pending = None, []
        self._write_index()
        return first, last

    def abort_episode(self) -> None:
        """Delete the frames and annotations of the open episode (no-op when none is open)."""
        if self._episode is None:
            return
        first = self._episode[1]
        for frame_id in range(first, self._next):
            (self.path / frame_name(frame_id)).unlink(missing_ok=True)
        self._next = first
        self._episode, self._pending = None, []

    def _write_index(self) -> None:
        language: dict[str, Any] = {
            "ann": [a.ann for a in self._annotations],
            "task": [a.task for a in self._annotations],
        }
        if self._embs:
            language["emb"] = np.stack(self._embs)
        indx = [(a.start, a.end) for a in self._annotations]
        lang = {"language": language, "info": {"episodes": [], "indx": indx}}
        save_pickled_npy(self.path / LANG_FILE, lang)
        save_pickled_npy(self.path / SCENE_INFO_FILE, self._scene_info)
        ids = np.array(self._episodes, dtype=np.int64).reshape(-1, 2)
        # Written last: the commit point of a finished episode.
        atomic_write(self.path / EPISODE_IDS_FILE, lambda f: np.save(f, ids), sync=True)

    # ---- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Drop an unfinished episode, as a resume would."""
        self.abort_episode()

    def __enter__(self) -> CalvinDatasetWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
