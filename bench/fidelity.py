"""Fidelity of the embedded play table to the official CALVIN simulator, side by side.

Needs the official calvin_env (docs/calvin_backend.md); without it this prints how to install it
and exits with status 2. Both simulators are measured through the toolkit's backends
(`rftf_gym.sim.play_table.EmbeddedPlayTable` and `rftf_gym.calvin_backend.OfficialPlayTable`,
which loads calvin_env's own URDFs and configs), each in its own pybullet client:

- parts: per table link, the world bounding box (centre and size) with every joint at 0, and two
  ray-cast profiles of the table alone (robot and blocks moved away), closed and with every joint
  at its upper limit: a top-down height map (x -0.44..0.44, y -0.30..0.20, 1 cm grid) and a front
  depth map (rays along +y over x -0.44..0.44, z 0.28..0.70). Per link: the share of rays that
  hit the same link on both, and the median and 90th percentile of the hit distance between them;
  the drawer handle's front point (the drawer link's most forward ray hit) on both;
- joints: range and world direction of motion of each table joint (bounding-box shift per metre);
- robot: TCP and hand pose at the neutral joints, how far the fingertips reach past the TCP,
  finger bounding box, arm joint limits, finger and block contact parameters;
- cameras: static camera view and projection matrices; gripper camera pose at the neutral robot;
- trajectories: TCP and block positions under the same open-loop action sequences from the same
  explicit state (relative and absolute actions);
- experts: the scripted experts' success per task on both backends (`bench/expert_success.py`'s
  method, ``--expert-episodes`` start states per task).

The official env allows one instance per process, so each official measurement runs in a worker
process. Results go to BENCHMARKS.md between ``<!-- fidelity -->`` markers and, in full, to
``--json``.

Run (from an environment with calvin_env): ``python bench/fidelity.py --scenes D --expert-episodes 5``
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent))
from markdown_section import write_section  # noqa: E402

from rftf_gym.conventions import COLORS, NEUTRAL_ROBOT_OBS, SCENES, Scene  # noqa: E402
from rftf_gym.files import atomic_write_text  # noqa: E402

SECTION = "fidelity"
TABLE_LINKS = ("base_link", "plank_link", "slide_link", "drawer_link", "button_link", "switch_link", "led_link",
               "light_link")
TABLE_JOINTS = ("base__slide", "base__drawer", "base__button", "base__switch")
# Explicit start state of the trajectories: neutral robot (the official evaluation's), door and
# drawer closed, lights off, red and blue on the evaluation's table spots (yaw pi/2), pink on the
# shelf's left half (calvin_agent/evaluation/utils.py get_env_state_for_initial_condition).
NEUTRAL_ROBOT = np.array(NEUTRAL_ROBOT_OBS)
START_SCENE = np.array([0, 0, 0, 0, 0, 0,
                        0.05, -0.12, 0.46, 0, 0, np.pi / 2,
                        0.23, -0.12, 0.46, 0, 0, np.pi / 2,
                        -0.2409, 0.0924, 0.461, 0, 0, np.pi / 2])  # fmt: skip


def start_scene(scene: str) -> np.ndarray:
    """START_SCENE with the pink block in the middle of the scene's own slider_left surface along x
    (B and C have the shelf 0.18 m further right than A and D)."""
    from rftf_gym.sim.layout import LAYOUTS

    out = START_SCENE.copy()
    (x0, _), (x1, _) = LAYOUTS[scene].surfaces["slider_left"]
    out[18] = 0.5 * (x0 + x1)
    return out


@dataclass
class Args:
    scenes: tuple[Scene, ...] = SCENES
    """scenes whose geometry is compared"""
    trajectory_scenes: tuple[str, ...] = ("D",)
    """scenes in which the open-loop trajectories are compared"""
    expert_scenes: tuple[str, ...] = ("D",)
    """scenes in which the experts run on both backends (empty: skip the experts)"""
    expert_episodes: int = 5
    """seeded start states per task and backend for the experts"""
    workers: int = 2
    """worker processes"""
    seed: int = 0
    """base seed of the experts' start states"""
    output: str = str(Path(__file__).resolve().parents[1] / "BENCHMARKS.md")
    """markdown file whose fidelity section is rewritten (empty: print only)"""
    json: str = ""
    """write every measured number to this JSON file too (empty: no file)"""


# --------------------------------------------------------------------------------------------
# Handles on the two simulators: pybullet client, body ids and link names.
# --------------------------------------------------------------------------------------------


@dataclass
class Handle:
    """What the measurements need of one simulator."""

    sim: Any
    client: int
    table: int
    robot: int
    tcp_link: int
    hand_link: int
    blocks: dict[str, int]
    extra: tuple[int, ...]  # other bodies (the official ground plane) moved away for rays

    def link_ids(self, uid: int) -> dict[str, int]:
        import pybullet as p

        ids = {p.getBodyInfo(uid, physicsClientId=self.client)[0].decode(): -1}
        for j in range(p.getNumJoints(uid, physicsClientId=self.client)):
            ids[p.getJointInfo(uid, j, physicsClientId=self.client)[12].decode()] = j
        return ids

    def joint_ids(self) -> dict[str, int]:
        import pybullet as p

        return {p.getJointInfo(self.table, j, physicsClientId=self.client)[1].decode(): j
                for j in range(p.getNumJoints(self.table, physicsClientId=self.client))}


def open_sim(backend: str, scene: str) -> Handle:
    """Build a backend of one scene, reset to the trajectories' start state."""
    import pybullet as p

    from rftf_gym.backends import make_backend

    sim = make_backend(backend, scene, {})
    sim.reset(robot_obs=NEUTRAL_ROBOT, scene_obs=start_scene(scene))
    if backend == "embedded":
        from rftf_gym.sim.robot import HAND_LINK, TCP_LINK

        blocks = {c: sim.blocks[c] for c in COLORS}
        return Handle(sim, sim.client, sim.table_uid, sim.robot.uid, TCP_LINK, HAND_LINK, blocks, ())
    env = sim._env
    table = env.scene.fixed_objects[0].uid
    blocks = {obj.name.split("_")[1]: obj.uid for obj in env.scene.movable_objects}
    robot = env.robot.robot_uid
    known = {table, robot, *blocks.values()}
    extra = tuple(b for b in (p.getBodyUniqueId(i, physicsClientId=env.cid)
                              for i in range(p.getNumBodies(physicsClientId=env.cid))) if b not in known)
    handle = Handle(sim, env.cid, table, robot, env.robot.tcp_link_id, 0, blocks, extra)
    handle.hand_link = handle.link_ids(robot)["panda_hand"]
    return handle


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def _clear_table(h: Handle) -> None:
    """Move the robot, blocks and any other body far from the table (ray casts see the table only)."""
    import pybullet as p

    for k, uid in enumerate((h.robot, *h.blocks.values(), *h.extra)):
        p.resetBasePositionAndOrientation(uid, (10.0 + 2 * k, 10.0, 0.0), (0, 0, 0, 1), physicsClientId=h.client)


def _set_joints(h: Handle, opened: bool) -> None:
    import pybullet as p

    joints = h.joint_ids()
    for name in TABLE_JOINTS:
        j = joints[name]
        upper = p.getJointInfo(h.table, j, physicsClientId=h.client)[9]
        p.resetJointState(h.table, j, upper if opened else 0.0, 0.0, physicsClientId=h.client)


def _rays(h: Handle, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hit point (N, 3) with NaN for a miss, hit link name index into TABLE_LINKS or -1)."""
    import pybullet as p

    names = {v: k for k, v in h.link_ids(h.table).items()}
    points = np.full((len(starts), 3), np.nan)
    links = np.full(len(starts), -1)
    for lo in range(0, len(starts), 8000):
        hits = p.rayTestBatch(starts[lo:lo + 8000].tolist(), ends[lo:lo + 8000].tolist(), physicsClientId=h.client)
        for k, hit in enumerate(hits):
            if hit[0] == h.table:
                points[lo + k] = hit[3]
                name = names.get(hit[1], "")
                links[lo + k] = TABLE_LINKS.index(name) if name in TABLE_LINKS else -1
    return points, links


def ray_grids() -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Ray starts, ends and the axis measured, for the top-down and the front profile."""
    xs = np.arange(-0.44, 0.4401, 0.01)
    ys = np.arange(-0.30, 0.2001, 0.01)
    zs = np.arange(0.28, 0.7001, 0.005)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    top_start = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, 1.2)], 1)
    top_end = top_start.copy()
    top_end[:, 2] = 0.0
    fx, fz = np.meshgrid(xs, zs, indexing="ij")
    front_start = np.stack([fx.ravel(), np.full(fx.size, -1.0), fz.ravel()], 1)
    front_end = front_start.copy()
    front_end[:, 1] = 0.4
    return {"top": (top_start, top_end, 2), "front": (front_start, front_end, 1)}


def measure_geometry(h: Handle) -> dict[str, Any]:
    """Link boxes, joint ranges and directions, and ray profiles of the table alone."""
    import pybullet as p

    c = h.client
    _clear_table(h)
    _set_joints(h, opened=False)
    ids = h.link_ids(h.table)
    boxes = {}
    for name in TABLE_LINKS:
        lo, hi = p.getAABB(h.table, ids[name], physicsClientId=c)
        boxes[name] = {"centre": ((np.add(lo, hi)) / 2).tolist(), "size": np.subtract(hi, lo).tolist()}
    joints = {}
    link_of = {"base__slide": "slide_link", "base__drawer": "drawer_link", "base__button": "button_link",
               "base__switch": "switch_link"}
    jids = h.joint_ids()
    for name in TABLE_JOINTS:
        j = jids[name]
        info = p.getJointInfo(h.table, j, physicsClientId=c)
        lower, upper = float(info[8]), float(info[9])
        before = np.mean(p.getAABB(h.table, ids[link_of[name]], physicsClientId=c), axis=0)
        p.resetJointState(h.table, j, upper, 0.0, physicsClientId=c)
        after = np.mean(p.getAABB(h.table, ids[link_of[name]], physicsClientId=c), axis=0)
        p.resetJointState(h.table, j, 0.0, 0.0, physicsClientId=c)
        shift = after - before
        joints[name] = {"lower": lower, "upper": upper, "direction": (shift / max(upper - lower, 1e-9)).tolist()}
    profiles = {}
    for state in ("closed", "open"):
        _set_joints(h, opened=state == "open")
        for kind, (starts, ends, axis) in ray_grids().items():
            points, links = _rays(h, starts, ends)
            profiles[f"{kind}_{state}"] = {"value": points[:, axis].tolist(), "link": links.tolist()}
    _set_joints(h, opened=False)
    return {"boxes": boxes, "joints": joints, "profiles": profiles}


def measure_robot(h: Handle) -> dict[str, Any]:
    """TCP, hand and fingers at the neutral joints; joint limits; finger contact parameters."""
    import pybullet as p

    c = h.client
    h.sim.reset(robot_obs=NEUTRAL_ROBOT, scene_obs=start_scene(h.sim.scene))
    links = h.link_ids(h.robot)
    tcp = p.getLinkState(h.robot, h.tcp_link, computeForwardKinematics=True, physicsClientId=c)
    hand = p.getLinkState(h.robot, h.hand_link, computeForwardKinematics=True, physicsClientId=c)
    rot = np.asarray(p.getMatrixFromQuaternion(hand[5])).reshape(3, 3)
    axis = rot[:, 2]
    finger_names = [n for n in links if "finger" in n and "joint" not in n]
    lows, boxes = [], {}
    for name in finger_names:
        lo, hi = p.getAABB(h.robot, links[name], physicsClientId=c)
        boxes[name] = {"lo": list(lo), "hi": list(hi)}
        # The corner of the box furthest along the hand's z axis (the fingers point along it).
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        lows.append(float(np.max((corners - np.asarray(hand[4])) @ axis)))
    finger_ids = [links[n] for n in ("panda_leftfinger", "panda_rightfinger")]
    dyn = p.getDynamicsInfo(h.robot, finger_ids[0], physicsClientId=c)
    arm = [p.getJointInfo(h.robot, j, physicsClientId=c) for j in range(7)]
    fingers = [p.getJointInfo(h.robot, j, physicsClientId=c) for j in range(p.getNumJoints(h.robot, physicsClientId=c))
               if p.getJointInfo(h.robot, j, physicsClientId=c)[2] == p.JOINT_PRISMATIC]
    return {
        "tcp_pos": list(tcp[4]),
        "tcp_euler": list(p.getEulerFromQuaternion(tcp[5])),
        "hand_pos": list(hand[4]),
        "tcp_along_hand_z": float((np.asarray(tcp[4]) - np.asarray(hand[4])) @ axis),
        "fingertip_along_hand_z": max(lows),
        "finger_boxes": boxes,
        "arm_limits": [[float(i[8]), float(i[9])] for i in arm],
        "finger_limits": [[float(i[8]), float(i[9])] for i in fingers],
        "finger_friction": {"lateral": dyn[1], "spinning": dyn[7], "rolling": dyn[6], "contact_damping": dyn[8],
                            "contact_stiffness": dyn[9]},
    }


def measure_blocks(h: Handle) -> dict[str, Any]:
    """Size, mass, friction and inertia of each block."""
    import pybullet as p

    out = {}
    for color, uid in h.blocks.items():
        dyn = p.getDynamicsInfo(uid, -1, physicsClientId=h.client)
        shape = p.getCollisionShapeData(uid, -1, physicsClientId=h.client)[0]
        out[color] = {"size": [float(s) for s in shape[3]], "mass": dyn[0], "lateral_friction": dyn[1],
                      "spinning_friction": dyn[7], "rolling_friction": dyn[6], "inertia": list(dyn[2]),
                      "restitution": dyn[5]}
    return out


def measure_cameras(h: Handle, backend: str) -> dict[str, Any]:
    """Static camera matrices; gripper camera eye, forward and up at the neutral robot."""
    import pybullet as p

    h.sim.reset(robot_obs=NEUTRAL_ROBOT, scene_obs=start_scene(h.sim.scene))
    if backend == "embedded":
        from rftf_gym.sim import cameras as cams

        view = p.computeViewMatrix(cams.STATIC_LOOK_FROM, cams.STATIC_LOOK_AT, cams.STATIC_UP)
        proj = p.computeProjectionMatrixFOV(cams.STATIC_FOV, 1.0, cams.STATIC_NEAR, cams.STATIC_FAR)
        hand_pos, hand_orn = h.sim.robot.hand_pose()
        pos, orn = p.multiplyTransforms(hand_pos, hand_orn, cams.GRIPPER_CAM_XYZ,
                                        p.getQuaternionFromEuler(cams.GRIPPER_CAM_RPY))
        grip = {"fov": cams.GRIPPER_FOV, "near": cams.GRIPPER_NEAR, "far": cams.GRIPPER_FAR}
    else:
        from calvin_env.camera.static_camera import StaticCamera  # noqa: F401  (calvin_env is there)
        from omegaconf import OmegaConf

        import calvin_env

        conf = Path(calvin_env.__file__).parents[1] / "conf" / "cameras" / "cameras"
        static = OmegaConf.load(conf / "static.yaml")
        gripper = OmegaConf.load(conf / "gripper.yaml")
        view = p.computeViewMatrix(list(static.look_from), list(static.look_at), list(static.up_vector))
        proj = p.computeProjectionMatrixFOV(static.fov, static.aspect, static.nearval, static.farval)
        link = h.link_ids(h.robot)["gripper_cam"]
        state = p.getLinkState(h.robot, link, computeForwardKinematics=True, physicsClientId=h.client)
        pos, orn = state[4], state[5]
        grip = {"fov": float(gripper.fov), "near": float(gripper.nearval), "far": float(gripper.farval)}
    rot = np.asarray(p.getMatrixFromQuaternion(orn)).reshape(3, 3)
    return {"static_view": list(view), "static_proj": list(proj),
            "gripper": {**grip, "eye": list(pos), "forward": rot[:, 1].tolist(), "up": (-rot[:, 2]).tolist()}}


# --------------------------------------------------------------------------------------------
# Trajectories
# --------------------------------------------------------------------------------------------


def _relative(parts: list[tuple[int, tuple[float, ...]]]) -> list[tuple[str, np.ndarray]]:
    out = []
    for steps, action in parts:
        out += [("relative", np.array(action, dtype=float))] * steps
    return out


def _absolute(waypoints: list[tuple[int, tuple[float, float, float], float]], yaw: float) -> list[tuple[str, np.ndarray]]:
    """Absolute tcp targets held for a number of steps each (tcp pointing down)."""
    out = []
    for steps, pos, gripper in waypoints:
        out += [("absolute", np.array([*pos, np.pi, 0.0, yaw, gripper]))] * steps
    return out


def trajectories() -> dict[str, list[tuple[str, np.ndarray]]]:
    """Open-loop action sequences, all from (NEUTRAL_ROBOT, START_SCENE)."""
    red, blue = START_SCENE[6:9], START_SCENE[12:15]
    return {
        "free motion (+x 12, +z 8, +yaw 15, -x 12, -z 8, +y 5)": _relative(
            [(12, (1, 0, 0, 0, 0, 0, 1)), (8, (0, 0, 1, 0, 0, 0, 1)), (15, (0, 0, 0, 0, 0, 1, 1)),
             (12, (-1, 0, 0, 0, 0, 0, 1)), (8, (0, 0, -1, 0, 0, 0, 1)), (5, (0, 1, 0, 0, 0, 0, 1))]),
        "workspace edge (+x 40, then -z 30)": _relative([(40, (1, 0, 0, 0, 0, 0, 1)), (30, (0, 0, -1, 0, 0, 0, 1))]),
        "press on the table (+y 8, then -z 30)": _relative([(8, (0, 1, 0, 0, 0, 0, 1)), (30, (0, 0, -1, 0, 0, 0, 1))]),
        "grasp and lift red (absolute)": _absolute(
            [(25, (red[0], red[1], red[2] + 0.12), 1), (25, tuple(red), 1), (15, tuple(red), -1),
             (25, (red[0], red[1], red[2] + 0.15), -1)], yaw=np.pi / 2),
        "push blue +x (absolute, closed gripper)": _absolute(
            [(20, (blue[0] - 0.08, blue[1], 0.56), -1), (20, (blue[0] - 0.08, blue[1], 0.475), -1)]
            + [(2, (blue[0] - 0.08 + 0.16 * k / 15, blue[1], 0.475), -1) for k in range(1, 16)], yaw=0.0),
    }


def run_trajectories(h: Handle) -> dict[str, dict[str, list]]:
    """TCP and block positions after every step of each sequence."""
    out = {}
    for name, actions in trajectories().items():
        h.sim.reset(robot_obs=NEUTRAL_ROBOT, scene_obs=start_scene(h.sim.scene))
        tcp, blocks, joints = [], [], []
        for mode, action in actions:
            h.sim.step(action, mode)
            obs = h.sim.get_obs()
            tcp.append(obs["robot_obs"][:3].tolist())
            blocks.append(obs["scene_obs"][6:24].reshape(3, 6)[:, :3].tolist())
            joints.append(obs["scene_obs"][:4].tolist())
        out[name] = {"tcp": tcp, "blocks": blocks, "joints": joints}
    return out


def measure_backend(backend: str, scene: str, with_trajectories: bool) -> dict[str, Any]:
    """Every measurement of one backend and scene (run in its own process)."""
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    h = open_sim(backend, scene)
    try:
        out = {"blocks": measure_blocks(h), "robot": measure_robot(h), "cameras": measure_cameras(h, backend)}
        if with_trajectories:
            out["trajectories"] = run_trajectories(h)
        out["geometry"] = measure_geometry(h)  # last: it moves bodies out of the way
    finally:
        h.sim.close()
    return out


def run_experts(backend: str, scene: str, task: str, episodes: int, seed: int) -> dict:
    """One expert on one backend, bench/expert_success.py's method."""
    from expert_success import run_pair

    return run_pair(task, scene, episodes, seed, backend=backend)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _mm(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{1000 * v:.0f}"


def profile_stats(emb: dict, off: dict) -> dict[str, dict[str, float]]:
    """Per official link: share of rays hitting the same link, median and p90 |distance|."""
    stats: dict[str, dict[str, float]] = {}
    for i, name in enumerate(TABLE_LINKS):
        same, dist = 0, []
        total = 0
        for key in off:
            ol, el = np.asarray(off[key]["link"]), np.asarray(emb[key]["link"])
            ov, ev = np.asarray(off[key]["value"]), np.asarray(emb[key]["value"])
            mask = ol == i
            total += int(mask.sum())
            hit = mask & (el == i)
            same += int(hit.sum())
            dist += np.abs(ov[hit] - ev[hit]).tolist()
        stats[name] = {"rays": total, "same_link": same / total if total else float("nan"),
                       "median": float(np.median(dist)) if dist else float("nan"),
                       "p90": float(np.percentile(dist, 90)) if dist else float("nan")}
    return stats


def handle_front(profile: dict) -> tuple[float, float, float]:
    """(x, y, z) of the drawer link's most forward front-ray hit with the drawer closed."""
    starts = ray_grids()["front"][0]
    links, values = np.asarray(profile["link"]), np.asarray(profile["value"])
    mask = links == TABLE_LINKS.index("drawer_link")
    if not mask.any():
        return (float("nan"),) * 3
    k = np.flatnonzero(mask)[np.argmin(values[mask])]
    # z and x of the forward-most rays: their mean over ties within 2 mm.
    ties = np.flatnonzero(mask & (values <= values[k] + 0.002))
    return float(starts[ties, 0].mean()), float(values[k]), float(starts[ties, 2].mean())


def report(results: dict, args: Args, wall: float) -> str:
    lines = ["## Fidelity to the official simulator (`bench/fidelity.py`)", "",
             f"`python bench/fidelity.py --scenes {' '.join(args.scenes)} --expert-episodes {args.expert_episodes}` "
             f"with calvin_env installed (docs/calvin_backend.md); wall time {wall / 60:.1f} min. Embedded (emb) "
             "against official (off); distances in mm.", ""]
    # Parts
    lines += ["### Parts: world bounding boxes (joints at 0) and ray-cast profiles", "",
              "Box: largest per-axis difference of the link's world bounding-box centre and size. Rays: the "
              "table alone (robot and blocks moved away), closed and with every joint at its upper limit, "
              "top-down (1 cm grid) and from the front (1 cm x 5 mm grid); over the rays that hit the link on "
              "the official table: share that hit the same link on the embedded one, and the median / 90th "
              "percentile of the distance between the two hits. Surface within 5 mm: the ray p90 is.", "",
              "| scene | link | box centre d | box size d | off size (x y z) | rays same link | ray d median | ray d p90 "
              "| surface within 5 mm |",
              "|---|---|---|---|---|---|---|---|---|"]
    for scene in args.scenes:
        emb, off = results[scene]["embedded"]["geometry"], results[scene]["calvin"]["geometry"]
        stats = profile_stats(emb["profiles"], off["profiles"])
        for name in TABLE_LINKS:
            eb, ob = emb["boxes"][name], off["boxes"][name]
            dc = np.max(np.abs(np.subtract(eb["centre"], ob["centre"])))
            ds = np.max(np.abs(np.subtract(eb["size"], ob["size"])))
            size = " ".join(_mm(v) for v in ob["size"])
            st = stats[name]
            share = "-" if not st["rays"] else f"{100 * st['same_link']:.0f}% of {st['rays']}"
            within = "-" if not st["rays"] else ("yes" if st["p90"] <= 0.005 else "no")
            lines.append(f"| {scene} | {name} | {_mm(dc)} | {_mm(ds)} | {size} | {share} | {_mm(st['median'])} | "
                         f"{_mm(st['p90'])} | {within} |")
    lines += ["", "Drawer handle front (most forward point of drawer_link, closed), x / y / z:", ""]
    for scene in args.scenes:
        e = handle_front(results[scene]["embedded"]["geometry"]["profiles"]["front_closed"])
        o = handle_front(results[scene]["calvin"]["geometry"]["profiles"]["front_closed"])
        lines.append(f"- {scene}: emb {' / '.join(f'{v:.3f}' for v in e)}, off {' / '.join(f'{v:.3f}' for v in o)}")
    # Joints
    lines += ["", "### Joints: range and world direction of motion", "",
              "| scene | joint | range emb | range off | direction emb | direction off |", "|---|---|---|---|---|---|"]
    for scene in args.scenes:
        ej, oj = results[scene]["embedded"]["geometry"]["joints"], results[scene]["calvin"]["geometry"]["joints"]
        for name in TABLE_JOINTS:
            def fmt_dir(v: list) -> str:
                return "(" + ", ".join(f"{x:+.2f}" for x in v) + ")"
            lines.append(f"| {scene} | {name} | {ej[name]['lower']:.3f}..{ej[name]['upper']:.3f} | "
                         f"{oj[name]['lower']:.3f}..{oj[name]['upper']:.3f} | {fmt_dir(ej[name]['direction'])} | "
                         f"{fmt_dir(oj[name]['direction'])} |")
    # Robot
    scene0 = args.scenes[-1]
    er, orb = results[scene0]["embedded"]["robot"], results[scene0]["calvin"]["robot"]
    lim_d = np.max(np.abs(np.subtract(er["arm_limits"], orb["arm_limits"])))
    lines += ["", f"### Robot (scene {scene0}, neutral joints)", "", "| quantity | emb | off |", "|---|---|---|",
              f"| TCP position (m) | {np.round(er['tcp_pos'], 4).tolist()} | {np.round(orb['tcp_pos'], 4).tolist()} |",
              f"| TCP euler (rad) | {np.round(er['tcp_euler'], 3).tolist()} | {np.round(orb['tcp_euler'], 3).tolist()} |",
              f"| hand position (m) | {np.round(er['hand_pos'], 4).tolist()} | {np.round(orb['hand_pos'], 4).tolist()} |",
              f"| TCP along the hand axis (mm) | {_mm(er['tcp_along_hand_z'])} | {_mm(orb['tcp_along_hand_z'])} |",
              f"| fingertips along the hand axis (mm) | {_mm(er['fingertip_along_hand_z'])} | "
              f"{_mm(orb['fingertip_along_hand_z'])} |",
              f"| fingertips past the TCP (mm) | {_mm(er['fingertip_along_hand_z'] - er['tcp_along_hand_z'])} | "
              f"{_mm(orb['fingertip_along_hand_z'] - orb['tcp_along_hand_z'])} |",
              f"| finger joint limits (m) | {er['finger_limits']} | {orb['finger_limits']} |",
              f"| arm joint limits, largest difference (rad) | {lim_d:.4f} | |"]
    for key in ("lateral", "spinning", "rolling", "contact_damping", "contact_stiffness"):
        lines.append(f"| finger {key.replace('_', ' ')} | {er['finger_friction'][key]:g} | {orb['finger_friction'][key]:g} |")
    # Blocks
    lines += ["", "### Blocks", "", "| scene | block | size emb (mm) | size off (mm) | mass emb / off | "
              "friction emb / off (lateral, spinning, rolling) | inertia emb / off |", "|---|---|---|---|---|---|---|"]
    for scene in args.scenes:
        eb, ob = results[scene]["embedded"]["blocks"], results[scene]["calvin"]["blocks"]
        for color in COLORS:
            e, o = eb[color], ob[color]
            lines.append(
                f"| {scene} | {color} | {' '.join(_mm(v) for v in e['size'])} | {' '.join(_mm(v) for v in o['size'])} | "
                f"{e['mass']:g} / {o['mass']:g} | {e['lateral_friction']:g}, {e['spinning_friction']:g}, "
                f"{e['rolling_friction']:g} / {o['lateral_friction']:g}, {o['spinning_friction']:g}, "
                f"{o['rolling_friction']:g} | {e['inertia'][0]:g} / {o['inertia'][0]:g} |")
    # Cameras
    ec, oc = results[scene0]["embedded"]["cameras"], results[scene0]["calvin"]["cameras"]
    dv = np.max(np.abs(np.subtract(ec["static_view"], oc["static_view"])))
    dp = np.max(np.abs(np.subtract(ec["static_proj"], oc["static_proj"])))
    eg, og = ec["gripper"], oc["gripper"]
    lines += ["", f"### Cameras (scene {scene0})", "",
              f"- static: largest difference of the view matrix {dv:.2e}, of the projection matrix {dp:.2e}.",
              f"- gripper (neutral robot): eye {_mm(np.linalg.norm(np.subtract(eg['eye'], og['eye'])))} mm apart "
              f"(emb {np.round(eg['eye'], 4).tolist()}, off {np.round(og['eye'], 4).tolist()}); forward axes "
              f"{np.degrees(np.arccos(np.clip(np.dot(eg['forward'], og['forward']), -1, 1))):.2f} deg apart, up "
              f"{np.degrees(np.arccos(np.clip(np.dot(eg['up'], og['up']), -1, 1))):.2f} deg; fov / near / far "
              f"emb {eg['fov']:g} / {eg['near']:g} / {eg['far']:g}, off {og['fov']:g} / {og['near']:g} / {og['far']:g}."]
    # Trajectories
    for scene in args.trajectory_scenes:
        et, ot = results[scene]["embedded"]["trajectories"], results[scene]["calvin"]["trajectories"]
        lines += ["", f"### Open-loop trajectories (scene {scene})", "",
                  "Same actions from the same explicit state (neutral robot, red and blue on the evaluation's "
                  "table spots, pink on the shelf). TCP: largest and final distance; block: largest distance of "
                  "any block; final TCP and moved block on each.", "",
                  "| sequence | steps | TCP d max | TCP d final | block d max | final TCP emb | final TCP off | "
                  "block moved emb / off (mm) |", "|---|---|---|---|---|---|---|---|"]
        for name in et:
            e_tcp, o_tcp = np.asarray(et[name]["tcp"]), np.asarray(ot[name]["tcp"])
            e_bl, o_bl = np.asarray(et[name]["blocks"]), np.asarray(ot[name]["blocks"])
            d_tcp = np.linalg.norm(e_tcp - o_tcp, axis=1)
            d_bl = np.linalg.norm(e_bl - o_bl, axis=2)
            start = start_scene(scene)[6:24].reshape(3, 6)[:, :3]
            moved_e = np.linalg.norm(e_bl[-1] - start, axis=1)
            moved_o = np.linalg.norm(o_bl[-1] - start, axis=1)
            k = int(np.argmax(np.maximum(moved_e, moved_o)))
            lines.append(f"| {name} | {len(e_tcp)} | {_mm(d_tcp.max())} | {_mm(d_tcp[-1])} | {_mm(d_bl.max())} | "
                         f"{np.round(e_tcp[-1], 3).tolist()} | {np.round(o_tcp[-1], 3).tolist()} | "
                         f"{COLORS[k]} {_mm(moved_e[k])} / {_mm(moved_o[k])} |")
    # Experts
    if results.get("experts"):
        by = {(r["backend"], r["scene"], r["task"]): r for r in results["experts"]}
        tasks = list(dict.fromkeys(r["task"] for r in results["experts"]))
        for scene in args.expert_scenes:
            lines += ["", f"### Scripted experts on both backends (scene {scene}, {args.expert_episodes} start states "
                      "per task)", "", "| task | embedded | official |", "|---|---|---|"]
            tot = {"embedded": 0, "calvin": 0}
            n = 0
            for task in tasks:
                e, o = by[("embedded", scene, task)], by[("calvin", scene, task)]
                notes = "".join(f" ({len(r['errors'])} errors: {r['errors'][0][:80]})" if r.get("errors") else ""
                                for r in (e, o))
                lines.append(f"| {task} | {e['successes']}/{e['episodes']} | {o['successes']}/{o['episodes']}{notes} |")
                tot["embedded"] += e["successes"]
                tot["calvin"] += o["successes"]
                n += e["episodes"]
            lines.append(f"| **all** | **{100 * tot['embedded'] / n:.1f}%** | **{100 * tot['calvin'] / n:.1f}%** |")
    return "\n".join(lines)


def main(args: Args) -> int:
    if importlib.util.find_spec("calvin_env") is None:
        from rftf_gym.calvin_backend import INSTALL_HINT

        print(f"bench/fidelity.py compares against the official simulator, and calvin_env is not importable.\n"
              f"{INSTALL_HINT}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    results: dict[str, Any] = {scene: {} for scene in set(args.scenes) | set(args.trajectory_scenes)}
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {(scene, backend): pool.submit(measure_backend, backend, scene, scene in args.trajectory_scenes)
                   for scene in results for backend in ("embedded", "calvin")}
        expert_futures = []
        if args.expert_scenes and args.expert_episodes > 0:
            from rftf_gym.tasks import TASK_NAMES

            expert_futures = [(b, s, t, pool.submit(run_experts, b, s, t, args.expert_episodes, args.seed))
                              for s in args.expert_scenes for t in TASK_NAMES for b in ("embedded", "calvin")]
        for (scene, backend), fut in futures.items():
            results[scene][backend] = fut.result()
            print(f"measured {backend} {scene}", flush=True)
        experts = []
        for backend, scene, task, fut in expert_futures:
            r = fut.result()
            r["backend"] = backend
            experts.append(r)
            print(f"{backend:8s} {scene} {task:28s} {r['successes']}/{r['episodes']}", flush=True)
        results["experts"] = experts
    text = report(results, args, time.perf_counter() - start)
    print(text)
    if args.json:
        atomic_write_text(args.json, json.dumps(results))
    if args.output:
        write_section(SECTION, text, Path(args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(tyro.cli(Args)))
