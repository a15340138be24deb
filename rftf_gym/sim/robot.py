"""The Franka Panda of `pybullet_data`, driven the way CALVIN drives it.

Official facts (``conf/robot/panda.yaml``, ``calvin_env/robot/robot.py``): arm joints 0-6, finger
joints 9 and 10 (0..0.04 each), position control with ``max_joint_force`` 200 and
``max_velocity`` 2, null-space IK, relative actions scaled by 0.02 m / 0.05 rad that accumulate on
an internal target pose. Unlike the official robot, the target is clamped to a band around the
actual TCP so that a blocked arm does not wind up.

The URDF is pybullet_data's Panda with two changes, written at runtime into a cache directory:
every visual mesh is replaced by a box around the link's collision mesh (software rendering of
the stock meshes costs ~16 ms per image, boxes ~1 ms), and a fixed ``tcp`` link is added where
CALVIN's TCP sits at the neutral pose (0.14 m along the hand's z axis; pybullet_data's
``panda_grasptarget`` at 0.105 m sits 0.035 m short of the official neutral TCP z 0.571).
Kinematics and collision meshes are pybullet_data's own.
"""

from __future__ import annotations

import math
import re
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
# Anti wind-up band: the target may lead the actual TCP by at most this much. Free motion at full
# speed lags ~1.5-2.5 cm, so the band barely bites then; a blocked arm stops accumulating at once.
TARGET_BAND_POS = 0.03
TARGET_BAND_ORN = 0.15
# Finger contact: high friction and a stiff-ish contact so a closed gripper holds a 1 kg block.
FINGER_FRICTION = 2.0
# IK iterations: a relative step moves the target by at most 2 cm from the current joints, which
# a few iterations resolve (and the next step starts again from the reached joints); an absolute
# target may be far away.
IK_ITERATIONS = {"relative": 20, "absolute": 50}

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


def panda_urdf_path() -> str:
    """Write (once per content) the simplified Panda URDF and return its path."""
    root = Path(pybullet_data.getDataPath()) / "franka_panda"
    text = (root / "panda.urdf").read_text()
    out_links = []
    for link_match in re.finditer(r'<link name="(\w+)">.*?</link>', text, re.S):
        link = link_match.group(1)
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
            p.changeDynamics(self.uid, j, lateralFriction=FINGER_FRICTION, spinningFriction=0.01,
                             rollingFriction=0.0, frictionAnchor=True, physicsClientId=client)
        n_dof = len(ARM_JOINTS) + len(FINGER_JOINTS)
        self._ll = [*LOWER_LIMITS, 0.0, 0.0]
        self._ul = [*UPPER_LIMITS, FINGER_MAX, FINGER_MAX]
        self._jr = [u - lo for lo, u in zip(self._ll, self._ul)]
        self._rest = [*NEUTRAL_JOINTS, FINGER_MAX, FINGER_MAX]
        assert len(self._rest) == n_dof
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
            pos, orn = self.tcp_pose()
            pos = np.asarray(pos)
            euler = np.asarray(p.getEulerFromQuaternion(orn))
            target_pos = self.target_pos + np.clip(action[:3], -1, 1) * MAX_REL_POS
            target_orn = self.target_orn + np.clip(action[3:6], -1, 1) * MAX_REL_ORN
            # No wind-up: keep the target within a band around the actual TCP (docs/calvin_facts.md).
            self.target_pos = pos + np.clip(target_pos - pos, -TARGET_BAND_POS, TARGET_BAND_POS)
            lead = np.clip(wrap_angle(target_orn - euler), -TARGET_BAND_ORN, TARGET_BAND_ORN)
            self.target_orn = wrap_angle(euler + lead)
        self.gripper_action = 1.0 if action[6] >= 0 else -1.0
        quat = p.getQuaternionFromEuler(self.target_orn)
        q = p.calculateInverseKinematics(
            self.uid, TCP_LINK, self.target_pos.tolist(), quat, lowerLimits=self._ll, upperLimits=self._ul,
            jointRanges=self._jr, restPoses=self._rest, maxNumIterations=IK_ITERATIONS[mode], residualThreshold=1e-4,
            physicsClientId=self.client)
        self._command_arm(q[:7])
        self._command_gripper()

    def _command_arm(self, q: np.ndarray | tuple[float, ...]) -> None:
        for j, v in zip(ARM_JOINTS, q):
            p.setJointMotorControl2(self.uid, j, p.POSITION_CONTROL, targetPosition=float(v),
                                    force=MAX_JOINT_FORCE, maxVelocity=MAX_VELOCITY, physicsClientId=self.client)

    def _command_gripper(self) -> None:
        width = FINGER_MAX if self.gripper_action > 0 else 0.0
        for j in FINGER_JOINTS:
            p.setJointMotorControl2(self.uid, j, p.POSITION_CONTROL, targetPosition=width, force=GRIPPER_FORCE,
                                    physicsClientId=self.client)

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
