"""The simulator backends by name, and the factory that builds one.

The interface they implement is `rftf_gym.backend.PlayTableBackend`; the implementations import
only `rftf_gym.conventions`, so this module imports them without closing an import cycle.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from rftf_gym.backend import PlayTableBackend
from rftf_gym.calvin_backend import OfficialPlayTable
from rftf_gym.conventions import CAMERAS, SCENES
from rftf_gym.sim.play_table import EmbeddedPlayTable

# ``embedded``: the project's pybullet re-creation of the play table, always available;
# ``calvin``: the official calvin_env simulator, when installed (docs/calvin_backend.md).
Backend = Literal["embedded", "calvin"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def make_backend(
    backend: str,
    scene: str,
    cameras: dict[str, tuple[int, int]] | None,
    **kwargs: Any,
) -> PlayTableBackend:
    """Build a backend by name.

    Args:
        backend: ``"embedded"`` or ``"calvin"``.
        scene: one of ``"A"``, ``"B"``, ``"C"``, ``"D"``.
        cameras: camera name -> (width, height); None or empty renders nothing.
        **kwargs: passed to the backend's constructor.

    Returns:
        A ready backend; call ``reset`` before stepping.

    Raises:
        ValueError: unknown backend, scene or camera.
        ImportError: ``"calvin"`` asked for while calvin_env is not installed (the message says
            how to install it).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")
    cameras = dict(cameras or {})
    for name in cameras:
        if name not in CAMERAS:
            raise ValueError(f"camera must be one of {CAMERAS}, got {name!r}")
    if backend == "embedded":
        return EmbeddedPlayTable(scene=scene, cameras=cameras, **kwargs)
    return OfficialPlayTable(scene=scene, cameras=cameras, **kwargs)
