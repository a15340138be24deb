"""Chained-evaluation throughput: env steps per second, cameras on (rgb+state) and state only.

Runs the random policy over the first few official chains with ``evaluate.py``'s own rollout
(``evaluate_sequence``) in one process, and writes the numbers to the ``eval_throughput`` section
of BENCHMARKS.md (the rest of the file is left alone).

    python bench/eval_throughput.py --chains 3
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from markdown_section import write_section  # noqa: E402

import evaluate  # noqa: E402  (the script's rollout, so the benchmark measures what it runs)
from rftf_gym import policies, sequences  # noqa: E402
from rftf_gym.backends import Backend  # noqa: E402
from rftf_gym.conventions import Scene  # noqa: E402

SECTION = "eval_throughput"


@dataclass
class Args:
    chains: int = 3
    """chains per observation mode (the random policy fails the first instruction: 360 steps each)"""
    backend: Backend = "embedded"
    """simulator backend"""
    scene: Scene = "D"
    """CALVIN scene"""
    benchmarks_file: str = str(ROOT / "BENCHMARKS.md")
    """the Markdown file whose eval_throughput section is (re)written"""


def measure(args: Args, obs_mode: str) -> dict[str, float]:
    """Env steps per wall-clock second and per CPU second (less sensitive to other jobs on the
    machine) of the chained rollout in one process, and the env construction time."""
    eval_args = evaluate.Args(backend=args.backend, scene=args.scene, obs_mode=obs_mode)
    start = time.perf_counter()
    env = evaluate.make_env(eval_args)
    build_s = time.perf_counter() - start
    policy = policies.RandomPolicy(seed=0)
    steps = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for index, (initial_state, chain) in enumerate(sequences.get_sequences(1000)[: args.chains]):
        _, used = evaluate.evaluate_sequence(env, policy, initial_state, chain, evaluate.chain_seed(0, index), None)
        steps += sum(used)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    env.close()
    return {"steps": steps, "seconds": elapsed, "sps": steps / elapsed, "cpu_sps": steps / cpu, "build_s": build_s}


if __name__ == "__main__":
    args = tyro.cli(Args)
    rows, load = [], os.getloadavg()[0]
    for obs_mode in ("rgb+state", "state"):
        result = measure(args, obs_mode)
        print(f"{obs_mode:>10}: {result['sps']:.0f} steps/s wall, {result['cpu_sps']:.0f} per CPU second")
        cells = [f"{result['sps']:.0f}", f"{result['cpu_sps']:.0f}", str(result["steps"]), f"{result['build_s']:.2f}"]
        rows.append(f"| {obs_mode} | " + " | ".join(cells) + " |")
    # The official chains, generated without the module's cache (the project's target: under 10 s).
    chain_times = []
    for _ in range(3):
        start = time.perf_counter()
        sequences._sequences.__wrapped__(1000)
        chain_times.append(time.perf_counter() - start)
    chain_s = sorted(chain_times)[1]
    print(f"get_sequences(1000), uncached: {chain_s:.1f} s (median of 3)")
    body = "\n".join(
        [
            "## Chained evaluation throughput (`bench/eval_throughput.py`)",
            "",
            f"Random policy, first {args.chains} official chains, backend `{args.backend}`, scene {args.scene}, "
            f"one process on {platform.machine()} ({os.cpu_count()} cores), Python {platform.python_version()}. "
            "Cameras on = static 200x200 + gripper 84x84 rendered every step (pybullet TinyRenderer). "
            "Multiply by the worker count for `evaluate.py --num-workers N` (one process per core). "
            f"Load average when started: {load:.1f}.",
            "",
            "| obs mode | env steps/s (wall) | env steps/s (CPU time) | steps | env build (s) |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"Generating the official 1000 chains (`rftf_gym.sequences.get_sequences(1000)`, uncached): "
            f"{chain_s:.1f} s, median of 3 (target < 10 s; the official generator took about a minute here).",
        ]
    )
    write_section(SECTION, body, Path(args.benchmarks_file))
