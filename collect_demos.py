"""Scripted-expert demonstrations in CALVIN's dataset format (issue 3, SPEC 4).

Each "play" episode starts from a random layout of one scene and chains experts, as CALVIN's
teleoperated play data does: after each success the next task is drawn among those whose
official condition holds in the current state (`rftf_gym.env.CalvinEnv.applicable_tasks`), up to
``tasks_per_episode`` tasks. Every frame is written with `rftf_gym.data.CalvinDatasetWriter`;
every successful instruction becomes a language window (the last <= 64 frames of its segment,
ending at success) annotated with a training paraphrase. A failed attempt is not written: its
frames are dropped and the episode ends with the successes before it. Failures are counted,
printed and saved in ``<output>/collection_summary.json``.

``training/`` comes from ``--train-scenes`` (default A, B, C), ``validation/`` from scene D. The
run is resumable: episode i of a split always uses the same seed, and the writer continues after
the last finished episode.

Frames: ``rel_actions`` is the expert's relative action exactly as sent to the env (what a policy
outputs); ``actions`` is the absolute pose it aims at (tcp + 0.02 m * rel_pos, euler + 0.05 rad *
rel_orn), so calvin's ``to_relative_action(actions, robot_obs)`` gives ``rel_actions`` back.

Usage: ``python collect_demos.py --output demos`` (small: ``--train-episodes 3 --val-episodes 1``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import tyro
from tqdm import tqdm

import rftf_gym  # noqa: F401  (registers RFTF-CALVIN-v0)
from rftf_gym.conventions import EP_LEN, MAX_REL_ORN, MAX_REL_POS, wrap_angle
from rftf_gym.data import MAX_WINDOW, CalvinDatasetWriter
from rftf_gym.experts import make_expert
from rftf_gym.language import instruction_for


@dataclass
class Args:
    output: str = "demos"
    """dataset root; training/ and validation/ are written below it"""
    train_episodes: int = 60
    """play episodes in training/, split evenly over --train-scenes"""
    val_episodes: int = 20
    """play episodes in validation/ (scene D)"""
    train_scenes: tuple[str, ...] = ("A", "B", "C")
    """scenes of the training split"""
    val_scene: str = "D"
    """scene of the validation split"""
    tasks_per_episode: tuple[int, int] = (5, 10)
    """range (inclusive) of the number of chained tasks per play episode"""
    seed: int = 1
    """base seed; episode i of a split uses a seed derived from (seed, split, i)"""
    noise: float = 0.05
    """std of Gaussian noise on the experts' free-space translation actions (action units)"""
    static_size: int = 200
    """static camera image size (official 200)"""
    gripper_size: int = 84
    """gripper camera image size (official 84)"""
    compress: bool = True
    """write frames with np.savez_compressed, as the released dataset"""


@dataclass
class Counts:
    """What a split's collection produced."""

    episodes: int = 0
    frames: int = 0
    successes: int = 0
    failures: int = 0
    failures_by_task: dict[str, int] = field(default_factory=dict)
    successes_by_task: dict[str, int] = field(default_factory=dict)


def absolute_action(robot_obs: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """The absolute pose a relative action aims at (CALVIN's ``actions`` field)."""
    pos = robot_obs[:3] + rel[:3] * MAX_REL_POS
    orn = wrap_angle(robot_obs[3:6] + rel[3:6] * MAX_REL_ORN)
    return np.concatenate([pos, orn, rel[6:7]])


def run_segment(env: gym.Env, obs: dict, task: str, rng: np.random.Generator,
                noise: float) -> tuple[list[dict], dict, bool]:
    """Run one expert from the current state; the frames (obs + action) and whether it succeeded."""
    expert = make_expert(task, env.unwrapped.scene, rng, noise=noise)
    frames = []
    info: dict = {}
    for _ in range(EP_LEN):
        rel = expert.act(obs)
        rel[6] = 1.0 if rel[6] >= 0 else -1.0
        frames.append({"actions": absolute_action(obs["robot_obs"], rel), "rel_actions": rel.copy(),
                       "robot_obs": obs["robot_obs"], "scene_obs": obs["scene_obs"],
                       "rgb_static": obs["rgb_static"], "rgb_gripper": obs["rgb_gripper"]})
        obs, _, terminated, truncated, info = env.step(rel)
        if terminated or truncated:
            break
    return frames, obs, bool(info.get("success", False))


def play_episode(env: gym.Env, writer: CalvinDatasetWriter, scene: str, seed: int,
                 args: Args, counts: Counts) -> None:
    """One play episode: chain experts from a random layout and write the successful part."""
    rng = np.random.default_rng(seed)
    n_tasks = int(rng.integers(args.tasks_per_episode[0], args.tasks_per_episode[1] + 1))
    obs, _ = env.reset(seed=seed)
    previous = None
    segments: list[tuple[list[dict], str]] = []
    for _ in range(n_tasks):
        candidates = [t for t in env.unwrapped.applicable_tasks() if t != previous]
        if not candidates:
            break
        task = candidates[int(rng.integers(len(candidates)))]
        # Start the instruction from the current state (also for the first task: the env's own
        # reset drew a task of its own, and success is judged for the episode's task).
        obs, _ = env.reset(options={"continue": True, "task": task})
        frames, obs, success = run_segment(env, obs, task, rng, args.noise)
        if not success:
            counts.failures += 1
            counts.failures_by_task[task] = counts.failures_by_task.get(task, 0) + 1
            break
        counts.successes += 1
        counts.successes_by_task[task] = counts.successes_by_task.get(task, 0) + 1
        segments.append((frames, task))
        previous = task
    if not segments:
        return
    writer.start_episode(f"calvin_scene_{scene}")
    for frames, task in segments:
        first = None
        for frame in frames:
            frame_id = writer.add_frame(**frame)
            first = frame_id if first is None else first
        last = frame_id
        writer.add_annotation(max(first, last - MAX_WINDOW + 1), last, instruction_for(task, "train", rng), task)
        counts.frames += len(frames)
    writer.end_episode()
    counts.episodes += 1


def collect_split(split: str, scenes: tuple[str, ...], episodes: int, args: Args, split_index: int,
                  progress: tqdm) -> Counts:
    """Collect (or finish collecting) one split, scene after scene."""
    counts = Counts()
    sizes = {"static": (args.static_size, args.static_size), "gripper": (args.gripper_size, args.gripper_size)}
    per_scene = np.array_split(np.arange(episodes), len(scenes))
    with CalvinDatasetWriter(args.output, split, image_sizes=sizes, compress=args.compress) as writer:
        # Resume: an episode attempt that wrote nothing leaves no trace, so re-running it is
        # cheap and deterministic; skip the attempts the finished episodes account for.
        done = len(writer.episodes)
        for scene, indices in zip(scenes, per_scene):
            env = gym.make("RFTF-CALVIN-v0", scene=scene, obs_mode="rgb+state", static_size=args.static_size,
                           gripper_size=args.gripper_size)
            for i in indices:
                if done > 0:
                    done -= 1
                    progress.update(1)
                    continue
                seed = int(np.random.SeedSequence([args.seed, split_index, int(i)]).generate_state(1)[0])
                play_episode(env, writer, scene, seed, args, counts)
                progress.update(1)
                progress.set_postfix(ok=counts.successes, failed=counts.failures)
            env.close()
    return counts


if __name__ == "__main__":
    args = tyro.cli(Args)
    start = time.perf_counter()
    splits = (("training", args.train_scenes, args.train_episodes), ("validation", (args.val_scene,), args.val_episodes))
    summary: dict[str, dict] = {}
    with tqdm(total=args.train_episodes + args.val_episodes, desc="episodes") as progress:
        for index, (split, scenes, episodes) in enumerate(splits):
            if episodes > 0:
                summary[split] = vars(collect_split(split, scenes, episodes, args, index, progress))
    summary["seconds"] = time.perf_counter() - start
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "collection_summary.json").write_text(json.dumps(summary, indent=2))
    for split in ("training", "validation"):
        if split in summary:
            s = summary[split]
            print(f"{split}: {s['episodes']} episodes, {s['frames']} frames, {s['successes']} demonstrations, "
                  f"{s['failures']} failed attempts (not written) {s['failures_by_task']}")
    print(f"done in {summary['seconds']:.0f} s")
