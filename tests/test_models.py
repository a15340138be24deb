"""The base VLA: binning, the binned distribution against hand-computed values, checkpoints."""

import json
import math

import numpy as np
import pytest
import torch

from rftf_gym.models import (
    NUM_BINS,
    VLA,
    BinnedActionDistribution,
    VLAConfig,
    actions_to_bins,
    bins_to_actions,
    freeze_body,
    load_vla,
    save_checkpoint,
)
from rftf_gym.policies import load_policy

TINY = dict(d_model=32, n_layers=1, n_heads=2, head_hidden=32, text_dim=64, text_encoder="hashed-ngram-d64-c34")


def tiny(obs_mode="state", **kw):
    torch.manual_seed(0)
    return VLA(VLAConfig(obs_mode=obs_mode, static_size=32, gripper_size=16, static_grid=2, gripper_grid=1, **TINY, **kw))


def obs_batch(n, rng=np.random.default_rng(0)):
    return {
        "robot_obs": rng.normal(size=(n, 15)),
        "scene_obs": rng.normal(size=(n, 24)),
        "rgb_static": rng.integers(0, 256, (n, 200, 200, 3), dtype=np.uint8),
        "rgb_gripper": rng.integers(0, 256, (n, 84, 84, 3), dtype=np.uint8),
    }


# ------------------------------------------------------------------------------ binning
def test_bins_hand_values():
    a = torch.tensor([[-1.0, 1.0, 0.0, -0.999, 0.9995, 0.0021, -0.5]])
    # bin = floor((a + 1) * 500), clipped to [0, 999]
    assert actions_to_bins(a).tolist() == [[0, 999, 500, 0, 999, 501, 250]]
    assert actions_to_bins(torch.tensor([[5.0, -5.0, 0, 0, 0, 0, 1.0]])).tolist() == [[999, 0, 500, 500, 500, 500, 999]]
    centres = bins_to_actions(torch.tensor([[0, 999, 500, 499, 250, 750, 500]]))
    np.testing.assert_allclose(centres[0, :6].numpy(), [-0.999, 0.999, 0.001, -0.001, -0.499, 0.501], atol=1e-6)
    assert centres[0, 6] == 1.0
    assert bins_to_actions(torch.tensor([[0, 0, 0, 0, 0, 0, 499]]))[0, 6] == -1.0


def test_bin_round_trips():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (1000, 7))
    back = bins_to_actions(actions_to_bins(a)).numpy()
    assert np.abs(back[:, :6] - a[:, :6]).max() <= 1.0 / NUM_BINS + 1e-6
    np.testing.assert_array_equal(back[:, 6], np.where(a[:, 6] >= 0, 1.0, -1.0))
    bins = torch.as_tensor(rng.integers(0, NUM_BINS, (1000, 7)))
    again = actions_to_bins(bins_to_actions(bins))
    assert torch.equal(again[:, :6], bins[:, :6])
    assert torch.equal(again[:, 6], torch.where(bins[:, 6] >= 500, 999, 0))


def test_binning_errors():
    with pytest.raises(ValueError, match="shape"):
        actions_to_bins(torch.zeros(3, 6))
    with pytest.raises(ValueError, match="NaN"):
        actions_to_bins(torch.full((1, 7), float("nan")))
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        bins_to_actions(torch.full((1, 7), 1000))
    with pytest.raises(ValueError, match="integers"):
        bins_to_actions(torch.zeros(1, 7))


# ------------------------------------------------------------------------------ distribution
def hand_logits():
    """Batch 2, 3 bins. Row 0: dim 0 has p = (1/6, 2/6, 3/6), dims 1-6 uniform.
    Row 1: every dim p = (1/2, 1/4, 1/4)."""
    logits = torch.zeros(2, 7, 3)
    logits[0, 0] = torch.log(torch.tensor([1.0, 2.0, 3.0]))
    logits[1] = torch.log(torch.tensor([2.0, 1.0, 1.0])) + 5.0  # a shift changes nothing
    return logits


def test_log_prob_entropy_hand_values():
    dist = BinnedActionDistribution(hand_logits())
    bins = torch.tensor([[2, 0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 0, 0, 1]])
    expected_lp = [math.log(3 / 6) + 6 * math.log(1 / 3), 4 * math.log(1 / 2) + 3 * math.log(1 / 4)]
    np.testing.assert_allclose(dist.log_prob(bins).numpy(), expected_lp, rtol=1e-6)
    h_row0 = -(1 / 6 * math.log(1 / 6) + 2 / 6 * math.log(2 / 6) + 3 / 6 * math.log(3 / 6)) + 6 * math.log(3)
    h_row1 = 7 * -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    np.testing.assert_allclose(dist.entropy().numpy(), [h_row0, h_row1], rtol=1e-6)
    assert dist.mode().tolist() == [[2, 0, 0, 0, 0, 0, 0], [0] * 7]


def test_kl_hand_values():
    p = BinnedActionDistribution(hand_logits())
    q = BinnedActionDistribution(torch.zeros(2, 7, 3))  # uniform
    kl_row0 = sum(pi * math.log(pi * 3) for pi in (1 / 6, 2 / 6, 3 / 6))
    kl_row1 = 7 * sum(pi * math.log(pi * 3) for pi in (0.5, 0.25, 0.25))
    np.testing.assert_allclose(p.kl(q).numpy(), [kl_row0, kl_row1], rtol=1e-6)
    np.testing.assert_allclose(p.kl(p).numpy(), [0.0, 0.0], atol=1e-7)
    # zero-probability bins contribute nothing (no 0 * -inf NaN)
    hard = torch.full((1, 7, 3), -float("inf"))
    hard[..., 0] = 0.0
    d = BinnedActionDistribution(hard)
    assert d.entropy().item() == 0.0
    np.testing.assert_allclose(d.kl(BinnedActionDistribution(torch.zeros(1, 7, 3))).numpy(), [7 * math.log(3)], rtol=1e-6)


def test_sample_frequencies_and_seeding():
    dist = BinnedActionDistribution(hand_logits()[:1].expand(20000, -1, -1))
    s = dist.sample(torch.Generator().manual_seed(0))
    freq = torch.bincount(s[:, 0], minlength=3).float() / len(s)
    np.testing.assert_allclose(freq.numpy(), [1 / 6, 2 / 6, 3 / 6], atol=0.015)
    assert torch.equal(s, dist.sample(torch.Generator().manual_seed(0)))


# ------------------------------------------------------------------------------ model
@pytest.mark.parametrize("mode", ["state", "rgb"])
def test_model_shapes_and_split(mode):
    vla = tiny(mode)
    obs = obs_batch(3)
    batch = vla.preprocess(obs, ["open the drawer"] * 3)
    if mode == "rgb":
        assert batch["rgb_static"].shape == (3, 3, 32, 32) and batch["rgb_static"].dtype == torch.uint8
        assert "scene_obs" not in batch
    feats = vla.features(batch)
    assert feats.shape == (3, vla.config.feature_dim)
    assert vla.logits(feats).shape == (3, 7, NUM_BINS)
    torch.testing.assert_close(vla(batch), vla.logits(feats))
    actions = vla.act(obs, ["open the drawer"] * 3)
    assert actions.shape == (3, 7) and set(np.abs(actions[:, 6])) == {1.0}
    # a precomputed embedding replaces the sentences
    emb = vla.text_encoder.encode(["open the drawer"] * 3)
    np.testing.assert_array_equal(vla.act({**obs, "lang_emb": emb}, None), actions)


def test_freeze_body_leaves_only_head_trainable():
    vla = tiny()
    freeze_body(vla)
    trainable = {n.split(".")[0] for n, p in vla.named_parameters() if p.requires_grad}
    assert trainable == {"action_head"}


def test_preprocess_errors():
    vla = tiny("rgb")
    obs = obs_batch(2)
    with pytest.raises(ValueError, match=r"missing \['rgb_gripper'\]"):
        vla.preprocess({k: v for k, v in obs.items() if k != "rgb_gripper"}, ["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        vla.preprocess({**obs, "rgb_static": obs["rgb_static"].astype(np.float32)}, ["a", "b"])
    with pytest.raises(ValueError, match="inconsistent batch sizes"):
        vla.preprocess(obs, ["a"])
    with pytest.raises(ValueError, match="instruction"):
        vla.preprocess(obs, None)
    with pytest.raises(ValueError, match="robot_obs must have shape"):
        tiny().preprocess({"robot_obs": np.zeros((2, 14)), "scene_obs": np.zeros((2, 24))}, ["a", "b"])
    with pytest.raises(ValueError, match="divisible"):
        VLAConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="obs_mode"):
        VLAConfig(obs_mode="depth")


# ------------------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip_and_policy(tmp_path):
    vla = tiny("rgb")
    vla.body.set_state_normalization(np.random.default_rng(1).normal(size=(50, 15)) * 3)
    save_checkpoint(tmp_path / "ckpt", vla, {"command": "test", "step": 7})
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["policy_type"] == "rftf_vla" and config["metadata"]["step"] == 7
    assert config["vla_config"]["static_size"] == 32 and config["action"]["num_bins"] == NUM_BINS
    again = load_vla(tmp_path / "ckpt")
    for (k, a), (k2, b) in zip(vla.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    obs = obs_batch(2)
    np.testing.assert_array_equal(again.act(obs, ["x", "y"]), vla.act(obs, ["x", "y"]))
    policy = load_policy(str(tmp_path / "ckpt"), seed=3)
    assert policy.required_obs == ("rgb_static", "rgb_gripper", "robot_obs")
    single = policy.act({k: v[0] for k, v in obs.items()}, "x")
    np.testing.assert_array_equal(single, vla.act(obs, ["x", "y"])[0])
    # saving again over an existing checkpoint replaces it
    save_checkpoint(tmp_path / "ckpt", tiny("rgb"), {})
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["metadata"] == {}


@pytest.fixture
def saved(tmp_path):
    save_checkpoint(tmp_path / "c", tiny(), {})
    return tmp_path / "c"


def _edit_config(path, fn):
    config = json.loads((path / "config.json").read_text())
    fn(config)
    (path / "config.json").write_text(json.dumps(config))


def test_truncated_weights(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="bytes but config.json records .*truncated"):
        load_vla(saved)


def test_corrupted_weights(saved):
    weights = saved / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="sha256 differs"):
        load_vla(saved)


def test_missing_weights_or_config(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="weights file 'model.safetensors' is missing"):
        load_vla(saved)
    (saved / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_vla(saved)


def test_truncated_config(saved):
    text = (saved / "config.json").read_text()
    (saved / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not valid JSON"):
        load_vla(saved)


def test_mismatched_architecture(saved):
    _edit_config(saved, lambda c: c["vla_config"].update(d_model=64))
    with pytest.raises(ValueError, match=r"does not fit the architecture.*shape \(expected vs found\).*action_head.0.bias \[64\] vs \[32\].* and \d+ more"):
        load_vla(saved)


def test_unknown_config_field_and_wrong_type(saved):
    _edit_config(saved, lambda c: c["vla_config"].update(colour="red"))
    with pytest.raises(ValueError, match=r"unknown VLA config fields \['colour'\]"):
        load_vla(saved)
    _edit_config(saved, lambda c: (c["vla_config"].pop("colour"), c.update(policy_type="value_model")))
    with pytest.raises(ValueError, match="policy_type is 'value_model', expected 'rftf_vla'"):
        load_vla(saved)


def test_weights_of_another_checkpoint(saved, tmp_path):
    save_checkpoint(tmp_path / "other", tiny("rgb"), {})
    (saved / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="bytes but config.json records|sha256 differs"):
        load_vla(saved)


# ---------------------------------------------------------------------------------- smooth head change
def test_smooth_bin_basis_is_unit_norm_bumps_over_the_bin_centres():
    from rftf_gym.models import smooth_bin_basis

    basis = smooth_bin_basis(1000, 0.1)
    assert basis.shape == (1000, 21)
    assert torch.allclose(basis.norm(dim=0), torch.ones(21), atol=1e-5)
    # The bump at action 0 peaks at the two bins around 0 and vanishes at the ends.
    middle = basis[:, 10]
    assert set(middle.topk(2).indices.tolist()) == {499, 500} and middle[0] < 1e-6 * middle.max()
    for width in (0.0, -0.1, 2.5):
        with pytest.raises(ValueError, match="basis width"):
            smooth_bin_basis(1000, width)


def test_smooth_head_delta_starts_as_the_head_folds_exactly_and_trains_only_smooth_directions():
    import copy

    from rftf_gym.models import SmoothHeadDelta

    torch.manual_seed(0)
    vla = VLA(VLAConfig(obs_mode="state", d_model=16, n_layers=1, n_heads=2, head_hidden=16))
    head = vla.action_head
    x = torch.randn(5, vla.config.feature_dim)
    smooth = SmoothHeadDelta(copy.deepcopy(head), NUM_BINS, 0.2)
    assert torch.equal(smooth(x), head(x))
    assert [name for name, p in smooth.named_parameters() if p.requires_grad] == ["weight", "bias"]
    with pytest.raises(ValueError, match="must end in a Linear"):
        SmoothHeadDelta(head[:-1], NUM_BINS, 0.2)

    # One gradient step: the logits' change is smooth along the bins, the folded head reproduces it.
    target = torch.randint(0, NUM_BINS, (5, 7))
    loss = -BinnedActionDistribution(smooth(x).view(5, 7, NUM_BINS)).log_prob(target).sum()
    loss.backward()
    with torch.no_grad():
        smooth.weight -= 10.0 * smooth.weight.grad
        smooth.bias -= 10.0 * smooth.bias.grad
    assert all(p.grad is None for p in smooth.head.parameters())
    change = (smooth(x) - head(x)).view(5, 7, NUM_BINS).detach()
    assert change.abs().max() > 1e-2
    # In the span of the bumps: projecting on them leaves nothing; a 1000-bin head's change would not be.
    basis = smooth.basis
    residual = change - (change @ basis) @ torch.linalg.pinv(basis.T @ basis) @ basis.T
    assert residual.abs().max() < 1e-4 * change.abs().max()
    folded = smooth.folded()
    assert torch.allclose(folded(x), smooth(x), atol=1e-5)
    assert torch.equal(folded[1].weight, head[1].weight)  # only the last layer differs
    assert not torch.equal(folded[-1].weight, head[-1].weight)


def test_load_with_another_text_encoder(saved, tmp_path):
    """The weights stay; the encoder changes, a saved copy keeps it, and a misfit is named."""
    own = load_vla(saved)
    snap = load_vla(saved, text_encoder="snap-" + own.config.text_encoder)
    assert snap.config.text_encoder == "snap-" + own.config.text_encoder
    for key, value in own.state_dict().items():
        torch.testing.assert_close(snap.state_dict()[key], value)
    batch = snap.preprocess(obs_batch(2), ["pull the drawer open", "lift the pink block from the table"])
    from rftf_gym.language import TRAIN_INSTRUCTIONS

    first = [TRAIN_INSTRUCTIONS["open_drawer"][0], TRAIN_INSTRUCTIONS["lift_pink_block_table"][0]]
    torch.testing.assert_close(batch["lang_emb"], own.preprocess(obs_batch(2), first)["lang_emb"])
    save_checkpoint(tmp_path / "snap", snap, {})
    assert load_vla(tmp_path / "snap").config.text_encoder == snap.config.text_encoder
    policy = load_policy(str(saved), text_encoder=snap.config.text_encoder)
    assert policy.model.config.text_encoder == snap.config.text_encoder
    with pytest.raises(ValueError, match="width 128"):
        load_vla(saved, text_encoder="hashed-ngram-d128-c34")
    with pytest.raises(ValueError, match="unknown text encoder"):
        load_vla(saved, text_encoder="minilm")
