"""RFTF's PPO (ppo_rftf.py): Eqs. 2-4 against hand-computed numbers, the exact KL, and tiny runs."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ppo_rftf import (
    Args, Episode, EpisodeSentences, adapt_beta, anchor_kl, anchor_tasks, balanced_advantages, check_args, class_balanced_etas, collect_anchor_features,
    frozen_kl_fn, half_gradient_cosine, normalize_episode_values, opposite_batch, opposite_features, ppo_loss, record_outcomes, shaped_rewards,
    task_baselines,
)
from rftf_gym.env import CalvinEnv
from rftf_gym.models import VLA, BinnedActionDistribution, VLAConfig, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
GAMMA, LAM = 0.9, 0.5


def test_successful_episode_by_hand():
    values = normalize_episode_values(np.array([0.0, 1.0, 3.0, 2.0, 4.0]), "minmax")
    np.testing.assert_allclose(values, [0.0, 0.25, 0.75, 0.5, 1.0])
    rewards = shaped_rewards(values, GAMMA)
    # Eq. 2: 0.9*0.25 - 0, 0.9*0.75 - 0.25, 0.9*0.5 - 0.75, 0.9*1 - 0.5, and 0 at the end step.
    np.testing.assert_allclose(rewards, [0.225, 0.425, -0.3, 0.4, 0.0])
    advantages = balanced_advantages(rewards, True, GAMMA, LAM, eta_success=0.25, eta_failure=1.0)
    # Eq. 3 with gamma*lambda = 0.45, eta = 0.25, I = +1, GAE sums from the end:
    # 0, 0.4, -0.3 + 0.45*0.4 = -0.12, 0.425 - 0.054 = 0.371, 0.225 + 0.16695 = 0.39195.
    np.testing.assert_allclose(advantages, 0.25 * (1 + np.array([0.39195, 0.371, -0.12, 0.4, 0.0])))
    np.testing.assert_allclose(advantages, [0.3479875, 0.34275, 0.22, 0.35, 0.25])


def test_failed_episode_by_hand():
    values = normalize_episode_values(np.array([2.0, 2.0, 1.0]), "minmax")
    np.testing.assert_allclose(values, [1.0, 1.0, 0.0])
    rewards = shaped_rewards(values, GAMMA)
    np.testing.assert_allclose(rewards, [-0.1, -1.0, 0.0])
    advantages = balanced_advantages(rewards, False, GAMMA, LAM, eta_success=0.25, eta_failure=1.0)
    # eta = 1, I = -1: GAE 0, -1, -0.1 - 0.45 = -0.55.
    np.testing.assert_allclose(advantages, [-1.55, -2.0, -1.0])


def test_class_balanced_etas():
    # The paper's regime: 8 successes, 2 failures -> its fixed 0.25 / 1.
    assert class_balanced_etas(8, 2, 0.25, 1.0) == (0.25, 1.0)
    # A weak start: 3 successes, 13 failures -> successes at full weight, failures scaled to match.
    eta_s, eta_f = class_balanced_etas(3, 13, 0.25, 1.0)
    assert eta_s == 1.0 and eta_f == pytest.approx(3 / 13)
    assert 3 * eta_s == pytest.approx(13 * eta_f)  # equal total weight, so the sparse mean advantage is 0
    # One class only: the fixed values.
    assert class_balanced_etas(0, 16, 0.25, 1.0) == (0.25, 1.0)
    assert class_balanced_etas(16, 0, 0.25, 1.0) == (0.25, 1.0)


def test_step_balanced_etas_zero_the_mean_success_term_per_step():
    # --eta-mode steps counts steps: two 50-step successes and three failures run to 360 steps.
    lengths, outcomes = [50, 50, 360, 360, 360], [True, True, False, False, False]
    eta_s, eta_f = class_balanced_etas(100, 1080, 0.25, 1.0)
    per_step = np.concatenate([balanced_advantages(np.zeros(n), ok, 0.99, 0.95, eta_s, eta_f)
                               for n, ok in zip(lengths, outcomes)])
    assert per_step.mean() == pytest.approx(0.0, abs=1e-12)
    # Balancing episodes instead (2 vs 3) leaves the long failures most of the weight per step.
    eta_s, eta_f = class_balanced_etas(2, 3, 0.25, 1.0)
    per_step = np.concatenate([balanced_advantages(np.zeros(n), ok, 0.99, 0.95, eta_s, eta_f)
                               for n, ok in zip(lengths, outcomes)])
    assert per_step.mean() < -0.5


def test_success_weight_scales_the_indicator_only():
    rewards = np.array([0.1, -0.05, 0.2, 0.0])
    full = balanced_advantages(rewards, False, GAMMA, LAM, 0.25, 1.0)
    feedback_only = balanced_advantages(rewards, False, GAMMA, LAM, 0.25, 1.0, success_weight=0.0)
    np.testing.assert_allclose(full - feedback_only, [-1.0] * 4)
    with pytest.raises(ValueError, match="nothing to learn"):
        check_args(Args(reward_mode="sparse", success_weight=0.0))
    with pytest.raises(ValueError, match="--success-weight must be"):
        check_args(Args(value_model="v", success_weight=-1.0))


def test_task_baseline_centres_the_indicator_on_the_tasks_recent_rate():
    rewards = np.array([0.1, -0.05, 0.2, 0.0])
    plain = balanced_advantages(rewards, True, GAMMA, LAM, 0.25, 1.0)
    np.testing.assert_allclose(balanced_advantages(rewards, True, GAMMA, LAM, 0.25, 1.0, baseline=0.5) - plain, [-0.125] * 4)
    fail = balanced_advantages(rewards, False, GAMMA, LAM, 0.25, 1.0, baseline=-0.5)  # a task that mostly fails
    np.testing.assert_allclose(fail - balanced_advantages(rewards, False, GAMMA, LAM, 0.25, 1.0), [0.5] * 4)

    class Ep:
        def __init__(self, task, success):
            self.task, self.success = task, success

    history: dict[str, list[float]] = {}
    record_outcomes(history, [Ep("a", True), Ep("a", True), Ep("b", False)], 1.0, keep=3)
    record_outcomes(history, [Ep("a", False), Ep("a", True)], 1.0, keep=3)
    assert history == {"a": [1.0, -1.0, 1.0], "b": [-1.0]}  # the oldest of "a" dropped
    assert task_baselines(history) == {"a": pytest.approx(1 / 3), "b": -1.0}
    # A task that always succeeds adds nothing through I once its baseline is full: only the feedback is left.
    record_outcomes(history, [Ep("c", True)] * 3, 1.0, keep=3)
    always = balanced_advantages(rewards, True, GAMMA, LAM, 0.25, 1.0, baseline=task_baselines(history)["c"])
    np.testing.assert_allclose(always, balanced_advantages(rewards, True, GAMMA, LAM, 0.25, 1.0, success_weight=0.0))
    with pytest.raises(ValueError, match="--task-baseline must be >= 0"):
        check_args(Args(value_model="v", task_baseline=-1))


def test_episode_sentences_draw_noise_once_per_episode():
    plain = EpisodeSentences(2, 0, np.random.default_rng(0))
    assert plain(["open up the drawer", "shut the drawer"]) == ["open up the drawer", "shut the drawer"]
    noisy = EpisodeSentences(2, 2, np.random.default_rng(0))
    first = noisy(["open up the drawer", "shut the drawer"])
    assert [len(s.split()) for s in first] == [6, 5] and first[0] != "open up the drawer"
    assert noisy(["open up the drawer", "shut the drawer"]) == first  # kept within an episode
    noisy.end_episode(0)  # a new episode under the same sentence draws new words
    second = noisy(["open up the drawer", "shut the drawer"])
    assert second[0] != first[0] and second[1] == first[1]
    chained = noisy(["open up the drawer", "turn on the led"])  # a chain's next instruction
    assert chained[0] == second[0] and "led" in chained[1].split() and len(chained[1].split()) == 6
    with pytest.raises(ValueError, match="--instruction-noise must be >= 0"):
        check_args(Args(value_model="v", instruction_noise=-1))


def test_unknown_training_task_is_refused():
    with pytest.raises(ValueError, match="--tasks: unknown task 'open_the_drawer'"):
        check_args(Args(value_model="v", tasks="open_drawer,open_the_drawer"))


def test_sparse_ablation_is_the_success_signal_alone():
    rewards = shaped_rewards(np.zeros(4), GAMMA)
    np.testing.assert_array_equal(balanced_advantages(rewards, True, GAMMA, LAM, 0.25, 1.0), [0.25] * 4)
    np.testing.assert_array_equal(balanced_advantages(rewards, False, GAMMA, LAM, 0.25, 1.0), [-1.0] * 4)


def test_value_normalisation_modes():
    v = np.array([1.0, 3.0, 5.0])
    np.testing.assert_allclose(normalize_episode_values(v, "zscore"), (v - 3.0) / np.sqrt(8 / 3))
    np.testing.assert_array_equal(normalize_episode_values(v, "none"), v)
    np.testing.assert_array_equal(normalize_episode_values(np.full(3, 7.0), "minmax"), np.zeros(3))
    with pytest.raises(ValueError, match="normalisation"):
        normalize_episode_values(v, "rank")


def test_exact_kl_equals_a_brute_force_sum_over_joint_actions():
    torch.manual_seed(0)
    bins = 3
    p_logits, q_logits = torch.randn(2, 7, bins), torch.randn(2, 7, bins)
    kl = BinnedActionDistribution(p_logits).kl(BinnedActionDistribution(q_logits))
    p, q = p_logits.double().softmax(-1), q_logits.double().softmax(-1)
    for b in range(2):
        brute = 0.0
        for action in itertools.product(range(bins), repeat=7):  # every joint action, 3^7 of them
            pa = float(np.prod([p[b, d, a] for d, a in enumerate(action)]))
            qa = float(np.prod([q[b, d, a] for d, a in enumerate(action)]))
            brute += pa * np.log(pa / qa)
        assert float(kl[b]) == pytest.approx(brute, rel=1e-4)


def test_exact_kl_on_1000_bins_equals_a_loop():
    torch.manual_seed(1)
    p_logits, q_logits = 3 * torch.randn(3, 7, 1000), 3 * torch.randn(3, 7, 1000)
    kl = BinnedActionDistribution(p_logits).kl(BinnedActionDistribution(q_logits))
    p, q = p_logits.double().softmax(-1).numpy(), q_logits.double().softmax(-1).numpy()
    for b in range(3):
        brute = sum(p[b, d, k] * np.log(p[b, d, k] / q[b, d, k]) for d in range(7) for k in range(1000))
        assert float(kl[b]) == pytest.approx(brute, rel=1e-4)
    assert torch.allclose(BinnedActionDistribution(p_logits).kl(BinnedActionDistribution(p_logits)), torch.zeros(3), atol=1e-6)


def test_clipped_loss_on_a_toy_batch():
    ratios = torch.tensor([1.5, 0.5, 1.1, 0.7], dtype=torch.float64)
    oldlogprob = torch.tensor([-3.0, -2.0, -1.0, -4.0], dtype=torch.float64)
    newlogprob = (oldlogprob + ratios.log()).requires_grad_(True)
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    kl_ref = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    out = ppo_loss(newlogprob, oldlogprob, advantages, kl_ref, beta=0.5, clip_coef=0.2)
    # min(r A, clip(r) A): 1.2, 0.5, -1.1, -0.8 -> pg_loss = -(1.2 + 0.5 - 1.1 - 0.8) / 4 = 0.05
    assert float(out["pg_loss"]) == pytest.approx(0.05)
    assert float(out["kl_ref"]) == pytest.approx(0.25)
    assert float(out["loss"].detach()) == pytest.approx(0.05 + 0.5 * 0.25)
    assert float(out["clipfrac"]) == pytest.approx(0.75)
    expected_approx = float(((ratios - 1) - ratios.log()).mean())
    assert float(out["approx_kl"]) == pytest.approx(expected_approx)
    out["loss"].backward()
    # Clipped terms pass no gradient; unclipped ones pass -A r / B.
    np.testing.assert_allclose(newlogprob.grad.numpy(), [0.0, -0.5 / 4, 1.1 / 4, 0.0])


def test_half_gradient_cosine_measures_agreement_between_episode_halves():
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 3)
    x = torch.randn(6, 4)
    actions = torch.tensor([0, 1, 2, 0, 1, 2])

    def log_prob(rows):
        return torch.log_softmax(head(x[rows]), -1).gather(1, actions[rows, None]).squeeze(1)

    # Episodes 0 and 1 hold the same states and actions: the two halves' gradients coincide...
    episode = torch.tensor([0, 0, 0, 1, 1, 1])
    x[3:] = x[:3]
    assert half_gradient_cosine(head, log_prob, torch.ones(6), episode) == pytest.approx(1.0, abs=1e-6)
    # ...and point opposite ways when the second episode's advantages are negated.
    assert half_gradient_cosine(head, log_prob, torch.tensor([1.0, 1, 1, -1, -1, -1]), episode) == pytest.approx(-1.0, abs=1e-6)
    assert all(float(p.grad.abs().sum()) == 0.0 for p in head.parameters())  # gradients left zeroed
    assert half_gradient_cosine(head, log_prob, torch.ones(6), torch.zeros(6, dtype=torch.long)) == 0.0  # one half empty


def test_adaptive_beta():
    assert adapt_beta(0.1, kl=0.001, target_kl=0.01) == pytest.approx(0.05)
    assert adapt_beta(0.1, kl=0.1, target_kl=0.01) == pytest.approx(0.2)
    assert adapt_beta(0.1, kl=0.012, target_kl=0.01) == pytest.approx(0.1)


def test_adaptive_beta_stays_between_its_floor_and_ceiling():
    # Ten updates with the KL far below target: unbounded halving gives 0.05 / 2**10 ~ 5e-5.
    beta = 0.05
    for _ in range(10):
        beta = adapt_beta(beta, kl=0.0, target_kl=0.05, min_beta=0.01, max_beta=1.0)
    assert beta == pytest.approx(0.01)
    # Then the KL runs high: beta doubles from the floor, not from a vanished value, up to the ceiling.
    assert adapt_beta(beta, kl=1.0, target_kl=0.05, min_beta=0.01, max_beta=1.0) == pytest.approx(0.02)
    for _ in range(20):
        beta = adapt_beta(beta, kl=1.0, target_kl=0.05, min_beta=0.01, max_beta=1.0)
    assert beta == pytest.approx(1.0)
    # The defaults of Args bound it too.
    args = Args()
    assert 0 < args.min_beta <= args.init_beta <= args.max_beta
    assert adapt_beta(args.min_beta, 0.0, args.target_kl, args.min_beta, args.max_beta) == args.min_beta


@pytest.mark.parametrize("bounds", [(0.1, 0.05, 1.0), (0.0, 0.05, 0.01), (-0.01, 0.05, 1.0)])
def test_inconsistent_beta_bounds_are_refused(bounds):
    min_beta, init_beta, max_beta = bounds
    args = Args(value_model="v", min_beta=min_beta, init_beta=init_beta, max_beta=max_beta)
    with pytest.raises(ValueError, match="--min-beta <= --init-beta <= --max-beta"):
        check_args(args)


# ---------------------------------------------------------------------------------- tiny runs
TINY = ["--num-envs", "2", "--max-episode-steps", "12", "--episodes-per-iteration", "4", "--num-minibatches", "2",
        "--update-epochs", "2", "--learning-rate", "1e-3"]


@pytest.fixture(scope="module")
def tiny_vla(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("bc") / "tiny_vla"
    vla = VLA(VLAConfig(obs_mode="state", d_model=16, n_layers=1, n_heads=2, head_hidden=16))
    # Saved as behaviour cloning saves it: evaluated by sampling, a decoding the fine-tuned
    # checkpoints must keep (else evaluate.py compares a sampled start with a greedy result).
    save_checkpoint(directory, vla, {"note": "random weights for tests"}, decoding="sample")
    return directory


def _command(policy: Path, *extra: str, launcher: list[str] | None = None) -> list[str]:
    return [*(launcher or [sys.executable]), str(ROOT / "ppo_rftf.py"), "--policy", str(policy), *TINY, *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _final_state(run_dir: Path) -> dict:
    latest = json.loads((run_dir / "latest.json").read_text())["checkpoint"]
    return json.loads((run_dir / latest / "trainer.json").read_text())["state"]


@pytest.mark.slow
def test_tiny_sparse_run_trains_the_whole_head_only_and_saves_a_loadable_policy(tiny_vla, tmp_path):
    from rftf_gym.models import load_vla

    command = _command(tiny_vla, "--reward-mode", "sparse", "--total-episodes", "8", "--run-name", "tiny",
                       "--checkpoint-dir", "ckpt", "--eval-chains", "1", "--head-basis-width", "0")
    subprocess.run(command, cwd=tmp_path, env=_env(), check=True, timeout=900)
    state = _final_state(tmp_path / "ckpt" / "tiny")
    # The chained evaluation ran through evaluate.py on the final checkpoint.
    metrics = json.loads((tmp_path / "ckpt" / "tiny" / "eval" / "iter_000002" / "metrics.json").read_text())
    assert metrics["num_chains"] == 1 and 0 <= metrics["avg_len"]["value"] <= 5
    assert state["iteration"] == 2 and state["episodes"] == 8 and state["kl_ref"] > 0
    tuned_config = json.loads((tmp_path / "ckpt" / "tiny" / "iter_000002" / "config.json").read_text())
    assert tuned_config["decoding"] == "sample"
    start, tuned = load_vla(tiny_vla), load_vla(tmp_path / "ckpt" / "tiny" / "iter_000002")
    for (name, a), b in zip(start.state_dict().items(), tuned.state_dict().values()):
        assert torch.equal(a, b) == (not name.startswith("action_head.")), name
    assert list((tmp_path / "runs" / "tiny").glob("events.out.tfevents.*"))

    # A kill during that evaluation leaves the final checkpoint without metrics.json: the same
    # command finishes the evaluation instead of finding the run done.
    (tmp_path / "ckpt" / "tiny" / "eval" / "iter_000002" / "metrics.json").unlink()
    again = subprocess.run(command, cwd=tmp_path, env=_env(), check=True, timeout=900, capture_output=True, text=True)
    assert "its chained evaluation did not finish" in again.stdout
    assert json.loads((tmp_path / "ckpt" / "tiny" / "eval" / "iter_000002" / "metrics.json").read_text()) == metrics
    assert _final_state(tmp_path / "ckpt" / "tiny")["iteration"] == 2


@pytest.mark.slow
def test_instruction_noise_changes_what_the_policy_reads_and_stays_seeded(tiny_vla, tmp_path):
    from rftf_gym.models import load_vla

    def head(name: str, *extra: str) -> dict:
        subprocess.run(_command(tiny_vla, "--reward-mode", "sparse", "--total-episodes", "4", "--run-name", name,
                                "--checkpoint-dir", "ckpt", *extra), cwd=tmp_path, env=_env(), check=True, timeout=900)
        return {k: v for k, v in load_vla(tmp_path / "ckpt" / name / "iter_000001").state_dict().items()
                if k.startswith("action_head.")}

    plain, noisy, again = head("plain"), head("noisy", "--instruction-noise", "2"), head("again", "--instruction-noise", "2")
    # Same seed: the runs differ only in the sentences the policy read, and the noise is seeded.
    assert any(not torch.equal(plain[k], noisy[k]) for k in plain)
    assert all(torch.equal(noisy[k], again[k]) for k in noisy)
    resumed = subprocess.run(_command(tiny_vla, "--reward-mode", "sparse", "--total-episodes", "8", "--run-name", "noisy",
                                      "--checkpoint-dir", "ckpt"), cwd=tmp_path, env=_env(), check=True, timeout=900,
                             capture_output=True, text=True)
    assert "instruction_noise 2 -> 0" in resumed.stdout


@pytest.mark.slow
def test_torchrun_two_ranks_keep_identical_heads(tiny_vla, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run(_command(tiny_vla, "--reward-mode", "sparse", "--total-episodes", "8", "--run-name", "ddp",
                            "--checkpoint-dir", "ckpt", "--eval-chains", "1", launcher=launcher), cwd=tmp_path, env=_env(),
                   check=True, timeout=900)
    state = _final_state(tmp_path / "ckpt" / "ddp")
    assert state["args"]["world_size"] == 2 and state["episodes"] == 8
    # Rank 0 evaluated the final checkpoint while rank 1 waited (a process group with a long timeout).
    assert json.loads((tmp_path / "ckpt" / "ddp" / "eval" / "iter_000002" / "metrics.json").read_text())["num_chains"] == 1
    first, second = state["head_checksums"]
    assert first == second


@pytest.mark.slow
def test_kill_and_resume(tiny_vla, tmp_path, kill_when_ready):
    run_dir = tmp_path / "ckpt" / "resume"
    args = ("--reward-mode", "sparse", "--run-name", "resume", "--checkpoint-dir", "ckpt")
    proc = subprocess.Popen(_command(tiny_vla, *args, "--total-episodes", "400"), cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when_ready(proc, (run_dir / "latest.json").exists, timeout=900)
    assert (run_dir / "latest.json").exists(), "no checkpoint within 900 s"
    killed_at = _final_state(run_dir)["iteration"]
    assert killed_at < 100
    done = subprocess.run(_command(tiny_vla, *args, "--total-episodes", str(4 * (killed_at + 1))), cwd=tmp_path,
                          env=_env(), check=True, timeout=900, capture_output=True, text=True)
    assert f"resumed from ckpt/resume/iter_{killed_at:06d}" in done.stdout
    state = _final_state(run_dir)
    assert state["iteration"] == killed_at + 1 and state["episodes"] == 4 * (killed_at + 1)
    # TensorBoard keeps one entry per iteration across the kill: the checkpoint's own iteration is
    # not purged, the unsaved ones after it are.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "runs" / "resume"), size_guidance={"scalars": 0})
    events.Reload()
    episodes = [e.value for e in events.Scalars("charts/episodes")]
    assert episodes == [4.0 * (i + 1) for i in range(killed_at + 1)]
    # Other settings than the checkpoint's are refused with the field named.
    refused = subprocess.run(_command(tiny_vla, "--reward-mode", "sparse", "--run-name", "resume", "--checkpoint-dir",
                                      "ckpt", "--scenes", "D", "--total-episodes", "400"),
                             cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert refused.returncode == 2 and "ppo_rftf.py: error:" in refused.stderr and "scenes" in refused.stderr


@pytest.mark.slow
@pytest.mark.parametrize("context", ["none", "start"])
def test_tiny_dense_run_shapes_rewards_from_the_value_model(tiny_vla, tmp_path, context):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rftf_gym.models import load_vla

    value_model = pytest.importorskip("rftf_gym.value_model")  # lands with train_value.py
    torch.manual_seed(1)
    # context "start": V(s_t | s_0, l), the reward wrapper passes each episode's reset observation.
    model = value_model.ValueModel.from_vla(load_vla(tiny_vla), head_hidden=8, context=context)
    value_model.save_value_model(tmp_path / "value", model)
    subprocess.run(_command(tiny_vla, "--value-model", str(tmp_path / "value"), "--total-episodes", "4",
                            "--run-name", "dense", "--checkpoint-dir", "ckpt", "--value-norm", "none",
                            "--tasks", "turn_on_led", "--eta-mode", "steps", "--grad-agreement"),
                   cwd=tmp_path, env=_env(), check=True, timeout=900)
    events = EventAccumulator(str(tmp_path / "runs" / "dense"))
    events.Reload()
    scalar = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}
    assert scalar["charts/value_time"] > 0 and scalar["rftf/reward_shaped_mean"] != 0.0
    # Every episode failed (12 steps of a random head), so A = -(1 + GAE of shaped rewards).
    assert scalar["rftf/train_success"] == 0.0 and scalar["rftf/adv_mean"] != -1.0
    # --tasks turn_on_led: every training episode was that task.
    assert [tag for tag in scalar if tag.startswith("rftf/task_success/")] == ["rftf/task_success/turn_on_led"]
    assert -1.0 <= scalar["losses/grad_half_cosine"] <= 1.0 and scalar["losses/grad_half_cosine"] != 0.0


@pytest.mark.slow
def test_smooth_head_change_trains_saves_folded_and_resumes(tiny_vla, tmp_path):
    from safetensors.torch import load_file

    from rftf_gym.models import load_vla, smooth_bin_basis

    args = ("--reward-mode", "sparse", "--run-name", "smooth", "--checkpoint-dir", "ckpt", "--head-basis-width", "0.5")
    subprocess.run(_command(tiny_vla, *args, "--total-episodes", "8"), cwd=tmp_path, env=_env(), check=True, timeout=900)
    run_dir = tmp_path / "ckpt" / "smooth"
    start, tuned = load_vla(tiny_vla), load_vla(run_dir / "iter_000002")  # a plain VLA: evaluate.py loads it
    for name, a in start.state_dict().items():
        assert torch.equal(a, tuned.state_dict()[name]) == (not name.startswith("action_head.3.")), name
    # The last layer moved only along the bumps over the bins, the change saved for resuming.
    change = (tuned.action_head[3].weight - start.action_head[3].weight).detach().view(7, -1, 16)
    basis = smooth_bin_basis(change.shape[1], 0.5)
    projected = basis @ torch.linalg.pinv(basis.T @ basis) @ basis.T @ change
    assert change.abs().max() > 0 and torch.allclose(projected, change, atol=1e-2 * float(change.abs().max()))  # float32 rounding of W
    delta = load_file(str(run_dir / "iter_000002" / "trainer.safetensors"))
    assert delta["head_delta.weight"].shape == (7 * basis.shape[1], 16)
    done = subprocess.run(_command(tiny_vla, *args, "--total-episodes", "12"), cwd=tmp_path, env=_env(), check=True,
                          timeout=900, capture_output=True, text=True)
    assert "resumed from ckpt/smooth/iter_000002" in done.stdout and _final_state(run_dir)["iteration"] == 3
    # Resuming with the whole head trained instead is refused, the field named.
    refused = subprocess.run(_command(tiny_vla, "--reward-mode", "sparse", "--run-name", "smooth", "--checkpoint-dir", "ckpt",
                                      "--total-episodes", "16"), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                             timeout=900)
    assert refused.returncode == 2 and "head_basis_width" in refused.stderr


@pytest.mark.slow
def test_anchored_run_logs_the_kl_on_untrained_tasks_and_resumes(tiny_vla, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ("--reward-mode", "sparse", "--run-name", "anchor", "--checkpoint-dir", "ckpt", "--tasks", "turn_on_led",
            "--anchor-coef", "1", "--anchor-episodes", "2")
    done = subprocess.run(_command(tiny_vla, *args, "--total-episodes", "8"), cwd=tmp_path, env=_env(), check=True,
                          timeout=900, capture_output=True, text=True)
    assert "anchors: " in done.stdout and " of 2 episodes of " in done.stdout
    events = EventAccumulator(str(tmp_path / "runs" / "anchor"), size_guidance={"scalars": 0})
    events.Reload()
    kl_anchor = [e.value for e in events.Scalars("rftf/kl_anchor")]
    # The first minibatch meets the head at pi_ref (KL 0); later ones after it moved.
    assert len(kl_anchor) == 2 and all(np.isfinite(kl_anchor)) and kl_anchor[-1] > 0
    # A resume with another learning rate trains at that rate (the optimizer state carries the old one).
    resumed = subprocess.run(_command(tiny_vla, *args, "--total-episodes", "12", "--learning-rate", "2e-3"), cwd=tmp_path,
                             env=_env(), check=True, timeout=900, capture_output=True, text=True)
    assert "resumed from ckpt/anchor/iter_000002" in resumed.stdout and "anchors: " in resumed.stdout
    assert "learning_rate 0.001 -> 0.002" in resumed.stdout
    events = EventAccumulator(str(tmp_path / "runs" / "anchor"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.value for e in events.Scalars("charts/learning_rate")] == pytest.approx([1e-3, 1e-3, 2e-3])


@pytest.mark.slow
def test_opposite_anchor_logs_the_kl_under_the_opposite_sentence(tiny_vla, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ("--reward-mode", "sparse", "--run-name", "opposite", "--checkpoint-dir", "ckpt", "--tasks",
            "move_slider_left,lift_red_block_table", "--opposite-anchor-coef", "1", "--total-episodes", "8")
    subprocess.run(_command(tiny_vla, *args), cwd=tmp_path, env=_env(), check=True, timeout=900, capture_output=True, text=True)
    events = EventAccumulator(str(tmp_path / "runs" / "opposite"), size_guidance={"scalars": 0})
    events.Reload()
    kl_opposite = [e.value for e in events.Scalars("rftf/kl_opposite")]
    # The first minibatch meets the head at pi_ref (KL 0); later ones after it moved.
    assert len(kl_opposite) == 2 and all(np.isfinite(kl_opposite)) and kl_opposite[-1] > 0
    assert _final_state(tmp_path / "ckpt" / "opposite")["args"]["opposite_anchor_coef"] == 1.0


def test_anchor_arguments_are_checked():
    anchored = anchor_tasks(Args(tasks="turn_on_led"))
    # 33 untrained tasks, less the 7 that no fresh episode starts (a block held, in the drawer or stacked)
    assert "turn_on_led" not in anchored and "stack_block" not in anchored and len(anchored) == 26
    with pytest.raises(ValueError, match="every such task is trained"):
        check_args(Args(value_model="v", anchor_coef=1.0))
    with pytest.raises(ValueError, match="every such task is trained"):  # only tasks no random layout starts are left
        check_args(Args(value_model="v", anchor_coef=1.0, tasks=",".join(anchor_tasks(Args(tasks="turn_on_led")) + ["turn_on_led"])))
    for coef in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="--anchor-coef"):
            check_args(Args(value_model="v", tasks="turn_on_led", anchor_coef=coef))
    with pytest.raises(ValueError, match="--anchor-episodes"):
        check_args(Args(value_model="v", tasks="turn_on_led", anchor_coef=1.0, anchor_episodes=0))


@pytest.mark.parametrize("width", [0.0, 0.5])
def test_anchor_kl_is_zero_at_the_start_and_grows_with_the_trained_head(width):
    import copy

    from rftf_gym.models import SmoothHeadDelta

    torch.manual_seed(0)
    vla = VLA(VLAConfig(obs_mode="state", d_model=16, n_layers=1, n_heads=2, head_hidden=16))
    ref_head = copy.deepcopy(vla.action_head).requires_grad_(False)
    head = SmoothHeadDelta(vla.action_head, vla.config.num_bins, width) if width else vla.action_head
    features = torch.randn(5, vla.config.num_action_queries * vla.config.d_model)
    assert torch.allclose(anchor_kl(head, ref_head, features, vla.config.num_bins), torch.zeros(5), atol=1e-6)
    trainable = [p for p in head.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in trainable:
            p.add_(0.1 * torch.randn_like(p))
    kl = anchor_kl(head, ref_head, features, vla.config.num_bins)
    new = BinnedActionDistribution(head(features).view(5, 7, -1))
    ref = BinnedActionDistribution(ref_head(features).view(5, 7, -1))
    assert torch.allclose(kl, new.kl(ref), rtol=1e-4) and (kl > 0).all()
    kl.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


def test_anchor_states_come_from_untrained_tasks_only_and_repeat(tiny_vla):
    import copy

    from rftf_gym.models import load_vla
    from rftf_gym.tasks import TASK_NAMES

    vla = load_vla(tiny_vla)
    ref_head = copy.deepcopy(vla.action_head)
    # Every task but two is trained, so only episodes of those two become anchors.
    untrained = {"open_drawer", "move_slider_left"}
    args = Args(scenes="D", tasks=",".join(t for t in TASK_NAMES if t not in untrained), num_envs=2,
                max_episode_steps=4, anchor_episodes=3)
    features, episodes = collect_anchor_features(args, vla, ref_head, "state", ["D", "D"], 5, torch.device("cpu"), show=False)
    assert len(episodes) == 3 and set(episodes) <= untrained
    assert features.shape[1] == vla.config.num_action_queries * vla.config.d_model and 3 <= len(features) <= 12
    again, _ = collect_anchor_features(args, vla, ref_head, "state", ["D", "D"], 5, torch.device("cpu"), show=False)
    assert torch.equal(features, again)


def test_opposite_anchor_arguments_are_checked():
    for coef in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="--opposite-anchor-coef"):
            check_args(Args(value_model="v", opposite_anchor_coef=coef))
    with pytest.raises(ValueError, match="none of --tasks has one"):
        check_args(Args(value_model="v", tasks="lift_red_block_table", opposite_anchor_coef=1.0))
    check_args(Args(value_model="v", tasks="lift_red_block_table,open_drawer", opposite_anchor_coef=1.0))
    check_args(Args(value_model="v", opposite_anchor_coef=1.0))


def test_opposite_features_read_the_opposite_tasks_paraphrase_kept_per_episode(tiny_vla):
    from rftf_gym.language import TRAIN_INSTRUCTIONS
    from rftf_gym.models import load_vla

    vla = load_vla(tiny_vla).eval()
    env = CalvinEnv(scene="D", obs_mode="state")
    obs, _ = env.reset(seed=0)
    batch = {key: np.stack([value] * 3) for key, value in obs.items() if key != "instruction"}
    batch["instruction"] = np.array(["open the drawer", "move the slider left", "lift the red block"])
    current = [Episode(task="open_drawer", scene="D"), Episode(task="move_slider_left", scene="D"),
               Episode(task="lift_red_block_table", scene="D")]
    rng = np.random.default_rng(0)
    with torch.no_grad():
        features = opposite_features(vla, batch, current, rng)
        assert current[0].opposite_sentence in TRAIN_INSTRUCTIONS["close_drawer"]
        assert current[1].opposite_sentence in TRAIN_INSTRUCTIONS["move_slider_right"]
        assert current[2].opposite_sentence is None and sorted(features) == [0, 1]  # no opposite: no row
        read = [current[0].opposite_sentence, current[1].opposite_sentence, "lift the red block"]
        expected = vla.features(vla.preprocess(batch, read))
        assert all(torch.allclose(features[i], expected[i]) for i in (0, 1))
        # The paraphrase is drawn once per episode: the next step reads the same one.
        again = opposite_features(vla, batch, current, rng)
        assert opposite_features(vla, batch, current[2:], rng) == {}
    assert all(torch.equal(features[i], again[i]) for i in (0, 1))


def test_frozen_kl_fn_gives_the_exact_kl_of_the_rows_asked():
    import copy

    from rftf_gym.models import SmoothHeadDelta

    torch.manual_seed(1)
    vla = VLA(VLAConfig(obs_mode="state", d_model=16, n_layers=1, n_heads=2, head_hidden=16))
    ref_head = copy.deepcopy(vla.action_head).requires_grad_(False)
    head = SmoothHeadDelta(vla.action_head, vla.config.num_bins, 0.5)
    with torch.no_grad():
        head.weight.add_(torch.randn_like(head.weight))
    features = torch.randn(6, vla.config.num_action_queries * vla.config.d_model)
    rows = torch.tensor([4, 1, 1])
    kl = frozen_kl_fn(head, ref_head, features, vla.config.num_bins)(rows)
    new = BinnedActionDistribution(head(features[rows]).view(3, 7, -1))
    ref = BinnedActionDistribution(ref_head(features[rows]).view(3, 7, -1))
    assert torch.allclose(kl, new.kl(ref), rtol=1e-4) and (kl > 0).all() and kl[1] == kl[2]
    kl.sum().backward()
    assert head.weight.grad.abs().sum() > 0


def test_opposite_batch_maps_each_step_to_its_opposite_row():
    def episode(task: str, steps: int, base: float, opposite: bool) -> Episode:
        e = Episode(task=task, scene="D", logprobs=[0.0] * steps)
        if opposite:
            e.opposite_features = [torch.full((3,), base + k) for k in range(steps)]
        return e

    batch = [episode("open_drawer", 2, 10.0, True), episode("lift_red_block_table", 3, 0.0, False),
             episode("move_slider_left", 2, 20.0, True)]
    rows, features = opposite_batch(batch)
    assert rows.tolist() == [0, 1, -1, -1, -1, 2, 3]
    assert features[:, 0].tolist() == [10.0, 11.0, 20.0, 21.0]
    rows, features = opposite_batch([batch[1]])
    assert rows.tolist() == [-1, -1, -1] and features is None


def test_chain_length_wraps_the_training_envs():
    from ppo_rftf import make_env
    from rftf_gym.wrappers import ChainedResets

    env = make_env(Args(chain_length=5), "D", "state")()
    assert isinstance(env, ChainedResets) and env.chain_length == 5
    env.close()
    env = make_env(Args(), "D", "state")()
    assert not isinstance(env, ChainedResets)
    env.close()
    with pytest.raises(ValueError, match="--chain-length"):
        check_args(Args(value_model="v", chain_length=0))
    env = make_env(Args(start_states="eval", scenes="D"), "D", "state")()
    assert isinstance(env, ChainedResets) and env.chain_length == 1 and env.start_states == "eval"
    env.close()
    with pytest.raises(ValueError, match="--start-states eval"):
        check_args(Args(value_model="v", start_states="eval", scenes="ABC"))


def test_head_basis_width_is_checked():
    for width in (-0.1, 2.5, float("nan")):
        with pytest.raises(ValueError, match="--head-basis-width"):
            check_args(Args(value_model="v", head_basis_width=width))


def test_a_checkpoint_from_before_the_smooth_change_counts_as_the_whole_head(tmp_path):
    from ppo_rftf import load_trainer

    # A trainer.json written before --head-basis-width existed: that run trained the whole head.
    args = Args(value_model="v", policy="p")
    saved = {k: getattr(args, k) for k in ("policy", "value_model", "reward_mode", "scenes", "episodes_per_iteration",
                                            "world_size")}
    (tmp_path / "iter_000001").mkdir()
    (tmp_path / "iter_000001" / "trainer.json").write_text(json.dumps({"state": {"args": saved}}))
    (tmp_path / "latest.json").write_text(json.dumps({"checkpoint": "iter_000001"}))
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match=r"head_basis_width: checkpoint 0\.0 vs now 0\.1"):
        load_trainer(tmp_path, args, optimizer)


@pytest.mark.slow
def test_task_baseline_history_is_kept_in_the_checkpoint_and_resumed(tiny_vla, tmp_path):
    args = ("--reward-mode", "sparse", "--task-baseline", "2", "--run-name", "base", "--checkpoint-dir", "ckpt")
    subprocess.run(_command(tiny_vla, *args, "--total-episodes", "8"), cwd=tmp_path, env=_env(), check=True, timeout=900)
    first = _final_state(tmp_path / "ckpt" / "base")["task_history"]
    assert first and all(1 <= len(past) <= 2 and set(past) <= {-1.0, 1.0} for past in first.values())
    assert sum(map(len, first.values())) <= 8
    subprocess.run(_command(tiny_vla, *args, "--total-episodes", "12"), cwd=tmp_path, env=_env(), check=True, timeout=900)
    after = _final_state(tmp_path / "ckpt" / "base")["task_history"]
    # the resumed run continued the histories: the tasks of the first 8 episodes are still there (its 4 new
    # episodes alone could not name them all), each keeping its last 2 outcomes
    assert len(first) > 4 and set(first) <= set(after)
    assert all(len(past) <= 2 for past in after.values())
    # A resume with a shorter window keeps only each task's last outcome.
    shorter = [a if a != "2" else "1" for a in args]
    subprocess.run(_command(tiny_vla, *shorter, "--total-episodes", "16"), cwd=tmp_path, env=_env(), check=True, timeout=900)
    last = _final_state(tmp_path / "ckpt" / "base")["task_history"]
    assert set(after) <= set(last) and all(len(past) == 1 for past in last.values())


@pytest.mark.slow
def test_text_encoder_is_kept_in_the_checkpoints_and_a_resume_must_keep_it(tiny_vla, tmp_path):
    from rftf_gym.models import load_vla

    snap = "snap-" + load_vla(tiny_vla).config.text_encoder
    args = ("--reward-mode", "sparse", "--run-name", "snap", "--checkpoint-dir", "ckpt")
    subprocess.run(_command(tiny_vla, *args, "--total-episodes", "4", "--text-encoder", snap), cwd=tmp_path, env=_env(),
                   check=True, timeout=900)
    tuned = load_vla(tmp_path / "ckpt" / "snap" / "iter_000001")  # evaluate.py reads the sentences as it was trained
    assert tuned.config.text_encoder == snap
    refused = subprocess.run(_command(tiny_vla, *args, "--total-episodes", "8"), cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=900)
    assert refused.returncode == 2 and "text_encoder: checkpoint" in refused.stderr
