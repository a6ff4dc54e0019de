"""Loads libcryo and declares its calls to ctypes.

libcryo takes the control socket that `cryo run` left it when it is loaded
(its constructor reads CRYO_CONTROL_FD), so it is loaded once, when the
package is imported.
"""

import ctypes
import ctypes.util
import os
from typing import Iterator, List, Optional

#: The library this binding speaks to: its ABI is libcryo.so.0's.
SONAME = "libcryo.so.0"

#: An environment variable naming the library to load instead (a path), for
#: tests and for a libcryo that is neither installed nor in the loader's path.
LIBRARY_ENV = "CRYO_LIBRARY"

#: The environment variable through which `cryo run` hands libcryo its
#: control socket (runtime/protocol.h).
CONTROL_FD_ENV = "CRYO_CONTROL_FD"


def _installed_path() -> Optional[str]:
    """Where `meson install` put libcryo, when it installed this package too.

    `meson install` runs no ldconfig, and the loader finds a library in
    /usr/local/lib/<triplet> only through its cache: a package installed
    beside the library remembers its path (cryo/_install.py, written by meson).
    """
    try:
        from . import _install  # type: ignore[attr-defined]
    except ImportError:
        return None
    return getattr(_install, "LIBCRYO", None)


def _candidates() -> Iterator[str]:
    """The names to try, in order: the soname first, through the loader's own
    search (LD_LIBRARY_PATH, its cache, the system's directories), then the
    path meson installed it at, then whatever ctypes.util.find_library() finds
    (which spawns ldconfig, so it is tried last)."""
    yield SONAME
    path = _installed_path()
    if path:
        yield path
    found = ctypes.util.find_library("cryo")
    if found and found != SONAME:
        yield found


def _load() -> ctypes.CDLL:
    explicit = os.environ.get(LIBRARY_ENV)
    if explicit:
        try:
            return ctypes.CDLL(explicit)
        except OSError as e:
            raise ImportError(
                f"cannot load libcryo from {LIBRARY_ENV}={explicit}: {e}; "
                f"point {LIBRARY_ENV} at a libcryo.so.0, or unset it to use the installed one"
            ) from None
    tried: List[str] = []
    for name in _candidates():
        try:
            return ctypes.CDLL(name)
        except OSError as e:
            tried.append(f"{name} ({e})")
    raise ImportError(
        "cannot load libcryo: tried " + "; ".join(tried) + ". Install cryo "
        "(meson install, then ldconfig) or set " + LIBRARY_ENV + " to the path of libcryo.so.0"
    )


lib = _load()

#: The name or path libcryo was loaded by.
path: str = lib._name

lib.cryo_checkpoint.restype = ctypes.c_int
lib.cryo_checkpoint.argtypes = []
lib.cryo_checkpoint_async.restype = ctypes.c_int
lib.cryo_checkpoint_async.argtypes = []
lib.cryo_checkpoint_fd.restype = ctypes.c_int
lib.cryo_checkpoint_fd.argtypes = []
lib.cryo_checkpoint_result.restype = ctypes.c_int64
lib.cryo_checkpoint_result.argtypes = []
lib.cryo_generation.restype = ctypes.c_uint64
lib.cryo_generation.argtypes = []
lib.cryo_version.restype = ctypes.c_char_p
lib.cryo_version.argtypes = []

# libcryo's constructor took the control socket and removed CRYO_CONTROL_FD
# from the C environment, so that the program's children do not take the
# number for theirs; Python's os.environ is a copy made at start-up, from
# which subprocess would hand it on: it goes from there too.
os.environ.pop(CONTROL_FD_ENV, None)
