"""Batched chained evaluation: the same chain records for any batch size and worker count, and
the same as evaluate.py's one-chain-at-a-time rollout."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rftf_gym import sequences
from rftf_gym.chain_eval import ChainEvalConfig, chain_seed, evaluate_chains, run_chains
from rftf_gym.models import VLA, VLAConfig, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CHAINS = sequences.get_sequences(3)


def outcome(records):
    return {i: (r["num_success"], r["steps"], r["seed"], r["chain"]) for i, r in records.items()}


def test_expert_batched_equals_evaluate_py():
    sys.path.insert(0, str(ROOT))
    import evaluate
    from rftf_gym import policies

    env = evaluate.make_env(evaluate.Args(obs_mode="state"))
    reference = {}
    for i, (initial_state, chain) in enumerate(CHAINS):
        policy = policies.load_policy("expert", scene="D", seed=0)
        num_success, steps = evaluate.evaluate_sequence(env, policy, initial_state, chain, chain_seed(0, i), None)
        reference[i] = (num_success, steps, chain_seed(0, i), list(chain))
    env.close()
    batched = run_chains("expert", CHAINS, range(3), ChainEvalConfig(obs_mode="state", batch_size=2, num_workers=2))
    assert outcome(batched) == reference
    assert sum(r[0] for r in reference.values()) > 3  # the chains go past their first instruction


def tiny_vla_checkpoint(tmp_path, decoding="greedy"):
    torch.manual_seed(0)
    config = VLAConfig(obs_mode="state", d_model=32, n_layers=1, n_heads=2, head_hidden=32, text_dim=64,
                       text_encoder="hashed-ngram-d64-c34")
    save_checkpoint(tmp_path / "vla", VLA(config), {}, decoding=decoding)
    return str(tmp_path / "vla")


@pytest.mark.parametrize("decoding", ["greedy", "sample"])
def test_vla_records_do_not_depend_on_batch_size_or_workers(tmp_path, decoding):
    spec = tiny_vla_checkpoint(tmp_path, decoding)
    cfg = dict(obs_mode="state", ep_len=40)
    timing = {}
    one = run_chains(spec, CHAINS, range(3), ChainEvalConfig(batch_size=1, **cfg), timing=timing)
    many = run_chains(spec, CHAINS, [2, 0, 1], ChainEvalConfig(batch_size=3, num_workers=2, **cfg))
    assert outcome(one) == outcome(many)
    assert timing["env_steps"] == sum(sum(r["steps"]) for r in one.values())
    assert timing["policy_calls"] == timing["env_steps"]  # batch 1: one call per env step


def test_evaluate_chains_resumes_and_refuses_other_config(tmp_path):
    from rftf_gym.evaluation import ConfigMismatchError

    path = tmp_path / "results.jsonl"
    cfg = ChainEvalConfig(obs_mode="state", batch_size=2, ep_len=30)
    first = evaluate_chains("random", CHAINS[:2], cfg, results_path=path)
    again = evaluate_chains("random", CHAINS[:2], cfg, results_path=path)  # nothing left to run
    assert [r["num_success"] for r in first] == [r["num_success"] for r in again]
    assert len(path.read_text().splitlines()) == 3  # header + 2 chains, none re-run
    with pytest.raises(ConfigMismatchError, match="ep_len"):
        evaluate_chains("random", CHAINS[:2], ChainEvalConfig(obs_mode="state", ep_len=31), results_path=path)


def test_config_errors():
    with pytest.raises(ValueError, match="batch_size"):
        ChainEvalConfig(batch_size=0)
    with pytest.raises(ValueError, match="instruction_split"):
        ChainEvalConfig(instruction_split="test")
    with pytest.raises(ValueError, match="single Policy object"):
        from rftf_gym.policies import RandomPolicy

        run_chains(RandomPolicy(), CHAINS, [0], ChainEvalConfig(batch_size=2, obs_mode="state"))
    np.testing.assert_equal(chain_seed(0, 5), chain_seed(0, 5))


def test_sampling_vla_single_policy_path_matches_batched(tmp_path):
    """evaluate.py's one-chain path (policy.seed + act) draws what the batched path draws."""
    sys.path.insert(0, str(ROOT))
    import evaluate
    from rftf_gym import policies

    spec = tiny_vla_checkpoint(tmp_path, "sample")
    policy = policies.load_policy(spec, seed=0)
    assert policy.greedy is False
    env = evaluate.make_env(evaluate.Args(obs_mode="state"))
    initial_state, chain = CHAINS[1]
    try:
        reference = evaluate.evaluate_sequence(env, policy, initial_state, chain, chain_seed(0, 1), None)
        final_single = env.unwrapped.sim.get_obs()["robot_obs"]
    finally:
        env.close()
    batched = run_chains(spec, CHAINS, [0, 1], ChainEvalConfig(obs_mode="state", batch_size=2))
    assert (batched[1]["num_success"], batched[1]["steps"]) == reference
    # the sampled actions moved the arm away from its start (the comparison is not of idle policies)
    assert not np.allclose(final_single[:3], sequences.get_env_state_for_initial_condition(initial_state)[0][:3], atol=0.01)


def test_a_text_encoder_is_refused_for_policies_that_are_not_checkpoints():
    from rftf_gym.chain_eval import as_slot_policy

    config = ChainEvalConfig(obs_mode="state", text_encoder="snap-hashed-ngram-d384-c34")
    with pytest.raises(ValueError, match="checkpoint"):
        as_slot_policy("random", config)
    with pytest.raises(ValueError, match="policy object"):
        as_slot_policy(object(), config)
