"""collect_demos.py output loads in CALVIN's own training loader (``calvin_agent``'s DiskDataset).

Skipped unless ``calvin_agent`` (the ``calvin_models`` folder of mees/calvin) and its loader's
dependencies (omegaconf, hydra-core, pyhash) are importable; see the README for how this was run.
The loader is used as CALVIN's default training configuration builds it
(``conf/datamodule/default.yaml``: observation space ``lang_rgb_static_abs_act``, proprioception
``robot_no_joints``, window sizes of ``datasets/{vision,lang}_dataset``), with the transforms of
``transforms/play_basic.yaml`` updated from the dataset's ``statistics.yaml``. The collection has
depth images (``--depth``), and a second test reads them with CALVIN's RGB-D observation space
``lang_rgbd_both_rel_act`` (``depth_obs: [depth_static, depth_gripper]``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rftf_gym.text_encoder import HashedNgramEncoder

disk_dataset = pytest.importorskip("calvin_agent.datasets.disk_dataset")
episode_utils = pytest.importorskip("calvin_agent.datasets.utils.episode_utils")
hydra_utils = pytest.importorskip("hydra.utils")
omegaconf = pytest.importorskip("omegaconf")
torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
CONF = (
    Path(sys.modules["calvin_agent.datasets.disk_dataset"].__file__).parents[2]
    / "conf"
    / "datamodule"
)


def calvin_transforms(entries) -> dict:
    """The calvin_agent transforms of a split (torchvision's Resize / Normalize are not needed
    at the collected size and torchvision is not a dependency here)."""
    out = {}
    for key, transforms in entries.items():
        built = [
            hydra_utils.instantiate(t)
            for t in transforms
            if t["_target_"].startswith("calvin_agent")
        ]

        def compose(x, built=built):
            for t in built:
                x = t(x)
            return x

        out[key] = compose
    return out


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demos")
    cmd = [
        sys.executable,
        str(ROOT / "collect_demos.py"),
        "--output",
        str(root),
        "--train-episodes",
        "2",
        "--val-episodes",
        "1",
        "--train-scenes",
        "D",
        "--static-size",
        "48",
        "--gripper-size",
        "24",
        "--tasks-per-episode",
        "3",
        "3",
        "--noise",
        "0.0",
        "--seed",
        "5",
        "--depth",
    ]
    subprocess.run(cmd, check=True, timeout=300, capture_output=True)
    return root


def official_datasets(root: Path, split: str, lang_folder: str, obs_space_name: str):
    """(key, window config, DiskDataset) of the vision and language datasets, as CALVIN's
    default data module builds them with the observation space ``obs_space_name``."""
    OmegaConf = omegaconf.OmegaConf
    obs_space = OmegaConf.load(CONF / "observation_space" / f"{obs_space_name}.yaml")
    proprio = OmegaConf.load(CONF / "proprioception_dims" / "robot_no_joints.yaml")
    transforms = OmegaConf.load(CONF / "transforms" / "play_basic.yaml")
    transforms = episode_utils.load_dataset_statistics(
        root / "training", root / "validation", transforms
    )
    stats_key = "train" if split == "training" else "val"
    (normalize,) = [
        t for t in transforms[stats_key].robot_obs if t["_target_"].endswith("NormalizeVector")
    ]
    assert len(normalize.mean) == 15 and len(normalize.std) == 15  # taken from statistics.yaml
    for key, config in (("vis", "vision_dataset/vision.yaml"), ("lang", "lang_dataset/lang.yaml")):
        cfg = OmegaConf.load(CONF / "datasets" / config)
        extra = {"skip_frames": cfg.skip_frames} if key == "lang" else {}
        dataset = disk_dataset.DiskDataset(
            datasets_dir=root / split,
            obs_space=obs_space,
            proprio_state=proprio,
            key=key,
            lang_folder=lang_folder,
            num_workers=0,
            transforms=calvin_transforms(transforms[stats_key]),
            batch_size=cfg.batch_size,
            min_window_size=cfg.min_window_size,
            max_window_size=cfg.max_window_size,
            pad=cfg.pad,
            save_format=cfg.save_format,
            **extra,
        )
        yield key, cfg, dataset


@pytest.mark.slow
@pytest.mark.calvin
@pytest.mark.parametrize("lang_folder", ["lang_annotations", f"lang_{HashedNgramEncoder().name}"])
@pytest.mark.parametrize("split", ["training", "validation"])
def test_disk_dataset_reads_collected_demos(collected, split, lang_folder):
    for key, cfg, dataset in official_datasets(collected, split, lang_folder, "lang_rgb_static_abs_act"):
        assert len(dataset) > 0
        for index in range(len(dataset)):  # every window the loader offers
            item = dataset[index]
            assert item["rgb_obs"]["rgb_static"].shape == (cfg.max_window_size, 3, 48, 48)
            assert item["robot_obs"].shape == (cfg.max_window_size, 8)
            assert item["actions"].shape == (cfg.max_window_size, 7)
            assert torch.isfinite(item["robot_obs"]).all()
            if key == "lang":
                assert item["lang"].shape == (384,)
                assert np.isclose(float(item["lang"].norm()), 1.0, atol=1e-5)  # unit rows
        batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size)))
        assert batch["actions"].shape[1:] == (cfg.max_window_size, 7)


@pytest.mark.slow
@pytest.mark.calvin
@pytest.mark.parametrize("split", ["training", "validation"])
def test_disk_dataset_reads_collected_depth(collected, split):
    for key, cfg, dataset in official_datasets(collected, split, "lang_annotations", "lang_rgbd_both_rel_act"):
        assert len(dataset) > 0
        for index in range(len(dataset)):
            item = dataset[index]
            depth = item["depth_obs"]
            assert depth["depth_static"].shape == (cfg.max_window_size, 48, 48)
            assert depth["depth_gripper"].shape == (cfg.max_window_size, 24, 24)
            assert item["rgb_obs"]["rgb_gripper"].shape == (cfg.max_window_size, 3, 24, 24)
            assert item["actions"].shape == (cfg.max_window_size, 7)  # rel_actions
            for image in depth.values():
                assert image.dtype == torch.float32 and torch.isfinite(image).all()
            if split == "validation":  # no depth noise in play_basic's validation transforms
                assert 3.0 < float(depth["depth_static"].median()) < 5.0  # the table, in metres
                assert float(depth["depth_gripper"].max()) <= 2.0 + 1e-3  # the far plane
        batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size)))
        assert batch["depth_obs"]["depth_static"].shape[1:] == (cfg.max_window_size, 48, 48)
