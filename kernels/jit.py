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


def prefetch(array, index):
    """Hint the CPU to bring the cache line of ``array[index]`` into cache; a no-op outside compiled code."""


if JIT_ENABLED:
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic, overload

    @intrinsic
    def _prefetch(typingctx, array, index):
        def codegen(context, builder, signature, args):
            array_type = signature.args[0]
            view = context.make_array(array_type)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]], wraparound=False)
            i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
            i32 = ir.IntType(32)
            fn_type = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fn_type, "llvm.prefetch.p0")
            builder.call(fn, [i8p, i32(0), i32(3), i32(1)])  # read, keep in every level, data cache
            return context.get_dummy_value()

        return types.void(array, index), codegen

    @overload(prefetch)
    def _prefetch_compiled(array, index):
        return lambda array, index: _prefetch(array, index)
