"""CALVIN's on-disk dataset format: a writer, a validating reader and a dataset of language windows.

The layout is the one the official repository documents (mees/calvin, ``dataset/README.md``) and
loads (``calvin_models/calvin_agent/datasets/disk_dataset.py``)::

    <root>/<split>/                      split is "training" or "validation" (validation = scene D)
        episode_0000000.npz ...          one file per frame (zero-padded global frame id)
        ep_start_end_ids.npy             int array (N, 2): first and last frame id of each episode,
                                         both inclusive
        scene_info.npy                   pickled dict {"calvin_scene_A": [first, last], ...}: the
                                         inclusive frame-id range recorded in each scene
        lang_annotations/auto_lang_ann.npy
                                         pickled dict {"language": {"ann": [str], "task": [str],
                                         "emb": array (M, ...) optional}, "info": {"episodes": [],
                                         "indx": [(start, end), ...]}}; windows are inclusive
                                         frame-id ranges inside one episode (the writer caps
                                         them at 64 frames; the official annotator stores
                                         (s, s + 64), so the reader accepts any length)

A frame file holds ``actions`` (7: absolute tcp pos, euler xyz, gripper -1 close / +1 open),
``rel_actions`` (7: see `to_relative_actions`), ``robot_obs`` (15), ``scene_obs`` (24),
``rgb_static`` (200, 200, 3) uint8, ``rgb_gripper`` (84, 84, 3) uint8 and optionally
``depth_static`` (200, 200) / ``depth_gripper`` (84, 84) float32. CALVIN's README documents the
float vectors as float32; both float32 and float64 are accepted and returned as stored. Real
CALVIN frames also carry ``rgb_tactile`` / ``depth_tactile``; the reader ignores keys it is not
asked for.

Why a restricted unpickler: CALVIN stores ``scene_info.npy`` and ``auto_lang_ann.npy`` as
``np.save`` of a Python dict, i.e. a 0-d object array whose payload is a pickle, and CALVIN's own
code reads them with ``np.load(..., allow_pickle=True)``. Unpickling runs whatever callables the
file names, so a downloaded dataset could execute code. `load_pickled_npy` parses the ``.npy``
header itself and unpickles with `SafeUnpickler`, which only accepts plain containers, strings,
numbers, ``None`` and the handful of numpy globals needed to rebuild arrays, dtypes and scalars,
and refuses every other global with an `UnsafePickleError`. Frame files never need pickles and are
opened with ``allow_pickle=False``.

Crash safety: every file is written to a hidden temporary name in the same directory and moved
into place with ``os.replace``. `CalvinDatasetWriter` rewrites the index files after each finished
episode (annotations and scene info first, ``ep_start_end_ids.npy`` last: that file is the commit
point), so an interrupted collection leaves a readable dataset of the finished episodes; a writer
opened on the same directory drops the frames of an unfinished episode and continues after the
last finished one.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np
import torch.utils.data

try:  # numpy >= 2 moved the array internals to numpy._core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

# ----------------------------------------------------------------------------------------------
# Format constants (dataset/README.md of mees/calvin)
# ----------------------------------------------------------------------------------------------
FRAME_KEYS: tuple[str, ...] = (
    "actions",
    "rel_actions",
    "robot_obs",
    "scene_obs",
    "rgb_static",
    "rgb_gripper",
)
"""Keys every frame file holds."""
DEPTH_KEYS: tuple[str, ...] = ("depth_static", "depth_gripper")
"""Optional depth keys (float32, H x W)."""
VECTOR_DIMS: dict[str, int] = {"actions": 7, "rel_actions": 7, "robot_obs": 15, "scene_obs": 24}
OFFICIAL_IMAGE_SIZES: dict[str, tuple[int, int]] = {"static": (200, 200), "gripper": (84, 84)}
"""Image (height, width) per camera in the official dataset; keys are camera names."""
MAX_WINDOW = 64
"""Longest language window the writer accepts, in frames (CALVIN annotates 64-frame windows)."""
# Clipping of relative actions: calvin_env's to_relative_action uses max_pos=0.02 m and
# max_orn=0.05 rad, which are the README's scaling factors 50 and 20.
REL_POS_MAX = 0.02
REL_ORN_MAX = 0.05

EPISODE_IDS_FILE = "ep_start_end_ids.npy"
SCENE_INFO_FILE = "scene_info.npy"
LANG_FILE = Path("lang_annotations") / "auto_lang_ann.npy"
_FRAME_RE = re.compile(r"^episode_(\d+)\.npz$")


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and the problem."""


class UnsafePickleError(DatasetError):
    """A pickled ``.npy`` file refers to something other than plain data."""


def frame_name(frame_id: int) -> str:
    """File name of a frame, CALVIN's ``episode_%07d.npz``."""
    return f"episode_{frame_id:07d}.npz"


# ----------------------------------------------------------------------------------------------
# Relative actions
# ----------------------------------------------------------------------------------------------
def wrap_angle(angle: np.ndarray | float) -> np.ndarray:
    """Wrap angles to [-pi, pi)."""
    return (np.asarray(angle, dtype=np.float64) + np.pi) % (2 * np.pi) - np.pi


def to_relative_actions(
    robot_obs_t: np.ndarray, robot_obs_t1: np.ndarray, gripper: np.ndarray | float
) -> np.ndarray:
    """CALVIN ``rel_actions`` that move the tcp from one pose to the next.

    The position change is clipped to +-0.02 m and the euler change (wrapped to [-pi, pi)) to
    +-0.05 rad, then both are divided by the clip so that they lie in [-1, 1]
    (calvin_env ``utils.to_relative_action``; README scaling factors 50 and 20). The gripper
    action is copied.

    Args:
        robot_obs_t: Current ``robot_obs`` (..., >= 6), tcp pos then euler xyz.
        robot_obs_t1: Next ``robot_obs`` with the same leading shape.
        gripper: Gripper action (-1 close, +1 open), scalar or shaped like the leading dims.

    Returns:
        float64 array (..., 7).
    """
    obs_t = np.asarray(robot_obs_t, dtype=np.float64)
    obs_t1 = np.asarray(robot_obs_t1, dtype=np.float64)
    if obs_t.shape != obs_t1.shape or obs_t.shape[-1] < 6:
        raise ValueError(f"robot_obs shapes {obs_t.shape} and {obs_t1.shape} must match, >= 6 long")
    pos = np.clip(obs_t1[..., :3] - obs_t[..., :3], -REL_POS_MAX, REL_POS_MAX) / REL_POS_MAX
    orn = np.clip(wrap_angle(obs_t1[..., 3:6] - obs_t[..., 3:6]), -REL_ORN_MAX, REL_ORN_MAX)
    grip = np.broadcast_to(np.asarray(gripper, dtype=np.float64), obs_t.shape[:-1])[..., None]
    return np.concatenate([pos, orn / REL_ORN_MAX, grip], axis=-1)


# ----------------------------------------------------------------------------------------------
# Restricted loading of pickled .npy files
# ----------------------------------------------------------------------------------------------
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    # Files written by numpy 1.x name numpy.core, numpy 2 names numpy._core; both resolve to the
    # same functions without importing the deprecated numpy.core shim.
    _SAFE_GLOBALS[(_module, "_reconstruct")] = _multiarray._reconstruct
    _SAFE_GLOBALS[(_module, "scalar")] = _multiarray.scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    # Arrays pickled with protocol 5 are rebuilt by frombuffer + reshape.
    _SAFE_GLOBALS[(_module, "_frombuffer")] = _numeric._frombuffer


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds only plain data.

    Dicts, lists, tuples, str, bytes, int, float, bool and None (and sets from protocol 4 on) are
    built by pickle opcodes without looking up any global; the only globals allowed are numpy's
    array, dtype and scalar constructors. Anything else (``os.system``, ``builtins.eval``,
    arbitrary classes) raises `UnsafePickleError` before it is called.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global if it is on the allow list; refuse it otherwise."""
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle global {module}.{name}: only plain containers, strings, "
                "numbers and numpy arrays are allowed"
            ) from None


def load_pickled_npy(path: str | Path) -> Any:
    """Load a ``.npy`` file that ``np.save`` wrote from a Python object, without running code.

    Args:
        path: File written by ``np.save(path, obj)`` (a 0-d object array).

    Returns:
        The stored object (e.g. the dict of ``auto_lang_ann.npy``).

    Raises:
        DatasetError: The file is missing, not a 0-d object ``.npy``, or truncated.
        UnsafePickleError: The pickle names a global outside the allow list (subclass of
            DatasetError); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file is missing")
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except ValueError as e:
            raise DatasetError(f"{path}: not a valid .npy file ({e})") from None
        if dtype != np.dtype(object) or shape != ():
            raise DatasetError(
                f"{path}: expected a pickled dict (0-d object array), "
                f"got dtype {dtype} shape {shape}"
            )
        try:
            array = SafeUnpickler(f).load()
        except UnsafePickleError as e:
            raise UnsafePickleError(f"{path}: {e}") from None
        except Exception as e:  # truncated or corrupt pickles raise many types
            raise DatasetError(f"{path}: corrupt pickle ({type(e).__name__}: {e})") from None
    if not isinstance(array, np.ndarray) or array.dtype != object or array.shape != ():
        raise DatasetError(f"{path}: pickle does not hold a 0-d object array")
    return array.item()


def _atomic_write(path: Path, write: Callable[[BinaryIO], None], sync: bool = False) -> None:
    """Write a file under a hidden temporary name in the same directory, then rename it."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_pickled_npy(path: Path, obj: Any) -> None:
    array = np.empty((), dtype=object)
    array[()] = obj
    _atomic_write(path, lambda f: np.save(f, array, allow_pickle=True), sync=True)


# ----------------------------------------------------------------------------------------------
# Index files
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Annotation:
    """One language-annotated window: inclusive frame ids, instruction and task id."""

    start: int
    end: int
    ann: str
    task: str


def _read_episode_ids(path: Path) -> np.ndarray:
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


def _read_scene_info(path: Path) -> dict[str, tuple[int, int]]:
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


def _read_annotations(path: Path) -> tuple[list[Annotation], np.ndarray | None]:
    file = path / LANG_FILE
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


def _episode_index(episodes: np.ndarray, start: int, end: int) -> int | None:
    """Index of the episode that contains frames start..end, or None."""
    i = int(np.searchsorted(episodes[:, 0], start, side="right")) - 1
    if i < 0 or start > end or end > episodes[i, 1]:
        return None
    return i


# ----------------------------------------------------------------------------------------------
# Frame checks
# ----------------------------------------------------------------------------------------------
def _check_frame_array(
    key: str, array: np.ndarray, image_sizes: Mapping[str, tuple[int, int]] | None
) -> str | None:
    """Problem with one frame array, or None when it follows the format."""
    if key in VECTOR_DIMS:
        if array.shape != (VECTOR_DIMS[key],) or array.dtype not in (np.float32, np.float64):
            dims = VECTOR_DIMS[key]
            return f"{key} must be float32/float64 ({dims},), got {array.dtype} {array.shape}"
        return None
    kind, _, camera = key.partition("_")
    if kind not in ("rgb", "depth") or camera not in OFFICIAL_IMAGE_SIZES:
        return None  # keys outside the documented set (e.g. tactile) are not checked
    if kind == "rgb" and (array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3):
        return f"{key} must be uint8 (H, W, 3), got {array.dtype} {array.shape}"
    if kind == "depth" and (array.dtype != np.float32 or array.ndim != 2):
        return f"{key} must be float32 (H, W), got {array.dtype} {array.shape}"
    size = tuple(image_sizes[camera]) if image_sizes and camera in image_sizes else None
    if size is not None and array.shape[:2] != size:
        return f"{key} must be {size} images, got {array.shape[:2]}"
    return None


# ----------------------------------------------------------------------------------------------
# Reader
# ----------------------------------------------------------------------------------------------
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
    ) -> None:
        self.path = Path(root) / split
        if not self.path.is_dir():
            raise DatasetError(f"{self.path}: dataset directory is missing")
        self.image_sizes = dict(image_sizes) if image_sizes is not None else None
        self.episodes = _read_episode_ids(self.path)
        self.scene_info = _read_scene_info(self.path)
        self.annotations, self.language_emb = _read_annotations(self.path)
        for i, a in enumerate(self.annotations):
            if _episode_index(self.episodes, a.start, a.end) is None:
                raise DatasetError(
                    f"{self.path / LANG_FILE}: info.indx[{i}] = ({a.start}, {a.end}) does not lie "
                    f"inside a single episode of {EPISODE_IDS_FILE}"
                )
        if check_files:
            self._check_files_exist()

    def _check_files_exist(self) -> None:
        present = set()
        with os.scandir(self.path) as it:
            for entry in it:
                match = _FRAME_RE.match(entry.name)
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
            problem = _check_frame_array(key, array, self.image_sizes)
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


# ----------------------------------------------------------------------------------------------
# Language windows for training
# ----------------------------------------------------------------------------------------------
class LanguageWindowDataset(torch.utils.data.Dataset):
    """Language-annotated windows of a `CalvinDataset`, read lazily from disk.

    Item ``i`` is the window of annotation ``i``::

        {"frames": {key: array (T, ...)}, "frame_ids": int64 array (T,),
         "instruction": str, "task": str, "window": (start, end),
         "emb": array}                         # only when the split has language.emb

    Frames are in time order. With ``num_frames`` every item has exactly that many frames,
    picked evenly from the first to the last frame of the window (frames repeat when the window is
    shorter), so that ``DataLoader``'s default collate can batch them; with ``max_frames`` longer
    windows are thinned the same way and shorter ones kept whole.

    Args:
        dataset: The split to read.
        keys: Frame keys to read, e.g. ``("rgb_static", "robot_obs")``; None reads `FRAME_KEYS`.
        num_frames: Fixed number of frames per item.
        max_frames: Largest number of frames per item (exclusive with ``num_frames``).
    """

    def __init__(
        self,
        dataset: CalvinDataset,
        keys: Sequence[str] | None = None,
        num_frames: int | None = None,
        max_frames: int | None = None,
    ) -> None:
        if num_frames is not None and max_frames is not None:
            raise ValueError("give num_frames or max_frames, not both")
        for name, value in (("num_frames", num_frames), ("max_frames", max_frames)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.keys = tuple(keys) if keys is not None else FRAME_KEYS
        if not self.keys or len(set(self.keys)) != len(self.keys):
            raise ValueError(f"keys must be non-empty and unique, got {self.keys}")
        self.dataset = dataset
        self.num_frames = num_frames
        self.max_frames = max_frames

    def __len__(self) -> int:
        return len(self.dataset.annotations)

    def frame_ids(self, index: int) -> np.ndarray:
        """Frame ids item ``index`` reads, in time order."""
        a = self.dataset.annotations[index]
        length = a.end - a.start + 1
        count = self.num_frames or min(length, self.max_frames or length)
        if count == length:
            return np.arange(a.start, a.end + 1, dtype=np.int64)
        return np.round(np.linspace(a.start, a.end, count)).astype(np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        a = self.dataset.annotations[index]
        ids = self.frame_ids(index)
        item: dict[str, Any] = {
            "frames": self.dataset.load_frames(ids.tolist(), self.keys),
            "frame_ids": ids,
            "instruction": a.ann,
            "task": a.task,
            "window": (a.start, a.end),
        }
        if self.dataset.language_emb is not None:
            item["emb"] = self.dataset.language_emb[index]
        return item


# ----------------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------------
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
            self._episodes = [(int(s), int(e)) for s, e in _read_episode_ids(self.path)]
            if (self.path / SCENE_INFO_FILE).is_file():
                self._scene_info = {s: [a, b] for s, (a, b) in _read_scene_info(self.path).items()}
            if (self.path / LANG_FILE).is_file():
                annotations, emb = _read_annotations(self.path)
                self._annotations = annotations
                self._embs = list(emb) if emb is not None else None
        last = self._episodes[-1][1] if self._episodes else -1
        # Drop what an interrupted episode left: its frames, temporary files and, if the crash
        # fell between the annotation file and the commit of ep_start_end_ids.npy, its windows.
        for directory in (self.path, self.path / LANG_FILE.parent):
            for entry in directory.iterdir():
                match = _FRAME_RE.match(entry.name)
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
            problem = _check_frame_array(key, array, self.image_sizes)
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
        _atomic_write(self.path / frame_name(self._next), lambda f: save(f, **frame))
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
        _save_pickled_npy(self.path / LANG_FILE, lang)
        _save_pickled_npy(self.path / SCENE_INFO_FILE, self._scene_info)
        ids = np.array(self._episodes, dtype=np.int64).reshape(-1, 2)
        # Written last: the commit point of a finished episode.
        _atomic_write(self.path / EPISODE_IDS_FILE, lambda f: np.save(f, ids), sync=True)

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
