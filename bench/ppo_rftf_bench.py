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
TIMES = ("rollout_time", "rollout_cpu_time", "value_time", "value_cpu_time", "update_time", "update_cpu_time",
         "rollout_steps")


@dataclass
class Args:
    policy: str = "data/bc/state"
    """the BC checkpoint (state variant) to fine-tune"""
    value_model: str = "data/value/state"
    """the value model checkpoint of the dense runs"""
    pairs: int = 2
    """dense/sparse run pairs, interleaved"""
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
    image_episodes: int = 8
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


def main(args: Args) -> None:
    load_before = os.getloadavg()[0]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="ppo_bench_") as tmp:
        workdir = Path(tmp)
        dense, sparse = [], []
        for k in range(args.pairs):
            dense.append(train(args, workdir, f"dense_{k}", args.policy, args.value_model, args.episodes))
            sparse.append(train(args, workdir, f"sparse_{k}", args.policy, None, args.episodes))
        image = None
        if args.image_policy:
            image = train(args, workdir, "image", args.image_policy, args.image_value_model or args.value_model,
                          args.image_episodes)
    load_after = os.getloadavg()[0]

    rows = []
    overhead = {}
    for clock, key in (("wall", "rollout_time"), ("CPU", "rollout_cpu_time")):
        d, s = per_step(dense, key), per_step(sparse, key)
        overhead[clock] = d / s - 1.0
        rows.append(f"| rollout ms per env step ({clock}) | {1000 * d:.2f} | {1000 * s:.2f} | {100 * overhead[clock]:+.1f} % | <= +15 % |")
    value_share = sum(r["value_cpu_time"] for r in dense) / sum(r["rollout_cpu_time"] for r in dense)
    update_share = {
        clock: sum(r[u] for r in dense) / sum(r[u] + r[ro] for r in dense)
        for clock, u, ro in (("wall", "update_time", "rollout_time"), ("CPU", "update_cpu_time", "rollout_cpu_time"))
    }
    seconds_per_episode = sum(r["rollout_time"] + r["update_time"] for r in dense) / sum(r["episodes"] for r in dense)
    cpu_per_episode = sum(r["rollout_cpu_time"] + r["update_cpu_time"] for r in dense) / sum(r["episodes"] for r in dense)
    length = np.mean([r["episode_length"] for r in dense])

    command = "python bench/ppo_rftf_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        "## RFTF fine-tuning cost (`bench/ppo_rftf_bench.py`)",
        "",
        f"`{command}`: {args.pairs} pairs of short `ppo_rftf.py` runs, dense and sparse alternately "
        f"({args.episodes} episodes each, {args.episodes_per_iteration} per update, {args.num_envs} envs, scenes "
        f"{args.scenes}, `--torch-threads {args.torch_threads}`), policy `{args.policy}`, value model "
        f"`{args.value_model}`. Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs; "
        f"load average {load_before:.1f} before and {load_after:.1f} after ({(time.time() - started) / 60:.0f} min). "
        "CPU times count the training process alone, so they move less with the load than wall times.",
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
    ]
    if image is not None:
        img = (image["rollout_time"] + image["update_time"]) / image["episodes"]
        lines.append(f"| 1000 episodes, image variant `{args.image_policy}`, extrapolated from {image['episodes']} "
                     f"episodes (wall, mean length {image['episode_length']:.0f}) | {1000 * img / 3600:.2f} h | |")
    lines.append("")
    lines.append("1000-episode times are extrapolated from the short runs above (the episode length, and so "
                 "the time, falls as the policy succeeds more often).")
    body = "\n".join(lines)
    print(body)
    write_section(SECTION, body, Path(args.benchmarks_file))


if __name__ == "__main__":
    main(tyro.cli(Args))
