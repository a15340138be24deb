"""The external-VLA adapter: continuous actions binned into a Gaussian over 1000 bins."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from rftf_gym.adapters import BinnedContinuousHead, BinnedVLAAdapter
from rftf_gym.models import actions_to_bins


class Constant(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = nn.Parameter(torch.as_tensor(value, dtype=torch.float32))

    def forward(self, features):
        return self.value.expand(features.shape[0], -1)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(15, 8)
        self.action_head = nn.Sequential(nn.Linear(8, 7), nn.Tanh())

    def preprocess(self, obs, instructions):
        return torch.as_tensor(np.asarray(obs["robot_obs"]), dtype=torch.float32)

    def features(self, batch):
        return self.encoder(batch)


def test_bin_masses_hand_values():
    """4 bins of [-1, 1] (edges -1, -0.5, 0, 0.5, 1), mean 0.25, std 0.5 (log_std set):
    masses Phi(-1.5), Phi(-0.5) - Phi(-1.5), Phi(0.5) - Phi(-0.5), 1 - Phi(0.5); end bins take the tails."""
    head = BinnedContinuousHead(Constant([0.25] * 7), num_bins=4, init_std=0.5)
    logits = head(torch.zeros(1, 3))
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    expected = [phi(-1.5), phi(-0.5) - phi(-1.5), phi(0.5) - phi(-0.5), 1 - phi(0.5)]
    np.testing.assert_allclose(logits[0, 0].exp().detach().numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(logits.exp().sum(-1).detach().numpy(), 1.0, rtol=1e-5)


def test_adapter_mode_is_the_models_action_and_head_gets_gradients():
    torch.manual_seed(0)
    toy = Toy()
    vla = BinnedVLAAdapter(toy)
    obs = {"robot_obs": np.random.default_rng(0).normal(size=(5, 15))}
    batch = vla.preprocess(obs, ["x"] * 5)
    feats = vla.features(batch)
    continuous = toy.action_head(feats)
    dist = vla.distribution(feats)
    assert torch.equal(dist.mode()[:, :6], actions_to_bins(continuous)[:, :6])
    actions = vla.act(obs, ["x"] * 5)
    np.testing.assert_allclose(actions[:, :6], continuous[:, :6].detach().numpy(), atol=1e-3)
    np.testing.assert_array_equal(actions[:, 6], np.where(continuous[:, 6].detach().numpy() >= 0, 1.0, -1.0))
    # PPO's term: log-prob of chosen bins, differentiable in the head (not the frozen features)
    lp = vla.distribution(feats.detach()).log_prob(dist.mode()).sum()
    lp.backward()
    assert toy.action_head[0].weight.grad is not None and vla.action_head.log_std.grad is not None
    assert toy.encoder.weight.grad is None


def test_adapter_rejects_incomplete_models():
    with pytest.raises(TypeError, match=r"lacks \['preprocess', 'features', 'action_head'\]"):
        BinnedVLAAdapter(nn.Linear(3, 7))
    with pytest.raises(ValueError, match="init_std"):
        BinnedContinuousHead(nn.Linear(3, 7), init_std=0.0)
