"""Scripted experts for the 34 CALVIN tasks on the embedded play table.

An expert is a closed-loop waypoint script: every control step it reads ``robot_obs`` and
``scene_obs`` (SPEC 2.2), picks the current waypoint (computed from the block poses, the door and
drawer joints and the scene layout of `rftf_gym.sim.layout`) and outputs CALVIN's *relative*
7-d action, the same interface a policy uses, so recorded actions are exactly what a policy
would output (values in [-1, 1], gripper -1 close / +1 open).

Control: the simulator accumulates each relative action on an internal target pose that may lead
the TCP by at most 3 cm / 0.15 rad (`rftf_gym.sim.robot`). The expert keeps its own copy of that
target (the same update and clamp) and steers the copy towards the waypoint, so the arm stops on
the waypoint instead of overshooting by the lag. Orientation is held gripper-down (roll pi,
pitch 0); only the yaw changes, except on the tilted cabinet face (switch lever, door handle),
where the hand pitches so the fingers stand perpendicular to the face.

Grasps: the Panda's fingers close along ``(sin yaw, -cos yaw)`` in the world, a block's 4 cm side
lies along its local y, so the gripper yaw is the block yaw modulo pi (the candidate nearest the
neutral yaw keeps joint 7 away from its limits); blocks up to 6 cm long also fit across their long
side, modulo pi/2, which rotations and grasps in the drawer use to keep the hand clear of the
cabinet, the table edge and joint 7's reach. Where the hand has no room to grasp or push a table
block (in front of the switch lever or the door handle), the closed fingertips first drag it out.

Scripts are Python generators: each ``yield`` is one action and the generator reads the newest
observation from the expert, so waypoints follow the objects as they move.

Example:
    >>> import gymnasium as gym, numpy as np, rftf_gym
    >>> env = gym.make("RFTF-CALVIN-v0", scene="D", task="open_drawer", obs_mode="state")
    >>> obs, info = env.reset(seed=0)
    >>> expert = make_expert("open_drawer", "D", np.random.default_rng(0))
    >>> while True:  # doctest: +SKIP
    ...     obs, reward, terminated, truncated, info = env.step(expert.act(obs))
    ...     if terminated or truncated:
    ...         break
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping
from typing import Any

import numpy as np

from rftf_gym.language import EVAL_INSTRUCTIONS, TRAIN_INSTRUCTIONS
from rftf_gym.sim.layout import (
    DOOR_WIDTH,
    DRAWER_RANGE,
    LAYOUTS,
    SHELF_Y,
    SLANT_DIR,
    SLANT_FOOT,
    SLANT_NORMAL,
    SWITCH_RANGE,
    SWITCH_U,
    TABLE_TOP_Z,
    SceneLayout,
)
from rftf_gym.tasks import TASK_NAMES, validate_task

Action = np.ndarray
Script = Generator[Action, None, bool]

# Relative action scaling and the simulator's anti wind-up band (SPEC 2.2, rftf_gym.sim.robot).
MAX_REL_POS = 0.02
MAX_REL_ORN = 0.05
TARGET_BAND_POS = 0.03
TARGET_BAND_ORN = 0.15
NEUTRAL_YAW = 1.50  # official neutral TCP euler z (SPEC 2.2)
# Gripper yaws (minus the neutral one) the arm tracks to within ~3 mm at grasp height over the
# whole table top; outside, joint 7's limits make the IK drift (measured with the embedded Panda).
YAW_REACH = (-1.5, 2.5)
# Footprint of the hand around the TCP (panda_hand AABB): half length along the finger axis and
# half width across it. Near the cabinet a hand turned crosswise hits the switch lever and the
# door handle, which stick out to y ~ 0 (rftf_gym.sim.layout): there, grasps at table height
# fail once the footprint reaches past y ~ 0.035 (fitted to failed and successful grasps: the
# AABB overstates the hand's lower part). Elsewhere the tilted face itself is further back.
HAND_HALF_LENGTH, HAND_HALF_WIDTH = 0.11, 0.045
CABINET_CLEAR_Y = 0.03
CABINET_FACE_CLEAR_Y = 0.07
SWITCH_LEVER_HALF_X, DOOR_HANDLE_HALF_X = 0.06, 0.012
CABINET_SLACK = 0.005  # margin before a block is dragged in rather than grasped where it is
# Down in the open drawer the hand's lower part (narrower than its AABB) must fit between the table
# top's front edge and the drawer front: its reach along y is about
# DRAWER_HAND_REACH[0] |sin phi| + DRAWER_HAND_REACH[1] |cos phi| for a gripper yaw phi off neutral
# (fitted to measured lift_*_block_drawer grasps).
DRAWER_HAND_REACH = (0.08, 0.03)
# The embedded TCP sits 0.14 m along the hand axis, below the fingertips (rftf_gym.sim.robot):
# measured, the tips are 0.022 m above the TCP.
TIP_ABOVE_TCP = 0.022
# TCP height below a block's centre for a grasp: the finger pads then cover the block's lower
# half with the tips ~5 mm above the surface it rests on.
GRASP_BELOW_CENTRE = 0.033
BLOCK_Z = TABLE_TOP_Z + 0.02  # block centre resting on the table top or the shelf
TABLE_HALF_X = 0.44  # the table top slab spans x -0.44..0.44 (rftf_gym.sim.layout)
DOOR_CONTACT_Y = -0.025  # a block whose back face is beyond this may lean on the sliding door
# Pushing along x at neutral yaw: the pushing face sits this far ahead of the TCP with the fingers
# closed / open (the leading finger's outer face), and the TCP reaches |x| <= PUSH_REACH_X at
# table height over the whole depth of the table (measured).
PUSH_LEAD_CLOSED, PUSH_LEAD_OPEN = 0.012, 0.05
PUSH_REACH_X = 0.29
PUSH_START_MAX_X = 0.37  # beyond, a push cannot start: the fingers stall short of the block (measured)
PUSH_BEHIND_MAX_Y = -0.01  # the closed fingers fit behind a block up to here (cabinet face beyond)
TRANSIT_Z = 0.56  # TCP height for moves across the table: held block clears the others
OPEN, CLOSE = 1.0, -1.0
# Sliding door handle, drawer handle and switch lever, from rftf_gym.sim.layout.table_urdf.
DOOR_HANDLE_U = 0.13  # middle of the handle bar up the face
DRAWER_HANDLE_Y, DRAWER_HANDLE_Z = -0.25, 0.36
DRAWER_FRONT_Y = -0.18  # table front edge and closed drawer front
DRAWER_FLOOR_Z = 0.34
DRAWER_INNER_Y = (-0.16, 0.04)  # tray interior along y at joint 0
BUTTON_Y, BUTTON_TOP_Z = -0.12, 0.484
# Parts on the tilted cabinet face (switch lever, door handle) are worked with the hand tilted so
# the closed fingers stand perpendicular to the face: pitch -60 deg at yaw pi/2 points the hand
# axis along -SLANT_NORMAL, and the fingers then close along world x.
FACE_PITCH = -math.pi / 3
FACE_YAW = math.pi / 2
FACE_ORN = np.array([math.pi, FACE_PITCH, FACE_YAW])
FACE_STANDOFF_N = 0.10  # TCP distance out of the face before going in
FINGER_HALF_WIDTH = 0.0105  # Panda finger collision mesh, across the closing axis
# Switch lever (rftf_gym.sim.layout.table_urdf): half its extent along the face (the cap); the
# fingertips stop this far out of the face.
SWITCH_LEVER_HALF_U = 0.0175
SWITCH_TIP_GAP = 0.012
# Door handle bar: it stands 0.02..0.05 out of the face; the fingertips stop just above the door.
DOOR_TIP_GAP = 0.025
BUTTON_HOUSING_R = 0.038  # the button's housing on the table top (rftf_gym.sim.layout)
# Reference sub-step budget per waypoint: generous, the env's 360-step cap is the real limit.
MAX_WAYPOINT_STEPS = 90

COLORS = ("red", "blue", "pink")

# The shelf behind the sliding door (place == "slider"). The Panda hand (pybullet_data collision
# mesh, measured) is 0.204 m across its finger axis and 0.064 m deep, its body from 0.064 m to
# 0.176 m above the TCP. Its body must pass the opening left by the door and the side panels, keep
# off the back wall and stay under the roof (y > 0.128 above z 0.628, official base_link mesh).
HAND_HALF_WIDTH = 0.102
HAND_HALF_DEPTH = 0.032
HAND_LEVER = 0.07  # leaning the hand by a shifts its lower body sideways by about this * sin(a)
SHELF_MARGIN = 0.012
MAX_LEAN = 0.5  # rad; beyond this the fingers lose the block's faces
SHELF_FRONT_Y = 0.0  # pre-grasp y: in front of the tilted face, over the table top's back edge


def _wrap(angle: float | np.ndarray) -> float | np.ndarray:
    """Wrap angles to [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _grasp_yaws(block_yaw: float, length: float) -> list[float]:
    """Gripper yaws that close the fingers across a block: across its 4 cm side, and for blocks up
    to 6 cm long also across the long side (the fingers open to 8 cm)."""
    step = np.pi / 2 if length <= 0.06 else np.pi
    return [block_yaw + k * step for k in range(-4, 5)]


def _drawer_grasp_yaw(block_yaw: float, length: float) -> float:
    """The grasp yaw that keeps the hand narrowest along y (to fit down into the drawer), nearest
    the neutral yaw among equals."""
    return min(_grasp_yaws(block_yaw, length),
               key=lambda c: (round(abs(math.sin(c - NEUTRAL_YAW)), 3), abs(c - NEUTRAL_YAW)))


def _drawer_hand_reach(gyaw: float) -> float:
    """How far along y the hand reaches from the TCP down in the drawer, for a gripper yaw."""
    phi = gyaw - NEUTRAL_YAW
    return DRAWER_HAND_REACH[0] * abs(math.sin(phi)) + DRAWER_HAND_REACH[1] * abs(math.cos(phi))


def _slant(u: float, n: float) -> tuple[float, float]:
    """(y, z) of a point u up the tilted cabinet face and n out of it (layout geometry)."""
    return (SLANT_FOOT[0] + u * SLANT_DIR[1] + n * SLANT_NORMAL[1],
            SLANT_FOOT[1] + u * SLANT_DIR[2] + n * SLANT_NORMAL[2])


def task_for_instruction(instruction: str) -> str:
    """The task an instruction sentence names (train paraphrases and eval sentences).

    Args:
        instruction: a sentence of `rftf_gym.language`.

    Returns:
        The task name.

    Raises:
        ValueError: the sentence is not one of the project's instructions.
    """
    task = _INSTRUCTION_TO_TASK.get(instruction.strip().lower())
    if task is None:
        raise ValueError(f"unknown instruction {instruction!r}: not a sentence of rftf_gym.language")
    return task


def _instruction_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for task in TASK_NAMES:
        for sentence in (*TRAIN_INSTRUCTIONS[task], EVAL_INSTRUCTIONS[task]):
            table[sentence] = task
    return table


_INSTRUCTION_TO_TASK = _instruction_table()


class Expert:
    """A scripted expert for one task in one scene.

    Call `reset` before each instruction and `act` once per control step. The expert plans from
    the first observation it sees after `reset`, so it works from any state where the task's
    symbolic condition holds (and releases a block it should not hold first).

    Args:
        task: one of `rftf_gym.tasks.TASK_NAMES`.
        scene: ``"A"``, ``"B"``, ``"C"`` or ``"D"``.
        rng: randomness for diversity (speed, offsets, noise); None: a fresh seeded one (0).
        noise: std of Gaussian noise added to the translation actions in free space (action
            units); 0 gives clean demonstrations.
        speed: max translation action magnitude in (0, 1]; None draws one in [0.7, 1.0].
        offsets: scale of random approach offsets (grasp point along the block, approach
            heights, push lanes), 0 disables them.

    Raises:
        ValueError: unknown task or scene, or options out of range.
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
        i = 6 + 6 * COLORS.index(color)
        return self._scene[i:i + 3].copy()

    def block_yaw(self, color: str) -> float:
        return float(self._scene[6 + 6 * COLORS.index(color) + 5])

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
        pos, euler = self.tcp, self._robot[3:6]
        target = self._target_pos + action[:3] * MAX_REL_POS
        self._target_pos = pos + np.clip(target - pos, -TARGET_BAND_POS, TARGET_BAND_POS)
        orn = self._target_orn + action[3:6] * MAX_REL_ORN
        self._target_orn = _wrap(euler + np.clip(_wrap(orn - euler), -TARGET_BAND_ORN, TARGET_BAND_ORN))
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
        action[3:6] = np.clip(_wrap(goal_orn - self._target_orn) / MAX_REL_ORN, -1.0, 1.0)
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
            yaw_err = 0.0 if yaw is None else abs(float(_wrap(yaw - self._robot[5])))
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

    # ------------------------------------------------------------------ task scripts
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

    def _script(self) -> Script:
        yield from self._settle()
        task = self.task
        if task.startswith("rotate_"):
            _, color, _, direction = task.split("_")
            yield from self._rotate(color, 1.0 if direction == "left" else -1.0)
        elif task.startswith("push_") and task != "push_into_drawer":
            _, color, _, direction = task.split("_")
            yield from self._push(color, 1.0 if direction == "right" else -1.0)
        elif task.startswith("move_slider_"):
            yield from self._slider(1.0 if task.endswith("left") else -1.0)
        elif task in ("open_drawer", "close_drawer"):
            yield from self._drawer(task == "open_drawer")
        elif task.startswith("lift_"):
            _, color, _, place = task.split("_")
            yield from self._lift(color, place)
        elif task == "place_in_slider":
            yield from self._place_in_slider()
        elif task == "place_in_drawer":
            yield from self._place_in_drawer()
        elif task == "stack_block":
            yield from self._stack()
        elif task == "unstack_block":
            yield from self._unstack()
        elif task.endswith("_lightbulb"):
            yield from self._switch(task.startswith("turn_on"))
        elif task.endswith("_led"):
            yield from self._button()
        elif task == "push_into_drawer":
            yield from self._push_into_drawer()
        return True

    def _free_hands(self) -> Script:
        yield from self._release()
        yield from self._clear()
        return True

    def _rotate(self, color: str, sign: float) -> Script:
        """Grasp the block at its centre and turn it ~90 degrees while it slides on the table.

        A gripped block pivots freely about the line between the finger pads and, held below its
        centre, tips over like an inverted pendulum when lifted and turned; left on the table it
        stays flat. The oracle allows 0.1 m of travel: near the cabinet the block is first drawn
        towards the robot far enough for the hand to sweep crosswise without touching the switch
        lever or the door handle.
        """
        yield from self._free_hands()
        gyaw, turn = self._rotate_plan(color, sign)
        x = float(self.block_pos(color)[0])
        if self.block_pos(color)[1] > self._cabinet_free_y(gyaw, x) + CABINET_SLACK:
            # The grasp itself would hit the cabinet: drag the block in far enough for the sweep.
            sweep = [self._cabinet_free_y(gyaw + a, x) for a in np.linspace(0.0, turn, 9)]
            yield from self._drag(color, (x, max(min(sweep), -0.12)))
        yield from self._grasp(color, along=0.0, gyaw=gyaw)
        pos = self.tcp.copy()
        start_yaw = float(self._target_orn[2])
        turn_y = min(pos[1], *(self._cabinet_free_y(start_yaw + a, pos[0]) for a in np.linspace(0.0, turn, 9)))
        # Unload the table a little (less drag) but keep the block's weight on it.
        slide = pos + [0, 0, 0.003]
        if turn_y < pos[1]:
            slide[1] = turn_y
            yield from self._move(slide, gripper=CLOSE, tol=0.006, speed=min(self.speed, 0.6))
        yield from self._move(slide, yaw=start_yaw + turn, gripper=CLOSE, tol=0.006)
        yield from self._hold(4, OPEN)
        yield from self._move(self.tcp + [0, 0, 0.06], gripper=OPEN, tol=0.01)
        return True

    def _cabinet_free_y(self, gyaw: float, x: float) -> float:
        """The largest TCP y where a hand at this yaw and x clears the cabinet: the switch lever and
        the door handle stick out to y ~ 0; elsewhere the tilted face is further back."""
        phi = gyaw - NEUTRAL_YAW
        span_x = HAND_HALF_LENGTH * abs(math.cos(phi)) + HAND_HALF_WIDTH * abs(math.sin(phi))
        handle_x = self.layout.door_x0 + 0.5 * DOOR_WIDTH - float(self._scene[0])
        near = [abs(x - self.layout.switch_x) < span_x + SWITCH_LEVER_HALF_X,
                abs(x - handle_x) < span_x + DOOR_HANDLE_HALF_X]
        clear_y = CABINET_CLEAR_Y if any(near) else CABINET_FACE_CLEAR_Y
        return clear_y - HAND_HALF_LENGTH * abs(math.sin(phi)) - HAND_HALF_WIDTH * abs(math.cos(phi))

    def _drag(self, color: str, xy_goal: tuple[float, float]) -> Script:
        """Drag a table block to xy_goal without grasping it: the closed fingertips press on its
        top (finger friction 2 against the block's 0.7 on the table). Works where the hand has no
        room beside the block: in front of the cabinet, or past the arm's reach at table height."""
        pos = self.block_pos(color)
        press_z = pos[2] + 0.02 - TIP_ABOVE_TCP - 0.006
        yield from self._goto_above(pos[:2], press_z + 0.04, NEUTRAL_YAW, CLOSE)
        yield from self._move(np.array([*pos[:2], press_z]), gripper=CLOSE, tol=0.004, max_steps=20)
        yield from self._move(np.array([*xy_goal, press_z]), gripper=CLOSE, tol=0.006,
                              speed=min(self.speed, 0.5), max_steps=40)
        yield from self._move(self.tcp + [0, 0, 0.04], gripper=CLOSE, tol=0.01)
        return True

    def _rotate_plan(self, color: str, sign: float) -> tuple[float, float]:
        """Gripper yaw to grasp with and the signed turn for a rotation of the block.

        The oracle takes any turn in (60, 180) degrees; aim for 80-100 and fall back to 72 when the
        sweep would leave the arm's yaw reach. Blocks up to 6 cm long also fit across the open
        fingers (8 cm), which doubles the grasp yaws to choose from. A hand turned crosswise next
        to the cabinet would hit it while grasping (the block must then be dragged in first), so
        such grasps cost too.
        """
        yaw = self.block_yaw(color)
        x, y = (float(v) for v in self.block_pos(color)[:2])
        wanted = math.radians(self.rng.uniform(80.0, 100.0))
        lo, hi = YAW_REACH
        best, plan = np.inf, (self._grasp_yaw(yaw), sign * wanted)
        for candidate in _grasp_yaws(yaw, self.block_size(color)[0]):
            phi0 = float(_wrap(candidate - NEUTRAL_YAW))
            for magnitude, penalty in ((wanted, 0.0), (math.radians(72.0), 0.2)):
                path = phi0 + sign * np.linspace(0.0, magnitude, 9)
                outside = max(0.0, lo - path.min()) + max(0.0, path.max() - hi)
                bump = max(0.0, y - self._cabinet_free_y(NEUTRAL_YAW + phi0, x))
                cost = 10.0 * outside + 20.0 * bump + penalty + 0.1 * abs(path.mean() - 0.5 * (lo + hi))
                if cost < best:
                    best, plan = cost, (NEUTRAL_YAW + phi0, sign * magnitude)
        return plan

    def _button_room(self, color: str, sign: float) -> float:
        """Free travel along x before the block runs into the button's housing (inf: not in its lane)."""
        pos, yaw = self.block_pos(color), self.block_yaw(color)
        size = self.block_size(color)
        half_x = 0.5 * (abs(math.cos(yaw)) * size[0] + abs(math.sin(yaw)) * size[1])
        half_y = 0.5 * (abs(math.sin(yaw)) * size[0] + abs(math.cos(yaw)) * size[1])
        ahead = sign * (self.layout.button_x - pos[0]) - BUTTON_HOUSING_R - half_x
        in_lane = pos[1] < BUTTON_Y + BUTTON_HOUSING_R + half_y + 0.012
        return ahead if in_lane and ahead >= 0 else math.inf

    def _clear_button_lane(self, color: str) -> Script:
        """Push the block towards the cabinet (the robot's side of it is free), out of the lane
        of the button's housing on the table top."""
        pos, yaw = self.block_pos(color), self.block_yaw(color)
        size = self.block_size(color)
        half_y = 0.5 * (abs(math.sin(yaw)) * size[0] + abs(math.cos(yaw)) * size[1])
        clear_y = BUTTON_Y + BUTTON_HOUSING_R + half_y + 0.012
        start = np.array([pos[0], pos[1] - half_y - PUSH_LEAD_CLOSED - 0.025, BLOCK_Z - 0.01 - TIP_ABOVE_TCP])
        yield from self._goto_above(start[:2], start[2] + 0.06, NEUTRAL_YAW, CLOSE)
        yield from self._move(start, gripper=CLOSE, tol=0.006)
        goal = np.array([pos[0], clear_y - half_y - PUSH_LEAD_CLOSED, start[2]])
        yield from self._move(goal, gripper=CLOSE, tol=0.006, speed=min(self.speed, 0.6))
        yield from self._move(self.tcp + [0, -0.02, 0.05], gripper=CLOSE, tol=0.01)
        return True

    def _push(self, color: str, sign: float) -> Script:
        """Push the block ~0.14 m along x with the fingers, gripper pointing down at neutral yaw.

        The fingers close along x at the neutral yaw: closed, they push with their side; where the
        TCP would have to go past the arm's reach at table height (|x| ~0.3), the gripper opens and
        the leading finger, 4 cm ahead of the TCP, pushes instead. A block whose far side lies out
        of reach altogether (left pushes near the table's right end) is carried instead.
        """
        yield from self._free_hands()
        distance = 0.14 + self._offset(0.02)
        room = self._button_room(color, sign)
        if room < distance + 0.01:
            # Stop short of the button's housing when that still beats the oracle's 0.1 m, else
            # take the block out of the button's lane first.
            if room >= 0.125:
                distance = room - 0.01
            else:
                yield from self._clear_button_lane(color)
        pos, yaw = self.block_pos(color), self.block_yaw(color)
        size = self.block_size(color)
        half_x = 0.5 * (abs(math.cos(yaw)) * size[0] + abs(math.sin(yaw)) * size[1])
        # A block against the sliding door must still touch it at the end (the oracle wants the
        # start contacts kept): push slightly into the door, and not past the door's end.
        into_door = 0.0
        if pos[1] + 0.5 * size[1] > DOOR_CONTACT_Y:
            into_door = 0.015
            door_lo = self.layout.door_x0 - float(self._scene[0])
            room = (door_lo + DOOR_WIDTH - pos[0]) if sign > 0 else (pos[0] - door_lo)
            distance = max(0.115, min(distance, room - 0.01))
        lead, gripper = PUSH_LEAD_CLOSED, CLOSE
        if abs(pos[0] + sign * (distance - half_x - lead)) > PUSH_REACH_X:
            lead, gripper = PUSH_LEAD_OPEN, OPEN
        z = BLOCK_Z - 0.02 - TIP_ABOVE_TCP + 0.01
        lane = self._offset(0.008)
        start = np.array([pos[0] - sign * (half_x + lead + 0.025), pos[1] + lane, z])
        if abs(start[0]) > PUSH_START_MAX_X:
            # The fingers cannot get behind the block within the arm's reach: carry it just above
            # the table instead (the oracle asks for the x displacement and kept surface contacts).
            yield from self._grasp(color)
            held = self.tcp.copy()
            yield from self._move(held + [0, 0, 0.015], gripper=CLOSE, tol=0.006)
            yield from self._move(held + [sign * distance, 0, 0.015], gripper=CLOSE, tol=0.006,
                                  speed=min(self.speed, 0.6))
            yield from self._move(held + [sign * distance, 0, 0.003], gripper=CLOSE, tol=0.006, max_steps=20)
            yield from self._hold(4, OPEN)
            yield from self._move(self.tcp + [0, 0, 0.06], gripper=OPEN, tol=0.01)
            return True
        yield from self._goto_above(start[:2], start[2] + 0.06, NEUTRAL_YAW, gripper)
        yield from self._move(start, gripper=gripper, tol=0.006)
        goal = np.array([pos[0] + sign * (distance - half_x - lead), start[1] + into_door, z])
        yield from self._move(goal, gripper=gripper, tol=0.006, speed=min(self.speed, 0.6))
        yield from self._move(self.tcp + [0, 0, 0.06], gripper=gripper, tol=0.01)
        return True

    def _slider(self, sign: float) -> Script:
        """Slide the door to its end stop; sign +1 moves it left (joint grows).

        Always to the end stop (a little past it: the stop holds the door and the move ends when
        the hand stalls). In a chain the door may have drifted since the instruction began (the
        arm coasts on the previous target), and the grip slips ~1.5 cm, so anything shorter can
        miss the oracle's 0.15 measured from the instruction's start.
        """
        overshoot = 0.015
        yield from self._slide_door(self.layout.slider_range + overshoot if sign > 0 else -overshoot)
        return True

    def _slide_door(self, target_joint: float) -> Script:
        """Grip the door handle and slide the door until its joint reaches target_joint.

        The fingers come in perpendicular to the face (as for the switch): their pads then cover
        the handle bar's sides over its depth and the trailing finger pushes the bar, while the
        hand stays clear of the bar, which leans back with the face over a hand pointing down.
        """
        yield from self._free_hands()
        lay = self.layout
        joint = float(self._scene[0])
        hx = lay.door_x0 + DOOR_WIDTH / 2 - joint
        u = DOOR_HANDLE_U + self._offset(0.02)
        n_grip = DOOR_TIP_GAP - TIP_ABOVE_TCP
        yield from self._tilted_move(self._slant_point(hx, u, FACE_STANDOFF_N), tol=0.01, gripper=OPEN)
        yield from self._tilted_move(self._slant_point(hx, u, n_grip), tol=0.006, gripper=OPEN)
        yield from self._tilted_hold(5, CLOSE)
        # The door (and its handle) moves -x as the joint grows.
        yield from self._tilted_move(self._slant_point(hx - (target_joint - joint), u, n_grip), tol=0.006,
                                     speed=min(self.speed, 0.7))
        yield from self._tilted_hold(4, OPEN)
        yield from self._tilted_move(self._slant_point(self.tcp[0], u, FACE_STANDOFF_N), tol=0.015, gripper=OPEN)
        yield from self._move(self.tcp + [0, -0.03, 0.03], gripper=OPEN, tol=0.015)
        return True

    def _drawer(self, opening: bool) -> Script:
        yield from self._free_hands()
        lay = self.layout
        joint = float(self._scene[1])
        x = lay.drawer_x + self._offset(0.05)
        # Fingertips level with the middle of the handle bar.
        hook_z = DRAWER_HANDLE_Z - TIP_ABOVE_TCP - 0.005
        if opening:
            # Hook the closed fingers between the handle bar and the drawer front, pull along -y.
            # Fingers (2.1 cm wide along y) just behind the bar, so the pull starts without slack.
            y = DRAWER_HANDLE_Y + 0.01 + FINGER_HALF_WIDTH + 0.005 - joint
            yield from self._goto_above(np.array([x, y]), DRAWER_HANDLE_Z + 0.08, NEUTRAL_YAW, CLOSE)
            yield from self._move(np.array([x, y, hook_z]), gripper=CLOSE, tol=0.006)
            # Always to the end stop (a little past it; the move ends when the hand stalls), for
            # the same reasons as the door in `_slider`.
            travel = DRAWER_RANGE - joint + 0.015
            yield from self._move(np.array([x, y - travel, hook_z]), gripper=CLOSE, tol=0.006,
                                  speed=min(self.speed, 0.7))
            yield from self._move(self.tcp + [0, 0, 0.1], gripper=CLOSE, tol=0.01)
        else:
            # Push the handle bar back towards the table.
            y = DRAWER_HANDLE_Y - 0.03 - joint
            yield from self._goto_above(np.array([x, y]), DRAWER_HANDLE_Z + 0.08, NEUTRAL_YAW, CLOSE)
            yield from self._move(np.array([x, y, hook_z]), gripper=CLOSE, tol=0.006)
            yield from self._move(np.array([x, DRAWER_HANDLE_Y - 0.015, hook_z]), gripper=CLOSE,
                                  tol=0.006, speed=min(self.speed, 0.7))
            yield from self._move(self.tcp + [0, -0.03, 0.1], gripper=CLOSE, tol=0.01)
        return True

    def _lift(self, color: str, place: str) -> Script:
        yield from self._free_hands()
        if place == "slider":
            ok = yield from self._grasp_in_slider(color)
            if ok:
                # Up and out along the approach: the hand's back stays clear of the roof.
                yield from self._pose_move(self.tcp + self._shelf_out * 0.03 + [0, 0, 0.06], self._shelf_orn,
                                            CLOSE, tol=0.008)
            return True
        if place == "drawer":
            # Keep the hand thin along y so it fits between the table edge and the drawer front.
            gyaw = _drawer_grasp_yaw(self.block_yaw(color), self.block_size(color)[0])
            yield from self._grasp(color, along=0.0, gyaw=gyaw)
        else:
            free_y = self._cabinet_free_y(self._grasp_yaw(self.block_yaw(color)), float(self.block_pos(color)[0]))
            if self.block_pos(color)[1] > free_y + CABINET_SLACK:
                yield from self._drag(color, (self.block_pos(color)[0], max(free_y, -0.12)))
            yield from self._grasp(color)
        pos = self.tcp.copy()
        yield from self._move(pos + [0, 0, 0.10 + self._offset(0.02)], gripper=CLOSE, tol=0.008)
        return True

    # ------------------------------------------------------------------ shelf (slider) family
    def _shelf_opening(self, x: float) -> tuple[float, float]:
        """x interval of the shelf opening on x's side of the sliding door."""
        lay = self.layout
        door_lo = lay.door_x0 - float(self._scene[0])
        door_hi = door_lo + DOOR_WIDTH
        lo, hi = lay.shelf_x
        return (lo, door_lo) if x < 0.5 * (door_lo + door_hi) else (door_hi, hi)

    def _shelf_pose(self, xy: np.ndarray, gyaw: float, opening: tuple[float, float]) -> tuple[np.ndarray, float, bool]:
        """Orientation (euler) for a hand at xy in the shelf, its TCP raise, and whether it fits.

        The hand is rotated to gyaw gripper-down and then leant (about world x and y) so that
        its body shifts away from the side panels or door edges and from the back wall while the
        TCP stays on the block.
        """
        ext_x = HAND_HALF_WIDTH * abs(math.sin(gyaw)) + HAND_HALF_DEPTH * abs(math.cos(gyaw)) + SHELF_MARGIN
        ext_y = HAND_HALF_WIDTH * abs(math.cos(gyaw)) + HAND_HALF_DEPTH * abs(math.sin(gyaw)) + SHELF_MARGIN
        lo_shift = opening[0] - (xy[0] - ext_x)  # least x shift that clears the left edge
        hi_shift = opening[1] - (xy[0] + ext_x)  # most x shift that clears the right edge
        # The margin keeps the hand centred when there is room; the fit test itself allows the
        # measured mesh width plus 5 mm a side.
        fits = lo_shift <= hi_shift + 2 * (SHELF_MARGIN - 0.005)
        shift_x = float(np.clip(0.0, lo_shift, hi_shift)) if fits else 0.5 * (lo_shift + hi_shift)
        shift_y = min(-0.005, SHELF_Y[1] - (xy[1] + ext_y))
        lean_x = math.asin(float(np.clip(shift_x / HAND_LEVER, -math.sin(MAX_LEAN), math.sin(MAX_LEAN))))
        lean_y = math.asin(float(np.clip(-shift_y / HAND_LEVER, 0.0, math.sin(MAX_LEAN))))
        fits = fits and abs(shift_x) <= HAND_LEVER * math.sin(MAX_LEAN)
        rot = _rot_y(lean_x) @ _rot_x(lean_y) @ _rot_z(gyaw) @ _rot_x(math.pi)
        euler = np.array([math.atan2(rot[2, 1], rot[2, 2]), -math.asin(float(np.clip(rot[2, 0], -1, 1))),
                          math.atan2(rot[1, 0], rot[0, 0])])
        # A finger leant sideways hangs lower: raise the TCP so its tip stays off the shelf.
        raise_z = 0.04 * abs(math.sin(lean_x)) + 0.01 * abs(math.sin(lean_y))
        return euler, raise_z, fits

    def _pose_action(self, goal: np.ndarray, orn: np.ndarray, gripper: float, speed: float | None = None) -> Action:
        """One relative action towards a TCP position and a full orientation (not only gripper-down)."""
        action = self._action(goal, None, gripper, precise=True, speed=speed)
        action[3:6] = np.clip(_wrap(orn - self._target_orn) / MAX_REL_ORN, -1.0, 1.0)
        return action

    def _pose_move(self, goal: np.ndarray, orn: np.ndarray, gripper: float, tol: float = 0.005,
                    speed: float | None = None, max_steps: int = MAX_WAYPOINT_STEPS) -> Script:
        """Go to a TCP position and orientation; True when reached (as `_move`, with a leant hand)."""
        goal = np.asarray(goal, dtype=np.float64)
        history: list[np.ndarray] = []
        for _ in range(max_steps):
            orn_err = float(np.max(np.abs(_wrap(orn - self._robot[3:6]))))
            if np.linalg.norm(goal - self.tcp) < tol and orn_err < 0.05:
                return True
            history.append(self.tcp.copy())
            if len(history) > 8 and np.ptp(np.array(history[-5:]), axis=0).max() < 0.001 \
                    and np.linalg.norm(goal - self._target_pos) < 0.004 and orn_err < 0.05:
                return False
            yield self._pose_action(goal, orn, gripper, speed)
        return False

    def _shelf_enter(self, grip: np.ndarray, long_axis: np.ndarray, gyaw: float, gripper: float,
                     lean: tuple[np.ndarray, float] | None = None) -> Script:
        """Bring the TCP to grip inside the shelf: from the front, low, sliding in along long_axis.

        The open fingers (or a held block) slide along the block's long axis, which CALVIN's
        front-facing shelf blocks keep roughly along y, so nothing sweeps across the block.
        Returns False when the hand cannot pass the opening even leant.
        """
        opening = self._shelf_opening(float(grip[0]))
        orn, raise_z, fits = self._shelf_pose(grip[:2], gyaw, opening)
        if lean is not None:
            orn, raise_z = lean
        elif not fits:
            yield from self._shelf_open_door(float(grip[0]))
            opening = self._shelf_opening(float(grip[0]))
            orn, raise_z, fits = self._shelf_pose(grip[:2], gyaw, opening)
        goal = grip + [0.0, 0.0, raise_z]
        direction = long_axis if long_axis[1] > 0 else -long_axis
        front = goal - direction * (goal[1] - SHELF_FRONT_Y) / max(direction[1], 0.5)
        self._shelf_orn = orn
        self._shelf_out = -direction
        yield from self._clear()
        yield from self._pose_move(np.array([front[0], front[1], TRANSIT_Z]), orn, gripper, tol=0.01, speed=None)
        yield from self._pose_move(front + [0, 0, 0.008], orn, gripper, tol=0.006)
        ok = yield from self._pose_move(goal, orn, gripper, tol=0.004, speed=min(self.speed, 0.6))
        return ok

    def _shelf_open_door(self, x: float) -> Script:
        """Slide the door all the way away from x, so the whole half of the shelf is open."""
        lay = self.layout
        # The door moves -x as its joint grows: push it away from the side x is on, to the stop.
        door_centre = lay.door_x0 - float(self._scene[0]) + 0.5 * DOOR_WIDTH
        yield from self._slide_door(-0.015 if x < door_centre else lay.slider_range + 0.015)
        return True

    def _pose_hold(self, steps: int, orn: np.ndarray, gripper: float) -> Script:
        """`_hold` that keeps a full hand orientation (not only gripper-down)."""
        for _ in range(steps):
            yield self._pose_action(self._target_pos, orn, gripper)
        return True

    def _grasp_in_slider(self, color: str, attempts: int = 2) -> Script:
        """Grasp a block on the shelf: enter low from the front through the opening, then close.

        A miss (the block nudged on the way in) opens, backs out and tries again from the front.
        """
        for _ in range(attempts):
            pos, yaw = self.block_pos(color), self.block_yaw(color)
            gyaw = self._grasp_yaw(yaw)
            long_axis = np.array([math.cos(yaw), math.sin(yaw), 0.0])
            # On long blocks grip nearer the front end: the hand's back keeps off the back wall.
            out = long_axis if long_axis[1] < 0 else -long_axis
            along = max(0.0, (self.block_size(color)[0] - 0.04) / 2) * (0.5 + 0.5 * self.rng.uniform() * self.offsets)
            grip = pos + out * along + [0.0, 0.0, -GRASP_BELOW_CENTRE]
            yield from self._shelf_enter(grip, long_axis, gyaw, OPEN)
            yield from self._pose_hold(6, self._shelf_orn, CLOSE)
            if self._held_block() == color:
                return True
            yield from self._pose_hold(4, self._shelf_orn, OPEN)
            yield from self._pose_move(self.tcp + self._shelf_out * 0.08 + [0, 0, 0.01], self._shelf_orn, OPEN,
                                        tol=0.01, max_steps=30)
        return False

    def _place_in_slider(self) -> Script:
        held = self._held_block()
        if held is None:
            return False
        lay = self.layout
        door_lo = lay.door_x0 - float(self._scene[0])
        # The wider of the two openings beside the door; the block goes near its middle.
        lo, hi = lay.shelf_x
        left, right = (lo, door_lo), (door_lo + DOOR_WIDTH, hi)
        side = left if left[1] - left[0] >= right[1] - right[0] else right
        x = float(np.clip(0.5 * (side[0] + side[1]) + self._offset(0.015), lo + 0.09, hi - 0.09))
        y = 0.085 + self._offset(0.01)
        # Fingers closing along x (the block's long axis, across the fingers, then runs along y):
        # the hand's narrow side faces the shelf's depth.
        gyaw = np.pi / 2
        block_below_tcp = float(self.block_pos(held)[2] - self.tcp[2])
        grip = np.array([x, y, BLOCK_Z + 0.006 - block_below_tcp])
        long_axis = np.array([0.0, 1.0, 0.0])
        lean = None
        if not self._shelf_pose(grip[:2], gyaw, side)[2]:
            # The door leaves no opening wide enough for the hand, and its handle cannot be pulled
            # with a block in the hand: set the block on the shelf's front edge instead, the hand
            # in front of the door and leant so the fingers reach in.
            grip[1] = SHELF_Y[0] + 0.015
            rot = _rot_x(MAX_LEAN) @ _rot_z(gyaw) @ _rot_x(math.pi)
            lean = (np.array([math.atan2(rot[2, 1], rot[2, 2]), -math.asin(float(np.clip(rot[2, 0], -1, 1))),
                              math.atan2(rot[1, 0], rot[0, 0])]), 0.005)
        yield from self._shelf_enter(grip, long_axis, gyaw, CLOSE, lean)
        yield from self._pose_hold(4, self._shelf_orn, OPEN)
        yield from self._pose_move(self.tcp + self._shelf_out * 0.05 + [0, 0, 0.02], self._shelf_orn, OPEN,
                                    tol=0.01)
        return True

    def _drawer_drop_point(self) -> np.ndarray:
        """A point over the exposed part of the open drawer's tray."""
        joint = float(self._scene[1])
        y_lo = DRAWER_INNER_Y[0] - joint + 0.035
        y_hi = DRAWER_FRONT_Y - 0.035
        y = 0.5 * (y_lo + y_hi) if y_lo < y_hi else y_hi
        x = self.layout.drawer_x + self._offset(0.06)
        return np.array([x, y])

    def _place_in_drawer(self) -> Script:
        xy = self._drawer_drop_point()
        yield from self._goto_above(xy, DRAWER_FLOOR_Z + 0.02 + 0.09, None, CLOSE)
        yield from self._move(np.array([*xy, DRAWER_FLOOR_Z + 0.02 - GRASP_BELOW_CENTRE + 0.012]), gripper=CLOSE,
                              tol=0.005, max_steps=30)
        yield from self._hold(4, OPEN)
        yield from self._move(self.tcp + [0, 0, 0.12], gripper=OPEN, tol=0.01)
        return True

    def _table_blocks(self, exclude: str | None = None) -> list[str]:
        """Blocks resting on the table top (by position)."""
        out = []
        for c in COLORS:
            pos = self.block_pos(c)
            if c != exclude and abs(pos[2] - BLOCK_Z) < 0.01 and -0.18 < pos[1] < 0.02:
                out.append(c)
        return out

    def _stack(self) -> Script:
        held = self._held_block()
        candidates = self._table_blocks(exclude=held)
        if not candidates:
            return False
        tcp = self.tcp
        base = min(candidates, key=lambda c: np.linalg.norm(self.block_pos(c)[:2] - tcp[:2]))
        pos = self.block_pos(base)
        # Align the held block with the one below so it rests flat on it.
        yaw = self._grasp_yaw(self.block_yaw(base))
        z_top = pos[2] + 0.04
        yield from self._goto_above(pos[:2], z_top - GRASP_BELOW_CENTRE + 0.05, yaw, CLOSE)
        yield from self._move(np.array([*pos[:2], z_top - GRASP_BELOW_CENTRE + 0.008]), yaw=yaw, gripper=CLOSE,
                              tol=0.005, max_steps=30)
        yield from self._hold(4, OPEN)
        yield from self._move(self.tcp + [0, 0, 0.06], gripper=OPEN, tol=0.01)
        return True

    def _unstack(self) -> Script:
        yield from self._free_hands()
        top = max(COLORS, key=lambda c: self.block_pos(c)[2])
        yield from self._grasp(top)
        yield from self._move(self.tcp + [0, 0, 0.08], gripper=CLOSE, tol=0.008)
        return True

    def _button(self) -> Script:
        yield from self._free_hands()
        x, y = self.layout.button_x + self._offset(0.01), BUTTON_Y + self._offset(0.01)
        start_led = self._scene[5]
        yield from self._goto_above(np.array([x, y]), BUTTON_TOP_Z - TIP_ABOVE_TCP + 0.04, NEUTRAL_YAW, CLOSE)
        for _ in range(40):
            if self._scene[5] != start_led:
                break
            yield self._action(np.array([x, y, BUTTON_TOP_Z - TIP_ABOVE_TCP - 0.03]), None, CLOSE, precise=True,
                               speed=0.5)
        yield from self._move(np.array([x, y, BUTTON_TOP_Z - TIP_ABOVE_TCP + 0.06]), gripper=CLOSE, tol=0.01)
        return True

    def _switch(self, turn_on: bool) -> Script:
        """Slide the switch lever along the tilted face with the fingers pointing into the face.

        A gripper pointing down cannot push the lever's lower face (its fingers would pass
        through the lever), so the hand tilts until the closed fingers stand perpendicular to the
        face, like a finger on a light switch: below the lever to push it up (on), above it to
        push it down (off).
        """
        yield from self._free_hands()
        x = self.layout.switch_x + self._offset(0.02)
        joint = float(self._scene[3])
        lever_u = SWITCH_U + joint
        # TCP u beside the lever (finger half width and a little clearance), its n so the tips
        # stop just short of the face, and where it ends after sliding the lever.
        side = -1.0 if turn_on else 1.0
        u_start = lever_u + side * (SWITCH_LEVER_HALF_U + FINGER_HALF_WIDTH + 0.006)
        u_end = u_start + (SWITCH_RANGE - joint + 0.008 if turn_on else -(joint + 0.008))
        n_press = SWITCH_TIP_GAP - TIP_ABOVE_TCP
        out = self._slant_point(x, u_start, FACE_STANDOFF_N)
        # Tilting on the way: the tilted hand keeps the wrist nearer the robot, so the standoff
        # above the lever is reachable in all scenes.
        yield from self._tilted_move(out, tol=0.01)
        yield from self._tilted_move(self._slant_point(x, u_start, n_press), tol=0.006)
        yield from self._tilted_move(self._slant_point(x, u_end, n_press), tol=0.006,
                                     speed=min(self.speed, 0.6), max_steps=45)
        yield from self._tilted_move(self._slant_point(x, u_end, FACE_STANDOFF_N), tol=0.01)
        yield from self._move(self.tcp + [0, -0.03, 0.03], gripper=CLOSE, tol=0.015)
        return True

    def _slant_point(self, x: float, u: float, n: float) -> np.ndarray:
        """World point at x, u up the tilted cabinet face and n out of it."""
        return np.array([x, *_slant(u, n)])

    def _tilted_hold(self, steps: int, gripper: float) -> Script:
        """`_hold` with the fingers kept perpendicular to the cabinet face."""
        yield from self._pose_hold(steps, FACE_ORN, gripper)
        return True

    def _tilted_move(self, goal: np.ndarray, tol: float, gripper: float = CLOSE, speed: float | None = None,
                     max_steps: int = MAX_WAYPOINT_STEPS) -> Script:
        """Like `_move`, but with the fingers perpendicular to the tilted cabinet face."""
        return (yield from self._pose_move(goal, FACE_ORN, gripper, tol=tol, speed=speed, max_steps=max_steps))

    def _push_into_drawer(self) -> Script:
        """Push the table block off the front edge into the open drawer below."""
        yield from self._free_hands()
        color = next(iter(self._table_blocks()), None)
        if color is None:
            return False
        pos = self.block_pos(color)
        lay = self.layout
        # Drawer tray spans drawer_x +- 0.18: first slide the block over it along x if needed.
        lo, hi = lay.drawer_x - 0.12, lay.drawer_x + 0.12
        if not lo <= pos[0] <= hi:
            sign = 1.0 if pos[0] < lo else -1.0
            reach = 0.5 * max(self.block_size(color)[:2]) + 0.035
            start = np.array([pos[0] - sign * reach, pos[1], BLOCK_Z - 0.01 - TIP_ABOVE_TCP])
            if abs(start[0]) > PUSH_REACH_X:
                # The fingers cannot get past the block's far side at table height: carry it over
                # instead (the oracle only asks that it leaves the table top for the drawer).
                yield from self._grasp(color)
                yield from self._place_in_drawer()
                return True
            yield from self._goto_above(start[:2], start[2] + 0.06, NEUTRAL_YAW, CLOSE)
            yield from self._move(start, gripper=CLOSE, tol=0.006)
            target_x = np.clip(pos[0], lo, hi) + sign * 0.02
            yield from self._move(start + [target_x - pos[0], 0, 0], gripper=CLOSE, tol=0.006,
                                  speed=min(self.speed, 0.6))
            yield from self._move(self.tcp + [0, 0, 0.06], gripper=CLOSE, tol=0.01)
            pos = self.block_pos(color)
        reach = 0.5 * max(self.block_size(color)[:2]) + 0.035
        if pos[1] + reach > PUSH_BEHIND_MAX_Y:
            # No room for the fingers between the block and the cabinet: drag it forward first.
            yield from self._drag(color, (pos[0], PUSH_BEHIND_MAX_Y - reach))
            pos = self.block_pos(color)
        start = np.array([pos[0], pos[1] + reach, BLOCK_Z - 0.01 - TIP_ABOVE_TCP])
        yield from self._goto_above(start[:2], start[2] + 0.08, NEUTRAL_YAW, CLOSE)
        yield from self._move(start, gripper=CLOSE, tol=0.006)
        goal = np.array([pos[0], DRAWER_FRONT_Y - 0.02, start[2]])
        yield from self._move(goal, gripper=CLOSE, tol=0.006, speed=min(self.speed, 0.6))
        yield from self._move(self.tcp + [0, 0, 0.08], gripper=CLOSE, tol=0.01)
        return True


def make_expert(task: str, scene: str, rng: np.random.Generator | None = None, noise: float = 0.0,
                speed: float | None = None, offsets: float = 1.0) -> Expert:
    """Build the scripted expert of one task.

    Args:
        task: one of `rftf_gym.tasks.TASK_NAMES`.
        scene: ``"A"``, ``"B"``, ``"C"`` or ``"D"``.
        rng: randomness for speed, offsets and noise.
        noise: std of Gaussian action noise in free-space moves (action units).
        speed: max translation action in (0, 1]; None draws one per instruction.
        offsets: scale of random approach offsets (0 disables).

    Returns:
        An `Expert`; call ``act(obs)`` every step.
    """
    return Expert(task, scene, rng=rng, noise=noise, speed=speed, offsets=offsets)


class ExpertPolicy:
    """The experts behind the policy interface of `rftf_gym.policies` (``reset`` / ``act``).

    The instruction picks the task (train paraphrases and eval sentences are both understood);
    the observation must hold ``robot_obs`` and ``scene_obs``.

    Args:
        scene: the scene the experts plan in.
        seed: seed of the experts' randomness.
        noise: action noise std, see `Expert`.
    """

    def __init__(self, scene: str = "D", seed: int = 0, noise: float = 0.0) -> None:
        if scene not in LAYOUTS:
            raise ValueError(f"scene must be one of {tuple(LAYOUTS)}, got {scene!r}")
        self.scene = scene
        self.noise = float(noise)
        self.seed(seed)

    def seed(self, seed: int) -> None:
        """Restart the experts' random stream."""
        self.rng = np.random.default_rng(seed)
        self._expert: Expert | None = None

    def reset(self) -> None:
        """Start a new instruction: the next `act` builds the expert of its task."""
        self._expert = None

    def act(self, obs: Mapping[str, Any], instruction: str) -> np.ndarray:
        """The expert's action for this observation and instruction."""
        task = task_for_instruction(instruction)
        if self._expert is None or self._expert.task != task:
            self._expert = make_expert(task, self.scene, self.rng, noise=self.noise)
        return self._expert.act(obs)


# ---------------------------------------------------------------------------------------------
# Start states: random layouts where a task applies, including those no layout sampler gives.
# ---------------------------------------------------------------------------------------------
# Tasks whose condition needs the robot to hold a block: reached by running a lift expert first.
_NEEDS_GRASP = ("place_in_slider", "place_in_drawer", "stack_block")


def _explicit_scene(task: str, scene_obs: np.ndarray, layout: SceneLayout, rng: np.random.Generator) -> np.ndarray:
    """Edit a random layout so a block is in the open drawer or two blocks are stacked."""
    scene_obs = scene_obs.copy()
    if task.startswith("lift_") and task.endswith("_drawer"):
        # The block rests on the tray floor where a top-down hand could have put it: the hand that
        # grasps it fits between the table's front edge and the drawer front.
        color = task.split("_")[1]
        joint = float(rng.uniform(0.16, DRAWER_RANGE))
        scene_obs[1] = joint
        for _ in range(100):
            yaw = float(rng.uniform(-np.pi, np.pi))
            reach = _drawer_hand_reach(_drawer_grasp_yaw(yaw, layout.block_size(color)[0])) + 0.005
            lo, hi = DRAWER_INNER_Y[0] - joint + reach, DRAWER_FRONT_Y - reach
            if lo < hi:
                break
        i = 6 + 6 * COLORS.index(color)
        scene_obs[i:i + 6] = [layout.drawer_x + rng.uniform(-0.1, 0.1), rng.uniform(lo, max(lo, hi)),
                              DRAWER_FLOOR_Z + 0.02, 0.0, 0.0, yaw]
    else:  # unstack_block: one block on another, both on the table
        bottom, top = rng.choice(len(COLORS), size=2, replace=False)
        (x0, y0), (x1, y1) = layout.surfaces["table"]
        x, y, yaw = rng.uniform(x0 + 0.05, x1 - 0.05), rng.uniform(y0 + 0.02, y1 - 0.02), rng.uniform(-np.pi, np.pi)
        # Keep the third block out of the way: park it on the shelf's open half if it is on the table.
        for k in range(3):
            j = 6 + 6 * k
            if np.hypot(scene_obs[j] - x, scene_obs[j + 1] - y) < 0.12 and k not in (bottom, top):
                scene_obs[j:j + 3] = [x + (0.15 if x < 0.5 * (x0 + x1) else -0.15), y, BLOCK_Z]
        for k, z in ((bottom, BLOCK_Z), (top, BLOCK_Z + 0.0398)):
            j = 6 + 6 * int(k)
            scene_obs[j:j + 6] = [x, y, z, 0.0, 0.0, yaw + (0.0 if k == bottom else rng.uniform(-0.2, 0.2))]
    return scene_obs


def _wedged_block(env: Any) -> bool:
    """A block over the shelf that counts as on the table: sampled with its footprint in the
    cabinet's side wall, it touches base_link and not the shelf (a state no play data reaches)."""
    state = env.symbolic_state()
    blocks = env.sim.get_info()["scene_info"]["movable_objects"]
    return any(state[f"{c}_block"] == "table" and blocks[f"block_{c}"]["current_pos"][1] > SHELF_Y[0] for c in COLORS)


def _infeasible_push(env: Any, task: str, scene_obs: np.ndarray) -> bool:
    """Push start states that no expert, human or policy can finish (SPEC 2.3): a push of more
    than 0.1 m would shove the block's centre off the table top's end (x = +-0.44), or, for
    push_into_drawer, no block touches the table top alone (one leaning on the door never counts)."""
    if task == "push_into_drawer":
        info = env.sim.get_info()
        table = info["scene_info"]["fixed_objects"]["table"]
        alone = {(int(table["uid"]), int(table["links"]["base_link"]))}
        return not any({(int(c[2]), int(c[4])) for c in block["contacts"]} == alone
                       for block in info["scene_info"]["movable_objects"].values())
    if not task.startswith("push_"):
        return False
    _, color, _, direction = task.split("_")
    x = scene_obs[6 + 6 * COLORS.index(color)]
    return abs(x + (0.11 if direction == "right" else -0.11)) > TABLE_HALF_X - 0.02


def reset_to_task(env: Any, task: str, rng: np.random.Generator, tries: int = 20) -> tuple[dict, dict]:
    """Reset a ``RFTF-CALVIN-v0`` env to a random start state where ``task`` applies.

    Layouts come from the env's own sampler (which retries until the task applies), less, for
    tasks on table blocks, those where a block over the shelf is wedged in the cabinet wall (and so
    counts as on the table) and, for pushes, those no one could finish (see `_infeasible_push`). Tasks that need the robot to
    hold a block start after a successful ``lift_<color>_block_table`` by the expert (chained with
    ``options["continue"]``, as in evaluation); a block in the drawer (where a top-down hand fits)
    and a stack are written into a random layout as an explicit ``scene_obs``.

    Args:
        env: the env (wrapped or not); it must observe ``robot_obs`` and ``scene_obs``.
        task: the task to start.
        rng: randomness for seeds, layouts and the lift expert.
        tries: attempts before giving up.

    Returns:
        ``(obs, info)`` of the reset that starts ``task``.

    Raises:
        RuntimeError: no valid start state in ``tries`` attempts.
    """
    base = env.unwrapped
    layout = LAYOUTS[base.scene]
    for _ in range(tries):
        seed = int(rng.integers(2**31))
        if task in _NEEDS_GRASP:
            color = COLORS[int(rng.integers(3))]
            lift = f"lift_{color}_block_table"
            obs, _ = env.reset(seed=seed, options={"task": lift})
            expert = make_expert(lift, base.scene, rng)
            for _ in range(200):
                obs, _, terminated, truncated, info = env.step(expert.act(obs))
                if terminated or truncated:
                    break
            if not info.get("success") or task not in base.applicable_tasks():
                continue
            return env.reset(options={"continue": True, "task": task})
        if task == "unstack_block" or (task.startswith("lift_") and task.endswith("_drawer")):
            obs, _ = env.reset(seed=seed)
            scene_obs = _explicit_scene(task, obs["scene_obs"], layout, rng)
            obs, info = env.reset(options={"robot_obs": obs["robot_obs"], "scene_obs": scene_obs, "task": task})
            if task in base.applicable_tasks():
                return obs, info
            continue
        obs, info = env.reset(seed=seed, options={"task": task})
        table_block_task = task.startswith(("rotate_", "push_")) or task.endswith("_table")
        wedged = table_block_task and _wedged_block(base)
        if not wedged and not _infeasible_push(base, task, obs["scene_obs"]):
            return obs, info
    raise RuntimeError(f"no valid start state for {task!r} in scene {base.scene} after {tries} tries")
