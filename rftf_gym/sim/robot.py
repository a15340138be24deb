"""CALVIN's Franka Panda (calvin_env ``conf/robot/panda_longer_finger.yaml``), driven as CALVIN drives it.

Official facts (``conf/robot/panda.yaml``, ``calvin_env/robot/robot.py``, ``robot/mixed_ik.py``):
arm joints 0-6, finger joints 9 and 10 (0..0.04 each), position control with
``max_joint_force`` 200 and ``max_velocity`` 2, pybullet's null-space IK with limits +-7 clipped
to the real limits, relative actions scaled by 0.02 m / 0.05 rad that accumulate on an internal
target pose, a gripper that closes with 200 N and opens with 2 N. Both backends pull the target
back into the same anti wind-up band around the TCP (`clamp_target`).

The URDF is pybullet_data's Panda (the same arm, hand and kinematics as calvin_env's) with three
changes, written at runtime into a cache directory: the fingers are CALVIN's longer fingers with
their gel pads, as boxes measured from calvin_env's meshes (`LONGER_FINGER_BOXES`); every other
visual mesh is replaced by a box around the link's collision mesh (software rendering of the stock
meshes costs ~16 ms per image, boxes ~1 ms); and a fixed ``tcp`` link sits 0.14 m along the hand's
z axis, as calvin_env's ``tcp_joint``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pybullet as p
import pybullet_data

from rftf_gym.conventions import MAX_REL_ORN, MAX_REL_POS, wrap_angle
from rftf_gym.sim.layout import NEUTRAL_JOINTS, ROBOT_BASE_POS
from rftf_gym.sim.urdf_cache import write_cached_urdf

ARM_JOINTS = (0, 1, 2, 3, 4, 5, 6)
FINGER_JOINTS = (9, 10)
HAND_LINK = 8
TCP_LINK = 12  # the link appended to the URDF below (11 is pybullet_data's panda_grasptarget).
TCP_OFFSET = 0.14  # metres along the hand z axis, see module docstring.
# conf/robot/panda.yaml
MAX_JOINT_FORCE = 200.0
MAX_VELOCITY = 2.0
GRIPPER_FORCE = 200.0
LOWER_LIMITS = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
UPPER_LIMITS = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)
FINGER_MAX = 0.04
# Anti wind-up band, the same on both backends (rftf_gym.calvin_backend applies it to the official
# robot): before each relative action the target pose is pulled back to at most TARGET_BAND_POS m
# (position, norm) and TARGET_BAND_ORN rad (each euler angle) from the measured TCP pose. Free
# motion leads by at most 0.06 m along one axis at full speed (0.27 m with all six axes saturated,
# measured on calvin_env), so it acts on blocked motion only.
TARGET_BAND_POS = 0.2
TARGET_BAND_ORN = 0.5
# Inverse kinematics as calvin_env's robot/mixed_ik.py (get_bullet_ik): pybullet's null-space IK
# with limits -7..7 and ranges 7 for every degree of freedom, the neutral joints and open fingers as
# rest pose, pybullet's default iterations; the result clipped to the real arm limits.
IK_NULLSPACE_LIMIT = 7.0
# The gripper (calvin_env robot.py control_gripper): opens with gripper_force / 100 and closes
# with gripper_force, at most 1 m/s; a gear constraint keeps the fingers centred (robot.py load).
GRIPPER_OPEN_FORCE = GRIPPER_FORCE / 100
GRIPPER_MAX_VELOCITY = 1.0
# CALVIN's robot is calvin_env's conf/robot/panda_longer_finger.yaml (data/franka_panda/
# panda_longer_finger.urdf): pybullet_data's Panda with longer fingers (collision mesh
# longer_finger_v2.obj) that each carry a gel pad (finger_*_tip links, digit_gel_only.STL at
# (0.0009, 0.021, 0.066) in the finger frame). Measured extents of those meshes, as boxes in the
# left finger's link frame (its origin 0.0584 m along the hand axis, y towards the left finger's
# side; the right finger is the same turned by pi about z): the finger's base block, the slope of
# its convex hull, its thin plate down to the tip, and the pad on the plate's inner face. The pads
# span 0.1291..0.1541 m along the hand axis and the plates reach 0.1548 m, so with the TCP at
# 0.14 m the fingertips reach 0.015 m past the TCP (pybullet_data's fingers stop 0.028 m short).
LONGER_FINGER_BOXES: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((-0.0105, 0.0062, 0.0002), (0.0105, 0.0270, 0.0340)),
    ((-0.0105, 0.0039, 0.0340), (0.0105, 0.0140, 0.0600)),
    ((-0.0088, 0.0039, 0.0600), (0.0088, 0.0068, 0.0964)),
    ((-0.0083, 0.0009, 0.0707), (0.0102, 0.0049, 0.0957)),
)
# Finger contact (panda_longer_finger.urdf, <contact> of the finger links): lateral friction 1.0,
# spinning friction 0.1, anchored friction.
FINGER_FRICTION = 1.0
FINGER_SPINNING_FRICTION = 0.1


def clamp_target(target_pos: np.ndarray, target_orn: np.ndarray, tcp_pos: np.ndarray,
                 tcp_orn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pull a target pose back into the anti wind-up band around the measured TCP pose.

    The position moves towards the TCP until it is at most `TARGET_BAND_POS` away; each euler
    angle moves by its excess over `TARGET_BAND_ORN` only, so the target keeps its own 2 pi branch.

    Args:
        target_pos: target position (3).
        target_orn: target euler xyz (3).
        tcp_pos: measured TCP position (3).
        tcp_orn: measured TCP euler xyz (3).

    Returns:
        The clamped (position, euler) as new arrays.
    """
    tcp_pos = np.asarray(tcp_pos, dtype=float)
    lead = np.asarray(target_pos, dtype=float) - tcp_pos
    dist = float(np.linalg.norm(lead))
    pos = tcp_pos + lead * (TARGET_BAND_POS / dist) if dist > TARGET_BAND_POS else tcp_pos + lead
    orn = np.asarray(target_orn, dtype=float)
    orn_lead = wrap_angle(orn - np.asarray(tcp_orn, dtype=float))
    return pos, orn - (orn_lead - np.clip(orn_lead, -TARGET_BAND_ORN, TARGET_BAND_ORN))

_LINK_RGB = {
    "panda_hand": (0.25, 0.25, 0.25),
    "panda_leftfinger": (0.15, 0.15, 0.15),
    "panda_rightfinger": (0.15, 0.15, 0.15),
    "panda_link7": (0.3, 0.3, 0.3),
    "panda_link0": (0.9, 0.9, 0.9),
}


def _rpy_matrix(rpy: tuple[float, float, float]) -> np.ndarray:
    """URDF fixed-axis roll/pitch/yaw -> rotation matrix (Rz @ Ry @ Rx)."""
    r, pch, y = rpy
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(pch), math.sin(pch), math.cos(y), math.sin(y)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _mesh_bounds(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds of an OBJ mesh's vertices."""
    verts = [line.split()[1:4] for line in path.read_text().splitlines() if line.startswith("v ")]
    arr = np.asarray(verts, dtype=float)
    return arr.min(0), arr.max(0)


def _simplify_visual(match: re.Match, root: Path, link: str) -> str:
    """Replace one <visual> block's mesh with a box around the link's collision mesh."""
    block = match.group(0)
    origin = re.search(r'<origin\s+rpy="([^"]+)"\s+xyz="([^"]+)"\s*/>', block)
    rpy = tuple(float(v) for v in origin.group(1).split()) if origin else (0.0, 0.0, 0.0)
    xyz = np.array([float(v) for v in origin.group(2).split()]) if origin else np.zeros(3)
    mesh = re.search(r'filename="package://meshes/\w+/(\w+)\.obj"', block).group(1)
    lo, hi = _mesh_bounds(root / "meshes" / "collision" / f"{mesh}.obj")
    # Shrink a little: boxes around rounded links look bulkier than the links.
    size = (hi - lo) * 0.9
    centre = xyz + _rpy_matrix(rpy) @ ((lo + hi) / 2)
    rgb = _LINK_RGB.get(link, (0.95, 0.95, 0.95))
    return (f'<visual><origin rpy="{rpy[0]} {rpy[1]} {rpy[2]}" xyz="{centre[0]:.5f} {centre[1]:.5f} '
            f'{centre[2]:.5f}"/><geometry><box size="{size[0]:.5f} {size[1]:.5f} {size[2]:.5f}"/>'
            f'</geometry><material name="{link}_m"><color rgba="{rgb[0]} {rgb[1]} {rgb[2]} 1"/>'
            f"</material></visual>")


def _finger_shapes(link: str) -> str:
    """Visual and collision boxes of one longer finger (`LONGER_FINGER_BOXES`), in its link frame."""
    sign = 1.0 if link == "panda_leftfinger" else -1.0  # the right finger is the left one turned by pi
    rgb = _LINK_RGB[link]
    items = []
    for k, (lo, hi) in enumerate(LONGER_FINGER_BOXES):
        a, b = sign * np.array(lo[:2]), sign * np.array(hi[:2])
        lo_xy, hi_xy = np.minimum(a, b), np.maximum(a, b)
        centre = [*(lo_xy + hi_xy) / 2, (lo[2] + hi[2]) / 2]
        size = [*(hi_xy - lo_xy), hi[2] - lo[2]]
        origin = f'<origin rpy="0 0 0" xyz="{centre[0]:.5f} {centre[1]:.5f} {centre[2]:.5f}"/>'
        geom = f'<geometry><box size="{size[0]:.5f} {size[1]:.5f} {size[2]:.5f}"/></geometry>'
        items.append(f'<visual>{origin}{geom}<material name="{link}_m{k}"><color rgba="{rgb[0]} {rgb[1]} '
                     f'{rgb[2]} 1"/></material></visual><collision>{origin}{geom}</collision>')
    return "".join(items)


def panda_urdf_path() -> str:
    """Write (once per content) the simplified Panda URDF and return its path."""
    root = Path(pybullet_data.getDataPath()) / "franka_panda"
    text = (root / "panda.urdf").read_text()
    out_links = []
    for link_match in re.finditer(r'<link name="(\w+)">.*?</link>', text, re.S):
        link = link_match.group(1)
        if link in ("panda_leftfinger", "panda_rightfinger"):
            body = re.sub(r"<visual>.*?</visual>", "", link_match.group(0), flags=re.S)
            body = re.sub(r"<collision>.*?</collision>", "", body, flags=re.S)
            body = body.replace("</link>", f"{_finger_shapes(link)}</link>")
        else:
            body = re.sub(r"<visual>.*?</visual>", lambda m: _simplify_visual(m, root, link), link_match.group(0),
                          flags=re.S)
        out_links.append((link_match.group(0), body))
    for old, new in out_links:
        text = text.replace(old, new)
    text = text.replace("package://meshes/collision/", f"{root}/meshes/collision/")
    tcp = (f'<joint name="tcp_joint" type="fixed"><parent link="panda_hand"/><child link="tcp"/>'
           f'<origin rpy="0 0 0" xyz="0 0 {TCP_OFFSET}"/></joint><link name="tcp"><inertial>'
           f'<origin rpy="0 0 0" xyz="0 0 0"/><mass value="0.0001"/>'
           f'<inertia ixx="1e-6" ixy="0" ixz="0" iyy="1e-6" iyz="0" izz="1e-6"/></inertial></link>')
    text = text.replace("</robot>", f"{tcp}</robot>")
    return write_cached_urdf("panda_simple.urdf", text)


class Panda:
    """The Panda arm with CALVIN's control conventions.

    Args:
        client: pybullet physics client id.
    """

    def __init__(self, client: int) -> None:
        self.client = client
        self.uid = p.loadURDF(panda_urdf_path(), ROBOT_BASE_POS, (0, 0, 0, 1), useFixedBase=True,
                              physicsClientId=client)
        for j in FINGER_JOINTS:
            p.changeDynamics(self.uid, j, lateralFriction=FINGER_FRICTION, spinningFriction=FINGER_SPINNING_FRICTION,
                             rollingFriction=0.0, frictionAnchor=True, physicsClientId=client)
        n_dof = len(ARM_JOINTS) + len(FINGER_JOINTS)
        self._ll = [-IK_NULLSPACE_LIMIT] * n_dof
        self._ul = [IK_NULLSPACE_LIMIT] * n_dof
        self._jr = [IK_NULLSPACE_LIMIT] * n_dof
        self._rest = [*NEUTRAL_JOINTS, FINGER_MAX, FINGER_MAX]
        gear = p.createConstraint(self.uid, FINGER_JOINTS[0], self.uid, FINGER_JOINTS[1], jointType=p.JOINT_GEAR,
                                  jointAxis=[1, 0, 0], parentFramePosition=[0, 0, 0], childFramePosition=[0, 0, 0],
                                  physicsClientId=client)
        p.changeConstraint(gear, gearRatio=-1, erp=0.1, maxForce=50, physicsClientId=client)
        self.gripper_action = 1.0
        self.target_pos = np.zeros(3)
        self.target_orn = np.zeros(3)

    # ------------------------------------------------------------------ state
    def reset(self, joints: np.ndarray | None = None, gripper_width: float = 2 * FINGER_MAX,
              gripper_action: float = 1.0) -> None:
        """Set the arm joints (neutral when None) and the gripper, and re-centre the target pose.

        Args:
            joints: 7 arm joint angles.
            gripper_width: opening width 0..0.08 m, split evenly over the two fingers.
            gripper_action: last gripper command, -1 close / +1 open.
        """
        q = NEUTRAL_JOINTS if joints is None else joints
        for j, v in zip(ARM_JOINTS, q):
            p.resetJointState(self.uid, j, float(v), 0.0, physicsClientId=self.client)
        half = float(np.clip(gripper_width / 2, 0.0, FINGER_MAX))
        for j in FINGER_JOINTS:
            p.resetJointState(self.uid, j, half, 0.0, physicsClientId=self.client)
        self.gripper_action = 1.0 if gripper_action >= 0 else -1.0
        pos, orn = self.tcp_pose()
        self.target_pos = np.array(pos)
        self.target_orn = np.array(p.getEulerFromQuaternion(orn))
        self._command_arm(q)
        self._command_gripper()

    def tcp_pose(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """World position and xyzw quaternion of the TCP."""
        state = p.getLinkState(self.uid, TCP_LINK, computeForwardKinematics=True, physicsClientId=self.client)
        return state[4], state[5]

    def hand_pose(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """World position and xyzw quaternion of the hand link (camera mount)."""
        state = p.getLinkState(self.uid, HAND_LINK, computeForwardKinematics=True, physicsClientId=self.client)
        return state[4], state[5]

    def joint_positions(self) -> np.ndarray:
        """Arm joints (7) followed by the finger joints (2)."""
        states = p.getJointStates(self.uid, [*ARM_JOINTS, *FINGER_JOINTS], physicsClientId=self.client)
        return np.array([s[0] for s in states])

    def get_obs(self) -> np.ndarray:
        """CALVIN ``robot_obs`` (15): tcp pos, tcp euler, gripper width, 7 joints, gripper action."""
        pos, orn = self.tcp_pose()
        q = self.joint_positions()
        return np.array([*pos, *p.getEulerFromQuaternion(orn), q[7] + q[8], *q[:7], self.gripper_action])

    # ---------------------------------------------------------------- control
    def apply_action(self, action: np.ndarray, mode: str = "relative") -> None:
        """Turn one 7-d action into joint motor targets (held for the whole control step).

        Args:
            action: relative (dpos 3, deuler 3, gripper) in [-1, 1] or absolute (pos 3, euler 3,
                gripper).
            mode: ``"relative"`` or ``"absolute"``.
        """
        action = np.asarray(action, dtype=float)
        if mode == "absolute":
            self.target_pos = action[:3].copy()
            self.target_orn = action[3:6].copy()
        else:
            # No wind-up (clamp_target), then the official target update (calvin_env robot.py
            # relative_to_absolute with use_target_pose).
            pos, orn = self.tcp_pose()
            self.target_pos, self.target_orn = clamp_target(self.target_pos, self.target_orn, pos,
                                                            p.getEulerFromQuaternion(orn))
            # np.minimum/np.maximum: the values of np.clip without its per-call dispatch cost.
            self.target_pos = self.target_pos + np.minimum(np.maximum(action[:3], -1.0), 1.0) * MAX_REL_POS
            self.target_orn = self.target_orn + np.minimum(np.maximum(action[3:6], -1.0), 1.0) * MAX_REL_ORN
        self.gripper_action = 1.0 if action[6] >= 0 else -1.0
        quat = p.getQuaternionFromEuler(self.target_orn)
        q = p.calculateInverseKinematics(
            self.uid, TCP_LINK, self.target_pos.tolist(), quat, lowerLimits=self._ll, upperLimits=self._ul,
            jointRanges=self._jr, restPoses=self._rest, physicsClientId=self.client)
        self._command_arm([min(max(v, lo), hi) for v, lo, hi in zip(q[:7], LOWER_LIMITS, UPPER_LIMITS)])
        self._command_gripper()

    def _command_arm(self, q: Sequence[float]) -> None:
        for j, v in zip(ARM_JOINTS, q):
            p.setJointMotorControl2(self.uid, j, p.POSITION_CONTROL, targetPosition=float(v),
                                    force=MAX_JOINT_FORCE, maxVelocity=MAX_VELOCITY, physicsClientId=self.client)

    def _command_gripper(self) -> None:
        opened = self.gripper_action > 0
        force = GRIPPER_OPEN_FORCE if opened else GRIPPER_FORCE
        for j in FINGER_JOINTS:
            p.setJointMotorControl2(self.uid, j, p.POSITION_CONTROL, targetPosition=FINGER_MAX if opened else 0.0,
                                    force=force, maxVelocity=GRIPPER_MAX_VELOCITY, physicsClientId=self.client)

    def get_info(self) -> dict:
        """The official ``robot_info`` entries (without contacts, which the scene adds)."""
        pos, orn = self.tcp_pose()
        q = self.joint_positions()
        return {
            "tcp_pos": pos,
            "tcp_orn": p.getEulerFromQuaternion(orn),
            "gripper_opening_width": float(q[7] + q[8]),
            "arm_joint_states": q[:7].tolist(),
            "gripper_action": self.gripper_action,
            "uid": self.uid,
        }
