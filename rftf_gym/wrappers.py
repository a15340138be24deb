"""Value-model rewards for `RFTF-CALVIN-v0`: a single-env wrapper and its batched vector twin.

RFTF (arXiv 2505.19767, section 3.3) scores every state of an episode with a temporal value model
V(s, l) and turns the values into a dense reward by potential-based shaping (Ng, Harada and
Russell 1999, the paper's reference [29]). The wrappers here run any value model over the env's
observations and write, per step:

- ``value``: the raw (unnormalised) V of the state the step reached;
- ``shaping_reward``: ``gamma * phi(s') - phi(s)`` with ``phi = V``, and ``phi(s') = 0`` when the
  step truly terminated (a success); on truncation ``s'`` keeps its value, since the episode was
  cut, not finished;
- ``dense_reward``: ``sparse_reward + shaping_reward``. With a zero potential at termination the
  dense return of an episode differs from its sparse return only by ``-phi(s_0)``, so the shaping
  does not change which policy is optimal (Ng et al. 1999);
- ``sparse_reward`` and ``success`` are the env's own (`rftf_gym.env.CalvinEnv` writes both; for
  another env the wrapper adds ``sparse_reward`` as the env's reward when the env does not);
- at the last step of an episode (terminated or truncated), ``episode_values``: the raw values
  V(s_0), ..., V(s_T) of every state of the episode, reset state first, final state last.

Per-step values and rewards are unnormalised. RFTF normalises the values within each episode
before shaping (section 3.3): that happens in the learner (``ppo_rftf.py``) at episode end, from
``episode_values``. ``reward_mode`` picks which reward ``step`` returns: ``"dense"`` or the
env's ``"sparse"`` one. Existing info keys are never overwritten: an env that already writes
``value``, ``shaping_reward``, ``dense_reward`` or ``episode_values`` is refused.

A value model is anything with the batched value API: a callable ``value_fn(obs, instructions)``
or an object with ``.predict(obs, instructions)``, where ``obs`` maps observation keys to arrays
stacked on a leading batch axis (no ``instruction`` key) and ``instructions`` holds one sentence
per row, returning B raw values. A string or path is loaded with
``rftf_gym.value_model.load_value_model``.

Example:
    >>> import gymnasium as gym, numpy as np, rftf_gym
    >>> clock = lambda obs, instructions: obs["robot_obs"][:, 2]   # tcp height as a "value"
    >>> env = gym.make("RFTF-CALVIN-v0", obs_mode="state", value_model=clock, reward_mode="dense")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(np.zeros(7))
    >>> reward == info["dense_reward"], sorted(k for k in info if "reward" in k)
    (True, ['dense_reward', 'shaping_reward', 'sparse_reward'])

A value model conditioned on the instruction's start frame (``context == "start"``, see
`rftf_gym.value_model`) gets each episode's reset observation with every observation, under the
``start_robot_obs`` / ``start_scene_obs`` keys: V(s_t | s_0, l). The model says so by a
``context`` attribute (on the object, its bound ``predict``, or the callable).

`ValueRewardVectorWrapper` does the same over a whole `SyncVectorEnv` / `AsyncVectorEnv` with
one batched value call per step in the main process (no model copy per worker), following the
vector env's declared autoreset mode. `ValueReward.compute_reward(batch)` serves the value model
where LeRobot-style reward models are expected.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from rftf_gym.env import CalvinEnv

if TYPE_CHECKING:  # torch is imported only where a tensor is made, to keep env workers light
    import torch

REWARD_MODES = ("dense", "sparse")
# Keys the wrappers write; an env that already writes one of them is refused.
WRITTEN_KEYS = ("value", "shaping_reward", "dense_reward", "episode_values")
INSTRUCTION_KEY = "instruction"
START_PREFIX = "start_"
"""Prefix of the start-frame keys a ``context="start"`` value model reads (`rftf_gym.value_model`)."""
CONTEXT_KEYS = ("robot_obs", "scene_obs")
"""The observation keys whose start frame such a model reads (state variant)."""
RECENT_PREFIX = "recent_"
"""Prefix of the keys of the frame k steps back that a ``recent`` context value model reads."""
CONTEXTS = ("none", "start", "recent", "start+recent")
"""What a value model may be conditioned on besides the current frame and the instruction: nothing,
the instruction's start frame, the frame k steps back, or both. The wrappers here supply the
start frame; a model of a recent frame is scored offline (`rftf_gym.value_diagnostics`)."""
WRAPPER_CONTEXTS = ("none", "start")
"""The contexts the reward wrappers supply."""


def value_context(value_fn: Any) -> str:
    """The `CONTEXTS` entry of the value function (or of the object of a bound ``predict``):
    ``"none"`` when it declares no ``context``."""
    for obj in (value_fn, getattr(value_fn, "__self__", None)):
        context = getattr(obj, "context", None)
        if context is not None:
            if context not in CONTEXTS:
                raise ValueError(f"value model context must be one of {CONTEXTS}, got {context!r}")
            return str(context)
    return "none"


def _wrapper_context(value_fn: Any) -> str:
    """`value_context`, refusing the contexts the reward wrappers do not supply."""
    context = value_context(value_fn)
    if context not in WRAPPER_CONTEXTS:
        raise ValueError(
            f"the reward wrappers supply a value model's start frame only (contexts {WRAPPER_CONTEXTS}); this model's "
            f"context is {context!r}, which also reads the frame k steps back: score it offline with rftf_gym.value_diagnostics"
        )
    return context


def _start_of(obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The start-frame entries of a (single or batched) observation."""
    return {START_PREFIX + k: np.array(obs[k], copy=True) for k in CONTEXT_KEYS if k in obs}

ValueFn = Callable[[Mapping[str, np.ndarray], Sequence[str]], np.ndarray]


def as_value_fn(value_model: Any) -> ValueFn:
    """Turn a value model into a batched value function ``(obs, instructions) -> (B,) values``.

    Args:
        value_model: an object with ``.predict(obs, instructions)`` (e.g. ``ValueModel``), a
            callable with that signature, or a checkpoint directory (str or path).

    Returns:
        The batched value function.

    Raises:
        TypeError: ``value_model`` is none of the above.
    """
    if isinstance(value_model, (str, os.PathLike)):
        from rftf_gym.value_model import load_value_model  # the model is optional for the env

        value_model = load_value_model(value_model)
    predict = getattr(value_model, "predict", None)
    if callable(predict):
        return predict
    if callable(value_model):
        return value_model
    raise TypeError(
        "value_model must be a callable value_fn(obs, instructions) -> (B,) values, an object with "
        f".predict of that signature, or a checkpoint directory; got {type(value_model).__name__}"
    )


def compute_values(value_fn: ValueFn, obs: Mapping[str, Any], instructions: Sequence[str]) -> np.ndarray:
    """Call a value function on a batch and check what it returns.

    Args:
        value_fn: the batched value function.
        obs: observation arrays stacked on a leading batch axis (an ``instruction`` key is dropped).
        instructions: one sentence per row.

    Returns:
        float64 array of shape (B,).

    Raises:
        ValueError: the value function returned the wrong shape or a non-finite value.
    """
    batch = {k: v for k, v in obs.items() if k != INSTRUCTION_KEY}
    instructions = [str(s) for s in instructions]
    raw = value_fn(batch, instructions)
    if hasattr(raw, "detach"):  # a torch tensor
        raw = raw.detach().cpu().numpy()
    values = np.asarray(raw, dtype=np.float64)
    if values.shape != (len(instructions),):
        raise ValueError(
            f"the value model must return one value per row, shape ({len(instructions)},); got shape {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"the value model returned non-finite values: {values}")
    return values


def _check_args(reward_mode: str, gamma: float, value_model: Any) -> None:
    if reward_mode not in REWARD_MODES:
        raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1] (the shaping discount), got {gamma}")
    if value_model is None:
        raise ValueError("the value reward wrapper needs a value model (value_model=None given)")


def _refuse_written_keys(info: Mapping[str, Any], where: str) -> None:
    taken = [key for key in WRITTEN_KEYS if key in info]
    if taken:
        raise ValueError(
            f"the env's {where} info already has {taken}; the value reward wrapper never overwrites "
            "info keys (is the env wrapped twice?)"
        )


def _observation_space_check(space: gym.Space) -> None:
    if not isinstance(space, gym.spaces.Dict) or INSTRUCTION_KEY not in space.spaces:
        raise ValueError(
            f"the value reward wrapper needs a Dict observation with an {INSTRUCTION_KEY!r} key "
            f"(the value model reads the instruction); got {space}"
        )


class ValueRewardWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Adds value-model rewards to a single env (see the module docstring for the info keys).

    Example:
        >>> import numpy as np
        >>> from rftf_gym.env import CalvinEnv
        >>> env = ValueRewardWrapper(CalvinEnv(obs_mode="state"), lambda o, l: o["robot_obs"][:, 0])
        >>> _, info = env.reset(seed=0)
        >>> "value" in info
        True
    """

    def __init__(self, env: gym.Env, value_model: Any, reward_mode: str = "dense", gamma: float = 0.99) -> None:
        """Wrap ``env``.

        Args:
            env: a Gymnasium env with a Dict observation holding ``instruction``.
            value_model: the value model (see `as_value_fn`).
            reward_mode: ``"dense"`` (return ``dense_reward``) or ``"sparse"`` (the env's reward;
                values and dense rewards are still written to info).
            gamma: the shaping discount of ``gamma * V(s') - V(s)`` (paper Eq. 2).

        Raises:
            ValueError: a bad ``reward_mode`` or ``gamma``, no value model, or an observation
                without an instruction.
        """
        _check_args(reward_mode, gamma, value_model)
        _observation_space_check(env.observation_space)
        gym.utils.RecordConstructorArgs.__init__(self, reward_mode=reward_mode, gamma=gamma)
        gym.Wrapper.__init__(self, env)
        self.value_fn = as_value_fn(value_model)
        self.context = _wrapper_context(self.value_fn)
        self.reward_mode = reward_mode
        self.gamma = float(gamma)
        self._prev_value: float | None = None
        self._episode_values: list[float] = []
        self._start: dict[str, np.ndarray] = {}  # the episode's reset observation (context "start")

    def _value(self, obs: Mapping[str, Any]) -> float:
        batch = {k: np.asarray(v)[None] for k, v in obs.items() if k != INSTRUCTION_KEY}
        if self.context == "start":
            batch.update({k: v[None] for k, v in self._start.items()})
        return float(compute_values(self.value_fn, batch, [obs[INSTRUCTION_KEY]])[0])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        _refuse_written_keys(info, "reset")
        self._start = _start_of(obs)
        value = self._value(obs)
        self._prev_value = value
        self._episode_values = [value]
        return obs, {**info, "value": value}

    def step(self, action: Any):
        if self._prev_value is None:
            raise RuntimeError("call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        _refuse_written_keys(info, "step")
        info = dict(info)
        value = self._value(obs)
        sparse = float(info.setdefault("sparse_reward", float(reward)))
        # Ng et al. (1999): an absorbing (terminated) state has zero potential; a truncated one
        # keeps its value because the episode was cut, not finished.
        potential = 0.0 if terminated else value
        shaping = self.gamma * potential - self._prev_value
        info.update(value=value, shaping_reward=shaping, dense_reward=sparse + shaping)
        self._episode_values.append(value)
        self._prev_value = value
        if terminated or truncated:
            info["episode_values"] = np.asarray(self._episode_values, dtype=np.float64)
            self._prev_value = None
        returned = info["dense_reward"] if self.reward_mode == "dense" else reward
        return obs, returned, terminated, truncated, info


class ValueRewardVectorWrapper(VectorWrapper):
    """Value-model rewards over a vector env, with one batched value call per step.

    The value model lives in the main process; the sub-environments (in a `SyncVectorEnv` or in
    the worker processes of an `AsyncVectorEnv`) stay plain envs. Each ``step`` makes exactly one
    value call covering every sub-environment. The wrapper follows the vector env's declared
    ``autoreset_mode`` so that no reward is shaped across an episode boundary:

    - ``NEXT_STEP``: the step after an episode ends resets that sub-env; its row gets the reset
      state's ``value``, reward 0 and no ``shaping_reward`` / ``dense_reward`` (mask False);
    - ``SAME_STEP``: the last transition is scored from ``info["final_obs"]`` and the returned
      observation (the new episode's reset state) becomes the next potential, both in the same
      batched call;
    - ``DISABLED``: the caller resets with ``reset(options={"reset_mask": ...})``, which values the
      reset rows.

    Info arrays follow Gymnasium's vector convention: ``info[key]`` of length ``num_envs`` plus a
    boolean mask ``info["_" + key]``. ``episode_values`` is an object array holding, for each
    sub-env whose episode ended this step, the float64 array of its raw values.
    """

    def __init__(self, env: VectorEnv, value_model: Any, reward_mode: str = "dense", gamma: float = 0.99) -> None:
        """Wrap a vector env of plain `RFTF-CALVIN-v0` (or compatible) envs.

        Args:
            env: the vector env; its sub-envs must not carry a value wrapper of their own.
            value_model: the value model (see `as_value_fn`), called in this process.
            reward_mode: ``"dense"`` or ``"sparse"`` (which reward ``step`` returns).
            gamma: the shaping discount (paper Eq. 2).

        Raises:
            ValueError: bad arguments, an observation without an instruction, or an unknown
                autoreset mode.
        """
        _check_args(reward_mode, gamma, value_model)
        _observation_space_check(env.single_observation_space)
        if getattr(env.unwrapped, "shared_memory", False):
            # gymnasium's AsyncVectorEnv reads a Text observation out of shared memory once, at
            # construction, and never again: every instruction would read as the padding text.
            raise ValueError(
                "AsyncVectorEnv(shared_memory=True) never refreshes the Text 'instruction' "
                "observation, which the value model reads; build it with shared_memory=False"
            )
        super().__init__(env)
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        self.autoreset_mode = AutoresetMode(mode)
        self.value_fn = as_value_fn(value_model)
        self.context = _wrapper_context(self.value_fn)
        self.reward_mode = reward_mode
        self.gamma = float(gamma)
        n = self.num_envs
        self._start: dict[str, np.ndarray] = {}  # per row, its episode's reset observation (context "start")
        self._prev_values = np.zeros(n, dtype=np.float64)
        self._episode_values: list[list[float]] = [[] for _ in range(n)]
        self._started = np.zeros(n, dtype=bool)  # the row has a current episode with a value
        self._autoreset = np.zeros(n, dtype=bool)  # NEXT_STEP: the row resets on the next step

    def _set_starts(self, obs: Mapping[str, Any], rows: np.ndarray) -> None:
        """Rows ``rows`` of ``obs`` are reset observations: the starts of their new episodes."""
        if self.context != "start" or len(rows) == 0:
            return
        for key, value in _start_of(obs).items():
            if key not in self._start:
                self._start[key] = np.zeros_like(value)
            self._start[key][rows] = value[rows]

    def _values(
        self,
        obs: Mapping[str, Any],
        rows: np.ndarray,
        extra: list[Mapping[str, Any]] | None = None,
        extra_starts: Mapping[str, np.ndarray] | None = None,
    ):
        """Values of ``obs`` at ``rows`` and of the ``extra`` single observations, in one call.

        A start-context model gets each row's episode start (`_set_starts` first for rows that
        just reset) and, for ``extra``, ``extra_starts`` (the starts of the episodes they end).
        """
        batch = {k: np.asarray(v)[rows] for k, v in obs.items() if k != INSTRUCTION_KEY}
        if self.context == "start":
            batch.update({k: v[rows] for k, v in self._start.items()})
        instructions = [obs[INSTRUCTION_KEY][i] for i in rows]
        if extra:
            extra_batch = {k: np.stack([np.asarray(e[k]) for e in extra]) for k in batch if not k.startswith(START_PREFIX)}
            if self.context == "start":
                extra_batch.update(extra_starts or {})
            batch = {k: np.concatenate([v, extra_batch[k]]) for k, v in batch.items()}
            instructions += [e[INSTRUCTION_KEY] for e in extra]
        values = compute_values(self.value_fn, batch, instructions)
        return values[: len(rows)], values[len(rows):]

    def _start_episodes(self, rows: np.ndarray, values: np.ndarray) -> None:
        for i, value in zip(rows, values):
            self._prev_values[i] = value
            self._episode_values[i] = [float(value)]
        self._started[rows] = True
        self._autoreset[rows] = False

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        # SyncVectorEnv pops reset_mask out of the options it gets: read it first, pass a copy.
        mask = None if options is None else options.get("reset_mask")
        obs, info = self.env.reset(seed=seed, options=None if options is None else dict(options))
        _refuse_written_keys(info, "reset")
        rows = np.arange(self.num_envs) if mask is None else np.flatnonzero(np.asarray(mask, dtype=bool))
        self._set_starts(obs, rows)
        values, _ = self._values(obs, rows)
        self._start_episodes(rows, values)
        info = dict(info)
        info["value"] = np.zeros(self.num_envs, dtype=np.float64)
        info["value"][rows] = values
        info["_value"] = np.zeros(self.num_envs, dtype=bool)
        info["_value"][rows] = True
        return obs, info

    def step(self, actions: Any):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        _refuse_written_keys(info, "step")
        info = dict(info)
        n = self.num_envs
        reward = np.asarray(reward, dtype=np.float64)
        terminated, truncated = np.asarray(terminated, dtype=bool), np.asarray(truncated, dtype=bool)
        done = terminated | truncated
        reset_rows = self._autoreset.copy() if self.autoreset_mode == AutoresetMode.NEXT_STEP else np.zeros(n, bool)
        stepped = ~reset_rows
        if np.any(stepped & ~self._started):
            raise RuntimeError("call reset() before step() (or reset the rows with reset_mask)")

        # One batched value call: every returned observation, plus the final observations of
        # the rows that finished under SAME_STEP (their returned observation is already a reset).
        same_step_done = np.flatnonzero(done) if self.autoreset_mode == AutoresetMode.SAME_STEP else np.array([], int)
        finals = [info["final_obs"][i] for i in same_step_done]
        # A final observation belongs to the episode that ended (its start as stored); a reset
        # observation starts a new episode, whose start it is.
        final_starts = {k: v[same_step_done] for k, v in self._start.items()}
        self._set_starts(obs, same_step_done if self.autoreset_mode == AutoresetMode.SAME_STEP else np.flatnonzero(reset_rows))
        obs_values, final_values = self._values(obs, np.arange(n), finals, final_starts)
        next_values = obs_values.copy()
        next_values[same_step_done] = final_values

        sparse = reward
        potential = np.where(terminated, 0.0, next_values)  # zero potential only on termination
        shaping = np.where(stepped, self.gamma * potential - self._prev_values, 0.0)
        dense = np.where(stepped, sparse + shaping, 0.0)

        info["value"], info["_value"] = next_values, np.ones(n, dtype=bool)
        info["shaping_reward"], info["_shaping_reward"] = shaping, stepped.copy()
        info["dense_reward"], info["_dense_reward"] = dense, stepped.copy()
        if "sparse_reward" not in info:
            info["sparse_reward"], info["_sparse_reward"] = np.where(stepped, sparse, 0.0), stepped.copy()

        ended = np.flatnonzero(stepped & done)
        if len(ended):
            episode_values = np.full(n, None, dtype=object)
            for i in ended:
                self._episode_values[i].append(float(next_values[i]))
                episode_values[i] = np.asarray(self._episode_values[i], dtype=np.float64)
            info["episode_values"] = episode_values
            info["_episode_values"] = np.zeros(n, dtype=bool)
            info["_episode_values"][ended] = True
        for i in np.flatnonzero(stepped & ~done):
            self._episode_values[i].append(float(next_values[i]))
        self._prev_values = np.where(stepped, next_values, self._prev_values)

        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._start_episodes(np.flatnonzero(reset_rows), obs_values[reset_rows])
            self._autoreset = stepped & done
        elif self.autoreset_mode == AutoresetMode.SAME_STEP:
            self._start_episodes(same_step_done, obs_values[same_step_done])
        else:  # DISABLED: the caller resets finished rows through reset(options={"reset_mask": ...})
            self._started[ended] = False

        returned = dense if self.reward_mode == "dense" else reward
        return obs, returned, terminated, truncated, info


# LeRobot's dataset feature names -> this env's observation keys.
LEROBOT_KEYS = {
    "observation.images.rgb_static": "rgb_static",
    "observation.images.rgb_gripper": "rgb_gripper",
    "observation.state": "robot_obs",
    "observation.environment_state": "scene_obs",
}


def _image_to_uint8_hwc(image: np.ndarray) -> np.ndarray:
    """LeRobot images are float CHW in [0, 1]; the env's are uint8 HWC. Accept either."""
    if image.dtype == np.uint8:
        return image
    if image.ndim == 4 and image.shape[1] == 3 and image.shape[-1] != 3:
        image = image.transpose(0, 2, 3, 1)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


class ValueReward:
    """A value model as a reward model with LeRobot's call shape: ``compute_reward(batch) -> (B,)``.

    The reward of a state is its raw value, a progress estimate (as LeRobot's progress reward
    models return). ``batch`` uses LeRobot feature names (``observation.images.rgb_static`` /
    ``observation.images.rgb_gripper`` as float CHW in [0, 1] or uint8 HWC,
    ``observation.state`` = robot_obs, ``observation.environment_state`` = scene_obs, ``task`` = one
    instruction per row) or this env's own keys (``rgb_static``, ``robot_obs``, ...,
    ``instruction``). A start-frame model (context ``"start"``) also reads ``start_robot_obs`` /
    ``start_scene_obs`` (the episode's first frame, one per row).

    Example:
        >>> import torch
        >>> reward = ValueReward(lambda obs, instr: obs["robot_obs"][:, 2])
        >>> reward.compute_reward({"observation.state": torch.ones(2, 15), "task": ["a", "b"]}).shape
        torch.Size([2])
    """

    def __init__(self, value_model: Any) -> None:
        """Args:
            value_model: the value model (see `as_value_fn`).
        """
        self.value_fn = as_value_fn(value_model)

    def predict(self, obs: Mapping[str, np.ndarray], instructions: Sequence[str]) -> np.ndarray:
        """Raw values, shape (B,) float32 (the batched value API)."""
        return compute_values(self.value_fn, obs, instructions).astype(np.float32)

    def compute_reward(self, batch: Mapping[str, Any]) -> "torch.Tensor":
        """Values of a batch of observations as a float32 tensor of shape (B,).

        Raises:
            ValueError: no instructions (``task`` or ``instruction``) or no observation keys.
        """
        instructions = batch.get("task", batch.get(INSTRUCTION_KEY))
        if instructions is None:
            raise ValueError("compute_reward needs one instruction per row under 'task' (or 'instruction')")
        import torch

        if isinstance(instructions, str):
            instructions = [instructions]
        device = None
        obs: dict[str, np.ndarray] = {}
        vector_keys = ("robot_obs", "scene_obs", *(START_PREFIX + k for k in CONTEXT_KEYS))  # + a start model's
        for key, value in batch.items():
            name = LEROBOT_KEYS.get(key, key)
            if name not in ("rgb_static", "rgb_gripper", *vector_keys):
                continue
            if isinstance(value, torch.Tensor):
                device = value.device
                value = value.detach().cpu().numpy()
            value = np.asarray(value)
            obs[name] = _image_to_uint8_hwc(value) if name.startswith("rgb") else value.astype(np.float64)
        if not obs:
            raise ValueError(
                f"compute_reward found no observation in the batch keys {sorted(batch)}; expected some of "
                f"{sorted(LEROBOT_KEYS)} or {sorted(LEROBOT_KEYS.values())}"
            )
        values = torch.as_tensor(self.predict(obs, list(instructions)))
        return values if device is None else values.to(device)


def make_calvin_env(
    value_model: Any = None, reward_mode: str = "sparse", gamma: float = 0.99, **kwargs: Any
) -> gym.Env:
    """The entry point of ``RFTF-CALVIN-v0``: a `CalvinEnv`, wrapped in `ValueRewardWrapper` when a
    value model is given.

    Args:
        value_model: None, or the value model (see `as_value_fn`).
        reward_mode: ``"sparse"`` or ``"dense"`` (needs a value model).
        gamma: the shaping discount (paper Eq. 2).
        **kwargs: `CalvinEnv`'s other arguments.

    Raises:
        ValueError: ``reward_mode="dense"`` without a value model, or a bad argument.
    """
    if reward_mode not in REWARD_MODES:
        raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
    if reward_mode == "dense" and value_model is None:
        raise ValueError("reward_mode='dense' needs a value_model (a value callable or checkpoint directory)")
    env = CalvinEnv(**kwargs)
    if value_model is None:
        return env
    return ValueRewardWrapper(env, value_model, reward_mode=reward_mode, gamma=gamma)


class ChainedResets(gym.Wrapper):
    """Training episodes chained as CALVIN's evaluation chains them: after a success the next
    episode starts where this one ended, with a new instruction that applies there, for up to
    ``chain_length`` instructions in a row; a failure, a full chain or a state where no task
    applies starts afresh.

    The official evaluation (calvin_models/calvin_agent/evaluation/evaluate_policy.py) resets the
    scene once per chain of 5 and runs each next subtask from the state the previous one left, arm
    included. Training episodes that all start from a reset never show the policy those states.
    A fresh start is a random layout (``start_states="random"``) or one of the evaluation's 192
    initial states (``"eval"``, scene D only: multistep_sequences.py and
    utils.get_env_state_for_initial_condition, via `rftf_gym.sequences`), drawn uniformly; only
    the start states, not the evaluation's chains or sentences. The wrapped env must support
    ``reset(options={"continue": True})``, explicit reset states and ``applicable_tasks()``
    (`rftf_gym.env.CalvinEnv`); with a fixed task, a chain goes on only while that task applies.

    Example:
        >>> from rftf_gym.env import CalvinEnv
        >>> env = ChainedResets(CalvinEnv(obs_mode="state"), chain_length=5)
        >>> _, info = env.reset(seed=0)
        >>> info["chain_link"]
        0
    """

    def __init__(self, env: gym.Env, chain_length: int, start_states: str = "random") -> None:
        if int(chain_length) != chain_length or chain_length < 1:
            raise ValueError(f"chain_length must be an integer >= 1, got {chain_length!r}")
        if start_states not in ("random", "eval"):
            raise ValueError(f"start_states must be 'random' or 'eval', got {start_states!r}")
        if start_states == "eval" and env.unwrapped.scene != "D":
            raise ValueError(f"the evaluation's initial states are scene D's, not scene {env.unwrapped.scene!r}")
        super().__init__(env)
        self.chain_length = int(chain_length)
        self.start_states = start_states
        self._link = 0
        self._succeeded = False
        self._rng = np.random.default_rng()
        self._starts: list[tuple[np.ndarray, np.ndarray]] = []
        if start_states == "eval":  # (robot_obs, scene_obs) of each official initial state, built once
            from rftf_gym.sequences import get_env_state_for_initial_condition, initial_states

            self._starts = [get_env_state_for_initial_condition(state) for state in initial_states()]

    def _can_continue(self) -> bool:
        if not self._succeeded or self._link + 1 >= self.chain_length:
            return False
        applicable = self.env.unwrapped.applicable_tasks()
        fixed = self.env.unwrapped.task
        return fixed in applicable if fixed is not None else bool(applicable)

    def _fresh(self, seed: int | None, options: dict[str, Any] | None):
        if self.start_states == "random" or options:
            return self.env.reset(seed=seed, options=options)
        if seed is not None:  # a stream of its own, apart from the env's np_random(seed)
            self._rng = np.random.default_rng([seed, 0xC4A1])
        fixed = self.env.unwrapped.task
        for _ in range(len(self._starts)):
            robot_obs, scene_obs = self._starts[int(self._rng.integers(len(self._starts)))]
            # A fixed task takes the explicit state only if it applies there (else the draw repeats).
            obs, info = self.env.reset(seed=seed, options={"robot_obs": robot_obs.copy(), "scene_obs": scene_obs.copy()})
            seed = None
            if fixed is None or fixed in self.env.unwrapped.applicable_tasks():
                return obs, info
        raise RuntimeError(f"no initial state of the evaluation makes task {fixed!r} applicable")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None and not options and self._can_continue():
            self._link += 1
            obs, info = self.env.reset(options={"continue": True})
        else:
            self._link = 0
            obs, info = self._fresh(seed, options)
        self._succeeded = False
        return obs, {**info, "chain_link": self._link}

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._succeeded = bool(terminated)  # CalvinEnv terminates exactly on success
        return obs, reward, terminated, truncated, info
