"""`LanguageWindowDataset`: the language-annotated windows of a split as a torch dataset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch.utils.data

from rftf_gym.data.format import FRAME_KEYS
from rftf_gym.data.reader import CalvinDataset


class LanguageWindowDataset(torch.utils.data.Dataset):
    """Language-annotated windows of a `CalvinDataset`, read lazily from disk.

    Item ``i`` is the window of annotation ``i``::

        {"frames": {key: array (T, ...)}, "frame_ids": int64 array (T,),
         "instruction": str, "task": str, "window": (start, end),   # task "" if not stored
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
            "task": a.task if a.task is not None else "",
            "window": (a.start, a.end),
        }
        if self.dataset.language_emb is not None:
            item["emb"] = self.dataset.language_emb[index]
        return item
