"""The two CALVIN cameras, rendered with pybullet's CPU renderer (ER_TINY_RENDERER).

Speed: TinyRenderer walks the screen bounding box of every front-facing triangle (~0.07 us per
pixel of it, hidden or not; ~0.5 ms of fixed cost per 200x200 call), and the table fills the
whole static image, so a full static frame costs ~12 ms. The static camera never moves, so
`CompositedStaticCamera` draws it in three layers merged by depth: the fixed table (base and
shelf) rendered once; the table's moving parts (door, drawer and its tray, button, switch,
lights), re-rendered in a render-only client only when one of them moves or a light changes
colour; and per frame only the robot and the blocks, in a second render-only client. Each pixel
comes from the nearest layer: the same image as one full render, ~2 ms (measured at 200x200:
robot and blocks ~1.5 ms, fixed cost ~0.5 ms). Rendering only the screen rectangle around the
robot and blocks (an off-centre projection) was measured too and did not pay: the arm reaches
from the image's lower-left corner, so the rectangle is most of the frame. The gripper camera
renders the physics client itself (~1.6 ms at 84x84, most of it the table's faces).

Official parameters (``conf/cameras/cameras/{static,gripper}.yaml``): the static camera has fov 10,
near 0.01, far 10 and looks from (2.871, -2.167, 2.555) at (-0.026, -0.030, 0.392); the gripper
camera has fov 75, near 0.01, far 2, and sits on the hand (CALVIN's ``gripper_cam`` link: 0.1 m
behind the hand along its -x axis, rotated rpy (1.3, 0, -1.57)); it looks along that link's y axis
with -z as up, so it sees past the fingers.

Depth: pybullet's ``getCameraImage`` returns the z-buffer with every image; `zbuffer_to_depth`
turns it into metres along the view axis with each camera's near and far planes, as calvin_env's
``camera/camera.py`` (``z_buffer_to_real_distance``) does. ``render`` returns RGB only and costs
the same as before depth existed; ``render_rgbd`` returns the depth image too.
"""

from __future__ import annotations

import numpy as np
import pybullet as p

STATIC_LOOK_FROM = (2.871459009488717, -2.166602199425597, 2.555159848480571)
STATIC_LOOK_AT = (-0.026242351159453392, -0.0302329882979393, 0.3920000493526459)
STATIC_UP = (0.4041403970338857, 0.22629790978217404, 0.8862616969685161)
STATIC_FOV, STATIC_NEAR, STATIC_FAR = 10.0, 0.01, 10.0
GRIPPER_FOV, GRIPPER_NEAR, GRIPPER_FAR = 75.0, 0.01, 2.0
GRIPPER_CAM_XYZ = (-0.1, 0.0, 0.0)
GRIPPER_CAM_RPY = (1.3, 0.0, -1.57)
# Joint motion (m) below which the static camera keeps its cached image of the table's moving parts:
# a tenth of a static-camera pixel (~3.7 mm at the table).
PART_TOLERANCE = 3e-4


def _render_rgbd(client: int, width: int, height: int, view, proj) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (height, width, 3) and the depth buffer (height, width) of one image."""
    _, _, rgba, depth, _ = p.getCameraImage(
        width, height, view, proj, renderer=p.ER_TINY_RENDERER, shadow=0,
        flags=p.ER_NO_SEGMENTATION_MASK, physicsClientId=client)
    rgb = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3]
    return rgb, np.asarray(depth, dtype=np.float32).reshape(height, width)


def zbuffer_to_depth(zbuffer: np.ndarray, near: float, far: float) -> np.ndarray:
    """Metres along the view axis from pybullet's z-buffer (values in [0, 1]), as float32.

    calvin_env ``camera/camera.py``, ``z_buffer_to_real_distance``:
    depth = far * near / (far - (far - near) * zbuffer); 0 gives ``near``, 1 gives ``far``.
    """
    z = np.asarray(zbuffer, dtype=np.float64)
    return (far * near / (far - (far - near) * z)).astype(np.float32)


def _render(client: int, width: int, height: int, view, proj) -> np.ndarray:
    """One RGB image as uint8 (height, width, 3)."""
    return _render_rgbd(client, width, height, view, proj)[0].copy()


class StaticCamera:
    """The fixed camera in front of the table.

    Args:
        client: pybullet client id.
        width: image width in pixels.
        height: image height in pixels.
    """

    def __init__(self, client: int, width: int, height: int) -> None:
        self.client, self.width, self.height = client, width, height
        self.view = p.computeViewMatrix(STATIC_LOOK_FROM, STATIC_LOOK_AT, STATIC_UP)
        self.proj = p.computeProjectionMatrixFOV(STATIC_FOV, width / height, STATIC_NEAR, STATIC_FAR)

    def render(self) -> np.ndarray:
        """An RGB image (height, width, 3) uint8."""
        return _render(self.client, self.width, self.height, self.view, self.proj)

    def render_rgbd(self) -> tuple[np.ndarray, np.ndarray]:
        """The RGB image and the depth image (height, width) float32 in metres."""
        rgb, zbuffer = _render_rgbd(self.client, self.width, self.height, self.view, self.proj)
        return rgb.copy(), zbuffer_to_depth(zbuffer, STATIC_NEAR, STATIC_FAR)


class GripperCamera:
    """The camera on the Panda hand.

    Args:
        client: pybullet client id.
        width: image width in pixels.
        height: image height in pixels.
        hand_pose: callable returning the hand link's world (position, xyzw quaternion).
    """

    def __init__(self, client: int, width: int, height: int, hand_pose) -> None:
        self.client, self.width, self.height = client, width, height
        self.hand_pose = hand_pose
        self.proj = p.computeProjectionMatrixFOV(GRIPPER_FOV, width / height, GRIPPER_NEAR, GRIPPER_FAR)
        self.mount_quat = p.getQuaternionFromEuler(GRIPPER_CAM_RPY)

    def _view(self) -> list[float]:
        hand_pos, hand_orn = self.hand_pose()
        pos, orn = p.multiplyTransforms(hand_pos, hand_orn, GRIPPER_CAM_XYZ, self.mount_quat)
        rot = np.asarray(p.getMatrixFromQuaternion(orn)).reshape(3, 3)
        eye = np.asarray(pos)
        return p.computeViewMatrix(eye.tolist(), (eye + rot[:, 1]).tolist(), (-rot[:, 2]).tolist())

    def render(self) -> np.ndarray:
        """An RGB image (height, width, 3) uint8."""
        return _render(self.client, self.width, self.height, self._view(), self.proj)

    def render_rgbd(self) -> tuple[np.ndarray, np.ndarray]:
        """The RGB image and the depth image (height, width) float32 in metres."""
        rgb, zbuffer = _render_rgbd(self.client, self.width, self.height, self._view(), self.proj)
        return rgb.copy(), zbuffer_to_depth(zbuffer, GRIPPER_NEAR, GRIPPER_FAR)


class CompositedStaticCamera:
    """The static camera, drawn in three layers merged by depth.

    Layers (see the module docstring): the fixed table, rendered once; the table's moving parts,
    re-rendered only when a joint moved more than `PART_TOLERANCE` since they were drawn or a
    light changed colour; the robot and the blocks, rendered every frame.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        background_urdf: table URDF with visuals on the fixed links only.
        moving_urdf: table URDF with visuals on the moving links only (same joints).
        robot_urdf: the robot URDF (same as the simulated one).
        robot_base: robot base position.
        blocks: per block (half extents, rgba), in the order poses are given to `render`.
        tray: the drawer's floor and walls as (centre, size, rgb) boxes in the drawer joint frame;
            drawn only while the drawer is open (closed, the table top hides them).
        drawer: (table joint index, joint origin, joint axis) of the drawer.
    """

    def __init__(self, width: int, height: int, background_urdf: str, moving_urdf: str, robot_urdf: str,
                 robot_base: tuple[float, float, float],
                 blocks: list[tuple[tuple[float, float, float], tuple[float, float, float, float]]],
                 tray: list, drawer: tuple[int, tuple[float, float, float], tuple[float, float, float]]) -> None:
        self.width, self.height = width, height
        self.view = p.computeViewMatrix(STATIC_LOOK_FROM, STATIC_LOOK_AT, STATIC_UP)
        self.proj = p.computeProjectionMatrixFOV(STATIC_FOV, width / height, STATIC_NEAR, STATIC_FAR)
        bg_client = p.connect(p.DIRECT)
        p.loadURDF(background_urdf, useFixedBase=True, physicsClientId=bg_client)
        self.bg_rgb, self.bg_depth = _render_rgbd(bg_client, width, height, self.view, self.proj)
        self.bg_rgb = self.bg_rgb.copy()
        p.disconnect(bg_client)
        # Render-only client of the table's moving parts.
        self.parts_client = p.connect(p.DIRECT)
        self.table = p.loadURDF(moving_urdf, useFixedBase=True, physicsClientId=self.parts_client)
        vis = p.createVisualShapeArray(
            shapeTypes=[p.GEOM_BOX] * len(tray), halfExtents=[[s / 2 for s in size] for _, size, _ in tray],
            visualFramePositions=[centre for centre, _, _ in tray], rgbaColors=[[*rgb, 1] for _, _, rgb in tray],
            physicsClientId=self.parts_client)
        self.tray = p.createMultiBody(0, -1, vis, basePosition=(0, 0, -10), physicsClientId=self.parts_client)
        self.drawer_joint, self.drawer_origin, self.drawer_axis = drawer
        self._parts_q: dict[int, float] | None = None
        self._colors: dict[int, tuple[float, ...]] = {}
        self.parts_rgb, self.parts_depth = self.bg_rgb, self.bg_depth
        # Render-only client of the robot and the blocks.
        self.client = p.connect(p.DIRECT)
        self.robot = p.loadURDF(robot_urdf, robot_base, useFixedBase=True, physicsClientId=self.client)
        self.blocks = []
        for half, rgba in blocks:
            vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=rgba, physicsClientId=self.client)
            self.blocks.append(p.createMultiBody(0, -1, vis, physicsClientId=self.client))

    def _update_parts(self, table_q: dict[int, float], link_colors: dict[int, tuple[float, ...]]) -> None:
        """Re-render the moving table parts over the background if they moved or changed colour."""
        moved = self._parts_q is None or any(abs(v - self._parts_q[j]) > PART_TOLERANCE for j, v in table_q.items())
        recolored = any(self._colors.get(link) != rgba for link, rgba in link_colors.items())
        if not (moved or recolored):
            return
        c = self.parts_client
        for j, v in table_q.items():
            p.resetJointState(self.table, j, v, physicsClientId=c)
        q = table_q[self.drawer_joint]
        tray_pos = np.asarray(self.drawer_origin) + q * np.asarray(self.drawer_axis) if q > 0.005 else (0, 0, -10)
        p.resetBasePositionAndOrientation(self.tray, tray_pos, (0, 0, 0, 1), physicsClientId=c)
        for link, rgba in link_colors.items():
            if self._colors.get(link) != rgba:
                p.changeVisualShape(self.table, link, rgbaColor=rgba, physicsClientId=c)
                self._colors[link] = rgba
        self._parts_q = dict(table_q)
        rgb, depth = _render_rgbd(c, self.width, self.height, self.view, self.proj)
        nearer = depth < self.bg_depth
        self.parts_rgb = np.where(nearer[:, :, None], rgb, self.bg_rgb)
        self.parts_depth = np.where(nearer, depth, self.bg_depth)

    def _render_layers(self, robot_q: dict[int, float], table_q: dict[int, float],
                       block_poses: list[tuple[tuple[float, ...], tuple[float, ...]]],
                       link_colors: dict[int, tuple[float, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mirror the state; the merged RGB, the top layer's z-buffer and where it is nearer."""
        self._update_parts(table_q, link_colors)
        c = self.client
        for j, v in robot_q.items():
            p.resetJointState(self.robot, j, v, physicsClientId=c)
        for uid, (pos, orn) in zip(self.blocks, block_poses):
            p.resetBasePositionAndOrientation(uid, pos, orn, physicsClientId=c)
        rgb, zbuffer = _render_rgbd(c, self.width, self.height, self.view, self.proj)
        nearer = zbuffer < self.parts_depth
        return np.where(nearer[:, :, None], rgb, self.parts_rgb), zbuffer, nearer

    def render(self, robot_q: dict[int, float], table_q: dict[int, float],
               block_poses: list[tuple[tuple[float, ...], tuple[float, ...]]],
               link_colors: dict[int, tuple[float, ...]]) -> np.ndarray:
        """Mirror the simulated state and render.

        Args:
            robot_q: robot joint index -> position.
            table_q: table joint index -> position.
            block_poses: (position, xyzw quaternion) per block.
            link_colors: table link index -> rgba (the lights).

        Returns:
            An RGB image (height, width, 3) uint8.
        """
        return self._render_layers(robot_q, table_q, block_poses, link_colors)[0]

    def render_rgbd(self, robot_q: dict[int, float], table_q: dict[int, float],
                    block_poses: list[tuple[tuple[float, ...], tuple[float, ...]]],
                    link_colors: dict[int, tuple[float, ...]]) -> tuple[np.ndarray, np.ndarray]:
        """As `render`, with the depth image (height, width) float32 in metres: the nearest
        layer's z-buffer at each pixel (all layers share one projection) through
        `zbuffer_to_depth`."""
        rgb, zbuffer, nearer = self._render_layers(robot_q, table_q, block_poses, link_colors)
        return rgb, zbuffer_to_depth(np.where(nearer, zbuffer, self.parts_depth), STATIC_NEAR, STATIC_FAR)

    def close(self) -> None:
        """Free the render-only clients."""
        for client in (self.client, self.parts_client):
            if p.isConnected(client):
                p.disconnect(client)
