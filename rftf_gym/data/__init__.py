"""CALVIN's on-disk dataset format: a writer, a validating reader and a dataset of language windows.

The layout is the one the official repository documents (mees/calvin, ``dataset/README.md``) and
loads (``calvin_models/calvin_agent/datasets/disk_dataset.py``)::

    <root>/<split>/                      split is "training" or "validation" (validation = scene D)
        episode_0000000.npz ...          one file per frame (zero-padded global frame id)
        ep_start_end_ids.npy             int array (N, 2): first and last frame id of each episode,
                                         both inclusive; in any order, with gaps between episodes
        scene_info.npy                   pickled dict {"calvin_scene_A": [first, last], ...}: the
                                         inclusive frame-id range recorded in each scene (absent
                                         in the real validation folders)
        lang_annotations/auto_lang_ann.npy
                                         pickled dict {"language": {"ann": [str], "task": [str],
                                         "emb": array (M, 1, D)}, "info": {"episodes": [],
                                         "indx": [(start, end), ...]}}; windows are inclusive
                                         frame-id ranges inside one episode (the writer caps
                                         them at 64 frames; the official annotator stores
                                         (s, s + 64), so the reader accepts any length)
        lang_annotations/embeddings.npy  validation only: pickled dict task -> {"ann": [str],
                                         "emb": array (len(ann), 1, D)}, the evaluation sentences
        lang_<encoder>/                  the same two files with ``emb`` from another sentence
                                         encoder (real data: lang_paraphrase-MiniLM-L3-v2,
                                         lang_clip_resnet50, ...)
        .hydra/merged_config.yaml        validation: the calvin_env configuration the official
                                         evaluation's ``get_env`` builds its simulator from
                                         (`rftf_gym.data.render_config`)

A frame file holds ``actions`` (7: absolute tcp pos, euler xyz, gripper -1 close / +1 open),
``rel_actions`` (7: see `to_relative_actions`), ``robot_obs`` (15), ``scene_obs`` (24),
``rgb_static`` (200, 200, 3) uint8, ``rgb_gripper`` (84, 84, 3) uint8 and optionally
``depth_static`` (200, 200) / ``depth_gripper`` (84, 84) float32. CALVIN's README documents the
float vectors as float32; both float32 and float64 are accepted and returned as stored. Real
CALVIN frames also carry ``rgb_tactile`` / ``depth_tactile``; the reader ignores keys it is not
asked for.

``scene_info.npy`` and ``auto_lang_ann.npy`` are pickles; they are read with a restricted
unpickler that runs no code (`rftf_gym.data.safe_pickle`). Frame files never need pickles and are
opened with ``allow_pickle=False``.

Crash safety: every file is written to a hidden temporary name in the same directory and moved
into place with ``os.replace``. `CalvinDatasetWriter` rewrites the index files after each finished
episode (annotations and scene info first, ``ep_start_end_ids.npy`` last: that file is the commit
point), so an interrupted collection leaves a readable dataset of the finished episodes; a writer
opened on the same directory drops the frames of an unfinished episode and continues after the
last finished one.

Modules: `format` (names, keys, shapes, checks, atomic writes), `actions` (relative actions),
`safe_pickle`, `index` (the index files), `reader` (`CalvinDataset`), `writer`
(`CalvinDatasetWriter`), `statistics` (``statistics.yaml``), `render_config`
(``.hydra/merged_config.yaml``; imported on its own, it needs the simulator's facts and pybullet)
and `windows` (`LanguageWindowDataset`, the only one that imports torch: it is loaded on first
use, so the writer and the collection script run without torch).
"""

from __future__ import annotations

from typing import Any

from rftf_gym.data.actions import to_relative_actions
from rftf_gym.data.format import (
    DEPTH_KEYS,
    EPISODE_IDS_FILE,
    FRAME_KEYS,
    EVAL_EMBEDDINGS_FILE,
    LANG_ANN_FILE,
    LANG_FILE,
    LANG_FOLDER,
    MAX_WINDOW,
    SCENE_INFO_FILE,
    VECTOR_DIMS,
    DatasetError,
    UnsafePickleError,
    frame_name,
)
from rftf_gym.data.index import Annotation, TaskEmbeddings
from rftf_gym.data.reader import CalvinDataset, DatasetWarning
from rftf_gym.data.safe_pickle import SafeUnpickler, load_pickled_npy
from rftf_gym.data.writer import CalvinDatasetWriter

__all__ = [
    "DEPTH_KEYS",
    "EPISODE_IDS_FILE",
    "FRAME_KEYS",
    "EVAL_EMBEDDINGS_FILE",
    "LANG_ANN_FILE",
    "LANG_FILE",
    "LANG_FOLDER",
    "MAX_WINDOW",
    "SCENE_INFO_FILE",
    "VECTOR_DIMS",
    "Annotation",
    "CalvinDataset",
    "CalvinDatasetWriter",
    "DatasetError",
    "DatasetWarning",
    "LanguageWindowDataset",
    "SafeUnpickler",
    "TaskEmbeddings",
    "UnsafePickleError",
    "frame_name",
    "load_pickled_npy",
    "to_relative_actions",
]


def __getattr__(name: str) -> Any:
    # PEP 562: import torch only when the torch dataset is asked for.
    if name == "LanguageWindowDataset":
        from rftf_gym.data.windows import LanguageWindowDataset

        return LanguageWindowDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
