"""Per-scene geometry of the CALVIN play table (scenes A-D), built from boxes and cylinders.

Every number is in world metres *after* CALVIN's ``global_scaling: 0.8`` and was read off the
official files (``mees/calvin_env`` ``data/calvin_table_{A,B,C,D}/urdf/*.urdf`` joint origins and
limits, the extents of the link meshes, ``conf/scene/calvin_scene_*.yaml`` surfaces, and
``data/blocks/*.urdf``). Nothing of the official meshes is used: `table_urdf` writes a URDF made
only of primitives, one multibody whose links carry the official names so that contacts read the
same on both backends.

The table in world coordinates (all scenes):

- table top slab: x -0.44..0.44, y -0.18..0.02, top surface z 0.44 (block centres rest at 0.46).
- shelf (``plank_link``): y 0.02..0.16, top z 0.44, behind a sliding door that runs along a front
  face tilted 30 degrees back from vertical (the door joint frame is rotated 60 deg about x).
- drawer under the top: front at y -0.18, tray floor top z 0.34, pulls out along -y.
- button on the table top (front), switch lever on the tilted face of a cabinet side block,
  LED bar and lightbulb on top of the cabinet (z 0.648).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rftf_gym.conventions import BUTTON_RANGE, DRAWER_RANGE, SWITCH_RANGE

# CALVIN conf/scene/calvin_scene_*.yaml and conf/robot/panda.yaml.
GLOBAL_SCALING = 0.8
ROBOT_BASE_POS = (-0.34, -0.46, 0.24)
NEUTRAL_JOINTS = (-1.21779206, 1.03987646, 2.11978261, -2.34205014, -0.87015947, 1.64119353, 0.55344866)

TABLE_TOP_Z = 0.44  # top surface of base_link's slab and plank_link (official mesh, scaled).
SHELF_Y = (0.02, 0.16)
# Tilt of the cabinet front / sliding door: the official base__slide joint has rpy (1.0472, 0, 0),
# so the door's local y axis runs up the face along (0, cos 60, sin 60).
SLANT_RPY = (math.pi / 3, 0.0, 0.0)
SLANT_DIR = (0.0, 0.5, math.sqrt(3) / 2)
SLANT_NORMAL = (0.0, -math.sqrt(3) / 2, 0.5)
SLANT_FOOT = (0.02, 0.44)  # (y, z) where the tilted face meets the table top.

BUTTON_THRESHOLD = BUTTON_RANGE / 2  # Button.trigger_threshold = (lower + upper) / 2.
SWITCH_THRESHOLD = SWITCH_RANGE / 2  # Switch.trigger_threshold = (lower + upper) / 2.
DOOR_WIDTH = 0.28  # travel-defining width of the sliding door (the openings it leaves), all scenes.
# Parts measured on the official table with ray casts (bench/fidelity.py; u up the tilted face from
# its foot, n out of it): the door panel is 0.289 wide, its front 0.022 out of the face, from the
# face's foot up to u 0.235; the handle is a block 0.046 wide in the door's middle, its front
# 0.081 out of the face, from u 0.031 to 0.189.
DOOR_PANEL_WIDTH = 0.289
DOOR_PANEL_U = 0.235
DOOR_HANDLE_WIDTH = 0.046
DOOR_HANDLE_U_RANGE = (0.031, 0.189)
DOOR_HANDLE_N_RANGE = (0.022, 0.081)
# The drawer's front (closed) is at y -0.183, 0.45 wide, z 0.295..0.405; its handle bar spans the
# drawer's x +- 0.125, y -0.262..-0.236 and z 0.338..0.382, on a standoff at each end.
DRAWER_FRONT_Y = -0.183
DRAWER_HANDLE_HALF_X = 0.125
DRAWER_HANDLE_Y_RANGE = (-0.262, -0.236)
DRAWER_HANDLE_Z_RANGE = (0.338, 0.382)
# The official base__switch origin (y 0.0609, z 0.4949) lies 0.068 m up the tilted face.
SWITCH_U = 0.068

# data/blocks/block_*_{small,middle,big}.urdf: boxes of 0.05/0.07/0.1 x 0.05 x 0.05, scaled 0.8.
BLOCK_SIZES: dict[str, tuple[float, float, float]] = {
    "small": (0.04, 0.04, 0.04),
    "middle": (0.056, 0.04, 0.04),
    "big": (0.08, 0.04, 0.04),
}
BLOCK_COLORS: dict[str, tuple[float, float, float, float]] = {
    # rgba of the official block URDFs (pink is magenta there).
    "red": (1.0, 0.0, 0.0, 1.0),
    "blue": (0.0, 0.0, 1.0, 1.0),
    "pink": (1.0, 0.0, 1.0, 1.0),
}
BLOCK_MASS = 1.0
BLOCK_FRICTION = 0.7


@dataclass(frozen=True)
class SceneLayout:
    """Everything that differs between scenes A-D (official URDFs and scene YAMLs, renders).

    Attributes:
        name: scene letter.
        button_x: x of the button and the LED above it.
        switch_x: x of the switch lever and the lightbulb above it.
        light_y: y of the lightbulb centre.
        door_x0: left edge x of the sliding door at joint 0 (door spans door_x0..door_x0+0.28).
        slider_range: travel of the sliding door (joint upper limit).
        drawer_x: x of the drawer centre.
        shelf_x: x extent of the shelf opening (plank_link).
        table_rgb: wood colour of the table, drawer and door.
        block_sizes: block colour -> size name.
        surfaces: CALVIN yaml ``surfaces``: name -> ((x_lo, y_lo), (x_hi, y_hi)) for block sampling.
    """

    name: str
    button_x: float
    switch_x: float
    light_y: float
    door_x0: float
    slider_range: float
    drawer_x: float
    shelf_x: tuple[float, float]
    table_rgb: tuple[float, float, float]
    block_sizes: dict[str, str]
    surfaces: dict[str, tuple[tuple[float, float], tuple[float, float]]]

    @property
    def slider_center_x(self) -> float:
        """Centre x of the sliding door at joint 0."""
        return self.door_x0 + DOOR_WIDTH / 2

    @property
    def slider_mid_x(self) -> float:
        """x splitting the shelf into its slider_left and slider_right halves."""
        (l_lo, _), (l_hi, _) = self.surfaces["slider_left"]
        (r_lo, _), (r_hi, _) = self.surfaces["slider_right"]
        return 0.5 * (l_hi + r_lo)

    def block_size(self, color: str) -> tuple[float, float, float]:
        """Box size (x, y, z) of a block in this scene."""
        return BLOCK_SIZES[self.block_sizes[color]]


# Table colours: mean wood tone of the official renders (measured, docs/calvin_facts.md), as 0..1 rgb.
LAYOUTS: dict[str, SceneLayout] = {
    "A": SceneLayout(
        name="A",
        button_x=-0.28,
        switch_x=0.30,
        light_y=0.16,
        door_x0=-0.10,
        slider_range=0.28,
        drawer_x=0.10,
        shelf_x=(-0.36, 0.16),
        table_rgb=(121 / 255, 70 / 255, 46 / 255),
        block_sizes={"red": "middle", "blue": "big", "pink": "small"},
        surfaces={
            "table": ((-0.2, -0.15), (0.35, -0.03)),
            "slider_left": ((-0.32, 0.05), (-0.16, 0.12)),
            "slider_right": ((-0.05, 0.05), (0.13, 0.12)),
        },
    ),
    "B": SceneLayout(
        name="B",
        button_x=0.28,
        switch_x=-0.32,
        light_y=0.16,  # light_link's bounding-box centre on the official table, as in A, C and D
        door_x0=0.088,
        slider_range=0.304,
        drawer_x=0.18,
        shelf_x=(-0.18, 0.34),
        table_rgb=(244 / 255, 196 / 255, 140 / 255),
        block_sizes={"red": "small", "blue": "big", "pink": "middle"},
        surfaces={
            "table": ((-0.35, -0.15), (0.15, -0.03)),
            "slider_left": ((-0.12, 0.05), (0.06, 0.12)),
            "slider_right": ((0.15, 0.05), (0.33, 0.12)),
        },
    ),
    "C": SceneLayout(
        name="C",
        button_x=-0.12,
        switch_x=-0.32,
        light_y=0.16,
        door_x0=0.06,
        slider_range=0.24,
        drawer_x=0.10,
        shelf_x=(-0.18, 0.34),
        table_rgb=(159 / 255, 108 / 255, 64 / 255),
        block_sizes={"red": "big", "blue": "small", "pink": "middle"},
        surfaces={
            "table": ((0.0, -0.15), (0.35, -0.03)),
            "slider_left": ((-0.12, 0.05), (0.06, 0.12)),
            "slider_right": ((0.15, 0.05), (0.3, 0.12)),
        },
    ),
    "D": SceneLayout(
        name="D",
        button_x=-0.12,
        switch_x=0.30,
        light_y=0.16,
        door_x0=-0.10,
        slider_range=0.28,
        drawer_x=0.18,
        shelf_x=(-0.36, 0.16),
        table_rgb=(156 / 255, 117 / 255, 78 / 255),
        block_sizes={"red": "middle", "blue": "small", "pink": "big"},
        surfaces={
            "table": ((0.0, -0.15), (0.35, -0.03)),
            "slider_left": ((-0.32, 0.05), (-0.16, 0.12)),
            "slider_right": ((-0.05, 0.05), (0.13, 0.12)),
        },
    ),
}

def sample_articulation(layout: SceneLayout, rng: np.random.Generator) -> list[float]:
    """Random states of the table's joints and lights: the first six entries of a scene_obs.

    Both backends draw random layouts' doors, drawer, switch and lights with this (blocks are
    drawn separately), so that every task whose condition is about them can start from a random
    layout, as from the evaluation's initial states (calvin_agent/evaluation/utils.py
    get_env_state_for_initial_condition: drawer, door, lightbulb and LED each either way). The
    door and drawer are drawn anywhere in their travel, the switch at either end stop with the
    lightbulb following it (calvin_env Switch), the button released, the LED on or off.

    Args:
        layout: the scene.
        rng: random generator; four draws, in the order door, drawer, switch, LED.

    Returns:
        [door, drawer, button, switch, lightbulb, led].
    """
    door = float(rng.uniform(0, layout.slider_range))
    drawer = float(rng.uniform(0, DRAWER_RANGE))
    switch = SWITCH_RANGE * float(rng.integers(2))
    return [door, drawer, 0.0, switch, float(switch > SWITCH_THRESHOLD), float(rng.integers(2))]


# ---------------------------------------------------------------------------------------------
# URDF of the table, written from primitives.

Vec3 = tuple[float, float, float]
_HANDLE_RGB = (0.15, 0.15, 0.15)


def _box_from_bounds(lo: Vec3, hi: Vec3) -> tuple[Vec3, Vec3]:
    """(centre, size) of an axis-aligned box given its corners."""
    centre = tuple(0.5 * (a + b) for a, b in zip(lo, hi))
    size = tuple(b - a for a, b in zip(lo, hi))
    return centre, size  # type: ignore[return-value]


def _slant_point(u: float, n: float) -> tuple[float, float]:
    """(y, z) of a point u up the tilted cabinet face and n out of it."""
    y = SLANT_FOOT[0] + u * SLANT_DIR[1] + n * SLANT_NORMAL[1]
    z = SLANT_FOOT[1] + u * SLANT_DIR[2] + n * SLANT_NORMAL[2]
    return y, z


class _Link:
    """Collects the shapes of one URDF link (origin of each shape relative to the link frame)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.items: list[str] = []

    def box(self, centre: Vec3, size: Vec3, rgb: tuple[float, ...], rpy: Vec3 = (0, 0, 0),
            collide: bool = True) -> None:
        geom = f'<box size="{size[0]:.5f} {size[1]:.5f} {size[2]:.5f}"/>'
        self._add(geom, centre, rpy, rgb, collide)

    def cylinder(self, centre: Vec3, radius: float, length: float, rgb: tuple[float, ...],
                 collide: bool = True) -> None:
        self._add(f'<cylinder radius="{radius:.5f}" length="{length:.5f}"/>', centre, (0, 0, 0), rgb,
                  collide)

    def sphere(self, centre: Vec3, radius: float, rgb: tuple[float, ...], collide: bool = True) -> None:
        self._add(f'<sphere radius="{radius:.5f}"/>', centre, (0, 0, 0), rgb, collide)

    def _add(self, geom: str, xyz: Vec3, rpy: Vec3, rgb: tuple[float, ...], collide: bool) -> None:
        origin = (f'<origin xyz="{xyz[0]:.5f} {xyz[1]:.5f} {xyz[2]:.5f}" '
                  f'rpy="{rpy[0]:.5f} {rpy[1]:.5f} {rpy[2]:.5f}"/>')
        rgba = " ".join(f"{c:.4f}" for c in (*rgb[:3], 1.0))
        self.items.append(f'<visual>{origin}<geometry>{geom}</geometry>'
                          f'<material name="{self.name}_m{len(self.items)}"><color rgba="{rgba}"/></material></visual>')
        if collide:
            self.items.append(f"<collision>{origin}<geometry>{geom}</geometry></collision>")

    def xml(self, mass: float, visual: bool = True) -> str:
        # A link without visuals is drawn from its collision shapes by pybullet's renderer, so a
        # render-only link without visuals gets no collision shapes either.
        items = self.items if visual else []
        inertial = (f'<inertial><origin xyz="0 0 0" rpy="0 0 0"/><mass value="{mass}"/>'
                    f'<inertia ixx="0.01" ixy="0" ixz="0" iyy="0.01" iyz="0" izz="0.01"/></inertial>')
        return f'<link name="{self.name}">{inertial}{"".join(items)}</link>'


def _joint(name: str, kind: str, child: str, xyz: Vec3, axis: Vec3 = (1, 0, 0), upper: float = 0.0) -> str:
    limit = f'<limit lower="0" upper="{upper:.5f}" effort="1000" velocity="10"/>' if kind != "fixed" else ""
    return (f'<joint name="{name}" type="{kind}"><parent link="base_link"/><child link="{child}"/>'
            f'<origin xyz="{xyz[0]:.5f} {xyz[1]:.5f} {xyz[2]:.5f}" rpy="0 0 0"/>'
            f'<axis xyz="{axis[0]:.5f} {axis[1]:.5f} {axis[2]:.5f}"/>{limit}</joint>')


# Links that never move or change colour: the static camera renders them once (see cameras.py).
STATIC_LINKS = frozenset({"base_link", "plank_link"})


def drawer_tray_boxes(layout: SceneLayout) -> list[tuple[Vec3, Vec3, tuple[float, float, float]]]:
    """(centre, size, rgb) of the drawer's floor and walls, in the drawer joint frame."""
    wood, dark = layout.table_rgb, tuple(0.75 * c for c in layout.table_rgb)
    bounds = [((-0.20, -0.16, 0.32), (0.20, 0.06, 0.34), dark), ((-0.20, -0.16, 0.34), (-0.18, 0.06, 0.40), wood),
              ((0.18, -0.16, 0.34), (0.20, 0.06, 0.40), wood), ((-0.18, 0.04, 0.34), (0.18, 0.06, 0.40), wood)]
    return [(*_box_from_bounds(lo, hi), rgb) for lo, hi, rgb in bounds]


def table_urdf(layout: SceneLayout, visual_links: frozenset[str] | None = None, with_tray: bool = True) -> str:
    """URDF text of the whole play table of one scene, made of primitives only.

    Joint frames are world-aligned (rpy 0) with their axes given in world coordinates, so a joint
    value of 0 places each moving part where the official one sits at 0. Link and joint names are
    the official ones.

    Args:
        layout: the scene.
        visual_links: links that keep their shapes (None: all); the others are empty. Render-only
            copies of the table use this to split it into a static background and the moving parts.
        with_tray: include the drawer's floor and walls (the static camera draws them separately).

    Returns:
        The URDF document as a string.
    """
    wood = layout.table_rgb
    dark = tuple(0.75 * c for c in wood)
    grey = (0.55, 0.55, 0.55)
    sx0, sx1 = layout.shelf_x
    base = _Link("base_link")
    # Table top slab in front of the cabinet, and the fill under the shelf.
    base.box(*_box_from_bounds((-0.44, -0.18, 0.40), (0.44, 0.02, TABLE_TOP_Z)), wood)
    base.box(*_box_from_bounds((-0.44, 0.02, 0.40), (0.44, 0.18, 0.42)), dark)
    # Legs / side panels and the cabinet body below the drawer.
    base.box(*_box_from_bounds((-0.44, -0.18, 0.0), (-0.40, 0.18, 0.40)), dark)
    base.box(*_box_from_bounds((0.40, -0.18, 0.0), (0.44, 0.18, 0.40)), dark)
    base.box(*_box_from_bounds((-0.40, -0.16, 0.0), (0.40, 0.16, 0.30)), dark, collide=False)
    # Panels left and right of the drawer opening (official drawer front is 0.44 wide).
    dx0, dx1 = layout.drawer_x - 0.22, layout.drawer_x + 0.22
    if dx0 > -0.40:
        base.box(*_box_from_bounds((-0.40, -0.16, 0.30), (dx0, 0.16, 0.40)), wood)
    if dx1 < 0.40:
        base.box(*_box_from_bounds((dx1, -0.16, 0.30), (0.40, 0.16, 0.40)), wood)
    # Cabinet: back wall, roof over the shelf, and the two side blocks with a tilted front face.
    base.box(*_box_from_bounds((-0.44, 0.16, 0.42), (0.44, 0.18, 0.648)), wood)
    base.box(*_box_from_bounds((sx0, 0.1425, 0.628), (sx1, 0.18, 0.648)), wood)
    y, z = _slant_point(0.2292, -0.012)
    base.box((0.5 * (sx0 + sx1), y, z), (sx1 - sx0, 0.024, 0.024), wood, rpy=SLANT_RPY)
    face_len = 0.2412  # tilted face from z 0.44 up to the roof at z 0.648 (0.208 / sin 60).
    for x0, x1 in ((-0.44, sx0), (sx1, 0.44)):
        if x1 - x0 < 1e-3:
            continue
        # The body behind the face starts where the face meets the roof (official base_link: the
        # face runs straight from y 0.02, z 0.44 to y 0.14, z 0.648), so nothing steps out of it.
        base.box(*_box_from_bounds((x0, 0.14, 0.44), (x1, 0.16, 0.648)), wood)
        y, z = _slant_point(face_len / 2, -0.0175)
        base.box((0.5 * (x0 + x1), y, z), (x1 - x0, face_len, 0.035), wood, rpy=SLANT_RPY)
    # Button housing on the table top (button_link sits on it from z 0.46).
    base.cylinder((layout.button_x, -0.12, 0.45), 0.038, 0.02, grey)
    # Socket of the lightbulb (the bulb itself is light_link, so that only it changes colour).
    base.cylinder((layout.switch_x, layout.light_y, 0.656), 0.014, 0.016, grey)
    # Dark slot behind the switch lever (visual only).
    y, z = _slant_point(SWITCH_U + SWITCH_RANGE / 2, 0.001)
    base.box((layout.switch_x, y, z), (0.03, SWITCH_RANGE + 0.03, 0.002), (0.1, 0.1, 0.1), rpy=SLANT_RPY, collide=False)

    plank = _Link("plank_link")
    plank.box(*_box_from_bounds((sx0, SHELF_Y[0], 0.42), (sx1, SHELF_Y[1], TABLE_TOP_Z)), dark)

    # Sliding door: panel 0.28 wide on the tilted face, with a vertical handle bar in its middle.
    slide = _Link("slide_link")
    door_cx = DOOR_WIDTH / 2
    y, z = _slant_point(DOOR_PANEL_U / 2, 0.012)
    # A lighter shade than the cabinet so the door stands out in the images.
    light_wood = tuple(min(1.0, 1.2 * c + 0.05) for c in wood)
    slide.box((door_cx, y, z), (DOOR_PANEL_WIDTH, DOOR_PANEL_U, 0.02), light_wood, rpy=SLANT_RPY)
    (u0, u1), (n0, n1) = DOOR_HANDLE_U_RANGE, DOOR_HANDLE_N_RANGE
    y, z = _slant_point(0.5 * (u0 + u1), 0.5 * (n0 + n1))
    slide.box((door_cx, y, z), (DOOR_HANDLE_WIDTH, u1 - u0, n1 - n0), _HANDLE_RGB, rpy=SLANT_RPY)

    # Drawer: a real tray (floor + walls) behind a front panel, with a bar handle.
    drawer = _Link("drawer_link")
    drawer.box(*_box_from_bounds((-0.225, DRAWER_FRONT_Y, 0.295), (0.225, DRAWER_FRONT_Y + 0.02, 0.405)), wood)
    if with_tray:
        for centre, size, rgb in drawer_tray_boxes(layout):
            drawer.box(centre, size, rgb)
    (hy0, hy1), (hz0, hz1) = DRAWER_HANDLE_Y_RANGE, DRAWER_HANDLE_Z_RANGE
    drawer.box(*_box_from_bounds((-DRAWER_HANDLE_HALF_X, hy0, hz0), (DRAWER_HANDLE_HALF_X, hy1, hz1)), _HANDLE_RGB)
    for hx in (-DRAWER_HANDLE_HALF_X, DRAWER_HANDLE_HALF_X - 0.02):
        drawer.box(*_box_from_bounds((hx, hy1, hz0), (hx + 0.02, DRAWER_FRONT_Y, hz1)), _HANDLE_RGB)

    button = _Link("button_link")
    button.cylinder((0.0, 0.0, 0.012), 0.032, 0.024, (0.05, 0.05, 0.05))

    # Switch lever: a bar sticking out of the tilted face; slides up the face (official axis).
    switch = _Link("switch_link")
    # The official lever (ray casts along the face's normal, along x and up the face, bench/fidelity.py
    # geometry): a bar 0.122 wide and 0.036 along the face (u 0.057..0.093 from the face's foot,
    # centred 0.007 above the joint origin), 0.034..0.057 out of the face with rounded edges (its
    # front drops to ~0.052 out within 4-6 mm of each edge: a full-size slab to 0.052 under a core
    # inset 6 mm in x and 4 mm in u), held by a leg 0.022 wide under each end; between the legs
    # the space under the bar is open. (The official legs' mesh also reaches ~0.015 into the face,
    # where no ray or contact meets it: left out.)
    switch_u = SWITCH_U + 0.007
    switch.box((0.0, *_slant_point(switch_u, 0.043)), (0.122, 0.036, 0.018), (0.3, 0.3, 0.3), rpy=SLANT_RPY)
    switch.box((0.0, *_slant_point(switch_u, 0.04565)), (0.110, 0.028, 0.0233), (0.3, 0.3, 0.3), rpy=SLANT_RPY)
    for side in (-1.0, 1.0):
        switch.box((side * 0.050, *_slant_point(switch_u, 0.017)), (0.022, 0.034, 0.034), (0.4, 0.4, 0.4),
                   rpy=SLANT_RPY)

    led = _Link("led_link")
    led.box((0.0, 0.0, 0.0), (0.16, 0.04, 0.016), (1.0, 1.0, 1.0))
    light = _Link("light_link")
    # The official bulb (horizontal ray casts every 4 mm of height): round, radius 0.029 at its
    # widest (z 0.664..0.676), top at z 0.6985; its foot (z 0.6455..0.66) 0.021 in radius. A sphere
    # over a short cylinder (pybullet pads cylinders' collision shapes by 1 mm: radius 0.020 here).
    light.sphere((0.0, 0.0, 0.022), 0.029, (1.0, 1.0, 1.0))
    light.cylinder((0.0, 0.0, 0.005), 0.020, 0.015, (1.0, 1.0, 1.0))

    # The switch joint origin sits on the tilted face at the official height.
    switch_origin = (layout.switch_x, 0.0, 0.0)
    joints = [
        _joint("base__plank", "fixed", "plank_link", (0, 0, 0)),
        _joint("base__slide", "prismatic", "slide_link", (layout.door_x0, 0, 0), (-1, 0, 0),
               layout.slider_range),
        _joint("base__drawer", "prismatic", "drawer_link", (layout.drawer_x, 0, 0), (0, -1, 0),
               DRAWER_RANGE),
        _joint("base__button", "prismatic", "button_link", (layout.button_x, -0.12, 0.46), (0, 0, -1),
               BUTTON_RANGE),
        _joint("base__switch", "prismatic", "switch_link", switch_origin, SLANT_DIR, SWITCH_RANGE),
        _joint("base__led", "fixed", "led_link", (layout.button_x, 0.16, 0.656)),
        _joint("base__light", "fixed", "light_link", (layout.switch_x, layout.light_y, 0.648)),
    ]
    # Link masses of the official table (pybullet's getDynamicsInfo of calvin_table_*.urdf at
    # global_scaling 0.8; the fixed links' masses do not matter).
    parts = ((base, 0.0), (plank, 0.0), (slide, 1.543), (drawer, 4.231), (button, 0.154), (switch, 0.239),
             (led, 0.0), (light, 0.0))
    links = [link.xml(mass, visual=visual_links is None or link.name in visual_links) for link, mass in parts]
    # One element per line: pybullet's XML reader fails on very long lines.
    body = "\n".join([*links, *joints]).replace("><", ">\n<")
    return f'<?xml version="1.0"?>\n<robot name="calvin_table_{layout.name}">\n{body}\n</robot>\n'
