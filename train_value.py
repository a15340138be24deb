"""Train RFTF's temporal value model from demonstrations (stage 1 of RFTF).

RFTF: Reinforcement Fine-tuning for VLA models with Temporal Feedback, arXiv 2505.19767,
section 3.2. No action or value labels: within a window of an annotated demonstration every later
frame must score higher than every earlier one (Eq. 1). The paper trains with batch 4x8 = 32 and
learning rate 1e-5 and keeps the model after the first epoch (section 4.3); here those settings
fail the held-out checks (see "Defaults" below), so the defaults are the best measured ones and
the paper's are one command line away:

    python train_value.py --loss paper --learning-rate 1e-5 --weight-decay 0 --dropout 0 --num-epochs 1

Every epoch the model is scored on the held-out split (scene D) by
`rftf_gym.value_diagnostics`: pairwise accuracy and VOC on demonstrations, VOC on reversed and
wrong-instruction demonstrations and on rollouts of a policy, success-vs-failure pairs, all next
to the clock baseline V = t / 360. Outputs in ``runs/<run_name>/``: TensorBoard events,
``epoch_<k>/`` value checkpoints, ``value_model/`` (the kept epoch), ``report.json``,
``curves.png``, ``value_curves.png``, and ``resume/`` (model, optimizer and step): rerunning the
same command continues an interrupted run.

    python train_value.py --data-root demos --run-name value_state

Defaults (held-out scene D, state variant from scratch; the runs are in BENCHMARKS.md "Value
model"; a set of 378 training windows, the 60-episode collection, and one of 2152, 360 episodes):

- ``--loss grounded``: Eq. 1 alone (``--loss paper``) is satisfied by a clock, and it reads time
  rather than the instruction: the same frames under another task's instruction keep a rising
  value (wrong-instruction VOC 0.57 with the paper's settings, 0.21 at lr 3e-4), against 0.09
  with the wrong-instruction negatives (target <= 0.2).
- ``--learning-rate 3e-4``: 1e-5 for one epoch (the paper's) reaches pairwise accuracy 0.73 /
  VOC 0.56 from scratch and 0.72 / 0.57 from the BC body; 3e-4 for 8 epochs 0.77 / 0.63.
- ``--weight-decay 0.05 --dropout 0.1``: on 378 windows these with observation noise 0.1 give
  0.855 / 0.79 instead of 0.77 / 0.63 (the same loss and schedule). On 2152 windows the noise
  costs accuracy (0.869, 0.876, 0.880 after epochs 1-3 without it, 0.862, 0.866, 0.872 with
  it, lower at every frame lag), so ``--obs-noise`` defaults to 0: with six times the data the
  model underfits rather than overfits (training-batch accuracy 0.858 in epoch 3, with dropout).
- ``--num-epochs 2``: on 2152 windows (463 steps an epoch) the third epoch adds 0.004 accuracy,
  and two end within the state variant's 5-minute budget (4.0 min of steps at load 4.5 on 2
  shared cores, one torch thread). A set of a few hundred windows needs more epochs (8 on 378).
- the last epoch is kept (``--keep-epoch`` defaults to ``--num-epochs``): at lr 3e-4 the first
  epoch is not the best (on 378 windows pairwise accuracy 0.79 after epoch 1, 0.855 after
  epoch 8), and picking the best epoch by its held-out scores would tune on the test scene.
- ``--opposite-coef 0`` (off): random wrong instructions are rarely the opposite task's, whose
  sentence differs from a paraphrase of the task by one word ("... to the left" / "... to the
  right"), so the defaults pay the opposite task's progress: on 2152 windows, held-out
  demonstrations under their opposite task's instruction keep VOC 0.78 (a clock: 1). The term
  brings that down, but costs ranking on the demonstrations themselves: one frame, every pair
  (``--opposite-frames all``), 3 epochs: opposite VOC -0.49, pairwise accuracy 0.78 instead of
  0.88; with the start frame (``--context start``) and the two ends: opposite VOC 0.13 and net
  normalised progress -0.78 instead of +0.85, accuracy 0.90 instead of 0.94 (BENCHMARKS.md
  "Opposite instructions").
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from safetensors.torch import load_file, save
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from rftf_gym import value_diagnostics as diag
from rftf_gym.data import CalvinDataset
from rftf_gym.files import atomic_write_bytes, atomic_write_text
from rftf_gym.models import PRECOMPUTED_TEXT, VLAConfig, load_vla
from rftf_gym.tasks import OPPOSITE_TASKS
from rftf_gym.value_model import (
    CONTEXT_KEYS,
    CONTEXTS,
    DEFAULT_RECENT_LAG,
    RECENT_PREFIX,
    START_PREFIX,
    ValueModel,
    context_difference,
    load_value_model,
    save_value_model,
)

# A mix of task families for the rollout diagnostics (articulation, lights, blocks, placing).
DEFAULT_ROLLOUT_TASKS = (
    "open_drawer", "move_slider_left", "turn_on_led", "lift_red_block_table",
    "push_blue_block_right", "rotate_red_block_right",
)


@dataclass
class Args:
    exp_name: str = "train_value"
    """the name of this experiment (the run name starts with it)"""
    run_name: str | None = None
    """fixed run name (default: exp_name__seed__time); rerunning with the same name resumes"""
    seed: int = 1
    """seed of python, numpy and torch"""
    torch_deterministic: bool = True
    """sets `torch.backends.cudnn.deterministic`"""
    device: str = "cpu"
    """torch device ("cpu", "cuda", "cuda:1")"""
    torch_threads: int | None = None
    """torch CPU threads (None: torch's default); 1 is much faster on a machine shared with other jobs"""
    track: bool = False
    """log to Weights and Biases"""
    wandb_project_name: str = "rftf-gym"
    """the wandb project"""
    wandb_entity: str | None = None
    """the wandb entity (team)"""
    runs_dir: str = "runs"
    """directory of the run directories"""

    # data
    data_root: str = "demos"
    """dataset root holding the split directories (ours or a real CALVIN split)"""
    train_split: str = "training"
    """split the model trains on (scenes A, B, C)"""
    val_split: str = "validation"
    """held-out split scored every epoch (scene D)"""
    lang_folder: str = "lang_annotations"
    """folder of auto_lang_ann.npy inside each split; its language.emb is used when present"""
    whole_segments: bool = False
    """train on each instruction's whole segment (windows extended back to the previous window's end);
    for collect_demos.py data, whose windows are the last <= 64 frames of back-to-back segments"""
    use_dataset_embeddings: bool = False
    """condition on the splits' precomputed language.emb (real CALVIN) instead of the model's text
    encoder; trains from scratch (a BC body reads its own encoder's embeddings)"""
    max_val_episodes: int | None = None
    """score at most this many held-out windows per epoch (None: all)"""

    # model
    bc_checkpoint: str | None = None
    """BC (VLA) checkpoint whose body initialises the value model (RFTF 3.2); None: from scratch"""
    obs_mode: str = "state"
    """observation mode when training from scratch ("state" or "rgb"); a BC checkpoint sets it"""
    num_value_queries: int = 1
    """value query tokens (replacing the VLA's action tokens)"""
    dropout: float = 0.1
    """dropout inside the backbone when training from scratch (a BC checkpoint keeps its own); 0.1 with
    weight decay (and obs noise): held-out pairwise accuracy 0.855 instead of 0.77 (module docstring)"""
    head_hidden: int = 256
    """hidden width of the value head"""
    context: str = "none"
    """"none": V(s_t, l), one frame; "start": V(s_t | s_start, l), also conditioned on the frame where the
    instruction started (the annotation's first frame here, the reset observation in the env); "recent":
    V(s_t | s_{t-k}, l), on the frame k = --recent-lag steps back (the recent motion; the reward wrappers do not
    supply it, the diagnostics do); "start+recent": both; state variant"""
    recent_lag: int = DEFAULT_RECENT_LAG
    """(--context recent, start+recent) frames k between s_t and the recent frame s_{t-k}"""
    relative: bool = False
    """(--context start, start+recent; from scratch) the body reads s_t - s_start instead of s_t: no absolute
    position, which does not transfer to a scene whose table is laid out differently"""

    # optimisation (RFTF 4.1.4: batch 4 x 8, lr 1e-5; 4.3: keep the first epoch's model)
    batch_size: int = 32
    """windows per step (the paper's 4 x 8)"""
    learning_rate: float = 3e-4
    """AdamW learning rate; the paper's 1e-5 leaves held-out pairwise accuracy at 0.73 after its one epoch"""
    weight_decay: float = 0.05
    """AdamW weight decay"""
    max_grad_norm: float = 1.0
    """gradient clipping norm"""
    lr_schedule: str = "constant"
    """"constant": the learning rate throughout; "cosine": decayed from it to 0 over the run's steps (half a
    cosine), a function of the step alone, so a resumed run follows the same schedule"""
    num_epochs: int = 2
    """epochs (each draws ceil(L / n) windows at random offsets from every annotation of L frames); 2 fit
    the 5-minute budget on 2152 windows, small sets need more (module docstring)"""
    keep_epoch: int | None = None
    """epoch whose model is copied to value_model/ (None: the last; the paper keeps the first)"""
    window_size: int = 8
    """frames n per window; Eq. 1 averages over its C(n, 2) pairs"""
    frame_stride: int = 4
    """frames between consecutive window frames (the window spans (n - 1) * stride + 1 frames)"""
    max_steps_per_epoch: int | None = None
    """cap on steps per epoch (None: all windows); for quick runs"""
    checkpoint_every: int = 100
    """steps between resume checkpoints"""
    obs_noise: float = 0.0
    """Gaussian noise added to robot_obs / scene_obs in training, as a fraction of each dimension's std
    (0.1 helped on 378 windows, cost 0.01 pairwise accuracy on 2152)"""

    # loss. No rewound clips or stalls as negatives for a model of one frame, V(s_t, l): a rewound
    # clip holds only states of the forward clip, and ranking its returning half below its peak
    # is the forward Eq. 1 constraint again (the reversed-demo VOC of any such model is exactly
    # minus its demo VOC); a stall repeats a frame, whose value equals itself by construction.
    # Negatives that add information there are other instructions and failed rollouts. A model of
    # the start frame (--context start) can read "distance from the start" as a clock, which a
    # reversed demonstration (started from its own first frame, the demonstration's end) also
    # satisfies: for it, reversed windows must fall (--reversed-coef). So must they for a model of
    # the recent frame (--context recent), which could otherwise read any motion as progress.
    loss: str = "grounded"
    """"grounded": Eq. 1 plus wrong-instruction negatives (wrong-instruction VOC 0.09 vs 0.21-0.57
    without them); "paper": Eq. 1 on demonstrations only"""
    wrong_tie_coef: float = 1.0
    """("grounded") weight of the tie loss that keeps values flat under a wrong instruction"""
    wrong_rank_coef: float = 1.0
    """("grounded") weight of ranking each frame above itself under a wrong instruction"""
    opposite_coef: float = 0.0
    """("grounded") weight of Eq. 1 reversed on demonstrations scored under their opposite task's instruction
    (rftf_gym.tasks.OPPOSITE_TASKS: slider left / right, drawer open / close, lights on / off, rotations and
    pushes left / right, stack / unstack): opening the drawer must lower the value of "close the drawer". Random
    wrong instructions are rarely the opposite one; without this term the model pays the opposite task's
    progress as progress, and with it the held-out ranking suffers (module docstring); 0: off"""
    opposite_frames: str = "ends"
    """(--opposite-coef) "ends": the demonstration's last frame ranks below its first; "all": every later frame of
    the window below every earlier one (which also ranks the approach to the handle or block, progress for both
    tasks, the wrong way)"""
    train_rollout_policy: str | None = None
    """policy whose failed rollouts in the training scenes are ranked below successes of the same task"""
    train_rollout_scenes: str = "ABC"
    """scenes of those rollouts (the training split's scenes)"""
    train_rollout_episodes_per_task: int = 1
    """rollouts per task and scene, over every task of the training windows"""
    failure_coef: float = 1.0
    """weight of ranking failed-rollout frames below the last frame of a demonstration of their task"""
    reversed_coef: float = 1.0
    """(--context start, recent) weight of Eq. 1 reversed on windows of time-reversed demonstrations, each seen from
    its own first frame: progress undone must lower the value"""

    # diagnostics
    rollout_policy: str | None = None
    """policy whose scene-D rollouts are scored (a BC checkpoint; "random"; None: no rollouts)"""
    rollout_tasks: tuple[str, ...] = DEFAULT_ROLLOUT_TASKS
    """tasks of the rollouts"""
    rollout_episodes_per_task: int = 8
    """rollouts per task"""
    rollout_cache: str | None = None
    """directory caching the rollouts (default: runs/<run_name>/rollouts)"""
    eval_batch_size: int = 256
    """frames per forward pass when scoring"""


# ----------------------------------------------------------------------------------------------
# ALGO LOGIC: the ranking loss of RFTF section 3.2
# ----------------------------------------------------------------------------------------------
def ranking_loss(values: torch.Tensor) -> torch.Tensor:
    """Eq. 1 of RFTF: mean over windows and over all pairs i < j of -log sigmoid(V_j - V_i).

    Args:
        values: (B, n) values of B windows of n frames in time order.

    Returns:
        Scalar loss.
    """
    if values.ndim != 2 or values.shape[1] < 2:
        raise ValueError(f"values must be (batch, n >= 2), got {tuple(values.shape)}")
    i, j = torch.triu_indices(values.shape[1], values.shape[1], offset=1, device=values.device)
    # Eq. 1: loss = -1/C(n,2) * E[log sigma(V(s_{t+dt}, l) - V(s_t, l))], over all C(n,2) pairs
    return -F.logsigmoid(values[:, j] - values[:, i]).mean()


def scheduled_lr(base: float, schedule: str, step: int, total_steps: int) -> float:
    """The learning rate of step ``step`` (0-based) of ``total_steps``: ``base`` ("constant") or
    ``base * (1 + cos(pi * step / total_steps)) / 2`` ("cosine", from ``base`` towards 0)."""
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    raise ValueError(f"lr schedule must be 'constant' or 'cosine', got {schedule!r}")


def tie_loss(values: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry tie loss over all pairs i < j: -(log sigma(d) + log sigma(-d)) / 2, d = V_j - V_i.

    Minimal (log 2) when every pair is equal: values that must not rise or fall with time.
    """
    i, j = torch.triu_indices(values.shape[1], values.shape[1], offset=1, device=values.device)
    d = values[:, j] - values[:, i]
    return -0.5 * (F.logsigmoid(d) + F.logsigmoid(-d)).mean()


def grounding_loss(right: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """-log sigma(V(s, l) - V(s, l')): the same frame ranks higher under its own instruction."""
    return -F.logsigmoid(right - wrong).mean()


# ----------------------------------------------------------------------------------------------
# Windows
# ----------------------------------------------------------------------------------------------
def epoch_windows(lengths: list[int], window_size: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """The windows of one epoch: (episode, first frame) rows in random order.

    Each episode of length L gets ceil(L / n) windows at uniformly random offsets, so an epoch
    visits every annotated frame about once; episodes shorter than n frames are skipped.

    Returns:
        int64 array (N, 2).
    """
    span = (window_size - 1) * stride + 1
    rows = []
    for e, length in enumerate(lengths):
        if length < window_size:
            continue
        count = -(-length // window_size)
        starts = rng.integers(0, max(length - span, 0) + 1, size=count)
        rows.extend((e, int(s)) for s in starts)
    rows_array = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    return rows_array[rng.permutation(len(rows_array))]


def window_frames(length: int, start: int, window_size: int, stride: int) -> np.ndarray:
    """Frame indices of one window, in time order (the stride shrinks to fit short episodes)."""
    stride = min(stride, (length - 1 - start) // (window_size - 1))
    return start + stride * np.arange(window_size)


def gather(episodes: list[diag.Episode], rows: np.ndarray, window_size: int, stride: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Stack the frames of B windows into model inputs (B * n rows, window-major) and the
    episodes' instruction embeddings (B, D)."""
    obs: dict[str, list[np.ndarray]] = {}
    embs = []
    for e, start in rows:
        ep = episodes[int(e)]
        idx = window_frames(len(ep), int(start), window_size, stride)
        for k, v in ep.obs.items():
            obs.setdefault(k, []).append(v[idx])
        embs.append(ep.emb)
    return {k: np.concatenate(v) for k, v in obs.items()}, np.stack(embs)


def gather_starts(episodes: list[diag.Episode], rows: np.ndarray, window_size: int) -> dict[str, np.ndarray]:
    """The start frame (each episode's first frame, where its instruction starts) of B windows,
    repeated for the window's n rows, under the ``start_`` keys a context model reads."""
    out = {}
    for k in CONTEXT_KEYS:
        out[START_PREFIX + k] = np.repeat(np.stack([episodes[int(e)].obs[k][0] for e, _ in rows]), window_size, axis=0)
    return out


def gather_recent(episodes: list[diag.Episode], rows: np.ndarray, window_size: int, stride: int, lag: int) -> dict[str, np.ndarray]:
    """The frames ``lag`` steps before each frame of B windows (the episode's first frame when there
    is none that far back, as at an env episode's start), under the ``recent_`` keys."""
    parts: dict[str, list[np.ndarray]] = {}
    for e, start in rows:
        ep = episodes[int(e)]
        idx = np.maximum(window_frames(len(ep), int(start), window_size, stride) - lag, 0)
        for k in CONTEXT_KEYS:
            parts.setdefault(RECENT_PREFIX + k, []).append(ep.obs[k][idx])
    return {k: np.concatenate(v) for k, v in parts.items()}


def reversed_rows(lengths: list[int], rows: np.ndarray, window_size: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """A window at a random offset in the reversed copy of each row's episode: (episode, first frame)."""
    span = (window_size - 1) * stride + 1
    return np.asarray([(e, int(rng.integers(0, max(lengths[int(e)] - span, 0) + 1))) for e, _ in rows], dtype=np.int64).reshape(-1, 2)


def context_differences(episodes: list[diag.Episode], lag: int | None = None) -> np.ndarray:
    """`context_difference` of every frame against its episode's first frame (``lag`` None) or
    against the frame ``lag`` steps back (the first frame when there is none), (sum T, 39)."""
    parts = []
    for e in episodes:
        robot, scene = torch.as_tensor(e.obs["robot_obs"]), torch.as_tensor(e.obs["scene_obs"])
        if lag is None:
            ref = torch.zeros(len(e), dtype=torch.long)
        else:
            ref = (torch.arange(len(e)) - lag).clamp_min(0)
        parts.append(context_difference(robot, scene, robot[ref], scene[ref]).numpy())
    return np.concatenate(parts)


def attach_embeddings(episodes: list[diag.Episode], model: ValueModel, dataset: CalvinDataset) -> None:
    """Give every episode its instruction embedding: the split's language.emb for a model that
    reads precomputed embeddings, else the model's own text encoder (as at inference, where the
    env gives sentences)."""
    if model.text_encoder is None:
        if any(e.emb is None for e in episodes):
            raise ValueError(f"the model reads precomputed embeddings but {dataset.path} has no language.emb")
        return
    sentences = sorted({e.instruction for e in episodes})
    table = dict(zip(sentences, model.text_encoder.encode(sentences)))
    for e in episodes:
        e.emb = table[e.instruction]


# ----------------------------------------------------------------------------------------------
# Checkpoints and resume
# ----------------------------------------------------------------------------------------------
def atomic_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def save_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    """Adam moments as safetensors (state/<param index>/<name>), the rest and the torch RNG as JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, param_state in state["state"].items():
        for name, value in param_state.items():
            key = f"state/{index}/{name}"
            if torch.is_tensor(value) and value.ndim > 0:
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = float(value)
    tensors["rng/torch"] = torch.get_rng_state()  # on CPU, dropout masks continue as without the interruption
    atomic_write_bytes(path, save(tensors))
    atomic_json(path.with_suffix(".json"), {"scalars": scalars, "param_groups": state["param_groups"]})


def load_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    tensors = load_file(str(path))
    meta = json.loads(path.with_suffix(".json").read_text())
    state: dict[int, dict[str, Any]] = {}
    torch.set_rng_state(tensors.pop("rng/torch"))
    for key, value in tensors.items():
        _, index, name = key.split("/")
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        _, index, name = key.split("/")
        state.setdefault(int(index), {})[name] = torch.tensor(value)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_resume(run_dir: Path, model: ValueModel, optimizer: torch.optim.Optimizer, progress: dict[str, Any]) -> None:
    """Model and optimizer into a fresh ``resume/step_XXXXXXX/``, then ``resume/progress.json``
    naming it (the commit point), then the older step directories are removed. A kill at any
    moment leaves progress.json pointing at a complete checkpoint of the same step."""
    resume = run_dir / "resume"
    name = f"step_{progress['global_step']:07d}"
    save_value_model(resume / name, model, {"global_step": progress["global_step"]})
    save_optimizer(resume / name / "optimizer.safetensors", optimizer)
    atomic_json(resume / "progress.json", {**progress, "checkpoint": name})
    for old in resume.glob("step_*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def load_resume(run_dir: Path, model: ValueModel, optimizer: torch.optim.Optimizer, device: torch.device) -> dict[str, Any]:
    """Restore what `save_resume` committed; returns the progress dict."""
    path = run_dir / "resume" / "progress.json"
    progress = json.loads(path.read_text())
    if "checkpoint" not in progress:
        raise ValueError(f"{path} was written by an older train_value.py (no step directory named in it); "
                         f"delete {path.parent} to start over, or use another --run-name")
    directory = run_dir / "resume" / progress.pop("checkpoint")
    model.load_state_dict(load_value_model(directory, device=device).state_dict())
    load_optimizer(directory / "optimizer.safetensors", optimizer)
    return progress


def model_fields(args: Args) -> dict[str, Any]:
    """The Args fields that fix the architecture, the data or the optimisation; a resumed run must
    match them (the optimizer state restores the learning rate and weight decay of the checkpoint)."""
    keys = ("data_root", "train_split", "whole_segments", "val_split", "lang_folder", "bc_checkpoint", "obs_mode", "num_value_queries",
            "head_hidden", "dropout", "use_dataset_embeddings", "train_rollout_policy", "batch_size", "window_size", "frame_stride", "loss", "seed", "max_steps_per_epoch",
            "learning_rate", "weight_decay", "obs_noise", "wrong_tie_coef", "wrong_rank_coef", "failure_coef")
    keys += ("context", "reversed_coef", "lr_schedule", "recent_lag", "relative", "opposite_coef", "opposite_frames")  # absent from older runs' progress.json: see LATER_FIELDS
    return {k: getattr(args, k) for k in keys}


LATER_FIELDS = {"context": "none", "reversed_coef": 1.0, "lr_schedule": "constant", "recent_lag": DEFAULT_RECENT_LAG, "relative": False,
                "opposite_coef": 0.0, "opposite_frames": "ends"}
"""Fields added after runs were made; a progress.json without them ran with these values."""


def plot_examples(run_dir: Path, report_sets: dict[str, Any], episodes: dict[str, list[diag.Episode]]) -> None:
    """Value curves of a few held-out demonstrations and, when present, rollouts (Fig. 6)."""
    curves = []
    for e, v in list(zip(episodes["demos"], report_sets["demos"]))[:3]:
        curves.append((f"demo {e.task}", v))
    ro = list(zip(episodes["rollouts"], report_sets["rollouts"]))
    curves += [(f"success {e.task}", v) for e, v in [x for x in ro if x[0].success][:2]]
    curves += [(f"fail {e.task}", v) for e, v in [x for x in ro if not x[0].success][:3]]
    diag.plot_value_curves(curves, run_dir / "value_curves.png", "held-out scene D")


# ----------------------------------------------------------------------------------------------
if __name__ == "__main__":
    args = tyro.cli(Args)
    if args.loss not in ("paper", "grounded"):
        raise ValueError(f"--loss must be 'paper' or 'grounded', got {args.loss!r}")
    if args.opposite_coef > 0 and args.loss != "grounded":
        raise ValueError("--opposite-coef belongs to --loss grounded (--loss paper is Eq. 1 alone)")
    if args.opposite_frames not in ("ends", "all"):
        raise ValueError(f"--opposite-frames must be 'ends' or 'all', got {args.opposite_frames!r}")
    if args.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"--lr-schedule must be 'constant' or 'cosine', got {args.lr_schedule!r}")
    if args.context not in CONTEXTS:
        raise ValueError(f"--context must be one of {CONTEXTS}, got {args.context!r}")
    if args.recent_lag < 1:
        raise ValueError(f"--recent-lag must be >= 1 frame, got {args.recent_lag}")
    if args.window_size < 2 or args.frame_stride < 1:
        raise ValueError("--window-size must be >= 2 and --frame-stride >= 1")
    if args.keep_epoch is None:
        args.keep_epoch = args.num_epochs
    if not 1 <= args.keep_epoch <= args.num_epochs:
        raise ValueError(f"--keep-epoch must be in 1..{args.num_epochs}, got {args.keep_epoch}")
    run_name = args.run_name or f"{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = Path(args.runs_dir) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args), name=run_name, save_code=True)
    writer = SummaryWriter(str(run_dir))
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))

    # seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    device = torch.device(args.device)

    # model
    if args.bc_checkpoint and args.use_dataset_embeddings:
        raise ValueError("--use-dataset-embeddings trains from scratch: the BC body reads its own text encoder's embeddings")
    if args.bc_checkpoint:
        vla = load_vla(args.bc_checkpoint)
        model = ValueModel.from_vla(vla, args.num_value_queries, args.head_hidden, args.context, args.recent_lag, args.relative)
        del vla
    else:
        text = {}
        if args.use_dataset_embeddings:
            emb = CalvinDataset(args.data_root, args.train_split, check_files=False, lang_folder=args.lang_folder).language_emb
            if emb is None:
                raise ValueError(f"--use-dataset-embeddings: {args.data_root}/{args.train_split} has no language.emb")
            text = {"text_encoder": PRECOMPUTED_TEXT, "text_dim": int(np.prod(emb.shape[1:]))}
        model = ValueModel(VLAConfig(obs_mode=args.obs_mode, dropout=args.dropout, **text), args.num_value_queries, args.head_hidden, args.context,
                           args.recent_lag, args.relative)
    config = model.config
    if model.text_encoder is None and (args.rollout_policy or args.train_rollout_policy):
        raise ValueError("the model reads precomputed language.emb, which rollout instructions do not have; drop the rollout options")
    keys = config.obs_keys
    image_sizes = {"static": (config.static_size,) * 2, "gripper": (config.gripper_size,) * 2}

    # data: every language window, whole, in memory (images shrunk to the model's input size)
    train_set = CalvinDataset(args.data_root, args.train_split, lang_folder=args.lang_folder)
    val_set = CalvinDataset(args.data_root, args.val_split, lang_folder=args.lang_folder)
    train_eps = diag.demo_episodes(train_set, keys, image_sizes=image_sizes, progress=True, whole_segments=args.whole_segments)
    val_eps = diag.demo_episodes(val_set, keys, args.max_val_episodes, image_sizes, seed=args.seed, progress=True)
    attach_embeddings(train_eps, model, train_set)
    attach_embeddings(val_eps, model, val_set)
    val_wrong = diag.wrong_instruction_episodes(val_eps, seed=args.seed)
    val_opposite = diag.opposite_instruction_episodes(val_eps, seed=args.seed)
    vector_keys = [k for k in keys if k in ("robot_obs", "scene_obs")]
    frames = {k: np.concatenate([e.obs[k] for e in train_eps]) for k in vector_keys}
    obs_std = {k: v.std(0) for k, v in frames.items()}
    use_start, use_recent = model.uses_start, model.uses_recent
    if model.relative:  # the body's inputs are the differences from the start
        diffs = context_differences(train_eps)
        model.body.set_state_normalization(diffs[:, :15], diffs[:, 15:])
    elif not args.bc_checkpoint and config.obs_mode == "state":
        model.body.set_state_normalization(frames["robot_obs"], frames["scene_obs"])
    del frames
    if use_start and not model.relative:
        model.set_context_normalization(context_differences(train_eps), "start")
    if use_recent:
        model.set_context_normalization(context_differences(train_eps, args.recent_lag), "recent")
    train_rev = diag.reversed_episodes(train_eps) if (use_start or use_recent) and args.reversed_coef > 0 else []
    model.to(device)
    rollouts: list[diag.Episode] = []
    if args.rollout_policy:
        rollouts = diag.collect_rollouts(
            args.rollout_policy, args.rollout_tasks, args.rollout_episodes_per_task, keys,
            args.rollout_cache or run_dir / "rollouts", scene="D", seed=args.seed, image_sizes=image_sizes, progress=True,
        )
        print(f"rollouts: {sum(e.success for e in rollouts)} successes, {sum(not e.success for e in rollouts)} failures")

    failures: list[diag.Episode] = []
    if args.train_rollout_policy:
        for scene in args.train_rollout_scenes:
            episodes = diag.collect_rollouts(
                args.train_rollout_policy, sorted({e.task for e in train_eps}), args.train_rollout_episodes_per_task, keys,
                run_dir / f"train_rollouts_{scene}", scene=scene, seed=args.seed, image_sizes=image_sizes, progress=True,
            )
            failures += [e for e in episodes if not e.success]
        attach_embeddings(failures, model, train_set)
        print(f"training rollouts: {len(failures)} failures ranked below demonstrations")
    task_of = np.array([e.task for e in train_eps])
    # the training episodes of each task's opposite, whose instructions score the opposite term
    opposite_pool = {t: np.flatnonzero(task_of == OPPOSITE_TASKS[t]) for t in set(task_of) if t in OPPOSITE_TASKS}
    opposite_pool = {t: pool for t, pool in opposite_pool.items() if len(pool)}
    lengths = [len(e) for e in train_eps]
    num_windows = len(epoch_windows(lengths, args.window_size, args.frame_stride, np.random.default_rng(0)))
    if num_windows == 0:
        raise ValueError(f"no training window of {args.window_size} frames: every annotation is shorter")
    steps_per_epoch = num_windows // args.batch_size
    if args.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, args.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(f"{num_windows} windows make no batch of {args.batch_size}")
    total_steps = steps_per_epoch * args.num_epochs

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)

    # resume
    progress: dict[str, Any] = {"global_step": 0, "args": model_fields(args), "history": [], "losses": [], "train_seconds": 0.0,
                                "total_steps": total_steps}
    resume_file = run_dir / "resume" / "progress.json"
    if resume_file.exists():
        found = json.loads(resume_file.read_text())
        found_args = {**LATER_FIELDS, **found["args"]}
        differ = [f"{k}: {found_args.get(k)!r} vs {v!r}" for k, v in model_fields(args).items() if found_args.get(k) != v]
        if differ:
            raise ValueError(f"{run_dir} holds a run with other settings ({'; '.join(differ)}); use another --run-name")
        if args.lr_schedule != "constant" and found.get("total_steps", total_steps) != total_steps:
            raise ValueError(f"{run_dir} holds a {args.lr_schedule} schedule over {found['total_steps']} steps, not {total_steps} "
                             "(--num-epochs or --max-steps-per-epoch changed); use another --run-name")
        progress = load_resume(run_dir, model, optimizer, device)
        print(f"resuming {run_name} at step {progress['global_step']} of {total_steps}")

    # training loop
    model.train()
    start_time, start_step = time.time(), progress["global_step"]
    windows, windows_epoch = np.zeros((0, 2), dtype=np.int64), -1
    bar = tqdm(total=total_steps, initial=progress["global_step"], desc="value steps")
    while progress["global_step"] < total_steps:
        step, step_start = progress["global_step"], time.time()
        epoch, in_epoch = divmod(step, steps_per_epoch)
        # The window order of an epoch and the draws of a step depend on (seed, epoch, step)
        # only, so a resumed run takes the same batches as an uninterrupted one.
        if windows_epoch != epoch:
            windows = epoch_windows(lengths, args.window_size, args.frame_stride, np.random.default_rng([args.seed, epoch]))
            windows_epoch = epoch
        rows = windows[in_epoch * args.batch_size : (in_epoch + 1) * args.batch_size]
        obs, emb = gather(train_eps, rows, args.window_size, args.frame_stride)
        n, B = args.window_size, len(rows)
        if args.obs_noise > 0:
            noise_rng = np.random.default_rng([args.seed, epoch, in_epoch, 2])
            for k in vector_keys:
                obs[k] = obs[k] + noise_rng.normal(size=obs[k].shape) * (args.obs_noise * obs_std[k])
        obs["lang_emb"] = np.repeat(emb.reshape(B, -1), n, axis=0)
        if use_start:
            obs.update(gather_starts(train_eps, rows, n))
        if use_recent:
            obs.update(gather_recent(train_eps, rows, n, args.frame_stride, args.recent_lag))
        values = model(model.preprocess(obs)).view(B, n)
        pg = {"ranking": ranking_loss(values)}
        loss = pg["ranking"]
        if train_rev:
            # Rewound clips (a reversed demonstration seen from its own first frame, the
            # demonstration's end): values must fall, Eq. 1 with time reversed.
            rev_rows = reversed_rows(lengths, rows, n, args.frame_stride, np.random.default_rng([args.seed, epoch, in_epoch, 4]))
            rev_obs, _ = gather(train_rev, rev_rows, n, args.frame_stride)
            rev_obs["lang_emb"] = obs["lang_emb"]
            if use_start:
                rev_obs.update(gather_starts(train_rev, rev_rows, n))
            if use_recent:
                rev_obs.update(gather_recent(train_rev, rev_rows, n, args.frame_stride, args.recent_lag))
            rev_values = model(model.preprocess(rev_obs)).view(B, n)
            pg["reversed"] = ranking_loss(rev_values.flip(1))
            loss = loss + args.reversed_coef * pg["reversed"]
        if args.loss == "grounded":
            # Negatives where a clock is right and progress is not: the same frames under the
            # instruction of another task must not rise (tie loss) and must score below the
            # frames under their own instruction.
            rng = np.random.default_rng([args.seed, epoch, in_epoch, 1])
            wrong_emb = np.empty_like(emb)
            for b, (e, _) in enumerate(rows):
                others = np.flatnonzero(task_of != task_of[e])
                wrong_emb[b] = train_eps[int(others[rng.integers(len(others))])].emb
            obs["lang_emb"] = np.repeat(wrong_emb.reshape(B, -1), n, axis=0)
            wrong_values = model(model.preprocess(obs)).view(B, n)
            pg["wrong_tie"] = tie_loss(wrong_values)
            pg["grounding"] = grounding_loss(values, wrong_values)
            loss = loss + args.wrong_tie_coef * pg["wrong_tie"] + args.wrong_rank_coef * pg["grounding"]
            opposite = [b for b, (e, _) in enumerate(rows) if task_of[e] in opposite_pool] if args.opposite_coef > 0 else []
            if opposite:
                # A demonstration of a task undoes its opposite's progress: under the opposite task's
                # instruction the frames fall, Eq. 1 with time reversed, on the demonstration's two
                # ends ("ends": the approach in between, to the same handle or block, is progress
                # for both) or on every pair of the window ("all").
                rng = np.random.default_rng([args.seed, epoch, in_epoch, 5])
                opp_emb = np.stack([train_eps[int(rng.choice(opposite_pool[task_of[rows[b][0]]]))].emb for b in opposite])
                if args.opposite_frames == "ends":
                    per, ends_rows = 2, np.asarray([(rows[b][0], 0) for b in opposite], dtype=np.int64)
                    whole = max(lengths)  # a stride that spans the episode: window_frames shrinks it to (first, last); no obs noise
                    opp_obs, _ = gather(train_eps, ends_rows, 2, whole)
                    if use_start:
                        opp_obs.update(gather_starts(train_eps, ends_rows, 2))
                    if use_recent:
                        opp_obs.update(gather_recent(train_eps, ends_rows, 2, whole, args.recent_lag))
                else:
                    per, frame_rows = n, (np.asarray(opposite)[:, None] * n + np.arange(n)).ravel()
                    opp_obs = {k: v[frame_rows] for k, v in obs.items() if k != "lang_emb"}
                opp_obs["lang_emb"] = np.repeat(opp_emb.reshape(len(opposite), -1), per, axis=0)
                opp_values = model(model.preprocess(opp_obs)).view(len(opposite), per)
                pg["opposite"] = ranking_loss(opp_values.flip(1))
                loss = loss + args.opposite_coef * pg["opposite"]
        if failures:
            # Failed rollouts end short of success: each of their frames must score below the
            # last frame of a demonstration of the same task, under that task's instruction.
            rng = np.random.default_rng([args.seed, epoch, in_epoch, 3])
            picks = [failures[int(i)] for i in rng.integers(len(failures), size=B)]
            ends, fails, fail_recent = {}, [], []
            for f in picks:
                demos = np.flatnonzero(task_of == f.task)
                d = train_eps[int(demos[rng.integers(len(demos))])]
                start = int(rng.integers(0, len(f) - (n - 1) * args.frame_stride))
                idx = window_frames(len(f), start, n, args.frame_stride)
                fails.append(({k: v[idx] for k, v in f.obs.items()}, f.emb))
                fail_recent.append({RECENT_PREFIX + k: f.obs[k][np.maximum(idx - args.recent_lag, 0)] for k in CONTEXT_KEYS if k in f.obs})
                back = max(len(d) - 1 - args.recent_lag, 0)
                ends.setdefault("obs", []).append({**{k: v[-1:] for k, v in d.obs.items()},
                                                   **{START_PREFIX + k: d.obs[k][:1] for k in CONTEXT_KEYS if k in d.obs},
                                                   **{RECENT_PREFIX + k: d.obs[k][back : back + 1] for k in CONTEXT_KEYS if k in d.obs}})
            fail_obs = {k: np.concatenate([o[k] for o, _ in fails]) for k in keys}
            fail_obs["lang_emb"] = np.repeat(np.stack([e for _, e in fails]).reshape(B, -1), n, axis=0)
            end_obs = {k: np.concatenate([o[k] for o in ends["obs"]]) for k in keys}
            end_obs["lang_emb"] = np.stack([e for _, e in fails]).reshape(B, -1)
            if use_start:  # each from its own episode's first frame (a rollout's: the reset)
                fail_obs.update({START_PREFIX + k: np.repeat(np.stack([f.obs[k][0] for f in picks]), n, axis=0) for k in CONTEXT_KEYS})
                end_obs.update({START_PREFIX + k: np.concatenate([o[START_PREFIX + k] for o in ends["obs"]]) for k in CONTEXT_KEYS})
            if use_recent:  # the frames k steps back in the failure and in the demonstration
                fail_obs.update({RECENT_PREFIX + k: np.concatenate([r[RECENT_PREFIX + k] for r in fail_recent]) for k in CONTEXT_KEYS})
                end_obs.update({RECENT_PREFIX + k: np.concatenate([o[RECENT_PREFIX + k] for o in ends["obs"]]) for k in CONTEXT_KEYS})
            fail_values = model(model.preprocess(fail_obs)).view(B, n)
            end_values = model(model.preprocess(end_obs))
            pg["failure"] = -F.logsigmoid(end_values[:, None] - fail_values).mean()
            loss = loss + args.failure_coef * pg["failure"]
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(args.learning_rate, args.lr_schedule, step, total_steps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()

        progress["global_step"] = step + 1
        progress["losses"].append(loss.item())
        progress["train_seconds"] += time.time() - step_start
        with torch.no_grad():
            i, j = torch.triu_indices(n, n, offset=1)
            train_acc = float((values[:, j] > values[:, i]).float().mean())
        writer.add_scalar("losses/loss", float(loss), step + 1)
        for name, value in pg.items():
            writer.add_scalar(f"losses/{name}", float(value), step + 1)
        writer.add_scalar("losses/grad_norm", float(grad_norm), step + 1)
        writer.add_scalar("charts/train_pairwise_accuracy", train_acc, step + 1)
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], step + 1)
        writer.add_scalar("charts/SPS", (step + 1 - start_step) * B * n / (time.time() - start_time), step + 1)
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss):.4f}", acc=f"{train_acc:.3f}", epoch=epoch + 1)

        epoch_done = (step + 1) % steps_per_epoch == 0
        if epoch_done:
            # Held-out diagnostics of this epoch (scene D), then its checkpoint.
            model.eval()
            report, values_by_set = diag.diagnose(model, val_eps, val_wrong, rollouts, args.eval_batch_size, val_opposite)
            model.train()
            k = epoch + 1
            epoch_losses = progress["losses"][epoch * steps_per_epoch : k * steps_per_epoch]
            entry = {"epoch": k, "global_step": step + 1, "train_loss": float(np.mean(epoch_losses)), **report}
            progress["history"] = [h for h in progress["history"] if h["epoch"] != k] + [entry]
            for source in ("model", "clock"):
                for group, scores in report[source].items():
                    items = scores.items() if isinstance(scores, dict) else [("", scores)]
                    for name, value in items:
                        if isinstance(value, float):
                            tag = f"eval/{group}/{name}" if name else f"eval/{group}"
                            writer.add_scalar(tag if source == "model" else f"clock/{tag[5:]}", value, step + 1)
            save_value_model(run_dir / f"epoch_{k:03d}", model, {"epoch": k, "global_step": step + 1, "report": report, "args": vars(args)})
            if k == args.keep_epoch:
                save_value_model(run_dir / "value_model", model, {"epoch": k, "global_step": step + 1, "report": report, "args": vars(args)})
            m = report["model"]
            tqdm.write(
                f"epoch {k}: demos acc {m['demos']['pairwise_accuracy']:.3f} VOC {m['demos']['voc']:.3f} | reversed VOC "
                f"{m['reversed']['voc']:.3f} | wrong-instruction VOC {m['wrong_instruction']['voc']:.3f}"
                + (f" | opposite-instruction VOC {m['opposite_instruction']['voc']:.3f}" if "opposite_instruction" in m else "")
                + (f" | failed-rollout VOC {m['rollouts_failure']['voc']:.3f}" if m.get("rollouts_failure", {}).get("voc") is not None else "")
            )
            history = [{**h, "losses": progress["losses"][(h["epoch"] - 1) * steps_per_epoch : h["epoch"] * steps_per_epoch]}
                       for h in progress["history"]]
            diag.plot_training_curves(history, run_dir / "curves.png")
            plot_examples(run_dir, values_by_set, {"demos": val_eps, "rollouts": rollouts})
        if epoch_done or progress["global_step"] % args.checkpoint_every == 0:
            save_resume(run_dir, model, optimizer, progress)
    bar.close()

    final = {
        "run_name": run_name,
        "args": vars(args),
        "kept_epoch": args.keep_epoch,
        "steps_per_epoch": steps_per_epoch,
        "windows_per_epoch": num_windows,
        "train_episodes": len(train_eps),
        "val_episodes": len(val_eps),
        "rollouts": {"successes": sum(e.success for e in rollouts), "failures": sum(not e.success for e in rollouts)},
        "train_seconds": progress["train_seconds"],
        "wall_seconds_this_session": time.time() - start_time,
        "history": progress["history"],
    }
    atomic_json(run_dir / "report.json", final)
    print(f"wrote {run_dir / 'report.json'}; value model (epoch {args.keep_epoch}) in {run_dir / 'value_model'}")
    writer.close()
