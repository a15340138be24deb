"""RFTF fine-tuning cost: value-model overhead, update share, and the time of a 1000-episode run.

Runs short ``ppo_rftf.py`` trainings, ``--reward-mode dense`` and ``--reward-mode sparse``
alternately (dense, sparse, dense, sparse, ...) with the same seed and settings, so both see the
same machine load, and reads the timings each run logs to TensorBoard:

- value-model overhead: rollout time per env step, dense against sparse (wall clock and CPU time
  of the training process), and the share of the dense rollout spent inside the value model;
- update share: the PPO update's part of an iteration (rollout + update);
- a ~1000-episode fine-tune (the paper's budget, section 4.1.4): the measured seconds per episode
  (rollout + update) times 1000, with the mean episode length it was measured at (a policy that
  succeeds more often has shorter episodes); optionally the same for an image policy.

The numbers go to the ``ppo_rftf`` section of BENCHMARKS.md with the command and the machine load.

    python bench/ppo_rftf_bench.py --policy data/bc/state --value-model data/value/state
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from markdown_section import write_section  # noqa: E402

SECTION = "ppo_rftf"
IMAGE_SECTION = "ppo_rftf_image"
TIMES = ("rollout_time", "rollout_cpu_time", "value_time", "value_cpu_time", "update_time", "update_cpu_time",
         "rollout_steps")


@dataclass
class Args:
    policy: str = "data/bc/state"
    """the BC checkpoint (state variant) to fine-tune"""
    value_model: str = "data/value/state"
    """the value model checkpoint of the dense runs"""
    pairs: int = 2
    """dense/sparse run pairs, interleaved (0: skip them and measure only --image-policy, leaving the
    state-variant section as it is)"""
    episodes: int = 16
    """episodes per run"""
    episodes_per_iteration: int = 8
    """episodes per PPO update"""
    num_envs: int = 8
    """parallel environments (ppo_rftf.py's default)"""
    scenes: str = "ABC"
    """training scenes"""
    torch_threads: int = 1
    """torch threads of the training process (ppo_rftf.py --torch-threads)"""
    image_policy: str | None = None
    """optional image (rgb) BC checkpoint: one dense run of it for the image-variant estimate"""
    image_value_model: str | None = None
    """the value model of the image run (default: --value-model)"""
    image_episodes: int = 16
    """episodes of the image run"""
    benchmarks_file: str = str(ROOT / "BENCHMARKS.md")
    """the Markdown file whose ppo_rftf section is (re)written"""


def read_scalars(run_dir: Path) -> dict[str, np.ndarray]:
    """Every scalar of a TensorBoard run, by tag (one value per iteration)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: np.array([e.value for e in events.Scalars(tag)]) for tag in events.Tags()["scalars"]}


def train(args: Args, workdir: Path, name: str, policy: str, value_model: str | None, episodes: int) -> dict[str, float]:
    """One short ppo_rftf.py run; its summed timings and mean episode length."""
    # The run's working directory is a temporary one: checkpoint paths are made absolute first.
    policy = str(Path(policy).resolve())
    value_model = str(Path(value_model).resolve()) if value_model else None
    command = [
        sys.executable, str(ROOT / "ppo_rftf.py"), "--policy", policy, "--run-name", name,
        "--reward-mode", "dense" if value_model else "sparse", "--scenes", args.scenes,
        "--num-envs", str(args.num_envs), "--total-episodes", str(episodes),
        "--episodes-per-iteration", str(args.episodes_per_iteration), "--torch-threads", str(args.torch_threads),
        "--checkpoint-dir", str(workdir / "checkpoints"), "--save-every", "1000",
    ]
    if value_model:
        command += ["--value-model", value_model]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(command, cwd=workdir, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scalars = read_scalars(workdir / "runs" / name)
    out = {key: float(scalars[f"charts/{key}"].sum()) for key in TIMES}
    out["episode_length"] = float(scalars["rftf/episode_length"].mean())
    out["episodes"] = episodes
    return out


def per_step(runs: list[dict[str, float]], key: str) -> float:
    """Seconds per env step of ``key`` over a list of runs (total time / total steps)."""
    return sum(r[key] for r in runs) / sum(r["rollout_steps"] for r in runs)


def check_args(args: Args) -> None:
    """Raises ValueError naming the first bad argument."""
    if args.pairs < 0 or args.episodes < 1 or args.image_episodes < 1:
        raise ValueError(f"--pairs must be >= 0 and --episodes, --image-episodes >= 1, got {args.pairs}, "
                         f"{args.episodes}, {args.image_episodes}")
    if args.pairs == 0 and args.image_policy is None:
        raise ValueError("--pairs 0 measures only the image variant: give --image-policy")


def state_section(args: Args, dense: list[dict[str, float]], sparse: list[dict[str, float]], command: str,
                  load: tuple[float, float], minutes: float) -> str:
    """The state-variant section: value-model overhead, update share, 1000-episode time."""
    rows = []
    for clock, key in (("wall", "rollout_time"), ("CPU", "rollout_cpu_time")):
        d, s = per_step(dense, key), per_step(sparse, key)
        rows.append(f"| rollout ms per env step ({clock}) | {1000 * d:.2f} | {1000 * s:.2f} | {100 * (d / s - 1.0):+.1f} % | <= +15 % |")
    value_share = sum(r["value_cpu_time"] for r in dense) / sum(r["rollout_cpu_time"] for r in dense)
    update_share = {
        clock: sum(r[u] for r in dense) / sum(r[u] + r[ro] for r in dense)
        for clock, u, ro in (("wall", "update_time", "rollout_time"), ("CPU", "update_cpu_time", "rollout_cpu_time"))
    }
    seconds_per_episode = sum(r["rollout_time"] + r["update_time"] for r in dense) / sum(r["episodes"] for r in dense)
    cpu_per_episode = sum(r["rollout_cpu_time"] + r["update_cpu_time"] for r in dense) / sum(r["episodes"] for r in dense)
    length = np.mean([r["episode_length"] for r in dense])
    lines = [
        "## RFTF fine-tuning cost (`bench/ppo_rftf_bench.py`)",
        "",
        (f"`{command}`: {args.pairs} pairs of short `ppo_rftf.py` runs, dense and sparse alternately "
         f"({args.episodes} episodes each, {args.episodes_per_iteration} per update, {args.num_envs} envs, scenes "
         f"{args.scenes}, `--torch-threads {args.torch_threads}`), policy `{args.policy}`, value model "
         f"`{args.value_model}`. Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs; "
         f"load average {load[0]:.1f} before and {load[1]:.1f} after ({minutes:.0f} min). "
         "CPU times count the training process alone, so they move less with the load than wall times."),
        "",
        "| | dense | sparse | value-model overhead | target |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| value model's share of the dense rollout (CPU) | {100 * value_share:.1f} % | |",
        f"| update share of an iteration (wall) | {100 * update_share['wall']:.1f} % | <= 10 % |",
        f"| update share of an iteration (CPU) | {100 * update_share['CPU']:.1f} % | <= 10 % |",
        f"| mean episode length at which this was measured | {length:.0f} steps | |",
        f"| seconds per episode, state variant (wall, this load) | {seconds_per_episode:.2f} | |",
        f"| 1000 episodes, state variant, extrapolated (wall, this load) | {1000 * seconds_per_episode / 3600:.2f} h | <= 2 h |",
        f"| 1000 episodes, state variant, extrapolated (CPU time of the process) | {1000 * cpu_per_episode / 3600:.2f} h | |",
        "",
        ("1000-episode times are extrapolated from the short runs above (the episode length, and so "
         "the time, falls as the policy succeeds more often)."),
    ]
    return "\n".join(lines)


def image_section(args: Args, image: dict[str, float], command: str, load: tuple[float, float], minutes: float) -> str:
    """The image-variant section: one dense run of --image-policy, extrapolated to 1000 episodes."""
    value_model = args.image_value_model or args.value_model
    wall = (image["rollout_time"] + image["update_time"]) / image["episodes"]
    cpu = (image["rollout_cpu_time"] + image["update_cpu_time"]) / image["episodes"]
    steps = image["rollout_steps"]
    lines = [
        "### Image variant",
        "",
        (f"`{command}`: one dense `ppo_rftf.py` run of the image policy `{args.image_policy}` with the value model "
         f"`{value_model}` ({image['episodes']} episodes, {args.episodes_per_iteration} per update, {args.num_envs} "
         f"envs, scenes {args.scenes}, cameras rendered at ppo_rftf.py's defaults and resized by the models, "
         f"`--torch-threads {args.torch_threads}`). Machine: {platform.machine()}, {os.cpu_count()} cores shared "
         f"with other jobs; load average {load[0]:.1f} before and {load[1]:.1f} after ({minutes:.0f} min)."),
        "",
        "| measure | value |",
        "|---|---|",
        f"| mean episode length at which this was measured | {image['episode_length']:.0f} steps |",
        (f"| rollout ms per env step (wall / CPU) | {1000 * image['rollout_time'] / steps:.1f} / "
         f"{1000 * image['rollout_cpu_time'] / steps:.1f} |"),
        f"| value model's share of the rollout (CPU) | {100 * image['value_cpu_time'] / image['rollout_cpu_time']:.1f} % |",
        (f"| update share of an iteration (wall) | "
         f"{100 * image['update_time'] / (image['rollout_time'] + image['update_time']):.1f} % |"),
        f"| seconds per episode (wall, this load) | {wall:.2f} |",
        f"| 1000 episodes, extrapolated (wall, this load) | {1000 * wall / 3600:.2f} h |",
        f"| 1000 episodes, extrapolated (CPU time of the process) | {1000 * cpu / 3600:.2f} h |",
    ]
    return "\n".join(lines)


def main(args: Args) -> None:
    command = "python bench/ppo_rftf_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="ppo_bench_") as tmp:
        workdir = Path(tmp)
        if args.pairs:
            load_before, started = os.getloadavg()[0], time.time()
            dense, sparse = [], []
            for k in range(args.pairs):
                dense.append(train(args, workdir, f"dense_{k}", args.policy, args.value_model, args.episodes))
                sparse.append(train(args, workdir, f"sparse_{k}", args.policy, None, args.episodes))
            body = state_section(args, dense, sparse, command, (load_before, os.getloadavg()[0]),
                                 (time.time() - started) / 60)
            print(body)
            write_section(SECTION, body, Path(args.benchmarks_file))
        if args.image_policy:
            load_before, started = os.getloadavg()[0], time.time()
            image = train(args, workdir, "image", args.image_policy, args.image_value_model or args.value_model,
                          args.image_episodes)
            body = image_section(args, image, command, (load_before, os.getloadavg()[0]), (time.time() - started) / 60)
            print(body)
            write_section(IMAGE_SECTION, body, Path(args.benchmarks_file))


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        check_args(cli_args)
    except ValueError as error:
        sys.exit(f"ppo_rftf_bench.py: {error}")
    main(cli_args)
