"""Rewrite one benchmark's section of BENCHMARKS.md, leaving the other sections alone.

Each benchmark owns the text between ``<!-- name -->`` and ``<!-- /name -->``; a missing section
is appended. The file is replaced atomically, so an interrupted benchmark never truncates it.
"""

from __future__ import annotations

import re
from pathlib import Path

from rftf_gym.files import atomic_write_text

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def write_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the section ``name`` of a markdown file with ``body``.

    Args:
        name: the section's marker name, e.g. ``"env_throughput"``.
        body: the markdown between the markers.
        path: the markdown file (created with a title when missing).
    """
    block = f"<!-- {name} -->\n{body.strip()}\n<!-- /{name} -->"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(path, new)
