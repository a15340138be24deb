"""rftf_gym.files: atomic writes keep the old content when a write fails and leave no temp file."""

from __future__ import annotations

from pathlib import Path

import pytest

from rftf_gym.files import atomic_write, atomic_write_bytes, atomic_write_text


def test_writes_replace_the_content_and_create_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.txt"
    atomic_write_text(target, "first")
    atomic_write_bytes(target, b"second")
    assert target.read_text() == "second"
    atomic_write(target, lambda f: f.write(b"third"), sync=True)
    assert target.read_text() == "third"
    assert [p.name for p in target.parent.iterdir()] == ["b.txt"]


def test_a_failing_write_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "b.txt"
    atomic_write_text(target, "old")

    def half_then_fail(handle) -> None:
        handle.write(b"new but ")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["b.txt"]


def test_an_os_error_names_the_target(tmp_path: Path) -> None:
    missing_dir = tmp_path / "no" / "such" / "file.bin"
    with pytest.raises(OSError) as err:
        atomic_write(missing_dir, lambda f: f.write(b"x"))  # atomic_write does not create folders
    assert err.value.filename == str(missing_dir)
