"""`CalvinDataset`: a validated, lazy view of one split on disk."""

from __future__ import annotations

import functools
import os
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from rftf_gym.data.format import (
    DEPTH_KEYS,
    EPISODE_IDS_FILE,
    FRAME_KEYS,
    EVAL_EMBEDDINGS_FILE,
    FRAME_RE,
    LANG_FOLDER,
    SCENE_INFO_FILE,
    DatasetError,
    check_frame_array,
    frame_name,
)
from rftf_gym.data.index import (
    Annotation,
    TaskEmbeddings,
    episode_index,
    language_file,
    read_annotations,
    read_episode_ids,
    read_eval_embeddings,
    read_scene_info,
)


class DatasetWarning(UserWarning):
    """Part of a dataset was skipped; the message names the file and what was skipped."""


class CalvinDataset:
    """Validated, lazy view of one split of a CALVIN-format dataset (ours or the official one).

    Construction reads only the index files and lists the directory; it checks that every frame
    of every episode exists. Frames are opened on demand (``allow_pickle=False``) and checked for
    keys, shapes and dtypes. It opens the real splits as released (``task_D_D``, ``task_ABC_D``,
    ``task_ABCD_D``): global frame ids that need not start at 0, gaps between episodes, episodes
    listed in any order, validation folders without ``scene_info.npy``, any of the language
    folders.

    Language windows that do not lie inside a single episode cannot be served as one clip; they
    are skipped with a `DatasetWarning` and listed in ``dropped_windows`` (the official loader
    does not check them and would read across the boundary).

    Attributes:
        episodes: int64 (N, 2) inclusive (first, last) frame ids, sorted by first frame.
        scene_info: Scene name -> inclusive frame range from ``scene_info.npy``; empty when the
            split has none (the real validation folders: in ``task_D_D`` the training split's
            file covers both splits).
        annotations: The language windows kept, in file order.
        annotation_ids: Position in ``info.indx`` of each kept window.
        dropped_windows: (position in ``info.indx``, window) of each skipped window.
        language_emb: ``language.emb`` rows of the kept windows (real data: (M, 1, 384) MiniLM),
            or None when the file has none.
        language_file: The ``auto_lang_ann.npy`` read, or None without language.
        eval_embeddings: Task -> evaluation sentences and embeddings from ``embeddings.npy`` next
            to the language file (or at the split root, where the official rollout code also
            looks), or None when there is none.

    Args:
        root: Dataset root holding the split directories.
        split: Split directory name, ``"training"`` or ``"validation"``.
        image_sizes: (height, width) per camera (``"static"``, ``"gripper"``) that images must
            have; None accepts any size.
        check_files: List the directory to check that every frame file exists.
        lang_folder: Language folder to read (``"lang_annotations"``, or one named after its
            sentence encoder such as ``"lang_paraphrase-MiniLM-L3-v2"``); falls back to
            ``<split>/auto_lang_ann.npy`` as the official loader does. None reads no language.

    Raises:
        DatasetError: Missing directory, index file or frame file, or a malformed index file.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_sizes: Mapping[str, tuple[int, int]] | None = None,
        check_files: bool = True,
        lang_folder: str | None = LANG_FOLDER,
    ) -> None:
        self.path = Path(root) / split
        if not self.path.is_dir():
            raise DatasetError(f"{self.path}: dataset directory is missing")
        self.image_sizes = dict(image_sizes) if image_sizes is not None else None
        self.episodes = read_episode_ids(self.path)
        has_scene_info = (self.path / SCENE_INFO_FILE).is_file()
        self.scene_info = read_scene_info(self.path) if has_scene_info else {}
        self.language_file: Path | None = None
        self.annotations: list[Annotation] = []
        self.annotation_ids = np.zeros(0, dtype=np.int64)
        self.dropped_windows: list[tuple[int, Annotation]] = []
        self.language_emb: np.ndarray | None = None
        self.eval_embeddings: dict[str, TaskEmbeddings] | None = None
        if lang_folder is not None:
            self._read_language(lang_folder)
        if check_files:
            self._check_files_exist()

    def _read_language(self, lang_folder: str) -> None:
        self.language_file = language_file(self.path, lang_folder)
        annotations, emb = read_annotations(self.language_file)
        inside = [episode_index(self.episodes, a.start, a.end) is not None for a in annotations]
        self.annotation_ids = np.flatnonzero(inside)
        self.annotations = [annotations[i] for i in self.annotation_ids]
        self.dropped_windows = [(i, a) for i, a in enumerate(annotations) if not inside[i]]
        self.language_emb = emb[self.annotation_ids] if emb is not None else None
        if self.dropped_windows:
            i, a = self.dropped_windows[0]
            warnings.warn(
                f"{self.language_file}: skipping {len(self.dropped_windows)} of "
                f"{len(annotations)} language windows that do not lie inside a single episode of "
                f"{EPISODE_IDS_FILE} (first: info.indx[{i}] = ({a.start}, {a.end}))",
                DatasetWarning,
                stacklevel=3,
            )
        for folder in (self.language_file.parent, self.path):
            if (folder / EVAL_EMBEDDINGS_FILE).is_file():
                self.eval_embeddings = read_eval_embeddings(folder / EVAL_EMBEDDINGS_FILE)
                break

    def _check_files_exist(self) -> None:
        present = set()
        with os.scandir(self.path) as it:
            for entry in it:
                match = FRAME_RE.match(entry.name)
                if match:
                    present.add(int(match.group(1)))
        for start, end in self.episodes:
            for frame_id in range(int(start), int(end) + 1):
                if frame_id not in present:
                    raise DatasetError(
                        f"{self.frame_path(frame_id)}: frame file is missing "
                        f"(episode {start}..{end} in {EPISODE_IDS_FILE})"
                    )

    @functools.cached_property
    def frame_keys(self) -> tuple[str, ...]:
        """Keys stored in the split's frames (those of its first frame, read from the file's
        listing without decompressing anything), e.g. with ``depth_static`` / ``depth_gripper``
        when the frames carry depth; empty for a split without episodes.

        Raises:
            DatasetError: The first frame file is missing or not a readable npz.
        """
        if len(self.episodes) == 0:
            return ()
        path = self.frame_path(int(self.episodes[0, 0]))
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except FileNotFoundError:
            raise DatasetError(f"{path}: frame file is missing") from None
        except (zipfile.BadZipFile, OSError) as e:
            raise DatasetError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
        return tuple(name.removesuffix(".npy") for name in names)

    @property
    def has_depth(self) -> bool:
        """Whether the frames hold ``depth_static`` and ``depth_gripper``."""
        return all(key in self.frame_keys for key in DEPTH_KEYS)

    @property
    def num_frames(self) -> int:
        """Number of frames in all episodes."""
        return int(np.sum(self.episodes[:, 1] - self.episodes[:, 0] + 1))

    def frame_path(self, frame_id: int) -> Path:
        """Path of the file holding a frame."""
        return self.path / frame_name(frame_id)

    def load_frame(self, frame_id: int, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Read one frame.

        Args:
            frame_id: Global frame id.
            keys: Keys to read (only these are decompressed); None reads every key in the file,
                depth images included when stored (see `frame_keys`).

        Returns:
            Dict key -> array, exactly as stored.

        Raises:
            DatasetError: The file is missing or truncated, lacks a required or requested key, or
                an array has the wrong shape or dtype.
        """
        path = self.frame_path(frame_id)
        try:
            # Opened here rather than by np.load, which leaks the handle of a corrupt zip.
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
                missing = [k for k in (*FRAME_KEYS, *(keys or ())) if k not in npz.files]
                if missing:
                    raise DatasetError(f"{path}: missing keys {missing} (has {sorted(npz.files)})")
                frame = {k: npz[k] for k in (keys if keys is not None else npz.files)}
        except DatasetError:
            raise
        except FileNotFoundError:
            raise DatasetError(f"{path}: frame file is missing") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
            problem = f"unreadable or truncated ({type(e).__name__}: {e})"
            raise DatasetError(f"{path}: {problem}") from None
        for key, array in frame.items():
            problem = check_frame_array(key, array, self.image_sizes)
            if problem:
                raise DatasetError(f"{path}: {problem}")
        return frame

    def load_frames(
        self, frame_ids: Sequence[int], keys: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Read several frames and stack each key along a new first axis.

        Args:
            frame_ids: Global frame ids, in the order wanted.
            keys: Keys to read; None reads `FRAME_KEYS`.

        Returns:
            Dict key -> array (len(frame_ids), ...).

        Raises:
            DatasetError: As `load_frame`, or frames whose images differ in size.
        """
        keys = tuple(keys) if keys is not None else FRAME_KEYS
        frames = [self.load_frame(i, keys) for i in frame_ids]
        out = {}
        for key in keys:
            shapes = {f[key].shape for f in frames}
            if len(shapes) > 1:
                raise DatasetError(
                    f"{self.path}: {key} changes shape within frames {list(frame_ids)}"
                )
            out[key] = np.stack([f[key] for f in frames])
        return out

    def iter_frames(
        self, start: int, end: int, keys: Sequence[str] | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield frames start..end (inclusive) one at a time, in order.

        Args:
            start: First frame id.
            end: Last frame id (inclusive, as in CALVIN's windows).
            keys: Keys to read; None reads `FRAME_KEYS`.

        Yields:
            Dict key -> array of one frame.
        """
        keys = tuple(keys) if keys is not None else FRAME_KEYS
        for frame_id in range(start, end + 1):
            yield self.load_frame(frame_id, keys)

    def validate(self) -> None:
        """Open every frame of every episode and check it (slow: reads the whole split).

        Raises:
            DatasetError: The first bad frame found.
        """
        for start, end in self.episodes:
            for _ in self.iter_frames(int(start), int(end), keys=None):
                pass
