"""`CalvinDataset`: a validated, lazy view of one split on disk."""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from rftf_gym.data.format import (
    EPISODE_IDS_FILE,
    FRAME_KEYS,
    FRAME_RE,
    LANG_FILE,
    DatasetError,
    check_frame_array,
    frame_name,
)
from rftf_gym.data.index import episode_index, read_annotations, read_episode_ids, read_scene_info


class CalvinDataset:
    """Validated, lazy view of one split of a CALVIN-format dataset (ours or the official one).

    Construction reads only the three index files and lists the directory; it checks that every
    frame of every episode exists and that every language window lies inside one episode. Frames
    are opened on demand (``allow_pickle=False``) and checked for keys, shapes and dtypes.

    Args:
        root: Dataset root holding the split directories.
        split: Split directory name, ``"training"`` or ``"validation"``.
        image_sizes: (height, width) per camera (``"static"``, ``"gripper"``) that images must
            have; None accepts any size.
        check_files: List the directory to check that every frame file exists.
        lang_folder: Folder of ``auto_lang_ann.npy`` inside the split.

    Raises:
        DatasetError: Missing directory, index file or frame file, malformed index file, or an
            annotation window outside the episodes.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_sizes: Mapping[str, tuple[int, int]] | None = None,
        check_files: bool = True,
        lang_folder: str = LANG_FILE.parent.name,
    ) -> None:
        self.path = Path(root) / split
        self.lang_file = self.path / lang_folder / LANG_FILE.name
        if not self.path.is_dir():
            raise DatasetError(f"{self.path}: dataset directory is missing")
        self.image_sizes = dict(image_sizes) if image_sizes is not None else None
        self.episodes = read_episode_ids(self.path)
        self.scene_info = read_scene_info(self.path)
        self.annotations, self.language_emb = read_annotations(self.path, lang_folder)
        for i, a in enumerate(self.annotations):
            if episode_index(self.episodes, a.start, a.end) is None:
                raise DatasetError(
                    f"{self.lang_file}: info.indx[{i}] = ({a.start}, {a.end}) does not lie "
                    f"inside a single episode of {EPISODE_IDS_FILE}"
                )
        if check_files:
            self._check_files_exist()

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
            keys: Keys to read (only these are decompressed); None reads every key in the file.

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
