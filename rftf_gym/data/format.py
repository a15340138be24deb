"""CALVIN's dataset format: file names, frame keys and shapes, and the checks against them.

The names and shapes are those of ``dataset/README.md`` in mees/calvin; see `rftf_gym.data` for the
directory layout. Every file of a split is written through `rftf_gym.files.atomic_write`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rftf_gym.conventions import ACTION_DIM, IMAGE_HW, ROBOT_OBS_DIM, SCENE_OBS_DIM

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
VECTOR_DIMS: dict[str, int] = {
    "actions": ACTION_DIM,
    "rel_actions": ACTION_DIM,
    "robot_obs": ROBOT_OBS_DIM,
    "scene_obs": SCENE_OBS_DIM,
}
MAX_WINDOW = 64
"""Longest language window the writer accepts, in frames (CALVIN annotates 64-frame windows)."""

EPISODE_IDS_FILE = "ep_start_end_ids.npy"
SCENE_INFO_FILE = "scene_info.npy"
LANG_FOLDER = "lang_annotations"
"""Default language folder; the real data has more, named after the sentence encoder
(``lang_paraphrase-MiniLM-L3-v2``, ``lang_clip_resnet50``, ...), with the same files."""
LANG_ANN_FILE = "auto_lang_ann.npy"
EP_LENS_FILE = "ep_lens.npy"
"""Episode lengths, int (N,), in ``ep_start_end_ids.npy`` order (calvin_env ``datarenderer.py``)."""
STATISTICS_FILE = "statistics.yaml"
EVAL_EMBEDDINGS_FILE = "embeddings.npy"
"""Evaluation sentences and their embeddings, in the validation split's language folders."""
MERGED_CONFIG_FILE = Path(".hydra") / "merged_config.yaml"
"""calvin_env configuration of a split, relative to it (`rftf_gym.data.render_config`)."""
LANG_FILE = Path(LANG_FOLDER) / LANG_ANN_FILE
FRAME_RE = re.compile(r"^episode_(\d+)\.npz$")


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and the problem."""


class UnsafePickleError(DatasetError):
    """A pickled ``.npy`` file refers to something other than plain data."""


def frame_name(frame_id: int) -> str:
    """File name of a frame, CALVIN's ``episode_%07d.npz``."""
    return f"episode_{frame_id:07d}.npz"


def check_frame_array(
    key: str, array: np.ndarray, image_sizes: Mapping[str, tuple[int, int]] | None
) -> str | None:
    """Problem with one frame array, or None when it follows the format."""
    if key in VECTOR_DIMS:
        if array.shape != (VECTOR_DIMS[key],) or array.dtype not in (np.float32, np.float64):
            dims = VECTOR_DIMS[key]
            return f"{key} must be float32/float64 ({dims},), got {array.dtype} {array.shape}"
        return None
    kind, _, camera = key.partition("_")
    if kind not in ("rgb", "depth") or camera not in IMAGE_HW:
        return None  # keys outside the documented set (e.g. tactile) are not checked
    if kind == "rgb" and (array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3):
        return f"{key} must be uint8 (H, W, 3), got {array.dtype} {array.shape}"
    if kind == "depth" and (array.dtype != np.float32 or array.ndim != 2):
        return f"{key} must be float32 (H, W), got {array.dtype} {array.shape}"
    size = tuple(image_sizes[camera]) if image_sizes and camera in image_sizes else None
    if size is not None and array.shape[:2] != size:
        return f"{key} must be {size} images, got {array.shape[:2]}"
    return None
