"""CPU time per control step of the embedded backend: this working tree against an older commit.

Wall-clock steps/s move with the machine's load; process CPU time moves much less. This exports
``--base`` (any git ref of this repository) with ``git archive`` into a temporary folder and runs
the same measurement in fresh processes, alternating base and working tree for ``--rounds``
rounds, one process at a time. Each process times ``step`` + ``get_obs`` of scene D under seeded
random actions, with both cameras at the official sizes and without cameras, and reports the
median over 3 runs of CPU ms (``time.process_time``) and wall ms per control step. The medians over
rounds, their change, the load average before and after, and the share of steps where the robot
touches anything (contacts are what the physics step spends its extra time on) go to
BENCHMARKS.md between ``<!-- env_cpu_ab -->`` markers.

Usage: ``python bench/env_cpu_ab.py --base 4d78911 [--rounds 5]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from markdown_section import write_section

REPO = Path(__file__).resolve().parents[1]

# Runs inside each measured tree (only API both old and new trees have).
CHILD = """
import json, time
import numpy as np
from rftf_gym.conventions import IMAGE_HW
from rftf_gym.sim.play_table import EmbeddedPlayTable
out = {}
for label, cameras, steps in (("cameras", {n: (w, h) for n, (h, w) in IMAGE_HW.items()}, STEPS),
                              ("state", {}, 4 * STEPS)):
    env = EmbeddedPlayTable("D", cameras=cameras)
    cpu, wall = [], []
    for run in range(3):
        env.reset(rng=np.random.default_rng(run))
        env.get_obs()
        actions = np.random.default_rng(run).uniform(-1, 1, (steps, 7))
        actions[:, 6] = np.where(actions[:, 6] > 0, 1.0, -1.0)
        c0, w0 = time.process_time(), time.perf_counter()
        for a in actions:
            env.step(a)
            env.get_obs()
        cpu.append((time.process_time() - c0) / steps * 1e3)
        wall.append((time.perf_counter() - w0) / steps * 1e3)
    out[label] = {"cpu_ms": float(np.median(cpu)), "wall_ms": float(np.median(wall))}
    if not cameras:
        # Untimed: share of steps where the robot touches anything (contacts cost solver time).
        import pybullet as p
        env.reset(rng=np.random.default_rng(0))
        touching = 0
        for a in np.random.default_rng(0).uniform(-1, 1, (steps, 7)):
            env.step(np.r_[a[:6], 1.0 if a[6] > 0 else -1.0])
            touching += bool(p.getContactPoints(bodyA=env.robot.uid, physicsClientId=env.client))
        out[label]["robot_contact_share"] = touching / steps
    env.close()
print("RESULT " + json.dumps(out))
"""


def measure(tree: Path, steps: int) -> dict:
    """One fresh process measuring the tree at ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD.replace("STEPS", str(steps))], cwd=tree, env=env,
                          capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"measuring {tree} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def export(ref: str, into: Path) -> str:
    """Write the tree of git ref ``ref`` into ``into``; return its short commit id."""
    commit = subprocess.run(["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True, text=True,
                            check=False)
    if commit.returncode != 0:
        raise SystemExit(f"--base {ref!r} is not a commit of {REPO}: {commit.stderr.strip()}")
    archive = into / "base.tar"
    subprocess.run(["git", "archive", "-o", str(archive), ref], cwd=REPO, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return commit.stdout.strip()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git ref to compare the working tree against")
    parser.add_argument("--rounds", type=int, default=5, help="alternating base/working-tree rounds")
    parser.add_argument("--steps", type=int, default=300, help="control steps per run with cameras (x4 without)")
    parser.add_argument("--output", default=str(REPO / "BENCHMARKS.md"), help="markdown file ('' prints only)")
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1:
        raise SystemExit("--rounds and --steps must be >= 1")

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    results: dict[str, list[dict]] = {"base": [], "head": []}
    load_before = os.getloadavg()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base_commit = export(args.base, Path(tmp))
        for r in range(args.rounds):
            for name, tree in (("base", Path(tmp) / "tree"), ("head", REPO)):
                results[name].append(measure(tree, args.steps))
                print(f"round {r + 1} {name}: {json.dumps(results[name][-1])}", flush=True)
    load_after = os.getloadavg()

    def med(name: str, label: str, key: str) -> float:
        return statistics.median(r[label][key] for r in results[name])

    lines = [
        "## Embedded env CPU time, against an older commit (`bench/env_cpu_ab.py`)",
        "",
        f"`python bench/env_cpu_ab.py --base {args.base} --rounds {args.rounds}`: base {base_commit}, working tree at "
        f"{head}; scene D, seeded random actions, step + get_obs, fresh process per measurement, base and working "
        f"tree alternating; median over rounds of each process's median of 3 runs. Load average (1, 5, 15 min) "
        f"{', '.join(f'{v:.2f}' for v in load_before)} before, {', '.join(f'{v:.2f}' for v in load_after)} after; "
        f"wall time {(time.perf_counter() - start) / 60:.1f} min.",
        "",
        "| measure | base | working tree | change |",
        "|---|---|---|---|",
    ]
    for label, title in (("cameras", "static 200x200 + gripper 84x84"), ("state", "no cameras")):
        for key, unit in (("cpu_ms", "CPU ms per step"), ("wall_ms", "wall ms per step")):
            b, h = med("base", label, key), med("head", label, key)
            lines.append(f"| {unit}, {title} | {b:.3f} | {h:.3f} | {100 * (h / b - 1):+.1f}% |")
        b, h = med("base", label, "cpu_ms"), med("head", label, "cpu_ms")
        lines.append(f"| steps per CPU second, {title} | {1000 / b:.0f} | {1000 / h:.0f} | "
                     f"{100 * (b / h - 1):+.1f}% |")
    b, h = (statistics.median(r["state"]["robot_contact_share"] for r in results[n]) for n in ("base", "head"))
    lines.append(f"| share of steps with the robot touching anything (no cameras, untimed) | {100 * b:.0f}% | "
                 f"{100 * h:.0f}% | |")
    text = "\n".join(lines)
    print(text)
    if args.output:
        write_section("env_cpu_ab", text, Path(args.output))
