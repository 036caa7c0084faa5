"""Read the CIFAR pickles without letting them run code.

`pickle.load` will call any importable function a file names, so a doctored "dataset" could
run `os.system`. The official CIFAR files only ever name the three NumPy globals needed to
rebuild an array, so an unpickler that admits exactly those (and nothing else) reads every
genuine file and refuses every trick. Lists, dicts, bytes and ints are built by pickle opcodes
that never consult `find_class`, so they need no permission.
"""
import io
import pickle

import numpy as np

from .errors import DataError

try:  # NumPy >= 2 keeps its internals in numpy._core; older files still name numpy.core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct

ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only `ALLOWED_GLOBALS`; `source` names the file in errors."""

    def __init__(self, file, source: str):
        # encoding='bytes': the files are Python 2 pickles whose str objects are raw bytes.
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(f"{self.source}: refused to load global '{module}.{name}' "
                            "(a CIFAR file may only rebuild NumPy arrays)") from None


def safe_loads(data: bytes, source: str):
    """Unpickle `data` with `RestrictedUnpickler`; any failure becomes a one-line DataError."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source).load()
    except DataError:
        raise
    except Exception as e:  # truncated or corrupt: EOFError, UnpicklingError, ValueError, ...
        reason = " ".join(str(e).split()) or "no detail"
        raise DataError(f"{source}: not a readable CIFAR pickle, the file may be truncated or "
                        f"corrupt ({type(e).__name__}: {reason})") from None
