"""The value model, its losses and diagnostics, and tiny end-to-end runs of ``train_value.py``
(CleanRL tests/test_mujoco.py style): train, kill, resume, reload, score a demonstration."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rftf_gym import value_diagnostics as diag
from rftf_gym import value_metrics as vm
from rftf_gym.conventions import BLOCK_OFFSETS
from rftf_gym.data import CalvinDataset, CalvinDatasetWriter
from rftf_gym.experts.geometry import BLOCK_Z
from rftf_gym.models import VLA, VLAConfig, save_checkpoint
from rftf_gym.value_model import (
    RECENT_PREFIX,
    START_PREFIX,
    ValueModel,
    context_difference,
    load_value_model,
    save_value_model,
    value_context,
    with_start,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_value  # noqa: E402  (the script's pure functions)

SMALL = dict(d_model=32, n_layers=1, n_heads=2, head_hidden=32)


# ---------------------------------------------------------------------------- synthetic data
SENTENCES = {"move_slider_left": "push the sliding door to the left", "move_slider_right": "push the sliding door to the right",
             "open_drawer": "pull the handle to open the drawer"}


def write_split(root: Path, split: str, scene: str, seed: int, episodes: int = 2,
                segments: tuple[tuple[str, int, float], ...] = (("move_slider_left", 0, 1.0), ("open_drawer", 1, 1.0))) -> None:
    """A tiny CALVIN-format split: per episode, 'move_slider_left' opens the door while the arm
    moves, then 'open_drawer' opens the drawer: two 20-frame segments, each annotated on its
    last 16 frames (as collect_demos.py annotates the end of each segment). ``segments`` gives
    each segment's (task, scene_obs joint, direction)."""
    rng = np.random.default_rng(seed)
    with CalvinDatasetWriter(root, split, image_sizes={"static": (8, 8), "gripper": (8, 8)}, compress=False) as w:
        for _ in range(episodes):
            w.start_episode(scene)
            robot, scene_obs = rng.normal(0, 0.05, 15), np.zeros(24)
            robot[3:6] = (3.09, -0.03, 1.5)
            for task, joint, direction in segments:
                first = w.next_frame_id
                for _ in range(20):
                    robot[:3] += rng.normal(0, 0.01, 3)
                    scene_obs[joint] += 0.01 * direction
                    w.add_frame(actions=np.zeros(7), rel_actions=np.zeros(7), robot_obs=robot.copy(), scene_obs=scene_obs.copy(),
                                rgb_static=np.zeros((8, 8, 3), np.uint8), rgb_gripper=np.zeros((8, 8, 3), np.uint8))
                w.add_annotation(first + 4, w.next_frame_id - 1, SENTENCES[task], task)
            w.end_episode()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_demos")
    write_split(root, "training", "calvin_scene_A", seed=0)
    write_split(root, "validation", "calvin_scene_D", seed=1)
    return root


# ---------------------------------------------------------------------------- losses
def test_ranking_loss_hand_computed_three_frame_window():
    # Window values 0, 1, 3: pairs (0,1) d=1, (0,2) d=3, (1,2) d=2; Eq. 1 averages -log sigma(d)
    # over the C(3,2) = 3 pairs: (0.313262 + 0.048587 + 0.126928) / 3 = 0.162926
    values = torch.tensor([[0.0, 1.0, 3.0]])
    expected = -(math.log(1 / (1 + math.exp(-1))) + math.log(1 / (1 + math.exp(-3))) + math.log(1 / (1 + math.exp(-2)))) / 3
    assert train_value.ranking_loss(values).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.162926, abs=1e-6)
    # Batch mean; a window in the wrong order costs more than one in the right order.
    both = torch.tensor([[0.0, 1.0, 3.0], [3.0, 1.0, 0.0]])
    assert train_value.ranking_loss(both).item() > expected
    with pytest.raises(ValueError, match="n >= 2"):
        train_value.ranking_loss(torch.zeros(4))


def test_ranking_loss_gradient_raises_later_frames():
    values = torch.zeros(1, 3, requires_grad=True)
    train_value.ranking_loss(values).backward()
    grad = values.grad[0]
    assert grad[0] > 0 > grad[2] and grad[1] == pytest.approx(0.0)  # descent lowers the first, raises the last


def test_tie_and_grounding_losses():
    assert train_value.tie_loss(torch.full((2, 4), 3.0)).item() == pytest.approx(math.log(2))
    assert train_value.tie_loss(torch.tensor([[0.0, 5.0]])).item() > math.log(2)
    right, wrong = torch.tensor([2.0, 1.0]), torch.tensor([0.0, 1.0])
    assert train_value.grounding_loss(right, wrong).item() == pytest.approx((math.log1p(math.exp(-2)) + math.log(2)) / 2)


def test_epoch_windows_cover_episodes_at_random_offsets():
    rng = np.random.default_rng(0)
    rows = train_value.epoch_windows([64, 20, 3], window_size=8, stride=4, rng=rng)
    per_episode = np.bincount(rows[:, 0], minlength=3)
    assert per_episode.tolist() == [8, 3, 0]  # ceil(L / n) windows; too-short episodes skipped
    assert rows[rows[:, 0] == 0, 1].max() <= 64 - 29 and rows[rows[:, 0] == 1, 1].max() == 0
    frames = train_value.window_frames(20, 0, 8, 4)  # 29-frame span does not fit: stride 2
    assert frames.tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
    assert train_value.window_frames(64, 35, 8, 4)[-1] == 63


# ---------------------------------------------------------------------------- model
def state_obs(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"robot_obs": rng.normal(size=(batch, 15)), "scene_obs": rng.normal(size=(batch, 24))}


def test_predict_is_batched_and_instruction_conditioned():
    torch.manual_seed(0)
    model = ValueModel(VLAConfig(obs_mode="state", d_model=32, n_layers=1, n_heads=2), head_hidden=32)
    obs = state_obs(5)
    values = model.predict(obs, ["open the drawer"] * 5)
    assert values.shape == (5,) and values.dtype == np.float32
    single = [model.predict({k: v[i : i + 1] for k, v in obs.items()}, ["open the drawer"])[0] for i in range(5)]
    np.testing.assert_allclose(values, single, rtol=1e-5, atol=1e-6)
    assert not np.allclose(values, model.predict(obs, ["turn on the led"] * 5))
    emb = model.text_encoder.encode(["open the drawer"] * 5)
    np.testing.assert_allclose(model.predict({**obs, "lang_emb": emb}), values, rtol=1e-5, atol=1e-6)


def test_from_vla_copies_the_body_but_not_the_query_tokens():
    torch.manual_seed(0)
    vla = VLA(VLAConfig(obs_mode="rgb", d_model=32, n_layers=1, n_heads=2, static_size=32, gripper_size=16))
    model = ValueModel.from_vla(vla, num_value_queries=2)
    body, source = model.body.state_dict(), vla.body.state_dict()
    assert set(body) == set(source)
    for name in body:
        if name == "queries":
            assert body[name].shape == (2, 32)
        else:
            assert torch.equal(body[name], source[name]), name
    obs = {"rgb_static": np.zeros((2, 200, 200, 3), np.uint8), "rgb_gripper": np.zeros((2, 84, 84, 3), np.uint8),
           "robot_obs": np.zeros((2, 15))}
    assert model.predict(obs, ["a", "b"]).shape == (2,)


def test_images_shrunk_for_storage_equal_the_model_inputs():
    model = ValueModel(VLAConfig(obs_mode="rgb", d_model=32, n_layers=1, n_heads=2, static_size=32, gripper_size=16))
    rng = np.random.default_rng(0)
    obs = {"rgb_static": rng.integers(0, 256, (3, 200, 200, 3), dtype=np.uint8),
           "rgb_gripper": rng.integers(0, 256, (3, 84, 84, 3), dtype=np.uint8), "robot_obs": rng.normal(size=(3, 15))}
    small = {"rgb_static": diag.resize_images(obs["rgb_static"], (32, 32)),
             "rgb_gripper": diag.resize_images(obs["rgb_gripper"], (16, 16)), "robot_obs": obs["robot_obs"]}
    assert small["rgb_static"].shape == (3, 32, 32, 3) and small["rgb_static"].dtype == np.uint8
    np.testing.assert_array_equal(model.predict(small, ["a"] * 3), model.predict(obs, ["a"] * 3))


def test_checkpoint_round_trip_and_clear_errors(tmp_path):
    torch.manual_seed(0)
    model = ValueModel(VLAConfig(obs_mode="state", d_model=32, n_layers=1, n_heads=2), head_hidden=32)
    save_value_model(tmp_path / "v", model, {"epoch": 1})
    loaded = load_value_model(tmp_path / "v")
    obs = state_obs(3)
    np.testing.assert_array_equal(loaded.predict(obs, ["x"] * 3), model.predict(obs, ["x"] * 3))
    assert loaded.checkpoint_metadata == {"epoch": 1}
    # A VLA checkpoint is not a value checkpoint.
    save_checkpoint(tmp_path / "vla", VLA(VLAConfig(obs_mode="state", d_model=32, n_layers=1, n_heads=2)))
    with pytest.raises(ValueError, match="policy_type"):
        load_value_model(tmp_path / "vla")
    # A config whose architecture does not fit the weights names the tensors.
    config = json.loads((tmp_path / "v" / "config.json").read_text())
    config["value"]["head_hidden"] = 64
    (tmp_path / "v" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="value_head"):
        load_value_model(tmp_path / "v")
    with pytest.raises(FileNotFoundError):
        load_value_model(tmp_path / "missing")


# ---------------------------------------------------------------------------- diagnostics
def test_a_kill_while_checkpointing_resumes_from_the_last_complete_step(tmp_path, monkeypatch):
    """The weights of step 2 are on disk but its commit point never was: resume gets step 1 whole."""

    def fresh() -> tuple[ValueModel, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = ValueModel(VLAConfig(obs_mode="state", d_model=32, n_layers=1, n_heads=2), head_hidden=32)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-2)

    model, optimizer = fresh()

    def step() -> None:
        optimizer.zero_grad()
        sum(p.square().sum() for p in model.parameters()).backward()
        optimizer.step()

    step()
    train_value.save_resume(tmp_path, model, optimizer, {"global_step": 1, "args": {}, "history": [], "losses": [0.5]})
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    step()

    def killed(path, obj):
        raise KeyboardInterrupt("killed before the commit point")

    monkeypatch.setattr(train_value, "atomic_json", killed)
    with pytest.raises(KeyboardInterrupt):
        train_value.save_resume(tmp_path, model, optimizer, {"global_step": 2, "args": {}, "history": [], "losses": [0.5, 0.4]})
    monkeypatch.undo()

    again, again_opt = fresh()
    progress = train_value.load_resume(tmp_path, again, again_opt, torch.device("cpu"))
    assert progress["global_step"] == 1 and progress["losses"] == [0.5]
    for key, value in again.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
    assert again_opt.state_dict()["state"][0]["step"].item() == 1


def test_a_resume_folder_of_the_older_layout_is_refused_clearly(tmp_path):
    (tmp_path / "resume").mkdir()
    (tmp_path / "resume" / "progress.json").write_text(json.dumps({"global_step": 3, "args": {}, "history": [], "losses": []}))
    model = ValueModel(VLAConfig(obs_mode="state", d_model=32, n_layers=1, n_heads=2), head_hidden=32)
    with pytest.raises(ValueError, match="older train_value.py"):
        train_value.load_resume(tmp_path, model, torch.optim.AdamW(model.parameters()), torch.device("cpu"))


def test_diagnostics_separate_progress_from_a_clock(tiny_data):
    demos = diag.demo_episodes(CalvinDataset(tiny_data, "validation"), ("robot_obs", "scene_obs"))
    assert [len(e) for e in demos] == [16] * 4 and {e.task for e in demos} == {"move_slider_left", "open_drawer"}
    wrong = diag.wrong_instruction_episodes(demos, seed=0)
    assert all(w.instruction != d.instruction and w.obs is d.obs for w, d in zip(wrong, demos))

    def progress(obs, instructions):  # the joint that the instruction asks to move
        joint = np.array([0 if "sliding door" in s else 1 for s in instructions])
        return obs["scene_obs"][np.arange(len(joint)), joint]

    def blind(obs, instructions):  # rises with the episode, ignores the instruction
        return obs["scene_obs"][:, 0] + obs["scene_obs"][:, 1]

    report, values = diag.diagnose(progress, demos, wrong, batch_size=7)
    model, clock = report["model"], report["clock"]
    assert model["demos"]["voc"] == pytest.approx(1.0) and model["demos"]["pairwise_accuracy"] == 1.0
    assert model["reversed"]["voc"] == pytest.approx(-1.0)
    assert model["wrong_instruction"]["voc"] == 0.0  # the other joint does not move: flat
    assert model["grounding_accuracy"] > 0.5
    np.testing.assert_allclose(values["demos"][0], demos[0].obs["scene_obs"][:, 0 if demos[0].task == "move_slider_left" else 1])
    # The clock is perfect on demonstrations and wrong on every negative.
    assert clock["demos"]["voc"] == pytest.approx(1.0) and clock["reversed"]["voc"] == pytest.approx(1.0)
    assert clock["wrong_instruction"]["voc"] == pytest.approx(1.0) and clock["grounding_accuracy"] == 0.5
    # A model that ignores the instruction looks perfect on demonstrations and fails grounding.
    blind_report, _ = diag.diagnose(blind, demos, wrong)
    assert blind_report["model"]["demos"]["voc"] == pytest.approx(1.0)
    assert blind_report["model"]["wrong_instruction"]["voc"] == pytest.approx(1.0)


def test_whole_segments_reach_back_to_the_previous_window(tiny_data):
    ds = CalvinDataset(tiny_data, "training")
    assert [a.start for a in ds.annotations] == [4, 24, 44, 64]
    assert diag.segment_starts(ds) == [0, 20, 40, 60]
    whole = diag.demo_episodes(ds, ("scene_obs",), whole_segments=True)
    assert [len(e) for e in whole] == [20] * 4
    np.testing.assert_array_equal(whole[1].obs["scene_obs"][4:], diag.demo_episodes(ds, ("scene_obs",))[1].obs["scene_obs"])


def test_success_vs_failure_scores_by_task():
    ep = lambda task, ok, n: diag.Episode({"robot_obs": np.zeros((n, 15))}, "i", task, ok)  # noqa: E731
    rollouts = [ep("a", True, 3), ep("a", False, 4), ep("b", False, 2)]
    values = [np.array([0.0, 1.0, 2.0]), np.array([0.0, 0.5, 3.0, 0.0]), np.array([1.0, 1.0])]
    scores = diag._success_failure_scores(rollouts, values)
    # task a: t0 tie, t1 win, t2 loss -> 1.5 / 3; final 2.0 vs 0.0 -> AUC 1; task b has no success
    assert scores["same_time_accuracy"] == pytest.approx(0.5) and scores["same_time_pairs"] == 3
    assert scores["final_value_auc"] == 1.0 and scores["auc_tasks"] == ["a"]
    report = diag.evaluate_values([], [], rollouts=rollouts, rollout_values=values)
    assert report["rollouts_success"]["episodes"] == 1 and report["rollouts_failure"]["episodes"] == 2


def test_rollouts_are_cached_and_checked(tmp_path):
    eps = diag.collect_rollouts("random", ["open_drawer"], 1, ("robot_obs", "scene_obs"), tmp_path, seed=3)
    assert len(eps) == 1 and not eps[0].success and len(eps[0]) == diag.EPISODE_STEPS + 1
    again = diag.collect_rollouts("random", ["open_drawer"], 1, ("robot_obs", "scene_obs"), tmp_path, seed=3)
    np.testing.assert_array_equal(again[0].obs["scene_obs"], eps[0].obs["scene_obs"])
    with pytest.raises(ValueError, match="seed"):
        diag.collect_rollouts("random", ["open_drawer"], 1, ("robot_obs", "scene_obs"), tmp_path, seed=4)


def test_dataset_reads_another_language_folder(tiny_data, tmp_path):
    import shutil

    shutil.copytree(tiny_data / "validation", tmp_path / "validation")
    (tmp_path / "validation" / "lang_annotations").rename(tmp_path / "validation" / "lang_other")
    ds = CalvinDataset(tmp_path, "validation", lang_folder="lang_other")
    assert len(ds.annotations) == 4
    with pytest.raises(Exception, match="lang_annotations"):
        CalvinDataset(tmp_path, "validation")


# ---------------------------------------------------------------------------- train_value.py
def train_args(data: Path, runs: Path, **extra: str) -> list[str]:
    args = {
        "--data-root": str(data), "--runs-dir": str(runs), "--run-name": "tiny", "--seed": "3",
        "--batch-size": "2", "--window-size": "4", "--frame-stride": "2", "--num-epochs": "2", "--keep-epoch": "1",
        "--learning-rate": "1e-3", "--checkpoint-every": "1", "--torch-threads": "1", **extra,
    }
    # an extra option given as None is dropped (the script's default applies)
    return [sys.executable, str(ROOT / "train_value.py"), *[x for k, v in args.items() if v is not None for x in (k, v)]]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_train_kill_resume_reload_and_score(tiny_data, tmp_path, kill_when_ready):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Uninterrupted reference run (Eq. 1 alone, the paper's loss).
    done = run(train_args(tiny_data, tmp_path / "ref", **{"--loss": "paper"}), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # Killed after its first resume checkpoint, then resumed by the same command.
    cmd = train_args(tiny_data, tmp_path / "killed", **{"--loss": "paper"})
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = tmp_path / "killed" / "tiny" / "resume" / "progress.json"
    kill_when_ready(proc, progress.exists, timeout=300)
    assert json.loads(progress.read_text())["global_step"] < 16
    resumed = run(cmd, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming tiny at step" in resumed.stdout

    ref_report = json.loads((tmp_path / "ref" / "tiny" / "report.json").read_text())
    report = json.loads((tmp_path / "killed" / "tiny" / "report.json").read_text())
    # 4 annotations of 16 frames, ceil(16 / 4) windows each, 2 windows per step
    assert report["steps_per_epoch"] == ref_report["steps_per_epoch"] == 8
    assert [h["epoch"] for h in report["history"]] == [1, 2]
    for h, r in zip(report["history"], ref_report["history"]):
        assert h["train_loss"] == pytest.approx(r["train_loss"], rel=1e-5)
        for key in ("demos", "reversed", "wrong_instruction"):
            assert h["model"][key]["voc"] == pytest.approx(r["model"][key]["voc"], abs=1e-6)
        assert h["clock"]["demos"]["voc"] == pytest.approx(1.0)
    for name in ("curves.png", "value_curves.png"):
        assert (tmp_path / "killed" / "tiny" / name).stat().st_size > 1000

    # The kept model (epoch 1) reloads and scores a held-out demonstration.
    model = load_value_model(tmp_path / "killed" / "tiny" / "value_model")
    assert model.checkpoint_metadata["epoch"] == 1
    demo = diag.demo_episodes(CalvinDataset(tiny_data, "validation"), model.config.obs_keys)[0]
    values = model.predict(demo.obs, [demo.instruction] * len(demo))
    assert values.shape == (16,) and np.all(np.isfinite(values))
    ref = load_value_model(tmp_path / "ref" / "tiny" / "value_model")
    np.testing.assert_allclose(values, ref.predict(demo.obs, [demo.instruction] * len(demo)), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_defaults_and_resume_with_other_settings_is_refused(tiny_data, tmp_path):
    # Default loss and kept epoch: the grounded loss, the last epoch's model.
    first = run(train_args(tiny_data, tmp_path, **{"--num-epochs": "2", "--max-steps-per-epoch": "1", "--keep-epoch": None}), tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((tmp_path / "tiny" / "report.json").read_text())
    assert report["kept_epoch"] == 2 and report["args"]["loss"] == "grounded"
    assert load_value_model(tmp_path / "tiny" / "value_model").checkpoint_metadata["epoch"] == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tiny"))
    events.Reload()
    assert {"losses/ranking", "losses/wrong_tie", "losses/grounding"} <= set(events.Tags()["scalars"])
    other = run(train_args(tiny_data, tmp_path, **{"--num-epochs": "2", "--max-steps-per-epoch": "1", "--window-size": "3"}), tmp_path)
    assert other.returncode != 0 and "window_size" in other.stderr


@pytest.mark.slow
def test_rollout_diagnostics_and_failure_ranking_run(tiny_data, tmp_path):
    extra = {"--num-epochs": "1", "--max-steps-per-epoch": "2", "--rollout-policy": "random",
             "--rollout-tasks": "open_drawer", "--rollout-episodes-per-task": "1",
             "--train-rollout-policy": "random", "--train-rollout-scenes": "A"}
    done = run(train_args(tiny_data, tmp_path, **extra), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training rollouts: 2 failures" in done.stdout
    report = json.loads((tmp_path / "tiny" / "report.json").read_text())
    assert report["rollouts"] == {"successes": 0, "failures": 1}
    model = report["history"][0]["model"]
    assert model["rollouts_failure"]["episodes"] == 1 and model["rollouts_success"]["episodes"] == 0
    assert report["history"][0]["clock"]["rollouts_failure"]["voc"] == pytest.approx(1.0)


@pytest.mark.slow
def test_rollouts_of_tasks_no_random_layout_starts(tmp_path):
    # A block in the drawer and a held block: the experts' constructed start states.
    tasks = ["lift_blue_block_drawer", "place_in_slider"]
    episodes = diag.collect_rollouts("random", tasks, 1, ("robot_obs", "scene_obs"), tmp_path, scene="A", seed=2)
    assert [e.task for e in episodes] == tasks
    assert all(len(e) > 1 and e.obs["scene_obs"].shape[1] == 24 for e in episodes)
    # The blue block starts below the table top, on the drawer's floor.
    assert episodes[0].obs["scene_obs"][0, BLOCK_OFFSETS["blue"] + 2] < BLOCK_Z - 0.05
    assert episodes[1].obs["robot_obs"][0, 14] == -1  # the last gripper action closed it on a block


def test_bad_arguments_fail_clearly(tiny_data, tmp_path):
    bad = run(train_args(tiny_data, tmp_path, **{"--loss": "clock"}), tmp_path)
    assert bad.returncode != 0 and "--loss" in bad.stderr
    missing = run(train_args(tmp_path / "nowhere", tmp_path), tmp_path)
    assert missing.returncode != 0 and "dataset directory is missing" in missing.stderr


# ---------------------------------------------------------------------------- start-frame context
# The value model conditioned on the instruction's start frame, V(s_t | s_start, l): its inputs,
# checkpoints, diagnostics and training (train_value.py --context start).
SMALL_STATE = VLAConfig(obs_mode="state", d_model=32, n_layers=1, n_heads=2)


def context_model(seed: int = 0) -> ValueModel:
    torch.manual_seed(seed)
    model = ValueModel(SMALL_STATE, head_hidden=32, context="start")
    with torch.no_grad():  # non-trivial difference scales, so a checkpoint must carry them
        model.context_std.copy_(torch.linspace(0.5, 2.0, model.context_std.numel()))
    return model


def test_context_difference_wraps_angles_and_subtracts_the_rest():
    start, now = state_obs(1, 0), state_obs(1, 1)
    start["scene_obs"][0, 11], now["scene_obs"][0, 11] = 3.1, -3.1  # red block yaw across +-pi
    start["robot_obs"][0, 3], now["robot_obs"][0, 3] = -3.0, 3.0  # tcp roll across +-pi
    t = {k: torch.as_tensor(v) for k, v in now.items()}
    s = {k: torch.as_tensor(v) for k, v in start.items()}
    diff = context_difference(t["robot_obs"], t["scene_obs"], s["robot_obs"], s["scene_obs"])[0].numpy()
    assert diff.shape == (39,)
    assert diff[15 + 11] == pytest.approx(2 * math.pi - 6.2, abs=1e-5)  # a turn of 0.083 rad, not -6.2
    assert diff[3] == pytest.approx(6.0 - 2 * math.pi, abs=1e-5)
    np.testing.assert_allclose(diff[:3], now["robot_obs"][0, :3] - start["robot_obs"][0, :3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(diff[15 + 6 : 15 + 9], now["scene_obs"][0, 6:9] - start["scene_obs"][0, 6:9], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(diff[15:21], now["scene_obs"][0, :6] - start["scene_obs"][0, :6], rtol=1e-5, atol=1e-6)


def test_start_model_reads_the_start_frame_batched_equals_one_by_one():
    model = context_model()
    obs, start = state_obs(5, 0), state_obs(5, 1)
    values = model.predict(with_start(obs, start), ["open the drawer"] * 5)
    assert values.shape == (5,) and values.dtype == np.float32
    single = [model.predict(with_start({k: v[i : i + 1] for k, v in obs.items()}, {k: v[i : i + 1] for k, v in start.items()}),
                            ["open the drawer"])[0] for i in range(5)]
    np.testing.assert_allclose(values, single, rtol=1e-5, atol=1e-6)
    # The start frame changes the value; the current frame as its own start is another input.
    assert not np.allclose(values, model.predict(with_start(obs, obs), ["open the drawer"] * 5))
    assert value_context(model) == value_context(model.predict) == "start"
    assert value_context(ValueModel(SMALL_STATE, head_hidden=32)) == "none" and value_context(lambda o, l: o) == "none"


def test_start_model_refuses_missing_or_misshapen_start_and_bad_configs():
    model = context_model()
    obs = state_obs(2)
    with pytest.raises(ValueError, match="start_robot_obs"):
        model.predict(obs, ["a", "b"])
    with pytest.raises(ValueError, match="start_scene_obs must have the shape"):
        model.predict({**with_start(obs, obs), "start_scene_obs": np.zeros((2, 23))}, ["a", "b"])
    with pytest.raises(ValueError, match="context must be one of"):
        ValueModel(SMALL_STATE, context="history")
    with pytest.raises(ValueError, match="state variant only"):
        ValueModel(VLAConfig(obs_mode="rgb", d_model=32, n_layers=1, n_heads=2), context="start")
    with pytest.raises(ValueError, match=r"\(N, 39\)"):
        model.set_context_normalization(np.zeros((4, 24)))
    with pytest.raises(ValueError, match="context 'start' model"):
        ValueModel(SMALL_STATE).set_context_normalization(np.zeros((4, 39)))


def test_start_checkpoint_round_trip_and_refusal_on_mismatch(tmp_path):
    model = context_model()
    save_value_model(tmp_path / "v", model, {"epoch": 1})
    loaded = load_value_model(tmp_path / "v")
    assert loaded.context == "start"
    torch.testing.assert_close(loaded.context_std, model.context_std)
    obs, start = state_obs(3, 0), state_obs(3, 1)
    np.testing.assert_array_equal(loaded.predict(with_start(obs, start), ["x"] * 3), model.predict(with_start(obs, start), ["x"] * 3))
    config_file = tmp_path / "v" / "config.json"
    config = json.loads(config_file.read_text())
    assert config["value"]["context"] == "start"
    # The config says one frame but the weights hold the context tokens: the tensors are named.
    config["value"]["context"] = "none"
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="context_robot_proj"):
        load_value_model(tmp_path / "v")
    config["value"]["context"] = "clip"
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="context must be one of"):
        load_value_model(tmp_path / "v")
    # And the other way: a one-frame checkpoint whose config claims a start context.
    torch.manual_seed(0)
    plain = ValueModel(SMALL_STATE, head_hidden=32)
    save_value_model(tmp_path / "p", plain)
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    config["value"]["context"] = "start"
    (tmp_path / "p" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="context_std"):
        load_value_model(tmp_path / "p")


def test_a_checkpoint_without_the_context_field_loads_as_one_frame(tmp_path):
    """Checkpoints written before the option have no "context": they load and score as before."""
    torch.manual_seed(0)
    plain = ValueModel(SMALL_STATE, head_hidden=32)
    save_value_model(tmp_path / "p", plain)
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    del config["value"]["context"]
    (tmp_path / "p" / "config.json").write_text(json.dumps(config))
    loaded = load_value_model(tmp_path / "p")
    obs = state_obs(4)
    assert loaded.context == "none" and not any(k.startswith("context") for k in loaded.state_dict())
    np.testing.assert_array_equal(loaded.predict(obs, ["x"] * 4), plain.predict(obs, ["x"] * 4))
    # Start keys next to the observations do not change a one-frame model's values.
    np.testing.assert_array_equal(loaded.predict(with_start(obs, state_obs(4, 9)), ["x"] * 4), plain.predict(obs, ["x"] * 4))


def test_accuracy_at_lag_on_hand_made_values():
    values = [np.array([0.0, 1.0, 0.5, 2.0]), np.array([3.0, 3.0])]
    # lag 1: (1>0) (0.5<1) (2>0.5) + one tie -> 2.5 / 4; lag 2: (0.5>0) (2>1) -> 1; lag 3: 2>0 -> 1
    assert vm.pairwise_accuracy_at_lag(values, 1) == pytest.approx(2.5 / 4)
    assert vm.pairwise_accuracy_at_lag(values, 2) == 1.0 and vm.pairwise_accuracy_at_lag(values, 3) == 1.0
    assert vm.pairwise_accuracy_at_lag(values, 4) is None
    with pytest.raises(ValueError, match="lag"):
        vm.pairwise_accuracy_at_lag(values, 0)


def test_start_models_are_scored_from_each_episodes_own_first_frame(tiny_data):
    demos = diag.demo_episodes(CalvinDataset(tiny_data, "validation"), ("robot_obs", "scene_obs"))
    wrong = diag.wrong_instruction_episodes(demos, seed=0)

    def distance(obs, instructions):  # how far the scene moved from where the instruction started
        return np.abs(obs["scene_obs"] - obs[START_PREFIX + "scene_obs"]).sum(1)

    distance.context = "start"
    report, values = diag.diagnose(distance, demos, wrong, batch_size=7)  # batches span episodes
    for e, v in zip(demos, values["demos"]):
        one_by_one = [distance(with_start({k: x[t : t + 1] for k, x in e.obs.items()}, {k: x[:1] for k, x in e.obs.items()}), [""])[0]
                      for t in range(len(e))]
        np.testing.assert_allclose(v, one_by_one)
    # A distance from the start rises on the demonstrations AND on their reversals (each seen
    # from its own first frame, the demonstration's end): a clock in disguise, which the reversed
    # set exposes. Reversing the demonstrations' values instead would have hidden it (VOC -1).
    assert report["model"]["demos"]["voc"] == pytest.approx(1.0)
    assert report["model"]["reversed"]["voc"] == pytest.approx(1.0)
    np.testing.assert_allclose(values["reversed"][0], distance(
        with_start({k: v[::-1] for k, v in demos[0].obs.items()}, {k: np.repeat(v[-1:], len(v), 0) for k, v in demos[0].obs.items()}), [""]))
    assert set(report["model"]["demos"]["accuracy_by_lag"]) == {"1", "4", "8", "16", "32"}
    assert report["model"]["demos"]["accuracy_by_lag"]["32"] is None  # 16-frame windows


def test_training_batches_carry_each_windows_start_frame():
    def obs(n: int, base: float) -> dict[str, np.ndarray]:
        return {"robot_obs": np.full((n, 15), base), "scene_obs": np.arange(n * 24, dtype=float).reshape(n, 24) + base}

    episodes = [diag.Episode(obs(10, 0.0), "a", "a"), diag.Episode(obs(12, 1000.0), "b", "b")]
    rows = np.array([[1, 3], [0, 2]])
    starts = train_value.gather_starts(episodes, rows, 4)
    assert starts["start_scene_obs"].shape == (8, 24)
    np.testing.assert_array_equal(starts["start_scene_obs"][:4], np.repeat(episodes[1].obs["scene_obs"][:1], 4, 0))
    np.testing.assert_array_equal(starts["start_scene_obs"][4:], np.repeat(episodes[0].obs["scene_obs"][:1], 4, 0))
    rev = train_value.reversed_rows([10, 12], rows, 4, 2, np.random.default_rng(0))
    assert rev[:, 0].tolist() == [1, 0] and 0 <= rev[0, 1] <= 12 - 7 and 0 <= rev[1, 1] <= 10 - 7
    diffs = train_value.context_differences(episodes)
    assert diffs.shape == (22, 39) and np.all(diffs[[0, 10]] == 0)  # each first frame is its own start


@pytest.mark.slow
def test_train_with_start_context_reloads_scores_and_refuses_another_context(tiny_data, tmp_path):
    extra = {"--context": "start", "--num-epochs": "1", "--max-steps-per-epoch": "3"}
    done = run(train_args(tiny_data, tmp_path, **extra), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "tiny" / "report.json").read_text())
    model_report = report["history"][0]["model"]
    # Reversed values are scored afresh, not the demos' values reversed.
    assert model_report["reversed"]["voc"] != pytest.approx(-model_report["demos"]["voc"], abs=1e-9)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tiny"))
    events.Reload()
    assert {"losses/ranking", "losses/reversed", "losses/wrong_tie"} <= set(events.Tags()["scalars"])
    model = load_value_model(tmp_path / "tiny" / "value_model")
    assert model.context == "start" and not torch.all(model.context_std == 1)
    demo = diag.demo_episodes(CalvinDataset(tiny_data, "validation"), model.config.obs_keys)[0]
    values = model.predict(with_start(demo.obs, {k: np.repeat(v[:1], len(demo), 0) for k, v in demo.obs.items()}),
                           [demo.instruction] * len(demo))
    assert values.shape == (16,) and np.all(np.isfinite(values))
    other = run(train_args(tiny_data, tmp_path, **{**extra, "--context": "none"}), tmp_path)
    assert other.returncode != 0 and "context: 'start' vs 'none'" in other.stderr
    bad = run(train_args(tiny_data, tmp_path / "bad", **{"--context": "clip"}), tmp_path)
    assert bad.returncode != 0 and "--context must be one of" in bad.stderr


# ---------------------------------------------------------------------------- recent context
def recent_model(context: str = "recent", lag: int = 3, seed: int = 0) -> ValueModel:
    torch.manual_seed(seed)
    model = ValueModel(SMALL_STATE, head_hidden=32, context=context, recent_lag=lag)
    with torch.no_grad():  # non-trivial difference scales, so a checkpoint must carry them
        model.recent_std.copy_(torch.linspace(0.5, 2.0, model.recent_std.numel()))
    return model


def with_recent(obs: dict[str, np.ndarray], recent: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**obs, **{RECENT_PREFIX + k: v for k, v in recent.items()}}


def test_recent_model_reads_the_recent_frame_batched_equals_one_by_one():
    model = recent_model()
    obs, recent = state_obs(5, 0), state_obs(5, 1)
    values = model.predict(with_recent(obs, recent), ["open the drawer"] * 5)
    assert values.shape == (5,) and values.dtype == np.float32
    single = [model.predict(with_recent({k: v[i : i + 1] for k, v in obs.items()}, {k: v[i : i + 1] for k, v in recent.items()}),
                            ["open the drawer"])[0] for i in range(5)]
    np.testing.assert_allclose(values, single, rtol=1e-5, atol=1e-6)
    assert not np.allclose(values, model.predict(with_recent(obs, obs), ["open the drawer"] * 5))
    assert value_context(model) == value_context(model.predict) == "recent" and model.recent_lag == 3
    with pytest.raises(ValueError, match="recent_robot_obs"):
        model.predict(obs, ["a"] * 5)
    with pytest.raises(ValueError, match="recent_scene_obs must have the shape"):
        model.predict({**with_recent(obs, recent), "recent_scene_obs": np.zeros((5, 23))}, ["a"] * 5)
    with pytest.raises(ValueError, match="recent_lag must be >= 1"):
        ValueModel(SMALL_STATE, context="recent", recent_lag=0)
    with pytest.raises(ValueError, match="context 'recent' model"):
        context_model().set_context_normalization(np.zeros((4, 39)), "recent")
    # start+recent reads both frames, and both change its value.
    both = ValueModel(SMALL_STATE, head_hidden=32, context="start+recent", recent_lag=2)
    full = with_start(with_recent(obs, recent), state_obs(5, 2))
    with pytest.raises(ValueError, match="start_robot_obs"):
        both.predict(with_recent(obs, recent), ["a"] * 5)
    v = both.predict(full, ["a"] * 5)
    assert not np.allclose(v, both.predict({**full, **with_recent({}, obs)}, ["a"] * 5))
    assert not np.allclose(v, both.predict(with_start(full, obs), ["a"] * 5))


def test_reward_wrappers_refuse_a_recent_context_model_clearly():
    from rftf_gym.wrappers import ValueRewardWrapper

    class Env(gym.Env):
        observation_space = gym.spaces.Dict({"robot_obs": gym.spaces.Box(-1, 1, (15,)), "instruction": gym.spaces.Text(64)})
        action_space = gym.spaces.Box(-1, 1, (7,))

    with pytest.raises(ValueError, match="start frame only.*'recent'"):
        ValueRewardWrapper(Env(), recent_model())


def test_recent_checkpoint_round_trip_keeps_the_lag_and_scales(tmp_path):
    model = recent_model("start+recent", lag=5)
    save_value_model(tmp_path / "v", model)
    loaded = load_value_model(tmp_path / "v")
    assert loaded.context == "start+recent" and loaded.recent_lag == 5
    torch.testing.assert_close(loaded.recent_std, model.recent_std)
    obs = with_start(with_recent(state_obs(3, 0), state_obs(3, 1)), state_obs(3, 2))
    np.testing.assert_array_equal(loaded.predict(obs, ["x"] * 3), model.predict(obs, ["x"] * 3))
    config = json.loads((tmp_path / "v" / "config.json").read_text())
    assert config["value"]["recent_lag"] == 5
    config["value"]["context"] = "start"  # weights hold recent tokens the config does not declare
    (tmp_path / "v" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="recent_robot_proj"):
        load_value_model(tmp_path / "v")


def test_recent_models_are_scored_with_the_frame_k_steps_back(tiny_data):
    demos = diag.demo_episodes(CalvinDataset(tiny_data, "validation"), ("robot_obs", "scene_obs"))

    def speed(obs, instructions):  # how far the scene moved over the last k frames
        return (obs["scene_obs"] - obs[RECENT_PREFIX + "scene_obs"]).sum(1)

    speed.context, speed.recent_lag = "recent", 3
    report, values = diag.diagnose(speed, demos, batch_size=7)  # batches span episodes
    for e, v in zip(demos, values["demos"]):
        back = np.maximum(np.arange(len(e)) - 3, 0)  # the first frame stands in before frame 3
        np.testing.assert_allclose(v, speed(with_recent(e.obs, {k: x[back] for k, x in e.obs.items()}), [""]))
    # Reversed clips are scored afresh: the scene moves backwards, so the speed is negative
    # (not the demonstrations' values reversed, which would all be positive).
    assert all(np.all(r[3:] < 0) for r in values["reversed"])
    assert np.all(values["demos"][0][3:] > 0)

    def no_lag(obs, instructions):
        return obs["scene_obs"].sum(1)

    no_lag.context = "recent"
    with pytest.raises(ValueError, match="recent_lag"):
        diag.score_episodes(no_lag, demos)


def test_training_batches_carry_the_frames_k_steps_back():
    def obs(n: int, base: float) -> dict[str, np.ndarray]:
        return {"robot_obs": np.full((n, 15), base), "scene_obs": np.arange(n * 24, dtype=float).reshape(n, 24) + base}

    episodes = [diag.Episode(obs(10, 0.0), "a", "a"), diag.Episode(obs(12, 1000.0), "b", "b")]
    rows = np.array([[1, 3], [0, 0]])
    recent = train_value.gather_recent(episodes, rows, 4, 2, 5)
    assert recent["recent_scene_obs"].shape == (8, 24)
    # window of episode 1 at 3: frames 3, 5, 7, 9 -> 0, 0, 2, 4; of episode 0 at 0: 0, 2, 4, 6 -> 0, 0, 0, 1
    np.testing.assert_array_equal(recent["recent_scene_obs"][:4], episodes[1].obs["scene_obs"][[0, 0, 2, 4]])
    np.testing.assert_array_equal(recent["recent_scene_obs"][4:], episodes[0].obs["scene_obs"][[0, 0, 0, 1]])
    diffs = train_value.context_differences(episodes, lag=2)
    assert diffs.shape == (22, 39) and np.all(diffs[[0, 10]] == 0)
    # articulations and the red block's position (the angles are wrapped):
    np.testing.assert_allclose(diffs[5, 15:24], 2 * 24)  # frame 5 against frame 3: 48 apart in scene_obs
    np.testing.assert_allclose(diffs[1, 15:24], 24)  # frame 1 against frame 0 (no frame 2 back)


def test_cosine_schedule_by_hand():
    assert train_value.scheduled_lr(1e-3, "constant", 7, 10) == 1e-3
    assert train_value.scheduled_lr(1e-3, "cosine", 0, 10) == pytest.approx(1e-3)
    assert train_value.scheduled_lr(1e-3, "cosine", 5, 10) == pytest.approx(5e-4)
    assert train_value.scheduled_lr(1e-3, "cosine", 9, 10) == pytest.approx(1e-3 * (1 + math.cos(0.9 * math.pi)) / 2)
    assert train_value.scheduled_lr(1e-3, "cosine", 10, 10) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="'constant' or 'cosine'"):
        train_value.scheduled_lr(1e-3, "linear", 0, 10)


@pytest.mark.slow
def test_train_with_recent_context_and_cosine_schedule(tiny_data, tmp_path):
    extra = {"--context": "recent", "--recent-lag": "2", "--num-epochs": "1", "--max-steps-per-epoch": "3", "--lr-schedule": "cosine"}
    done = run(train_args(tiny_data, tmp_path, **extra), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "tiny" / "report.json").read_text())
    model_report = report["history"][0]["model"]
    assert model_report["reversed"]["voc"] != pytest.approx(-model_report["demos"]["voc"], abs=1e-9)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tiny"))
    events.Reload()
    assert {"losses/ranking", "losses/reversed"} <= set(events.Tags()["scalars"])
    lrs = [e.value for e in events.Scalars("charts/learning_rate")]
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(7.5e-4) and lrs[2] == pytest.approx(2.5e-4)
    model = load_value_model(tmp_path / "tiny" / "value_model")
    assert model.context == "recent" and model.recent_lag == 2 and not torch.all(model.recent_std == 1)
    # A cosine schedule is fixed by the run's length: resuming it with another length is refused.
    longer = run(train_args(tiny_data, tmp_path, **{**extra, "--num-epochs": "2"}), tmp_path)
    assert longer.returncode != 0 and "cosine schedule over 3 steps, not 6" in longer.stderr
    bad = run(train_args(tiny_data, tmp_path / "bad", **{"--recent-lag": "0"}), tmp_path)
    assert bad.returncode != 0 and "--recent-lag must be >= 1" in bad.stderr


def test_relative_model_reads_no_absolute_position():
    torch.manual_seed(0)
    model = ValueModel(SMALL_STATE, head_hidden=32, context="start", relative=True)
    assert not any(k.startswith("context_") for k in model.state_dict())  # the body reads the differences itself
    obs, start = state_obs(4, 0), state_obs(4, 1)
    shift = {k: v + np.random.default_rng(2).normal(size=v.shape[1]) for k, v in obs.items()}
    shift_start = {k: v + (shift[k] - obs[k]) for k, v in start.items()}  # the same offset on both frames
    values = model.predict(with_start(obs, start), ["x"] * 4)
    np.testing.assert_allclose(model.predict(with_start(shift, shift_start), ["x"] * 4), values, rtol=1e-4, atol=1e-5)
    assert not np.allclose(model.predict(with_start(shift, start), ["x"] * 4), values)  # but it reads the motion
    plain = context_model()  # a start model with absolute inputs is moved by the offset
    assert not np.allclose(plain.predict(with_start(shift, shift_start), ["x"] * 4), plain.predict(with_start(obs, start), ["x"] * 4))
    with pytest.raises(ValueError, match="needs a start context"):
        ValueModel(SMALL_STATE, context="recent", relative=True)


def test_relative_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = ValueModel(SMALL_STATE, head_hidden=32, context="start", relative=True)
    save_value_model(tmp_path / "v", model)
    loaded = load_value_model(tmp_path / "v")
    assert loaded.relative and loaded.context == "start" and value_context(loaded) == "start"
    obs = with_start(state_obs(3, 0), state_obs(3, 1))
    np.testing.assert_array_equal(loaded.predict(obs, ["x"] * 3), model.predict(obs, ["x"] * 3))


def test_opposite_instruction_set_tells_direction_from_motion():
    t = np.linspace(0.0, 0.3, 12)

    def ep(task, instruction, slider):
        scene = np.zeros((len(slider), 24))
        scene[:, 0] = slider
        scene[:, 1] = np.linspace(0.0, 1.0, len(slider))  # e.g. the hand's travel: rises either way
        return diag.Episode({"scene_obs": scene}, instruction, task)

    demos = [ep("move_slider_left", "push the sliding door to the left", t),
             ep("move_slider_right", "push the sliding door to the right", t[::-1]),
             ep("open_drawer", "open the drawer", np.zeros(12))]  # its opposite has no episode here
    opposite = diag.opposite_instruction_episodes(demos, seed=0)
    assert [(o.task, o.instruction) for o in opposite] == [
        ("move_slider_left", "push the sliding door to the right"), ("move_slider_right", "push the sliding door to the left")]
    assert all(not o.success and o.obs is d.obs for o, d in zip(opposite, demos))

    def direction(obs, instructions):  # the slider's position towards the side the instruction names
        sign = np.array([1.0 if s.endswith("left") else -1.0 for s in instructions])
        return sign * obs["scene_obs"][:, 0]

    def blind(obs, instructions):  # reads the motion common to both directions
        return obs["scene_obs"][:, 1]

    report, values = diag.diagnose(direction, demos[:2], rollouts=(), opposite=opposite, batch_size=5)
    assert report["model"]["demos"]["voc"] == pytest.approx(1.0)
    assert report["model"]["opposite_instruction"]["voc"] == pytest.approx(-1.0)
    assert report["model"]["opposite_instruction"]["episodes"] == 2 and len(values["opposite_instruction"]) == 2
    assert report["clock"]["opposite_instruction"]["voc"] == pytest.approx(1.0)
    blind_report, _ = diag.diagnose(blind, demos[:2], opposite=opposite)
    assert blind_report["model"]["opposite_instruction"]["voc"] == pytest.approx(1.0)  # it pays the opposite move


@pytest.mark.slow
def test_opposite_term_lowers_the_value_of_the_opposite_instruction(tmp_path):
    # Slider left then right in every episode: under "right" the left segment's frames must fall.
    pair = (("move_slider_left", 0, 1.0), ("move_slider_right", 0, -1.0))
    write_split(tmp_path / "data", "training", "calvin_scene_A", seed=0, episodes=4, segments=pair)
    write_split(tmp_path / "data", "validation", "calvin_scene_D", seed=1, segments=pair)
    vocs = {}
    for name, extra in {"off": {"--opposite-coef": "0"}, "ends": {"--opposite-coef": "1"},
                        "all": {"--opposite-coef": "1", "--opposite-frames": "all"}}.items():
        extra = {**extra, "--num-epochs": "6", "--keep-epoch": None, "--run-name": name}
        done = run(train_args(tmp_path / "data", tmp_path, **extra), tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        last = json.loads((tmp_path / name / "report.json").read_text())["history"][-1]
        assert last["model"]["opposite_instruction"]["episodes"] == 4
        assert last["clock"]["opposite_instruction"]["voc"] == pytest.approx(1.0)
        vocs[name] = last["model"]["opposite_instruction"]["voc"]
    # (here every wrong instruction is the opposite one, so the tie and grounding terms alone already pull it below 0)
    assert max(vocs["ends"], vocs["all"]) < -0.8 and max(vocs["ends"], vocs["all"]) < vocs["off"] - 0.3, vocs
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "ends"))
    events.Reload()
    assert "losses/opposite" in events.Tags()["scalars"]
    # The start-frame model (the ends read each demonstration's first frame as their start) runs too.
    start = {"--opposite-coef": "1", "--context": "start", "--num-epochs": "1", "--keep-epoch": None, "--run-name": "start"}
    done = run(train_args(tmp_path / "data", tmp_path, **start), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "start" / "report.json").read_text())["history"][-1]["model"]["opposite_instruction"]["episodes"] == 4
    # A resume with another weight is refused by name, and the term needs the grounded loss.
    other = run(train_args(tmp_path / "data", tmp_path, **{**start, "--opposite-coef": "2"}), tmp_path)
    assert other.returncode != 0 and "opposite_coef" in other.stderr
    paper = run(train_args(tmp_path / "data", tmp_path, **{"--opposite-coef": "1", "--loss": "paper", "--run-name": "paper"}), tmp_path)
    assert paper.returncode != 0 and "--opposite-coef belongs to --loss grounded" in paper.stderr


def test_unknown_opposite_frames_is_refused_by_name(tiny_data, tmp_path):
    done = run(train_args(tiny_data, tmp_path, **{"--opposite-coef": "1", "--opposite-frames": "middle"}), tmp_path)
    assert done.returncode != 0 and "--opposite-frames must be 'ends' or 'all'" in done.stderr
