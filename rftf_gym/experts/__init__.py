"""Scripted experts for the 34 CALVIN tasks on the embedded play table.

An expert is a closed-loop waypoint script: every control step it reads ``robot_obs`` and
``scene_obs`` (layout in `rftf_gym.conventions`), picks the current waypoint (computed from the block poses, the door and
drawer joints and the scene layout of `rftf_gym.sim.layout`) and outputs CALVIN's *relative*
7-d action, the same interface a policy uses, so recorded actions are exactly what a policy
would output (values in [-1, 1], gripper -1 close / +1 open).

Control: the simulator accumulates each relative action on an internal target pose that may lead
the TCP by at most 3 cm / 0.15 rad (`rftf_gym.sim.robot`). The expert keeps its own copy of that
target (the same update and clamp) and steers the copy towards the waypoint, so the arm stops on
the waypoint instead of overshooting by the lag. Orientation is held gripper-down (roll pi,
pitch 0); only the yaw changes, except on the tilted cabinet face (switch lever, door handle),
where the hand pitches so the fingers stand perpendicular to the face.

Grasps: the Panda's fingers close along ``(sin yaw, -cos yaw)`` in the world, a block's 4 cm side
lies along its local y, so the gripper yaw is the block yaw modulo pi (the candidate nearest the
neutral yaw keeps joint 7 away from its limits); blocks up to 6 cm long also fit across their long
side, modulo pi/2, which rotations and grasps in the drawer use to keep the hand clear of the
cabinet, the table edge and joint 7's reach. Where the hand has no room to grasp or push a table
block (in front of the switch lever or the door handle), the closed fingertips first drag it out.

Scripts are Python generators: each ``yield`` is one action and the generator reads the newest
observation from the expert, so waypoints follow the objects as they move.

Layout: `geometry` holds the constants and pure helpers, `control` the base class (observation
helpers, control primitives, building blocks), `blocks`, `shelf` and `cabinet` the skill mixins
per task family, `expert` the concrete `Expert` (task dispatch), `make_expert`, `ExpertPolicy` and
`task_for_instruction`, and `start_states` `reset_to_task`.

Example:
    >>> import gymnasium as gym, numpy as np, rftf_gym
    >>> env = gym.make("RFTF-CALVIN-v0", scene="D", task="open_drawer", obs_mode="state")
    >>> obs, info = env.reset(seed=0)
    >>> expert = make_expert("open_drawer", "D", np.random.default_rng(0))
    >>> while True:  # doctest: +SKIP
    ...     obs, reward, terminated, truncated, info = env.step(expert.act(obs))
    ...     if terminated or truncated:
    ...         break
"""

from rftf_gym.experts.expert import Expert, ExpertPolicy, make_expert, task_for_instruction
from rftf_gym.experts.start_states import needs_constructed_start, reset_to_task

__all__ = ["Expert", "ExpertPolicy", "make_expert", "needs_constructed_start", "reset_to_task", "task_for_instruction"]
