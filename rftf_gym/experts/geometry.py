"""Constants of the hand, the table and the cabinet, and the small pure geometry helpers the
expert modules share (rotations, grasp yaws, points on the tilted cabinet face)."""

from __future__ import annotations

import math

import numpy as np

from rftf_gym.conventions import NEUTRAL_ROBOT_OBS
from rftf_gym.sim.layout import (
    DOOR_HANDLE_N_RANGE, DOOR_HANDLE_U_RANGE, SLANT_DIR, SLANT_FOOT, SLANT_NORMAL, TABLE_TOP_Z,
)

NEUTRAL_YAW = round(NEUTRAL_ROBOT_OBS[5], 2)  # the official neutral TCP euler z, 1.50
# Gripper yaws (minus the neutral one) the arm tracks to within ~3 mm at grasp height over the
# whole table top; outside, joint 7's limits make the IK drift (measured with the embedded Panda).
YAW_REACH = (-1.5, 2.5)
# Footprint of the hand around the TCP: half length along the finger axis (panda_hand AABB) and
# half width across it (HAND_HALF_WIDTH below, the hand body's). Near the cabinet a hand turned
# crosswise hits the switch lever and the door handle, which stick out to y ~ 0
# (rftf_gym.sim.layout): there, grasps at table height fail once the footprint reaches past
# y ~ 0.035 (fitted to failed and successful grasps). Elsewhere the tilted face is further back.
HAND_HALF_LENGTH = 0.11
CABINET_CLEAR_Y = 0.03
CABINET_FACE_CLEAR_Y = 0.07
SWITCH_LEVER_HALF_X, DOOR_HANDLE_HALF_X = 0.06, 0.012
CABINET_SLACK = 0.005  # margin before a block is dragged in rather than grasped where it is
# Down in the open drawer the hand's lower part (narrower than its AABB) must fit between the table
# top's front edge and the drawer front: its reach along y is about
# DRAWER_HAND_REACH[0] |sin phi| + DRAWER_HAND_REACH[1] |cos phi| for a gripper yaw phi off neutral
# (fitted to measured lift_*_block_drawer grasps).
DRAWER_HAND_REACH = (0.08, 0.03)
# The TCP sits 0.14 m along the hand axis and the longer fingers of CALVIN's robot reach 0.155 m
# (rftf_gym.sim.robot LONGER_FINGER_BOXES, measured on calvin_env's panda_longer_finger.urdf):
# the tips are 0.015 m below the TCP.
TIP_ABOVE_TCP = -0.015
# TCP height below a block's centre for a grasp: with the TCP at the centre, the finger pads
# (0.011 m above to 0.014 m below the TCP) cover the middle of the block's sides with the tips
# ~5 mm above the surface it rests on.
GRASP_BELOW_CENTRE = 0.0
BLOCK_Z = TABLE_TOP_Z + 0.02  # block centre resting on the table top or the shelf
DOOR_CONTACT_Y = -0.025  # a block whose back face is beyond this may lean on the sliding door
# Pushing along x at neutral yaw: the pushing face sits this far ahead of the TCP with the fingers
# closed (the outer face of the longer finger's plate, rftf_gym.sim.robot LONGER_FINGER_BOXES),
# and the TCP reaches |x| <= PUSH_REACH_X at table height over the whole depth of the table
# (measured).
PUSH_LEAD_CLOSED = 0.007
PUSH_REACH_X = 0.29
PUSH_START_MAX_X = 0.37  # beyond, a push cannot start: the fingers stall short of the block (measured)
# The shortest push the push expert plans when the button, the door's end or the arm's reach cuts
# it short: the block ends up to ~0.02 m short of the fingers' travel, and plans of 0.115 m left it
# at 0.094-0.099 m in measured failures, under the oracle's 0.1 m.
MIN_PUSH = 0.125
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
# The door handle's lower front corner (rftf_gym.sim.layout DOOR_HANDLE_U_RANGE[0] up the face,
# DOOR_HANDLE_N_RANGE[1] out of it): y ~ -0.035 at z ~ 0.51, where a block stacked on another
# (0.48..0.52) and the fingers holding it pass; the open fingers reach this far along x from the
# TCP at the neutral yaw.
HANDLE_LOW_FRONT_Y = SLANT_FOOT[0] + DOOR_HANDLE_U_RANGE[0] * SLANT_DIR[1] + DOOR_HANDLE_N_RANGE[1] * SLANT_NORMAL[1]
FINGER_REACH_X = 0.05
# Largest TCP y for a hand carrying a lifted block along x at TRANSIT_Z: the handle's front face
# runs from HANDLE_LOW_FRONT_Y up and back, and the block's side is 0.02-0.04 from the TCP.
HELD_TRANSIT_MAX_Y = -0.07
# How far inside the base block's edge a stacked block's centre must stay (it tips off beyond;
# at 0.008, 4-6 of 200 stacks failed, those inspected on a base by the cabinet, the block tipping
# off as the fingers opened; at 0.014, 2 of 200: bench/expert_success.py --tasks stack_block
# --episodes 50, a difference within sampling noise at this size).
STACK_EDGE_MARGIN = 0.014
BUTTON_HOUSING_R = 0.038  # the button's housing on the table top (rftf_gym.sim.layout)
# Reference sub-step budget per waypoint: generous, the env's 360-step cap is the real limit.
MAX_WAYPOINT_STEPS = 90

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
# Largest TCP y for moves along x at TRANSIT_Z in front of the shelf: the door handle's front is
# at y ~ 0.01 there (rftf_gym.sim.layout DOOR_HANDLE_N_RANGE), a held 8 cm block along y reaches
# 0.04 from the TCP and the hand's body 0.032.
SHELF_APPROACH_Y = -0.06
# How far a TCP may sit off a block's centre along the closing axis of the open fingers (0.08
# apart around a 0.04 wide block) and still grasp it: the first finger to touch slides the block
# to the middle.
GRIP_SLACK = 0.008
# Sideways shifts of the hand's body up to this (a lean of ~0.25 rad) are left to the lean alone:
# the lean handles them reliably (measured on lift_*_block_slider in scenes B and C).
SMALL_LEAN_SHIFT = 0.017


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def grasp_yaws(block_yaw: float, length: float) -> list[float]:
    """Gripper yaws that close the fingers across a block: across its 4 cm side, and for blocks up
    to 6 cm long also across the long side (the fingers open to 8 cm)."""
    step = np.pi / 2 if length <= 0.06 else np.pi
    return [block_yaw + k * step for k in range(-4, 5)]


def drawer_grasp_yaw(block_yaw: float, length: float) -> float:
    """The grasp yaw that keeps the hand narrowest along y (to fit down into the drawer), nearest
    the neutral yaw among equals."""
    return min(grasp_yaws(block_yaw, length),
               key=lambda c: (round(abs(math.sin(c - NEUTRAL_YAW)), 3), abs(c - NEUTRAL_YAW)))


def drawer_hand_reach(gyaw: float) -> float:
    """How far along y the hand reaches from the TCP down in the drawer, for a gripper yaw."""
    phi = gyaw - NEUTRAL_YAW
    return DRAWER_HAND_REACH[0] * abs(math.sin(phi)) + DRAWER_HAND_REACH[1] * abs(math.cos(phi))


def slant(u: float, n: float) -> tuple[float, float]:
    """(y, z) of a point u up the tilted cabinet face and n out of it (layout geometry)."""
    return (SLANT_FOOT[0] + u * SLANT_DIR[1] + n * SLANT_NORMAL[1],
            SLANT_FOOT[1] + u * SLANT_DIR[2] + n * SLANT_NORMAL[2])
