"""``validation/.hydra/merged_config.yaml``: the calvin_env configuration CALVIN's evaluation reads.

The hermetic tests check the YAML text, that every OmegaConf interpolation in it points at an
existing node, and (when the official reference configs are in ../shared/) that each node equals
calvin_env's own file. The ``calvin`` test builds the official simulator from a written file with
calvin_env's ``get_env``, in a subprocess, and is skipped where calvin_env is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rftf_gym.conventions import SCENES
from rftf_gym.data.render_config import render_config, to_yaml, write_render_config

yaml = pytest.importorskip("yaml")

OFFICIAL = {"static": (200, 200), "gripper": (84, 84)}
REFERENCE = Path(__file__).resolve().parents[2] / "shared/calvin_reference/calvin_env/conf"
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason="official calvin reference not present")


def _lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"${{{dotted}}} points at nothing"
        node = node[part]
    return node


def _interpolations(node, found: list[str]) -> list[str]:
    if isinstance(node, dict):
        for value in node.values():
            _interpolations(value, found)
    elif isinstance(node, list):
        for value in node:
            _interpolations(value, found)
    elif isinstance(node, str):
        found += re.findall(r"\$\{([^}]+)\}", node)
    return found


@pytest.mark.parametrize("scene", SCENES)
def test_written_file_reads_back_and_its_interpolations_resolve(tmp_path: Path, scene: str) -> None:
    sizes = {"static": (48, 64), "gripper": (24, 20)}  # (height, width)
    path = write_render_config(tmp_path / "validation", scene, sizes)
    assert path == tmp_path / "validation" / ".hydra" / "merged_config.yaml"
    loaded = yaml.safe_load(path.read_text())
    assert loaded == render_config(scene, sizes)
    # get_env reads these; the env's nodes are interpolations, so that deleting a camera from
    # `cameras` or replacing `scene` (get_env(scene=...)) reaches the instantiated env.
    assert loaded["env"]["cameras"] == "${cameras}"
    assert loaded["env"]["scene_cfg"] == "${scene}"
    assert loaded["env"]["robot_cfg"] == "${robot}"
    assert sorted(_interpolations(loaded, [])) == sorted([
        "cameras", "use_vr", "robot", "scene", "data_path", "robot.euler_obs",
        "scene.robot_base_position", "scene.robot_base_orientation", "scene.robot_initial_joint_positions",
    ])
    for dotted in _interpolations(loaded, []):
        _lookup(loaded, dotted)
    cams = loaded["cameras"]
    assert (cams["static"]["width"], cams["static"]["height"]) == (64, 48)
    assert (cams["gripper"]["width"], cams["gripper"]["height"]) == (20, 24)
    # calvin_env orders scene_obs by this list; the toolkit's scene_obs is red, blue, pink.
    assert list(loaded["scene"]["objects"]["movable_objects"]) == ["block_red", "block_blue", "block_pink"]
    assert f"calvin_table_{scene}/" in loaded["scene"]["objects"]["fixed_objects"]["table"]["file"]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="scene must be one of"):
        render_config("E", OFFICIAL)
    with pytest.raises(ValueError, match="'static' and 'gripper'"):
        render_config("D", {"static": (200, 200)})


def test_yaml_writer_quotes_what_yaml_would_misread() -> None:
    config = {"a": {"t": "true", "n": "10", "s": "two words", "e": "", "x": "${a.t}", "f": 1e-05,
                    "l": [[0.5, -1], ["no", "ok"]], "empty": {}}, "b": False}
    assert yaml.safe_load(to_yaml(config)) == config
    with pytest.raises(ValueError, match="needs quoting"):
        to_yaml({"a key": 1})
    with pytest.raises(TypeError, match="cannot write"):
        to_yaml({"k": (1, 2)})


@needs_reference
@pytest.mark.parametrize("scene", SCENES)
def test_nodes_equal_the_official_configs(scene: str) -> None:
    ours = render_config(scene, OFFICIAL)
    official_scene = yaml.safe_load((REFERENCE / "scene" / f"calvin_scene_{scene}.yaml").read_text())
    assert ours["scene"] == official_scene  # dicts compare without order: A and C list blocks otherwise
    panda = yaml.safe_load((REFERENCE / "robot" / "panda.yaml").read_text())
    longer = yaml.safe_load((REFERENCE / "robot" / "panda_longer_finger.yaml").read_text())
    longer.pop("defaults")
    assert ours["robot"] == {**panda, **longer}
    for name in ("static", "gripper"):
        camera = yaml.safe_load((REFERENCE / "cameras" / "cameras" / f"{name}.yaml").read_text())
        assert ours["cameras"][name] == camera
    env = yaml.safe_load((REFERENCE / "env" / "play_table_env.yaml").read_text())
    assert ours["env"] == env
    collection = yaml.safe_load((REFERENCE / "config_data_collection.yaml").read_text())
    assert ours["seed"] == collection["seed"] and ours["data_path"] == collection["data_path"]


GET_ENV = """
import json, sys
import numpy as np
from calvin_env.envs.play_table_env import get_env
obs_space = {"rgb_obs": ["rgb_static"], "depth_obs": ["depth_static", "depth_gripper"]}
env = get_env(sys.argv[1], obs_space=obs_space, show_gui=False)
obs = env.reset()
out = {"cameras": [c.name for c in env.cameras], "blocks": [o.name for o in env.scene.movable_objects],
       "robot": env.robot.filename, "scene": str(env.scene.object_cfg["fixed_objects"]["table"]["file"]),
       "shapes": {k: list(v.shape) for d in ("rgb_obs", "depth_obs") for k, v in obs[d].items()},
       "robot_obs": len(obs["robot_obs"]), "scene_obs": len(obs["scene_obs"])}
env.close()
print("RESULT " + json.dumps(out))
"""


@pytest.mark.calvin
@pytest.mark.skipif(importlib.util.find_spec("calvin_env") is None,
                    reason="calvin_env is not installed; see docs/calvin_backend.md to run the official-simulator tests")
def test_official_get_env_builds_the_simulator_from_the_file(tmp_path: Path) -> None:
    write_render_config(tmp_path / "validation", "D", {"static": (200, 200), "gripper": (84, 84)})
    result = subprocess.run([sys.executable, "-c", GET_ENV, str(tmp_path / "validation")], check=False,
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT "):])
    # get_env keeps the cameras the observation space names (both, here: depth_gripper).
    assert out["cameras"] == ["static", "gripper"]
    assert out["blocks"] == ["block_red", "block_blue", "block_pink"]
    assert out["robot"] == "franka_panda/panda_longer_finger.urdf"
    assert out["scene"] == "calvin_table_D/urdf/calvin_table_D.urdf"
    assert out["shapes"] == {"rgb_static": [200, 200, 3], "rgb_gripper": [84, 84, 3],
                             "depth_static": [200, 200], "depth_gripper": [84, 84]}
    assert (out["robot_obs"], out["scene_obs"]) == (15, 24)
