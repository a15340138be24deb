"""The policy interface: the random policy, spec resolution and the checkpoint registry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rftf_gym import policies
from rftf_gym.policies import Policy, RandomPolicy, load_policy, register_policy


def test_random_policy_actions_are_valid_and_seeded():
    policy = RandomPolicy(seed=3)
    assert isinstance(policy, Policy) and isinstance(policy, policies.SeedablePolicy)
    policy.reset()
    actions = np.stack([policy.act({}, "open the drawer") for _ in range(200)])
    assert actions.shape == (200, 7)
    assert np.all(np.abs(actions[:, :6]) <= 1.0)
    assert set(np.unique(actions[:, 6])) == {-1.0, 1.0}
    policy.seed(3)
    np.testing.assert_array_equal(policy.act({}, "x"), actions[0])
    other = load_policy("random", seed=3)
    np.testing.assert_array_equal(other.act({}, "x"), actions[0])


def test_seed_policy_skips_policies_without_seed():
    class Deterministic:
        def reset(self):
            pass

        def act(self, obs, instruction):
            return np.zeros(7)

    policies.seed_policy(Deterministic(), 1)  # no seed method: nothing to do
    random = RandomPolicy(seed=0)
    policies.seed_policy(random, 5)
    np.testing.assert_array_equal(random.act({}, "x"), RandomPolicy(seed=5).act({}, "x"))


def test_check_action_rejects_bad_actions():
    assert policies.check_action([0] * 7).dtype == np.float64
    with pytest.raises(ValueError, match="shape"):
        policies.check_action(np.zeros(6))
    with pytest.raises(ValueError, match="non-finite"):
        policies.check_action([np.nan] + [0] * 6)


def test_sequential_batch_policy():
    batch = policies.SequentialBatchPolicy([RandomPolicy(seed=0), RandomPolicy(seed=1)])
    assert isinstance(batch, policies.BatchPolicy)
    batch.reset_batch([0, 1])
    actions = batch.act_batch({"robot_obs": np.zeros((2, 15))}, ["a", "b"])
    assert actions.shape == (2, 7)
    np.testing.assert_array_equal(actions[1], RandomPolicy(seed=1).act({}, "b"))
    with pytest.raises(ValueError, match="instructions"):
        batch.act_batch({}, ["a"])


@pytest.mark.parametrize("spec", ["", "   "])
def test_empty_spec_is_rejected(spec):
    with pytest.raises(ValueError, match="policy spec"):
        load_policy(spec)


def test_missing_checkpoint_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*'random', 'expert'"):
        load_policy(str(tmp_path / "no_such_ckpt"))


def test_checkpoint_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_policy(str(tmp_path))


def test_checkpoint_path_is_a_file(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="not a directory"):
        load_policy(str(path))


@pytest.mark.parametrize(
    "text, message",
    [("{not json", "not valid JSON"), ("[1, 2]", "JSON object"), ('{"lr": 1}', "policy_type")],
)
def test_corrupt_config(tmp_path, text, message):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_policy(str(tmp_path))


def test_unknown_policy_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"policy_type": "no_such_vla"}))
    with pytest.raises(ValueError, match="'no_such_vla'.*register_policy"):
        load_policy(str(tmp_path))


def test_registered_loader_gets_path_config_and_options(tmp_path, monkeypatch):
    monkeypatch.setattr(policies, "_REGISTRY", {})
    seen = {}

    def loader(path, config, **kwargs):
        seen.update(path=path, config=config, **kwargs)
        return RandomPolicy(seed=kwargs["seed"])

    register_policy("toy_vla", loader)
    (tmp_path / "config.json").write_text(json.dumps({"policy_type": "toy_vla", "hidden": 8}))
    policy = load_policy(str(tmp_path), scene="A", seed=7, device="cpu")
    assert isinstance(policy, RandomPolicy)
    config = {"policy_type": "toy_vla", "hidden": 8}
    assert seen == {"path": tmp_path, "config": config, "scene": "A", "seed": 7, "device": "cpu"}
    assert policies.registered_policy_types() == ("toy_vla",)
    with pytest.raises(ValueError, match="already registered"):
        register_policy("toy_vla", loader)
    register_policy("toy_vla", loader, overwrite=True)
    with pytest.raises(ValueError, match="built-in"):
        register_policy("random", loader)


def test_expert_spec_resolves_to_expert_adapter():
    pytest.importorskip("rftf_gym.experts")
    policy = load_policy("expert", scene="D", seed=0)
    assert isinstance(policy, policies.ExpertAdapter)
    assert policies.required_obs(policy) == ("robot_obs", "scene_obs")
    with pytest.raises(ValueError, match="obs_mode 'state'"):
        policy.act({"rgb_static": np.zeros((8, 8, 3))}, "open the drawer")
