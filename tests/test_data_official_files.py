"""The files CALVIN's own tools read besides the frames: ep_lens.npy, the language folders with
embeddings, embeddings.npy and statistics.yaml."""

from __future__ import annotations

import numpy as np
import pytest

from rftf_gym.data import CalvinDataset, CalvinDatasetWriter, TaskEmbeddings, load_pickled_npy
from rftf_gym.data.statistics import yaml_float, compute_statistics, write_statistics

TINY = {"static": (8, 8), "gripper": (4, 4)}
FOLDERS = ("lang_annotations", "lang_hashed-test")


def frame(rng: np.random.Generator) -> dict:
    return {
        "actions": rng.normal(size=7).astype(np.float32),
        "rel_actions": rng.uniform(-1, 1, size=7).astype(np.float32),
        "robot_obs": rng.normal(size=15).astype(np.float32),
        "scene_obs": rng.normal(size=24).astype(np.float32),
        "rgb_static": rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8),
        "rgb_gripper": rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8),
    }


def write_split(root, rng, lengths=(5, 3, 4)) -> list[dict]:
    frames = []
    with CalvinDatasetWriter(root, "validation", image_sizes=TINY, lang_folders=FOLDERS) as w:
        for length in lengths:
            first = w.start_episode("calvin_scene_D")
            for _ in range(length):
                frames.append(frame(rng))
                w.add_frame(**frames[-1])
            emb = rng.normal(size=(1, 6)).astype(np.float32)
            w.add_annotation(first, first + length - 1, f"task of {first}", "open_drawer", emb=emb)
            w.end_episode()
        w.write_eval_embeddings(
            {"open_drawer": TaskEmbeddings(("open the drawer",), np.ones((1, 1, 6), np.float32))}
        )
    return frames


def test_ep_lens_and_language_folders(tmp_path):
    write_split(tmp_path, np.random.default_rng(0))
    split = tmp_path / "validation"
    np.testing.assert_array_equal(np.load(split / "ep_lens.npy"), [5, 3, 4])
    np.testing.assert_array_equal(
        np.load(split / "ep_start_end_ids.npy"), [[0, 4], [5, 7], [8, 11]]
    )
    first = load_pickled_npy(split / FOLDERS[0] / "auto_lang_ann.npy")
    second = load_pickled_npy(split / FOLDERS[1] / "auto_lang_ann.npy")
    assert (
        first["language"]["ann"]
        == second["language"]["ann"]
        == ["task of 0", "task of 5", "task of 8"]
    )
    assert first["language"]["emb"].shape == (3, 1, 6)
    np.testing.assert_array_equal(first["language"]["emb"], second["language"]["emb"])
    for folder in FOLDERS:
        ds = CalvinDataset(tmp_path, "validation", lang_folder=folder)
        assert ds.eval_embeddings["open_drawer"].ann == ("open the drawer",)
        assert ds.eval_embeddings["open_drawer"].emb.shape == (1, 1, 6)
    # Resuming reads the first folder and keeps writing both.
    rng = np.random.default_rng(1)
    with CalvinDatasetWriter(tmp_path, "validation", image_sizes=TINY, lang_folders=FOLDERS) as w:
        first_id = w.start_episode("calvin_scene_D")
        w.add_frame(**frame(rng))
        w.add_annotation(
            first_id, first_id, "again", "close_drawer", emb=np.zeros((1, 6), np.float32)
        )
        w.end_episode()
    np.testing.assert_array_equal(np.load(split / "ep_lens.npy"), [5, 3, 4, 1])
    ds = CalvinDataset(tmp_path, "validation", lang_folder=FOLDERS[1])
    assert [a.task for a in ds.annotations][-1] == "close_drawer" and ds.language_emb.shape == (
        4,
        1,
        6,
    )


def test_writer_rejects_bad_folders_and_eval_embeddings(tmp_path):
    for folders in ((), ("a/b",), ("x", "x"), (".hydra",)):
        with pytest.raises(ValueError, match="lang_folders"):
            CalvinDatasetWriter(tmp_path, "training", lang_folders=folders)
    w = CalvinDatasetWriter(tmp_path, "training")
    with pytest.raises(ValueError, match="'open_drawer' has 2 sentences but emb"):
        w.write_eval_embeddings({"open_drawer": TaskEmbeddings(("a", "b"), np.zeros((1, 4)))})
    with pytest.raises(ValueError, match="non-empty list of sentences"):
        w.write_eval_embeddings({"open_drawer": TaskEmbeddings((), np.zeros((0, 4)))})


def test_statistics_match_numpy_and_read_back(tmp_path):
    yaml = pytest.importorskip("yaml")
    frames = write_split(tmp_path, np.random.default_rng(2))
    ds = CalvinDataset(tmp_path, "validation")
    stats = compute_statistics(ds)
    robot = np.stack([f["robot_obs"] for f in frames]).astype(np.float64)
    scene = np.stack([f["scene_obs"] for f in frames]).astype(np.float64)
    actions = np.stack([f["actions"] for f in frames])
    assert stats.num_frames == 12
    np.testing.assert_allclose(stats.robot_obs_mean, robot.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.robot_obs_std, robot.std(0), rtol=1e-12)
    np.testing.assert_allclose(stats.scene_obs_std, scene.std(0), rtol=1e-12)
    np.testing.assert_array_equal(stats.act_min_bound, actions.min(0))
    np.testing.assert_array_equal(stats.act_max_bound, actions.max(0))

    content = yaml.safe_load(write_statistics(ds).read_text())
    assert set(content) == {"robot_obs", "scene_obs", "act_min_bound", "act_max_bound"}
    (normalize,) = content["robot_obs"]
    assert normalize["_target_"] == "calvin_agent.utils.transforms.NormalizeVector"
    np.testing.assert_array_equal(normalize["std"], stats.robot_obs_std)  # repr round-trips
    np.testing.assert_array_equal(content["scene_obs"][0]["mean"], stats.scene_obs_mean)
    np.testing.assert_array_equal(content["act_max_bound"], stats.act_max_bound)


def test_yaml_floats_stay_floats():
    yaml = pytest.importorskip("yaml")
    for x in (1e-05, 2e20, 0.0, -3.0, 0.1, 123456789.0, 5e-324):
        text = yaml_float(x)
        assert isinstance(yaml.safe_load(text), float) and yaml.safe_load(text) == x, text
    with pytest.raises(ValueError, match="finite"):
        yaml_float(float("nan"))
