"""Every third-party module the tests use is installed by the README's test set-up.

A module only the developer's machine has turns its tests into silent skips on a fresh machine
(`pytest.importorskip`), so each one must be a runtime dependency or in the ``dev`` extra.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; the check itself needs no extra package

ROOT = Path(__file__).resolve().parents[1]
# Import name -> distribution name where they differ.
DISTRIBUTIONS = {"PIL": "pillow", "yaml": "pyyaml"}
# The official simulator, the official training code (calvin_agent) and their own dependencies:
# the user installs them (docs/calvin_backend.md, README) and the tests that need them are marked
# ``calvin`` and skipped without them.
CALVIN_BACKEND = {"calvin_env", "calvin_agent", "hydra", "omegaconf", "git", "gym"}
LOCAL = {"rftf_gym", "evaluate", "collect_demos", "ppo_rftf", "train_value", "conftest", "tests"}


def _test_imports() -> dict[str, set[str]]:
    """Top-level module -> test files importing it (import statements and importorskip)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "tests").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.append(node.module)
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                names.append(node.args[0].value)
        for name in names:
            found.setdefault(name.split(".")[0], set()).add(path.name)
    return found


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"]) + list(project["optional-dependencies"]["dev"])
    return {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower() for req in requirements}


def test_every_third_party_test_import_is_declared() -> None:
    declared = _declared()
    missing = {
        module: sorted(files)
        for module, files in _test_imports().items()
        if module not in sys.stdlib_module_names and module not in LOCAL and module not in CALVIN_BACKEND
        and DISTRIBUTIONS.get(module, module).lower() not in declared
    }
    assert not missing, f"add these to pyproject.toml's dev extra (module: test files): {missing}"
