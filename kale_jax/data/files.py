"""Reading user-supplied array files (.npy / .npz) safely: never unpickled, errors in one line.

    arrays = load_arrays(path, what="Inception statistics", keys=("mu", "sigma"))

np.load is called with allow_pickle=False, so a file holding pickled Python objects (an object
array, or a plain pickle renamed .npy/.npz) is refused instead of executing code. Every problem (a
missing file, a pickle, a truncated or non-NumPy file, a missing key) raises
kale_jax.errors.DataError naming the file and what to do; the binaries print it as one line.
"""
from __future__ import annotations

import os
import zipfile
from typing import Dict, Optional, Sequence

import numpy as np

from kale_jax.errors import DataError


def load_arrays(path: str, *, what: str = "array file",
                keys: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """All arrays of a .npz file ({name: array}) or a .npy file ({'array': array}), in memory.

    Args:
      path: the file.
      what: what the file is, for messages (e.g. "Inception weights").
      keys: names that must be present (DataError otherwise).
    Raises:
      DataError: missing, pickled, truncated or not a NumPy file; a key of `keys` is missing.
    """
    if not os.path.isfile(path):
        raise DataError(f"{what} {path} does not exist (or is not a file)")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:  # members are read lazily: read every one now, inside the guard
                arrays = {name: np.asarray(loaded[name]) for name in loaded.files}
        else:
            arrays = {"array": np.asarray(loaded)}
    except ValueError as error:
        if "pickle" in str(error):
            raise DataError(f"{what} {path} holds pickled Python objects, which are never loaded "
                            "(they can run code); save plain numeric arrays with numpy.savez"
                            ) from error
        raise _damaged(path, what, error) from error
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise _damaged(path, what, error) from error
    missing = [k for k in keys or () if k not in arrays]
    if missing:
        raise DataError(f"{what} {path} lacks arrays {missing} (it holds {sorted(arrays)})")
    return arrays


def _damaged(path: str, what: str, error: Exception) -> DataError:
    return DataError(f"{what} {path} is truncated or not a .npy/.npz file ({error}); write it "
                     "again with numpy.save / numpy.savez")
