"""`CalvinDatasetWriter`: append episodes to a split, crash-safely and resumably."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from rftf_gym.conventions import IMAGE_HW
from rftf_gym.data.format import (
    DEPTH_KEYS,
    EP_LENS_FILE,
    EPISODE_IDS_FILE,
    EVAL_EMBEDDINGS_FILE,
    FRAME_RE,
    LANG_ANN_FILE,
    LANG_FOLDER,
    MAX_WINDOW,
    SCENE_INFO_FILE,
    VECTOR_DIMS,
    check_frame_array,
    frame_name,
)
from rftf_gym.data.index import (
    Annotation,
    TaskEmbeddings,
    check_eval_embeddings,
    read_annotations,
    read_episode_ids,
    read_scene_info,
)
from rftf_gym.data.safe_pickle import save_pickled_npy
from rftf_gym.files import atomic_write


class CalvinDatasetWriter:
    """Append episodes to one split in CALVIN's format, crash-safely and resumably.

    Frame ids are global and continuous across episodes. Usage::

        with CalvinDatasetWriter(root, "training") as writer:
            writer.start_episode("calvin_scene_A")
            first = writer.add_frame(actions=..., rel_actions=..., robot_obs=..., scene_obs=...,
                                     rgb_static=..., rgb_gripper=...)
            ...
            writer.add_annotation(first, last, "open the drawer", "open_drawer", emb=...)
            writer.end_episode()  # index files rewritten here
        writer.write_eval_embeddings({"open_drawer": TaskEmbeddings(("open the drawer",), emb)})

    Opening a directory that already holds a dataset continues after its last finished episode;
    frames of an unfinished episode (and stray temporary files) are deleted. CALVIN's
    ``scene_info.npy`` gives one frame range per scene, so the episodes of a scene must be
    written one after another.

    Besides the frames it writes ``ep_start_end_ids.npy``, ``ep_lens.npy`` (episode lengths, as
    calvin_env's ``datarenderer.save_ep_lens``), ``scene_info.npy`` and the same
    ``auto_lang_ann.npy`` in every folder of ``lang_folders``: CALVIN's loaders read
    ``lang_annotations`` by default, and the real data also holds copies named after the encoder
    of ``language.emb`` (``lang_paraphrase-MiniLM-L3-v2``, ...).

    Args:
        root: Dataset root; ``root/split`` is created if needed.
        split: Split directory name, ``"training"`` or ``"validation"``.
        image_sizes: (height, width) per camera (``"static"``, ``"gripper"``); defaults to the
            official 200x200 and 84x84.
        compress: Write frames with ``np.savez_compressed`` (as the released files) or uncompressed.
        max_window: Longest language window accepted, in frames.
        lang_folders: Language folders to write (folder names, the first is read on resume).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_sizes: Mapping[str, tuple[int, int]] | None = None,
        compress: bool = True,
        max_window: int = MAX_WINDOW,
        lang_folders: Sequence[str] = (LANG_FOLDER,),
    ) -> None:
        self.path = Path(root) / split
        self.image_sizes = dict(image_sizes if image_sizes is not None else IMAGE_HW)
        if set(self.image_sizes) != set(IMAGE_HW):
            raise ValueError(f"image_sizes needs keys {sorted(IMAGE_HW)}")
        self.compress = compress
        self.max_window = max_window
        self.lang_folders = tuple(lang_folders)
        bad = [f for f in self.lang_folders if not f or Path(f).name != f or f.startswith(".")]
        if not self.lang_folders or bad or len(set(self.lang_folders)) != len(self.lang_folders):
            raise ValueError(
                f"lang_folders must be unique folder names such as 'lang_annotations', got "
                f"{self.lang_folders}"
            )
        for folder in self.lang_folders:
            (self.path / folder).mkdir(parents=True, exist_ok=True)
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
            lang_file = self.path / self.lang_folders[0] / LANG_ANN_FILE
            if lang_file.is_file():
                annotations, emb = read_annotations(lang_file)
                self._annotations = annotations
                self._embs = list(emb) if emb is not None else None
        last = self._episodes[-1][1] if self._episodes else -1
        # Drop what an interrupted episode left: its frames, temporary files and, if the crash
        # fell between the annotation file and the commit of ep_start_end_ids.npy, its windows.
        for directory in (self.path, *(self.path / f for f in self.lang_folders)):
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
        for folder in self.lang_folders:
            save_pickled_npy(self.path / folder / LANG_ANN_FILE, lang)
        save_pickled_npy(self.path / SCENE_INFO_FILE, self._scene_info)
        ids = np.array(self._episodes, dtype=np.int64).reshape(-1, 2)
        lens = ids[:, 1] - ids[:, 0] + 1
        atomic_write(self.path / EP_LENS_FILE, lambda f: np.save(f, lens))
        # Written last: the commit point of a finished episode.
        atomic_write(self.path / EPISODE_IDS_FILE, lambda f: np.save(f, ids), sync=True)

    def write_eval_embeddings(self, embeddings: Mapping[str, TaskEmbeddings]) -> None:
        """Write ``embeddings.npy`` (the evaluation sentences and their embeddings) in every
        language folder, as the official annotator's ``compute_val_embeddings`` does for the
        validation split: a dict task -> {"emb": array (len(ann), ...), "ann": [sentence, ...]}.

        Raises:
            ValueError: A task without sentences, or ``emb`` rows not matching the sentences.
        """
        problem = check_eval_embeddings(embeddings)
        if problem:
            raise ValueError(problem)
        content = {
            task: {"emb": np.asarray(entry.emb), "ann": list(entry.ann)}
            for task, entry in embeddings.items()
        }
        for folder in self.lang_folders:
            save_pickled_npy(self.path / folder / EVAL_EMBEDDINGS_FILE, content)

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
