"""Atomic file writes: readers see a file's old content or its new content, never half of it.

Every file the toolkit writes (datasets, checkpoints, results, benchmark tables, generated URDFs)
goes through `atomic_write`: the content is written under a hidden temporary name in the same
directory, then renamed over the target with ``os.replace``, which is atomic on POSIX and Windows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], sync: bool = False) -> None:
    """Write a file atomically through a callback that writes to a binary file object.

    Args:
        path: the file to (re)write; its directory must exist.
        write: called once with the open temporary file, e.g. ``lambda f: np.save(f, array)``.
        sync: fsync the data before the rename, so the new content survives a power loss
            (index files, checkpoints, results); bulk frame files skip it.

    Raises:
        OSError: the write or the rename failed (a full disk, no permission); the error names
            ``path`` and the temporary file is removed.
    """
    path = Path(path)
    # One temporary name per process: worker processes may write the same target at once.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        # A failed write() (a full disk) names no file: name the one being written.
        raise OSError(err.errno, err.strerror, str(path)) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes atomically and durably (fsync), creating the parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: handle.write(data), sync=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically and durably (fsync), creating the parent directories."""
    atomic_write_bytes(path, text.encode("utf-8"))
