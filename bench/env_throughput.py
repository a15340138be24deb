"""Control steps per second of one embedded env process, with both cameras and without.

Measures the `EmbeddedPlayTable` backend directly and, when `rftf_gym.env` registers
``RFTF-CALVIN-v0``, the Gymnasium env too, and the time of a physics step and of each camera's
render. Each figure is the median of 5 runs. The project's targets on a 2-core CPU: >= 150 steps/s
with both cameras at official sizes (the official calvin_env measured 17.5), >= 1200 steps/s
without cameras (official ~680). Results are printed and written to BENCHMARKS.md between
``<!-- env_throughput -->`` markers (the rest of the file is kept).

Usage: ``python bench/env_throughput.py [--steps 300] [--runs 5]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from rftf_gym.conventions import IMAGE_HW
from rftf_gym.sim.play_table import EmbeddedPlayTable

# Both cameras at the official sizes, as the backend's camera name -> (width, height).
OFFICIAL_CAMERAS = {name: (width, height) for name, (height, width) in IMAGE_HW.items()}

MARK_BEGIN, MARK_END = "<!-- env_throughput -->", "<!-- /env_throughput -->"
BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def _random_actions(n: int, seed: int) -> np.ndarray:
    actions = np.random.default_rng(seed).uniform(-1, 1, (n, 7))
    actions[:, 6] = np.where(actions[:, 6] > 0, 1.0, -1.0)
    return actions


def backend_steps_per_s(cameras: dict[str, tuple[int, int]], steps: int, runs: int) -> tuple[float, float]:
    """Median control steps (step + get_obs) of the backend per wall second and per CPU second of
    this process (which moves less with the machine's load), over `runs` runs."""
    env = EmbeddedPlayTable("D", cameras=cameras)
    rates, cpu_rates = [], []
    for run in range(runs):
        env.reset(rng=np.random.default_rng(run))
        env.get_obs()  # builds the cameras outside the timing
        actions = _random_actions(steps, run)
        start, cpu_start = time.perf_counter(), time.process_time()
        for a in actions:
            env.step(a)
            env.get_obs()
        rates.append(steps / (time.perf_counter() - start))
        cpu_rates.append(steps / (time.process_time() - cpu_start))
    env.close()
    return statistics.median(rates), statistics.median(cpu_rates)


def phase_ms(steps: int, runs: int) -> dict[str, float]:
    """Median time in ms of one physics step and of each camera's render, both cameras on."""
    env = EmbeddedPlayTable("D", cameras=dict(OFFICIAL_CAMERAS))
    times: dict[str, list[float]] = {"step": [], "static": [], "gripper": []}
    for run in range(runs):
        env.reset(rng=np.random.default_rng(run))
        env.get_obs()
        for a in _random_actions(steps, run):
            start = time.perf_counter()
            env.step(a)
            times["step"].append(time.perf_counter() - start)
            for camera in ("static", "gripper"):
                start = time.perf_counter()
                env.render(camera)
                times[camera].append(time.perf_counter() - start)
    env.close()
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def reset_ms(runs: int) -> tuple[float, float]:
    """Median time in ms of a random-layout reset and of an explicit-state reset (+ get_obs)."""
    env = EmbeddedPlayTable("D", cameras=dict(OFFICIAL_CAMERAS))
    env.reset(rng=np.random.default_rng(0))
    state = env.get_obs()
    rand, explicit = [], []
    for k in range(runs * 10):
        start = time.perf_counter()
        env.reset(rng=np.random.default_rng(k))
        env.get_obs()
        rand.append(time.perf_counter() - start)
        start = time.perf_counter()
        env.reset(robot_obs=state["robot_obs"], scene_obs=state["scene_obs"])
        env.get_obs()
        explicit.append(time.perf_counter() - start)
    env.close()
    return 1000 * statistics.median(rand), 1000 * statistics.median(explicit)


def gym_steps_per_s(obs_mode: str, steps: int, runs: int) -> tuple[float, float] | None:
    """Median steps per wall second and per CPU second of this process through gym.make, or None
    while the env is not registered yet."""
    try:
        import gymnasium as gym

        import rftf_gym  # noqa: F401  (registers the env ids)

        env = gym.make("RFTF-CALVIN-v0", backend="embedded", scene="D", obs_mode=obs_mode)
    except Exception:  # the Gymnasium env is written in parallel; measure it once it exists
        return None
    rates, cpu_rates = [], []
    for run in range(runs):
        env.reset(seed=run)
        start, cpu_start, done = time.perf_counter(), time.process_time(), 0
        for a in _random_actions(steps, run):
            _, _, terminated, truncated, _ = env.step(a)
            done += 1
            if terminated or truncated:
                env.reset()
        rates.append(done / (time.perf_counter() - start))
        cpu_rates.append(done / (time.process_time() - cpu_start))
    env.close()
    return statistics.median(rates), statistics.median(cpu_rates)


def write_section(lines: list[str]) -> None:
    """Replace (or append) this benchmark's section of BENCHMARKS.md."""
    section = "\n".join([MARK_BEGIN, *lines, MARK_END])
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + section + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    BENCHMARKS.write_text(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="control steps per run")
    parser.add_argument("--runs", type=int, default=5, help="runs; the median is reported")
    args = parser.parse_args()

    load_before = os.getloadavg()
    cams, cams_cpu = backend_steps_per_s(dict(OFFICIAL_CAMERAS), args.steps, args.runs)
    state, state_cpu = backend_steps_per_s({}, args.steps * 4, args.runs)
    phases = phase_ms(args.steps, args.runs)
    reset_random, reset_explicit = reset_ms(args.runs)
    gym_rgb = gym_steps_per_s("rgb+state", args.steps, args.runs)
    gym_state = gym_steps_per_s("state", args.steps * 4, args.runs)
    load_after = os.getloadavg()

    def fmt(v: tuple[float, float] | None, cpu: bool = False) -> str:
        return "not measured (env not registered)" if v is None else f"{v[int(cpu)]:.0f}"

    lines = [
        "## Embedded env throughput (`bench/env_throughput.py`)",
        "",
        f"One process, scene D, random actions, median of {args.runs} runs; {platform.processor() or 'cpu'}, "
        f"{platform.python_version()}; load average (1, 5, 15 min) {', '.join(f'{v:.2f}' for v in load_before)} "
        f"before, {', '.join(f'{v:.2f}' for v in load_after)} after ({os.cpu_count()} cores). Steps per CPU second "
        "count this process's CPU time only and move much less with the load than the wall-clock figures.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| backend steps/s, static 200x200 + gripper 84x84 | {cams:.0f} | >= 150 (official 17.5) |",
        f"| backend steps per CPU second, static 200x200 + gripper 84x84 | {cams_cpu:.0f} | |",
        f"| backend steps/s, no cameras | {state:.0f} | >= 1200 (official ~680) |",
        f"| backend steps per CPU second, no cameras | {state_cpu:.0f} | |",
        f"| gym.make steps/s, obs_mode rgb+state | {fmt(gym_rgb)} | >= 150 |",
        f"| gym.make steps per CPU second, obs_mode rgb+state | {fmt(gym_rgb, cpu=True)} | |",
        f"| gym.make steps/s, obs_mode state | {fmt(gym_state)} | >= 1200 |",
        f"| gym.make steps per CPU second, obs_mode state | {fmt(gym_state, cpu=True)} | |",
        f"| physics step (8 substeps) + lights (ms) | {phases['step']:.2f} | |",
        f"| static camera render, 200x200 (ms) | {phases['static']:.2f} | |",
        f"| gripper camera render, 84x84 (ms) | {phases['gripper']:.2f} | |",
        f"| reset to a random layout + get_obs (ms) | {reset_random:.2f} | |",
        f"| reset to an explicit state + get_obs (ms) | {reset_explicit:.2f} | |",
    ]
    print("\n".join(lines))
    write_section(lines)
