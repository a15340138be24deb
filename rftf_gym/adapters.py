"""Plugging an external VLA with continuous actions into the toolkit's 1000-bin interface.

RFTF fine-tunes VLAs whose action heads regress continuous actions (Seer, GR-MG); to obtain the
probability term of the PPO objective it "discretize[s] the model's output with 1000 bins"
(arXiv 2505.19767, section 4.1.4) and trains the action head alone. `BinnedVLAAdapter` does this
for any model that can say what its frozen features and its continuous action head are
(`ExternalVLA`): per dimension, the categorical over the 1000 bins of [-1, 1] is the Gaussian of
mean = the head's continuous action and a learned std, integrated over each bin, so

- the greedy action (most probable bin) is the model's own action, binned;
- ``log_prob`` is differentiable in the head's parameters (and the std), which is what PPO
  updates, while the features stay fixed.

The adapter has the methods the toolkit's trainers call on `rftf_gym.models.VLA` (``preprocess``,
``features``, ``logits``, ``distribution``, ``act``, ``body``, ``action_head``), so it drops in.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class MyVLA(nn.Module):                      # the user's model
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.encoder = nn.Linear(15, 32)     # stands in for vision/language encoders
    ...         self.action_head = nn.Sequential(nn.Linear(32, 7), nn.Tanh())
    ...     def preprocess(self, obs, instructions):
    ...         return {"robot_obs": torch.as_tensor(obs["robot_obs"], dtype=torch.float32)}
    ...     def features(self, batch):
    ...         return self.encoder(batch["robot_obs"])
    >>> vla = BinnedVLAAdapter(MyVLA())
    >>> vla.act({"robot_obs": torch.zeros(2, 15).numpy()}, ["open the drawer"] * 2).shape
    (2, 7)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from rftf_gym.models import ACTION_DIM, NUM_BINS, BinnedActionDistribution, bins_to_actions


@runtime_checkable
class ExternalVLA(Protocol):
    """What an external VLA must provide.

    ``action_head`` maps features (B, F) to continuous actions (B, 7) in [-1, 1] (CALVIN's
    relative action, gripper sign = open / close); it is the only part RFTF trains.
    """

    action_head: nn.Module

    def preprocess(self, obs: Mapping[str, Any], instructions: Sequence[str]) -> Any:
        """Env observations (numpy, batch axis first) and sentences -> the model's inputs."""

    def features(self, batch: Any) -> torch.Tensor:
        """The frozen part: inputs -> features (B, F)."""


class _Body(nn.Module):
    """The external model minus its action head, as the frozen ``body`` trainers expect."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> torch.Tensor:
        return self.model.features(batch)


class BinnedContinuousHead(nn.Module):
    """Continuous head -> logits over bins: each bin's log of the Gaussian(mean, std) mass in it.

    Args:
        head: features (B, F) -> actions (B, 7); means are clipped to [-1, 1].
        num_bins: bins per dimension over [-1, 1].
        init_std: initial std of every dimension, in action units (0.01 = 5 bins).
    """

    def __init__(self, head: nn.Module, num_bins: int = NUM_BINS, init_std: float = 0.01) -> None:
        super().__init__()
        if init_std <= 0:
            raise ValueError(f"init_std must be > 0, got {init_std}")
        self.head = head
        self.num_bins = num_bins
        self.log_std = nn.Parameter(torch.full((ACTION_DIM,), math.log(init_std)))
        self.register_buffer("edges", torch.linspace(-1.0, 1.0, num_bins + 1), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        mean = self.head(features).float()
        if mean.shape != (features.shape[0], ACTION_DIM):
            raise ValueError(f"the action head must return (B, {ACTION_DIM}) actions, got {tuple(mean.shape)}")
        mean = mean.clamp(-1.0, 1.0)
        std = self.log_std.exp()
        z = (self.edges - mean[..., None]) / std[:, None]  # (B, 7, num_bins + 1)
        cdf = torch.special.ndtr(z)
        # the end bins take the tails, so each row sums to 1; log of a clamped mass keeps far bins finite
        cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf[..., 1:-1], torch.ones_like(cdf[..., :1])], dim=-1)
        return torch.log((cdf[..., 1:] - cdf[..., :-1]).clamp_min(1e-30))


class BinnedVLAAdapter(nn.Module):
    """An `ExternalVLA` behind the toolkit's binned-VLA interface.

    Args:
        model: the external VLA (an ``nn.Module`` following `ExternalVLA`).
        num_bins: bins per action dimension.
        init_std: initial std of the Gaussian around the model's action (action units).
        required_obs: observation keys the model reads (for evaluation's env workers).
    """

    def __init__(self, model: nn.Module, num_bins: int = NUM_BINS, init_std: float = 0.01,
                 required_obs: Sequence[str] = ("robot_obs",)) -> None:
        super().__init__()
        missing = [name for name in ("preprocess", "features", "action_head") if not hasattr(model, name)]
        if missing:
            raise TypeError(f"an external VLA needs preprocess(), features() and action_head; {type(model).__name__} lacks {missing}")
        self.external = model
        self.body = _Body(model)
        self.action_head = BinnedContinuousHead(model.action_head, num_bins, init_std)
        self.num_bins = num_bins
        self.required_obs = tuple(required_obs)
        self.inference_dtype: torch.dtype | None = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def preprocess(self, obs: Mapping[str, Any], instructions: Sequence[str] | None = None) -> Any:
        return self.external.preprocess(obs, instructions)

    def features(self, batch: Any) -> torch.Tensor:
        return self.body(batch)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.action_head(features)

    def distribution(self, features: torch.Tensor) -> BinnedActionDistribution:
        return BinnedActionDistribution(self.logits(features))

    def forward(self, batch: Any) -> torch.Tensor:
        return self.logits(self.features(batch))

    @torch.no_grad()
    def act(self, obs: Mapping[str, Any], instructions: Sequence[str] | None, greedy: bool = True,
            generator: torch.Generator | None = None) -> np.ndarray:
        """Env actions (B, 7): the binned continuous action (greedy) or a sampled bin's centre."""
        dist = self.distribution(self.features(self.preprocess(obs, instructions)))
        bins = dist.mode() if greedy else dist.sample(generator)
        return bins_to_actions(bins.cpu(), self.num_bins).numpy()
