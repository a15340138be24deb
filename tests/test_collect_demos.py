"""collect_demos.py end to end: a tiny run is read back by rftf_gym.data."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rftf_gym.data import CalvinDataset, load_pickled_npy
from rftf_gym.data.render_config import render_config
from rftf_gym.language import EVAL_INSTRUCTIONS
from rftf_gym.text_encoder import HashedNgramEncoder

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
        # The files CALVIN's own loaders and evaluation read (language.emb, statistics.yaml,
        # ep_lens.npy; embeddings.npy in validation), in lang_annotations and the encoder's folder.
        encoder = HashedNgramEncoder()
        np.testing.assert_array_equal(lang["language"]["emb"][:, 0], encoder.encode(lang["language"]["ann"]))
        named = CalvinDataset(tmp_path, split, lang_folder=f"lang_{encoder.name}")
        np.testing.assert_array_equal(named.language_emb, lang["language"]["emb"])
        lens = np.load(tmp_path / split / "ep_lens.npy")
        np.testing.assert_array_equal(lens, data.episodes[:, 1] - data.episodes[:, 0] + 1)
        assert "act_max_bound: [" in (tmp_path / split / "statistics.yaml").read_text()
        if split == "validation":
            sentence = EVAL_INSTRUCTIONS["open_drawer"]
            assert data.eval_embeddings["open_drawer"].ann == (sentence,)
            np.testing.assert_array_equal(data.eval_embeddings["open_drawer"].emb[:, 0], encoder.encode([sentence]))
            # The simulator configuration the official evaluation's get_env reads.
            yaml = pytest.importorskip("yaml")
            config = yaml.safe_load((tmp_path / split / ".hydra" / "merged_config.yaml").read_text())
            assert config == render_config("D", {"static": (32, 32), "gripper": (16, 16)})
        else:
            assert data.eval_embeddings is None
            assert not (tmp_path / split / ".hydra").exists()
        assert not data.has_depth and "depth_static" not in data.frame_keys


def test_depth_collection(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "collect_demos.py"), "--output", str(tmp_path), "--train-episodes", "1",
           "--val-episodes", "0", "--train-scenes", "C", "--static-size", "40", "--gripper-size", "20",
           "--tasks-per-episode", "1", "1", "--noise", "0.0", "--seed", "2", "--depth"]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    data = CalvinDataset(tmp_path, "training", image_sizes={"static": (40, 40), "gripper": (20, 20)})
    data.validate()  # depth shapes checked against the image sizes
    assert data.has_depth and {"depth_static", "depth_gripper"} <= set(data.frame_keys)
    start, end = data.episodes[0]
    frames = data.load_frames(range(int(start), int(end) + 1), ("depth_static", "depth_gripper", "robot_obs"))
    static, gripper = frames["depth_static"], frames["depth_gripper"]
    assert static.dtype == np.float32 and static.shape[1:] == (40, 40)
    assert gripper.dtype == np.float32 and gripper.shape[1:] == (20, 20)
    # Metres: the table is ~4 m from the static camera, the far planes are 10 m and 2 m.
    assert 3.5 < np.median(static) < 4.5 and static.max() <= 10.01
    assert 0.01 <= gripper.min() and gripper.max() <= 2.001
    # The gripper camera rides on the hand: its depth changes as the arm moves, the static one's
    # table pixels do not.
    assert np.abs(np.diff(gripper, axis=0)).max() > 0.05
    progress = json.loads((tmp_path / "training" / "collection_progress.json").read_text())
    assert progress["config"]["depth"] is True


# A small collection with a failed attempt: at noise 30 and seed 3, attempts 0 and 1 write episodes
# and attempt 2 fails its only task, the order the resume test's kill points need; outcomes depend
# on the simulator's physics, so a physics change may need another seed.
SMALL_ARGS = {"train_scenes": ("A",), "train_episodes": 4, "val_episodes": 0, "tasks_per_episode": (1, 1),
              "noise": 30.0, "static_size": 16, "gripper_size": 8, "seed": 3}


def _load_script():
    spec = importlib.util.spec_from_file_location("collect_demos_under_test", ROOT / "collect_demos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


class Killed(BaseException):
    """Stands for kill -9: nothing below the raise runs, no cleanup (the writer's close is off)."""


def _dataset_contents(root: Path) -> dict:
    """Every file of a collection, decoded: frames, index files, progress and summary counts."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            continue
        name = str(path.relative_to(root))
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as frame:
                out[name] = {key: frame[key].tolist() for key in frame.files}
        elif path.name in ("scene_info.npy", "auto_lang_ann.npy", "embeddings.npy"):
            out[name] = repr(load_pickled_npy(path))
        elif path.suffix == ".npy":
            out[name] = np.load(path, allow_pickle=False).tolist()
        elif path.suffix == ".yaml":
            out[name] = path.read_text()
        else:
            data = json.loads(path.read_text())
            data.pop("seconds_this_run", None)
            out[name] = data
    return out


def test_interrupted_and_resumed_collection_equals_the_uninterrupted_one(tmp_path: Path, monkeypatch) -> None:
    script = _load_script()
    reference = script.collect(script.Args(output=str(tmp_path / "reference"), **SMALL_ARGS))
    assert reference["training"]["failures"] >= 1 and reference["training"]["episodes"] >= 2, (
        f"the seeded collection must hold a failed attempt and two episodes; got {reference['training']} "
        "(pick another seed in SMALL_ARGS)")

    resumed = tmp_path / "resumed"
    args = script.Args(output=str(resumed), **SMALL_ARGS)
    writer_cls = script.CalvinDatasetWriter
    monkeypatch.setattr(writer_cls, "close", lambda self: None)
    calls = {"frames": 0, "episodes": 0}
    real_add_frame, real_write_episode, real_record = writer_cls.add_frame, script.write_episode, script.SplitProgress.record

    # 1: killed in the middle of writing attempt 0's episode (its attempt already recorded).
    def add_frame_then_die(self, **frame):
        calls["frames"] += 1
        if calls["frames"] == 30:
            raise Killed
        return real_add_frame(self, **frame)

    monkeypatch.setattr(writer_cls, "add_frame", add_frame_then_die)
    with pytest.raises(Killed):
        script.collect(args)
    monkeypatch.setattr(writer_cls, "add_frame", real_add_frame)

    # 2: killed right after attempt 1's episode was committed.
    def write_episode_then_die(writer, scene, attempt):
        real_write_episode(writer, scene, attempt)
        calls["episodes"] += 1
        if calls["episodes"] == 2:
            raise Killed

    monkeypatch.setattr(script, "write_episode", write_episode_then_die)
    with pytest.raises(Killed):
        script.collect(args)
    monkeypatch.setattr(script, "write_episode", real_write_episode)

    # 3: killed right after a failed attempt was recorded (it wrote nothing).
    def record_then_die(self, attempt, writes_episode):
        real_record(self, attempt, writes_episode)
        if attempt.failure is not None:
            raise Killed

    monkeypatch.setattr(script.SplitProgress, "record", record_then_die)
    with pytest.raises(Killed):
        script.collect(args)
    monkeypatch.setattr(script.SplitProgress, "record", real_record)

    summary = script.collect(args)
    summary.pop("seconds_this_run")
    reference.pop("seconds_this_run")
    assert summary == reference  # counts over all runs, failed attempts included
    assert _dataset_contents(resumed) == _dataset_contents(tmp_path / "reference")


def test_resume_with_other_arguments_is_refused(tmp_path: Path) -> None:
    script = _load_script()
    script.collect(script.Args(output=str(tmp_path), **{**SMALL_ARGS, "train_episodes": 1}))
    with pytest.raises(ValueError, match=r"other arguments \(noise: \[30.0\] there, \[0.5\] now\)"):
        script.collect(script.Args(output=str(tmp_path), **{**SMALL_ARGS, "train_episodes": 1, "noise": 0.5}))


def _run_script(args: list[str], prelude: str = "") -> subprocess.CompletedProcess:
    """collect_demos.py as a user runs it (``prelude`` runs first, in the same interpreter)."""
    code = f"import runpy, sys\n{prelude}\nsys.argv = ['collect_demos.py', *{args!r}]\n" \
           f"runpy.run_path({str(ROOT / 'collect_demos.py')!r}, run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)


def _small_cli(output: Path, episodes: int = 1) -> list[str]:
    return ["--output", str(output), "--train-scenes", "A", "--train-episodes", str(episodes), "--val-episodes", "0",
            "--tasks-per-episode", "1", "1", "--static-size", "16", "--gripper-size", "8"]


def _error_line(result: subprocess.CompletedProcess) -> str:
    """The script's error message: the last line of stderr, with no traceback before it."""
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_user_mistakes_print_one_line_and_exit_2(tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    result = _run_script(_small_cli(a_file))
    assert result.returncode == 2
    assert _error_line(result) == (f"collect_demos.py: error: --output {a_file}: {a_file} is a file, not a directory; "
                                   "remove or rename it, or give another --output")
    result = _run_script([*_small_cli(tmp_path / "out"), "--tasks-per-episode", "3", "1"])
    assert result.returncode == 2 and "--tasks-per-episode must be" in _error_line(result)

    assert _run_script([*_small_cli(tmp_path / "out"), "--noise", "30"]).returncode == 0
    result = _run_script([*_small_cli(tmp_path / "out"), "--noise", "0.5"])
    assert result.returncode == 2
    assert "was collected with other arguments (noise: [30.0] there, [0.5] now)" in _error_line(result)


def test_a_full_disk_names_the_file_and_what_to_do(tmp_path: Path) -> None:
    prelude = ("import errno, numpy\n"
               "def full(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')\n"
               "numpy.savez_compressed = full")
    result = _run_script(_small_cli(tmp_path), prelude)
    assert result.returncode == 1
    frame = tmp_path / "training" / "episode_0000000.npz"
    assert _error_line(result) == (f"collect_demos.py: error: No space left on device while writing {frame}: free "
                                   "space there or choose another output directory, then re-run the same command: "
                                   "it resumes")
    assert not list((tmp_path / "training").glob(".*.tmp"))  # no half-written temporary left behind


@pytest.mark.slow
def test_kill_9_after_five_episodes_resumes_to_the_uninterrupted_dataset(tmp_path: Path, kill_when_ready) -> None:
    """The reported case: 8 attempts, two of which fail, killed after 5 committed episodes."""
    cli_args = [*_small_cli(tmp_path / "full", episodes=8), "--noise", "30"]
    assert _run_script(cli_args).returncode == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(ROOT / "collect_demos.py"), *_small_cli(killed, episodes=8),
                             "--noise", "30"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ids = killed / "training" / "ep_start_end_ids.npy"

    def five_committed() -> bool:
        try:
            return len(np.load(ids)) >= 5
        except (OSError, ValueError):  # not written yet
            return False

    kill_when_ready(proc, five_committed)
    assert _run_script([*_small_cli(killed, episodes=8), "--noise", "30"]).returncode == 0
    assert _dataset_contents(killed) == _dataset_contents(tmp_path / "full")


@pytest.mark.calvin
@pytest.mark.skipif(importlib.util.find_spec("calvin_env") is None,
                    reason="calvin_env is not installed; see docs/calvin_backend.md to run the official-simulator tests")
def test_tiny_collection_on_the_official_backend(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "collect_demos.py"), "--output", str(tmp_path), "--backend", "calvin",
           "--train-episodes", "1", "--val-episodes", "1", "--train-scenes", "A", "--static-size", "32",
           "--gripper-size", "16", "--tasks-per-episode", "2", "2", "--noise", "0.0", "--seed", "3"]
    subprocess.run(cmd, check=True, timeout=600, capture_output=True, cwd=tmp_path)
    summary = json.loads((tmp_path / "collection_summary.json").read_text())
    for split in ("training", "validation"):
        data = CalvinDataset(tmp_path, split)
        data.validate()
        assert summary[split]["successes"] >= 1
        lang = load_pickled_npy(tmp_path / split / "lang_annotations" / "auto_lang_ann.npy")
        assert len(lang["language"]["ann"]) == summary[split]["successes"]
        start, _ = lang["info"]["indx"][0]
        assert data.load_frame(int(start))["rgb_static"].shape == (32, 32, 3)
    progress = json.loads((tmp_path / "training" / "collection_progress.json").read_text())
    assert progress["config"]["backend"] == "calvin"
