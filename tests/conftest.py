"""Shared test helpers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench_module(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` (bench/ is no package): bench/ goes on sys.path for the
    scripts' own imports, and the module is registered in sys.modules, where dataclasses look
    their module up."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _kill_when_ready(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float | None = None) -> None:
    """Wait until ``ready()`` (or ``timeout`` seconds, or the process ends), then SIGKILL ``proc``.

    Asserts that the process was still running when it was to be killed, so a test of resuming
    after ``kill -9`` cannot pass on a run that simply finished. The process is killed and reaped
    whatever happens.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while proc.poll() is None and not ready() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def kill_when_ready() -> Callable[..., None]:
    """`_kill_when_ready`: start a script with subprocess.Popen, then ``kill_when_ready(proc, ready, timeout)``."""
    return _kill_when_ready
