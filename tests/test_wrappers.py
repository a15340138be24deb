"""The value-model reward wrappers: info keys, shaping, batching and autoreset handling."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import rftf_gym  # noqa: F401  (registers the env)
from rftf_gym.env import CalvinEnv
from rftf_gym.wrappers import ChainedResets, ValueReward, ValueRewardVectorWrapper, ValueRewardWrapper, make_calvin_env

GAMMA = 0.9


class Counter(gym.Env):
    """A toy env: x counts the steps; the episode ends after ``length`` steps, by termination
    (a success, reward 1) or by truncation."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, length: int = 3, terminate: bool = True, extra_info: dict | None = None) -> None:
        self.length, self.terminate, self.extra_info = length, terminate, extra_info or {}
        self.observation_space = spaces.Dict(
            {"x": spaces.Box(-100, 100, (1,), np.float64), "instruction": spaces.Text(20)}
        )
        self.action_space = spaces.Box(-1, 1, (1,), np.float64)

    def _obs(self):
        return {"x": np.array([float(self.t)]), "instruction": "count"}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), dict(self.extra_info)

    def step(self, action):
        self.t += 1
        end = self.t >= self.length
        terminated, truncated = end and self.terminate, end and not self.terminate
        info = {"success": terminated, **self.extra_info}
        return self._obs(), float(terminated), terminated, truncated, info


def line_value(obs, instructions):
    """V = 2 x + 1: hand-computable."""
    return 2.0 * obs["x"][:, 0] + 1.0


def calvin_value(obs, instructions):
    """A deterministic value of a CALVIN state and its instruction."""
    lengths = np.array([len(s) for s in instructions], dtype=np.float64)
    return obs["robot_obs"][:, 0] + 0.5 * obs["scene_obs"][:, 1] + 0.01 * lengths


def test_single_env_terminated_episode_by_hand():
    env = ValueRewardWrapper(Counter(length=3, terminate=True), line_value, gamma=GAMMA)
    _, info = env.reset(seed=0)
    assert info["value"] == 1.0
    rewards, infos = [], []
    for _ in range(3):
        _, reward, terminated, truncated, info = env.step(np.zeros(1))
        rewards.append(reward)
        infos.append(info)
    # V(s_0..s_3) = 1, 3, 5, 7; the last step terminates, so phi(s_3) = 0.
    assert [i["value"] for i in infos] == [3.0, 5.0, 7.0]
    np.testing.assert_allclose([i["shaping_reward"] for i in infos], [0.9 * 3 - 1, 0.9 * 5 - 3, 0.0 - 5])
    np.testing.assert_allclose(rewards, [1.7, 1.5, 1.0 - 5.0])  # dense = sparse + shaping
    assert [i["sparse_reward"] for i in infos] == [0.0, 0.0, 1.0]
    assert [i["success"] for i in infos] == [False, False, True]
    assert "episode_values" not in infos[1]
    np.testing.assert_array_equal(infos[-1]["episode_values"], [1.0, 3.0, 5.0, 7.0])


def test_single_env_truncation_keeps_the_potential():
    env = ValueRewardWrapper(Counter(length=2, terminate=False), line_value, gamma=GAMMA)
    env.reset(seed=0)
    env.step(np.zeros(1))
    _, reward, terminated, truncated, info = env.step(np.zeros(1))
    assert truncated and not terminated
    assert info["shaping_reward"] == pytest.approx(0.9 * 5 - 3)
    assert reward == pytest.approx(0.9 * 5 - 3)


def test_sparse_mode_returns_the_env_reward_and_still_writes_values():
    env = ValueRewardWrapper(Counter(length=1), line_value, reward_mode="sparse", gamma=GAMMA)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(1))
    assert reward == 1.0 and info["dense_reward"] == pytest.approx(1.0 - 1.0)


def test_refuses_to_overwrite_info_keys():
    env = ValueRewardWrapper(Counter(extra_info={"value": 3}), line_value)
    with pytest.raises(ValueError, match="never overwrites"):
        env.reset(seed=0)
    vec = ValueRewardVectorWrapper(SyncVectorEnv([lambda: Counter(extra_info={"dense_reward": 0})]), line_value)
    with pytest.raises(ValueError, match="never overwrites"):
        vec.reset(seed=0)


def test_constructor_checks():
    with pytest.raises(ValueError, match="reward_mode"):
        ValueRewardWrapper(Counter(), line_value, reward_mode="shaped")
    with pytest.raises(ValueError, match="gamma"):
        ValueRewardWrapper(Counter(), line_value, gamma=0.0)
    with pytest.raises(ValueError, match="needs a value model"):
        ValueRewardWrapper(Counter(), None)
    with pytest.raises(TypeError, match="value_model must be"):
        ValueRewardWrapper(Counter(), 3.0)
    with pytest.raises(ValueError, match="needs a value_model"):
        gym.make("RFTF-CALVIN-v0", obs_mode="state", reward_mode="dense")


def test_bad_value_model_output_is_named():
    env = ValueRewardWrapper(Counter(), lambda obs, instr: np.zeros(2))
    with pytest.raises(ValueError, match="one value per row"):
        env.reset(seed=0)
    env = ValueRewardWrapper(Counter(), lambda obs, instr: np.array([np.nan]))
    with pytest.raises(ValueError, match="non-finite"):
        env.reset(seed=0)


class Predictor:
    """A value model object with the ``.predict`` API (as ``ValueModel``)."""

    def predict(self, obs, instructions):
        return torch.as_tensor(calvin_value(obs, instructions), dtype=torch.float32)


def test_gym_make_with_a_value_model_on_calvin():
    env = gym.make("RFTF-CALVIN-v0", obs_mode="state", value_model=Predictor(), reward_mode="dense", gamma=GAMMA)
    obs, info = env.reset(seed=3)
    prev = info["value"]
    assert prev == pytest.approx(float(calvin_value({k: v[None] for k, v in obs.items() if k != "instruction"},
                                                    [obs["instruction"]])[0]), rel=1e-6)
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert {"value", "dense_reward", "shaping_reward", "sparse_reward", "success", "task"} <= set(info)
        assert info["shaping_reward"] == pytest.approx(GAMMA * info["value"] - prev)
        assert reward == info["dense_reward"]
        prev = info["value"]
    env.close()
    plain = gym.make("RFTF-CALVIN-v0", obs_mode="state")
    assert isinstance(plain.unwrapped, CalvinEnv) and not isinstance(plain.env.env, ValueRewardWrapper)
    plain.close()


def test_check_env_passes_on_the_wrapped_env():
    from gymnasium.utils.env_checker import check_env

    env = make_calvin_env(obs_mode="state", value_model=calvin_value, reward_mode="dense")
    check_env(env, skip_render_check=True)
    env.close()


def test_vector_values_equal_one_by_one_with_one_call_per_step():
    calls = []

    def counted(obs, instructions):
        calls.append(len(instructions))
        return calvin_value(obs, instructions)

    seeds = [0, 1, 2]
    vec = ValueRewardVectorWrapper(
        SyncVectorEnv([lambda: CalvinEnv(obs_mode="state") for _ in seeds]), counted, gamma=GAMMA
    )
    singles = [ValueRewardWrapper(CalvinEnv(obs_mode="state"), calvin_value, gamma=GAMMA) for _ in seeds]
    _, vinfo = vec.reset(seed=seeds)
    sinfos = [env.reset(seed=s)[1] for env, s in zip(singles, seeds)]
    np.testing.assert_allclose(vinfo["value"], [i["value"] for i in sinfos])
    rng = np.random.default_rng(0)
    for _ in range(4):
        actions = rng.uniform(-1, 1, (3, 7))
        _, vreward, _, _, vinfo = vec.step(actions)
        steps = [env.step(a) for env, a in zip(singles, actions)]
        np.testing.assert_allclose(vinfo["value"], [s[4]["value"] for s in steps])
        np.testing.assert_allclose(vreward, [s[1] for s in steps])
        assert vinfo["_dense_reward"].all() and vinfo["_value"].all()
    assert calls == [3] * 5  # one batched call per reset/step, never one per sub-env
    vec.close()
    for env in singles:
        env.close()


def _run_vector(vec, steps):
    out = []
    vec.reset(seed=0)
    for _ in range(steps):
        out.append(vec.step(np.zeros((vec.num_envs, 1))))
    return out


def test_vector_next_step_autoreset_does_not_shape_across_episodes():
    vec = ValueRewardVectorWrapper(SyncVectorEnv([lambda: Counter(length=2)]), line_value, gamma=GAMMA)
    assert vec.autoreset_mode == AutoresetMode.NEXT_STEP
    (o1, r1, *_, i1), (o2, r2, t2, _, i2), (o3, r3, _, _, i3), (o4, r4, *_, i4) = _run_vector(vec, 4)
    np.testing.assert_allclose(r1, [0.9 * 3 - 1])
    assert t2[0] and r2[0] == pytest.approx(1.0 + 0.0 - 3.0)  # terminated: zero potential
    np.testing.assert_array_equal(i2["episode_values"][0], [1.0, 3.0, 5.0])
    assert i2["_episode_values"][0]
    # The autoreset step: reward 0, the reset state's value, no shaped reward.
    assert r3[0] == 0.0 and i3["value"][0] == 1.0 and not i3["_dense_reward"][0]
    assert "episode_values" not in i3
    np.testing.assert_allclose(r4, [0.9 * 3 - 1])  # the new episode starts from V(s_0) = 1


def test_vector_same_step_autoreset_scores_the_final_observation():
    vec = ValueRewardVectorWrapper(
        SyncVectorEnv([lambda: Counter(length=2, terminate=False)], autoreset_mode=AutoresetMode.SAME_STEP),
        line_value,
        gamma=GAMMA,
    )
    assert vec.autoreset_mode == AutoresetMode.SAME_STEP
    (_, r1, *_), (o2, r2, _, tr2, i2), (_, r3, *_) = _run_vector(vec, 3)
    assert tr2[0] and o2["x"][0, 0] == 0.0  # already the next episode's reset observation
    assert r2[0] == pytest.approx(0.9 * 5 - 3)  # truncated: V(final obs) = 5 kept as potential
    assert i2["value"][0] == 5.0
    np.testing.assert_array_equal(i2["episode_values"][0], [1.0, 3.0, 5.0])
    assert r3[0] == pytest.approx(0.9 * 3 - 1)


def test_vector_disabled_autoreset_with_reset_mask():
    vec = ValueRewardVectorWrapper(
        SyncVectorEnv([lambda: Counter(length=1), lambda: Counter(length=5)], autoreset_mode=AutoresetMode.DISABLED),
        line_value,
        gamma=GAMMA,
    )
    vec.reset(seed=0)
    _, reward, terminated, _, info = vec.step(np.zeros((2, 1)))
    assert terminated.tolist() == [True, False] and info["_episode_values"].tolist() == [True, False]
    _, info = vec.reset(options={"reset_mask": np.array([True, False])})
    assert info["_value"].tolist() == [True, False] and info["value"][0] == 1.0
    _, reward, *_ = vec.step(np.zeros((2, 1)))
    np.testing.assert_allclose(reward, [1.0 - 1.0, 0.9 * 5 - 3])


def test_async_vector_env_matches_sync():
    fns = [lambda: CalvinEnv(obs_mode="state") for _ in range(2)]
    shared = gym.vector.AsyncVectorEnv(fns)
    with pytest.raises(ValueError, match="shared_memory=False"):
        ValueRewardVectorWrapper(shared, calvin_value)
    shared.close()
    results = []
    for vector_env in (lambda: SyncVectorEnv(fns), lambda: gym.vector.AsyncVectorEnv(fns, shared_memory=False)):
        vec = ValueRewardVectorWrapper(vector_env(), calvin_value, gamma=GAMMA)
        _, info = vec.reset(seed=[5, 6])
        values = [info["value"]]
        rng = np.random.default_rng(1)
        for _ in range(3):
            _, reward, _, _, info = vec.step(rng.uniform(-1, 1, (2, 7)))
            values += [info["value"], reward]
        vec.close()
        results.append(np.stack(values))
    np.testing.assert_allclose(results[0], results[1])


def test_compute_reward_reads_lerobot_batches():
    rng = np.random.default_rng(0)
    static = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    robot = rng.normal(size=(2, 15))

    def value(obs, instructions):
        return obs["rgb_static"].reshape(2, -1).astype(np.float64).mean(1) + obs["robot_obs"][:, 0]

    reward = ValueReward(value)
    lerobot = {
        "observation.images.rgb_static": torch.as_tensor(static).permute(0, 3, 1, 2).float() / 255.0,
        "observation.state": torch.as_tensor(robot),
        "task": ["open the drawer", "push the button"],
    }
    got = reward.compute_reward(lerobot)
    assert got.shape == (2,) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), value({"rgb_static": static, "robot_obs": robot}, []), rtol=1e-6)
    with pytest.raises(ValueError, match="instruction"):
        reward.compute_reward({"observation.state": torch.zeros(2, 15)})
    # A start-frame model gets the batch's start frames through.
    start = ValueReward(since_start).compute_reward({"observation.state": torch.as_tensor(robot),
                                                     "start_robot_obs": torch.zeros(2, 15), "task": ["a", "b"]})
    np.testing.assert_allclose(start.numpy(), robot[:, 0], rtol=1e-6)


def test_gym_make_loads_a_value_checkpoint(tmp_path):
    value_model = pytest.importorskip("rftf_gym.value_model")  # lands with train_value.py
    from rftf_gym.models import VLAConfig

    torch.manual_seed(0)
    model = value_model.ValueModel(VLAConfig(obs_mode="state", d_model=16, n_layers=1, n_heads=2), head_hidden=8)
    value_model.save_value_model(tmp_path / "value", model)
    env = gym.make("RFTF-CALVIN-v0", obs_mode="state", value_model=str(tmp_path / "value"), reward_mode="dense")
    obs, info = env.reset(seed=0)
    batch = {k: obs[k][None] for k in ("robot_obs", "scene_obs")}
    assert info["value"] == pytest.approx(float(model.predict(batch, [obs["instruction"]])[0]), rel=1e-5)
    env.close()


# ---------------------------------------------------------------------------- start-frame context
class Episodic(Counter):
    """Counter whose robot_obs[0] is 100 * (episode index) + t: every episode starts elsewhere."""

    def __init__(self, length: int = 3, terminate: bool = True) -> None:
        super().__init__(length, terminate)
        self.observation_space = spaces.Dict(
            {"robot_obs": spaces.Box(-1e4, 1e4, (15,), np.float64), "instruction": spaces.Text(20)}
        )
        self.episode = -1

    def _obs(self):
        robot = np.zeros(15)
        robot[0] = 100.0 * self.episode + self.t
        return {"robot_obs": robot, "instruction": "count"}

    def reset(self, *, seed=None, options=None):
        self.episode += 1
        return super().reset(seed=seed, options=options)


def since_start(obs, instructions):
    """V(s_t | s_0) = x_t - x_0 (progress since the episode's reset observation)."""
    return obs["robot_obs"][:, 0] - obs["start_robot_obs"][:, 0]


since_start.context = "start"


def test_single_env_gives_a_start_model_the_episodes_reset_observation():
    env = ValueRewardWrapper(Episodic(length=2), since_start, gamma=GAMMA)
    assert env.context == "start"
    for _ in range(2):  # the second episode starts at x = 100: its values are again 0, 1, 2
        _, info = env.reset()
        assert info["value"] == 0.0
        _, r1, *_ = env.step(np.zeros(1))
        _, r2, terminated, _, i2 = env.step(np.zeros(1))
        assert r1 == pytest.approx(0.9 * 1 - 0) and terminated and r2 == pytest.approx(1.0 - 1.0)
        np.testing.assert_array_equal(i2["episode_values"], [0.0, 1.0, 2.0])


def test_vector_start_model_uses_the_new_episodes_start_after_next_step_autoreset():
    vec = ValueRewardVectorWrapper(SyncVectorEnv([lambda: Episodic(length=2), lambda: Episodic(length=3)]), since_start, gamma=GAMMA)
    assert vec.autoreset_mode == AutoresetMode.NEXT_STEP and vec.context == "start"
    out = _run_vector(vec, 5)
    np.testing.assert_array_equal(out[1][4]["episode_values"][0], [0.0, 1.0, 2.0])
    # Step 3 resets row 0 (x = 100): its value is 0 from its own start, not 100 from the old one.
    assert out[2][0]["robot_obs"][0, 0] == 100.0 and out[2][4]["value"][0] == 0.0
    np.testing.assert_array_equal(out[2][4]["episode_values"][1], [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(out[3][1], [0.9 * 1 - 0, 0.0])  # both new episodes rise from 0 (row 1 resets now)
    np.testing.assert_allclose(out[4][1], [1.0 - 1.0, 0.9 * 1 - 0])


def test_vector_start_model_same_step_autoreset_scores_the_final_from_the_old_start():
    vec = ValueRewardVectorWrapper(
        SyncVectorEnv([lambda: Episodic(length=2, terminate=False)], autoreset_mode=AutoresetMode.SAME_STEP), since_start, gamma=GAMMA
    )
    (_, r1, *_), (o2, r2, _, tr2, i2), (_, r3, *_, i3) = _run_vector(vec, 3)
    assert r1[0] == pytest.approx(0.9 * 1 - 0)
    assert tr2[0] and o2["robot_obs"][0, 0] == 100.0  # already the next episode's reset
    assert i2["value"][0] == 2.0 and r2[0] == pytest.approx(0.9 * 2 - 1)  # final obs x=2 from start x=0
    np.testing.assert_array_equal(i2["episode_values"][0], [0.0, 1.0, 2.0])
    assert i3["value"][0] == 1.0 and r3[0] == pytest.approx(0.9 * 1 - 0)  # from the new start x=100


def test_vector_start_model_reset_mask_updates_only_the_reset_rows():
    vec = ValueRewardVectorWrapper(
        SyncVectorEnv([lambda: Episodic(length=1), lambda: Episodic(length=5)], autoreset_mode=AutoresetMode.DISABLED),
        since_start, gamma=GAMMA,
    )
    vec.reset(seed=0)
    vec.step(np.zeros((2, 1)))
    _, info = vec.reset(options={"reset_mask": np.array([True, False])})
    assert info["value"][0] == 0.0
    _, reward, _, _, info = vec.step(np.zeros((2, 1)))
    np.testing.assert_allclose(info["value"], [1.0, 2.0])  # row 0 from x=100, row 1 still from x=0
    np.testing.assert_allclose(reward, [1.0 - 0.0, 0.9 * 2 - 1])


def test_vector_start_model_on_calvin_equals_one_by_one_in_one_call_per_step():
    calls = []

    def counted(obs, instructions):
        calls.append(len(instructions))
        start = {"robot_obs": obs["start_robot_obs"], "scene_obs": obs["start_scene_obs"]}
        return calvin_value(obs, instructions) - 0.7 * calvin_value(start, instructions)

    counted.context = "start"
    seeds = [0, 1, 2]
    vec = ValueRewardVectorWrapper(SyncVectorEnv([lambda: CalvinEnv(obs_mode="state") for _ in seeds]), counted, gamma=GAMMA)
    singles = [ValueRewardWrapper(CalvinEnv(obs_mode="state"), counted, gamma=GAMMA) for _ in seeds]
    _, vinfo = vec.reset(seed=seeds)
    calls.clear()
    sinfos = [env.reset(seed=s)[1] for env, s in zip(singles, seeds)]
    np.testing.assert_allclose(vinfo["value"], [i["value"] for i in sinfos])
    rng = np.random.default_rng(0)
    for _ in range(3):
        actions = rng.uniform(-1, 1, (3, 7))
        calls.clear()
        _, vreward, _, _, vinfo = vec.step(actions)
        assert calls == [3]
        steps = [env.step(a) for env, a in zip(singles, actions)]
        np.testing.assert_allclose(vinfo["value"], [s[4]["value"] for s in steps])
        np.testing.assert_allclose(vreward, [s[1] for s in steps])
    vec.close()
    for env in singles:
        env.close()


# ------------------------------------------------------------------------- chained training resets
def _play_expert(env: gym.Env, obs: dict, seed: int) -> tuple[dict, bool]:
    from rftf_gym.policies import ExpertAdapter

    expert = ExpertAdapter("D", seed)
    for _ in range(360):
        obs, _, terminated, truncated, _ = env.step(expert.act(obs, obs["instruction"]))
        if terminated or truncated:
            return obs, bool(terminated)
    raise AssertionError("the episode did not end within 360 steps")


def test_chained_resets_continue_after_a_success_up_to_the_chain_length():
    env = ChainedResets(CalvinEnv(scene="D", obs_mode="state"), chain_length=2)
    obs, info = env.reset(seed=3)
    assert info["chain_link"] == 0
    links = []
    for episode in range(4):
        last, success = _play_expert(env, obs, episode)
        obs, info = env.reset()
        continued = np.array_equal(obs["robot_obs"], last["robot_obs"]) and np.array_equal(obs["scene_obs"], last["scene_obs"])
        links.append((success, info["chain_link"], continued))
        if info["chain_link"] == 1:  # a new instruction that applies where the last one ended
            assert info["task"] in env.unwrapped.applicable_tasks()
    # The experts succeed from these layouts: links alternate 1, 0 (a fresh layout after 2 instructions).
    assert links == [(True, 1, True), (True, 0, False), (True, 1, True), (True, 0, False)]
    env.close()


def test_chained_resets_start_afresh_after_a_failure_or_when_the_fixed_task_no_longer_applies():
    env = ChainedResets(gym.wrappers.TimeLimit(CalvinEnv(scene="D", obs_mode="state"), 3), chain_length=5)
    env.reset(seed=0)
    for _ in range(3):  # standing still: truncated, a failure
        *_, truncated, _ = env.step(np.zeros(7))
    assert truncated and env.reset()[1]["chain_link"] == 0
    env.close()
    env = ChainedResets(CalvinEnv(scene="D", obs_mode="state", task="turn_on_led"), chain_length=5)
    obs, _ = env.reset(seed=0)
    _, success = _play_expert(env, obs, 0)
    assert success and "turn_on_led" not in env.unwrapped.applicable_tasks()  # the LED is on now
    assert env.reset()[1]["chain_link"] == 0
    env.close()
    with pytest.raises(ValueError, match="chain_length"):
        ChainedResets(CalvinEnv(scene="D", obs_mode="state"), chain_length=0)


def test_chained_resets_can_start_from_the_evaluation_initial_states():
    from rftf_gym.sequences import get_env_state_for_initial_condition, initial_states

    starts = [np.concatenate(get_env_state_for_initial_condition(state)) for state in initial_states()]
    env = ChainedResets(CalvinEnv(scene="D", obs_mode="state", task="open_drawer"), chain_length=1, start_states="eval")
    drawn = []
    for seed in (0, None, None, 7):
        obs, info = env.reset(seed=seed)
        state = np.concatenate([obs["robot_obs"], obs["scene_obs"]])
        # One of the 192 official start states (up to the simulator's settling), where the task applies.
        assert min(np.abs(state - start).max() for start in starts) < 1e-2
        assert "open_drawer" in env.unwrapped.applicable_tasks() and info["chain_link"] == 0
        drawn.append(state)
    again = ChainedResets(CalvinEnv(scene="D", obs_mode="state", task="open_drawer"), chain_length=1, start_states="eval")
    assert np.array_equal(np.concatenate([again.reset(seed=0)[0][k] for k in ("robot_obs", "scene_obs")]), drawn[0])
    env.close()
    again.close()
    with pytest.raises(ValueError, match="scene D"):
        ChainedResets(CalvinEnv(scene="A", obs_mode="state"), chain_length=1, start_states="eval")
