"""Evidence that a value model tracks task progress rather than elapsed time.

A ranking loss on successful demonstrations alone (RFTF, arXiv 2505.19767, section 3.2, Eq. 1) is
also minimised by a clock: any model whose value grows with time scores VOC 1 on successes. So a
value model is scored on episode sets where a clock fails:

- ``demos``: held-out successful demonstrations (the language windows of a split); values must
  rise (pairwise accuracy as RFTF's Fig. 5, and VOC);
- ``reversed``: the same demonstrations played backwards; values must fall (VOC near -1);
- ``wrong_instruction``: the same frames under the instruction of another task; values must not
  rise (VOC near 0) and should sit below those under the right instruction;
- ``rollouts``: episodes of a policy (the BC policy, as RFTF's Fig. 6) from the env's reset,
  split into successes and failures; failures must rise less, and at the same time step a
  success should score above a failure of the same task (``same_time_accuracy``), as should its
  final value (``final_value_auc``).

The clock V = t / 360 (CALVIN's per-instruction step cap) is scored on the same sets.

A value function here is one observation to one value (the contract of the reward wrapper:
``value_fn(obs, instructions) -> (B,)``). For a model of one frame the values of a reversed clip
are exactly the clip's values in reverse order; they are computed that way instead of by a
second forward pass. A model conditioned on the instruction's start frame (``context="start"``,
`rftf_gym.value_model`) gets each episode's first frame with every frame; the reversed clip's
start is its own first frame (the demonstration's last), so its values are scored afresh. A model
of the recent frame (``context="recent"``) gets the frame k steps back (the episode's first frame
for t < k, as the env's reset observation would be), so it too is scored afresh on reversed clips.

Rollouts are cached, one ``.npz`` per episode (``allow_pickle=False``) next to a ``meta.json``
that must match the request, so a rerun (or the next epoch) reuses them and an interrupted
collection continues.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rftf_gym import value_metrics as vm
from rftf_gym.data import CalvinDataset

EPISODE_STEPS = 360
"""CALVIN's step cap per instruction (calvin_agent/evaluation, EP_LEN); the clock's horizon."""
IMAGE_KEYS = {"rgb_static": "static", "rgb_gripper": "gripper"}

ValueFn = Callable[[Mapping[str, np.ndarray], Sequence[str]], np.ndarray]


@dataclass
class Episode:
    """Frames of one instruction, in time order, with what was asked and whether it was done.

    Attributes:
        obs: key -> array (T, ...), e.g. ``robot_obs`` (T, 15) or ``rgb_static`` (T, H, W, 3).
        instruction: The sentence the values are conditioned on.
        task: The task the frames perform (for wrong-instruction episodes: the frames' task).
        success: Whether the frames end in the task's success.
        emb: Precomputed instruction embedding (a real CALVIN split's ``language.emb``) or None.
        meta: Free-form facts (source window, seed, ...).
    """

    obs: dict[str, np.ndarray]
    instruction: str
    task: str
    success: bool = True
    emb: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.obs.values())))


def resize_images(images: np.ndarray, size: tuple[int, int], chunk: int = 256) -> np.ndarray:
    """Resize uint8 images (T, H, W, 3) to (T, height, width, 3) exactly as the model's
    preprocessing does (`rftf_gym.models.resize_images`), so stored frames equal model inputs."""
    from rftf_gym.models import resize_images as model_resize

    height, width = size
    if height != width:
        raise ValueError(f"the model takes square images, got size {size}")
    if images.shape[1:3] == (height, width):
        return images
    parts = [model_resize(images[i : i + chunk], "images", height, torch.device("cpu")) for i in range(0, len(images), chunk)]
    return torch.cat(parts).permute(0, 2, 3, 1).numpy()


def _shrink(obs: dict[str, np.ndarray], image_sizes: Mapping[str, tuple[int, int]] | None) -> dict[str, np.ndarray]:
    if not image_sizes:
        return obs
    out = dict(obs)
    for key, camera in IMAGE_KEYS.items():
        if key in out and camera in image_sizes:
            out[key] = resize_images(out[key], tuple(image_sizes[camera]))
    return out


def demo_episodes(
    dataset: CalvinDataset,
    keys: Sequence[str],
    max_episodes: int | None = None,
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
    seed: int = 0,
    progress: bool = False,
    whole_segments: bool = False,
) -> list[Episode]:
    """The language windows of a split, each as a successful episode with all its frames.

    Args:
        dataset: The split.
        keys: Frame keys to read (e.g. ``("robot_obs", "scene_obs")``).
        max_episodes: Read this many windows, drawn without replacement with ``seed``; None
            reads all.
        image_sizes: (height, width) per camera to shrink images to while reading (keeps a whole
            split of images in memory); None keeps the stored size.
        seed: Seed of the subset draw.
        progress: Show a tqdm bar.
        whole_segments: Start each window where its instruction's segment starts: right after
            the previous window of the same episode ends, or at the episode's start. This fits
            data written as back-to-back instruction segments (``collect_demos.py``, whose
            windows are the last <= 64 frames of each segment), not CALVIN's sparse windows.

    Returns:
        Episodes in annotation order.
    """
    starts = [a.start for a in dataset.annotations]
    if whole_segments:
        starts = segment_starts(dataset)
    indices = np.arange(len(dataset.annotations))
    if max_episodes is not None and max_episodes < indices.size:
        indices = np.sort(np.random.default_rng(seed).choice(indices, size=max_episodes, replace=False))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"reading {dataset.path.name} windows", leave=False)
    episodes = []
    for i in indices:
        a = dataset.annotations[int(i)]
        obs = _shrink(dataset.load_frames(range(starts[int(i)], a.end + 1), keys), image_sizes)
        emb = dataset.language_emb[int(i)] if dataset.language_emb is not None else None
        episodes.append(Episode(obs, a.ann, a.task, True, emb, {"window": (a.start, a.end), "annotation": int(i)}))
    return episodes


def segment_starts(dataset: CalvinDataset) -> list[int]:
    """First frame of each annotation's instruction segment (see `demo_episodes`)."""
    ends_by_episode: dict[int, list[int]] = {}
    episode_of = []
    for a in dataset.annotations:
        e = int(np.searchsorted(dataset.episodes[:, 0], a.start, side="right")) - 1
        episode_of.append(e)
        ends_by_episode.setdefault(e, []).append(a.end)
    starts = []
    for a, e in zip(dataset.annotations, episode_of):
        earlier = [end for end in ends_by_episode[e] if end < a.start]
        starts.append(max(earlier) + 1 if earlier else int(dataset.episodes[e, 0]))
    return starts


def reversed_episodes(episodes: Sequence[Episode]) -> list[Episode]:
    """The same frames in reverse time order (a rewound clip: progress undone step by step)."""
    return [
        replace(e, obs={k: v[::-1].copy() for k, v in e.obs.items()}, success=False, meta={**e.meta, "reversed": True})
        for e in episodes
    ]


def wrong_instruction_episodes(episodes: Sequence[Episode], seed: int = 0) -> list[Episode]:
    """The same frames under the instruction (and embedding) of an episode of another task.

    Raises:
        ValueError: All episodes share one task, so no wrong instruction exists.
    """
    rng = np.random.default_rng(seed)
    out = []
    for e in episodes:
        others = [o for o in episodes if o.task != e.task]
        if not others:
            raise ValueError(f"every episode is of task {e.task!r}: no wrong instruction to give")
        o = others[int(rng.integers(len(others)))]
        out.append(replace(e, instruction=o.instruction, emb=o.emb, success=False, meta={**e.meta, "wrong_task": o.task}))
    return out


def opposite_instruction_episodes(episodes: Sequence[Episode], seed: int = 0) -> list[Episode]:
    """The frames of each episode whose task has an opposite (`rftf_gym.tasks.OPPOSITE_TASKS`)
    under the instruction (and embedding) of an episode of that opposite task: progress on one is
    the other's progress undone, so a value model must fall there, where a clock still rises.
    Episodes whose opposite task has no episode in ``episodes`` are left out."""
    from rftf_gym.tasks import OPPOSITE_TASKS

    rng = np.random.default_rng(seed)
    by_task: dict[str, list[Episode]] = {}
    for e in episodes:
        by_task.setdefault(e.task, []).append(e)
    out = []
    for e in episodes:
        pool = by_task.get(OPPOSITE_TASKS.get(e.task, ""), [])
        if pool:
            o = pool[int(rng.integers(len(pool)))]
            out.append(replace(e, instruction=o.instruction, emb=o.emb, success=False, meta={**e.meta, "wrong_task": o.task}))
    return out


# ----------------------------------------------------------------------------------------------
# Rollouts of a policy
# ----------------------------------------------------------------------------------------------
def _rollout_file(directory: Path, index: int) -> Path:
    return directory / f"rollout_{index:05d}.npz"


def _save_episode(path: Path, episode: Episode) -> None:
    arrays = {f"obs/{k}": v for k, v in episode.obs.items()}
    arrays.update(instruction=np.array(episode.instruction), task=np.array(episode.task), success=np.array(episode.success))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def _load_episode(path: Path, index: int) -> Episode:
    with np.load(path, allow_pickle=False) as z:
        obs = {k[4:]: z[k] for k in z.files if k.startswith("obs/")}
        return Episode(obs, str(z["instruction"]), str(z["task"]), bool(z["success"]), None, {"rollout": index})


def collect_rollouts(
    policy_spec: str,
    tasks: Sequence[str],
    episodes_per_task: int,
    keys: Sequence[str],
    cache_dir: str | Path,
    scene: str = "D",
    seed: int = 0,
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
    progress: bool = False,
) -> list[Episode]:
    """Run a policy for ``episodes_per_task`` episodes of each task and keep their frames.

    Each episode resets the env to a random layout where the task applies (seed ``seed + i``;
    tasks no random layout starts get the experts' constructed start,
    `rftf_gym.experts.reset_to_task`), with a training paraphrase of the instruction, and runs
    until success or the 360-step cap.
    The frames are the reset observation and the observation after every step.

    Args:
        policy_spec: ``"random"``, ``"expert"`` or a checkpoint directory (`load_policy`).
        tasks: Task names; episodes cycle through them.
        episodes_per_task: Episodes per task.
        keys: Observation keys to keep (images are shrunk to ``image_sizes``).
        cache_dir: Directory of the cached episodes; created if missing.
        scene: CALVIN scene.
        seed: Base seed of the env resets and the policy.
        image_sizes: (height, width) per camera to store images at; None keeps the env's size.
        progress: Show a tqdm bar.

    Returns:
        The episodes, in order.

    Raises:
        ValueError: The cache directory holds rollouts of a different request.
    """
    import gymnasium as gym

    import rftf_gym  # noqa: F401  (registers the env id)
    from rftf_gym.experts import needs_constructed_start, reset_to_task
    from rftf_gym.policies import load_policy

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    spec_path = Path(policy_spec)
    fingerprint = None
    if spec_path.is_dir():
        fingerprint = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in spec_path.iterdir() if p.is_file())
    meta = {
        "policy": policy_spec,
        "policy_files": fingerprint,
        "tasks": list(tasks),
        "episodes_per_task": int(episodes_per_task),
        "keys": sorted(keys),
        "scene": scene,
        "seed": int(seed),
        "image_sizes": {k: list(v) for k, v in (image_sizes or {}).items()} if any(k in IMAGE_KEYS for k in keys) else {},
    }
    meta_file = cache / "meta.json"
    if meta_file.exists():
        found = json.loads(meta_file.read_text())
        if found != json.loads(json.dumps(meta)):
            differ = sorted(k for k in set(meta) | set(found) if json.loads(json.dumps(meta)).get(k) != found.get(k))
            raise ValueError(f"{cache}: cached rollouts were collected with other settings ({', '.join(differ)} differ); use another directory")
    else:
        tmp = meta_file.with_name(".meta.json.tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, meta_file)

    total = len(tasks) * episodes_per_task
    needs_images = any(k in IMAGE_KEYS for k in keys)
    needs_state = any(k in ("robot_obs", "scene_obs") for k in keys)
    env = policy = None
    episodes = []
    indices = range(total)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"rollouts of {policy_spec}", leave=False)
    for i in indices:
        path = _rollout_file(cache, i)
        if path.exists():
            episodes.append(_load_episode(path, i))
            continue
        if env is None:
            policy = load_policy(policy_spec, scene=scene, seed=seed)
            policy_keys = set(getattr(policy, "required_obs", ())) | set(keys)
            images = needs_images or any(k in IMAGE_KEYS for k in policy_keys)
            state = (needs_state or any(k in ("robot_obs", "scene_obs") for k in policy_keys) or policy_spec == "expert"
                     or any(needs_constructed_start(t) for t in tasks))  # reset_to_task reads the state
            obs_mode = "rgb+state" if images and state else ("rgb" if images else "state")
            env = gym.make("RFTF-CALVIN-v0", scene=scene, obs_mode=obs_mode, instruction_split="train")
        task = tasks[i % len(tasks)]
        if hasattr(policy, "seed"):
            policy.seed(seed + i)
        policy.reset()
        if needs_constructed_start(task):
            # No random layout starts it (a block held, in the drawer, or stacked): the start
            # state is built as for the experts (a lift first, or an edited layout).
            obs, info = reset_to_task(env, task, np.random.default_rng([seed, i]))
        else:
            obs, info = env.reset(seed=seed + i, options={"task": task})
        frames = [{k: np.asarray(obs[k]) for k in keys}]
        success = False
        for _ in range(EPISODE_STEPS):
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info["instruction"]))
            frames.append({k: np.asarray(obs[k]) for k in keys})
            success = bool(info.get("success", False))
            if terminated or truncated:
                break
        stacked = _shrink({k: np.stack([f[k] for f in frames]) for k in keys}, image_sizes)
        episode = Episode(stacked, info["instruction"], task, success, None, {"rollout": i})
        _save_episode(path, episode)
        episodes.append(episode)
    if env is not None:
        env.close()
    return episodes


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------
def score_episodes(value_fn: ValueFn, episodes: Sequence[Episode], batch_size: int = 256) -> list[np.ndarray]:
    """Raw values of every frame of every episode, batching frames across episodes.

    An episode with ``emb`` passes it as ``obs["lang_emb"]`` (one row per frame) next to its
    instruction, for models that read precomputed embeddings.

    Returns:
        One float64 array (T,) per episode.
    """
    from rftf_gym.value_model import CONTEXT_KEYS, RECENT_PREFIX, START_PREFIX, value_context

    if hasattr(value_fn, "predict"):
        value_fn = value_fn.predict
    context = value_context(value_fn)
    start = context in ("start", "start+recent")
    lag = _recent_lag(value_fn) if context in ("recent", "start+recent") else 0
    rows = [(e, t) for e in episodes for t in range(len(e))]
    flat = np.empty(len(rows), dtype=np.float64)
    for lo in range(0, len(rows), batch_size):
        chunk = rows[lo : lo + batch_size]
        keys = chunk[0][0].obs.keys()
        obs = {k: np.stack([e.obs[k][t] for e, t in chunk]) for k in keys}
        if start:  # the frame where the episode's instruction started
            obs.update({START_PREFIX + k: np.stack([e.obs[k][0] for e, _ in chunk]) for k in keys if k in CONTEXT_KEYS})
        if lag:  # the frame lag steps back, the episode's first frame before that
            obs.update({RECENT_PREFIX + k: np.stack([e.obs[k][max(t - lag, 0)] for e, t in chunk]) for k in keys if k in CONTEXT_KEYS})
        if all(e.emb is not None for e, _ in chunk):
            obs["lang_emb"] = np.stack([e.emb for e, _ in chunk]).reshape(len(chunk), -1)
        values = np.asarray(value_fn(obs, [e.instruction for e, _ in chunk]), dtype=np.float64)
        if values.shape != (len(chunk),):
            raise ValueError(f"value_fn returned shape {values.shape} for a batch of {len(chunk)}")
        flat[lo : lo + len(chunk)] = values
    out, lo = [], 0
    for e in episodes:
        out.append(flat[lo : lo + len(e)])
        lo += len(e)
    return out


def _recent_lag(value_fn: Any) -> int:
    """The ``recent_lag`` of a recent-context value model (or of the object of its bound ``predict``)."""
    for obj in (value_fn, getattr(value_fn, "__self__", None)):
        lag = getattr(obj, "recent_lag", None)
        if lag is not None:
            return int(lag)
    raise ValueError("a value model of context 'recent' must say how far back its recent frame is (a recent_lag attribute)")


def _by_task(episodes: Sequence[Episode], values: Sequence[np.ndarray]) -> dict[str, list[tuple[Episode, np.ndarray]]]:
    groups: dict[str, list[tuple[Episode, np.ndarray]]] = {}
    for e, v in zip(episodes, values):
        groups.setdefault(e.task, []).append((e, v))
    return groups


def _success_failure_scores(episodes: Sequence[Episode], values: Sequence[np.ndarray]) -> dict[str, Any]:
    """Same-time accuracy and final-value AUC within each task, pooled over tasks."""
    correct, total, aucs, auc_tasks = 0.0, 0, [], []
    for task, items in sorted(_by_task(episodes, values).items()):
        succ = [v for e, v in items if e.success]
        fail = [v for e, v in items if not e.success]
        if not succ or not fail:
            continue
        acc, n = vm.same_time_accuracy(succ, fail)
        correct, total = correct + acc * n, total + n
        aucs.append(vm.roc_auc([s[-1] for s in succ], [f[-1] for f in fail]))
        auc_tasks.append(task)
    return {
        "same_time_accuracy": correct / total if total else None,
        "same_time_pairs": total,
        "final_value_auc": float(np.mean(aucs)) if aucs else None,
        "auc_tasks": auc_tasks,
    }


ACCURACY_LAGS = (1, 4, 8, 16, 32)
"""Frame lags of the per-lag pairwise accuracy of the demonstrations."""


def _voc_stats(values: Sequence[np.ndarray], lags: Sequence[int] = ()) -> dict[str, Any]:
    values = [v for v in values if v.size >= 2]
    if not values:
        return {"voc": None, "pairwise_accuracy": None, "net_progress": None, "episodes": 0}
    out = {"voc": vm.mean_voc(values), "pairwise_accuracy": vm.pairwise_accuracy(values), "net_progress": vm.net_progress(values),
           "episodes": len(values)}
    if lags:
        out["accuracy_by_lag"] = {str(lag): vm.pairwise_accuracy_at_lag(values, lag) for lag in lags}
    return out


def evaluate_values(
    demos: Sequence[Episode],
    demo_values: Sequence[np.ndarray],
    reversed_values: Sequence[np.ndarray] | None = None,
    wrong: Sequence[Episode] = (),
    wrong_values: Sequence[np.ndarray] = (),
    rollouts: Sequence[Episode] = (),
    rollout_values: Sequence[np.ndarray] = (),
    opposite_values: Sequence[np.ndarray] = (),
) -> dict[str, Any]:
    """The scores of one value model (or the clock) on every episode set.

    Args:
        demos, demo_values: Held-out demonstrations and their values.
        reversed_values: Values of the demonstrations played backwards; None takes
            ``demo_values`` reversed (exact for a model of one observation, not for one
            conditioned on the start frame).
        wrong, wrong_values: Wrong-instruction episodes and their values.
        rollouts, rollout_values: Policy rollouts and their values.
        opposite_values: Values of `opposite_instruction_episodes` of the demonstrations.

    Returns:
        A JSON-ready dict: per set (``demos``, ``reversed``, ``wrong_instruction``,
        ``opposite_instruction``, ``rollouts_success``, ``rollouts_failure``) its VOC, pairwise
        accuracy, net progress (`value_metrics.net_progress`) and episode count;
        ``grounding_accuracy`` (share of frames valued higher under their own instruction
        than under the wrong one); and ``success_vs_failure`` (same-time accuracy, final-value
        AUC). ``demos`` also holds ``accuracy_by_lag``: pairwise accuracy of frames 1, 4, 8,
        16 and 32 apart.
    """
    report: dict[str, Any] = {
        "demos": _voc_stats(demo_values, ACCURACY_LAGS),
        "reversed": _voc_stats([v[::-1] for v in demo_values] if reversed_values is None else reversed_values),
    }
    if wrong:
        report["wrong_instruction"] = _voc_stats(wrong_values)
        right = {id(e.obs): v for e, v in zip(demos, demo_values)}
        diffs = np.concatenate([right[id(e.obs)] - v for e, v in zip(wrong, wrong_values) if id(e.obs) in right] or [np.zeros(0)])
        report["grounding_accuracy"] = float(np.mean((diffs > 0) + 0.5 * (diffs == 0))) if diffs.size else None
    if len(opposite_values):
        report["opposite_instruction"] = _voc_stats(opposite_values)
    if rollouts:
        report["rollouts_success"] = _voc_stats([v for e, v in zip(rollouts, rollout_values) if e.success])
        report["rollouts_failure"] = _voc_stats([v for e, v in zip(rollouts, rollout_values) if not e.success])
        report["success_vs_failure"] = _success_failure_scores(rollouts, rollout_values)
    return report


def clock_fn(episodes: Sequence[Episode]) -> list[np.ndarray]:
    """The clock baseline's values V = t / 360 for each episode."""
    return [vm.clock_values(len(e), EPISODE_STEPS) for e in episodes]


def diagnose(
    value_fn: ValueFn,
    demos: Sequence[Episode],
    wrong: Sequence[Episode] = (),
    rollouts: Sequence[Episode] = (),
    batch_size: int = 256,
    opposite: Sequence[Episode] = (),
) -> tuple[dict[str, Any], dict[str, list[np.ndarray]]]:
    """Score a value model and the clock on every episode set.

    Args:
        value_fn: The value model (callable or object with ``predict``).
        demos: Held-out successful demonstrations.
        wrong: `wrong_instruction_episodes` of ``demos`` (``id(obs)`` links them).
        rollouts: Policy rollouts with success flags.
        batch_size: Frames per forward pass.
        opposite: `opposite_instruction_episodes` of ``demos``.

    Returns:
        (report with ``model`` and ``clock`` entries, the model's raw values per set;
        ``reversed`` is None for a model of one frame, whose reversed values are the demos').
    """
    from rftf_gym.value_model import value_context

    values = {
        "demos": score_episodes(value_fn, demos, batch_size),
        # A model of the start frame sees a reversed clip from the clip's own first frame, one of
        # the recent frame its motion reversed: both are scored afresh.
        "reversed": score_episodes(value_fn, reversed_episodes(demos), batch_size) if value_context(value_fn) != "none" else None,
        "wrong_instruction": score_episodes(value_fn, wrong, batch_size) if wrong else [],
        "rollouts": score_episodes(value_fn, rollouts, batch_size) if rollouts else [],
        "opposite_instruction": score_episodes(value_fn, opposite, batch_size) if opposite else [],
    }
    model = evaluate_values(demos, values["demos"], values["reversed"], wrong, values["wrong_instruction"], rollouts, values["rollouts"],
                            values["opposite_instruction"])
    clock = evaluate_values(demos, clock_fn(demos), clock_fn(demos), wrong, clock_fn(wrong), rollouts, clock_fn(rollouts), clock_fn(opposite))
    return {"model": model, "clock": clock}, values


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig: Any, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """Loss per step and held-out scores per epoch (as RFTF's Fig. 5).

    Args:
        history: Per epoch: ``epoch``, ``losses`` (list of per-step training losses) and ``model``
            (the `evaluate_values` report of that epoch).
        path: PNG file to write.
    """
    plt = _pyplot()
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(11, 4))
    losses = [x for h in history for x in h["losses"]]
    ax_loss.plot(np.arange(1, len(losses) + 1), losses, lw=0.8)
    ax_loss.set(xlabel="step", ylabel="training loss", title="ranking loss")
    epochs = [h["epoch"] for h in history]
    curves = {
        "demo pairwise acc": ("demos", "pairwise_accuracy"),
        "demo VOC": ("demos", "voc"),
        "reversed VOC": ("reversed", "voc"),
        "wrong-instruction VOC": ("wrong_instruction", "voc"),
        "failed-rollout VOC": ("rollouts_failure", "voc"),
    }
    for label, (group, key) in curves.items():
        ys = [h["model"].get(group, {}).get(key) for h in history]
        if any(y is not None for y in ys):
            ax_score.plot(epochs, [np.nan if y is None else y for y in ys], marker="o", label=label)
    ax_score.axhline(0.0, color="grey", lw=0.5)
    ax_score.set(xlabel="epoch", ylabel="held-out score", title="held-out scene D", ylim=(-1.05, 1.05))
    ax_score.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def plot_value_curves(
    curves: Sequence[tuple[str, np.ndarray]], path: str | Path, title: str = "value curves"
) -> None:
    """Values against time for a few episodes (as RFTF's Fig. 6).

    Args:
        curves: (label, values) per episode; labels starting with "fail" are dashed.
        path: PNG file to write.
        title: Figure title.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in curves:
        ax.plot(np.arange(len(values)), values, ls="--" if label.startswith("fail") else "-", label=label)
    ax.set(xlabel="time step", ylabel="raw value", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
