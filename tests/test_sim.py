"""The embedded play table (`rftf_gym.sim`): CALVIN conventions, control, physics and determinism."""

from __future__ import annotations

import numpy as np
import pybullet as p
import pytest

from rftf_gym.conventions import MAX_REL_ORN, MAX_REL_POS, wrap_angle
from rftf_gym.sim.layout import LAYOUTS
from rftf_gym.sim.play_table import EmbeddedPlayTable
from rftf_gym.sim.robot import clamp_target

OPEN, CLOSE = 1.0, -1.0


def _go(env: EmbeddedPlayTable, pos, yaw: float, grip: float, steps: int, tol: float = 0.004) -> None:
    """A proportional expert in relative actions: TCP pointing down, at pos with the given yaw.

    It steers the robot's target pose (after the anti wind-up clamp the next step applies), as the
    scripted experts do, so a blocked press does not leave it pushing on."""
    for _ in range(steps):
        ro = env.robot.get_obs()
        target_pos, target_orn = clamp_target(env.robot.target_pos, env.robot.target_orn, ro[:3], ro[3:6])
        dpos = (np.asarray(pos) - target_pos) / MAX_REL_POS
        deul = wrap_angle(np.array([np.pi, 0.0, yaw]) - target_orn) / MAX_REL_ORN
        env.step(np.r_[np.clip(np.r_[dpos, deul], -1, 1), grip])
        if np.linalg.norm(np.asarray(pos) - ro[:3]) < tol and abs(wrap_angle(yaw - ro[5])) < 0.02:
            return


def _scene_obs(blocks: dict[str, tuple[float, float, float, float]], scene: str = "D", **joints: float) -> np.ndarray:
    """scene_obs with the given block (x, y, z, yaw) and joints; unlisted blocks go on the shelf."""
    shift = LAYOUTS[scene].shelf_x[0] - LAYOUTS["D"].shelf_x[0]  # the shelf of B and C is 0.18 m further right
    shelf = {"red": (-0.3 + shift, 0.09, 0.461, 0.0), "blue": (-0.22 + shift, 0.09, 0.461, 0.0),
             "pink": (0.08 + shift, 0.09, 0.461, 0.0)}
    obs = [joints.get("slide", 0.0), joints.get("drawer", 0.0), joints.get("button", 0.0),
           joints.get("switch", 0.0), 0.0, joints.get("led", 0.0)]
    for color in ("red", "blue", "pink"):
        x, y, z, yaw = blocks.get(color, shelf[color])
        obs += [x, y, z, 0.0, 0.0, yaw]
    return np.asarray(obs)


def _grasp_yaw(env: EmbeddedPlayTable, block_yaw: float) -> float:
    """TCP yaw that closes the fingers (along the hand's y axis) across the block's 4 cm side."""
    ro = env.robot.get_obs()
    rot = np.array(p.getMatrixFromQuaternion(p.getQuaternionFromEuler(ro[3:6]))).reshape(3, 3)
    hand_y = np.arctan2(rot[1, 1], rot[0, 1])
    delta = wrap_angle(block_yaw + np.pi / 2 - hand_y)
    delta = (delta + np.pi / 2) % np.pi - np.pi / 2  # the gripper is symmetric under a half turn
    return float(ro[5] + delta)


@pytest.fixture(scope="module")
def env_d():
    env = EmbeddedPlayTable("D", cameras={"static": (200, 200), "gripper": (84, 84)})
    yield env
    env.close()


def test_neutral_pose_matches_calvin(env_d):
    env_d.reset(rng=np.random.default_rng(0))
    ro = env_d.get_obs()["robot_obs"]
    np.testing.assert_allclose(ro[:3], [0.026, -0.231, 0.571], atol=0.003)
    np.testing.assert_allclose(ro[3:6], [3.09, -0.03, 1.50], atol=0.02)
    # Fully open (2 x 0.04 m); the settling substeps after a reset move the fingers by microns.
    assert ro[6] == pytest.approx(0.08, abs=1e-4)
    assert ro[14] == 1.0


def test_obs_shapes_and_dtypes(env_d):
    env_d.reset(rng=np.random.default_rng(1))
    env_d.step(np.zeros(7))
    obs = env_d.get_obs()
    assert obs["robot_obs"].shape == (15,) and obs["scene_obs"].shape == (24,)
    assert obs["rgb_static"].shape == (200, 200, 3) and obs["rgb_static"].dtype == np.uint8
    assert obs["rgb_gripper"].shape == (84, 84, 3) and obs["rgb_gripper"].dtype == np.uint8
    assert obs["rgb_static"].std() > 10  # not a blank image


def test_custom_camera_size_and_no_camera():
    env = EmbeddedPlayTable("A", cameras={"static": (64, 48)})
    env.reset(rng=np.random.default_rng(0))
    obs = env.get_obs()
    assert obs["rgb_static"].shape == (48, 64, 3) and "rgb_gripper" not in obs
    assert env.render("gripper").shape == (84, 84, 3)
    env.close()
    env = EmbeddedPlayTable("B")
    env.reset(rng=np.random.default_rng(0))
    assert set(env.get_obs()) == {"robot_obs", "scene_obs"}
    env.close()


def test_relative_action_moves_about_two_cm_per_unit(env_d):
    env_d.reset(rng=np.random.default_rng(2))
    start = env_d.get_obs()["robot_obs"][:3]
    for _ in range(10):
        env_d.step(np.array([1.0, 0, 0, 0, 0, 0, OPEN]))
    moved = env_d.get_obs()["robot_obs"][:3] - start
    assert 0.13 < moved[0] < 0.21 and abs(moved[1]) < 0.01 and abs(moved[2]) < 0.01


def test_relative_action_is_clipped_to_one_unit(env_d):
    # Components beyond +-1 move the target by exactly one unit (0.02 m, 0.05 rad), as np.clip would.
    env_d.reset(rng=np.random.default_rng(3))
    ro = env_d.get_obs()["robot_obs"]
    pos, orn = clamp_target(env_d.robot.target_pos, env_d.robot.target_orn, ro[:3], ro[3:6])
    action = np.array([5.0, -3.0, 0.25, -1.5, 2.0, -0.5, OPEN])
    env_d.step(action)
    np.testing.assert_array_equal(env_d.robot.target_pos, pos + np.clip(action[:3], -1, 1) * MAX_REL_POS)
    np.testing.assert_array_equal(env_d.robot.target_orn, orn + np.clip(action[3:6], -1, 1) * MAX_REL_ORN)


def test_no_target_windup_when_blocked(env_d):
    env_d.reset(scene_obs=_scene_obs({}))
    _go(env_d, [0.05, -0.1, 0.5], 1.5, CLOSE, 30)
    for _ in range(60):  # push down into the table top for two seconds
        env_d.step(np.array([0, 0, -1.0, 0, 0, 0, OPEN]))
    low = env_d.get_obs()["robot_obs"][2]
    assert low > 0.445, low  # the fingers rest on the table top (TCP 1.5 cm above the fingertips)
    # The target stays in the band (0.2 m, then one more action of 0.02 m), not 60 steps below.
    assert env_d.robot.target_pos[2] > low - 0.221
    for _ in range(20):
        env_d.step(np.array([0, 0, 1.0, 0, 0, 0, OPEN]))
    assert env_d.get_obs()["robot_obs"][2] > low + 0.02


def test_explicit_reset_is_deterministic(env_d):
    env_d.reset(rng=np.random.default_rng(3))
    for _ in range(5):
        env_d.step(np.r_[np.random.default_rng(4).uniform(-1, 1, 6), OPEN])
    state = env_d.get_obs()
    actions = np.random.default_rng(5).uniform(-1, 1, (40, 7))
    actions[:, 6] = np.where(actions[:, 6] > 0, OPEN, CLOSE)
    runs = []
    for k in range(3):
        env_d.reset(rng=np.random.default_rng(100 + k))  # a different episode with contacts in between
        for a in np.random.default_rng(200 + k).uniform(-1, 1, (20 * k, 7)):
            env_d.step(np.r_[a[:3], 0, 0, 0, CLOSE])
        env_d.reset(robot_obs=state["robot_obs"], scene_obs=state["scene_obs"])
        traj = []
        for a in actions:
            env_d.step(a)
            traj.append(np.r_[env_d.robot.get_obs(), env_d.scene_obs()])
        runs.append(np.array(traj))
    assert np.array_equal(runs[0], runs[1]) and np.array_equal(runs[0], runs[2])


def test_button_toggles_led_on_each_press_by_robot():
    env = EmbeddedPlayTable("D")
    lay = LAYOUTS["D"]
    env.reset(scene_obs=_scene_obs({}))
    led = []
    for _ in range(2):
        _go(env, [lay.button_x, -0.12, 0.56], 1.5, CLOSE, 40)
        _go(env, [lay.button_x, -0.12, 0.44], 1.5, CLOSE, 25)
        _go(env, [lay.button_x, -0.12, 0.56], 1.5, CLOSE, 25)
        led.append(env.get_obs()["scene_obs"][5])
    assert led == [1.0, 0.0]
    assert env.get_info()["scene_info"]["buttons"]["base__button"]["joint_state"] < 0.005  # sprang back
    env.close()


def test_switch_drives_lightbulb(env_d):
    env_d.reset(scene_obs=_scene_obs({}, switch=0.088))
    assert env_d.get_obs()["scene_obs"][4] == 1.0
    env_d.step(np.array([0, 0, 0, 0, 0, 0, OPEN]))
    assert env_d.get_obs()["scene_obs"][4] == 1.0  # the switch stays
    p.resetJointState(env_d.table_uid, env_d.joints["base__switch"], 0.04, physicsClientId=env_d.client)
    env_d.step(np.array([0, 0, 0, 0, 0, 0, OPEN]))
    assert env_d.get_obs()["scene_obs"][4] == 0.0
    info = env_d.get_info()["scene_info"]
    assert info["lights"]["lightbulb"]["logical_state"] == 0 == info["switches"]["base__switch"]["logical_state"]


@pytest.mark.parametrize("scene", ["A", "B", "C", "D"])
def test_scripted_grasp_and_lift(scene):
    env = EmbeddedPlayTable(scene)
    lifted = 0
    cases = [(c, x, yaw) for c in ("red", "blue", "pink") for x, yaw in ((0.05, 0.3), (0.2, -1.2))]
    for color, x, yaw in cases:
        env.reset(scene_obs=_scene_obs({color: (x, -0.1, 0.46, yaw)}, scene))
        k = ("red", "blue", "pink").index(color)
        tcp_yaw = _grasp_yaw(env, yaw)
        _go(env, [x, -0.1, 0.56], tcp_yaw, OPEN, 40)
        _go(env, [x, -0.1, 0.425], tcp_yaw, OPEN, 30)  # fingertips ~1.5 cm above the table
        for _ in range(8):
            env.step(np.array([0, 0, 0, 0, 0, 0, CLOSE]))
        _go(env, [x, -0.1, 0.62], tcp_yaw, CLOSE, 30)
        for _ in range(15):  # hold still: the block must not slip
            env.step(np.array([0, 0, 0, 0, 0, 0, CLOSE]))
        lifted += env.get_obs()["scene_obs"][8 + 6 * k] > 0.56
    env.close()
    assert lifted == len(cases)


def test_robot_opens_drawer_and_moves_slider():
    env = EmbeddedPlayTable("D")
    lay = LAYOUTS["D"]
    env.reset(scene_obs=_scene_obs({}))
    # Drawer: fingers (closed, across x) dropped behind the handle bar, then pulled along -y.
    _go(env, [lay.drawer_x, -0.21, 0.50], np.pi / 2, CLOSE, 40)
    _go(env, [lay.drawer_x, -0.21, 0.337], np.pi / 2, CLOSE, 30)
    _go(env, [lay.drawer_x, -0.36, 0.337], np.pi / 2, CLOSE, 40)
    drawer = env.get_obs()["scene_obs"][1]
    assert drawer > 0.1
    # Sliding door: push its handle to the left.
    handle_x = lay.slider_center_x
    _go(env, [handle_x + 0.05, -0.05, 0.60], np.pi / 2, CLOSE, 50)
    _go(env, [handle_x + 0.05, 0.04, 0.53], np.pi / 2, CLOSE, 30)
    _go(env, [handle_x - 0.15, 0.04, 0.53], np.pi / 2, CLOSE, 40)
    assert env.get_obs()["scene_obs"][0] > 0.1
    env.close()


def test_get_info_structure_and_contacts(env_d):
    env_d.reset(scene_obs=_scene_obs({"red": (0.1, -0.1, 0.46, 0.0)}))
    for _ in range(3):
        env_d.step(np.array([0, 0, 0, 0, 0, 0, OPEN]))
    info = env_d.get_info()
    robot = info["robot_info"]
    assert {"tcp_pos", "tcp_orn", "gripper_opening_width", "arm_joint_states", "gripper_action", "uid",
            "contacts"} <= set(robot)
    scene = info["scene_info"]
    table = scene["fixed_objects"]["table"]
    for link in ("base_link", "plank_link", "drawer_link", "slide_link", "button_link", "switch_link",
                 "light_link", "led_link"):
        assert link in table["links"]
    assert set(scene["movable_objects"]) == {"block_red", "block_blue", "block_pink"}
    red = scene["movable_objects"]["block_red"]
    assert len(red["current_orn"]) == 4 and red["contacts"]
    for c in red["contacts"]:
        assert c[1] == red["uid"] and c[2] == table["uid"] and c[4] == table["links"]["base_link"]
    pink = scene["movable_objects"]["block_pink"]
    assert any(c[4] == table["links"]["plank_link"] for c in pink["contacts"])
    assert set(scene["doors"]) == {"base__slide", "base__drawer"}
    assert set(scene["lights"]) == {"lightbulb", "led"}


def test_random_blocks_do_not_overlap():
    env = EmbeddedPlayTable("C")
    lay = env.layout
    for seed in range(40):
        obs = env.sample_scene_obs(np.random.default_rng(seed))
        xy = obs[6:].reshape(3, 6)[:, :2]
        radii = [0.5 * np.hypot(*lay.block_size(c)[:2]) for c in ("red", "blue", "pink")]
        for i in range(3):
            on = [lo[0] <= xy[i, 0] <= hi[0] and lo[1] <= xy[i, 1] <= hi[1] for lo, hi in lay.surfaces.values()]
            assert any(on)
            for j in range(i):
                assert np.hypot(*(xy[i] - xy[j])) > radii[i] + radii[j]
    env.reset(rng=np.random.default_rng(7))
    for _ in range(5):
        env.step(np.array([0, 0, 0, 0, 0, 0, OPEN]))
    assert np.all(np.isfinite(env.get_obs()["scene_obs"]))
    env.close()


@pytest.mark.parametrize("scene", ["A", "C"])
def test_random_shelf_blocks_clear_the_door_and_its_edges(scene):
    # Hand-computed: the tilted face (30 deg back from vertical, foot at y 0.02) is at
    # y = 0.02 + 0.04 tan 30 = 0.0431 at a resting block's top (z 0.48); the back wall is at
    # y 0.16. Centres keep 0.085 from the panels and from the door's edge at its end stops:
    # A: left -0.36..-0.10, right -0.10..0.16; C: left -0.18..0.06, right 0.10..0.34.
    x_ranges = {"A": ((-0.275, -0.185), (-0.015, 0.075)), "C": ((-0.095, -0.025), (0.185, 0.255))}[scene]
    env = EmbeddedPlayTable(scene)
    on_shelf = 0
    for seed in range(60):
        blocks = env.sample_scene_obs(np.random.default_rng(seed))[6:].reshape(3, 6)
        for color, (x, y, _, _, _, yaw) in zip(("red", "blue", "pink"), blocks):
            if y < 0.02:
                continue
            on_shelf += 1
            assert any(lo - 1e-9 <= x <= hi + 1e-9 for lo, hi in x_ranges), (seed, color, x)
            sx, sy, _ = env.layout.block_size(color)
            corners_y = [y + 0.5 * (a * sx * np.sin(yaw) + b * sy * np.cos(yaw)) for a in (-1, 1) for b in (-1, 1)]
            assert min(corners_y) > 0.0431 and max(corners_y) < 0.16, (seed, color, corners_y)
    assert on_shelf > 30
    env.close()
