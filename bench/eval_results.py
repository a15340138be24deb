"""Reference results of the CALVIN chained evaluation: the scripted experts and a random policy.

Runs ``evaluate.py`` (the official 1000 chains by default, scene D, embedded backend, state
observations) once per policy, times each run and writes their L1..L5 and Avg. Len. with 95 %
bootstrap intervals to BENCHMARKS.md between ``<!-- eval_results -->`` markers. The results of
each run stay in ``results/bench_eval_<policy>/`` (re-running resumes finished chains, so delete
that folder for a fresh timing).

Usage: ``python bench/eval_results.py [--num-chains 1000] [--random-chains 1000] [--num-workers 2]``
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro
from markdown_section import write_section

from rftf_gym.conventions import NUM_SEQUENCES, Scene

ROOT = Path(__file__).resolve().parents[1]
SECTION = "eval_results"


@dataclass
class Args:
    num_chains: int = NUM_SEQUENCES
    """chains for the expert policy (official: 1000)"""
    random_chains: int = 1000
    """chains for the random policy"""
    num_workers: int = 2
    """evaluate.py worker processes"""
    scene: Scene = "D"
    """CALVIN scene"""


def run(policy: str, chains: int, args: Args) -> tuple[dict, float]:
    """Run evaluate.py for one policy; its metrics.json and the wall time of the command."""
    out = ROOT / "results" / f"bench_eval_{policy}"
    cmd = [sys.executable, str(ROOT / "evaluate.py"), "--policy", policy, "--num-chains", str(chains),
           "--scene", args.scene, "--obs-mode", "state", "--num-workers", str(args.num_workers),
           "--output-dir", str(out)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - start


def row(policy: str, metrics: dict, seconds: float) -> str:
    """One markdown table row: L1..L5 and Avg. Len. with their intervals, chains, wall time."""
    def fmt(entry: dict, scale: float, digits: int) -> str:
        lo, hi = entry["ci"]
        return f"{scale * entry['value']:.{digits}f} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"

    cells = [fmt(metrics["chain_sr"][str(i)], 100, 1) for i in range(1, 6)]
    return (f"| {policy} | " + " | ".join(cells) + f" | **{fmt(metrics['avg_len'], 1, 3)}** | "
            f"{metrics['num_chains']} | {seconds / 60:.1f} min |")


if __name__ == "__main__":
    args = tyro.cli(Args)
    rows = [row(policy, *run(policy, chains, args))
            for policy, chains in (("expert", args.num_chains), ("random", args.random_chains))]
    body = "\n".join([
        "## Chained evaluation reference results (`bench/eval_results.py`)",
        "",
        f"`evaluate.py --obs-mode state --num-workers {args.num_workers}`, scene {args.scene}, embedded backend, "
        f"official chains; {platform.machine()} with {os.cpu_count()} cores. Percent of chains with at least "
        "i successes in a row, 95 % bootstrap intervals over chains; wall time of the whole command.",
        "",
        "| policy | L1 | L2 | L3 | L4 | L5 | Avg. Len. | chains | wall time |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    print(body)
    write_section(SECTION, body)
