"""rftf_gym.data opens miniatures of the real CALVIN splits (task_D_D, task_ABC_D).

The miniatures follow the released layout (mees/calvin ``dataset/README.md``, the official
``DiskDataset`` and annotator): global frame ids far from 0 with gaps between episodes, episodes
listed out of order, validation folders without ``scene_info.npy``, several language folders named
after their sentence encoder, a root-level ``auto_lang_ann.npy``, annotations in random order with
repeated windows, pickles as numpy 1.x wrote them, float64 state vectors, and tactile and depth
images in every frame.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from rftf_gym.data import (
    CalvinDataset,
    DatasetError,
    DatasetWarning,
    LanguageWindowDataset,
)

SIZES = {"static": (12, 12), "gripper": (6, 6), "tactile": (8, 6)}
OBJECT_HEADER = {"descr": "|O", "fortran_order": False, "shape": ()}


def save_like_numpy1(path: Path, obj) -> None:
    """np.save of a Python object as numpy 1.x writes it (globals under numpy.core)."""
    array = np.empty((), dtype=object)
    array[()] = obj
    payload = pickle.dumps(array, protocol=3).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy._core" not in payload
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, OBJECT_HEADER)
        f.write(payload)


def write_frames(split: Path, episodes, rng) -> dict[int, dict]:
    """Frame files with every key of the released data; float vectors are float64."""
    split.mkdir(parents=True, exist_ok=True)
    frames = {}
    for start, end in episodes:
        for i in range(start, end + 1):
            frame = {
                "actions": rng.normal(size=7),
                "rel_actions": rng.uniform(-1, 1, size=7),
                "robot_obs": rng.normal(size=15),
                "scene_obs": rng.normal(size=24),
                "rgb_static": rng.integers(0, 256, (*SIZES["static"], 3), dtype=np.uint8),
                "rgb_gripper": rng.integers(0, 256, (*SIZES["gripper"], 3), dtype=np.uint8),
                "rgb_tactile": rng.integers(0, 256, (*SIZES["tactile"], 6), dtype=np.uint8),
                "depth_static": rng.uniform(0, 5, SIZES["static"]).astype(np.float32),
                "depth_gripper": rng.uniform(0, 5, SIZES["gripper"]).astype(np.float32),
                "depth_tactile": rng.uniform(0, 1, (*SIZES["tactile"], 2)).astype(np.float32),
            }
            np.savez_compressed(split / f"episode_{i:07d}.npz", **frame)
            frames[i] = frame
    return frames


def lang_ann(windows, anns, tasks, emb, with_task: bool = True) -> dict:
    """auto_lang_ann.npy content; ids are numpy ints as the official annotator stores them."""
    language = {"ann": list(anns), "emb": emb}
    if with_task:
        language["task"] = list(tasks)
    indx = [(np.int64(s), np.int64(e)) for s, e in windows]
    return {"language": language, "info": {"episodes": [], "indx": indx}}


# Training episodes of the miniature task_D_D, listed out of order, with a gap between them.
D_TRAIN_EPISODES = [(611020, 611031), (358656, 358670)]
D_VAL_EPISODES = [(53818, 53829)]
# Windows in random order; (611020, 611025) twice with different sentences (the annotator
# labels a window once per sampled task instance); (358665, 611024) crosses the gap.
D_WINDOWS = [
    (611020, 611025),
    (358656, 358663),
    (358665, 611024),
    (611020, 611025),
    (358660, 358670),
]
D_ANNS = [
    "pull the handle to open the drawer",
    "push the sliding door to the left side",
    "toggle the light switch to turn on the yellow light",
    "grasp the drawer handle and open it",
    "go push the blue block to the right",
]
D_TASKS = [
    "open_drawer",
    "move_slider_left",
    "turn_on_lightbulb",
    "open_drawer",
    "push_blue_block_right",
]


@pytest.fixture
def task_d_d(tmp_path) -> tuple[Path, dict, dict]:
    rng = np.random.default_rng(0)
    root = tmp_path / "task_D_D"
    frames = write_frames(root / "training", D_TRAIN_EPISODES, rng)
    frames |= write_frames(root / "validation", D_VAL_EPISODES, rng)
    np.save(root / "training" / "ep_start_end_ids.npy", np.array(D_TRAIN_EPISODES))
    np.save(root / "validation" / "ep_start_end_ids.npy", np.array(D_VAL_EPISODES))
    # As released: the training split's scene_info covers both splits, validation has none.
    save_like_numpy1(root / "training" / "scene_info.npy", {"calvin_scene_D": [53818, 611031]})
    embs = {
        "lang_annotations": rng.normal(size=(5, 1, 384)).astype(np.float32),
        "lang_paraphrase-MiniLM-L3-v2": rng.normal(size=(5, 1, 384)).astype(np.float32),
        "lang_clip_resnet50": rng.normal(size=(5, 1, 1024)).astype(np.float32),
    }
    for folder, emb in embs.items():
        content = lang_ann(D_WINDOWS, D_ANNS, D_TASKS, emb)
        save_like_numpy1(root / "training" / folder / "auto_lang_ann.npy", content)
    val_emb = rng.normal(size=(1, 1, 384)).astype(np.float32)
    save_like_numpy1(
        root / "validation" / "lang_annotations" / "auto_lang_ann.npy",
        lang_ann([(53818, 53829)], ["open the drawer"], ["open_drawer"], val_emb),
    )
    eval_embeddings = {
        "open_drawer": {
            "emb": rng.normal(size=(1, 1, 384)).astype(np.float32),
            "ann": ["open the drawer"],
        },
        "rotate_red_block_right": {
            "emb": rng.normal(size=(1, 1, 384)).astype(np.float32),
            "ann": ["take the red block and rotate it to the right"],
        },
    }
    save_like_numpy1(root / "validation" / "lang_annotations" / "embeddings.npy", eval_embeddings)
    return root, frames, {"embs": embs, "eval": eval_embeddings}


def test_task_d_d_training_split(task_d_d):
    root, frames, extra = task_d_d
    with pytest.warns(
        DatasetWarning, match=r"skipping 1 of 5 .*info.indx\[2\] = \(358665, 611024\)"
    ):
        ds = CalvinDataset(root, "training")
    np.testing.assert_array_equal(ds.episodes, sorted(D_TRAIN_EPISODES))
    assert ds.num_frames == 12 + 15
    assert ds.scene_info == {"calvin_scene_D": (53818, 611031)}
    np.testing.assert_array_equal(ds.annotation_ids, [0, 1, 3, 4])
    assert [i for i, _ in ds.dropped_windows] == [2]
    assert [a.ann for a in ds.annotations] == [D_ANNS[i] for i in (0, 1, 3, 4)]
    # emb rows follow the kept annotations, duplicates included.
    np.testing.assert_array_equal(ds.language_emb, extra["embs"]["lang_annotations"][[0, 1, 3, 4]])
    assert ds.eval_embeddings is None
    ds.validate()

    windows = LanguageWindowDataset(
        ds, keys=("rgb_static", "robot_obs", "rel_actions", "depth_static")
    )
    assert len(windows) == 4
    first, duplicate = windows[0], windows[2]
    assert first["window"] == duplicate["window"] == (611020, 611025)
    assert {first["instruction"], duplicate["instruction"]} == {D_ANNS[0], D_ANNS[3]}
    assert first["emb"].shape == (1, 384)
    expected = np.stack([frames[i]["robot_obs"] for i in range(611020, 611026)])
    assert first["frames"]["robot_obs"].dtype == np.float64
    np.testing.assert_array_equal(first["frames"]["robot_obs"], expected)
    np.testing.assert_array_equal(
        windows[3]["frames"]["depth_static"],
        np.stack([frames[i]["depth_static"] for i in range(358660, 358671)]),
    )
    tactile = ds.load_frame(358656, keys=("rgb_tactile", "depth_tactile"))
    assert tactile["rgb_tactile"].shape == (8, 6, 6)


@pytest.mark.parametrize(
    ("folder", "dim"),
    [("lang_paraphrase-MiniLM-L3-v2", 384), ("lang_clip_resnet50", 1024)],
)
def test_language_folder_chosen_by_name(task_d_d, folder, dim):
    root, _, extra = task_d_d
    with pytest.warns(DatasetWarning):
        ds = CalvinDataset(root, "training", lang_folder=folder)
    assert ds.language_file == root / "training" / folder / "auto_lang_ann.npy"
    assert ds.language_emb.shape == (4, 1, dim)
    np.testing.assert_array_equal(ds.language_emb, extra["embs"][folder][[0, 1, 3, 4]])
    assert LanguageWindowDataset(ds, keys=("robot_obs",))[1]["emb"].shape == (1, dim)


def test_task_d_d_validation_split_without_scene_info(task_d_d):
    root, _, extra = task_d_d
    ds = CalvinDataset(root, "validation")
    assert ds.scene_info == {} and ds.num_frames == 12 and len(ds.annotations) == 1
    assert set(ds.eval_embeddings) == {"open_drawer", "rotate_red_block_right"}
    entry = ds.eval_embeddings["rotate_red_block_right"]
    assert entry.ann == ("take the red block and rotate it to the right",)
    np.testing.assert_array_equal(entry.emb, extra["eval"]["rotate_red_block_right"]["emb"])


def test_no_language_and_unknown_folder(task_d_d):
    root, _, _ = task_d_d
    ds = CalvinDataset(root, "training", lang_folder=None)
    assert ds.annotations == [] and ds.language_emb is None and ds.language_file is None
    with pytest.raises(
        DatasetError,
        match="lang_BERT/auto_lang_ann.npy: file is missing .*training/auto_lang_ann.npy",
    ):
        CalvinDataset(root, "training", lang_folder="lang_BERT")
    with pytest.raises(DatasetError, match="must be a folder name"):
        CalvinDataset(root, "training", lang_folder="../validation/lang_annotations")


def test_task_abc_d_root_level_annotations_without_task(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "task_ABC_D"
    # Scenes recorded in the order B, C, A; episode ids listed as the recordings were appended.
    episodes = [(1191339, 1191350), (0, 9), (598910, 598921)]
    frames = write_frames(root / "training", episodes, rng)
    np.save(root / "training" / "ep_start_end_ids.npy", np.array(episodes))
    scene_info = {
        "calvin_scene_B": [0, 598909],
        "calvin_scene_C": [598910, 1191338],
        "calvin_scene_A": [1191339, 1795044],
    }
    save_like_numpy1(root / "training" / "scene_info.npy", scene_info)
    windows = [(598912, 598921), (1, 9), (1191339, 1191345)]
    emb = rng.normal(size=(3, 1, 384)).astype(np.float32)
    # Only the root-level file the official loader falls back to, and no language.task.
    content = lang_ann(windows, ["a", "b", "c"], None, emb, with_task=False)
    save_like_numpy1(root / "training" / "auto_lang_ann.npy", content)

    ds = CalvinDataset(root, "training")
    assert ds.language_file == root / "training" / "auto_lang_ann.npy"
    np.testing.assert_array_equal(ds.episodes, sorted(episodes))
    assert ds.scene_info["calvin_scene_A"] == (1191339, 1795044)
    assert [a.task for a in ds.annotations] == [None, None, None]
    item = LanguageWindowDataset(ds, keys=("scene_obs",), num_frames=4)[1]
    assert item["task"] == "" and item["instruction"] == "b"
    np.testing.assert_array_equal(item["frame_ids"], [1, 4, 6, 9])
    np.testing.assert_array_equal(item["frames"]["scene_obs"][-1], frames[9]["scene_obs"])


def test_overlapping_episodes_named(tmp_path):
    rng = np.random.default_rng(2)
    split = tmp_path / "training"
    write_frames(split, [(10, 20)], rng)
    np.save(split / "ep_start_end_ids.npy", np.array([[15, 20], [10, 16]]))
    save_like_numpy1(split / "lang_annotations" / "auto_lang_ann.npy", lang_ann([], [], [], []))
    with pytest.raises(DatasetError, match=r"must not overlap, but \(10, 16\) and \(15, 20\) do"):
        CalvinDataset(tmp_path, "training")
