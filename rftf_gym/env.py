"""`RFTF-CALVIN-v0`: one CALVIN instruction as a Gymnasium episode, on either backend.

An episode is one language instruction: it starts from a reset (random layout, an explicit
``robot_obs``/``scene_obs``, or the current state when a chain goes on), succeeds as soon as the
task oracle sees the instruction's task since the episode's start, and is truncated after 360
control steps (CALVIN's per-instruction budget, ``EP_LEN`` of the official evaluate_policy.py).
`CalvinEnv`'s docstring describes the spaces, the ``robot_obs``/``scene_obs`` layouts, rewards,
info keys, starting states and arguments.

Example:
    >>> import gymnasium as gym, rftf_gym
    >>> env = gym.make("RFTF-CALVIN-v0", scene="D", obs_mode="state")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> sorted(info)[:3]
    ['elapsed_steps', 'instruction', 'sparse_reward']
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from rftf_gym import language, state_check, symbolic, tasks
from rftf_gym.backends import make_backend
from rftf_gym.conventions import (
    ACTION_DIM,
    ACTION_MODES,
    BLOCK_OFFSETS,
    CONTROL_HZ,
    DRAWER_RANGE,
    EP_LEN,
    ROBOT_OBS_DIM,
    SCENE_OBS_DIM,
    SLIDER_RANGE,
    TABLE_TOP_HALF_X,
)

# What the policy sees: the cameras, the state vectors, or both (plus the instruction always).
ObsMode = Literal["rgb", "state", "rgb+state"]
OBS_MODES: tuple[str, ...] = get_args(ObsMode)
REWARD_MODES = ("sparse", "dense")
INSTRUCTION_SPLITS = ("train", "eval")
# Room a door or drawer needs beyond the oracle's threshold for its move to count as applicable.
_JOINT_SLACK = 0.01
# How close to the table top's end a pushed block's centre may come (half the smallest block).
_PUSH_EDGE_MARGIN = 0.02
# Furthest +x a block's centre gets at table height, pushed by the closed fingers or carried just
# above the table (measured on both backends with CALVIN's longer fingers and IK: the TCP reaches
# x ~0.29 pushing and ~0.35 carrying over the table top; the open gripper's fingers fold under a
# block, calvin_env opening them with 1/100 of the closing force).
_ARM_PUSH_REACH_X = 0.34
# The dimensions of an absolute action: tcp position, tcp euler xyz, gripper.
_ABSOLUTE_ACTION_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
# Tries at drawing a random layout in which a fixed task is applicable before giving up.
_LAYOUT_TRIES = 200


def _image_size(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """Normalise an image size argument to (width, height)."""
    size = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and 8 <= s <= 1024 for s in size):
        raise ValueError(f"{name} must be an int or (width, height) of ints in [8, 1024], got {value!r}")
    return int(size[0]), int(size[1])


def _state_vector(value: Any, name: str, length: int) -> np.ndarray:
    """Check a reset state vector: the right length and finite."""
    vec = np.asarray(value, dtype=np.float64).reshape(-1)
    if vec.shape != (length,):
        raise ValueError(f"options[{name!r}] must have {length} values, got shape {np.shape(value)}")
    if not np.all(np.isfinite(vec)):
        raise ValueError(f"options[{name!r}] must be finite, got {vec}")
    return vec


def _some_block_on_table_top_alone(info: dict[str, Any]) -> bool:
    """Whether some block's only contact is the table top (what push_into_drawer starts from)."""
    table = info["scene_info"]["fixed_objects"]["table"]
    alone = {(int(table["uid"]), int(table["links"]["base_link"]))}
    return any({(int(c[2]), int(c[4])) for c in block["contacts"]} == alone
               for block in info["scene_info"]["movable_objects"].values())


class CalvinEnv(gym.Env):
    """The CALVIN play table as a language-conditioned Gymnasium env: one instruction per episode.

    ## Description

    A Franka Panda at CALVIN's play table (scene A, B, C or D: a table top, a sliding door over a
    shelf, a drawer, a button that toggles a green LED, a switch that turns on a lightbulb, and
    a red, a blue and a pink block) is asked in English to do one of the 34 CALVIN tasks ("open
    the drawer", "lift the red block from the sliding cabinet", ...). The oracle of
    `rftf_gym.tasks` (the official ``calvin_env/envs/tasks.py`` rules) decides success. Chained
    evaluation (``evaluate.py``) runs five instructions in a row through ``options["continue"]``.

    ## Action Space

    ``action_mode="relative"`` (default, what CALVIN policies output): ``Box(-1, 1, (7,), float64)``

    | index | action | unit per 1.0 |
    |-------|--------|--------------|
    | 0-2 | tcp target x, y, z delta | 0.02 m (`rftf_gym.conventions.MAX_REL_POS`) |
    | 3-5 | tcp target roll, pitch, yaw delta | 0.05 rad (`MAX_REL_ORN`) |
    | 6 | gripper: < 0 close, >= 0 open | binarised to -1 / +1, as calvin_env asserts |

    ``action_mode="absolute"``: ``Box((-1, -1, 0, -pi, -pi, -pi, -1), (1, 1, 1.5, pi, pi, pi, 1))``,
    the tcp position (m), tcp euler xyz (rad) and gripper. One step is 8 physics substeps at
    240 Hz (30 Hz control).

    ## Observation Space

    A ``Dict``; which keys are present depends on ``obs_mode``:

    | key | space | modes |
    |-----|-------|-------|
    | ``rgb_static`` | ``Box(0, 255, (H, W, 3), uint8)``, fixed camera, official 200 x 200 | rgb, rgb+state |
    | ``rgb_gripper`` | ``Box(0, 255, (H, W, 3), uint8)``, wrist camera, official 84 x 84 | rgb, rgb+state |
    | ``depth_static``, ``depth_gripper`` | ``Box(0, inf, (H, W), float32)``, metres along the view axis (``depth=True`` only) | rgb, rgb+state |
    | ``robot_obs`` | ``Box(-inf, inf, (15,), float64)`` | state, rgb+state |
    | ``scene_obs`` | ``Box(-inf, inf, (24,), float64)`` | state, rgb+state |
    | ``instruction`` | ``Text`` (lower case, at most 96 characters) | all |

    ``robot_obs``:

    | index | meaning | unit |
    |-------|---------|------|
    | 0-2 | tcp position x, y, z | m (world) |
    | 3-5 | tcp orientation, euler x, y, z | rad |
    | 6 | gripper opening width | m, 0 .. 0.08 |
    | 7-13 | the 7 arm joint positions | rad |
    | 14 | last gripper action | -1 closed, +1 open |

    ``scene_obs``:

    | index | meaning | unit |
    |-------|---------|------|
    | 0 | sliding door joint (0 = right end; grows to the left) | m, 0 .. 0.24-0.304 by scene |
    | 1 | drawer joint (0 closed) | m, 0 .. 0.22 |
    | 2 | button joint | m, 0 .. 0.02 |
    | 3 | switch joint (lightbulb on above half) | m, 0 .. 0.088 |
    | 4 | lightbulb on | 0 / 1 |
    | 5 | LED on | 0 / 1 |
    | 6-11 | red block position x, y, z and euler x, y, z | m, rad |
    | 12-17 | blue block pose, as above | m, rad |
    | 18-23 | pink block pose, as above | m, rad |

    The blocks are always red, blue, pink (the official env orders them by each scene's YAML).

    ## Rewards

    Sparse: 1.0 on the step the instruction's task succeeds, else 0.0 (also in
    ``info["sparse_reward"]``). Dense RFTF rewards from a value model (paper Eq. 2) come from
    `rftf_gym.wrappers.ValueRewardWrapper`, which ``gym.make`` applies when ``value_model`` is
    given; this class only serves ``reward_mode="sparse"``.

    ## Success and info

    ``reset`` returns ``task``, ``instruction`` and ``elapsed_steps`` (0). ``step`` returns:

    - ``task``: the episode's task name; ``instruction``: the sentence shown;
    - ``success``: the oracle saw the task between the episode's start and now (only the
      episode's task is checked, as the official evaluation's ``get_task_info_for_set``);
    - ``completed_tasks`` (with ``info_completed_tasks=True`` only): sorted tuple of every task
      the oracle saw since the episode's start, all 34 checked on every step; `completed_tasks`
      gives the same on demand;
    - ``sparse_reward``: as the reward; ``elapsed_steps``: steps since the reset;
    - ``physics_error`` (True) and ``physics_error_detail`` (what went wrong): present only when
      the simulator produced a non-finite state or a block left the play table's workspace.

    ## Starting State

    - no options: the robot at CALVIN's neutral pose with the gripper open; the door and drawer
      anywhere in their travel, the switch at either end (lightbulb following it), the LED on or
      off, the blocks on random free spots of the table top and the shelf; redrawn (up to 200
      times) until the task is applicable. The task is ``task``, or drawn among those whose
      official condition holds in this state (`applicable_tasks`).
    - ``options={"robot_obs": ..., "scene_obs": ...}``: exactly that state (both or neither),
      e.g. an official evaluation reset from `rftf_gym.sequences.get_env_state_for_initial_condition`.
    - ``options={"continue": True}``: the current simulator state untouched, for the next
      instruction of a chain. ``options={"task": name}`` fixes this episode's task.

    ## Episode End

    ### Termination
    The episode terminates on the step the instruction's task succeeds.

    ### Truncation
    After 360 steps (CALVIN's ``EP_LEN``; ``env.spec.max_episode_steps``), or at once when the
    simulator produced a non-finite state or a block left the workspace (``info["physics_error"]``).

    ## Arguments

    ``gym.make("RFTF-CALVIN-v0", **kwargs)`` takes the arguments of ``__init__`` below, plus
    ``value_model``, ``reward_mode`` and ``gamma`` for the reward wrapper::

        env = gym.make("RFTF-CALVIN-v0", backend="embedded", scene="D", obs_mode="rgb+state",
                       instruction_split="eval")

    ## Version History

    - v0: initial release (embedded and official backends, 34 tasks, official evaluation resets).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        backend: str = "embedded",
        scene: str = "D",
        task: str | None = None,
        obs_mode: str = "rgb+state",
        static_size: int | tuple[int, int] = 200,
        gripper_size: int | tuple[int, int] = 84,
        value_model: Any = None,
        reward_mode: str = "sparse",
        gamma: float = 0.99,
        instruction_split: str = "train",
        action_mode: str = "relative",
        render_mode: str | None = None,
        backend_kwargs: dict[str, Any] | None = None,
        depth: bool = False,
        info_completed_tasks: bool = False,
    ) -> None:
        """Create the env.

        Args:
            backend: ``"embedded"`` (the project's pybullet play table) or ``"calvin"``
                (the official calvin_env, when installed).
            scene: CALVIN scene ``"A"``, ``"B"``, ``"C"`` or ``"D"``.
            task: one of the 34 task names, or None to draw one per episode among those
                applicable in the reset state.
            obs_mode: ``"rgb"``, ``"state"`` or ``"rgb+state"``.
            static_size: static camera image size, int or (width, height); official 200.
            gripper_size: gripper camera image size; official 84.
            value_model: must be None here: value rewards come from `rftf_gym.wrappers`
                (``gym.make`` applies the wrapper when a value model is given).
            reward_mode: ``"sparse"`` (1 on success); ``"dense"`` is the wrapper's.
            gamma: unused here; the wrapper's shaping discount is its own argument.
            instruction_split: ``"train"`` (random paraphrase) or ``"eval"`` (the fixed sentence).
            action_mode: ``"relative"`` (CALVIN's scaled deltas in [-1, 1]) or ``"absolute"``
                (tcp position, euler xyz, gripper).
            render_mode: None or ``"rgb_array"`` (the static camera).
            backend_kwargs: extra keyword arguments for the backend's constructor.
            depth: also observe ``depth_static`` / ``depth_gripper`` (float32 H x W, metres, as
                CALVIN's dataset stores them); needs an ``rgb`` obs_mode. Off by default: the
                observation space and the renders are then unchanged.
            info_completed_tasks: every step's info also carries ``completed_tasks``, all 34
                tasks checked by the oracle (about 0.1 ms per step on one core; reward and
                termination need only the episode's task, which is always checked).

        Raises:
            ValueError: any argument outside its allowed values, named in the message.
        """
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        if reward_mode == "dense" or value_model is not None:
            raise ValueError(
                "reward_mode='dense' and value_model are served by the value-model reward wrapper: "
                "gym.make('RFTF-CALVIN-v0', value_model=..., reward_mode='dense') or "
                "rftf_gym.wrappers.ValueRewardWrapper(CalvinEnv(...), value_model)"
            )
        if instruction_split not in INSTRUCTION_SPLITS:
            raise ValueError(f"instruction_split must be one of {INSTRUCTION_SPLITS}, got {instruction_split!r}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        if task is not None:
            tasks.validate_task(task)
        if depth and "rgb" not in obs_mode:
            raise ValueError(f"depth=True needs the cameras of an 'rgb' obs_mode, got obs_mode={obs_mode!r}")

        self.task = task
        self.obs_mode = obs_mode
        self.reward_mode = reward_mode
        self.gamma = float(gamma)
        self.instruction_split = instruction_split
        self.action_mode = action_mode
        self.render_mode = render_mode
        self.info_completed_tasks = bool(info_completed_tasks)

        cameras: dict[str, tuple[int, int]] = {}
        if "rgb" in obs_mode:
            cameras["static"] = _image_size(static_size, "static_size")
            cameras["gripper"] = _image_size(gripper_size, "gripper_size")
        elif render_mode == "rgb_array":
            cameras["static"] = _image_size(static_size, "static_size")
        self.backend_name = backend
        self.depth = bool(depth)
        sim_kwargs = {**(backend_kwargs or {}), **({"depth": True} if depth else {})}
        self.sim = make_backend(backend, scene, cameras, **sim_kwargs)
        self.scene = scene

        obs_spaces: dict[str, spaces.Space] = {}
        if "rgb" in obs_mode:
            for name in ("static", "gripper"):
                width, height = cameras[name]
                obs_spaces[f"rgb_{name}"] = spaces.Box(0, 255, (height, width, 3), np.uint8)
                if depth:
                    obs_spaces[f"depth_{name}"] = spaces.Box(0.0, np.inf, (height, width), np.float32)
        if "state" in obs_mode:
            obs_spaces["robot_obs"] = spaces.Box(-np.inf, np.inf, (ROBOT_OBS_DIM,), np.float64)
            obs_spaces["scene_obs"] = spaces.Box(-np.inf, np.inf, (SCENE_OBS_DIM,), np.float64)
        obs_spaces["instruction"] = spaces.Text(
            max_length=language.MAX_INSTRUCTION_LENGTH, min_length=1, charset=language.INSTRUCTION_CHARSET
        )
        self.observation_space = spaces.Dict(obs_spaces)
        if action_mode == "relative":
            self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float64)
        else:
            low = np.array([-1.0, -1.0, 0.0, -np.pi, -np.pi, -np.pi, -1.0])
            high = np.array([1.0, 1.0, 1.5, np.pi, np.pi, np.pi, 1.0])
            self.action_space = spaces.Box(low, high, (ACTION_DIM,), np.float64)

        self._episode_task: str | None = None
        self._instruction = ""
        self._start_info: dict[str, Any] | None = None
        self._elapsed = 0
        self._last_obs: dict[str, Any] | None = None

    # ------------------------------------------------------------------ helpers
    def _check_open(self) -> None:
        if self.sim is None:
            raise RuntimeError("the env is closed (close() was called); create a new one with gym.make")

    def symbolic_state(self) -> dict[str, Any]:
        """The official symbolic state (led, lightbulb, slider, drawer, blocks, grasped) now."""
        self._check_open()
        return self._symbolic_state(self.sim.get_obs()["scene_obs"], self.sim.get_info())

    def _symbolic_state(self, scene_obs: np.ndarray, info: dict[str, Any]) -> dict[str, Any]:
        return symbolic.infer_symbolic_state(scene_obs, info, self.sim.slider_mid_x(), SLIDER_RANGE[self.scene] / 2)

    def completed_tasks(self) -> tuple[str, ...]:
        """Every task the oracle sees between the episode's start and now, sorted (all 34 checked).

        Raises:
            RuntimeError: the env is closed or was never reset.
        """
        self._check_open()
        if self._start_info is None:
            raise RuntimeError("call reset() before completed_tasks()")
        return tuple(sorted(tasks.completed_tasks(self._start_info, self.sim.get_info())))

    def applicable_tasks(self) -> list[str]:
        """Tasks whose official condition holds in the current state and that can still fire.

        The official conditions are symbolic; three kinds of state satisfy them yet leave the
        oracle nothing to see, so their tasks are left out:

        - the symbolic state splits the door and the drawer at half their travel, but the oracle
          needs a change of more than 0.15 m (door) or 0.12 m (drawer): a joint left mid-travel
          by a random layout may have less room than that;
        - a push of more than 0.1 m along x that would shove the block's centre off the end of
          the table top (the block must still rest on it at the end), or a push to the right
          that would need the block's centre past x 0.34, beyond the arm's reach at table height;
        - push_into_drawer when no block rests on the table top alone (the rule requires it).
        """
        self._check_open()
        scene_obs, info = self.sim.get_obs()["scene_obs"], self.sim.get_info()
        candidates = symbolic.applicable_tasks(self._symbolic_state(scene_obs, info))
        # Per move: the room it has left and the oracle's threshold (rftf_gym.tasks.TASK_SPECS).
        joints = {
            "move_slider_left": SLIDER_RANGE[self.scene] - scene_obs[0],
            "move_slider_right": scene_obs[0],
            "open_drawer": DRAWER_RANGE - scene_obs[1],
            "close_drawer": scene_obs[1],
        }
        room = {task: (left, abs(tasks.TASK_SPECS[task].params["threshold"]) + _JOINT_SLACK)
                for task, left in joints.items()}
        for color, offset in BLOCK_OFFSETS.items():
            x, reach = scene_obs[offset], TABLE_TOP_HALF_X - _PUSH_EDGE_MARGIN
            for direction, left in (("right", min(reach, _ARM_PUSH_REACH_X) - x), ("left", reach + x)):
                task = f"push_{color}_block_{direction}"
                room[task] = (left, abs(tasks.TASK_SPECS[task].params["x_direction"]))
        if "push_into_drawer" in candidates and not _some_block_on_table_top_alone(info):
            candidates.remove("push_into_drawer")
        return [task for task in candidates if task not in room or room[task][0] > room[task][1]]

    def _observation(self, raw: dict[str, np.ndarray]) -> dict[str, Any]:
        obs: dict[str, Any] = {key: raw[key] for key in self.observation_space.spaces if key in raw}
        obs["instruction"] = self._instruction
        return obs

    def _validated_action(self, action: Any) -> np.ndarray:
        try:
            act = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"action must be a numeric array of shape ({ACTION_DIM},), got {action!r}") from err
        if act.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {act.shape}")
        if not np.all(np.isfinite(act)):
            raise ValueError(f"action must be finite (no NaN or inf), got {act}")
        act = act.copy()
        if self.action_mode == "relative":
            act[:6] = np.clip(act[:6], -1.0, 1.0)
        else:
            # A target pose outside the action space cannot be reached; the arm would strain
            # towards it (or the IK return garbage), so refuse it instead of clipping silently.
            low, high = self.action_space.low, self.action_space.high
            for i, name in enumerate(_ABSOLUTE_ACTION_NAMES[:6]):
                if not low[i] <= act[i] <= high[i]:
                    raise ValueError(
                        f"absolute action {name} = {act[i]:.6g} is outside its range "
                        f"[{low[i]:.6g}, {high[i]:.6g}] (action_space of action_mode='absolute')"
                    )
        # calvin_env asserts the gripper is exactly +-1 (robot.py apply_action): binarise.
        act[6] = 1.0 if act[6] >= 0.0 else -1.0
        return act

    def _draw_task(self, explicit_state: bool) -> str:
        """The episode's task: the fixed one, or one drawn among the applicable ones."""
        if self.task is not None:
            return self.task
        candidates = self.applicable_tasks()
        if not candidates:
            if explicit_state:
                raise ValueError("no task is applicable in the given reset state; pass options['task']")
            candidates = list(tasks.TASK_NAMES)
        return str(candidates[int(self.np_random.integers(len(candidates)))])

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._check_open()
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"robot_obs", "scene_obs", "task", "continue"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: robot_obs, scene_obs, task, continue")
        task = options.get("task", self.task)
        if task is not None:
            tasks.validate_task(task)
        has_state = "robot_obs" in options or "scene_obs" in options
        if has_state and not ("robot_obs" in options and "scene_obs" in options):
            raise ValueError("options must give both 'robot_obs' and 'scene_obs', or neither")
        if options.get("continue", False):
            if has_state:
                raise ValueError("options['continue'] keeps the current state; do not pass robot_obs/scene_obs")
            if self._start_info is None:
                raise ValueError("options['continue'] needs a previous reset to continue from")
        elif has_state:
            robot_obs = _state_vector(options["robot_obs"], "robot_obs", ROBOT_OBS_DIM)
            scene_obs = _state_vector(options["scene_obs"], "scene_obs", SCENE_OBS_DIM)
            # Values no simulator can hold are refused here for every backend; overlaps need the
            # geometry, and each backend asks pybullet for them (rftf_gym.state_check).
            self._start_info = None  # a refused state leaves nothing to step or continue from
            state_check.check_reset_state(robot_obs, scene_obs, self.scene)
            self.sim.reset(robot_obs=robot_obs, scene_obs=scene_obs)
        else:
            for _ in range(_LAYOUT_TRIES):
                self.sim.reset(rng=self.np_random)
                if task is None or task in self.applicable_tasks():
                    break
            else:
                raise RuntimeError(f"no random layout in {_LAYOUT_TRIES} tries makes task {task!r} applicable")

        self._episode_task = task if task is not None else self._draw_task(has_state)
        self._instruction = language.instruction_for(self._episode_task, self.instruction_split, self.np_random)
        self._start_info = self.sim.get_info()
        self._elapsed = 0
        self._last_obs = self._observation(self.sim.get_obs())
        info = {"task": self._episode_task, "instruction": self._instruction, "elapsed_steps": 0}
        return self._last_obs, info

    def step(self, action: Any):
        self._check_open()
        if self._start_info is None:
            raise RuntimeError("call reset() before step()")
        act = self._validated_action(action)
        self.sim.step(act, self.action_mode)
        self._elapsed += 1
        raw = self.sim.get_obs()
        info: dict[str, Any] = {
            "task": self._episode_task,
            "instruction": self._instruction,
            "elapsed_steps": self._elapsed,
        }
        finite = all(np.all(np.isfinite(v)) for k, v in raw.items() if not k.startswith("rgb"))
        if not finite:
            # A physics blow-up: keep the last good observation, end the episode, say why.
            info.update(success=False, sparse_reward=0.0, physics_error=True,
                        physics_error_detail="the simulator produced a non-finite state")
            if self.info_completed_tasks:
                info["completed_tasks"] = ()
            return self._last_obs, 0.0, False, True, info
        outside = state_check.blocks_outside_workspace(raw["scene_obs"])
        if outside:
            # A block fell off the table or was flung away: no task can use it any more.
            self._last_obs = self._observation(raw)
            info.update(success=False, sparse_reward=0.0, physics_error=True,
                        physics_error_detail="; ".join(outside))
            if self.info_completed_tasks:
                info["completed_tasks"] = ()
            return self._last_obs, 0.0, False, True, info
        end_info = self.sim.get_info()
        # Reward and termination need the episode's task only (the official evaluation checks
        # get_task_info_for_set(start, now, {subtask})); all 34 only when info asks for them.
        success = tasks.task_succeeded(self._episode_task, self._start_info, end_info)
        reward = 1.0 if success else 0.0
        info.update(success=success, sparse_reward=reward)
        if self.info_completed_tasks:
            info["completed_tasks"] = tuple(sorted(tasks.completed_tasks(self._start_info, end_info)))
        self._last_obs = self._observation(raw)
        return self._last_obs, reward, success, self._elapsed >= EP_LEN and not success, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        self._check_open()
        return self.sim.render("static")

    def close(self) -> None:
        sim = getattr(self, "sim", None)
        if sim is not None:
            sim.close()
            self.sim = None
