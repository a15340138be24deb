"""How much of an RFTF update is signal: agreement of the policy gradient between episode halves.

Rolls out a policy (sampled 1000-bin actions, training paraphrases, one scene) with the value-reward
wrapper, then, for several advantages (Eq. 3 as the paper sets it, the success term alone, the
success term balanced by steps, and the temporal feedback alone), forms the policy gradient of
Eq. 4's surrogate at ratio 1 for the action head's last layer from the even and from the odd
episodes, and reports the cosine between the two. The expected cosine is about
``|g|^2 / (|g|^2 + sigma^2 / n)`` for n episodes per half: near 0 the update is sampling noise.

The gradient is also projected on smooth functions of the bin centre (Gaussian bumps of a given
width): the last-layer gradient of a head whose 1000 bin logits are ``B @ theta`` (bins sharing
parameters, so reinforcing one action also reinforces its neighbours). It is computed from the same
episodes as ``(onehot(a) - p) @ B`` times the layer's input, for each width.

Cosines are given per simulated update (``--group`` episodes, half per side) and for all the
episodes split in two. The table goes to BENCHMARKS.md (section ``grad_agreement``).

    python bench/grad_agreement.py --policy pretrained/state/bc --value-model pretrained/state/value
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import tyro
from gymnasium.vector import AutoresetMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from markdown_section import write_section  # noqa: E402

import ppo_rftf  # noqa: E402
from rftf_gym.conventions import Scene  # noqa: E402
from rftf_gym.env import CalvinEnv  # noqa: E402
from rftf_gym.models import bins_to_actions, load_vla, smooth_bin_basis  # noqa: E402
from rftf_gym.value_model import load_value_model  # noqa: E402
from rftf_gym.wrappers import ValueRewardVectorWrapper  # noqa: E402

SECTION = "grad_agreement"
VARIANTS = {
    "paper": "Eq. 3 as in the paper: dense, eta 0.25 / 1",
    "sparse": "success term alone (sparse ablation), eta 0.25 / 1",
    "sparse_steps": "success term alone, eta balanced by steps",
    "feedback": "temporal feedback alone (success weight 0), eta 0.25 / 1",
}


@dataclass
class Args:
    policy: str = "pretrained/state/bc"
    """a state-variant VLA checkpoint (train_bc.py or ppo_rftf.py)"""
    value_model: str = "pretrained/state/value"
    """a value-model checkpoint (train_value.py)"""
    scene: Scene = "D"
    """the scene of the rollouts"""
    episodes: int = 384
    """finished instruction episodes to collect"""
    group: int = 32
    """episodes per simulated update (half on each side)"""
    widths: tuple[float, ...] = (0.02, 0.05, 0.1)
    """widths of the smooth bases, in action units (the bins span [-1, 1]); bumps spaced one width apart"""
    num_envs: int = 8
    """environments stepped together"""
    seed: int = 3
    """seed of the environments and of the action sampling"""
    gamma: float = 0.99
    """Eq. 2 and Eq. 3's discount"""
    gae_lambda: float = 0.95
    """Eq. 3's lambda"""
    torch_threads: int = 1
    """torch CPU threads"""
    write: bool = True
    """write the table to BENCHMARKS.md"""


def collect(args: Args) -> list[dict]:
    """Roll out the policy; keep per step the last layer's input, the bin probabilities and bins."""
    vla = load_vla(args.policy)
    vla.eval()
    value_model = load_value_model(args.value_model)
    head = vla.action_head
    thunks = [lambda: CalvinEnv(scene=args.scene, obs_mode="state", instruction_split="train")] * args.num_envs
    envs = ValueRewardVectorWrapper(gym.vector.SyncVectorEnv(thunks, autoreset_mode=AutoresetMode.SAME_STEP),
                                    value_model, reward_mode="dense", gamma=args.gamma)
    obs, _ = envs.reset(seed=[args.seed * 1000 + i for i in range(args.num_envs)])
    generator = torch.Generator().manual_seed(args.seed)
    current: list[dict] = [{"h": [], "p": [], "bins": []} for _ in range(args.num_envs)]
    done: list[dict] = []
    while len(done) < args.episodes:
        with torch.no_grad():
            features = vla.features(vla.preprocess(obs, list(obs["instruction"])))
            hidden = head[:-1](features)  # the input of the last Linear, which maps it to the bin logits
            dist = vla.distribution(features)
            bins = dist.sample(generator)
        obs, _, terminations, truncations, info = envs.step(bins_to_actions(bins, vla.config.num_bins).numpy())
        for i in range(args.num_envs):
            episode = current[i]
            episode["h"].append(hidden[i].half())
            episode["p"].append(dist.probs[i].half())
            episode["bins"].append(bins[i])
            if terminations[i] or truncations[i]:
                episode["success"] = bool(terminations[i])
                episode["values"] = np.asarray(info["episode_values"][i][: len(episode["h"])], dtype=np.float64)
                done.append(episode)
                current[i] = {"h": [], "p": [], "bins": []}
    envs.close()
    return done[: args.episodes]


def advantages(episodes: list[dict], variant: str, args: Args) -> list[np.ndarray]:
    """Eq. 3's advantages of every episode under one variant."""
    if variant == "sparse_steps":
        n_success = sum(len(e["h"]) for e in episodes if e["success"])
        n_failure = sum(len(e["h"]) for e in episodes) - n_success
        eta_success, eta_failure = ppo_rftf.class_balanced_etas(n_success, n_failure, 0.25, 1.0)
    else:
        eta_success, eta_failure = 0.25, 1.0
    out = []
    for e in episodes:
        if variant in ("paper", "feedback"):
            values = ppo_rftf.normalize_episode_values(e["values"], "minmax")
            rewards = ppo_rftf.shaped_rewards(values, args.gamma)  # Eq. 2
        else:
            rewards = np.zeros(len(e["h"]))
        out.append(ppo_rftf.balanced_advantages(rewards, e["success"], args.gamma, args.gae_lambda, eta_success,
                                                eta_failure, 0.0 if variant == "feedback" else 1.0))  # Eq. 3
    return out


def last_layer_gradient(episodes: list[dict], advs: list[np.ndarray], basis: torch.Tensor | None) -> torch.Tensor:
    """The surrogate's gradient at ratio 1, ``-mean_t A_t grad log pi(a_t|s_t)``, for the last layer
    (through ``basis`` when given), flattened."""
    total = sum(len(e["h"]) for e in episodes)
    grad = None
    for e, adv in zip(episodes, advs):
        hidden = torch.stack(e["h"]).float()
        dlogits = -torch.stack(e["p"]).float()
        bins = torch.stack(e["bins"])
        dlogits.scatter_add_(2, bins[..., None], torch.ones(bins.shape + (1,)))  # d log pi / d logits
        dlogits *= torch.as_tensor(adv, dtype=torch.float32)[:, None, None] * (-1.0 / total)
        if basis is not None:
            dlogits = dlogits @ basis
        part = torch.einsum("tdk,th->dkh", dlogits, hidden)
        grad = part if grad is None else grad + part
    return grad.reshape(-1)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    norms = float(a.norm() * b.norm())
    return float(a @ b) / norms if norms > 0 else 0.0


def main(args: Args) -> str:
    torch.set_num_threads(args.torch_threads)
    if args.group < 2 or args.group % 2 or args.episodes < args.group:
        raise ValueError(f"--group must be even and >= 2, and --episodes >= --group; got {args.group}, {args.episodes}")
    load_before = np.round(np.array(os.getloadavg()), 2)
    start = time.time()
    episodes = collect(args)
    collect_min = (time.time() - start) / 60
    successes = sum(e["success"] for e in episodes)
    bases = {"1000 bins (the head as it is)": None}
    for width in args.widths:
        basis = smooth_bin_basis(episodes[0]["p"][0].shape[-1], width)
        bases[f"smooth, width {width:g} ({basis.shape[1]} bumps)"] = basis
    rows = []
    for variant, label in VARIANTS.items():
        advs = advantages(episodes, variant, args)
        for name, basis in bases.items():
            per_update = []
            for u in range(0, len(episodes) - args.group + 1, args.group):
                eps, ad = episodes[u: u + args.group], advs[u: u + args.group]
                per_update.append(cosine(last_layer_gradient(eps[0::2], ad[0::2], basis),
                                         last_layer_gradient(eps[1::2], ad[1::2], basis)))
            whole = cosine(last_layer_gradient(episodes[0::2], advs[0::2], basis),
                           last_layer_gradient(episodes[1::2], advs[1::2], basis))
            sd = np.std(per_update, ddof=1) if len(per_update) > 1 else float("nan")
            rows.append(f"| {label} | {name} | {np.mean(per_update):+.3f} ± {sd:.3f} | {whole:+.3f} |")
            print(rows[-1], flush=True)
    load_after = np.round(np.array(os.getloadavg()), 2)
    command = "python bench/grad_agreement.py " + " ".join(sys.argv[1:])
    body = "\n".join([
        "## Policy-gradient agreement between episode halves (`bench/grad_agreement.py`)",
        "",
        (f"`{command.strip()}`: policy `{args.policy}`, value model `{args.value_model}`, scene {args.scene}, "
        f"{len(episodes)} sampled training episodes ({successes} successful), seed {args.seed}; "
        f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), load average {load_before[0]} before and "
        f"{load_after[0]} after; rollouts {collect_min:.1f} min. Cosine between the action head's last-layer "
        f"policy gradients (Eq. 4's surrogate at ratio 1) of the even and the odd episodes: per simulated update of "
        f"{args.group} episodes (mean ± sd over {len(episodes) // args.group} updates), and over all "
        f"{len(episodes)} episodes ({len(episodes) // 2} per half). 'smooth' rows project the bin-logit gradient on "
        "Gaussian bumps over the bin centres: the gradient a head whose bins share parameters would get."),
        "",
        f"| advantage | gradient | per update ({args.group} episodes) | all {len(episodes)} episodes |",
        "|---|---|---|---|",
        *rows,
    ])
    if args.write:
        write_section(SECTION, body)
    return body


if __name__ == "__main__":
    main(tyro.cli(Args))
