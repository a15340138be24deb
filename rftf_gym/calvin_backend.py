"""`OfficialPlayTable`: the toolkit's backend over the official CALVIN simulator.

This is the only module that imports ``calvin_env``, hydra, omegaconf or the old ``gym``, and it
does so inside the constructor, so ``import rftf_gym.calvin_backend`` always works and
``make_backend("calvin", ...)`` fails at once, with install instructions, when calvin_env is
missing. See docs/calvin_backend.md for installing calvin_env next to the toolkit.

The adapter builds ``calvin_env.envs.play_table_env.PlayTableSimEnv`` from calvin_env's own
hydra configuration (``conf/config_data_collection.yaml`` with ``scene=calvin_scene_<X>``,
static and gripper cameras, no tactile sensor, ``use_scene_info=True``, the CPU renderer unless
EGL is asked for) or from a CALVIN dataset's ``.hydra/merged_config.yaml``, and speaks the
`rftf_gym.backend.PlayTableBackend` protocol on top of it. Quirks of the official code measured
on Python 3.11 with numpy 2 and how the adapter handles them:

- Actions: ``Robot.relative_to_absolute`` scales the action in place, so an integer array raises
  a numpy casting error, and ``apply_action`` asserts the gripper is exactly -1 or +1. The
  adapter always passes a fresh float64 copy with the gripper binarised.
- Block order: ``scene_obs`` lists blocks in each scene YAML's order (A: pink, blue, red;
  C: blue, red, pink). ``get_obs`` reorders to red, blue, pink and ``reset`` maps back.
- Target wind-up: relative actions accumulate on ``robot.target_pos/target_orn`` even when the
  arm cannot follow (measured, scene D: 60 steps of dz=-1 leave the target at z -0.629 while the
  TCP stays at 0.318, and dz=+1 then needs 50 steps before the TCP rises 2 cm). After each step the
  adapter pulls the target back into a band of `TARGET_POS_BAND` m / `TARGET_ORN_BAND` rad around
  the measured TCP pose; ordinary free motion stays inside the band (only saturating all six
  axes at once reaches it), so it acts on blocked motion.
  An absolute action also re-anchors the target, which the official code leaves stale.
- Random layouts: calvin_env's own random reset leaves every joint and light at 0 and puts shelf
  blocks at any yaw anywhere on the shelf; the adapter draws layouts as the embedded backend does.
- Reset: ``Robot.reset`` keeps the previous episode's gripper action and ``Button`` keeps its
  previous "pressed" memory; the adapter sets both from the reset state.
- Git checkout: the constructor logs ``git.Repo(calvin_env).head`` and loads its URDFs from the
  source tree, so calvin_env must be an editable install of a git clone (clear error otherwise).
- ``hydra-colorlog``: calvin_env's config asks for the colorlog logging plugin (clear error).
- One env per process: ``Robot`` creates its base cylinder without a client id (it lands on
  pybullet client 0) and the official ``__del__`` disconnects by id, which pybullet reuses. A
  second live instance raises; use ``gymnasium.vector.AsyncVectorEnv`` (one process per env).
- Explicit-state reset is not an exact restore within one process: pybullet keeps contact caches
  across ``resetBasePositionAndOrientation``, so the same actions from the same reset state
  diverge after different histories (measured: 0.37 after 80 grasping steps). The adapter
  first moves the blocks apart from everything, the robot and doors to their initial states and
  runs collision detection (which drops every stale contact pair), then restores a pybullet
  snapshot: the same 80 steps then replay exactly after different histories (measured, scene D).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import weakref
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rftf_gym.conventions import (
    ACTION_MODES,
    BLOCKS,
    CAMERAS,
    ROBOT_OBS_DIM,
    SCENE_OBS_DIM,
    SCENES,
)
from rftf_gym.sim.layout import LAYOUTS
from rftf_gym.sim.play_table import sample_scene_obs
from rftf_gym.sim.robot import TARGET_BAND_ORN, TARGET_BAND_POS, clamp_target
from rftf_gym.state_check import overlap_problems

INSTALL_HINT = (
    "the 'calvin' backend needs the official CALVIN simulator calvin_env, installed from a git "
    "clone as CALVIN's README describes:\n"
    "    git clone --recurse-submodules https://github.com/mees/calvin_env.git\n"
    "    cd calvin_env && pip install -e . && pip install hydra-colorlog\n"
    "(the tacto submodule is only needed for the tactile sensor, which this backend does not "
    "use). See docs/calvin_backend.md, or use backend='embedded'."
)
# The toolkit's scene_obs layout (rftf_gym.conventions): joint and light names in order, then blocks.
_DOORS = ("base__slide", "base__drawer")
_LIGHTS = ("lightbulb", "led")
# How far the official target pose may lead the measured TCP pose (position norm in m, each
# euler angle in rad). Free motion leads by up to 0.06 m along one axis at full speed and up to
# 0.27 m / 0.65 rad when every axis is saturated at once (the IK is velocity limited); 10 steps
# of full-speed action (0.02 m, 0.05 rad each) keep nearly all free motion untouched while
# bounding wind-up against an obstacle to 10 steps of unwinding.
TARGET_POS_BAND = TARGET_BAND_POS
TARGET_ORN_BAND = TARGET_BAND_ORN


def _require(module: str, pip_name: str) -> Any:
    """Import a dependency of calvin_env, or raise ImportError that says how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is missing ({err}); pip install {pip_name}. {INSTALL_HINT}") from err


def _calvin_root() -> Path:
    """The calvin_env source tree, checked to be a git checkout with its conf/ and data/."""
    try:
        import calvin_env
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    if getattr(calvin_env, "__file__", None) is None:
        raise ImportError(
            "'calvin_env' resolved to a namespace package (a calvin_env folder in the working "
            f"directory?) instead of the installed package. {INSTALL_HINT}"
        )
    root = Path(calvin_env.__file__).resolve().parents[1]
    git = _require("git", "gitpython")
    try:
        git.Repo(root, search_parent_directories=True).head.object.hexsha
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError) as err:
        raise RuntimeError(
            f"calvin_env at {root} is not a git checkout: PlayTableSimEnv's constructor logs the "
            "git commit of its source tree and loads conf/ and data/ from it. Install it with "
            f"'pip install -e .' from a git clone. {INSTALL_HINT}"
        ) from err
    for sub in ("conf", "data"):
        if not (root / sub).is_dir():
            raise RuntimeError(f"calvin_env at {root} has no {sub}/ folder; {INSTALL_HINT}")
    return root


@contextlib.contextmanager
def _hydra_config_dir(config_dir: Path):
    """`hydra.initialize_config_dir` that leaves an already initialised GlobalHydra as it was."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    global_hydra = GlobalHydra.instance()
    saved = global_hydra.hydra if global_hydra.is_initialized() else None
    global_hydra.clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            yield
    finally:
        if saved is not None:
            global_hydra.initialize(saved)


def _compose_config(root: Path, scene: str, cameras: dict[str, tuple[int, int]], use_egl: bool) -> Any:
    """calvin_env's own data-collection config, for one scene and the requested cameras."""
    from hydra import compose
    from omegaconf import OmegaConf

    if importlib.util.find_spec("hydra_plugins.hydra_colorlog") is None:
        raise ImportError(
            "hydra-colorlog is missing: calvin_env's conf/config_data_collection.yaml sets "
            f"hydra/job_logging to colorlog. pip install hydra-colorlog. {INSTALL_HINT}"
        )
    overrides = [
        f"scene=calvin_scene_{scene}",
        "cameras=static_and_gripper" if cameras else "cameras=no_cameras",
        "use_vr=false",
        f"env.use_egl={str(use_egl).lower()}",
        "env.use_scene_info=true",
    ]
    with _hydra_config_dir(root / "conf"):
        cfg = compose("config_data_collection", overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    _configure_cameras(cfg, cameras)
    return cfg


def _dataset_config(root: Path, dataset_path: str, scene: str, cameras: dict[str, tuple[int, int]]) -> Any:
    """The config a CALVIN dataset was rendered with, as the official ``get_env`` loads it."""
    from omegaconf import OmegaConf

    base = Path(dataset_path)
    candidates = [base / ".hydra" / "merged_config.yaml"]
    candidates += [base / split / ".hydra" / "merged_config.yaml" for split in ("validation", "training")]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise FileNotFoundError(
            f"no .hydra/merged_config.yaml in {base} or its validation/ and training/ folders; "
            "dataset_path must be a CALVIN dataset (for example task_D_D) or one of its splits"
        )
    cfg = OmegaConf.load(found)
    # As the official get_env(scene=...): the scene comes from calvin_env's conf/scene.
    cfg.scene = OmegaConf.load(root / "conf" / "scene" / f"calvin_scene_{scene}.yaml")
    # A data_path recorded on another machine is replaced by calvin_env's own data/.
    if Path(str(cfg.get("data_path", "data"))).is_absolute() and not Path(str(cfg.data_path)).is_dir():
        cfg.data_path = "data"
    _configure_cameras(cfg, cameras)
    return cfg


def _configure_cameras(cfg: Any, cameras: dict[str, tuple[int, int]]) -> None:
    """Keep only the requested cameras (never the tactile sensor) at the requested sizes."""
    from omegaconf import OmegaConf

    if cfg.get("cameras") is None:
        cfg.cameras = OmegaConf.create({})
    for name in list(cfg.cameras.keys()):
        if name not in cameras:
            del cfg.cameras[name]
    for name, (width, height) in cameras.items():
        if name not in cfg.cameras:
            raise ValueError(f"the calvin_env config has no {name!r} camera")
        cfg.cameras[name].width = int(width)
        cfg.cameras[name].height = int(height)


class OfficialPlayTable:
    """`rftf_gym.backend.PlayTableBackend` over calvin_env's ``PlayTableSimEnv``.

    Example::

        sim = OfficialPlayTable("D", {"static": (200, 200)})
        sim.reset(rng=np.random.default_rng(0))
        sim.step(np.array([0, 0, -1, 0, 0, 0, 1.0]))
        sim.get_obs()["scene_obs"][6:9]  # the red block, whatever the scene YAML's order
    """

    _live: ClassVar[weakref.ref | None] = None

    def __init__(
        self,
        scene: str,
        cameras: dict[str, tuple[int, int]],
        dataset_path: str | None = None,
        use_egl: bool = False,
        correct_target_windup: bool = True,
        seed: int = 0,
        depth: bool = False,
    ) -> None:
        """Build the official env.

        Args:
            scene: ``"A"``, ``"B"``, ``"C"`` or ``"D"``.
            cameras: camera name (``"static"``, ``"gripper"``) -> (width, height).
            dataset_path: a CALVIN dataset (or its split folder) whose
                ``.hydra/merged_config.yaml`` configures the env, as the official evaluation
                does; None composes calvin_env's own ``conf/``.
            use_egl: render with pybullet's EGL plugin (GPU) instead of the CPU TinyRenderer.
            correct_target_windup: keep the official target pose within a band of the TCP.
            seed: seed of the random layouts drawn when reset gets no rng.
            depth: `get_obs` also returns calvin_env's ``depth_<camera>`` (float32, metres).

        Raises:
            ImportError: calvin_env, hydra-colorlog or another of its dependencies is missing.
            RuntimeError: calvin_env is not a git checkout, or another instance is alive in
                this process.
            ValueError: unknown scene or camera.
        """
        if scene not in SCENES:
            raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")
        for name in cameras:
            if name not in CAMERAS:
                raise ValueError(f"camera must be one of {CAMERAS}, got {name!r}")
        root = _calvin_root()
        for module, pip_name in (("hydra", "hydra-core"), ("omegaconf", "omegaconf"), ("gym", "gym")):
            _require(module, pip_name)
        other = OfficialPlayTable._live() if OfficialPlayTable._live is not None else None
        if other is not None and other._env is not None and other._pid != os.getpid():
            raise RuntimeError(
                "an OfficialPlayTable was alive in the parent process when this process was forked, "
                "and its pybullet client came along; close() it before starting "
                "gymnasium.vector.AsyncVectorEnv, or pass context='spawn' to AsyncVectorEnv"
            )
        if other is not None and other._env is not None:
            raise RuntimeError(
                "calvin_env supports one PlayTableSimEnv per process (its Robot adds a body to "
                "pybullet client 0 and its __del__ disconnects a client id that pybullet reuses); "
                "close() the other OfficialPlayTable first, or run one env per process with "
                "gymnasium.vector.AsyncVectorEnv instead of SyncVectorEnv"
            )
        import hydra

        self.scene = scene
        self.cameras = {name: (int(w), int(h)) for name, (w, h) in cameras.items()}
        self.correct_target_windup = correct_target_windup
        self.depth = bool(depth)
        if dataset_path is None:
            cfg = _compose_config(root, scene, self.cameras, use_egl)
        else:
            cfg = _dataset_config(root, dataset_path, scene, self.cameras)
        self._env: Any = hydra.utils.instantiate(
            cfg.env, show_gui=False, use_vr=False, use_scene_info=True, use_egl=use_egl, seed=int(seed)
        )
        self._pid = os.getpid()
        OfficialPlayTable._live = weakref.ref(self)
        # Restoring this snapshot before each reset (after `_flush_contacts`) resets pybullet's
        # contact caches, which resetBasePositionAndOrientation keeps: replaying 80 grasping
        # steps from the same explicit state after different histories then gives the same
        # states (measured, scene D; 0.37 apart without either, <= 0.014 with the snapshot alone).
        self._env.reset()
        self._snapshot = self._env.p.saveState(physicsClientId=self._env.cid)
        self._surfaces = {k: np.asarray(v, dtype=np.float64) for k, v in dict(cfg.scene.surfaces).items()}
        self._scene_perm = self._official_scene_index()
        self._cached_obs: dict[str, Any] | None = None
        # Joints and lights of random layouts when reset gets no rng.
        self._rng = np.random.default_rng(seed)

    def _official_scene_index(self) -> np.ndarray:
        """Index array: toolkit scene_obs = official scene_obs[index], by object name."""
        scene = self._env.scene
        doors = [d.name for d in scene.doors]
        lights = [light.name for light in scene.lights]
        blocks = [obj.name for obj in scene.movable_objects]
        if sorted(doors) != sorted(_DOORS) or sorted(lights) != sorted(_LIGHTS) or sorted(blocks) != sorted(BLOCKS):
            raise RuntimeError(f"unexpected calvin_env scene objects: {doors}, {lights}, {blocks}")
        if len(scene.buttons) != 1 or len(scene.switches) != 1:
            raise RuntimeError("expected one button and one switch in the calvin_env scene")
        n_doors = len(doors)
        light_start = n_doors + 2
        block_start = light_start + len(lights)
        index = [doors.index(name) for name in _DOORS] + [n_doors, n_doors + 1]
        index += [light_start + lights.index(name) for name in _LIGHTS]
        for name in BLOCKS:
            start = block_start + 6 * blocks.index(name)
            index += list(range(start, start + 6))
        return np.asarray(index)

    # ------------------------------------------------------------------ protocol
    def reset(
        self,
        robot_obs: np.ndarray | None = None,
        scene_obs: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        """Reset to an explicit state, or to the neutral robot and a random layout from rng.

        The official ``PlayTableSimEnv.reset`` runs, followed by its one physics step. A random
        layout (no ``scene_obs``) draws the joints and lights too (`_random_scene_obs`).

        Raises:
            ValueError: an explicit scene_obs puts a block into a table part or another block
                (`rftf_gym.state_check.overlap_problems`).
        """
        env = self._env
        official_scene_obs = None
        if scene_obs is not None:
            ours = np.asarray(scene_obs, dtype=np.float64).reshape(SCENE_OBS_DIM).copy()
            # Light.reset accepts exactly 0 or 1.
            ours[4:6] = (ours[4:6] > 0.5).astype(np.float64)
            official_scene_obs = np.empty(SCENE_OBS_DIM)
            official_scene_obs[self._scene_perm] = ours
        if robot_obs is not None:
            robot_obs = np.asarray(robot_obs, dtype=np.float64).reshape(ROBOT_OBS_DIM).copy()
        self._flush_contacts()
        env.p.restoreState(stateId=self._snapshot, physicsClientId=env.cid)
        if official_scene_obs is None:
            official_scene_obs = self._random_scene_obs(rng if rng is not None else self._rng)
        env.reset(robot_obs=robot_obs, scene_obs=official_scene_obs)
        # Robot.reset leaves the previous gripper action; Button keeps its last "pressed" flag.
        env.robot.gripper_action = 1 if robot_obs is None or robot_obs[14] >= 0 else -1
        for button in env.scene.buttons:
            button.prev_is_pressed = button._is_pressed
        self._cached_obs = None
        if scene_obs is not None:
            # The official reset ends with one physics step, too short to push overlapping bodies
            # apart; the same check as the embedded backend's, on the official bodies.
            overlaps = overlap_problems(env.cid, env.get_info())
            if overlaps:
                raise ValueError("impossible reset state: " + "; ".join(overlaps))

    def _flush_contacts(self) -> None:
        """Separate the blocks from everything and run collision detection, so that no contact
        pair of the last episode survives into the next one (restoreState keeps pairs whose
        bodies still overlap, and they change the solver's warm start)."""
        env = self._env
        env.robot.reset()
        for door in env.scene.doors:
            door.reset(0.0)
        for i, obj in enumerate(env.scene.movable_objects):
            env.p.resetBasePositionAndOrientation(obj.uid, (5.0 + i, 5.0, 5.0), (0, 0, 0, 1), physicsClientId=env.cid)
        env.p.performCollisionDetection(physicsClientId=env.cid)

    def _random_scene_obs(self, rng: np.random.Generator) -> np.ndarray:
        """A random layout as an official scene_obs, drawn as on the embedded backend.

        calvin_env's own random reset leaves every joint and light at its initial state (0), so
        tasks on an open door or drawer or a lit light could never start from it, and it puts
        shelf blocks at any yaw anywhere on the shelf, also behind the door's edges where no
        top-down grasp reaches them (the evaluation's shelf blocks face front, yaw pi/2 +- pi/8).
        `rftf_gym.sim.play_table.sample_scene_obs` draws the joints, lights and blocks instead (the
        scene YAML's surfaces, no two blocks touching), so the same generator state gives the same
        layout on both backends.
        """
        official = np.empty(SCENE_OBS_DIM)
        official[self._scene_perm] = sample_scene_obs(LAYOUTS[self.scene], rng)
        return official

    def step(self, action: np.ndarray, action_mode: str = "relative") -> None:
        """One 30 Hz control step through the official ``PlayTableSimEnv.step``."""
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        # relative_to_absolute scales in place (ints raise) and apply_action asserts +-1.
        action = np.array(action, dtype=np.float64).reshape(7)
        gripper = 1 if action[6] >= 0 else -1
        action[6] = float(gripper)
        robot = self._env.robot
        if action_mode == "absolute":
            official_action: Any = {"action": action, "type": "cartesian_abs"}
            # The official code leaves the relative-action target where it was.
            robot.target_pos = action[:3].copy()
            robot.target_orn = action[3:6].copy()
        else:
            official_action = action
        obs, _, _, _ = self._env.step(official_action)
        self._cached_obs = obs
        if self.correct_target_windup:
            self._clamp_target()

    def _clamp_target(self) -> None:
        """Pull the official target pose back into a band around the measured TCP pose (the
        embedded robot's `rftf_gym.sim.robot.clamp_target`, so both backends wind up alike)."""
        robot = self._env.robot
        tcp_pos, tcp_orn = self._cached_obs["robot_obs"][:3], self._cached_obs["robot_obs"][3:6]
        robot.target_pos, robot.target_orn = clamp_target(robot.target_pos, robot.target_orn, tcp_pos, tcp_orn)

    def get_obs(self) -> dict[str, np.ndarray]:
        """``robot_obs`` (15), ``scene_obs`` (24, blocks red, blue, pink), ``rgb_<camera>`` and,
        with ``depth``, ``depth_<camera>``."""
        obs = self._cached_obs if self._cached_obs is not None else self._env.get_obs()
        self._cached_obs = obs
        out = {
            "robot_obs": np.asarray(obs["robot_obs"], dtype=np.float64).copy(),
            "scene_obs": np.asarray(obs["scene_obs"], dtype=np.float64)[self._scene_perm],
        }
        for name in self.cameras:
            out[f"rgb_{name}"] = np.array(obs["rgb_obs"][f"rgb_{name}"], dtype=np.uint8)
            if self.depth:
                out[f"depth_{name}"] = np.array(obs["depth_obs"][f"depth_{name}"], dtype=np.float32)
        return out

    def get_info(self) -> dict[str, Any]:
        """The official ``PlayTableSimEnv.get_info()`` (robot and scene info)."""
        return self._env.get_info()

    def render(self, camera: str = "static") -> np.ndarray:
        """One uint8 HxWx3 image from a configured camera."""
        for cam in self._env.cameras:
            if cam.name == camera:
                rgb, _ = cam.render()
                return np.ascontiguousarray(rgb, dtype=np.uint8)
        raise ValueError(f"camera {camera!r} is not configured; configured: {sorted(self.cameras)}")

    def slider_mid_x(self) -> float:
        """Middle of the gap between the scene's ``slider_left`` and ``slider_right`` surfaces."""
        left, right = self._surfaces["slider_left"], self._surfaces["slider_right"]
        return float((left[:, 0].max() + right[:, 0].min()) / 2)

    def close(self) -> None:
        """Disconnect the physics client; the official ``__del__`` then does nothing."""
        env, self._env = getattr(self, "_env", None), None
        if env is None:
            return
        with contextlib.redirect_stdout(io.StringIO()):  # the official close() prints
            env.close()
        # Its __del__ would disconnect this client id again, by then maybe another env's.
        env.ownsPhysicsClient = False
        env.close = lambda: None
        self._cached_obs = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn pybullet down
            pass
