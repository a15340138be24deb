"""Skills on the cabinet's articulated parts: the sliding door, the drawer, the LED button and the
lightbulb switch, the last two worked with the hand tilted perpendicular to the cabinet face."""

from __future__ import annotations

import numpy as np

from rftf_gym.conventions import DRAWER_RANGE, SWITCH_RANGE
from rftf_gym.experts.control import Script
from rftf_gym.experts.geometry import (
    BUTTON_TOP_Z, BUTTON_Y, CLOSE, DOOR_HANDLE_U, DOOR_TIP_GAP, DRAWER_HANDLE_Y, DRAWER_HANDLE_Z, FACE_ORN,
    FACE_STANDOFF_N, FINGER_HALF_WIDTH, MAX_WAYPOINT_STEPS, NEUTRAL_YAW, OPEN, SWITCH_LEVER_HALF_U,
    SWITCH_TIP_GAP, TIP_ABOVE_TCP, slant,
)
from rftf_gym.sim.layout import DOOR_WIDTH, SWITCH_U


class CabinetSkills:
    """Sliding door, drawer, button and switch skills; mixed into `rftf_gym.experts.Expert` over `ExpertBase`."""

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
        return np.array([x, *slant(u, n)])

    def _tilted_hold(self, steps: int, gripper: float) -> Script:
        """`_hold` with the fingers kept perpendicular to the cabinet face."""
        yield from self._pose_hold(steps, FACE_ORN, gripper)
        return True

    def _tilted_move(self, goal: np.ndarray, tol: float, gripper: float = CLOSE, speed: float | None = None,
                     max_steps: int = MAX_WAYPOINT_STEPS) -> Script:
        """Like `_move`, but with the fingers perpendicular to the tilted cabinet face."""
        return (yield from self._pose_move(goal, FACE_ORN, gripper, tol=tol, speed=speed, max_steps=max_steps))
