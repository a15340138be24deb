"""What the demonstrations support: progress estimates that are not trained value models.

On the held-out split (scene D) of a demonstration set, the pairwise accuracy and VOC (the value
model's scores, `rftf_gym.value_metrics`) of two reference estimates of progress, to set the
trained value models of ``train_value.py`` against:

- ``final-state distance``: minus the distance of each frame to the same episode's last frame
  (the state where the task succeeded), over the whole normalised state or the tcp position
  alone. It knows where the episode ends, which no value model does; it shows how far progress
  is from "getting closer to the goal state" along these demonstrations.
- ``nearest neighbours``: per task, the k training frames (scenes A, B, C) nearest to each held-out
  frame vote the fraction of their window elapsed (0 at the window's first frame, 1 at success).
  Features: the absolute state (robot_obs, scene_obs), the difference from the window's first
  frame (`rftf_gym.value_model.context_difference`, what ``--context start`` adds), or both.
  Scene D lays its table out differently (calvin_env conf/scene/calvin_scene_D.yaml loads its
  own table), so absolute positions of the fixed furniture do not carry over; differences do.

Results are printed and written to BENCHMARKS.md between ``<!-- value_ceiling -->`` markers.

Usage: ``python bench/value_ceiling.py --data-root /work/data/demos``
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np
import torch

from rftf_gym import value_diagnostics as diag
from rftf_gym import value_metrics as vm
from rftf_gym.data import CalvinDataset
from rftf_gym.value_model import context_difference

from markdown_section import write_section

LAGS = (1, 4, 8, 16, 32)
FEATURES = ("absolute", "start difference", "both")


def frame_features(episode: diag.Episode, kind: str) -> np.ndarray:
    """(T, F) features of an episode's frames: absolute state, difference from its first frame, or both."""
    absolute = np.concatenate([episode.obs["robot_obs"], episode.obs["scene_obs"]], axis=1).astype(np.float64)
    if kind == "absolute":
        return absolute
    robot, scene = torch.as_tensor(episode.obs["robot_obs"]), torch.as_tensor(episode.obs["scene_obs"])
    diff = context_difference(robot, scene, robot[:1].expand_as(robot), scene[:1].expand_as(scene)).double().numpy()
    if kind == "start difference":
        return diff
    if kind == "both":
        return np.concatenate([absolute, diff], axis=1)
    raise ValueError(f"features must be one of {FEATURES}, got {kind!r}")


def knn_progress(train: Sequence[diag.Episode], queries: Sequence[diag.Episode], kind: str, k: int) -> list[np.ndarray | None]:
    """Per held-out episode, the mean elapsed fraction of its k nearest training frames of the same
    task (features scaled by their training std); None for a task without training episodes."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scale = np.concatenate([frame_features(e, kind) for e in train]).std(0) + 1e-3
    by_task: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for task in {e.task for e in train}:
        same = [e for e in train if e.task == task]
        by_task[task] = (
            np.concatenate([frame_features(e, kind) for e in same]) / scale,
            np.concatenate([np.arange(len(e)) / max(len(e) - 1, 1) for e in same]),
        )
    out: list[np.ndarray | None] = []
    for e in queries:
        if e.task not in by_task:
            out.append(None)
            continue
        x, y = by_task[e.task]
        q = frame_features(e, kind) / scale
        dist = ((q[:, None, :] - x[None]) ** 2).sum(-1)
        nearest = np.argsort(dist, axis=1, kind="stable")[:, : min(k, len(y))]
        out.append(y[nearest].mean(1))
    return out


def final_state_distance(episodes: Sequence[diag.Episode], scale: np.ndarray, tcp_only: bool) -> list[np.ndarray]:
    """Minus each frame's distance to its episode's last frame (normalised state, or tcp position)."""
    out = []
    for e in episodes:
        x = e.obs["robot_obs"][:, :3] if tcp_only else np.concatenate([e.obs["robot_obs"], e.obs["scene_obs"]], axis=1) / scale
        out.append(-np.linalg.norm(x - x[-1], axis=1))
    return out


def scores(values: Sequence[np.ndarray]) -> dict[str, float]:
    return {
        "pairwise_accuracy": vm.pairwise_accuracy(values),
        "voc": vm.mean_voc(values),
        **{f"lag_{lag}": vm.pairwise_accuracy_at_lag(values, lag) for lag in LAGS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="demos", help="dataset root with training and validation splits")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 20], help="neighbour counts")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    keys = ("robot_obs", "scene_obs")
    train = diag.demo_episodes(CalvinDataset(args.data_root, "training"), keys)
    val = diag.demo_episodes(CalvinDataset(args.data_root, "validation"), keys)
    scale = np.concatenate([np.concatenate([e.obs["robot_obs"], e.obs["scene_obs"]], axis=1) for e in train]).std(0) + 1e-3
    rows = [
        ("final-state distance (knows the end), whole state", "-", scores(final_state_distance(val, scale, False)), len(val)),
        ("final-state distance (knows the end), tcp position", "-", scores(final_state_distance(val, scale, True)), len(val)),
    ]
    for kind in FEATURES:
        for k in args.ks:
            values = [v for v in knn_progress(train, val, kind, k) if v is not None]
            rows.append((f"nearest neighbours, {kind}", str(k), scores(values), len(values)))
    load = os.getloadavg()
    lines = [
        f"`python bench/value_ceiling.py --data-root {args.data_root}`: {len(train)} training windows (scenes A, B, C), "
        f"{len(val)} held-out scene-D windows; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on "
        f"{os.cpu_count()} cores (times do not matter here). Reference progress estimates, not value models "
        "(module docstring); the trained models are in the Value model section.",
        "",
        "| estimate | k | episodes | pair acc | VOC | acc at lag 1 / 4 / 8 / 16 / 32 |",
        "|---|---|---|---|---|---|",
    ]
    for name, k, s, n in rows:
        lags = " / ".join(f"{s[f'lag_{lag}']:.3f}" for lag in LAGS)
        lines.append(f"| {name} | {k} | {n} | {s['pairwise_accuracy']:.3f} | {s['voc']:.3f} | {lags} |")
    body = "## What the default demonstrations support (`bench/value_ceiling.py`)\n\n" + "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("value_ceiling", body)


if __name__ == "__main__":
    main()
