"""Loading the pickled ``.npy`` files of CALVIN without running code.

CALVIN stores ``scene_info.npy`` and ``auto_lang_ann.npy`` as ``np.save`` of a Python dict, i.e. a
0-d object array whose payload is a pickle, and CALVIN's own code reads them with
``np.load(..., allow_pickle=True)``. Unpickling runs whatever callables the file names, so a
downloaded dataset could execute code. `load_pickled_npy` parses the ``.npy`` header itself and
unpickles with `SafeUnpickler`, which only accepts plain containers, strings, numbers, ``None`` and
the handful of numpy globals needed to rebuild arrays, dtypes and scalars, and refuses every other
global with an `UnsafePickleError`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from rftf_gym.data.format import DatasetError, UnsafePickleError
from rftf_gym.files import atomic_write

try:  # numpy >= 2 moved the array internals to numpy._core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    # Files written by numpy 1.x name numpy.core, numpy 2 names numpy._core; both resolve to the
    # same functions without importing the deprecated numpy.core shim.
    _SAFE_GLOBALS[(_module, "_reconstruct")] = _multiarray._reconstruct
    _SAFE_GLOBALS[(_module, "scalar")] = _multiarray.scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    # Arrays pickled with protocol 5 are rebuilt by frombuffer + reshape.
    _SAFE_GLOBALS[(_module, "_frombuffer")] = _numeric._frombuffer


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds only plain data.

    Dicts, lists, tuples, str, bytes, int, float, bool and None (and sets from protocol 4 on) are
    built by pickle opcodes without looking up any global; the only globals allowed are numpy's
    array, dtype and scalar constructors. Anything else (``os.system``, ``builtins.eval``,
    arbitrary classes) raises `UnsafePickleError` before it is called.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global if it is on the allow list; refuse it otherwise."""
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle global {module}.{name}: only plain containers, strings, "
                "numbers and numpy arrays are allowed"
            ) from None


def load_pickled_npy(path: str | Path) -> Any:
    """Load a ``.npy`` file that ``np.save`` wrote from a Python object, without running code.

    Args:
        path: File written by ``np.save(path, obj)`` (a 0-d object array).

    Returns:
        The stored object (e.g. the dict of ``auto_lang_ann.npy``).

    Raises:
        DatasetError: The file is missing, not a 0-d object ``.npy``, or truncated.
        UnsafePickleError: The pickle names a global outside the allow list (subclass of
            DatasetError); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file is missing")
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except ValueError as e:
            raise DatasetError(f"{path}: not a valid .npy file ({e})") from None
        if dtype != np.dtype(object) or shape != ():
            raise DatasetError(
                f"{path}: expected a pickled dict (0-d object array), "
                f"got dtype {dtype} shape {shape}"
            )
        try:
            array = SafeUnpickler(f).load()
        except UnsafePickleError as e:
            raise UnsafePickleError(f"{path}: {e}") from None
        except Exception as e:  # truncated or corrupt pickles raise many types
            raise DatasetError(f"{path}: corrupt pickle ({type(e).__name__}: {e})") from None
    if not isinstance(array, np.ndarray) or array.dtype != object or array.shape != ():
        raise DatasetError(f"{path}: pickle does not hold a 0-d object array")
    return array.item()


def save_pickled_npy(path: Path, obj: Any) -> None:
    """Write ``obj`` as CALVIN does (``np.save`` of a 0-d object array), atomically and synced."""
    array = np.empty((), dtype=object)
    array[()] = obj
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=True), sync=True)
