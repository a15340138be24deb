"""Skills on the shelf behind the sliding door: fit the (leant) hand through the opening beside the
door, grasp a block there and place a held block on the shelf."""

from __future__ import annotations

import math

import numpy as np

from rftf_gym.experts.control import Script
from rftf_gym.experts.geometry import (
    BLOCK_Z, CLOSE, GRASP_BELOW_CENTRE, GRIP_SLACK, HAND_HALF_DEPTH, HAND_HALF_WIDTH, HAND_LEVER, MAX_LEAN, OPEN,
    SHELF_APPROACH_Y, SHELF_FRONT_Y, SHELF_MARGIN, SMALL_LEAN_SHIFT, TRANSIT_Z, rot_x, rot_y, rot_z,
)
from rftf_gym.sim.layout import DOOR_WIDTH, SHELF_Y


class ShelfSkills:
    """Shelf (slider) skills; mixed into `rftf_gym.experts.Expert` over `ExpertBase`."""

    def _shelf_opening(self, x: float) -> tuple[float, float]:
        """x interval of the shelf opening on x's side of the sliding door."""
        lay = self.layout
        door_lo = lay.door_x0 - float(self._scene[0])
        door_hi = door_lo + DOOR_WIDTH
        lo, hi = lay.shelf_x
        return (lo, door_lo) if x < 0.5 * (door_lo + door_hi) else (door_hi, hi)

    @staticmethod
    def _shelf_shift_x(x: float, gyaw: float, opening: tuple[float, float]) -> tuple[float, bool]:
        """How far along x the hand's body must move off a TCP at x to clear the opening's edges,
        and whether the opening is wide enough for it at all."""
        ext_x = HAND_HALF_WIDTH * abs(math.sin(gyaw)) + HAND_HALF_DEPTH * abs(math.cos(gyaw)) + SHELF_MARGIN
        lo_shift = opening[0] - (x - ext_x)  # least x shift that clears the left edge
        hi_shift = opening[1] - (x + ext_x)  # most x shift that clears the right edge
        # The margin keeps the hand centred when there is room; the fit test itself allows the
        # measured mesh width plus 5 mm a side.
        fits = lo_shift <= hi_shift + 2 * (SHELF_MARGIN - 0.005)
        return (float(np.clip(0.0, lo_shift, hi_shift)) if fits else 0.5 * (lo_shift + hi_shift)), fits

    def _shelf_pose(self, xy: np.ndarray, gyaw: float, opening: tuple[float, float]) -> tuple[np.ndarray, float, bool]:
        """Orientation (euler) for a hand at xy in the shelf, its TCP raise, and whether it fits.

        The hand is rotated to gyaw gripper-down and then leant (about world x and y) so that
        its body shifts away from the side panels or door edges and from the back wall while the
        TCP stays on the block.
        """
        ext_y = HAND_HALF_WIDTH * abs(math.cos(gyaw)) + HAND_HALF_DEPTH * abs(math.sin(gyaw)) + SHELF_MARGIN
        shift_x, fits = self._shelf_shift_x(float(xy[0]), gyaw, opening)
        shift_y = min(-0.005, SHELF_Y[1] - (xy[1] + ext_y))
        lean_x = math.asin(float(np.clip(shift_x / HAND_LEVER, -math.sin(MAX_LEAN), math.sin(MAX_LEAN))))
        lean_y = math.asin(float(np.clip(-shift_y / HAND_LEVER, 0.0, math.sin(MAX_LEAN))))
        fits = fits and abs(shift_x) <= HAND_LEVER * math.sin(MAX_LEAN)
        rot = rot_y(lean_x) @ rot_x(lean_y) @ rot_z(gyaw) @ rot_x(math.pi)
        euler = np.array([math.atan2(rot[2, 1], rot[2, 2]), -math.asin(float(np.clip(rot[2, 0], -1, 1))),
                          math.atan2(rot[1, 0], rot[0, 0])])
        # A finger leant sideways hangs lower: raise the TCP so its tip stays off the shelf.
        raise_z = 0.04 * abs(math.sin(lean_x)) + 0.01 * abs(math.sin(lean_y))
        return euler, raise_z, fits

    def _shelf_enter(self, grip: np.ndarray, long_axis: np.ndarray, gyaw: float, gripper: float,
                     lean: tuple[np.ndarray, float] | None = None, slack: float = 0.0) -> Script:
        """Bring the TCP to grip inside the shelf: from the front, low, sliding in along long_axis.

        The open fingers (or a held block) slide along the block's long axis, which CALVIN's
        front-facing shelf blocks keep roughly along y, so nothing sweeps across the block.
        ``slack``: how far the TCP may sit off grip along the fingers' closing axis (open fingers
        around a block), spent on moving the hand away from the opening's edges before leaning it.
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
        closing = np.array([math.sin(gyaw), -math.cos(gyaw), 0.0])
        shift_x, _ = self._shelf_shift_x(float(grip[0]), gyaw, opening)
        if lean is None and slack > 0 and abs(closing[0]) > 0.5 and abs(shift_x) > SMALL_LEAN_SHIFT:
            # A hand leant far tracks its target worse and drags a finger on the shelf: slide the
            # whole hand sideways within the fingers' slack first (the closing fingers re-centre
            # the block).
            grip = grip + closing * float(np.clip(shift_x / closing[0], -slack, slack))
            orn, raise_z, fits = self._shelf_pose(grip[:2], gyaw, opening)
        goal = grip + [0.0, 0.0, raise_z]
        direction = long_axis if long_axis[1] > 0 else -long_axis
        front = goal - direction * (goal[1] - SHELF_FRONT_Y) / max(direction[1], 0.5)
        self._shelf_orn = orn
        self._shelf_out = -direction
        yield from self._clear()
        if abs(front[0] - self.tcp[0]) > 0.02:
            # Cross the table in front of the cabinet, then come in: at TRANSIT_Z the door handle
            # reaches out to y ~ 0, and a hand (or held block) sweeping along x near the shelf
            # front catches it and drags the door along (seen in failed place_in_slider and
            # lift_*_block_slider runs).
            y = min(float(self.tcp[1]), SHELF_APPROACH_Y)
            yield from self._pose_move(np.array([front[0], y, TRANSIT_Z]), orn, gripper, tol=0.015, speed=None)
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
            # The open fingers (8 cm) leave 2 cm a side around the block's 4 cm width.
            yield from self._shelf_enter(grip, long_axis, gyaw, OPEN, slack=GRIP_SLACK)
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
            rot = rot_x(MAX_LEAN) @ rot_z(gyaw) @ rot_x(math.pi)
            lean = (np.array([math.atan2(rot[2, 1], rot[2, 2]), -math.asin(float(np.clip(rot[2, 0], -1, 1))),
                              math.atan2(rot[1, 0], rot[0, 0])]), 0.005)
        yield from self._shelf_enter(grip, long_axis, gyaw, CLOSE, lean)
        yield from self._pose_hold(4, self._shelf_orn, OPEN)
        yield from self._pose_move(self.tcp + self._shelf_out * 0.05 + [0, 0, 0.02], self._shelf_orn, OPEN,
                                    tol=0.01)
        return True
