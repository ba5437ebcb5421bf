"""One switch for every Numba kernel in the project.

Kernels are plain Python functions that fill caller-allocated buffers; `kernel` compiles them with Numba
unless ``COLORIZE_JIT=0`` is set, in which case they run as the Python they are written in (slow, but
debuggable). Tests compare the two: a compiled dispatcher keeps its source as ``.py_func``.
"""

import os

import numba

JIT_ENABLED = os.environ.get("COLORIZE_JIT", "1") != "0"

prange = numba.prange  # behaves as `range` when the function runs uncompiled


def kernel(parallel: bool = False):
    """Decorator: compile with Numba (nopython, cached, no fast-math) unless the JIT is switched off."""

    def wrap(fn):
        if not JIT_ENABLED:
            return fn
        return numba.njit(cache=True, parallel=parallel, nogil=True)(fn)

    return wrap


def python_version(fn):
    """The uncompiled Python source of a kernel (itself when the JIT is off)."""
    return getattr(fn, "py_func", fn)
