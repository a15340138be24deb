"""Scripted-expert demonstrations in CALVIN's dataset format (mees/calvin ``dataset/README.md``).

Each "play" episode starts from a random layout of one scene and chains experts, as CALVIN's
teleoperated play data does: after each success the next task is drawn among those whose
official condition holds in the current state (`rftf_gym.env.CalvinEnv.applicable_tasks`), up to
``tasks_per_episode`` tasks. Every frame is written with `rftf_gym.data.CalvinDatasetWriter`;
every successful instruction becomes a language window (the last <= 64 frames of its segment,
ending at success) annotated with a training paraphrase. A failed attempt is not written: its
frames are dropped and the episode ends with the successes before it. Failures are counted,
printed and saved in ``<output>/collection_summary.json``.

``training/`` comes from ``--train-scenes`` (default A, B, C), ``validation/`` from scene D. The
run is resumable: attempt i of a split always uses the same seed, ``<split>/collection_progress.json``
records how many attempts are done (failed ones included) with their counts, and a re-run of the
same command goes on from there, so an interrupted and resumed collection writes exactly what an
uninterrupted one does. The summary counts every attempt of every run.

Language: each instruction's ``language.emb`` is its embedding by ``--text-encoder`` (the
project's hashed n-gram encoder, `rftf_gym.text_encoder`; not CALVIN's MiniLM), written to
``lang_annotations/`` (the folder CALVIN's loaders read by default) and to
``lang_<encoder name>/``. At the end of each split the script writes ``statistics.yaml``, and for
validation ``embeddings.npy`` (the evaluation sentence of each task and its embedding) in both
language folders, and ``validation/.hydra/merged_config.yaml``: the calvin_env configuration of
the validation scene with the collected cameras (`rftf_gym.data.render_config`), from which
CALVIN's evaluation (``get_env``) builds its simulator.

Frames: ``rel_actions`` is the expert's relative action exactly as sent to the env (what a policy
outputs); ``actions`` is the absolute pose it aims at (tcp + 0.02 m * rel_pos, euler + 0.05 rad *
rel_orn), so calvin's ``to_relative_action(actions, robot_obs)`` gives ``rel_actions`` back.
With ``--depth`` every frame also holds ``depth_static`` and ``depth_gripper``: float32 depth
images in metres, at the image sizes, computed from each camera's z-buffer as calvin_env does
(`rftf_gym.sim.cameras.zbuffer_to_depth`).

Usage: ``python collect_demos.py --output demos`` (small: ``--train-episodes 3 --val-episodes 1``);
``--backend calvin`` writes the same from the official simulator when calvin_env is installed
(docs/calvin_backend.md), one scene's env at a time (calvin_env allows one per process).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import tyro
from tqdm import tqdm

import rftf_gym  # noqa: F401  (registers RFTF-CALVIN-v0)
from rftf_gym import cli
from rftf_gym.backends import Backend
from rftf_gym.conventions import EP_LEN, MAX_REL_ORN, MAX_REL_POS, Scene, wrap_angle
from rftf_gym.data import (
    LANG_FOLDER,
    MAX_WINDOW,
    CalvinDataset,
    CalvinDatasetWriter,
    TaskEmbeddings,
)
from rftf_gym.data.render_config import write_render_config
from rftf_gym.data.statistics import write_statistics
from rftf_gym.experts import make_expert
from rftf_gym.files import atomic_write_text
from rftf_gym.language import EVAL_INSTRUCTIONS, instruction_for
from rftf_gym.text_encoder import HashedNgramEncoder, TextEncoder, make_text_encoder

PROG = "collect_demos.py"
# Observation keys stored in frames besides the state vectors (depth only with --depth).
IMAGE_KEYS = ("rgb_static", "rgb_gripper", "depth_static", "depth_gripper")


@dataclass
class Args:
    output: str = "demos"
    """dataset root; training/ and validation/ are written below it"""
    backend: Backend = "embedded"
    """simulator: the embedded play table, or the official calvin_env (docs/calvin_backend.md)"""
    train_episodes: int = 60
    """play episodes in training/, split evenly over --train-scenes"""
    val_episodes: int = 20
    """play episodes in validation/ (scene D)"""
    train_scenes: tuple[Scene, ...] = ("A", "B", "C")
    """scenes of the training split"""
    val_scene: Scene = "D"
    """scene of the validation split"""
    tasks_per_episode: tuple[int, int] = (5, 10)
    """range (inclusive) of the number of chained tasks per play episode"""
    seed: int = 1
    """base seed; attempt i of a split uses a seed derived from (seed, split, i)"""
    noise: float = 0.05
    """std of Gaussian noise on the experts' free-space translation actions (action units)"""
    static_size: int = 200
    """static camera image size (official 200)"""
    gripper_size: int = 84
    """gripper camera image size (official 84)"""
    compress: bool = True
    """write frames with np.savez_compressed, as the released dataset"""
    text_encoder: str = HashedNgramEncoder().name
    """instruction encoder (rftf_gym.text_encoder) whose embeddings are stored as language.emb, in
    lang_annotations/ and in lang_<encoder name>/; it is not CALVIN's MiniLM"""
    depth: bool = False
    """also write depth_static / depth_gripper (float32 metres from the cameras' z-buffers), as
    CALVIN's depth observation spaces read"""


@dataclass
class Counts:
    """What a split's collection produced, over every run that worked on it."""

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
    """Run one expert from the current state; the frames (obs + action) and whether it succeeded.

    A frame holds the observation's images (and depth images, when the env observes them).
    """
    expert = make_expert(task, env.unwrapped.scene, rng, noise=noise)
    frames = []
    info: dict = {}
    for _ in range(EP_LEN):
        rel = expert.act(obs)
        rel[6] = 1.0 if rel[6] >= 0 else -1.0
        frames.append({"actions": absolute_action(obs["robot_obs"], rel), "rel_actions": rel.copy(),
                       "robot_obs": obs["robot_obs"], "scene_obs": obs["scene_obs"],
                       **{key: obs[key] for key in IMAGE_KEYS if key in obs}})
        obs, _, terminated, truncated, info = env.step(rel)
        if terminated or truncated:
            break
    return frames, obs, bool(info.get("success", False))


@dataclass
class Attempt:
    """One play-episode attempt, run in memory: its successful segments and what it counts."""

    segments: list[tuple[list[dict], str, str]]  # frames, task, instruction
    successes: list[str]
    failure: str | None
    embeddings: list[np.ndarray] = field(default_factory=list)  # (1, dim) per instruction


@functools.cache
def text_encoder(name: str) -> TextEncoder:
    """The instruction encoder of ``--text-encoder``, built once per process.

    Each instruction's ``language.emb`` row is (1, dim), as CALVIN's annotator stores its sentence
    embeddings (``calvin_agent/models/encoders/language_network.py`` adds the middle axis).
    """
    return make_text_encoder(name)


def play_episode(env: gym.Env, seed: int, args: Args) -> Attempt:
    """One play episode: chain experts from a random layout; nothing is written here."""
    rng = np.random.default_rng(seed)
    n_tasks = int(rng.integers(args.tasks_per_episode[0], args.tasks_per_episode[1] + 1))
    obs, _ = env.reset(seed=seed)
    previous = None
    attempt = Attempt(segments=[], successes=[], failure=None)
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
            attempt.failure = task
            break
        attempt.successes.append(task)
        attempt.segments.append((frames, task, ""))
        previous = task
    # The paraphrases are drawn after the chain, from the same generator.
    attempt.segments = [(frames, task, instruction_for(task, "train", rng)) for frames, task, _ in attempt.segments]
    encoder = text_encoder(args.text_encoder)
    attempt.embeddings = [encoder.encode([instruction]) for _, _, instruction in attempt.segments]
    return attempt


def write_episode(writer: CalvinDatasetWriter, scene: str, attempt: Attempt) -> int:
    """Write an attempt's successful segments as one episode; the number of frames written."""
    writer.start_episode(f"calvin_scene_{scene}")
    frames_written = 0
    for (frames, task, instruction), emb in zip(attempt.segments, attempt.embeddings, strict=True):
        first = writer.next_frame_id
        for frame in frames:
            last = writer.add_frame(**frame)
        writer.add_annotation(max(first, last - MAX_WINDOW + 1), last, instruction, task, emb=emb)
        frames_written += len(frames)
    writer.end_episode()
    return frames_written


def content_config(args: Args, scenes: tuple[str, ...], episodes: int) -> dict:
    """The arguments that decide a split's content: a resume must use the same ones."""
    # The backend is recorded only when it is not the embedded default, so collections written
    # before the option existed still resume.
    backend = {} if args.backend == "embedded" else {"backend": args.backend}
    backend |= {"depth": True} if args.depth else {}
    return {**backend, "scenes": list(scenes), "episodes": episodes, "seed": args.seed, "noise": args.noise,
            "tasks_per_episode": list(args.tasks_per_episode), "static_size": args.static_size,
            "gripper_size": args.gripper_size, "compress": args.compress, "text_encoder": args.text_encoder}


class SplitProgress:
    """``<split>/collection_progress.json``: how many attempts of a split are done, and their counts.

    Resume is keyed to attempts, not episodes: an attempt whose first task failed writes no
    episode, so the episode count alone cannot tell where to go on. The file is replaced after
    every attempt. For an attempt that writes an episode it is replaced *before* the episode's
    commit (``ep_start_end_ids.npy``) and keeps the state before the attempt, so whichever of the
    two a kill interrupts, the episode count on disk says which state holds.
    """

    FILE = "collection_progress.json"

    def __init__(self, split_dir: Path, config: dict, episodes_on_disk: int) -> None:
        self.path = split_dir / self.FILE
        self.config = config
        self.attempts, self.episodes, self.counts = 0, 0, Counts()
        if self.path.is_file():
            saved = json.loads(self.path.read_text())
            if saved["config"] != config:
                differ = sorted(k for k in config if saved["config"].get(k) != config[k])
                raise ValueError(
                    f"{split_dir} was collected with other arguments ({', '.join(differ)}: "
                    f"{[saved['config'].get(k) for k in differ]} there, {[config[k] for k in differ]} now); "
                    "re-run with the same arguments to resume, or choose another --output"
                )
            states = [saved["state"]] + ([saved["before"]] if saved.get("before") else [])
            state = next((st for st in states if st["episodes"] == episodes_on_disk), None)
            if state is None:
                raise ValueError(
                    f"{split_dir} holds {episodes_on_disk} episodes but {self.path.name} records "
                    f"{saved['state']['episodes']}: it was changed by something else than this script; "
                    "choose another --output"
                )
            self.attempts, self.episodes, self.counts = state["attempts"], state["episodes"], Counts(**state["counts"])
        elif episodes_on_disk:
            raise ValueError(
                f"{split_dir} already holds {episodes_on_disk} episodes but no {self.FILE}, so where "
                "to resume is unknown (written by another tool or an older collect_demos.py); "
                "choose another --output"
            )

    def _state(self) -> dict:
        return {"attempts": self.attempts, "episodes": self.episodes, "counts": asdict(self.counts)}

    def record(self, attempt: Attempt, writes_episode: bool) -> None:
        """Count an attempt (before its episode, if any, is written) and save the file."""
        before = self._state() if writes_episode else None
        self.attempts += 1
        self.episodes += int(writes_episode)
        counts = self.counts
        for task in attempt.successes:
            counts.successes += 1
            counts.successes_by_task[task] = counts.successes_by_task.get(task, 0) + 1
        if attempt.failure is not None:
            counts.failures += 1
            counts.failures_by_task[attempt.failure] = counts.failures_by_task.get(attempt.failure, 0) + 1
        if writes_episode:
            counts.episodes += 1
            counts.frames += sum(len(frames) for frames, _, _ in attempt.segments)
        atomic_write_text(self.path, json.dumps(
            {"config": self.config, "state": self._state(), "before": before}, indent=1))


def collect_split(split: str, scenes: tuple[str, ...], episodes: int, args: Args, split_index: int,
                  progress: tqdm, totals: Counts) -> Counts:
    """Collect (or finish collecting) one split, scene after scene; its counts over all runs."""
    sizes = {"static": (args.static_size, args.static_size), "gripper": (args.gripper_size, args.gripper_size)}
    per_scene = np.array_split(np.arange(episodes), len(scenes))
    encoder = text_encoder(args.text_encoder)
    with CalvinDatasetWriter(args.output, split, image_sizes=sizes, compress=args.compress,
                             lang_folders=lang_folders_of(args)) as writer:
        state = SplitProgress(writer.path, content_config(args, scenes, episodes), len(writer.episodes))
        totals.successes += state.counts.successes
        totals.failures += state.counts.failures
        progress.update(state.attempts)
        for scene, indices in zip(scenes, per_scene):
            todo = [int(i) for i in indices if i >= state.attempts]
            if not todo:
                continue
            env = gym.make("RFTF-CALVIN-v0", backend=args.backend, scene=scene, obs_mode="rgb+state",
                           static_size=args.static_size, gripper_size=args.gripper_size, depth=args.depth)
            for i in todo:
                seed = int(np.random.SeedSequence([args.seed, split_index, i]).generate_state(1)[0])
                attempt = play_episode(env, seed, args)
                state.record(attempt, writes_episode=bool(attempt.segments))
                if attempt.segments:
                    write_episode(writer, scene, attempt)
                totals.successes += len(attempt.successes)
                totals.failures += int(attempt.failure is not None)
                progress.update(1)
                progress.set_postfix(ok=totals.successes, failed=totals.failures)
            env.close()
        finish_split(writer, split, encoder, scenes[-1], sizes)
    return state.counts


def finish_split(writer: CalvinDatasetWriter, split: str, encoder: TextEncoder, scene: str,
                 image_sizes: dict[str, tuple[int, int]]) -> None:
    """The files CALVIN's own training and evaluation code read besides the frames.

    ``statistics.yaml`` in every split (normalisation and action bounds, read by
    ``load_dataset_statistics``) and, in the validation split, ``embeddings.npy`` with the
    evaluation sentence of each task (read by the official rollouts to condition the policy) and
    ``.hydra/merged_config.yaml`` (the simulator configuration of ``scene`` with the collected
    cameras, read by the official evaluation's ``get_env``). Rewritten at the end of every run, so
    a resumed collection ends with the same files.
    """
    if writer.episodes:
        write_statistics(CalvinDataset(writer.path.parent, split, check_files=False, lang_folder=None))
    if split == "validation":
        writer.write_eval_embeddings({
            task: TaskEmbeddings((sentence,), encoder.encode([sentence])[:, None, :])
            for task, sentence in EVAL_INSTRUCTIONS.items()
        })
        write_render_config(writer.path, scene, image_sizes)


def lang_folders_of(args: Args) -> tuple[str, str]:
    """The language folders written: CALVIN's default one and one named after the encoder."""
    return (LANG_FOLDER, f"lang_{text_encoder(args.text_encoder).name}")


def splits_of(args: Args) -> list[tuple[str, tuple[str, ...], int]]:
    """(split, scenes, episodes) of each split to collect."""
    splits = [("training", tuple(args.train_scenes), args.train_episodes), ("validation", (args.val_scene,), args.val_episodes)]
    return [split for split in splits if split[2] > 0]


def check_args(args: Args) -> None:
    """Refuse bad arguments, and a dataset collected with other ones, before collecting anything.

    Raises:
        ValueError: an argument out of range, or a split collected with other arguments.
        NotADirectoryError: ``--output`` is a file.
    """
    cli.check_output_dir(args.output, "--output")
    text_encoder(args.text_encoder)  # an unknown name raises ValueError
    if not args.train_scenes:
        raise ValueError("--train-scenes needs at least one scene")
    if args.train_episodes < 0 or args.val_episodes < 0:
        raise ValueError("--train-episodes and --val-episodes must be >= 0")
    low, high = args.tasks_per_episode
    if not 1 <= low <= high:
        raise ValueError(f"--tasks-per-episode must be two numbers 1 <= low <= high, got {low} {high}")
    if args.noise < 0:
        raise ValueError(f"--noise must be >= 0, got {args.noise}")
    for name in ("static_size", "gripper_size"):
        if not 8 <= getattr(args, name) <= 1024:
            raise ValueError(f"--{name.replace('_', '-')} must be in [8, 1024], got {getattr(args, name)}")
    for split, scenes, episodes in splits_of(args):
        sizes = {"static": (args.static_size,) * 2, "gripper": (args.gripper_size,) * 2}
        with CalvinDatasetWriter(args.output, split, image_sizes=sizes, compress=args.compress,
                                 lang_folders=lang_folders_of(args)) as writer:
            SplitProgress(writer.path, content_config(args, scenes, episodes), len(writer.episodes))


def collect(args: Args) -> dict:
    """Collect (or finish collecting) both splits; the summary, also saved as collection_summary.json."""
    start = time.perf_counter()
    summary: dict = {}
    totals = Counts()
    with tqdm(total=args.train_episodes + args.val_episodes, desc="episodes") as progress:
        for split, scenes, episodes in splits_of(args):
            index = ("training", "validation").index(split)
            summary[split] = asdict(collect_split(split, scenes, episodes, args, index, progress, totals))
    summary["seconds_this_run"] = time.perf_counter() - start
    atomic_write_text(Path(args.output) / "collection_summary.json", json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, check it, collect and print the counts."""
    args = tyro.cli(Args, args=argv)
    cli.report_disk_errors(PROG)
    with cli.usage_errors(PROG):
        check_args(args)
    summary = collect(args)
    for split in ("training", "validation"):
        if split in summary:
            s = summary[split]
            print(f"{split}: {s['episodes']} episodes, {s['frames']} frames, {s['successes']} demonstrations, "
                  f"{s['failures']} failed attempts (not written) {s['failures_by_task']}")
    print(f"done in {summary['seconds_this_run']:.0f} s (this run; the counts include earlier interrupted runs)")


if __name__ == "__main__":
    main()
