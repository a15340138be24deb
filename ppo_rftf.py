"""RFTF stage 2: PPO fine-tuning of a VLA's action head with value-model rewards.

Shu, Lin and Wang, "RFTF: Reinforcement Fine-tuning for VLA models with Temporal Feedback"
(https://arxiv.org/abs/2505.19767), section 3.3 and 4.1.4. From a behaviour-cloned VLA, whole
instruction episodes are rolled out on the chosen training scenes with the training paraphrases
(the evaluation sentences are never seen). A temporal value model scores every state; per episode
the raw values are normalised and shaped into rewards (Eq. 2), which GAE and the success signal
turn into a class-balanced advantage (Eq. 3); the action head alone is trained with the clipped
surrogate and an adaptive penalty on the exact KL to the starting policy (Eq. 4). The frozen
body's features are computed once, while acting, and reused by every update epoch.

``--reward-mode sparse`` is the paper's ablation: the same pipeline with the success signal only
(the env runs without the value model, so every shaped reward is 0).

Beyond the paper: ``--head-basis-width`` (the default smooth change of the head's logits),
``--anchor-coef`` (a second KL to pi_ref, on states of the tasks not in ``--tasks``),
``--opposite-anchor-coef`` (a KL to pi_ref on the training states read under the opposite task's sentence),
``--chain-length`` (training episodes chained as the evaluation's subtasks) and
``--instruction-noise`` (random pseudo-words in the sentences the policy reads); RESULTS.md measures each.

Examples:
    python ppo_rftf.py --policy data/bc/state --value-model data/value/state --scenes ABC
    python ppo_rftf.py --policy data/bc/state --reward-mode sparse --scenes D
    torchrun --nproc_per_node 2 ppo_rftf.py --policy data/bc/state --value-model data/value/state

Re-running the same command resumes from the last checkpoint in ``<checkpoint-dir>/<run-name>``,
and first finishes that checkpoint's chained evaluation (``--eval-chains``) if a kill interrupted it.
"""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import tyro
from gymnasium.vector import AutoresetMode
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import rftf_gym  # noqa: F401  (registers RFTF-CALVIN-v0)
from rftf_gym import cli, tasks
from rftf_gym.conventions import EP_LEN, SCENES, Scene
from rftf_gym.env import CalvinEnv
from rftf_gym.files import atomic_write_bytes
from rftf_gym.language import insert_noise_words, instruction_for
from rftf_gym.models import (BinnedActionDistribution, SmoothHeadDelta, bins_to_actions, freeze_body, load_vla,
                             save_checkpoint)
from rftf_gym.wrappers import ChainedResets, ValueRewardVectorWrapper


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (first part of the run name)"""
    run_name: str | None = None
    """the run's name (TensorBoard runs/<run_name>, checkpoints <checkpoint_dir>/<run_name>);
    default <exp_name>__<scenes>__<reward_mode>__<seed>, so re-running a command resumes it"""
    seed: int = 1
    """seed of the experiment (rank r uses seed + r)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    torch_threads: int = 0
    """torch intra-op threads per process (0: torch's default); 1 is faster for small batches on a busy CPU"""
    device: str = "cpu"
    """torch device of the policy and value model ("cpu", "cuda", "cuda:1"; under torchrun a bare
    "cuda" means this rank's local GPU)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "rftf-gym"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""

    # Models and environments
    policy: str = "data/bc/state"
    """the behaviour-cloned VLA checkpoint to start from (the reference policy of the KL term)"""
    value_model: str | None = None
    """the value model checkpoint (train_value.py); needed by --reward-mode dense"""
    reward_mode: Literal["dense", "sparse"] = "dense"
    """"dense": value-model rewards (Eq. 2); "sparse": the paper's success-only ablation"""
    scenes: str = "ABC"
    """training scenes: "ABC" (generalisation setting) or "D" (adaptation setting), paper 4.1"""
    tasks: str = ""
    """comma-separated task names to train on, one per environment in turn (e.g.
    "open_drawer,turn_on_led"); empty: each episode's task is drawn among those applicable in its
    random layout (the paper's setting)"""
    num_envs: int = 8
    """parallel environments per rank (the policy and value model act on all of them in one batch)"""
    chain_length: int = 1
    """1: every training episode starts from a fresh random layout. N > 1: episodes are chained as
    the evaluation chains its subtasks (rftf_gym.wrappers.ChainedResets): after a success the next
    instruction starts where the last one ended, the arm included, up to N in a row (5 as CALVIN)"""
    start_states: Literal["random", "eval"] = "random"
    """where a fresh training episode starts: a random layout, or one of the official evaluation's
    192 initial states drawn uniformly (scene D only; its start states, never its chains or
    sentences; rftf_gym.wrappers.ChainedResets)"""
    text_encoder: str | None = None
    """the policy's instruction encoder in place of its checkpoint's (rftf_gym.text_encoder; None keeps
    it); the fine-tuned checkpoints record it. "snap-<the checkpoint's encoder>" reads every sentence
    of a task, the evaluation's held-out ones included, as the task's first training paraphrase
    (rftf_gym.text_encoder.SnapEncoder; RESULTS.md, "A sentence encoder for the held-out sentences")"""
    instruction_noise: int = 0
    """0: the policy reads each episode's paraphrase as drawn (the paper). K > 0: the policy acts and
    learns under the paraphrase with K random pseudo-words inserted, drawn anew for every episode
    (rftf_gym.language.insert_noise_words); the value model still reads the paraphrase. The
    fine-tuned heads gain under the training paraphrases and lose under the evaluation's held-out
    sentences; with K = 2 (chained from the evaluation's start states, three seeds) the held-out
    `open_drawer` no longer collapsed, but the Avg. Len. did not improve (RESULTS.md)"""
    async_envs: bool = False
    """if toggled, run the environments in worker processes (AsyncVectorEnv)"""
    max_episode_steps: int = EP_LEN
    """steps before an instruction episode is truncated (CALVIN's 360; smaller for quick runs)"""
    static_size: int = 200
    """rendered static camera size for image policies (official 200)"""
    gripper_size: int = 84
    """rendered gripper camera size for image policies (official 84)"""

    # Algorithm specific arguments
    total_episodes: int = 1000
    """instruction episodes to train on, all ranks together (the paper: roughly 1000)"""
    episodes_per_iteration: int = 16
    """finished episodes per policy update, all ranks together"""
    learning_rate: float | None = None
    """the learning rate of the trained head parameters (Adam); default 3e-2 for the smooth change
    (--head-basis-width > 0) and 1e-4 for the whole head. The smooth change's parameters each move
    21 bins' logits a little, the whole head's one bin's: on the shipped state BC in scene D (one
    task, 1 epoch of 4 minibatches per update) 3e-2 brings the KL to the start to --target-kl within
    5 updates. For the whole head (378-window BC, 8 updates of 16 episodes) the KL reached 0.0004 at
    1e-5, 0.004 at 3e-5, 0.042 at 1e-4 and 0.18 at 3e-4. The paper's 1e-7 suits its much larger VLAs"""
    gamma: float = 0.99
    """the discount factor of the shaped reward (Eq. 2) and of GAE (Eq. 3)"""
    gae_lambda: float = 0.95
    """the lambda of GAE (Eq. 3)"""
    eta_success: float = 0.25
    """the advantage scale of successful episodes (Eq. 3; paper 0.25)"""
    eta_failure: float = 1.0
    """the advantage scale of failed episodes (Eq. 3; paper 1)"""
    eta_mode: Literal["fixed", "balanced", "steps"] = "steps"
    """"fixed": --eta-success / --eta-failure as given (the paper's 0.25 / 1); "balanced": per update,
    from the success share p of its episodes, eta_success = min(1, (1-p)/p) and eta_failure =
    min(1, p/(1-p)), so both classes weigh the same in every update. At p = 0.8 (a strong VLA, the
    paper's regime) this is exactly the paper's 0.25 / 1; at p = 0.3 (a weak start) the fixed values
    make failures weigh 9x more than successes and the mean advantage about -0.9. "steps": the same
    rule with p the successful episodes' share of the update's steps, so the success term of Eq. 3
    averages to zero over the steps the loss averages over (failed episodes run to the step limit,
    successful ones stop early, so episode balance still leaves failures most of the steps). A batch
    of one class only keeps the fixed values. The default is "steps": on one task from the shipped state
    BC (18 % success) with the smooth head change, "fixed" pushed the policy off its start in the
    first updates (no success in updates 1-3), then swung between 2 and 10 successes of 16 and ended
    where it began (36/192 against 35/192 with the head frozen); "steps", same seed, climbed steadily
    to 152/192 (RESULTS.md)"""
    success_weight: float = 1.0
    """the size of Eq. 3's success indicator I = +-1 (paper 1). 0 is an ablation that keeps only the
    temporal feedback (the discounted sum of Eq. 2's shaped rewards) as the advantage"""
    task_baseline: int = 0
    """0: Eq. 3 as in the paper. N > 0: Eq. 3's indicator I minus its mean over the last N episodes of the
    same task before this update (a baseline per task, zero until a task has finished an episode). Every
    instruction shares one action head, so without it a task that always succeeds pushes its actions with
    +eta on every episode, also where other instructions look alike (opposite tasks' sentences differ by one
    word), and a task that always fails pulls with -eta; with it a task's update carries only its
    outcomes relative to its own recent rate, plus the temporal feedback. Measured with N = 16 (all
    tasks, scene D, 1920 episodes): no change chained from the evaluation's start states, 0.12 Avg.
    Len. lower from random layouts (RESULTS.md), so it is an ablation, off by default. With several ranks
    each rank counts its own episodes, and a resume gives every rank rank 0's counts"""
    value_norm: Literal["minmax", "zscore", "none"] = "minmax"
    """per-episode normalisation of the raw values before shaping (section 3.3)"""
    update_epochs: int = 1
    """the K epochs to update the policy (the head's 7000 logits make an epoch cost about a fifth
    of a state-variant rollout, so one epoch of several minibatches keeps the update short)"""
    num_minibatches: int = 4
    """the number of mini-batches per epoch (per rank)"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient epsilon (Eq. 4)"""
    init_beta: float = 0.05
    """the initial coefficient beta of the KL(pi_theta || pi_ref) penalty (Eq. 4)"""
    target_kl: float = 0.3
    """the KL to the starting policy that the adaptive beta aims at (nats per state, 7 dims summed).
    Single-task runs from the shipped state BC raised the success on their task from 18-35 % to
    62-79 % (measured with the head frozen) at a KL of 0.2-0.5, single updates up to 2.4 pulled
    back within a few updates (RESULTS.md); 0.05 leaves the policy near its start"""
    min_beta: float = 0.01
    """the floor of the adaptive beta. The KL to the start is ~0 for the first updates (the policy
    starts as pi_ref), and halving once per such update shrank beta from 0.05 to 0.0016 in a short
    run, so when the KL then grew the penalty was gone and took several doublings to come back.
    At 0.01 (a fifth of --init-beta) the leash never vanishes; 0 disables the floor"""
    max_beta: float = 1.0
    """the ceiling of the adaptive beta. At beta = 1 one nat of KL costs as much as the surrogate of
    a failed episode's step (|A| ~ eta_failure = 1, Eq. 3); beyond that the penalty only freezes the
    head, and repeated doubling after a KL spike would keep it frozen for many updates"""
    anchor_coef: float = 0.0
    """the weight of a second KL(pi_theta || pi_ref) penalty, taken on anchor states: states that the
    starting policy visits in episodes of every task not in --tasks. The head is shared by every
    instruction, so training some tasks moves the policy on the others as well, where Eq. 4's
    penalty (on the trained tasks' own states) cannot see it. 0: Eq. 4 alone, as in the paper"""
    anchor_episodes: int = 64
    """episodes of untrained tasks that the starting policy plays once, before the first update, to
    collect the anchor states (with --anchor-coef > 0)"""
    opposite_anchor_coef: float = 0.0
    """the weight of a KL(pi_theta || pi_ref) penalty on every training state of a task that has an
    opposite (rftf_gym.tasks.OPPOSITE_TASKS: slider, drawer, lights, rotations, pushes, stacking),
    read under a training paraphrase of the opposite task (one drawn per episode). The head is
    shared and the sentences of a pair differ by a word or two, so an update that pays one task's
    actions moves the other's as well; this penalty holds the opposite instruction's action
    distribution at pi_ref on the states being updated. For the rotations and pushes those are
    the opposite task's own start states; the slider, drawer, lights and stacking start where
    their opposite cannot, so there it holds the opposite instruction on the neighbouring states.
    With --instruction-noise the opposite's paraphrase is read without noise. 0: Eq. 4 alone, as
    in the paper"""
    max_grad_norm: float = 1.0
    """the maximum norm for the gradient clipping"""
    norm_adv: bool = False
    """if toggled, standardise advantages per minibatch (off: it would erase Eq. 3's success term)"""
    head_basis_width: float = 0.1
    """0: train every weight of the action head (the paper). > 0: freeze the head and train only a
    change of its last layer's logits spanned by Gaussian bumps of this width over the bin centres
    (rftf_gym.models.SmoothHeadDelta; 0.1 gives 21 bumps per dimension), so neighbouring bins move
    together. The policy gradient over 1000 free bins is mostly sampling noise at ~1000 episodes;
    projected on such bumps it agrees between halves of the episodes (BENCHMARKS.md,
    bench/grad_agreement.py). Checkpoints hold the plain head with the change folded in"""
    grad_agreement: bool = False
    """if toggled, log `losses/grad_half_cosine` each update: the cosine between the policy gradients
    of Eq. 4's surrogate (at ratio 1, before the update) from the even and the odd episodes of the
    batch. Near 0 the update is mostly sampling noise; it costs one extra pass over the batch"""

    # Evaluation and checkpoints
    checkpoint_dir: str = "checkpoints"
    """checkpoints go to <checkpoint_dir>/<run_name>/iter_XXXXXX (policy + trainer state)"""
    save_every: int = 1
    """save a checkpoint every N iterations (and at the end)"""
    keep_checkpoints: int = 2
    """how many of the latest checkpoints to keep"""
    eval_every: int = 0
    """run the chained evaluation (evaluate.py) every N iterations; 0: only at the end"""
    eval_chains: int = 0
    """chains per evaluation (the official ones, first N); 0: no evaluation"""
    eval_scene: Scene = "D"
    """scene of the chained evaluation"""
    eval_workers: int = 1
    """worker processes of the chained evaluation"""

    # to be filled in runtime
    world_size: int = 1
    """the number of processes (torchrun)"""
    num_iterations: int = 0
    """the number of policy updates (total_episodes // episodes_per_iteration)"""
    episodes_per_rank: int = 0
    """finished episodes per rank per iteration"""


# ALGO LOGIC: per-episode rewards and advantages (paper section 3.3)
def normalize_episode_values(values: np.ndarray, mode: str) -> np.ndarray:
    """Normalise the raw values of one episode (section 3.3: the value model's range varies across
    tasks).

    Args:
        values: raw values of the episode's states, shape (T,).
        mode: ``"minmax"`` (to [0, 1]), ``"zscore"`` (zero mean, unit std) or ``"none"``.

    Returns:
        float64 array (T,); all zeros when the values are constant (no progress signal).
    """
    v = np.asarray(values, dtype=np.float64)
    if mode == "none":
        return v.copy()
    if mode == "minmax":
        span = v.max() - v.min()
        return (v - v.min()) / span if span > 1e-12 else np.zeros_like(v)
    if mode == "zscore":
        std = v.std()
        return (v - v.mean()) / std if std > 1e-12 else np.zeros_like(v)
    raise ValueError(f"value normalisation must be 'minmax', 'zscore' or 'none', got {mode!r}")


def shaped_rewards(values: np.ndarray, gamma: float) -> np.ndarray:
    """Eq. 2: ``R_t = gamma * V(s_{t+1}) - V(s_t)`` for every step but the last, ``R_T = 0``.

    Args:
        values: (normalised) values of the states the policy acted in, s_0 .. s_T, shape (T+1,).
        gamma: the discount.

    Returns:
        float64 rewards (T+1,), one per action.
    """
    v = np.asarray(values, dtype=np.float64)
    rewards = np.zeros_like(v)
    rewards[:-1] = gamma * v[1:] - v[:-1]  # Eq. 2; the end step keeps R_T = 0
    return rewards


def balanced_advantages(
    rewards: np.ndarray, success: bool, gamma: float, gae_lambda: float, eta_success: float, eta_failure: float,
    success_weight: float = 1.0, baseline: float = 0.0,
) -> np.ndarray:
    """Eq. 3: ``A_t = eta * [I(success) + sum_{n>=t} (gamma*lambda)^(n-t) R_n]``.

    Args:
        rewards: the episode's shaped rewards (Eq. 2), shape (T+1,).
        success: whether the episode's task was done; I = +1 on success, -1 on failure.
        gamma, gae_lambda: GAE's discount and lambda.
        eta_success, eta_failure: the balancing coefficient eta (paper 0.25 and 1).
        success_weight: the size of I (paper 1); 0 leaves the temporal feedback alone (an ablation).
        baseline: subtracted from I (`task_baselines`; the paper: 0).

    Returns:
        float64 advantages (T+1,).
    """
    eta, indicator = (eta_success, success_weight) if success else (eta_failure, -success_weight)
    indicator -= baseline
    advantages = np.zeros(len(rewards), dtype=np.float64)
    lastgaelam = 0.0
    for t in reversed(range(len(rewards))):
        lastgaelam = rewards[t] + gamma * gae_lambda * lastgaelam
        advantages[t] = eta * (indicator + lastgaelam)  # Eq. 3
    return advantages


def class_balanced_etas(successes: int, failures: int, eta_success: float, eta_failure: float) -> tuple[float, float]:
    """The eta of Eq. 3 that gives successes and failures equal total weight in one update.

    ``successes`` and ``failures`` count episodes or steps of each class. With p the success share,
    ``eta_success = min(1, (1-p)/p)`` and ``eta_failure = min(1, p/(1-p))``:
    the larger class is scaled down to the size of the smaller one. The paper's fixed 0.25 / 1
    (section 3.3) is this rule at p = 0.8. With only one class present the fixed values are returned.
    """
    if successes == 0 or failures == 0:
        return eta_success, eta_failure
    return min(1.0, failures / successes), min(1.0, successes / failures)


def task_baselines(history: dict[str, list[float]]) -> dict[str, float]:
    """Per task, the mean of Eq. 3's indicator I over its last episodes (``history``: task ->
    indicators, oldest first), the baseline `balanced_advantages` subtracts with --task-baseline."""
    return {task: float(np.mean(past)) for task, past in history.items() if past}


def record_outcomes(history: dict[str, list[float]], episodes: list[Any], success_weight: float, keep: int) -> None:
    """Append each episode's indicator I (+-success_weight) to its task's history, keeping the last ``keep``."""
    for episode in episodes:
        past = history.setdefault(episode.task, [])
        past.append(success_weight if episode.success else -success_weight)
        del past[:-keep]


def ppo_loss(
    newlogprob: torch.Tensor,
    oldlogprob: torch.Tensor,
    advantages: torch.Tensor,
    kl_ref: torch.Tensor,
    beta: float,
    clip_coef: float,
) -> dict[str, torch.Tensor]:
    """Eq. 4: the clipped surrogate minus beta times KL(pi_theta || pi_ref), as a loss to minimise.

    Args:
        newlogprob: log pi_theta(a_t | s_t), summed over the 7 dimensions, (B,).
        oldlogprob: log-probability under the policy that collected the step, (B,).
        advantages: Eq. 3's advantages, (B,).
        kl_ref: exact KL(pi_theta(.|s_t) || pi_ref(.|s_t)) per state, (B,).
        beta: the KL coefficient.
        clip_coef: epsilon.

    Returns:
        ``loss``, ``pg_loss``, ``kl_ref`` (means), ``approx_kl`` (k3 estimate of
        KL(pi_old || pi_theta)) and ``clipfrac`` (share of clipped ratios); all but ``loss`` detached.
    """
    logratio = newlogprob - oldlogprob
    ratio = logratio.exp()
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()
    kl = kl_ref.mean()
    loss = pg_loss + beta * kl  # Eq. 4
    with torch.no_grad():
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    return {"loss": loss, "pg_loss": pg_loss.detach(), "kl_ref": kl.detach(), "approx_kl": approx_kl, "clipfrac": clipfrac}


def anchor_kl(head: torch.nn.Module, ref_head: torch.nn.Module, features: torch.Tensor, num_bins: int) -> torch.Tensor:
    """The exact KL(pi_theta || pi_ref) per state (7 dims summed) of a batch of body features."""
    return frozen_kl_fn(head, ref_head, features, num_bins)(torch.arange(len(features), device=features.device))


def frozen_kl_fn(head: torch.nn.Module, ref_head: torch.nn.Module, features: torch.Tensor, num_bins: int) -> Any:
    """``kl(rows)``: the exact KL(pi_theta || pi_ref) per state (7 dims summed) of ``features[rows]``,
    with pi_ref's logits (and, for `SmoothHeadDelta`, the frozen hidden layer) computed once here."""
    n = len(features)
    with torch.no_grad():
        if isinstance(head, SmoothHeadDelta):
            hidden, ref_logits = head.frozen_outputs(features)
        else:
            hidden, ref_logits = None, ref_head(features)
        ref_log_probs = torch.log_softmax(ref_logits.view(n, -1, num_bins).float(), -1)

    def kl(rows: torch.Tensor) -> torch.Tensor:
        new_logits = head.with_change(hidden[rows], ref_logits[rows]) if hidden is not None else head(features[rows])
        new = BinnedActionDistribution(new_logits.view(len(rows), -1, num_bins))
        return (new.probs * (new.log_probs - ref_log_probs[rows])).sum((-1, -2))

    return kl


def opposite_features(vla, obs: dict[str, Any], current: list[Episode], rng: np.random.Generator) -> dict[int, torch.Tensor]:
    """Env index -> (F,) body features of its observation read under a training paraphrase of its
    episode's opposite task (`rftf_gym.tasks.OPPOSITE_TASKS`), drawn at the episode's first step
    and kept for the episode (``Episode.opposite_sentence``). Envs whose task has no opposite are
    left out (and cost no forward pass)."""
    rows, read = [], []
    for i, episode in enumerate(current):
        opposite = tasks.OPPOSITE_TASKS.get(episode.task)
        if opposite is not None:
            if episode.opposite_sentence is None:
                episode.opposite_sentence = instruction_for(opposite, "train", rng)
            rows.append(i)
            read.append(episode.opposite_sentence)
    if not rows:
        return {}
    features = vla.features(vla.preprocess({key: np.asarray(obs[key])[rows] for key in vla.config.obs_keys}, read))
    return dict(zip(rows, features.cpu()))


def opposite_batch(episodes: list[Episode]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """For the batch of ``episodes``' steps in order: row j's index among the stacked
    opposite-instruction features (-1 where the episode's task has no opposite), and those
    features (None when no episode has them)."""
    has_opposite = torch.tensor([bool(e.opposite_features) for e in episodes for _ in range(len(e))])
    rows = torch.where(has_opposite, has_opposite.long().cumsum(0) - 1, -1)
    features = [f for e in episodes for f in e.opposite_features]
    return rows, (torch.stack(features) if features else None)


def half_gradient_cosine(head: torch.nn.Module, log_prob_fn: Any, advantages: torch.Tensor,
                         episode_index: torch.Tensor) -> float:
    """Agreement of the policy gradient between two halves of an update's episodes.

    The gradient of Eq. 4's clipped surrogate at ratio 1 (before any step) is
    ``-mean_t A_t * grad log pi(a_t | s_t)``; it is formed once from the even-numbered and once from
    the odd-numbered episodes (whole episodes, so one episode's correlated steps stay on one side),
    and their cosine is returned. With true gradient g and per-half noise of variance sigma^2 / n,
    the expected cosine is about |g|^2 / (|g|^2 + sigma^2 / n): near 0 the batch is too small to
    show a direction, and doubling n roughly halves (1 - cos) / cos.

    Args:
        head: the trained module (its ``.grad`` are overwritten, then zeroed).
        log_prob_fn: ``log_prob_fn(rows) -> (len(rows),)`` log pi_theta of the taken actions.
        advantages: Eq. 3's advantages (N,).
        episode_index: the episode each sample belongs to (N,).

    Returns:
        The cosine in [-1, 1]; 0.0 when a half has no samples or no gradient.
    """
    grads = []
    for half in (0, 1):
        rows = torch.nonzero(episode_index % 2 == half).squeeze(1)
        if len(rows) == 0:
            return 0.0
        head.zero_grad(set_to_none=False)
        (-(advantages[rows] * log_prob_fn(rows)).mean()).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in head.parameters() if p.grad is not None]).clone())
    head.zero_grad(set_to_none=False)
    norms = grads[0].norm() * grads[1].norm()
    return float(grads[0] @ grads[1] / norms) if norms > 0 else 0.0


def adapt_beta(
    beta: float, kl: float, target_kl: float, min_beta: float = 0.0, max_beta: float = float("inf")
) -> float:
    """The adaptive KL coefficient of PPO (Schulman et al. 2017, arXiv 1707.06347, section 4):
    halve beta when the KL is below target/1.5, double it above target*1.5; the result is kept in
    [min_beta, max_beta] so the KL leash of Eq. 4 neither vanishes nor freezes the policy."""
    if kl < target_kl / 1.5:
        beta = beta / 2.0
    elif kl > target_kl * 1.5:
        beta = beta * 2.0
    return min(max(beta, min_beta), max_beta)


# Rollout storage: whole episodes, each with the frozen body's features of every state.
@dataclass
class Episode:
    task: str
    scene: str
    features: list[torch.Tensor] = field(default_factory=list)
    bins: list[torch.Tensor] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    opposite_features: list[torch.Tensor] = field(default_factory=list)  # --opposite-anchor-coef
    opposite_sentence: str | None = None  # the opposite task's paraphrase it is read under
    values: np.ndarray | None = None  # raw V(s_0..s_T, s_final) from the reward wrapper
    success: bool = False

    def __len__(self) -> int:
        return len(self.logprobs)


class TimedValue:
    """A value model callable that adds up the seconds spent in it."""

    def __init__(self, value_fn: Any) -> None:
        from rftf_gym.wrappers import value_context

        self.value_fn = value_fn
        self.context = value_context(value_fn)  # the reward wrappers supply start frames by it
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def __call__(self, obs: dict[str, np.ndarray], instructions: list[str]) -> np.ndarray:
        start, cpu = time.perf_counter(), time.process_time()
        values = self.value_fn(obs, instructions)
        self.seconds += time.perf_counter() - start
        self.cpu_seconds += time.process_time() - cpu
        return values


class EpisodeSentences:
    """The sentence the policy reads in each env's current episode (``--instruction-noise``).

    With ``noise_words`` K > 0, an episode's sentence is drawn at its first step as the env's
    sentence with K pseudo-words inserted (`rftf_gym.language.insert_noise_words`) and kept until
    the episode ends or the env's sentence changes; with 0 the env's sentences pass through.

    Args:
        num_envs: parallel environments.
        noise_words: pseudo-words per sentence.
        rng: the generator of the words.
    """

    def __init__(self, num_envs: int, noise_words: int, rng: np.random.Generator) -> None:
        self.noise_words, self.rng = noise_words, rng
        self.read: list[tuple[str, str] | None] = [None] * num_envs
        """per env: (the env's sentence, the sentence the policy reads), None before a draw"""

    def __call__(self, env_sentences: list[str]) -> list[str]:
        if self.noise_words == 0:
            return env_sentences
        for i, sentence in enumerate(env_sentences):
            if self.read[i] is None or self.read[i][0] != sentence:
                self.read[i] = (sentence, insert_noise_words(sentence, self.noise_words, self.rng))
        return [pair[1] for pair in self.read]

    def end_episode(self, i: int) -> None:
        """Env i's episode ended: its next one draws new words, even under the same sentence."""
        self.read[i] = None


def load_value_fn(path: str, device: torch.device) -> tuple[Any, str]:
    """The value model's batched predict function and the observation mode it reads."""
    from rftf_gym.value_model import load_value_model

    model = load_value_model(path, device=device).eval()
    return model.predict, model.config.obs_mode


def env_obs_mode(*model_obs_modes: str) -> str:
    """The env observation mode that feeds every model (image models also read robot_obs)."""
    return "rgb+state" if any(mode != "state" for mode in model_obs_modes) else "state"


def make_env(args: Args, scene: str, obs_mode: str, task: str | None = None):
    def thunk() -> gym.Env:
        env = CalvinEnv(
            scene=scene,
            task=task,
            obs_mode=obs_mode,
            static_size=args.static_size,
            gripper_size=args.gripper_size,
            instruction_split="train",  # paper 4.1.4: fine-tuning never sees the test sentences
        )
        if args.max_episode_steps < EP_LEN:
            env = gym.wrappers.TimeLimit(env, args.max_episode_steps)
        if args.chain_length > 1 or args.start_states != "random":
            env = ChainedResets(env, args.chain_length, args.start_states)
        return env

    return thunk


def head_checksum(head: torch.nn.Module) -> float:
    """A float fingerprint of the head's weights (compared across ranks)."""
    return float(sum((p.detach().double() * (i + 1)).sum().item() for i, p in enumerate(head.parameters())))


def all_reduce_mean(values: list[float], world_size: int) -> list[float]:
    if world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return (tensor / world_size).tolist()


def all_gather_objects(obj: Any, world_size: int) -> list[Any]:
    if world_size == 1:
        return [obj]
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


# Checkpoints: <checkpoint_dir>/<run_name>/iter_XXXXXX/{config.json, model.safetensors,
# trainer.safetensors, trainer.json} and latest.json naming the newest complete one.
# States on which the exact KL between the policies before and after an update is logged.
KL_PROBE = 512
# Settings a resumed run must share with its checkpoint (--total-episodes may grow: a run can be extended).
RESUME_FIELDS = ("policy", "value_model", "reward_mode", "scenes", "episodes_per_iteration", "world_size",
                 "head_basis_width", "text_encoder")
LEGACY_VALUES = {"head_basis_width": 0.0, "task_baseline": 0, "instruction_noise": 0, "text_encoder": None,
                 "opposite_anchor_coef": 0.0}
"""What a checkpoint written before a field existed ran with: before --head-basis-width, the whole head;
before --text-encoder, the policy's own encoder; before --opposite-anchor-coef, no such penalty."""
NOTED_FIELDS = ("learning_rate", "target_kl", "eta_mode", "eta_success", "eta_failure", "success_weight", "update_epochs",
                "num_minibatches", "clip_coef", "value_norm", "gamma", "gae_lambda", "anchor_coef", "anchor_episodes",
                "chain_length", "start_states", "task_baseline", "instruction_noise", "opposite_anchor_coef")
"""Settings a resumed run may change, but which are named when they differ from the checkpoint's."""


def save_trainer(
    run_dir: Path, iteration: int, vla, optimizer: torch.optim.Optimizer, state: dict[str, Any], keep: int,
    decoding: str = "greedy",
) -> Path:
    """Write one checkpoint directory, then point latest.json at it (atomic); prune old ones.
    ``decoding`` is the starting checkpoint's (how evaluate.py acts with it), so the fine-tuned
    policy is evaluated the same way as the policy it started from."""
    from safetensors.torch import save

    directory = run_dir / f"iter_{iteration:06d}"
    head, tensors = vla.action_head, {}
    if isinstance(head, SmoothHeadDelta):  # the policy checkpoint holds the plain, folded head
        vla.action_head = head.folded()
        tensors = {f"head_delta.{name}": p.detach().cpu().contiguous() for name, p in (("weight", head.weight), ("bias", head.bias))}
    try:
        save_checkpoint(directory, vla, metadata={"rftf": state}, decoding=decoding)
    finally:
        vla.action_head = head
    opt = optimizer.state_dict()
    scalars = {}
    for index, entries in opt["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value) and value.ndim > 0:
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = float(value)
    atomic_write_bytes(directory / "trainer.safetensors", save(tensors))
    trainer = {"state": state, "optimizer_scalars": scalars, "param_groups": opt["param_groups"]}
    atomic_write_bytes(directory / "trainer.json", (json.dumps(trainer, indent=2, sort_keys=True) + "\n").encode())
    atomic_write_bytes(run_dir / "latest.json", (json.dumps({"checkpoint": directory.name}) + "\n").encode())
    done = sorted(p for p in run_dir.glob("iter_*") if p.is_dir() and p != directory)
    for old in done[: max(0, len(done) - (keep - 1))]:
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    return directory


def load_trainer(run_dir: Path, args: Args, optimizer: torch.optim.Optimizer,
                 head_delta: SmoothHeadDelta | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The latest checkpoint of a run and its trainer state, or None for a fresh run; with
    ``head_delta``, its trained parameters are restored too.

    Raises:
        ValueError: the checkpoint was made with other settings (names each that differs).
    """
    from safetensors.torch import load_file

    latest = run_dir / "latest.json"
    if not latest.is_file():
        return None
    directory = run_dir / json.loads(latest.read_text())["checkpoint"]
    trainer = json.loads((directory / "trainer.json").read_text())
    saved = trainer["state"]["args"]
    differ = [f"{k}: checkpoint {saved.get(k, LEGACY_VALUES.get(k))!r} vs now {getattr(args, k)!r}"
              for k in RESUME_FIELDS if saved.get(k, LEGACY_VALUES.get(k)) != getattr(args, k)]
    if differ:
        raise ValueError(
            f"cannot resume {directory}: it was made with other settings ({'; '.join(differ)}); "
            "use another --run-name or the same settings"
        )
    tensors = load_file(str(directory / "trainer.safetensors"))
    if head_delta is not None:
        for name in ("weight", "bias"):
            saved_delta = tensors.pop(f"head_delta.{name}", None)
            target = getattr(head_delta, name)
            if saved_delta is None or saved_delta.shape != target.shape:
                raise ValueError(f"cannot resume {directory}: trainer.safetensors has no head_delta.{name} of shape "
                                 f"{tuple(target.shape)} for --head-basis-width {args.head_basis_width}")
            with torch.no_grad():
                target.copy_(saved_delta)
    state: dict[int, dict[str, Any]] = defaultdict(dict)
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state[int(index)][name] = value
    for key, value in trainer["optimizer_scalars"].items():
        index, name = key.split(".", 1)
        state[int(index)][name] = torch.tensor(value)
    optimizer.load_state_dict({"state": dict(state), "param_groups": trainer["param_groups"]})
    return directory, trainer["state"]


TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
                "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT")
"""Variables torchrun sets for each rank (torch.distributed.run)."""


def evaluated_at(args: Args, iteration: int) -> bool:
    """Whether the chained evaluation (--eval-chains) runs after ``iteration``: every --eval-every
    iterations and after the last."""
    return args.eval_chains > 0 and (bool(args.eval_every and iteration % args.eval_every == 0) or iteration == args.num_iterations)


def evaluation_dir(run_dir: Path, iteration: int) -> Path:
    """Where evaluate.py writes the chained evaluation of a run's checkpoint of ``iteration``."""
    return run_dir / "eval" / f"iter_{iteration:06d}"


def run_evaluation(args: Args, checkpoint: Path, obs_mode: str, iteration: int) -> dict[str, Any]:
    """The chained evaluation of a checkpoint through evaluate.py; returns its metrics.json."""
    out = evaluation_dir(checkpoint.parent, iteration)
    command = [
        sys.executable, str(Path(__file__).with_name("evaluate.py")),
        "--policy", str(checkpoint), "--num-chains", str(args.eval_chains), "--scene", args.eval_scene,
        "--obs-mode", obs_mode, "--num-workers", str(args.eval_workers), "--output-dir", str(out),
        "--seed", str(args.seed), "--device", "cpu",
    ]
    # Without torchrun's variables: evaluate.py would read RANK / WORLD_SIZE as its own sharding and
    # wait for ranks that never come.
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV and not k.startswith("TORCHELASTIC_")}
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return json.loads((out / "metrics.json").read_text())


def log_evaluation(writer: SummaryWriter, metrics: dict[str, Any], global_step: int) -> None:
    """The chained evaluation's Avg. Len. and L1..L5 success rates to TensorBoard."""
    writer.add_scalar("eval/avg_len", metrics["avg_len"]["value"], global_step)
    for i, entry in metrics["chain_sr"].items():
        writer.add_scalar(f"eval/chain_sr_{i}", entry["value"], global_step)


def anchor_tasks(args: Args) -> list[str]:
    """The tasks whose states anchor the policy: every CALVIN task not in ``--tasks`` that a fresh
    episode can start (none when ``--tasks`` is empty: then every task is drawn for training). No
    random layout starts a task that needs a block held, in the drawer or stacked."""
    from rftf_gym.experts import needs_constructed_start

    trained = set(training_tasks(args))
    return [task for task in tasks.TASK_SPECS if trained and task not in trained and not needs_constructed_start(task)]


def collect_anchor_features(args: Args, vla, ref_head: torch.nn.Module, obs_mode: str, scenes: list[str], seed: int,
                            device: torch.device, show: bool = True) -> tuple[torch.Tensor, list[str]]:
    """(N, F) body features of every state that pi_ref visits in ``args.anchor_episodes`` episodes
    of the anchor tasks, and the task of each episode. One env per scene of ``scenes`` draws a task
    per episode (so each task comes as often as random layouts make it applicable; episodes of
    trained tasks are played but not kept), with the training sentences; env i is seeded seed + i.

    Actions are sampled from pi_ref's head with a generator of their own, so the anchors are the
    same on resume and the training rollouts do not depend on them.
    """
    anchored = set(anchor_tasks(args))
    num_envs = len(scenes)
    envs = gym.vector.SyncVectorEnv([make_env(args, scene, obs_mode) for scene in scenes], autoreset_mode=AutoresetMode.SAME_STEP)
    generator = torch.Generator(device=device).manual_seed(seed)
    obs, info = envs.reset(seed=[seed + i for i in range(num_envs)])
    running: list[list[torch.Tensor]] = [[] for _ in range(num_envs)]
    played = 0
    kept: list[torch.Tensor] = []
    episodes: list[str] = []
    progress = tqdm(total=args.anchor_episodes, desc="anchor episodes", disable=not show)
    while len(episodes) < args.anchor_episodes:
        task = list(info["task"])
        with torch.no_grad():
            features = vla.features(vla.preprocess(obs, list(obs["instruction"])))
            logits = ref_head(features).view(num_envs, -1, vla.config.num_bins)
            bins = BinnedActionDistribution(logits).sample(generator)
        features = features.cpu()
        obs, _, terminations, truncations, info = envs.step(bins_to_actions(bins.cpu(), vla.config.num_bins).numpy())
        for i in range(num_envs):
            if task[i] in anchored:
                running[i].append(features[i])
            if terminations[i] or truncations[i]:  # SAME_STEP autoreset: info is the next episode's
                if running[i] and len(episodes) < args.anchor_episodes:
                    kept.extend(running[i])
                    episodes.append(task[i])
                    progress.update(1)
                running[i] = []
                played += 1
        if played > 20 * args.anchor_episodes + 200:  # anchor tasks that random layouts almost never draw
            raise RuntimeError(f"only {len(episodes)} of {played} episodes were of the anchor tasks {sorted(anchored)}; "
                               "lower --anchor-episodes or train fewer tasks")
    progress.close()
    envs.close()
    return torch.stack(kept).to(device), episodes


def training_tasks(args: Args) -> list[str]:
    """The task names of ``--tasks`` (empty: a task drawn per episode)."""
    return [t.strip() for t in args.tasks.split(",") if t.strip()]


def check_args(args: Args) -> None:
    """Raises ValueError naming the first bad argument."""
    if not args.scenes or not set(args.scenes) <= set(SCENES):
        raise ValueError(f"--scenes must be letters among A-D, got {args.scenes!r}")
    for task in training_tasks(args):
        if task not in tasks.TASK_SPECS:
            raise ValueError(f"--tasks: unknown task {task!r} (one of the 34 CALVIN tasks, rftf_gym.tasks.TASK_SPECS)")
    if not (np.isfinite(args.success_weight) and args.success_weight >= 0):
        raise ValueError(f"--success-weight must be a finite number >= 0, got {args.success_weight}")
    if args.reward_mode == "sparse" and args.success_weight == 0:
        raise ValueError("--reward-mode sparse with --success-weight 0 leaves every advantage at 0: nothing to learn")
    if args.reward_mode == "dense" and args.value_model is None:
        raise ValueError("--reward-mode dense needs --value-model (or use --reward-mode sparse)")
    if not 1 <= args.max_episode_steps <= EP_LEN:
        raise ValueError(f"--max-episode-steps must be in [1, {EP_LEN}], got {args.max_episode_steps}")
    for name in ("num_envs", "chain_length", "episodes_per_iteration", "update_epochs", "num_minibatches", "save_every", "keep_checkpoints"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if (args.learning_rate or 0.0) < 0 or args.clip_coef <= 0 or args.target_kl <= 0 or args.init_beta < 0:
        raise ValueError("--learning-rate and --init-beta must be >= 0, --clip-coef and --target-kl > 0")
    if not 0 <= args.min_beta <= args.init_beta <= args.max_beta:
        raise ValueError(
            f"beta must satisfy 0 <= --min-beta <= --init-beta <= --max-beta, got {args.min_beta}, "
            f"{args.init_beta}, {args.max_beta}"
        )
    if not (args.head_basis_width == 0 or 0 < args.head_basis_width <= 2):
        raise ValueError(f"--head-basis-width must be 0 (the whole head) or in (0, 2], got {args.head_basis_width}")
    if not (np.isfinite(args.anchor_coef) and args.anchor_coef >= 0):
        raise ValueError(f"--anchor-coef must be a finite number >= 0, got {args.anchor_coef}")
    if not (np.isfinite(args.opposite_anchor_coef) and args.opposite_anchor_coef >= 0):
        raise ValueError(f"--opposite-anchor-coef must be a finite number >= 0, got {args.opposite_anchor_coef}")
    if args.opposite_anchor_coef > 0 and training_tasks(args) and not any(t in tasks.OPPOSITE_TASKS for t in training_tasks(args)):
        raise ValueError("--opposite-anchor-coef acts on the states of tasks that have an opposite "
                         "(rftf_gym.tasks.OPPOSITE_TASKS), and none of --tasks has one")
    if args.anchor_coef > 0 and not anchor_tasks(args):
        raise ValueError("--anchor-coef anchors the tasks not in --tasks that a fresh episode can start, and every "
                         "such task is trained: name the trained tasks with --tasks or leave --anchor-coef at 0")
    if args.start_states == "eval" and args.scenes != "D":
        raise ValueError(f"--start-states eval draws the evaluation's initial states, which are scene D's; got --scenes {args.scenes}")
    if args.instruction_noise < 0:
        raise ValueError(f"--instruction-noise must be >= 0, got {args.instruction_noise}")
    if args.anchor_episodes < 1:
        raise ValueError(f"--anchor-episodes must be >= 1, got {args.anchor_episodes}")
    if not (0 < args.gamma <= 1 and 0 <= args.gae_lambda <= 1):
        raise ValueError(f"--gamma must be in (0, 1] and --gae-lambda in [0, 1], got {args.gamma}, {args.gae_lambda}")
    if args.task_baseline < 0:
        raise ValueError(f"--task-baseline must be >= 0 episodes (0: off), got {args.task_baseline}")


PROG = "ppo_rftf.py"

if __name__ == "__main__":
    args = tyro.cli(Args)
    if args.learning_rate is None:
        args.learning_rate = 3e-2 if args.head_basis_width > 0 else 1e-4
    cli.report_disk_errors(PROG)
    with cli.usage_errors(PROG):  # a mistake in the arguments: one line, exit status 2
        check_args(args)

    # Multi-process set-up as cleanrl/ppo_atari_multigpu.py: gloo on CPU, NCCL on GPU.
    local_rank = int(os.getenv("LOCAL_RANK", "0"))
    args.world_size = int(os.getenv("WORLD_SIZE", "1"))
    if args.world_size > 1:
        # Rank 0 runs the chained evaluations (--eval-chains) alone while the other ranks wait at
        # their next collective; 1000 chains take longer than the default 30-minute timeout.
        waiting = {"timeout": timedelta(hours=12)} if args.eval_chains > 0 else {}
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo", **waiting)
    rank = dist.get_rank() if args.world_size > 1 else 0
    with cli.usage_errors(PROG):
        if args.episodes_per_iteration % args.world_size:
            raise ValueError(f"--episodes-per-iteration ({args.episodes_per_iteration}) must divide among {args.world_size} ranks")
        if args.total_episodes < args.episodes_per_iteration:
            raise ValueError("--total-episodes must be at least --episodes-per-iteration")
    args.episodes_per_rank = args.episodes_per_iteration // args.world_size
    args.num_iterations = args.total_episodes // args.episodes_per_iteration
    scenes_tag = "".join(sorted(args.scenes))
    run_name = args.run_name or f"{args.exp_name}__{scenes_tag}__{args.reward_mode}__{args.seed}"
    run_dir = Path(args.checkpoint_dir) / run_name
    device = torch.device(f"cuda:{local_rank}" if args.device == "cuda" and args.world_size > 1 else args.device)

    # TRY NOT TO MODIFY: seeding (rank r gets seed + r, as cleanrl/ppo_atari_multigpu.py)
    seed = args.seed + rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    generator = torch.Generator(device=device).manual_seed(seed)

    with cli.usage_errors(PROG):  # a missing or broken --policy checkpoint
        vla = load_vla(args.policy, device=device, text_encoder=args.text_encoder)
        decoding = json.loads((Path(args.policy) / "config.json").read_text()).get("decoding", "greedy")
    freeze_body(vla)
    head = vla.action_head
    ref_head = copy.deepcopy(head).requires_grad_(False)  # pi_ref: the starting policy (Eq. 4)
    if args.head_basis_width > 0:  # only a smooth change of the last layer is trained
        head = vla.action_head = SmoothHeadDelta(head, vla.config.num_bins, args.head_basis_width)
    trainable = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=args.learning_rate, eps=1e-5)

    start_iteration, global_step, episodes_done, beta = 1, 0, 0, args.init_beta
    task_history: dict[str, list[float]] = {}  # --task-baseline: each task's last indicators, oldest first
    run_dir.mkdir(parents=True, exist_ok=True)
    with cli.usage_errors(PROG):  # a checkpoint of other settings
        resumed = load_trainer(run_dir, args, optimizer, head if isinstance(head, SmoothHeadDelta) else None)
    if resumed is not None:
        directory, state = resumed
        if not isinstance(head, SmoothHeadDelta):  # a smooth change was restored by load_trainer
            head.load_state_dict({k[len("action_head."):]: v for k, v in load_vla(directory, device=device).state_dict().items()
                                  if k.startswith("action_head.")})
        start_iteration = state["iteration"] + 1
        global_step, episodes_done = state["global_step"], state["episodes"]
        beta = min(max(state["beta"], args.min_beta), args.max_beta)  # new bounds apply on resume
        keep = max(args.task_baseline, 1)  # a resume may shorten the window
        task_history = {task: list(past)[-keep:] for task, past in state.get("task_history", {}).items()}
        for group in optimizer.param_groups:  # the optimizer state carries the checkpoint's rate
            group["lr"] = args.learning_rate
        # A fresh, iteration-dependent stream, so a resumed run does not replay its first rollouts.
        generator.manual_seed(seed + 7919 * state["iteration"])
        if rank == 0:
            print(f"resumed from {directory} (iteration {state['iteration']}, {episodes_done} episodes)")
            saved_args = {**LEGACY_VALUES, **state["args"]}
            changed = [f"{k} {saved_args[k]!r} -> {getattr(args, k)!r}" for k in NOTED_FIELDS
                       if k in saved_args and saved_args[k] != getattr(args, k)]
            if changed:  # e.g. defaults that changed since the run started
                print(f"note: continuing with settings other than the checkpoint's: {'; '.join(changed)}")

    if rank == 0:
        if args.track:
            import wandb

            wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                       config=vars(args), name=run_name, save_code=True, resume="allow", id=run_name)
        # On resume, drop only the events logged after the checkpoint (a killed run's unsaved
        # iterations); the checkpoint's own iteration was logged at step global_step and stays.
        writer = SummaryWriter(f"runs/{run_name}", purge_step=global_step + 1 if resumed else None)
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))
        # Killed during the evaluation after its checkpoint was saved: finish it (evaluate.py resumes
        # its own results), since the loop below starts after that iteration. Whether it was due is
        # decided with the settings the checkpoint ran under (--eval-*, --total-episodes may change).
        if resumed is not None:
            saved = replace(args, **{k: state["args"][k] for k in ("eval_chains", "eval_every", "eval_scene", "num_iterations")
                                     if k in state["args"]})
            if evaluated_at(saved, state["iteration"]) and not (evaluation_dir(run_dir, state["iteration"]) / "metrics.json").exists():
                print(f"evaluating {directory}: its chained evaluation did not finish")
                try:
                    log_evaluation(writer, run_evaluation(saved, directory, env_obs_mode(vla.config.obs_mode), state["iteration"]),
                                   global_step)
                except subprocess.CalledProcessError as error:  # e.g. evaluate.py refuses results of other code
                    print(f"warning: the evaluation of {directory} failed (exit {error.returncode}); training goes on "
                          f"without it (run evaluate.py on that checkpoint to see why)")

    # env setup: rank r's env i runs scene scenes[(r * num_envs + i) % len(scenes)]
    value_fn, value_obs_mode = None, "state"
    if args.value_model is not None:
        with cli.usage_errors(PROG):
            raw_value_fn, value_obs_mode = load_value_fn(args.value_model, device)
        value_fn = TimedValue(raw_value_fn)
    obs_mode = env_obs_mode(vla.config.obs_mode, value_obs_mode)
    scene_of = [args.scenes[(rank * args.num_envs + i) % len(args.scenes)] for i in range(args.num_envs)]
    task_list = training_tasks(args)
    task_of = [task_list[(rank * args.num_envs + i) % len(task_list)] if task_list else None for i in range(args.num_envs)]
    thunks = [make_env(args, scene, obs_mode, task) for scene, task in zip(scene_of, task_of)]
    if args.async_envs:
        envs = gym.vector.AsyncVectorEnv(thunks, shared_memory=False, autoreset_mode=AutoresetMode.SAME_STEP)
    else:
        envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=AutoresetMode.SAME_STEP)
    if args.reward_mode == "dense":
        envs = ValueRewardVectorWrapper(envs, value_fn, reward_mode="dense", gamma=args.gamma)
    env_seed = int(np.random.SeedSequence([args.seed, rank, start_iteration]).generate_state(1)[0] % 2**31)
    next_obs, info = envs.reset(seed=[env_seed + i for i in range(args.num_envs)])
    current = [Episode(task=str(info["task"][i]), scene=scene_of[i]) for i in range(args.num_envs)]
    backlog: list[Episode] = []
    # Seeded per (seed, rank, start iteration), as the envs are.
    sentences = EpisodeSentences(args.num_envs, args.instruction_noise,
                                 np.random.default_rng([args.seed, rank, start_iteration, 31337]))
    opposite_rng = np.random.default_rng([args.seed, rank, start_iteration, 271828])  # --opposite-anchor-coef

    if rank == 0 and args.chain_length > 1 and task_list:
        print("note: with --tasks each env keeps its task, so a chain goes on only where that task applies again "
              "after its success (never for a switch, a door or the drawer)")
    anchors = None
    if args.anchor_coef > 0:
        # Rank r's anchor envs play its training scenes, seeded apart from every other rank's.
        anchors, anchor_episodes = collect_anchor_features(args, vla, ref_head, env_obs_mode(vla.config.obs_mode), scene_of,
                                                           args.seed + 104729 + 1_000_003 * rank, device, show=rank == 0)
        if rank == 0:
            print(f"anchors: {len(anchors)} states of {len(anchor_episodes)} episodes of {len(set(anchor_episodes))} "
                  f"untrained tasks")

    progress = tqdm(total=args.total_episodes, initial=episodes_done, desc="episodes", disable=rank != 0)
    start_time = time.time()
    step_at_start = global_step
    for iteration in range(start_iteration, args.num_iterations + 1):
        iteration_start, iteration_cpu = time.time(), time.process_time()
        value_before = (value_fn.seconds, value_fn.cpu_seconds) if value_fn is not None else (0.0, 0.0)
        finished, backlog = backlog, []
        rollout_steps = 0
        vla.eval()
        # ROLLOUT: sample from pi_theta until this rank has its share of finished episodes.
        # An episode still running at the end carries over: its stored log-probs are those of
        # the policy that acted, which is what the ratio of Eq. 4 divides by.
        while len(finished) < args.episodes_per_rank:
            with torch.no_grad():
                batch = vla.preprocess(next_obs, sentences(list(next_obs["instruction"])))
                features = vla.features(batch)
                action_dist = vla.distribution(features)
                bins = action_dist.sample(generator)
                logprob = action_dist.log_prob(bins)
                opposite = opposite_features(vla, next_obs, current, opposite_rng) if args.opposite_anchor_coef > 0 else {}
            actions = bins_to_actions(bins.cpu(), vla.config.num_bins).numpy()
            next_obs, reward, terminations, truncations, info = envs.step(actions)
            rollout_steps += args.num_envs
            features, bins, logprob = features.cpu(), bins.cpu(), logprob.cpu()
            for i in range(args.num_envs):
                episode = current[i]
                episode.features.append(features[i])
                if i in opposite:
                    episode.opposite_features.append(opposite[i])
                episode.bins.append(bins[i])
                episode.logprobs.append(float(logprob[i]))
                if terminations[i] or truncations[i]:
                    # CalvinEnv terminates exactly when the instruction's task is done.
                    episode.success = bool(terminations[i])
                    if "episode_values" in info:
                        episode.values = info["episode_values"][i]
                    finished.append(episode)
                    # SAME_STEP autoreset: info now describes the new episode's reset.
                    current[i] = Episode(task=str(info["task"][i]), scene=scene_of[i])
                    sentences.end_episode(i)
        global_step += rollout_steps * args.world_size
        rollout_time, rollout_cpu = time.time() - iteration_start, time.process_time() - iteration_cpu
        value_time, value_cpu = ((value_fn.seconds - value_before[0], value_fn.cpu_seconds - value_before[1])
                                 if value_fn is not None else (0.0, 0.0))
        # Episodes that ended on the last step beyond this rank's share wait for the next update.
        finished, backlog = finished[: args.episodes_per_rank], finished[args.episodes_per_rank:]

        # ALGO LOGIC: rewards (Eq. 2) and balanced advantages (Eq. 3), per episode
        update_start, update_cpu = time.time(), time.process_time()
        b_advantages, shaped_sum, shaped_steps, raw_values = [], 0.0, 0, []
        eta_success, eta_failure = args.eta_success, args.eta_failure
        if args.eta_mode != "fixed":  # counted over all ranks, so every rank uses the same etas
            weight = (lambda e: 1) if args.eta_mode == "balanced" else len  # per episode or per step
            n_success = sum(weight(e) for e in finished if e.success)
            n_failure = sum(weight(e) for e in finished if not e.success)
            counts = all_reduce_mean([float(n_success), float(n_failure)], args.world_size)
            eta_success, eta_failure = class_balanced_etas(round(counts[0] * args.world_size), round(counts[1] * args.world_size),
                                                           args.eta_success, args.eta_failure)
        baselines = task_baselines(task_history) if args.task_baseline > 0 else {}
        for episode in finished:
            if episode.values is not None:
                # The wrapper's values cover s_0 .. s_T and the final state; the policy acted in s_0 .. s_T.
                acted = np.asarray(episode.values[: len(episode)], dtype=np.float64)
                raw_values.append(acted)
                values = normalize_episode_values(acted, args.value_norm)
            else:  # sparse ablation: no value model, no shaping
                values = np.zeros(len(episode))
            rewards = shaped_rewards(values, args.gamma)  # Eq. 2
            shaped_sum += float(rewards.sum())
            shaped_steps += len(rewards)
            b_advantages.append(balanced_advantages(rewards, episode.success, args.gamma, args.gae_lambda,
                                                    eta_success, eta_failure, args.success_weight,
                                                    baselines.get(episode.task, 0.0)))  # Eq. 3
        if args.task_baseline > 0:  # this update's outcomes enter the baselines of the next ones only
            record_outcomes(task_history, finished, args.success_weight, args.task_baseline)
        b_features = torch.stack([f for e in finished for f in e.features]).to(device)
        b_bins = torch.stack([b for e in finished for b in e.bins]).to(device)
        b_logprobs = torch.tensor([lp for e in finished for lp in e.logprobs], dtype=torch.float32, device=device)
        b_advantages = torch.as_tensor(np.concatenate(b_advantages), dtype=torch.float32, device=device)
        b_success = torch.tensor([e.success for e in finished for _ in range(len(e))], device=device)
        opposite_kl = None
        if args.opposite_anchor_coef > 0:
            b_opposite_row, b_opposite_features = opposite_batch(finished)
            b_opposite_row = b_opposite_row.to(device)
            if b_opposite_features is not None:
                opposite_kl = frozen_kl_fn(head, ref_head, b_opposite_features.to(device), vla.config.num_bins)

        # ALGO LOGIC: PPO update of the action head (Eq. 4)
        num_samples = len(b_logprobs)
        with torch.no_grad():
            # pi_ref is frozen: its log-probabilities over all bins are computed once per update.
            if isinstance(head, SmoothHeadDelta):
                # The frozen head's part of the logits is computed once; it is also pi_ref's.
                b_hidden, b_head_logits = head.frozen_outputs(b_features)
                b_ref_logprobs = torch.log_softmax(b_head_logits.view(num_samples, *b_bins.shape[1:], -1).float(), -1)

                def policy(rows: Any) -> BinnedActionDistribution:
                    return BinnedActionDistribution(head.with_change(b_hidden[rows], b_head_logits[rows]).view(len(rows), *b_bins.shape[1:], -1))
            else:
                b_ref_logprobs = torch.log_softmax(ref_head(b_features).view(num_samples, *b_bins.shape[1:], -1).float(), -1)

                def policy(rows: Any) -> BinnedActionDistribution:
                    return vla.distribution(b_features[rows])
            probe = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed + iteration))[:KL_PROBE]
            probe_old_logits = vla.logits(b_features[probe])
        head.train()
        stats = defaultdict(list)
        if args.grad_agreement:
            b_episode = torch.tensor([i for i, e in enumerate(finished) for _ in range(len(e))], device=device)
            stats["grad_half_cosine"].append(half_gradient_cosine(
                head, lambda rows: policy(rows).log_prob(b_bins[rows]), b_advantages, b_episode))
        kl_ref_last_epoch = torch.zeros((), dtype=torch.float64)
        anchor_rows = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, iteration, 104729]).generate_state(1)[0]))
        for epoch in range(args.update_epochs):
            permutation = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed * 1000 + iteration * 10 + epoch))
            for mb_inds in np.array_split(permutation.numpy(), args.num_minibatches):
                optimizer.zero_grad()
                if len(mb_inds):
                    new_dist = policy(mb_inds)
                    newlogprob = new_dist.log_prob(b_bins[mb_inds])
                    # The exact KL(pi_theta || pi_ref) over the 1000-bin categoricals, summed over
                    # dims (BinnedActionDistribution.kl, on the cached reference log-probabilities).
                    kl_ref = (new_dist.probs * (new_dist.log_probs - b_ref_logprobs[mb_inds])).sum((-1, -2))
                    mb_advantages = b_advantages[mb_inds]
                    if args.norm_adv and len(mb_inds) > 1:
                        mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                    out = ppo_loss(newlogprob, b_logprobs[mb_inds], mb_advantages, kl_ref, beta, args.clip_coef)
                    loss = out["loss"]
                    if anchors is not None:  # the policy held at pi_ref on the untrained tasks' states
                        rows = torch.randint(len(anchors), (len(mb_inds),), generator=anchor_rows)
                        kl_anchor = anchor_kl(head, ref_head, anchors[rows], vla.config.num_bins).mean()
                        loss = loss + args.anchor_coef * kl_anchor
                        stats["kl_anchor"].append(float(kl_anchor.detach()))
                    if args.opposite_anchor_coef > 0:  # pi_ref's action for the opposite instruction, same states
                        rows = b_opposite_row[mb_inds]
                        rows = rows[rows >= 0]
                        kl_opposite = 0.0  # per state of the minibatch: states of tasks without an opposite add 0
                        if len(rows):
                            kl = opposite_kl(rows).sum() / len(mb_inds)
                            loss = loss + args.opposite_anchor_coef * kl
                            kl_opposite = float(kl.detach())
                        stats["kl_opposite"].append(kl_opposite)
                    loss.backward()
                    for key in ("pg_loss", "kl_ref", "approx_kl", "clipfrac"):
                        stats[key].append(float(out[key]))
                    with torch.no_grad():
                        stats["entropy"].append(float(new_dist.entropy().mean()))
                    if epoch == args.update_epochs - 1:
                        kl_ref_last_epoch += kl_ref.detach().double().sum()
                if args.world_size > 1:
                    # Gradients of the head averaged over ranks (cleanrl/ppo_atari_multigpu.py).
                    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in trainable]
                    flat = torch.cat([g.reshape(-1) for g in grads])
                    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
                    flat /= args.world_size
                    offset = 0
                    for p in trainable:
                        p.grad = flat[offset: offset + p.numel()].view_as(p).clone()
                        offset += p.numel()
                torch.nn.utils.clip_grad_norm_(trainable, args.max_grad_norm)
                optimizer.step()
        head.eval()

        # The exact KL to pi_ref of every sample, as the last epoch met it, drives beta; the exact
        # KL(pi_old || pi_theta) of this update is measured on a probe of the batch.
        with torch.no_grad():
            kl_old_new = float(BinnedActionDistribution(probe_old_logits).kl(vla.distribution(b_features[probe])).mean())
        kl_ref_after = float(kl_ref_last_epoch) / num_samples
        kl_ref_after, kl_old_new = all_reduce_mean([kl_ref_after, kl_old_new], args.world_size)
        beta_used = beta
        beta = adapt_beta(beta, kl_ref_after, args.target_kl, args.min_beta, args.max_beta)  # once per iteration, same on every rank
        update_time, update_cpu = time.time() - update_start, time.process_time() - update_cpu

        # Logging: everything gathered to rank 0.
        local = {
            "episodes": [(e.task, e.scene, e.success, len(e)) for e in finished],
            "adv": b_advantages.cpu().numpy(), "adv_success": b_success.cpu().numpy(),
            "shaped": (shaped_sum, shaped_steps), "raw_values": [float(v.mean()) for v in raw_values],
            "stats": {k: float(np.mean(v)) if v else 0.0 for k, v in stats.items()},
            "times": (rollout_time, value_time, update_time, rollout_cpu, update_cpu, value_cpu), "checksum": head_checksum(head),
        }
        gathered = all_gather_objects(local, args.world_size)
        checksums = [g["checksum"] for g in gathered]
        if max(checksums) - min(checksums) > 1e-6 * max(1.0, abs(checksums[0])):
            raise RuntimeError(f"action-head weights differ across ranks after iteration {iteration}: {checksums}")
        episodes_done += args.episodes_per_iteration
        if rank == 0:
            progress.update(args.episodes_per_iteration)
            eps = [e for g in gathered for e in g["episodes"]]
            adv = np.concatenate([g["adv"] for g in gathered])
            adv_success = np.concatenate([g["adv_success"] for g in gathered]).astype(bool)
            successes = np.array([s for _, _, s, _ in eps], dtype=np.float64)
            writer.add_scalar("rftf/train_success", successes.mean(), global_step)
            writer.add_scalar("rftf/episode_length", np.mean([n for *_, n in eps]), global_step)
            per_task: dict[str, list[bool]] = defaultdict(list)
            for task, scene, success, _ in eps:
                per_task[task].append(success)
            for task, outcomes in per_task.items():
                writer.add_scalar(f"rftf/task_success/{task}", np.mean(outcomes), global_step)
            shaped_total = sum(g["shaped"][0] for g in gathered)
            shaped_count = max(1, sum(g["shaped"][1] for g in gathered))
            writer.add_scalar("rftf/reward_shaped_mean", shaped_total / shaped_count, global_step)
            writer.add_scalar("rftf/reward_shaped_per_episode", shaped_total / len(eps), global_step)
            writer.add_scalar("rftf/reward_success_per_episode", successes.mean(), global_step)
            raw = [v for g in gathered for v in g["raw_values"]]
            if raw:
                writer.add_scalar("rftf/value_raw_mean", np.mean(raw), global_step)
            writer.add_scalar("rftf/adv_mean", adv.mean(), global_step)
            writer.add_scalar("rftf/eta_success", eta_success, global_step)
            writer.add_scalar("rftf/eta_failure", eta_failure, global_step)
            writer.add_scalar("rftf/adv_std", adv.std(), global_step)
            writer.add_scalar("rftf/adv_min", adv.min(), global_step)
            writer.add_scalar("rftf/adv_max", adv.max(), global_step)
            if adv_success.any():
                writer.add_scalar("rftf/adv_success_mean", adv[adv_success].mean(), global_step)
            if (~adv_success).any():
                writer.add_scalar("rftf/adv_failure_mean", adv[~adv_success].mean(), global_step)
            mean_stats = {k: np.mean([g["stats"].get(k, 0.0) for g in gathered]) for k in gathered[0]["stats"]}
            for key in ("pg_loss", "approx_kl", "clipfrac", "entropy"):
                writer.add_scalar(f"losses/{key}", mean_stats.get(key, 0.0), global_step)
            writer.add_scalar("losses/kl_ref_minibatch", mean_stats.get("kl_ref", 0.0), global_step)
            if anchors is not None:
                writer.add_scalar("rftf/kl_anchor", mean_stats.get("kl_anchor", 0.0), global_step)
            if args.opposite_anchor_coef > 0:
                writer.add_scalar("rftf/kl_opposite", mean_stats.get("kl_opposite", 0.0), global_step)
            if args.grad_agreement:
                writer.add_scalar("losses/grad_half_cosine", mean_stats.get("grad_half_cosine", 0.0), global_step)
            writer.add_scalar("rftf/kl_ref", kl_ref_after, global_step)
            writer.add_scalar("losses/exact_kl_old_new", kl_old_new, global_step)
            writer.add_scalar("rftf/beta", beta_used, global_step)
            rollout_t = max(g["times"][0] for g in gathered)
            value_t = max(g["times"][1] for g in gathered)
            update_t = max(g["times"][2] for g in gathered)
            writer.add_scalar("charts/rollout_time", rollout_t, global_step)
            writer.add_scalar("charts/value_time", value_t, global_step)
            writer.add_scalar("charts/update_time", update_t, global_step)
            writer.add_scalar("charts/update_fraction", update_t / (rollout_t + update_t), global_step)
            rollout_c, update_c = max(g["times"][3] for g in gathered), max(g["times"][4] for g in gathered)
            writer.add_scalar("charts/rollout_cpu_time", rollout_c, global_step)
            writer.add_scalar("charts/update_cpu_time", update_c, global_step)
            writer.add_scalar("charts/value_cpu_time", max(g["times"][5] for g in gathered), global_step)
            writer.add_scalar("charts/rollout_steps", rollout_steps * args.world_size, global_step)
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            writer.add_scalar("charts/episodes", episodes_done, global_step)
            writer.add_scalar("charts/SPS", int((global_step - step_at_start) / (time.time() - start_time)), global_step)
            progress.set_postfix(success=f"{successes.mean():.2f}", kl=f"{kl_ref_after:.4f}", beta=f"{beta_used:.3g}")

        state = {"iteration": iteration, "global_step": global_step, "episodes": episodes_done, "beta": beta,
                 "kl_ref": kl_ref_after, "head_checksums": checksums, "args": asdict(args), "task_history": task_history}
        last = iteration == args.num_iterations
        checkpoint = None
        if rank == 0 and (iteration % args.save_every == 0 or last):
            checkpoint = save_trainer(run_dir, iteration, vla, optimizer, state, args.keep_checkpoints, decoding)
        if rank == 0 and evaluated_at(args, iteration):
            if checkpoint is None:
                checkpoint = save_trainer(run_dir, iteration, vla, optimizer, state, args.keep_checkpoints, decoding)
            log_evaluation(writer, run_evaluation(args, checkpoint, env_obs_mode(vla.config.obs_mode), iteration), global_step)
        if args.world_size > 1:
            dist.barrier()

    progress.close()
    envs.close()
    if rank == 0:
        writer.close()
    if args.world_size > 1:
        dist.destroy_process_group()
