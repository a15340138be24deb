"""The experts' base: per-instruction state, observation helpers, control primitives that mirror
the simulator's target pose, and the building blocks every skill uses (grasp, release, transit).

The skill families (`rftf_gym.experts.blocks`, `shelf`, `cabinet`) are mixed into
`rftf_gym.experts.expert.Expert` on top of `ExpertBase`.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

import numpy as np

from rftf_gym.conventions import (
    BLOCK_OFFSETS,
    COLORS,
    MAX_REL_ORN,
    MAX_REL_POS,
    wrap_angle,
)
from rftf_gym.experts.geometry import (
    CLOSE,
    DRAWER_FRONT_Y,
    GRASP_BELOW_CENTRE,
    MAX_WAYPOINT_STEPS,
    NEUTRAL_YAW,
    OPEN,
    TRANSIT_Z,
)
from rftf_gym.sim.layout import LAYOUTS, TABLE_TOP_Z, SceneLayout
from rftf_gym.sim.robot import clamp_target
from rftf_gym.tasks import validate_task

Action = np.ndarray
Script = Generator[Action, None, bool]


class ExpertBase:
    """State, observation helpers, control primitives and building blocks of a scripted expert.

    The task scripts come from the skill mixins; `rftf_gym.experts.Expert` documents the
    arguments.
    """

    def __init__(self, task: str, scene: str, rng: np.random.Generator | None = None, noise: float = 0.0,
                 speed: float | None = None, offsets: float = 1.0) -> None:
        validate_task(task)
        if scene not in LAYOUTS:
            raise ValueError(f"scene must be one of {tuple(LAYOUTS)}, got {scene!r}")
        if noise < 0 or offsets < 0:
            raise ValueError(f"noise and offsets must be >= 0, got {noise}, {offsets}")
        if speed is not None and not 0 < speed <= 1:
            raise ValueError(f"speed must be in (0, 1], got {speed}")
        self.task = task
        self.scene = scene
        self.layout: SceneLayout = LAYOUTS[scene]
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.noise = float(noise)
        self.fixed_speed = speed
        self.offsets = float(offsets)
        self.reset()

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Forget the current plan; the next `act` plans from its observation."""
        self._plan: Script | None = None
        self._robot = np.zeros(15)
        self._scene = np.zeros(24)
        self._target_pos: np.ndarray | None = None
        self._target_orn = np.zeros(3)
        self._gripper = OPEN
        self.done = False
        self.speed = self.fixed_speed if self.fixed_speed is not None else float(self.rng.uniform(0.7, 1.0))

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        """The relative action for this step.

        Args:
            obs: an observation with ``robot_obs`` (15) and ``scene_obs`` (24).

        Returns:
            float64 array (7,): translation and rotation in [-1, 1], gripper exactly +-1.
            After the script ends the expert holds still.
        """
        self._robot = np.asarray(obs["robot_obs"], dtype=np.float64)
        self._scene = np.asarray(obs["scene_obs"], dtype=np.float64)
        if self._plan is None:
            self._target_pos = self._robot[:3].copy()
            self._target_orn = self._robot[3:6].copy()
            self._gripper = OPEN if self._robot[14] >= 0 else CLOSE
            self._plan = self._script()
        else:
            # The simulator's anti wind-up, from the TCP the last action reached (both backends).
            self._target_pos, self._target_orn = clamp_target(self._target_pos, self._target_orn, self.tcp,
                                                              self._robot[3:6])
        if not self.done:
            try:
                return self._record(next(self._plan))
            except StopIteration:
                self.done = True
        return self._record(self._action(self._target_pos, None, self._gripper, precise=True))

    # ------------------------------------------------------------------ observation helpers
    @property
    def tcp(self) -> np.ndarray:
        return self._robot[:3]

    @property
    def gripper_width(self) -> float:
        return float(self._robot[6])

    def block_pos(self, color: str) -> np.ndarray:
        i = BLOCK_OFFSETS[color]
        return self._scene[i:i + 3].copy()

    def block_yaw(self, color: str) -> float:
        return float(self._scene[BLOCK_OFFSETS[color] + 5])

    def block_size(self, color: str) -> tuple[float, float, float]:
        return self.layout.block_size(color)

    def _held_block(self) -> str | None:
        """The block between the closed fingers, if any."""
        if self._robot[14] > 0 or self.gripper_width < 0.01:
            return None
        pos = self.tcp + np.array([0.0, 0.0, GRASP_BELOW_CENTRE])
        dists = {c: np.linalg.norm(self.block_pos(c) - pos) for c in COLORS}
        color = min(dists, key=dists.get)
        return color if dists[color] < 0.05 else None

    # ------------------------------------------------------------------ control
    def _record(self, action: np.ndarray) -> np.ndarray:
        """Mirror the simulator's target update for the action being sent."""
        self._target_pos = self._target_pos + action[:3] * MAX_REL_POS
        self._target_orn = self._target_orn + action[3:6] * MAX_REL_ORN
        self._gripper = float(action[6])
        return action

    def _action(self, goal: np.ndarray, yaw: float | None, gripper: float, precise: bool,
                speed: float | None = None) -> np.ndarray:
        """One relative action that moves the (mirrored) target towards a goal pose."""
        speed = self.speed if speed is None else speed
        action = np.zeros(7)
        delta = (np.asarray(goal) - self._target_pos) / MAX_REL_POS
        norm = float(np.max(np.abs(delta)))
        if norm > speed:
            delta *= speed / norm
        if self.noise > 0 and not precise:
            delta = delta + self.rng.normal(0.0, self.noise, 3)
        action[:3] = np.clip(delta, -1.0, 1.0)
        # Gripper pointing down: roll pi, pitch 0; yaw as asked (else kept).
        goal_orn = np.array([np.pi, 0.0, self._target_orn[2] if yaw is None else yaw])
        action[3:6] = np.clip(wrap_angle(goal_orn - self._target_orn) / MAX_REL_ORN, -1.0, 1.0)
        action[6] = gripper
        return action

    def _move(self, goal: np.ndarray, yaw: float | None = None, gripper: float | None = None,
              tol: float = 0.004, precise: bool = True, speed: float | None = None,
              max_steps: int = MAX_WAYPOINT_STEPS) -> Script:
        """Go to a TCP position (and yaw); True when reached within tol."""
        gripper = self._gripper if gripper is None else gripper
        goal = np.asarray(goal, dtype=np.float64)
        history: list[np.ndarray] = []
        for _ in range(max_steps):
            yaw_err = 0.0 if yaw is None else abs(float(wrap_angle(yaw - self._robot[5])))
            if np.linalg.norm(goal - self.tcp) < tol and yaw_err < 0.05:
                return True
            # Yaw (as metres at a 5 cm lever) counts as progress: a turn in place is no stop.
            history.append(np.array([*self.tcp, 0.05 * float(self._robot[5])]))
            # Blocked by contact (the target already sits on the goal but the TCP stopped): go on
            # with the script rather than push for the rest of the budget.
            if len(history) > 8 and np.ptp(np.array(history[-5:]), axis=0).max() < 0.001 \
                    and np.linalg.norm(goal - self._target_pos) < 0.004:
                return False
            yield self._action(goal, yaw, gripper, precise, speed)
        return False

    def _hold(self, steps: int, gripper: float) -> Script:
        """Stay put for a few steps with the gripper commanded (to close or open it)."""
        for _ in range(steps):
            yield self._action(self._target_pos, None, gripper, precise=True)
        return True

    def _pose_action(self, goal: np.ndarray, orn: np.ndarray, gripper: float, speed: float | None = None) -> Action:
        """One relative action towards a TCP position and a full orientation (not only gripper-down)."""
        action = self._action(goal, None, gripper, precise=True, speed=speed)
        action[3:6] = np.clip(wrap_angle(orn - self._target_orn) / MAX_REL_ORN, -1.0, 1.0)
        return action

    def _pose_move(self, goal: np.ndarray, orn: np.ndarray, gripper: float, tol: float = 0.005,
                    speed: float | None = None, max_steps: int = MAX_WAYPOINT_STEPS) -> Script:
        """Go to a TCP position and orientation; True when reached (as `_move`, with a leant hand)."""
        goal = np.asarray(goal, dtype=np.float64)
        history: list[np.ndarray] = []
        for _ in range(max_steps):
            orn_err = float(np.max(np.abs(wrap_angle(orn - self._robot[3:6]))))
            if np.linalg.norm(goal - self.tcp) < tol and orn_err < 0.05:
                return True
            history.append(self.tcp.copy())
            if len(history) > 8 and np.ptp(np.array(history[-5:]), axis=0).max() < 0.001 \
                    and np.linalg.norm(goal - self._target_pos) < 0.004 and orn_err < 0.05:
                return False
            yield self._pose_action(goal, orn, gripper, speed)
        return False

    def _pose_hold(self, steps: int, orn: np.ndarray, gripper: float) -> Script:
        """`_hold` that keeps a full hand orientation (not only gripper-down)."""
        for _ in range(steps):
            yield self._pose_action(self._target_pos, orn, gripper)
        return True

    def _settle(self, max_steps: int = 8) -> Script:
        """Hold still until the arm stops, then plan from where it is.

        In a chain (``continue`` resets) the simulator's internal target may still lead the arm
        by up to 3 cm when this instruction starts; the expert cannot see it, so it lets the arm
        arrive and then re-syncs its mirror of the target to the TCP.
        """
        for _ in range(max_steps):
            last = self.tcp.copy()
            yield np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, self._gripper])
            if np.linalg.norm(self.tcp - last) < 0.001:
                break
        self._target_pos = self.tcp.copy()
        self._target_orn = self._robot[3:6].copy()
        return True

    def _offset(self, scale: float) -> float:
        return float(self.rng.uniform(-scale, scale)) * self.offsets

    # ------------------------------------------------------------------ building blocks
    def _grasp_yaw(self, block_yaw: float, turn: float = 0.0) -> float:
        """Gripper yaw across a block's 4 cm side, nearest the neutral yaw after a turn."""
        candidates = [block_yaw + k * np.pi for k in range(-3, 4)]
        return float(min(candidates, key=lambda c: abs(c + turn - NEUTRAL_YAW)))

    def _clear(self) -> Script:
        """Leave confined spaces: open the gripper if it holds nothing wanted, then go up."""
        pos = self.tcp
        if pos[1] > -0.02 and pos[2] < 0.62:
            # Inside the shelf or at the cabinet face: back out towards the robot first.
            yield from self._move(np.array([pos[0], -0.06, max(pos[2], 0.50)]), tol=0.015, precise=False)
        elif pos[1] < DRAWER_FRONT_Y and pos[2] < TABLE_TOP_Z + 0.01:
            # In front of the table (drawer area): come up to the table level before moving in y.
            yield from self._move(np.array([pos[0], pos[1], TABLE_TOP_Z + 0.06]), tol=0.015, precise=False)
        if self.tcp[2] < TRANSIT_Z - 0.03:
            yield from self._move(np.array([*self.tcp[:2], TRANSIT_Z]), tol=0.015, precise=False)
        return True

    def _release(self) -> Script:
        """Open the gripper (when closed) and lift away from what it held."""
        if self._robot[14] < 0:
            yield from self._hold(4, OPEN)
            pos = self.tcp
            yield from self._move(np.array([pos[0], pos[1], pos[2] + 0.05]), gripper=OPEN, tol=0.01)
        return True

    def _goto_above(self, xy: np.ndarray, z: float, yaw: float | None, gripper: float) -> Script:
        """Transit at a safe height to a point above xy, turning to yaw, then go down to z."""
        yield from self._clear()
        high = max(TRANSIT_Z, z)
        yield from self._move(np.array([xy[0], xy[1], high]), yaw=yaw, gripper=gripper, tol=0.01, precise=False)
        ok = yield from self._move(np.array([xy[0], xy[1], z]), yaw=yaw, gripper=gripper, tol=0.006)
        return ok

    def _grasp(self, color: str, turn: float = 0.0, along: float | None = None,
               gyaw: float | None = None) -> Script:
        """Pick a block from where it rests: above it aligned to its yaw, descend, close.

        ``along`` fixes the grip point along the block's long axis and ``gyaw`` the gripper yaw
        (None: random, and across the 4 cm side nearest the neutral yaw after ``turn``).
        """
        pos, yaw = self.block_pos(color), self.block_yaw(color)
        if gyaw is None:
            gyaw = self._grasp_yaw(yaw, turn)
        long_side = self.block_size(color)[0]
        # Grip point along the long axis: random but keeping both fingers on the block.
        if along is None:
            along = self._offset(max(0.0, (long_side - 0.04) / 2))
        grip_xy = pos[:2] + along * np.array([np.cos(yaw), np.sin(yaw)])
        approach = pos[2] + 0.07 + self._offset(0.015)
        yield from self._goto_above(grip_xy, approach, gyaw, OPEN)
        # Re-read the block (it may have been nudged) and descend onto it.
        pos = self.block_pos(color)
        grip_xy = pos[:2] + along * np.array([np.cos(yaw), np.sin(yaw)])
        yield from self._move(np.array([*grip_xy, pos[2] - GRASP_BELOW_CENTRE]), yaw=gyaw, gripper=OPEN,
                              tol=0.004, max_steps=40)
        yield from self._hold(6, CLOSE)
        return self._held_block() == color

    def _free_hands(self) -> Script:
        yield from self._release()
        yield from self._clear()
        return True
