"""The official calvin_env backend (`rftf_gym.calvin_backend`, docs/calvin_backend.md).

Tests marked ``calvin`` run on the official simulator and are skipped when calvin_env is not
importable; the others check that the backend fails at once, with install instructions, when it
is missing. Run the calvin tests from an environment where calvin_env is installed
(docs/calvin_backend.md), e.g. ``python -m pytest tests/test_calvin_backend.py -m calvin``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import rftf_gym  # noqa: F401  (registers RFTF-CALVIN-v0)
from rftf_gym import calvin_backend
from rftf_gym.backends import make_backend
from rftf_gym.tasks import TASK_NAMES, completed_tasks

REPO = Path(__file__).resolve().parents[1]
HAVE_CALVIN = importlib.util.find_spec("calvin_env") is not None
calvin = pytest.mark.calvin
needs_calvin = pytest.mark.skipif(
    not HAVE_CALVIN,
    reason="calvin_env is not installed; see docs/calvin_backend.md to run the official-simulator tests",
)

# Neutral robot state of the official evaluation (calvin_agent/evaluation/utils.py).
NEUTRAL_ROBOT = np.array(
    [0.02586889, -0.2313129, 0.5712808, 3.09045411, -0.02908596, 1.50013585, 0.07999963,
     -1.21779124, 1.03987629, 2.11978254, -2.34205014, -0.87015899, 1.64119093, 0.55344928, 1.0]
)  # fmt: skip
COLORS = ("red", "blue", "pink")
# Resting positions: table top (scenes A and D), the shelf's left half (the official evaluation's
# block_slider_left), and the middle of the open drawer per scene.
TABLE_XY = {"red": (0.05, -0.12), "blue": (0.25, -0.12), "pink": (0.15, -0.05)}
SLIDER_LEFT = (-0.24, 0.092, 0.461)
DRAWER_XY = {"A": (0.10, -0.32), "D": (0.18, -0.32)}


# ---------------------------------------------------------------------------------------------
# Without calvin_env (always run)
# ---------------------------------------------------------------------------------------------


def test_make_backend_without_calvin_env_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calvin_env", None)  # makes `import calvin_env` fail

    def no_further_work(module: str, pip_name: str) -> None:
        raise AssertionError(f"the backend went on to import {module} after calvin_env was missing")

    # At once: the first check fails, before hydra, omegaconf or gym are looked for.
    monkeypatch.setattr(calvin_backend, "_require", no_further_work)
    with pytest.raises(ImportError, match="calvin_env") as err:
        make_backend("calvin", "D", {"static": (200, 200)})
    assert "git clone" in str(err.value) and "pip install -e ." in str(err.value)


def test_gym_make_calvin_without_calvin_env_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calvin_env", None)
    with pytest.raises(ImportError, match="docs/calvin_backend.md"):
        gym.make("RFTF-CALVIN-v0", backend="calvin", obs_mode="state")


def test_module_imports_without_calvin_env_or_hydra() -> None:
    code = (
        "import sys\n"
        "for name in ('calvin_env', 'hydra', 'omegaconf', 'gym'): sys.modules[name] = None\n"
        "import rftf_gym.calvin_backend as cb\n"
        "print(cb.OfficialPlayTable.__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "OfficialPlayTable" in result.stdout


def test_missing_dependency_of_calvin_env_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hydra", None)
    with pytest.raises(ImportError, match="pip install hydra-core"):
        calvin_backend._require("hydra", "hydra-core")


# ---------------------------------------------------------------------------------------------
# On the official simulator
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def make_sim():
    """Build OfficialPlayTables and close them after the test (one per process at a time)."""
    made: list[Any] = []

    def make(scene: str = "D", cameras: dict[str, tuple[int, int]] | None = None, **kwargs: Any) -> Any:
        sim = make_backend("calvin", scene, cameras or {}, **kwargs)
        made.append(sim)
        return sim

    yield make
    for sim in made:
        sim.close()


def base_scene(**changes: float) -> np.ndarray:
    """Doors closed, lights off, all blocks on the table top with yaw pi/2 (graspable)."""
    scene_obs = np.zeros(24)
    for i, color in enumerate(COLORS):
        scene_obs[6 + 6 * i : 9 + 6 * i] = (*TABLE_XY[color], 0.46)
        scene_obs[11 + 6 * i] = np.pi / 2
    for index, value in changes.items():
        scene_obs[int(index.lstrip("i"))] = value
    return scene_obs


def block(scene_obs: np.ndarray, color: str) -> slice:
    i = COLORS.index(color)
    return slice(6 + 6 * i, 12 + 6 * i)


def settle(sim: Any, steps: int) -> None:
    for _ in range(steps):
        sim.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))


def info_at(sim: Any, scene_obs: np.ndarray, settle_steps: int = 0) -> dict[str, Any]:
    sim.reset(robot_obs=NEUTRAL_ROBOT, scene_obs=scene_obs)
    settle(sim, settle_steps)
    return sim.get_info()


def held_info(sim: Any, color: str) -> dict[str, Any]:
    """Grasp a block from the base layout and lift it 15 cm (absolute actions)."""
    scene_obs = base_scene()
    sim.reset(robot_obs=NEUTRAL_ROBOT, scene_obs=scene_obs)
    pos = scene_obs[block(scene_obs, color)][:3]
    for offset, gripper, steps in ((0.12, 1, 25), (0.0, 1, 25), (0.0, -1, 15), (0.15, -1, 25)):
        for _ in range(steps):
            sim.step(np.array([*(pos + [0, 0, offset]), np.pi, 0.0, 1.5, gripper]), "absolute")
    return sim.get_info()


def in_drawer(scene: str, color: str) -> np.ndarray:
    scene_obs = base_scene(i1=0.22)
    scene_obs[block(scene_obs, color)][:3] = (*DRAWER_XY[scene], 0.40)
    return scene_obs


def on_slider(color: str) -> np.ndarray:
    scene_obs = base_scene()
    scene_obs[block(scene_obs, color)][:3] = SLIDER_LEFT
    return scene_obs


def scenarios(sim: Any, scene: str) -> list[tuple[str, bool, dict, dict]]:
    """(task, should fire, start info, end info) state edits covering all 34 tasks."""
    base = info_at(sim, base_scene())
    out: list[tuple[str, bool, dict, dict]] = []
    for color in COLORS:
        for side, sign in (("right", -1), ("left", 1)):
            for degrees, fires in ((90, True), (50, False)):
                end = base_scene()
                end[block(end, color)][5] += sign * np.radians(degrees)
                out.append((f"rotate_{color}_block_{side}", fires, base, info_at(sim, end)))
            for dx, fires in ((0.12, True), (0.08, False)):
                end = base_scene()
                end[block(end, color)][0] += (1 if side == "right" else -1) * dx
                out.append((f"push_{color}_block_{side}", fires, base, info_at(sim, end)))
        held = held_info(sim, color)
        out.append((f"lift_{color}_block_table", True, base, held))
        out.append((f"lift_{color}_block_slider", True, info_at(sim, on_slider(color), 15), held))
        drawer = info_at(sim, in_drawer(scene, color), 30)
        out.append((f"lift_{color}_block_drawer", True, drawer, held))
        out.append(("place_in_drawer", True, held, drawer))
        out.append(("place_in_slider", True, held, info_at(sim, on_slider(color), 15)))
        out.append(("push_into_drawer", True, base, drawer))
    for task, index, low, high in (
        ("move_slider_left", 0, 0.0, 0.25),
        ("open_drawer", 1, 0.0, 0.2),
    ):
        opposite = "move_slider_right" if index == 0 else "close_drawer"
        low_info = info_at(sim, base_scene(**{f"i{index}": low}))
        high_info = info_at(sim, base_scene(**{f"i{index}": high}))
        out.append((task, True, low_info, high_info))
        out.append((opposite, True, high_info, low_info))
        near = info_at(sim, base_scene(**{f"i{index}": low + 0.1}))
        out.append((task, False, low_info, near))
    stacked = base_scene()
    stacked[block(stacked, "red")][:3] = (*TABLE_XY["blue"], 0.4999)
    stacked_info = info_at(sim, stacked)
    out.append(("stack_block", True, base, stacked_info))
    out.append(("unstack_block", True, stacked_info, base))
    bulb_on = info_at(sim, base_scene(i3=0.088, i4=1.0))
    led_on = info_at(sim, base_scene(i5=1.0))
    out += [
        ("turn_on_lightbulb", True, base, bulb_on),
        ("turn_off_lightbulb", True, bulb_on, base),
        ("turn_on_led", True, base, led_on),
        ("turn_off_led", True, led_on, base),
    ]
    return out


@calvin
@needs_calvin
@pytest.mark.parametrize("scene", ["A", "D"])
def test_oracle_agrees_with_official_tasks_on_all_34(make_sim, scene: str) -> None:
    from calvin_env.envs.tasks import Tasks
    from omegaconf import OmegaConf

    import calvin_env

    conf = Path(calvin_env.__file__).parents[1] / "conf" / "tasks" / "new_playtable_tasks.yaml"
    official = Tasks(OmegaConf.load(conf).tasks)
    assert set(official.tasks) == set(TASK_NAMES)
    sim = make_sim(scene)
    fired: set[str] = set()
    for task, fires, start, end in scenarios(sim, scene):
        expected = official.get_task_info(start, end)
        assert completed_tasks(start, end) == expected, task
        assert (task in expected) == fires, f"{task}: official oracle saw {sorted(expected)}"
        fired |= expected
    assert fired == set(TASK_NAMES)


@calvin
@needs_calvin
@pytest.mark.parametrize("scene", ["A", "B", "C", "D"])
def test_observations_and_block_order(make_sim, scene: str) -> None:
    sim = make_sim(scene, {"static": (64, 48), "gripper": (32, 32)})
    sim.reset(rng=np.random.default_rng(0))
    obs = sim.get_obs()
    assert obs["robot_obs"].shape == (15,) and obs["scene_obs"].shape == (24,)
    assert obs["rgb_static"].shape == (48, 64, 3) and obs["rgb_static"].dtype == np.uint8
    assert obs["rgb_gripper"].shape == (32, 32, 3)
    assert sim.render("static").shape == (48, 64, 3)
    movable = sim.get_info()["scene_info"]["movable_objects"]
    for i, color in enumerate(COLORS):
        np.testing.assert_allclose(obs["scene_obs"][6 + 6 * i : 9 + 6 * i], movable[f"block_{color}"]["current_pos"])
    # An explicit state comes back in the same red, blue, pink order (the blocks on the table
    # top's spots, swapped around).
    spots = base_scene()
    # Spots on every scene's table top, clear of each scene's button.
    for i, xy in enumerate(((0.02, -0.12), (0.13, -0.12), (0.075, -0.04))):
        spots[6 + 6 * i: 8 + 6 * i] = xy
    state = spots.copy()
    state[[0, 1, 5]] = (0.1, 0.15, 1.0)
    state[6:12], state[12:18], state[18:24] = spots[12:18], spots[18:24], spots[6:12]
    sim.reset(robot_obs=NEUTRAL_ROBOT, scene_obs=state)
    np.testing.assert_allclose(sim.get_obs()["scene_obs"], state, atol=5e-3)
    with pytest.raises(ValueError, match="not configured"):
        sim.render("tactile")


@calvin
@needs_calvin
def test_seeded_reset_and_explicit_restore_are_near_exact(make_sim) -> None:
    sim = make_sim("D")
    sim.reset(rng=np.random.default_rng(7))
    first = sim.get_obs()["scene_obs"]
    sim.reset(rng=np.random.default_rng(7))
    np.testing.assert_allclose(sim.get_obs()["scene_obs"], first, atol=1e-4)

    def rollout(history_seed: int) -> np.ndarray:
        sim.reset(rng=np.random.default_rng(history_seed))
        held_info(sim, "red")
        settle(sim, 10)
        obs = sim.get_obs()
        return np.concatenate([obs["robot_obs"], obs["scene_obs"]])

    # Same history: exact. Different history: close; the stale contact pairs are flushed before
    # each reset (measured 0.0034 apart; without the flush 0.37, with the snapshot alone 0.014).
    np.testing.assert_array_equal(rollout(0), rollout(0))
    np.testing.assert_allclose(rollout(1), rollout(0), atol=0.01)


@calvin
@needs_calvin
def test_actions_are_made_float_and_gripper_binary(make_sim) -> None:
    sim = make_sim("D")
    sim.reset(robot_obs=NEUTRAL_ROBOT, scene_obs=base_scene())
    sim.step(np.array([0, 0, 1, 0, 0, 0, 1]))  # int array: the official code cannot scale it
    sim.step(np.array([0.0, 0, 0, 0, 0, 0, -0.3]))
    assert sim.get_obs()["robot_obs"][14] == -1.0
    sim.reset(robot_obs=NEUTRAL_ROBOT, scene_obs=base_scene())
    assert sim.get_obs()["robot_obs"][14] == 1.0  # not the last episode's gripper action


@calvin
@needs_calvin
def test_target_windup_is_bounded(make_sim) -> None:
    from rftf_gym.calvin_backend import TARGET_POS_BAND

    sim = make_sim("D")
    sim.reset(robot_obs=NEUTRAL_ROBOT, scene_obs=base_scene())
    for _ in range(60):
        sim.step(np.array([0, 0, -1, 0, 0, 0, 1.0]))
    robot_obs = sim.get_obs()["robot_obs"]
    assert np.linalg.norm(sim._env.robot.target_pos - robot_obs[:3]) <= TARGET_POS_BAND + 1e-9
    z_blocked = robot_obs[2]
    for steps in range(1, 16):
        sim.step(np.array([0, 0, 1, 0, 0, 0, 1.0]))
        if sim.get_obs()["robot_obs"][2] > z_blocked + 0.02:
            break
    assert steps < 15, "the arm should rise within 15 steps of dz=+1 (the official target needs ~50)"


@calvin
@needs_calvin
def test_official_target_winds_up_without_the_correction(make_sim) -> None:
    sim = make_sim("D", correct_target_windup=False)
    sim.reset(robot_obs=NEUTRAL_ROBOT, scene_obs=base_scene())
    for _ in range(60):
        sim.step(np.array([0, 0, -1, 0, 0, 0, 1.0]))
    # Measured (docs/calvin_facts.md): target z -0.63 while the TCP stays near 0.32.
    assert sim._env.robot.target_pos[2] < -0.5 < 0.25 < sim.get_obs()["robot_obs"][2]


@calvin
@needs_calvin
def test_one_env_per_process(make_sim) -> None:
    first = make_sim("D")
    with pytest.raises(RuntimeError, match="AsyncVectorEnv"):
        make_sim("A")
    first.close()
    make_sim("A").reset()


@calvin
@needs_calvin
def test_slider_mid_x_splits_the_shelf(make_sim) -> None:
    expected_sign = {"A": -1, "B": 1, "C": 1, "D": -1}
    for scene, sign in expected_sign.items():
        sim = make_sim(scene)
        mid = sim.slider_mid_x()
        assert np.sign(mid) == sign and 0.05 < abs(mid) < 0.15
        if scene in ("A", "D"):
            assert SLIDER_LEFT[0] < mid < 0.07  # the official slider_left / slider_right x
        sim.close()


@calvin
@needs_calvin
def test_config_from_a_dataset_merged_config(make_sim, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from rftf_gym.calvin_backend import _calvin_root, _compose_config

    cfg = _compose_config(_calvin_root(), "D", {"static": (200, 200), "gripper": (84, 84)}, False)
    (tmp_path / "validation" / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, tmp_path / "validation" / ".hydra" / "merged_config.yaml")
    sim = make_sim("A", {"static": (40, 30)}, dataset_path=str(tmp_path))
    sim.reset(rng=np.random.default_rng(0))
    assert sim.get_obs()["rgb_static"].shape == (30, 40, 3) and "rgb_gripper" not in sim.get_obs()
    assert sim.slider_mid_x() < 0  # scene A from calvin_env's conf, as get_env(scene=...)
    sim.close()
    with pytest.raises(FileNotFoundError, match="merged_config"):
        make_sim("D", dataset_path=str(tmp_path / "nowhere"))


@calvin
@needs_calvin
@pytest.mark.parametrize("obs_mode", ["state", "rgb+state"])
def test_check_env_on_the_official_backend(obs_mode: str) -> None:
    from gymnasium.utils.env_checker import check_env

    def make() -> gym.Env:
        return gym.make("RFTF-CALVIN-v0", backend="calvin", obs_mode=obs_mode, static_size=48, gripper_size=32,
                        info_completed_tasks=True)

    env = make()
    try:
        # check_env's own close check builds a second env while this one lives, which calvin_env
        # cannot do in one process; the same check runs below once this env is closed.
        check_env(env.unwrapped, skip_render_check=True, skip_close_check=True)
        obs, info = env.reset(seed=1)
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert "completed_tasks" in info
    finally:
        env.close()
    again = make()
    again.close()
    again.close()


@calvin
@needs_calvin
def test_async_vector_env_runs_one_official_env_per_worker() -> None:
    envs = gym.vector.AsyncVectorEnv(
        [lambda: gym.make("RFTF-CALVIN-v0", backend="calvin", obs_mode="state") for _ in range(2)]
    )
    try:
        obs, _ = envs.reset(seed=[0, 1])
        assert obs["robot_obs"].shape == (2, 15)
        obs, *_ = envs.step(envs.action_space.sample())
        assert np.all(np.isfinite(obs["scene_obs"]))
    finally:
        envs.close()


@calvin
@needs_calvin
@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "evaluate.py").exists(), reason="evaluate.py is not in the repository yet")
def test_evaluate_two_chains_on_the_official_backend(tmp_path: Path) -> None:
    cmd = [sys.executable, "evaluate.py", "--backend", "calvin", "--policy", "random", "--num-chains", "2",
           "--obs-mode", "state", "--bootstrap-samples", "50", "--output-dir", str(tmp_path)]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_chains"] == 2
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sum(record.get("kind") == "chain" for record in records) == 2


@calvin
@needs_calvin
def test_clear_errors_for_a_non_git_calvin_env_and_missing_colorlog(monkeypatch: pytest.MonkeyPatch) -> None:
    import git

    def not_a_repo(*args: Any, **kwargs: Any) -> Any:
        raise git.InvalidGitRepositoryError("no .git")

    with monkeypatch.context() as patch:
        patch.setattr(git, "Repo", not_a_repo)
        with pytest.raises(RuntimeError, match="not a git checkout"):
            make_backend("calvin", "D", {})
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if "colorlog" in name else real_find_spec(name, *a)
    )
    with pytest.raises(ImportError, match="pip install hydra-colorlog"):
        make_backend("calvin", "D", {})


def _link_rays(sim: Any, backend: str, link: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hit points of rays on one table link (NaN where a ray meets anything else first)."""
    import pybullet as p

    if backend == "embedded":
        client, table = sim.client, sim.table_uid
    else:
        client, table = sim._env.cid, sim._env.scene.fixed_objects[0].uid
    index = {p.getJointInfo(table, j, physicsClientId=client)[12].decode(): j
             for j in range(p.getNumJoints(table, physicsClientId=client))}[link]
    hits = p.rayTestBatch(starts.tolist(), ends.tolist(), physicsClientId=client)
    return np.array([h[3] if h[0] == table and h[1] == index else (np.nan,) * 3 for h in hits])


@calvin
@needs_calvin
def test_switch_and_lightbulb_within_5_mm_of_the_official_ones(make_sim) -> None:
    # Rays into the switch lever along the tilted face's normal, and horizontal rays into the bulb
    # from eight directions: where both tables' rays meet the part, they meet it within 5 mm
    # (90th percentile), and they meet it at the same places.
    normal = np.array([0.0, -np.sqrt(3) / 2, 0.5])
    up = np.array([0.0, 0.5, np.sqrt(3) / 2])
    foot = np.array([0.0, 0.02, 0.44])
    grid = [foot + [x, 0, 0] + u * up for x in np.arange(0.22, 0.38, 0.004) for u in np.arange(0.04, 0.11, 0.003)]
    switch = (np.array([g + 0.3 * normal for g in grid]), np.array([g - 0.05 * normal for g in grid]))
    bulb_s, bulb_e = [], []
    for z in np.arange(0.642, 0.702, 0.003):
        for angle in np.linspace(0, 2 * np.pi, 8, endpoint=False):
            centre = np.array([0.30, 0.16, z])
            bulb_s.append(centre + 0.2 * np.array([np.cos(angle), np.sin(angle), 0.0]))
            bulb_e.append(centre)
    scene_obs = base_scene()
    official = make_sim("D")
    official.reset(robot_obs=NEUTRAL_ROBOT, scene_obs=scene_obs)
    embedded = make_backend("embedded", "D", {})
    embedded.reset(robot_obs=NEUTRAL_ROBOT, scene_obs=scene_obs)
    try:
        for link, (starts, ends) in (("switch_link", switch), ("light_link", (np.array(bulb_s), np.array(bulb_e)))):
            off = _link_rays(official, "calvin", link, starts, ends)
            emb = _link_rays(embedded, "embedded", link, starts, ends)
            hit_off, hit_emb = ~np.isnan(off[:, 0]), ~np.isnan(emb[:, 0])
            assert hit_off.sum() > 50, link
            assert (hit_off & hit_emb).sum() >= 0.9 * hit_off.sum(), link
            assert (hit_off & hit_emb).sum() >= 0.9 * hit_emb.sum(), link
            both = hit_off & hit_emb
            distance = np.linalg.norm(off[both] - emb[both], axis=1)
            assert np.percentile(distance, 90) < 0.005, f"{link}: p90 {np.percentile(distance, 90):.4f} m"
    finally:
        embedded.close()


@calvin
@needs_calvin
def test_depth_from_a_written_merged_config_matches_the_embedded_cameras(make_sim, tmp_path: Path) -> None:
    from rftf_gym.data.render_config import write_render_config
    from rftf_gym.sim.play_table import EmbeddedPlayTable

    cameras = {"static": (200, 200), "gripper": (84, 84)}
    write_render_config(tmp_path / "validation", "D", {"static": (200, 200), "gripper": (84, 84)})
    sim = make_sim("D", cameras, dataset_path=str(tmp_path), depth=True)
    sim.reset(robot_obs=NEUTRAL_ROBOT, scene_obs=base_scene())
    official = sim.get_obs()
    embedded = EmbeddedPlayTable("D", cameras, depth=True)
    try:
        embedded.reset(robot_obs=official["robot_obs"], scene_obs=official["scene_obs"])
        ours = embedded.get_obs()
    finally:
        embedded.close()
    for name, far in (("static", 10.0), ("gripper", 2.0)):
        a, b = official[f"depth_{name}"], ours[f"depth_{name}"]
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        # Where both cameras see geometry (the official table mesh also has parts the embedded
        # primitives lack, seen at the far plane here), the depths agree to millimetres.
        both = (a < 0.999 * far) & (b < 0.999 * far)
        assert both.mean() > 0.5
        assert np.median(np.abs(a - b)[both]) < 0.005


@calvin
@needs_calvin
@pytest.mark.parametrize("task,seed", [("lift_blue_block_slider", 0), ("place_in_slider", 0), ("stack_block", 0)])
def test_shelf_and_stack_experts_succeed_on_the_official_backend(task: str, seed: int) -> None:
    # The experts that had to cross in front of the door handle and lean beside the sliding door
    # (or set a block on another in front of it), run on the official simulator from a seeded
    # start state where the task applies.
    from rftf_gym.experts import make_expert, reset_to_task

    env = gym.make("RFTF-CALVIN-v0", backend="calvin", scene="D", obs_mode="state")
    try:
        rng = np.random.default_rng(seed)
        obs, _ = reset_to_task(env, task, rng)
        expert = make_expert(task, "D", rng)
        info: dict = {}
        for _ in range(360):
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            if terminated or truncated:
                break
        assert info["success"], f"{task} from seed {seed}: {env.unwrapped.completed_tasks()}"
    finally:
        env.close()
