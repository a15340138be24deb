"""Generated URDFs written once per content to the temp dir, where pybullet can load them."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from rftf_gym.files import atomic_write_text


def write_cached_urdf(name: str, text: str) -> str:
    """Write text to a content-addressed file in the temp dir and return its path.

    The write is atomic (`rftf_gym.files.atomic_write_text`), so worker processes building the
    same scene at once never read a half-written file.

    Args:
        name: file name suffix, e.g. ``"table_D.urdf"``.
        text: the URDF document.

    Returns:
        The file's path.
    """
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / "rftf_gym_urdf"
    path = folder / f"{digest}_{name}"
    if not path.exists():
        atomic_write_text(path, text)
    return str(path)
