"""rftf_gym.data: CALVIN's dataset format (mees/calvin dataset/README.md), written and read back."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rftf_gym.conventions import IMAGE_HW
from rftf_gym.data import (
    FRAME_KEYS,
    CalvinDataset,
    CalvinDatasetWriter,
    DatasetError,
    DatasetWarning,
    LanguageWindowDataset,
    UnsafePickleError,
    frame_name,
    load_pickled_npy,
    to_relative_actions,
)

TINY = {"static": (8, 8), "gripper": (4, 4)}
OBJECT_HEADER = {"descr": "|O", "fortran_order": False, "shape": ()}  # .npy header of np.save(dict)


def make_frame(rng: np.random.Generator, sizes=TINY, depth: bool = False, dtype=np.float32) -> dict:
    frame = {
        "actions": rng.normal(size=7).astype(dtype),
        "rel_actions": rng.uniform(-1, 1, size=7).astype(dtype),
        "robot_obs": rng.normal(size=15).astype(dtype),
        "scene_obs": rng.normal(size=24).astype(dtype),
        "rgb_static": rng.integers(0, 256, size=(*sizes["static"], 3), dtype=np.uint8),
        "rgb_gripper": rng.integers(0, 256, size=(*sizes["gripper"], 3), dtype=np.uint8),
    }
    if depth:
        frame["depth_static"] = rng.uniform(0, 2, size=sizes["static"]).astype(np.float32)
        frame["depth_gripper"] = rng.uniform(0, 2, size=sizes["gripper"]).astype(np.float32)
    return frame


def write_episode(writer, rng, scene: str, length: int, windows=(), depth=False, emb_dim=None):
    """Write one episode; windows are (offset_start, offset_end, ann, task) inside it."""
    first = writer.start_episode(scene)
    frames = [make_frame(rng, writer.image_sizes, depth) for _ in range(length)]
    for frame in frames:
        writer.add_frame(**frame)
    for s, e, ann, task in windows:
        emb = rng.normal(size=(1, emb_dim)).astype(np.float32) if emb_dim else None
        writer.add_annotation(first + s, first + e, ann, task, emb=emb)
    assert writer.end_episode() == (first, first + length - 1)
    return frames


def small_dataset(root: Path, rng=None, compress=True) -> list[dict]:
    rng = rng or np.random.default_rng(0)
    with CalvinDatasetWriter(root, "training", image_sizes=TINY, compress=compress) as w:
        frames = write_episode(
            w, rng, "calvin_scene_A", 5, [(0, 4, "open the drawer", "open_drawer")]
        )
        frames += write_episode(
            w, rng, "calvin_scene_A", 4, [(1, 3, "push the switch up", "turn_on_lightbulb")]
        )
        frames += write_episode(
            w, rng, "calvin_scene_B", 3, [(0, 2, "go slide left", "move_slider_left")]
        )
    return frames


# ----------------------------------------------------------------------------------------------
# rel_actions
# ----------------------------------------------------------------------------------------------
def test_to_relative_actions_hand_computed():
    obs_t = np.zeros(15)
    obs_t1 = np.zeros(15)
    obs_t[:6] = [0.1, 0.2, 0.3, 0.1, 3.13, -3.13]
    obs_t1[:6] = [0.11, 0.17, 0.3, 0.12, -3.13, 3.13]
    rel = to_relative_actions(obs_t, obs_t1, -1.0)
    # dx 0.01 m -> 0.5; dy -0.03 m clipped to -0.02 -> -1; droll 0.02 rad -> 0.4;
    # dpitch -6.26 wraps to 2*pi - 6.26 = 0.0231853 rad -> 0.463706; dyaw the opposite.
    wrapped = 2 * np.pi - 6.26
    expected = [0.5, -1.0, 0.0, 0.4, wrapped / 0.05, -wrapped / 0.05, -1.0]
    np.testing.assert_allclose(rel, expected, atol=1e-9)
    assert rel.shape == (7,) and rel.dtype == np.float64


def test_to_relative_actions_clips_rotation_and_batches():
    obs_t = np.zeros((2, 6))
    obs_t1 = np.array([[0, 0, 0, 0.2, -0.2, 0.05], [-0.04, 0, 0.004, 0, 0, -0.01]])
    rel = to_relative_actions(obs_t, obs_t1, np.array([1.0, -1.0]))
    np.testing.assert_allclose(rel[0], [0, 0, 0, 1, -1, 1, 1], atol=1e-12)
    np.testing.assert_allclose(rel[1], [-1, 0, 0.2, 0, 0, -0.2, -1], atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Round trip and resume
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_bit_for_bit(tmp_path, compress):
    frames = small_dataset(tmp_path, compress=compress)
    ds = CalvinDataset(tmp_path, "training", image_sizes=TINY)
    np.testing.assert_array_equal(ds.episodes, [[0, 4], [5, 8], [9, 11]])
    assert ds.scene_info == {"calvin_scene_A": (0, 8), "calvin_scene_B": (9, 11)}
    assert [(a.start, a.end, a.ann, a.task) for a in ds.annotations] == [
        (0, 4, "open the drawer", "open_drawer"),
        (6, 8, "push the switch up", "turn_on_lightbulb"),
        (9, 11, "go slide left", "move_slider_left"),
    ]
    assert ds.language_emb is None and ds.num_frames == 12
    for frame_id, expected in enumerate(frames):
        got = ds.load_frame(frame_id)
        assert set(got) == set(FRAME_KEYS)
        for key, value in expected.items():
            assert got[key].dtype == value.dtype and got[key].tobytes() == value.tobytes(), key
    ds.validate()


def test_round_trip_depth_float64_and_embeddings(tmp_path):
    rng = np.random.default_rng(1)
    with CalvinDatasetWriter(tmp_path, "validation", image_sizes=TINY) as w:
        w.start_episode("calvin_scene_D")
        frames = [make_frame(rng, TINY, depth=True, dtype=np.float64) for _ in range(3)]
        for f in frames:
            w.add_frame(**f)
        w.add_annotation(0, 2, "lift it", "lift_red_block_table", emb=np.ones((1, 4), np.float32))
        w.add_annotation(1, 2, "stack it", "stack_block", emb=np.zeros((1, 4), np.float32))
        w.end_episode()
    ds = CalvinDataset(tmp_path, "validation")
    assert ds.language_emb.shape == (2, 1, 4)
    for i, expected in enumerate(frames):
        got = ds.load_frame(i)
        for key, value in expected.items():
            assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key
    raw = load_pickled_npy(tmp_path / "validation" / "lang_annotations" / "auto_lang_ann.npy")
    assert raw["info"] == {"episodes": [], "indx": [(0, 2), (1, 2)]}
    assert raw["language"]["ann"] == ["lift it", "stack it"]
    with CalvinDatasetWriter(tmp_path, "validation", image_sizes=TINY) as w:  # resume keeps emb
        w.start_episode("calvin_scene_D")
        w.add_frame(**make_frame(rng, TINY, depth=True))
        with pytest.raises(ValueError, match="emb"):
            w.add_annotation(3, 3, "no emb", "push_pink_block_left")
        with pytest.raises(ValueError, match="emb shape/dtype"):
            w.add_annotation(3, 3, "wrong emb", "push_pink_block_left", emb=np.ones(4))
        w.add_annotation(3, 3, "push it", "push_pink_block_left", emb=np.full((1, 4), 2, np.float32))
        w.end_episode()
    emb = CalvinDataset(tmp_path, "validation").language_emb
    np.testing.assert_array_equal(emb[:, 0, 0], [1.0, 0.0, 2.0])


def test_official_sizes_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    with CalvinDatasetWriter(tmp_path, "training") as w:
        windows = [(0, 2, "rotate the pink block", "rotate_pink_block_left")]
        frames = write_episode(w, rng, "calvin_scene_C", 3, windows, depth=True)
    ds = CalvinDataset(tmp_path, "training", image_sizes=IMAGE_HW)
    item = LanguageWindowDataset(ds)[0]
    assert item["frames"]["rgb_static"].shape == (3, 200, 200, 3)
    assert item["frames"]["rgb_gripper"].shape == (3, 84, 84, 3)
    for key in FRAME_KEYS:
        np.testing.assert_array_equal(item["frames"][key], np.stack([f[key] for f in frames]))
    assert ds.load_frame(1, ["depth_static"])["depth_static"].shape == (200, 200)


def test_interrupted_collection_is_readable_and_resumes(tmp_path):
    rng = np.random.default_rng(3)
    w = CalvinDatasetWriter(tmp_path, "training", image_sizes=TINY)
    kept = write_episode(w, rng, "calvin_scene_A", 4, [(0, 3, "open the drawer", "open_drawer")])
    w.start_episode("calvin_scene_A")
    for _ in range(3):
        w.add_frame(**make_frame(rng))
    w.add_annotation(4, 6, "close the drawer", "close_drawer")
    (tmp_path / "training" / ".episode_0000007.npz.tmp").write_bytes(b"half a frame")
    del w  # the process dies: no end_episode, no close

    ds = CalvinDataset(tmp_path, "training")  # readable: the finished episode only
    np.testing.assert_array_equal(ds.episodes, [[0, 3]])
    assert len(ds.annotations) == 1

    w = CalvinDatasetWriter(tmp_path, "training", image_sizes=TINY)
    assert w.next_frame_id == 4
    names = sorted(p.name for p in (tmp_path / "training").iterdir())
    index = ["ep_lens.npy", "ep_start_end_ids.npy", "lang_annotations", "scene_info.npy"]
    assert names == sorted([frame_name(i) for i in range(4)] + index)
    new = write_episode(w, rng, "calvin_scene_A", 2, [(0, 1, "close the drawer", "close_drawer")])
    ds = CalvinDataset(tmp_path, "training")
    np.testing.assert_array_equal(ds.episodes, [[0, 3], [4, 5]])
    assert [(a.start, a.end) for a in ds.annotations] == [(0, 3), (4, 5)]
    assert ds.scene_info == {"calvin_scene_A": (0, 5)}
    for i, expected in enumerate(kept + new):
        assert all(np.array_equal(ds.load_frame(i)[k], v) for k, v in expected.items())


def test_resume_repairs_crash_between_annotations_and_commit(tmp_path):
    small_dataset(tmp_path)
    split = tmp_path / "training"
    # As if the process died after auto_lang_ann.npy was written but before the commit of the
    # third episode in ep_start_end_ids.npy.
    np.save(split / "ep_start_end_ids.npy", np.array([[0, 4], [5, 8]]))
    with pytest.warns(DatasetWarning, match="auto_lang_ann.npy: skipping 1 of 3 .*indx\\[2\\]"):
        assert len(CalvinDataset(tmp_path, "training").annotations) == 2
    w = CalvinDatasetWriter(tmp_path, "training", image_sizes=TINY)
    assert w.next_frame_id == 9
    ds = CalvinDataset(tmp_path, "training")
    assert len(ds.annotations) == 2 and ds.scene_info == {"calvin_scene_A": (0, 8)}
    assert not (split / frame_name(9)).exists()


def test_abort_and_close_drop_unfinished_episode(tmp_path):
    rng = np.random.default_rng(4)
    with CalvinDatasetWriter(tmp_path, "training", image_sizes=TINY) as w:
        write_episode(w, rng, "calvin_scene_A", 2)
        w.start_episode("calvin_scene_A")
        w.add_frame(**make_frame(rng))
        w.abort_episode()
        assert w.next_frame_id == 2
        w.start_episode("calvin_scene_A")
        w.add_frame(**make_frame(rng))
    assert not (tmp_path / "training" / frame_name(2)).exists()
    np.testing.assert_array_equal(CalvinDataset(tmp_path, "training").episodes, [[0, 1]])


def test_empty_writer_leaves_a_readable_empty_split(tmp_path):
    CalvinDatasetWriter(tmp_path, "validation").close()
    ds = CalvinDataset(tmp_path, "validation")
    assert ds.episodes.shape == (0, 2) and ds.annotations == [] and ds.scene_info == {}


# ----------------------------------------------------------------------------------------------
# Writer input checks
# ----------------------------------------------------------------------------------------------
def test_writer_rejects_bad_input(tmp_path):
    rng = np.random.default_rng(5)
    w = CalvinDatasetWriter(tmp_path, "training", image_sizes=TINY)
    with pytest.raises(RuntimeError):
        w.add_frame(**make_frame(rng))
    w.start_episode("calvin_scene_A")
    with pytest.raises(ValueError, match="rgb_static must be \\(8, 8\\)"):
        w.add_frame(**make_frame(rng, {"static": (9, 8), "gripper": (4, 4)}))
    bad = make_frame(rng)
    bad["robot_obs"] = np.zeros(14)
    with pytest.raises(ValueError, match="robot_obs"):
        w.add_frame(**bad)
    bad = make_frame(rng)
    bad["rgb_static"] = bad["rgb_static"] / 255.0
    with pytest.raises(ValueError, match="uint8"):
        w.add_frame(**bad)
    for _ in range(70):
        w.add_frame(**make_frame(rng))
    with pytest.raises(ValueError, match="longer than 64"):
        w.add_annotation(0, 64, "too long", "open_drawer")
    with pytest.raises(ValueError, match="not inside"):
        w.add_annotation(60, 70, "not written yet", "open_drawer")
    with pytest.raises(ValueError, match="keys"):
        w.add_frame(**make_frame(rng, depth=True))
    w.add_annotation(0, 63, "just fits", "open_drawer")
    with pytest.raises(ValueError, match="emb"):
        w.add_annotation(0, 3, "with emb", "open_drawer", emb=np.zeros(4))
    w.end_episode()
    write_episode(w, rng, "calvin_scene_B", 1)
    with pytest.raises(ValueError, match="blocks"):
        w.start_episode("calvin_scene_A")


# ----------------------------------------------------------------------------------------------
# Reader errors name the file and the problem
# ----------------------------------------------------------------------------------------------
def test_missing_directory_and_index_files(tmp_path):
    with pytest.raises(DatasetError, match="training: dataset directory is missing"):
        CalvinDataset(tmp_path, "training")
    small_dataset(tmp_path)
    for name in ("ep_start_end_ids.npy", "lang_annotations/auto_lang_ann.npy"):
        shutil.copytree(tmp_path / "training", tmp_path / "copy")
        (tmp_path / "copy" / name).unlink()
        with pytest.raises(DatasetError, match=f"{Path(name).name}: file is missing"):
            CalvinDataset(tmp_path, "copy")
        shutil.rmtree(tmp_path / "copy")
    # The real validation folders have no scene_info.npy.
    (tmp_path / "training" / "scene_info.npy").unlink()
    assert CalvinDataset(tmp_path, "training").scene_info == {}


def test_missing_frame_named(tmp_path):
    small_dataset(tmp_path)
    (tmp_path / "training" / frame_name(6)).unlink()
    with pytest.raises(DatasetError, match="episode_0000006.npz: frame file is missing"):
        CalvinDataset(tmp_path, "training")
    ds = CalvinDataset(tmp_path, "training", check_files=False)
    with pytest.raises(DatasetError, match="episode_0000006.npz: frame file is missing"):
        ds.load_frame(6)


def test_truncated_frame_named(tmp_path):
    small_dataset(tmp_path)
    path = tmp_path / "training" / frame_name(3)
    path.write_bytes(path.read_bytes()[:100])
    ds = CalvinDataset(tmp_path, "training")
    with pytest.raises(DatasetError, match="episode_0000003.npz: unreadable or truncated"):
        ds.load_frame(3)
    with pytest.raises(DatasetError, match="episode_0000003.npz"):
        ds.validate()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.pop("rgb_gripper"), "missing keys \\['rgb_gripper'\\]"),
        (lambda f: f.update(robot_obs=np.zeros(14)), "robot_obs must be float32/float64 \\(15,\\)"),
        (lambda f: f.update(scene_obs=np.zeros(24, np.int64)), "scene_obs must be"),
        (lambda f: f.update(rgb_static=np.zeros((8, 8, 4), np.uint8)), "rgb_static must be uint8"),
        (
            lambda f: f.update(rgb_gripper=np.zeros((5, 4, 3), np.uint8)),
            "rgb_gripper must be \\(4, 4\\) images",
        ),
    ],
)
def test_bad_frame_contents_named(tmp_path, edit, message):
    small_dataset(tmp_path)
    path = tmp_path / "training" / frame_name(2)
    with np.load(path) as npz:
        frame = dict(npz)
    edit(frame)
    np.savez(path, **frame)
    ds = CalvinDataset(tmp_path, "training", image_sizes=TINY)
    with pytest.raises(DatasetError, match=f"episode_0000002.npz: {message}"):
        ds.load_frame(2)


def rewrite_annotations(split: Path, edit) -> None:
    path = split / "lang_annotations" / "auto_lang_ann.npy"
    data = load_pickled_npy(path)
    edit(data)
    np.save(path, data, allow_pickle=True)


@pytest.mark.parametrize(
    "window",
    [(10, 12), (3, 6), (-2, 1), (4, 2)],
    ids=["past_the_end", "across_episodes", "before_start", "reversed"],
)
def test_window_outside_episodes_named(tmp_path, window):
    small_dataset(tmp_path)
    rewrite_annotations(tmp_path / "training", lambda d: d["info"]["indx"].__setitem__(1, window))
    message = "auto_lang_ann.npy: skipping 1 of 3 .* single episode .*info.indx\\[1\\]"
    with pytest.warns(DatasetWarning, match=message):
        ds = CalvinDataset(tmp_path, "training")
    assert [a.ann for a in ds.annotations] == ["open the drawer", "go slide left"]
    np.testing.assert_array_equal(ds.annotation_ids, [0, 2])
    assert [(i, (a.start, a.end)) for i, a in ds.dropped_windows] == [(1, window)]
    assert len(LanguageWindowDataset(ds)) == 2


def test_malformed_annotations_named(tmp_path):
    small_dataset(tmp_path)
    rewrite_annotations(tmp_path / "training", lambda d: d["language"]["task"].pop())
    with pytest.raises(DatasetError, match="auto_lang_ann.npy: 3 ann, 2 task and 3 indx"):
        CalvinDataset(tmp_path, "training")
    rewrite_annotations(tmp_path / "training", lambda d: d.pop("info"))
    with pytest.raises(DatasetError, match="auto_lang_ann.npy: missing key 'info'"):
        CalvinDataset(tmp_path, "training")


def test_bad_episode_ids_named(tmp_path):
    small_dataset(tmp_path)
    np.save(tmp_path / "training" / "ep_start_end_ids.npy", np.array([[0, 4], [3, 8]]))
    with pytest.raises(DatasetError, match="ep_start_end_ids.npy: .*\\(0, 4\\) and \\(3, 8\\) do"):
        CalvinDataset(tmp_path, "training")
    np.save(tmp_path / "training" / "ep_start_end_ids.npy", np.array([0.0, 4.0]))
    with pytest.raises(DatasetError, match="ep_start_end_ids.npy: expected an integer array"):
        CalvinDataset(tmp_path, "training")


# ----------------------------------------------------------------------------------------------
# Restricted unpickler
# ----------------------------------------------------------------------------------------------
class Exploit:
    """Runs a shell command when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("file", ["lang_annotations/auto_lang_ann.npy", "scene_info.npy"])
def test_restricted_unpickler_refuses_code(tmp_path, file):
    small_dataset(tmp_path)
    marker = tmp_path / "pwned"
    payload = {"language": {"ann": [Exploit(marker)], "task": ["x"]}, "info": {"indx": [(0, 1)]}}
    np.save(tmp_path / "training" / file, payload, allow_pickle=True)
    # Sanity: numpy's own loader would run the payload.
    np.load(tmp_path / "training" / file, allow_pickle=True)
    assert marker.exists()
    marker.unlink()
    message = f"{Path(file).name}: refusing to unpickle global (posix|nt).system"
    with pytest.raises(UnsafePickleError, match=message):
        CalvinDataset(tmp_path, "training")
    with pytest.raises(UnsafePickleError):
        CalvinDatasetWriter(tmp_path, "training")
    assert not marker.exists()


def test_restricted_unpickler_refuses_builtins_and_classes(tmp_path):
    path = tmp_path / "x.npy"
    for obj in ({"f": eval}, {"r": range(3)}, {"p": tmp_path}):
        np.save(path, obj, allow_pickle=True)
        with pytest.raises(UnsafePickleError, match="x.npy: refusing"):
            load_pickled_npy(path)
    np.save(path, np.zeros(3))
    with pytest.raises(DatasetError, match="x.npy: expected a pickled dict"):
        load_pickled_npy(path)
    np.save(path, {"a": [1, 2.5, None, True, "s", b"b"]}, allow_pickle=True)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="x.npy: corrupt pickle"):
        load_pickled_npy(path)


def test_restricted_unpickler_accepts_plain_data(tmp_path):
    path = tmp_path / "ok.npy"
    obj = {"a": [1, 2.5, None, True, "s", b"b", (np.int64(3), np.float32(2))], "e": np.eye(2)}
    np.save(path, obj, allow_pickle=True)
    got = load_pickled_npy(path)
    assert got["a"] == obj["a"] and type(got["a"][6][0]) is np.int64
    np.testing.assert_array_equal(got["e"], np.eye(2))
    array = np.empty((), dtype=object)
    array[()] = obj
    payload = pickle.dumps(array, protocol=5)
    assert b"_frombuffer" in payload
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, OBJECT_HEADER)
        f.write(payload)
    np.testing.assert_array_equal(load_pickled_npy(path)["e"], np.eye(2))


# ----------------------------------------------------------------------------------------------
# Windows dataset
# ----------------------------------------------------------------------------------------------
def test_window_dataset_is_lazy(tmp_path):
    small_dataset(tmp_path)
    ds = CalvinDataset(tmp_path, "training")
    for i in range(12):  # every frame now unreadable: construction must not care
        (tmp_path / "training" / frame_name(i)).write_bytes(b"")
    windows = LanguageWindowDataset(CalvinDataset(tmp_path, "training"))
    assert len(windows) == 3
    with pytest.raises(DatasetError, match="episode_0000006.npz"):
        windows[1]
    assert len(pickle.dumps(ds)) < 10_000  # only the index travels to DataLoader workers


def test_window_dataset_reads_only_selected_keys(tmp_path, monkeypatch):
    frames = small_dataset(tmp_path, compress=False)
    read = []
    original = np.lib.npyio.NpzFile.__getitem__
    counting = lambda self, key: read.append(key) or original(self, key)  # noqa: E731
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", counting)
    dataset = CalvinDataset(tmp_path, "training")
    windows = LanguageWindowDataset(dataset, keys=("rgb_static", "robot_obs"))
    assert read == []
    item = windows[1]
    assert sorted(read) == ["rgb_static"] * 3 + ["robot_obs"] * 3
    assert set(item["frames"]) == {"rgb_static", "robot_obs"}
    assert item["instruction"] == "push the switch up" and item["task"] == "turn_on_lightbulb"
    assert item["window"] == (6, 8)
    np.testing.assert_array_equal(item["frame_ids"], [6, 7, 8])
    expected = np.stack([f["robot_obs"] for f in frames[6:9]])
    np.testing.assert_array_equal(item["frames"]["robot_obs"], expected)


def test_window_dataset_subsampling_and_collate(tmp_path):
    frames = small_dataset(tmp_path)
    ds = CalvinDataset(tmp_path, "training")
    fixed = LanguageWindowDataset(ds, keys=["actions"], num_frames=3)
    np.testing.assert_array_equal(fixed.frame_ids(0), [0, 2, 4])
    np.testing.assert_array_equal(fixed.frame_ids(1), [6, 7, 8])
    repeated = LanguageWindowDataset(ds, num_frames=5)
    np.testing.assert_array_equal(repeated.frame_ids(2), [9, 10, 10, 10, 11])
    expected = np.stack([frames[i]["actions"] for i in (0, 2, 4)])
    np.testing.assert_array_equal(fixed[0]["frames"]["actions"], expected)
    capped = LanguageWindowDataset(ds, max_frames=4)
    np.testing.assert_array_equal(capped.frame_ids(0), [0, 1, 3, 4])
    np.testing.assert_array_equal(capped.frame_ids(2), [9, 10, 11])
    batch = next(iter(torch.utils.data.DataLoader(fixed, batch_size=3)))
    assert batch["frames"]["actions"].shape == (3, 3, 7)
    assert batch["instruction"] == ["open the drawer", "push the switch up", "go slide left"]
    with pytest.raises(ValueError):
        LanguageWindowDataset(ds, num_frames=2, max_frames=3)


def test_iter_frames_in_order(tmp_path):
    frames = small_dataset(tmp_path)
    ds = CalvinDataset(tmp_path, "training")
    for start, end in ds.episodes:
        got = [f["scene_obs"] for f in ds.iter_frames(int(start), int(end), keys=["scene_obs"])]
        np.testing.assert_array_equal(got, [frames[i]["scene_obs"] for i in range(start, end + 1)])


# ----------------------------------------------------------------------------------------------
# A split in the official layout, made by hand
# ----------------------------------------------------------------------------------------------
def save_like_numpy1(path: Path, obj) -> None:
    """np.save of a dict as numpy 1.x wrote it (protocol 3, numpy.core.multiarray globals)."""
    array = np.empty((), dtype=object)
    array[()] = obj
    payload = pickle.dumps(array, protocol=3)
    payload = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in payload
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, OBJECT_HEADER)
        f.write(payload)


def test_reads_a_hand_made_official_calvin_split(tmp_path):
    rng = np.random.default_rng(6)
    split = tmp_path / "task_D_D" / "validation"
    (split / "lang_annotations").mkdir(parents=True)
    episodes = np.array([[53818, 53821], [53830, 53832]])  # official ids need not start at 0
    frames = {}
    for start, end in episodes:
        for i in range(start, end + 1):
            frame = {  # keys, dtypes and shapes of the released files (dataset/README.md)
                "actions": rng.normal(size=7),
                "rel_actions": rng.uniform(-1, 1, size=7),
                "robot_obs": rng.normal(size=15),
                "scene_obs": rng.normal(size=24),
                "rgb_static": rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
                "rgb_gripper": rng.integers(0, 256, (84, 84, 3), dtype=np.uint8),
                "rgb_tactile": rng.integers(0, 256, (160, 120, 6), dtype=np.uint8),
                "depth_static": rng.uniform(0, 5, (200, 200)).astype(np.float32),
                "depth_gripper": rng.uniform(0, 5, (84, 84)).astype(np.float32),
                "depth_tactile": rng.uniform(0, 1, (160, 120, 2)).astype(np.float32),
            }
            np.savez_compressed(split / f"episode_{i:07d}.npz", **frame)
            frames[i] = frame
    np.save(split / "ep_start_end_ids.npy", episodes)
    save_like_numpy1(split / "scene_info.npy", {"calvin_scene_D": [53818, 53832]})
    ann = {
        "language": {
            "ann": ["pull the handle to open the drawer", "slide the door to the right"],
            "task": ["open_drawer", "move_slider_right"],
            "emb": rng.normal(size=(2, 1, 384)).astype(np.float32),
        },
        # the official annotator stores numpy integer ids from its episode lookup
        "info": {
            "episodes": [],
            "indx": [(np.int64(53818), np.int64(53821)), (np.int64(53830), np.int64(53832))],
        },
    }
    save_like_numpy1(split / "lang_annotations" / "auto_lang_ann.npy", ann)

    ds = CalvinDataset(tmp_path / "task_D_D", "validation", image_sizes=IMAGE_HW)
    assert ds.scene_info == {"calvin_scene_D": (53818, 53832)} and ds.num_frames == 7
    ds.validate()
    keys = ("rgb_static", "depth_static", "rgb_tactile", "robot_obs", "rel_actions")
    windows = LanguageWindowDataset(ds, keys=keys)
    item = windows[1]
    assert item["instruction"] == "slide the door to the right"
    assert item["task"] == "move_slider_right"
    assert item["window"] == (53830, 53832) and item["emb"].shape == (1, 384)
    for key in windows.keys:
        expected = np.stack([frames[i][key] for i in range(53830, 53833)])
        assert item["frames"][key].dtype == expected.dtype
        assert np.array_equal(item["frames"][key], expected)
    assert item["frames"]["robot_obs"].dtype == np.float64


def test_writer_and_collection_script_run_without_torch():
    """The writer side of the package (and collect_demos.py) must not pull in torch."""
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys; import rftf_gym.data; import rftf_gym.data.writer; import collect_demos; "
        "assert 'torch' not in sys.modules, 'torch was imported'; "
        "from rftf_gym.data import LanguageWindowDataset; assert 'torch' in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
