"""`EmbeddedPlayTable`: the project's own pybullet re-creation of the CALVIN play table.

It implements `rftf_gym.backend.PlayTableBackend` with CALVIN's conventions
(`rftf_gym.conventions`): 240 Hz physics, 8 substeps per 30 Hz control step, ``robot_obs`` (15),
``scene_obs`` (24, blocks always red, blue, pink), the official ``get_info()`` structure, and
lights driven by the button (toggle on each press edge) and the switch (on while above half its
travel).

Determinism: the world is built once and its state saved with ``p.saveState``; every reset first
moves every body apart and runs one physics step (`EmbeddedPlayTable._flush_contacts`), then
restores that snapshot (bodies, velocities and pybullet's contact cache) and applies the requested
state, so an explicit-state reset followed by the same actions replays bit for bit, whatever ran
before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pybullet as p

from rftf_gym.conventions import (
    CAMERAS,
    COLORS,
    CONTROL_HZ,
    EVAL_BLOCK_YAW_BAND,
    IMAGE_HW,
    PHYSICS_HZ,
    SCENES,
)
from rftf_gym.sim.cameras import CompositedStaticCamera, GripperCamera
from rftf_gym.sim.layout import (
    BLOCK_COLORS,
    BLOCK_FRICTION,
    BLOCK_MASS,
    BUTTON_THRESHOLD,
    DOOR_WIDTH,
    LAYOUTS,
    ROBOT_BASE_POS,
    SHELF_Y,
    SLANT_DIR,
    SLANT_FOOT,
    STATIC_LINKS,
    SWITCH_THRESHOLD,
    SceneLayout,
    drawer_tray_boxes,
    sample_articulation,
    table_urdf,
)
from rftf_gym.sim.robot import ARM_JOINTS, FINGER_JOINTS, Panda, panda_urdf_path
from rftf_gym.sim.urdf_cache import write_cached_urdf
from rftf_gym.state_check import overlap_problems

SUBSTEPS = PHYSICS_HZ // CONTROL_HZ  # calvin_env play_table_env: action_repeat from control_freq.
SETTLE_SUBSTEPS = SUBSTEPS  # physics substeps run after a reset (see EmbeddedPlayTable.reset).
SURFACE_Z = 0.46  # z of block centres in the official scene yaml `surfaces`.
# Passive joints (calvin_env scene/objects): the button springs back (Button: position control
# to 0, force 4); the switch, drawer and door hold where left (Switch and Door: a zero-velocity
# motor of force 4 acts as friction).
BUTTON_SPRING_FORCE = 4.0
SWITCH_FRICTION = 4.0
DRAWER_FRICTION = 4.0
DOOR_FRICTION = 4.0
# Official light colours (conf/scene/*.yaml lights): yellow bulb, green LED; white when off.
LIGHT_ON = {"lightbulb": (1.0, 1.0, 0.0, 1.0), "led": (0.0, 1.0, 0.0, 1.0)}
LIGHT_OFF = (0.92, 0.92, 0.92, 1.0)
# Random blocks on the shelf: yaw within pi/2 +- EVAL_BLOCK_YAW_BAND (the official evaluation
# band), and centres at least this far from the edges of the widest opening on their half, a side panel and
# the door at its end stop (the slider_right evaluation spot is 0.0897 m from its panel in scenes
# A/D; in C, where the door leaves 0.24 m, grasps of blocks nearer the door's edge fail).
SHELF_PANEL_CLEARANCE = 0.085
# ... and with their whole footprint between the sliding door and the back wall: the door runs on
# the tilted front face (rftf_gym.sim.layout), at a resting block's top 0.023 m behind the face's
# foot, so a block reaching past it is pushed by the door into a side panel and stalls it.
SHELF_WALL_CLEARANCE = 0.003


def _shelf_y_range(size: tuple[float, float, float]) -> tuple[float, float]:
    """Centre y range of a shelf block whose footprint keeps off the sliding door and the back wall.

    Args:
        size: block size (x, y, z).

    Returns:
        (lowest, highest) centre y, for any yaw in the shelf band.
    """
    sx, sy, sz = size
    # Reach of the footprint along y at yaw pi/2 + d: (sx cos d + sy sin d) / 2, which grows with
    # |d| up to atan(sy / sx) > EVAL_BLOCK_YAW_BAND for every block size, so the band's edge is the worst.
    half_y = 0.5 * (sx * np.cos(EVAL_BLOCK_YAW_BAND) + sy * np.sin(EVAL_BLOCK_YAW_BAND))
    door_y = SLANT_FOOT[0] + (SURFACE_Z + sz / 2 - SLANT_FOOT[1]) * SLANT_DIR[1] / SLANT_DIR[2]
    return float(door_y + half_y + SHELF_WALL_CLEARANCE), float(SHELF_Y[1] - half_y - SHELF_WALL_CLEARANCE)


def sample_scene_obs(layout: SceneLayout, rng: np.random.Generator) -> np.ndarray:
    """A random scene_obs of one scene: joints, lights and non-overlapping blocks on the surfaces.

    Both backends draw random layouts with this (`EmbeddedPlayTable.reset`,
    `rftf_gym.calvin_backend.OfficialPlayTable.reset`), so the same generator state gives the same
    layout on either.

    Args:
        layout: the scene.
        rng: random generator.

    Returns:
        scene_obs (24,), blocks red, blue, pink.
    """
    lay = layout
    shelf_lo, shelf_hi = lay.shelf_x
    obs = sample_articulation(lay, rng)
    # The widest opening on each half: the door (it moves -x as its joint grows) at either stop.
    openings = {"slider_left": (shelf_lo, lay.door_x0),
                "slider_right": (lay.door_x0 - lay.slider_range + DOOR_WIDTH, shelf_hi)}
    placed: list[tuple[float, float, float]] = []  # x, y, radius
    surfaces = list(lay.surfaces)
    for color in COLORS:
        sx, sy, _ = lay.block_size(color)
        radius = 0.5 * float(np.hypot(sx, sy))
        shelf_y = _shelf_y_range(lay.block_size(color))
        for _ in range(1000):
            surface = surfaces[int(rng.integers(len(surfaces)))]
            (x0, y0), (x1, y1) = lay.surfaces[surface]
            if surface.startswith("slider"):
                # CALVIN's shelf blocks sit front-facing (evaluation resets: yaw pi/2 +- pi/8,
                # calvin_agent/evaluation/utils.py) and the Panda hand (0.2 m across its fingers) only fits through the
                # opening when the block keeps clear of the opening's edges.
                open_lo, open_hi = openings[surface]
                x0, x1 = max(x0, open_lo + SHELF_PANEL_CLEARANCE), min(x1, open_hi - SHELF_PANEL_CLEARANCE)
                y0, y1 = max(y0, shelf_y[0]), min(y1, shelf_y[1])
            x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
            if all(np.hypot(x - px, y - py) > radius + pr + 0.005 for px, py, pr in placed):
                break
        placed.append((x, y, radius))
        # One yaw draw per block, as before the shelf band: the random stream is unchanged.
        if surface.startswith("slider"):
            yaw = np.pi / 2 + rng.uniform(-EVAL_BLOCK_YAW_BAND, EVAL_BLOCK_YAW_BAND)
        else:
            yaw = rng.uniform(-np.pi, np.pi)
        obs += [x, y, SURFACE_Z, 0.0, 0.0, yaw]
    return np.asarray(obs, dtype=float)


class EmbeddedPlayTable:
    """The CALVIN play table of one scene, built from primitives, with pybullet_data's Panda.

    Args:
        scene: ``"A"``, ``"B"``, ``"C"`` or ``"D"``.
        cameras: camera name (``"static"``, ``"gripper"``) -> (width, height); None or empty
            renders nothing in `get_obs`.
        depth: `get_obs` also returns ``depth_<camera>`` for each camera: float32 (H, W) in
            metres, from the same render's z-buffer (`rftf_gym.sim.cameras.zbuffer_to_depth`).

    Raises:
        ValueError: unknown scene or camera.
    """

    def __init__(self, scene: str = "D", cameras: dict[str, tuple[int, int]] | None = None,
                 depth: bool = False) -> None:
        if scene not in SCENES:
            raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")
        self.scene = scene
        self.layout: SceneLayout = LAYOUTS[scene]
        self.cameras = dict(cameras or {})
        for name in self.cameras:
            if name not in CAMERAS:
                raise ValueError(f"camera must be one of {CAMERAS}, got {name!r}")
        self.depth = bool(depth)
        self.client = p.connect(p.DIRECT)
        p.setGravity(0, 0, -9.81, physicsClientId=self.client)
        p.setTimeStep(1.0 / PHYSICS_HZ, physicsClientId=self.client)
        # Speed (measured here): pyramid friction instead of the friction cone and an early exit
        # of the contact solver once converged take a step from ~130 us to ~45 us, with blocks
        # still resting and grasped stably. The exit at a residual of 1e-2 rather than 1e-4 matters
        # once the long fingers press on the table or the cabinet, where the solver otherwise runs
        # all its 50 iterations: ~19 % less CPU per step without cameras, open-loop courses within
        # 4.5 mm of those at 1e-4 (BENCHMARKS.md, "Speed after the matching").
        p.setPhysicsEngineParameter(enableConeFriction=0, solverResidualThreshold=1e-2, deterministicOverlappingPairs=1,
                                    physicsClientId=self.client)
        self._build_table()
        self._build_blocks()
        self.robot = Panda(self.client)
        self.robot.reset()
        self._cams: dict[str, Any] = {}
        # get_obs of the current state; reset and step clear it (the env asks for the state
        # several times per reset, and each ask would otherwise render both cameras again).
        self._obs_cache: dict[str, np.ndarray] | None = None
        self.lights = {"lightbulb": 0, "led": 0}
        self._button_was_pressed = False
        self._init_state = p.saveState(physicsClientId=self.client)

    # ------------------------------------------------------------------ world
    def _build_table(self) -> None:
        path = write_cached_urdf(f"table_{self.scene}.urdf", table_urdf(self.layout))
        self.table_uid = p.loadURDF(path, (0, 0, 0), (0, 0, 0, 1), useFixedBase=True, physicsClientId=self.client)
        self.links = {"base_link": -1}
        self.joints: dict[str, int] = {}
        for j in range(p.getNumJoints(self.table_uid, physicsClientId=self.client)):
            info = p.getJointInfo(self.table_uid, j, physicsClientId=self.client)
            self.links[info[12].decode()] = j
            self.joints[info[1].decode()] = j
        # scene_obs order (door, drawer, button, switch), and the two joints that drive the lights.
        self._table_joint_ids = tuple(self.joints[n] for n in ("base__slide", "base__drawer", "base__button",
                                                               "base__switch"))
        self._light_joint_ids = (self.joints["base__button"], self.joints["base__switch"])
        uid = self.table_uid
        for name, force in (("base__slide", DOOR_FRICTION), ("base__drawer", DRAWER_FRICTION),
                            ("base__switch", SWITCH_FRICTION)):
            p.setJointMotorControl2(uid, self.joints[name], p.VELOCITY_CONTROL, targetVelocity=0.0, force=force,
                                    physicsClientId=self.client)
        p.setJointMotorControl2(uid, self.joints["base__button"], p.POSITION_CONTROL, targetPosition=0.0,
                                force=BUTTON_SPRING_FORCE, physicsClientId=self.client)

    def _build_blocks(self) -> None:
        self.blocks: dict[str, int] = {}
        for i, color in enumerate(COLORS):
            half = [s / 2 for s in self.layout.block_size(color)]
            col = p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=self.client)
            vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=BLOCK_COLORS[color],
                                      physicsClientId=self.client)
            uid = p.createMultiBody(BLOCK_MASS, col, vis, basePosition=(0.2 * i, -0.1, SURFACE_Z),
                                    physicsClientId=self.client)
            p.changeDynamics(uid, -1, lateralFriction=BLOCK_FRICTION, spinningFriction=0.001, physicsClientId=self.client)
            self.blocks[color] = uid

    # ------------------------------------------------------------------ reset
    def reset(self, robot_obs: np.ndarray | None = None, scene_obs: np.ndarray | None = None,
              rng: np.random.Generator | None = None) -> None:
        """Reset to an explicit state, or to the neutral robot and a random layout drawn from rng.

        Args:
            robot_obs: CALVIN robot_obs (15); joints from [7:14], gripper width [6], gripper
                action [14]. None: neutral pose, gripper open.
            scene_obs: CALVIN scene_obs (24), blocks red, blue, pink. None: random layout.
            rng: random generator for the layout (a fresh unseeded one when None).

        Raises:
            ValueError: an explicit scene_obs puts a block into a table part or another block
                (`rftf_gym.state_check.overlap_problems`).
        """
        self._obs_cache = None
        self._flush_contacts()
        p.restoreState(self._init_state, physicsClientId=self.client)
        if robot_obs is None:
            self.robot.reset()
        else:
            robot_obs = np.asarray(robot_obs, dtype=float)
            self.robot.reset(robot_obs[7:14], float(robot_obs[6]), float(robot_obs[14]))
        explicit = scene_obs is not None
        if scene_obs is None:
            scene_obs = self.sample_scene_obs(rng if rng is not None else np.random.default_rng())
        self._apply_scene_obs(np.asarray(scene_obs, dtype=float))
        if explicit:
            # Before any physics step: overlapping bodies would be flung apart by the solver.
            overlaps = overlap_problems(self.client, self.get_info())
            if overlaps:
                raise ValueError("impossible reset state: " + "; ".join(overlaps))
        # calvin_env's reset ends with a stepSimulation: contact points (read by the oracle and
        # the symbolic state at an instruction's start) exist only after the solver ran. Our box
        # contacts appear only on touch, and the official evaluation spots put shelf blocks 1 mm
        # above the plank (z 0.4610, calvin_agent/evaluation/utils.py), a 3.4-substep fall: settle
        # for one control period so every resting block touches its surface at the start.
        for _ in range(SETTLE_SUBSTEPS):
            p.stepSimulation(physicsClientId=self.client)

    def _flush_contacts(self) -> None:
        """Separate every body and run collision detection, so no contact of the last episode
        survives in pybullet's pair cache or manifolds (they would change the solver's warm start),
        then one physics step in that state: it leaves the solver holding nothing of the last
        episode either. Without that step, a chain run after other chains ended centimetres away
        from the same chain run first once the solver stopped at a residual of 1e-2 (at 1e-4 the
        chains agreed to the bit); with it they agree to the bit (tests/test_evaluate.py). The
        restored snapshot then overwrites every body this step moved."""
        c = self.client
        self.robot.reset()
        for i, uid in enumerate(self.blocks.values()):
            p.resetBasePositionAndOrientation(uid, (5.0 + i, 5.0, 5.0), (0, 0, 0, 1), physicsClientId=c)
        for j in self._table_joint_ids:
            p.resetJointState(self.table_uid, j, 0.0, 0.0, physicsClientId=c)
        p.performCollisionDetection(physicsClientId=c)
        p.stepSimulation(physicsClientId=c)

    def _apply_scene_obs(self, scene_obs: np.ndarray) -> None:
        uid, c = self.table_uid, self.client
        for k, name in enumerate(("base__slide", "base__drawer", "base__button", "base__switch")):
            p.resetJointState(uid, self.joints[name], float(scene_obs[k]), 0.0, physicsClientId=c)
        # The bulb follows the switch; the LED keeps the toggled state given (calvin_env scene/objects/light.py).
        self.lights["lightbulb"] = int(scene_obs[3] > SWITCH_THRESHOLD)
        self.lights["led"] = int(scene_obs[5] > 0.5)
        self._button_was_pressed = bool(scene_obs[2] > BUTTON_THRESHOLD)
        for i, color in enumerate(COLORS):
            pose = scene_obs[6 + 6 * i: 12 + 6 * i]
            p.resetBasePositionAndOrientation(self.blocks[color], pose[:3].tolist(),
                                              p.getQuaternionFromEuler(pose[3:6].tolist()), physicsClientId=c)
            p.resetBaseVelocity(self.blocks[color], (0, 0, 0), (0, 0, 0), physicsClientId=c)
        self._paint_lights()

    def sample_scene_obs(self, rng: np.random.Generator) -> np.ndarray:
        """A random scene_obs of this scene (`sample_scene_obs`)."""
        return sample_scene_obs(self.layout, rng)

    # ------------------------------------------------------------------- step
    def step(self, action: np.ndarray, action_mode: str = "relative") -> None:
        """Apply one 30 Hz control step (8 physics substeps at 240 Hz).

        Args:
            action: 7-d action, see `Panda.apply_action`.
            action_mode: ``"relative"`` or ``"absolute"``.
        """
        self._obs_cache = None
        self.robot.apply_action(action, action_mode)
        for _ in range(SUBSTEPS):
            p.stepSimulation(physicsClientId=self.client)
        self._update_lights()

    def _update_lights(self) -> None:
        button, switch = (s[0] for s in p.getJointStates(self.table_uid, self._light_joint_ids,
                                                         physicsClientId=self.client))
        pressed = button > BUTTON_THRESHOLD
        changed = False
        if pressed and not self._button_was_pressed:
            self.lights["led"] = 1 - self.lights["led"]
            changed = True
        self._button_was_pressed = pressed
        bulb = int(switch > SWITCH_THRESHOLD)
        if bulb != self.lights["lightbulb"]:
            self.lights["lightbulb"] = bulb
            changed = True
        if changed:
            self._paint_lights()

    def _paint_lights(self) -> None:
        for name, link in (("lightbulb", "light_link"), ("led", "led_link")):
            color = LIGHT_ON[name] if self.lights[name] else LIGHT_OFF
            p.changeVisualShape(self.table_uid, self.links[link], rgbaColor=color, physicsClientId=self.client)

    # ------------------------------------------------------------ observation
    def _joint_states(self) -> list[float]:
        states = p.getJointStates(self.table_uid, self._table_joint_ids, physicsClientId=self.client)
        return [s[0] for s in states]

    def scene_obs(self) -> np.ndarray:
        """CALVIN scene_obs (24): door, drawer, button, switch, lightbulb, LED, red/blue/pink poses."""
        obs = [*self._joint_states(), float(self.lights["lightbulb"]), float(self.lights["led"])]
        for color in COLORS:
            pos, orn = p.getBasePositionAndOrientation(self.blocks[color], physicsClientId=self.client)
            obs += [*pos, *p.getEulerFromQuaternion(orn)]
        return np.asarray(obs, dtype=float)

    def get_obs(self) -> dict[str, np.ndarray]:
        """``robot_obs``, ``scene_obs`` and ``rgb_<camera>`` (uint8 HxWx3) for each configured camera,
        and ``depth_<camera>`` (float32 HxW, metres) too when built with ``depth=True``."""
        if self._obs_cache is None:
            obs = {"robot_obs": self.robot.get_obs(), "scene_obs": self.scene_obs()}
            for name in self.cameras:
                if self.depth:
                    obs[f"rgb_{name}"], obs[f"depth_{name}"] = self.render_rgbd(name)
                else:
                    obs[f"rgb_{name}"] = self.render(name)
            self._obs_cache = obs
        return {key: value.copy() for key, value in self._obs_cache.items()}

    def render(self, camera: str = "static") -> np.ndarray:
        """One uint8 HxWx3 image from a camera, at its configured (else the official) size.

        Args:
            camera: ``"static"`` or ``"gripper"``.

        Returns:
            The image.

        Raises:
            ValueError: unknown camera.
        """
        return self._render(camera, depth=False)

    def render_rgbd(self, camera: str = "static") -> tuple[np.ndarray, np.ndarray]:
        """As `render`, with the depth image: float32 HxW, metres along the view axis (CALVIN's
        ``depth_<camera>``).

        Raises:
            ValueError: unknown camera.
        """
        return self._render(camera, depth=True)

    def _render(self, camera: str, depth: bool) -> Any:
        if camera not in CAMERAS:
            raise ValueError(f"camera must be one of {CAMERAS}, got {camera!r}")
        if camera not in self._cams:
            if camera in self.cameras:
                width, height = self.cameras[camera]
            else:
                height, width = IMAGE_HW[camera]
            if camera == "static":
                self._cams[camera] = self._make_static_camera(width, height)
            else:
                self._cams[camera] = GripperCamera(self.client, width, height, self.robot.hand_pose)
        cam = self._cams[camera]
        if camera == "gripper":
            return cam.render_rgbd() if depth else cam.render()
        c = self.client
        robot_joints = [*ARM_JOINTS, *FINGER_JOINTS]
        robot_q = dict(zip(robot_joints, (s[0] for s in p.getJointStates(self.robot.uid, robot_joints,
                                                                         physicsClientId=c))))
        table_q = dict(zip(self._table_joint_ids, self._joint_states()))
        poses = [p.getBasePositionAndOrientation(self.blocks[color], physicsClientId=c) for color in COLORS]
        colors = {self.links[link]: LIGHT_ON[name] if self.lights[name] else LIGHT_OFF
                  for name, link in (("lightbulb", "light_link"), ("led", "led_link"))}
        return (cam.render_rgbd if depth else cam.render)(robot_q, table_q, poses, colors)

    def _make_static_camera(self, width: int, height: int) -> CompositedStaticCamera:
        moving = frozenset(self.links) - STATIC_LINKS
        background = write_cached_urdf(f"table_{self.scene}_static.urdf", table_urdf(self.layout, STATIC_LINKS))
        foreground = write_cached_urdf(f"table_{self.scene}_moving.urdf", table_urdf(self.layout, moving, with_tray=False))
        blocks = [(tuple(s / 2 for s in self.layout.block_size(color)), BLOCK_COLORS[color]) for color in COLORS]
        drawer = (self.joints["base__drawer"], (self.layout.drawer_x, 0.0, 0.0), (0.0, -1.0, 0.0))
        return CompositedStaticCamera(width, height, background, foreground, panda_urdf_path(), ROBOT_BASE_POS,
                                      blocks, drawer_tray_boxes(self.layout), drawer)

    def _contacts(self, uid: int) -> tuple:
        return tuple(p.getContactPoints(bodyA=uid, physicsClientId=self.client))

    def get_info(self) -> dict[str, Any]:
        """The official ``PlayTableSimEnv.get_info()`` structure (see `rftf_gym.backend`)."""
        c = self.client
        robot_info = self.robot.get_info()
        robot_info["contacts"] = self._contacts(self.robot.uid)
        movable = {}
        for color in COLORS:
            uid = self.blocks[color]
            pos, orn = p.getBasePositionAndOrientation(uid, physicsClientId=c)
            lin, ang = p.getBaseVelocity(uid, physicsClientId=c)
            movable[f"block_{color}"] = {"uid": uid, "current_pos": pos, "current_orn": orn, "current_lin_vel": lin,
                                         "current_ang_vel": ang, "contacts": self._contacts(uid)}
        door, drawer, button, switch = self._joint_states()
        scene_info = {
            "fixed_objects": {"table": {"uid": self.table_uid, "links": dict(self.links),
                                        "contacts": self._contacts(self.table_uid)}},
            "movable_objects": movable,
            "doors": {"base__slide": {"current_state": door}, "base__drawer": {"current_state": drawer}},
            "buttons": {"base__button": {"joint_state": button, "logical_state": self.lights["led"]}},
            "switches": {"base__switch": {"joint_state": switch, "logical_state": self.lights["lightbulb"]}},
            "lights": {"lightbulb": {"logical_state": self.lights["lightbulb"]},
                       "led": {"logical_state": self.lights["led"]}},
        }
        return {"robot_info": robot_info, "scene_info": scene_info}

    def slider_mid_x(self) -> float:
        """World x that splits the shelf into its ``slider_left`` and ``slider_right`` halves."""
        return self.layout.slider_mid_x

    def close(self) -> None:
        """Free the physics clients."""
        for cam in self._cams.values():
            if isinstance(cam, CompositedStaticCamera):
                cam.close()
        self._cams = {}
        if self.client >= 0 and p.isConnected(self.client):
            p.disconnect(self.client)
        self.client = -1
