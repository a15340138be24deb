"""How the scripts end on a mistake the user can fix: one clear line, not a traceback.

`usage_errors` wraps the part of a script that checks its arguments and inputs (argument values,
the policy checkpoint, the output directory, a results or progress file of another
configuration). What goes wrong there is the user's to fix, so the message is printed alone as
``<script>: error: <message>`` and the script exits with status 2, as argparse and tyro do for
bad arguments. Errors raised anywhere else keep their traceback: they are bugs.

`report_disk_errors` covers a whole run: a full disk (or quota, or read-only file system) ends it
with one line naming the file being written and what to do, exit status 1.

Example::

    with usage_errors("evaluate.py"):
        check_args(args)
"""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# What a check of arguments and inputs raises for a mistake of the user's.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
USAGE_EXIT = 2


def fail(prog: str, message: str, status: int = USAGE_EXIT) -> None:
    """Print ``<prog>: error: <message>`` to stderr and exit with ``status``."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


@contextlib.contextmanager
def usage_errors(prog: str) -> Iterator[None]:
    """Turn a user's mistake raised inside into one line on stderr and exit status 2."""
    try:
        yield
    except USER_ERRORS as err:
        fail(prog, str(err) or type(err).__name__)


def disk_error_message(err: OSError) -> str | None:
    """The one line for a full disk (or quota, or read-only file system); None for other errors."""
    if err.errno not in DISK_ERRNOS:
        return None
    where = f" while writing {err.filename}" if err.filename else ""
    return (f"{err.strerror}{where}: free space there or choose another output directory, then re-run "
            "the same command: it resumes")


def report_disk_errors(prog: str) -> None:
    """From now on, a full disk that ends the script prints one line naming the file (exit status 1).

    Installed as ``sys.excepthook``, so it also covers errors re-raised from worker processes;
    every other uncaught exception keeps its traceback.
    """
    default = sys.excepthook

    def hook(kind: type[BaseException], err: BaseException, tb: Any) -> None:
        message = disk_error_message(err) if isinstance(err, OSError) else None
        if message is None:
            default(kind, err, tb)
        else:
            print(f"{prog}: error: {message}", file=sys.stderr)

    sys.excepthook = hook


def check_output_dir(path: str | Path, flag: str) -> Path:
    """An output directory argument: missing (created later) or a directory, not a file.

    Raises:
        NotADirectoryError: ``path`` or one of its parents is an existing file.
    """
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists() and not candidate.is_dir():
            raise NotADirectoryError(
                f"{flag} {path}: {candidate} is a file, not a directory; remove or rename it, or give another {flag}"
            )
        if candidate.exists():
            break
    return path
