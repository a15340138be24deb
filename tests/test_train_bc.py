"""train_bc.py end to end on a tiny synthetic dataset: train, interrupt, resume, save, reload, evaluate."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rftf_gym.data import CalvinDatasetWriter
from rftf_gym.language import TRAIN_INSTRUCTIONS
from rftf_gym.models import load_vla

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"static": (32, 32), "gripper": (16, 16)}
TINY = ["--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--head-hidden", "32", "--batch-size", "16",
        "--static-size", "32", "--gripper-size", "16", "--val-frames", "20", "--val-every", "2"]


def write_split(root: Path, split: str, scenes: list[str], rng: np.random.Generator,
                lang_folders: tuple[str, ...] = ("lang_annotations",), emb_dim: int | None = None) -> None:
    tasks = ["open_drawer", "turn_on_led", "lift_red_block_table"]
    with CalvinDatasetWriter(root, split, image_sizes=SIZES, lang_folders=lang_folders) as writer:
        for e, scene in enumerate(scenes):
            writer.start_episode(f"calvin_scene_{scene}")
            ids = []
            for _ in range(12):
                rel = rng.uniform(-1, 1, 7)
                rel[6] = 1.0 if rel[6] > 0 else -1.0
                ids.append(writer.add_frame(
                    actions=rng.normal(size=7), rel_actions=rel, robot_obs=rng.normal(size=15),
                    scene_obs=rng.normal(size=24),
                    rgb_static=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                    rgb_gripper=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)))
            task = tasks[e % len(tasks)]
            for (first, last), sentence in zip(((0, 5), (6, 11)), TRAIN_INSTRUCTIONS[task]):
                emb = rng.normal(size=(1, emb_dim)).astype(np.float32) if emb_dim else None
                writer.add_annotation(ids[first], ids[last], sentence, task, emb=emb)
            writer.end_episode()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    rng = np.random.default_rng(0)
    write_split(root, "training", ["A", "B", "C"], rng)
    write_split(root, "validation", ["D"], rng)
    return root


def run_bc(tmp_path: Path, data: Path, out: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "train_bc.py"), "--data", str(data), "--output-dir", str(tmp_path / out), *TINY, *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.parametrize("obs_mode", ["state", "rgb"])
def test_train_interrupt_resume_save_reload_evaluate(tmp_path, tiny_data, obs_mode):
    common = ["--obs-mode", obs_mode, "--total-steps", "6", "--checkpoint-every", "1"]
    # uninterrupted reference run (no evaluation)
    run_bc(tmp_path, tiny_data, "straight", *common, "--eval-chains", "0")
    # interrupted after 3 steps; a kill during a checkpoint write leaves a stray temporary file
    first = run_bc(tmp_path, tiny_data, "resumed", *common, "--stop-after-steps", "3", "--eval-chains", "0")
    assert "3 steps in" in first.stdout
    (tmp_path / "resumed" / ".resume.safetensors.tmp").write_bytes(b"half a file")
    second = run_bc(tmp_path, tiny_data, "resumed", *common, "--eval-chains", "2", "--eval-batch-size", "2",
                    "--eval-workers", "0")
    assert "resumed from" in second.stdout and "at step 3" in second.stdout
    # the resumed run ends with exactly the weights of the uninterrupted one
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the checkpoint reloads, records its provenance and was evaluated on 2 chains in scene D
    model = load_vla(tmp_path / "resumed")
    assert model.config.obs_mode == obs_mode and model.config.d_model == 32
    meta = model.checkpoint_metadata
    assert meta["step"] == 6 and meta["data"]["train_windows"] == 6 and "train_bc.py" in meta["command"]
    metrics = json.loads((tmp_path / "resumed_eval" / "metrics.json").read_text())
    assert metrics["num_chains"] == 2 and 0.0 <= metrics["avg_len"]["value"] <= 5.0


@pytest.mark.slow
def test_resume_with_other_architecture_fails(tmp_path, tiny_data):
    run_bc(tmp_path, tiny_data, "ck", "--total-steps", "2", "--eval-chains", "0")
    cmd = [sys.executable, str(ROOT / "train_bc.py"), "--data", str(tiny_data), "--output-dir", str(tmp_path / "ck"),
           *TINY, "--total-steps", "4", "--eval-chains", "0"]
    cmd[cmd.index("--d-model") + 1] = "64"
    result = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0
    assert "another architecture" in result.stderr and "d_model: 64 vs 32" in result.stderr


@pytest.mark.slow
def test_language_folder_chosen_by_name(tmp_path):
    """A split whose language lives only in a named folder, as lang_paraphrase-MiniLM-L3-v2 of the
    real data, trains with --lang-folder and its embeddings."""
    root, rng = tmp_path / "named", np.random.default_rng(1)
    folders = ("lang_paraphrase-MiniLM-L3-v2",)
    write_split(root, "training", ["A"], rng, lang_folders=folders, emb_dim=24)
    write_split(root, "validation", ["D"], rng, lang_folders=folders, emb_dim=24)
    cmd = [sys.executable, str(ROOT / "train_bc.py"), "--data", str(root), "--output-dir", str(tmp_path / "no"),
           *TINY, "--total-steps", "2", "--eval-chains", "0"]
    result = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0 and "lang_annotations/auto_lang_ann.npy: file is missing" in result.stderr
    run_bc(tmp_path, root, "ck", "--total-steps", "2", "--eval-chains", "0", "--lang-folder", folders[0],
           "--use-dataset-embeddings")
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["vla_config"]["text_dim"] == 24


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--total-steps", "0"], "--total-steps must be >= 1"), (["--data", "/nonexistent/demos"], "dataset directory is missing")],
)
def test_user_mistakes_print_one_line(tmp_path, extra, message):
    cmd = [sys.executable, str(ROOT / "train_bc.py"), "--output-dir", str(tmp_path / "out"), *extra]
    result = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("train_bc.py: error:")
    assert message in result.stderr and "Traceback" not in result.stderr
