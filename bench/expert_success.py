"""Success rate of every scripted expert in every scene.

For each (task, scene) the expert runs from ``--episodes`` seeded random start states where the
task's official condition holds (`rftf_gym.experts.reset_to_task`), with the env's 360-step cap,
state observations only (no cameras) and clean actions (no noise). The table goes to
``BENCHMARKS.md`` between ``<!-- expert_success -->`` markers; other sections are kept.

Run: ``python bench/expert_success.py --episodes 50 --workers 2``; ``--backend calvin`` runs the
same on the official simulator (calvin_env installed) into an ``expert_success_calvin`` section.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from markdown_section import write_section

from rftf_gym.backends import Backend
from rftf_gym.conventions import SCENES, Scene

SECTION = "expert_success"


@dataclass
class Args:
    episodes: int = 50
    """seeded valid start states per (task, scene)"""
    scenes: tuple[Scene, ...] = SCENES
    """scenes to measure"""
    tasks: tuple[str, ...] = ()
    """tasks to measure (empty: all 34)"""
    workers: int = 2
    """worker processes (one (task, scene) pair at a time each)"""
    seed: int = 0
    """base seed; each (task, scene) pair derives its own"""
    backend: Backend = "embedded"
    """simulator: "embedded", or "calvin" (the official calvin_env, one env per worker process)"""
    output: str = str(Path(__file__).resolve().parents[1] / "BENCHMARKS.md")
    """markdown file whose expert_success section is rewritten (empty: print only)"""


def run_pair(task: str, scene: str, episodes: int, seed: int, backend: str = "embedded") -> dict:
    """Run one expert from ``episodes`` start states; successes, steps and wall time."""
    import gymnasium as gym

    import rftf_gym  # noqa: F401  (registers the env)
    from rftf_gym.experts import make_expert, reset_to_task
    from rftf_gym.tasks import TASK_NAMES

    rng = np.random.default_rng([seed, TASK_NAMES.index(task), ord(scene)])
    env = gym.make("RFTF-CALVIN-v0", backend=backend, scene=scene, obs_mode="state")
    successes, steps, start, errors = 0, [], time.perf_counter(), []
    for _ in range(episodes):
        try:
            obs, _ = reset_to_task(env, task, rng)
            expert = make_expert(task, scene, rng)
            for t in range(1, 400):
                obs, _, terminated, truncated, info = env.step(expert.act(obs))
                if terminated or truncated:
                    break
        except (RuntimeError, ValueError, KeyError, IndexError) as err:
            # A start state that could not be drawn or an expert that crashed counts as a failure.
            errors.append(f"{type(err).__name__}: {err}")
            continue
        successes += bool(info["success"])
        if info["success"]:
            steps.append(t)
    env.close()
    return {"task": task, "scene": scene, "episodes": episodes, "successes": successes, "errors": errors,
            "mean_steps": float(np.mean(steps)) if steps else float("nan"), "seconds": time.perf_counter() - start}


def table(results: list[dict], scenes: tuple[str, ...], episodes: int, wall: float, backend: str = "embedded") -> str:
    """Markdown section: success per task and scene, means, steps and timing."""
    by = {(r["task"], r["scene"]): r for r in results}
    tasks = list(dict.fromkeys(r["task"] for r in results))
    where = "" if backend == "embedded" else f" --backend {backend}"
    lines = ["## Scripted expert success" + ("" if backend == "embedded" else f" ({backend} backend)"), "",
             f"`python bench/expert_success.py --episodes {episodes}{where}`: {episodes} seeded valid start states per "
             f"(task, scene), state observations, no action noise, 360-step cap. Wall time {wall / 60:.1f} min.", "",
             "| task | " + " | ".join(scenes) + " | mean steps |", "|---" * (len(scenes) + 2) + "|"]
    for task in tasks:
        cells = [f"{100 * by[(task, s)]['successes'] / by[(task, s)]['episodes']:.0f}%" for s in scenes]
        finite = [by[(task, s)]["mean_steps"] for s in scenes if np.isfinite(by[(task, s)]["mean_steps"])]
        mean_steps = f"{np.mean(finite):.0f}" if finite else "-"
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {mean_steps} |")
    per_scene = [np.mean([by[(t, s)]["successes"] / by[(t, s)]["episodes"] for t in tasks]) for s in scenes]
    overall = np.mean([r["successes"] / r["episodes"] for r in results])
    lines.append("| **mean** | " + " | ".join(f"**{100 * v:.1f}%**" for v in per_scene) + " | |")
    worst = min(results, key=lambda r: r["successes"] / r["episodes"])
    n_ep = sum(r["episodes"] for r in results)
    lines += ["", f"Overall mean {100 * overall:.1f}%; lowest {worst['task']} in {worst['scene']} "
              f"{100 * worst['successes'] / worst['episodes']:.0f}%. "
              f"{sum(r['seconds'] for r in results) / n_ep:.2f} s per episode per core "
              "(start state included)."]
    return "\n".join(lines)


if __name__ == "__main__":
    args = tyro.cli(Args)
    from rftf_gym.tasks import TASK_NAMES

    tasks = args.tasks or TASK_NAMES
    pairs = [(t, s) for t in tasks for s in args.scenes]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run_pair, t, s, args.episodes, args.seed, args.backend) for t, s in pairs]
        results = []
        for fut in futures:
            r = fut.result()
            results.append(r)
            print(f"{r['task']:28s} {r['scene']} {r['successes']:3d}/{r['episodes']}  "
                  f"steps {r['mean_steps']:.0f}  {r['seconds']:.0f}s", flush=True)
    text = table(results, args.scenes, args.episodes, time.perf_counter() - start, args.backend)
    print(text)
    if args.output:
        # The official backend's numbers get their own section next to the embedded ones.
        write_section(SECTION if args.backend == "embedded" else f"{SECTION}_{args.backend}", text, Path(args.output))
