"""rftf_gym.cli: a user's mistake ends a script in one line; bugs keep their traceback."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from rftf_gym import cli
from rftf_gym.files import atomic_write_text


def test_usage_errors_print_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info, cli.usage_errors("tool.py"):
        raise ValueError("--num-chains must be >= 1, got 0")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "tool.py: error: --num-chains must be >= 1, got 0\n"


def test_other_errors_keep_their_traceback() -> None:
    with pytest.raises(KeyError), cli.usage_errors("tool.py"):
        raise KeyError("a bug")


def test_check_output_dir_refuses_a_file_or_a_file_parent(tmp_path: Path) -> None:
    a_file = tmp_path / "f"
    a_file.write_text("")
    assert cli.check_output_dir(tmp_path / "new" / "dir", "--out") == tmp_path / "new" / "dir"
    with pytest.raises(NotADirectoryError, match=f"--out {a_file / 'sub'}: {a_file} is a file"):
        cli.check_output_dir(a_file / "sub", "--out")


def test_a_full_disk_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "metrics.json"
    real_open = open

    def open_full(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "w" in mode:
            handle.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return handle

    monkeypatch.setattr("builtins.open", open_full)
    with pytest.raises(OSError) as err:
        atomic_write_text(target, "{}")
    monkeypatch.undo()
    assert err.value.filename == str(target) and err.value.errno == errno.ENOSPC
    assert not list(tmp_path.iterdir())  # the temporary file is gone
    assert cli.disk_error_message(err.value) == (
        f"No space left on device while writing {target}: free space there or choose another output "
        "directory, then re-run the same command: it resumes")
    assert cli.disk_error_message(OSError(errno.EACCES, "Permission denied")) is None
