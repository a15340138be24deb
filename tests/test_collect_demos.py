"""collect_demos.py end to end: a tiny run is read back by rftf_gym.data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from rftf_gym.data import CalvinDataset, load_pickled_npy

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_collection_reads_back(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "collect_demos.py"), "--output", str(tmp_path), "--train-episodes", "4",
           "--val-episodes", "2", "--train-scenes", "D", "--static-size", "32", "--gripper-size", "16",
           "--tasks-per-episode", "2", "2", "--noise", "0.0", "--seed", "3"]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    summary = json.loads((tmp_path / "collection_summary.json").read_text())
    for split in ("training", "validation"):
        counts = summary[split]
        # The experts succeed ~98% per instruction; most attempts must be written.
        assert counts["episodes"] >= 1
        assert counts["failures"] <= 0.25 * (counts["successes"] + counts["failures"])
        data = CalvinDataset(tmp_path, split)
        data.validate()
        lang = load_pickled_npy(tmp_path / split / "lang_annotations" / "auto_lang_ann.npy")
        assert len(lang["language"]["ann"]) == counts["successes"]
        start, end = lang["info"]["indx"][0]
        frame = data.load_frame(int(start))
        assert frame["rgb_static"].shape == (32, 32, 3)
        assert np.all(np.abs(frame["rel_actions"][:6]) <= 1.0)
