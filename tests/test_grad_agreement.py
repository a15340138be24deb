"""bench/grad_agreement.py: the last-layer policy gradient it forms by hand equals autograd's."""

import numpy as np
import pytest
import torch
from conftest import load_bench_module


@pytest.fixture(scope="module")
def bench():
    return load_bench_module("grad_agreement")


def _episodes(layer, rng, lengths):
    episodes = []
    for n in lengths:
        hidden = torch.randn(n, layer.in_features, generator=rng)
        logits = layer(hidden).view(n, 7, -1)
        bins = torch.distributions.Categorical(logits=logits).sample()
        episodes.append({"h": list(hidden), "p": list(torch.softmax(logits, -1).detach()), "bins": list(bins)})
    return episodes


def test_last_layer_gradient_equals_autograd(bench):
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 7 * 12)
    episodes = _episodes(layer, torch.Generator().manual_seed(1), [3, 4])
    advs = [np.array([1.0, -0.5, 0.2]), np.array([-1.0, 0.3, 0.0, 2.0])]
    # autograd: -mean_t A_t log pi(a_t | s_t), summed over the 7 dimensions
    hidden = torch.cat([torch.stack(e["h"]) for e in episodes])
    bins = torch.cat([torch.stack(e["bins"]) for e in episodes])
    adv = torch.as_tensor(np.concatenate(advs), dtype=torch.float32)
    log_probs = torch.log_softmax(layer(hidden).view(len(hidden), 7, -1), -1)
    loss = -(adv * log_probs.gather(2, bins[..., None]).squeeze(-1).sum(1)).mean()
    loss.backward()
    expected = layer.weight.grad.view(7, 12, 5).reshape(-1)
    torch.testing.assert_close(bench.last_layer_gradient(episodes, advs, None), expected, rtol=1e-5, atol=1e-6)
    # Through a basis B (12 x K): the gradient of a layer theta with logits = B @ (theta h).
    basis = bench.smooth_bin_basis(12, 0.5)
    assert basis.shape[0] == 12 and torch.allclose(basis.norm(dim=0), torch.ones(basis.shape[1]), atol=1e-6)
    projected = torch.einsum("dbh,bk->dkh", layer.weight.grad.view(7, 12, 5), basis).reshape(-1)
    torch.testing.assert_close(bench.last_layer_gradient(episodes, advs, basis), projected, rtol=1e-5, atol=1e-6)


def test_cosine_and_bad_groups(bench):
    assert bench.cosine(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0])) == pytest.approx(1.0)
    assert bench.cosine(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])) == 0.0
    with pytest.raises(ValueError, match="--group must be even"):
        bench.main(bench.Args(group=3, write=False))
