"""EmulatorRuntime: the KernelRuntime contract (see minicnn/backends/cuda.py) on the CPU.

Kernels are compiled by g++ into a shared library (see build.py) and launched through ctypes.
Arguments are NumPy arrays (passed as pointers, like device pointers on a GPU) and NumPy
scalars (passed by value). Every launch is checked; a misbehaving kernel raises EmulatorError.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from minicnn.emu.build import DEFAULT_KERNELS_DIR, build_module
from minicnn.emu.errors import EmulatorError

SCHEDULES = {"forward": 0, "reverse": 1}
SCALAR_TYPES = (np.int32, np.uint32, np.int64, np.uint64, np.float32, np.float64)
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK_DIM = (1024, 1024, 64)
MAX_GRID_DIM = (2**31 - 1, 65535, 65535)
MAX_DYNAMIC_SHARED = 48 * 1024  # more needs an opt-in attribute on a real GPU
# The emulated GPU of cooperative launches (grid.sync()): few SMs, so that the launchers'
# grid-stride loops take several turns even on the small arrays of tests. Without compiler
# facts the emulator bounds the blocks an SM holds by threads only.
EMULATED_SMS = 2
MAX_THREADS_PER_SM = 2048


class _Launch(ctypes.Structure):
    """Mirror of emu::Launch in cuda_emu.h."""

    _fields_ = [
        ("grid", ctypes.c_uint32 * 3),
        ("block", ctypes.c_uint32 * 3),
        ("shared_mem", ctypes.c_uint64),
        ("schedule", ctypes.c_int32),
        ("cooperative", ctypes.c_int32),
        ("kernel_name", ctypes.c_char_p),
    ]


class _Arg(ctypes.Structure):
    """Mirror of emu::Arg in cuda_emu.h: one kernel argument."""

    _fields_ = [
        ("value", ctypes.c_void_p),  # address of the scalar, or of the pointer for an array
        ("size", ctypes.c_uint64),  # bytes at value
        ("is_pointer", ctypes.c_int32),
        ("type_code", ctypes.c_char * 8),  # "f4", "i8", ...: the scalar's or array element's
        ("buffer_bytes", ctypes.c_uint64),  # arrays: bytes the kernel may touch
    ]


class PointerTable(np.ndarray):
    """A uint64 array of array addresses (a multi-tensor kernel's table of tensors) that also
    remembers each array's (address, bytes), so loads through the table are bounds-checked."""

    ranges: tuple = ()


class EmulatorRuntime:
    """Compiles kernels/*.cu with g++ and runs them with CUDA's execution model on the CPU.

    kernels_dir: where module() finds sources (default <repo>/kernels, or $MINICNN_KERNELS_DIR).
    schedule: "forward" or "reverse", the order threads run in between two barriers; a kernel
        whose result changes with it depends on an unsynchronized order.
    cache_dir: compiled libraries (default $XDG_CACHE_HOME/minicnn/emu).
    """

    name = "emu"
    xp = np
    sm_count = EMULATED_SMS  # what cooperative launches size their grids by

    def __init__(self, kernels_dir: str | os.PathLike | None = None, schedule: str = "forward",
                 cache_dir: str | os.PathLike | None = None):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
        kernels_dir = kernels_dir or os.environ.get("MINICNN_KERNELS_DIR") or DEFAULT_KERNELS_DIR
        self.kernels_dir = Path(kernels_dir)
        self.schedule = schedule
        self.cache_dir = Path(cache_dir) if cache_dir else None

    def module(self, source: str, name_expressions: Sequence[str],
               cooperative: bool = False) -> EmuModule:
        """source: a file in kernels_dir, e.g. "elementwise.cu"; name_expressions: the
        instantiations to build, e.g. ["relu_forward<float>"]. Compiled once per process.
        cooperative: its kernels are launched as cooperative grids (grid.sync() allowed, the
        grid at most co_resident_blocks), as CuPy's enable_cooperative_groups does."""
        if isinstance(name_expressions, str):
            raise TypeError("name_expressions must be a list of strings, not one string")
        names = tuple(name_expressions)
        library = build_module(self.kernels_dir, source, names, self.cache_dir)
        return EmuModule(library, names, SCHEDULES[self.schedule], cooperative)

    @staticmethod
    def co_resident_blocks(threads_per_block: int) -> int:
        """The most blocks of `threads_per_block` threads the emulated GPU holds at once."""
        return EMULATED_SMS * (MAX_THREADS_PER_SM // threads_per_block)

    @staticmethod
    def pointer_table(arrays) -> PointerTable:
        """The addresses of C-contiguous arrays as a uint64 array a kernel can index:
        table[k] is arrays[k]'s first element (cast back to T* in the kernel)."""
        for a in arrays:
            if not (isinstance(a, np.ndarray) and a.flags.c_contiguous):
                raise ValueError("a pointer table holds C-contiguous NumPy arrays only")
        table = np.array([a.ctypes.data for a in arrays], np.uint64).view(PointerTable)
        table.ranges = tuple((a.ctypes.data, a.nbytes) for a in arrays)
        return table


class EmuModule:
    """One compiled source; get_function() hands out its kernels."""

    def __init__(self, library: ctypes.PyDLL, names: tuple[str, ...], schedule: int,
                 cooperative: bool = False):
        library.minicnn_emu_error.restype = ctypes.c_char_p
        library.minicnn_emu_table_targets.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_int]
        self._library = library
        self._names = names
        self._schedule = schedule
        self._cooperative = cooperative

    def get_function(self, name_expression: str) -> EmuKernel:
        if name_expression not in self._names:
            raise ValueError(f"{name_expression!r} was not among the module's name_expressions "
                             f"{list(self._names)}")
        entry = getattr(self._library, f"minicnn_entry_{self._names.index(name_expression)}")
        return EmuKernel(self._library, entry, name_expression, self._schedule,
                         self._cooperative)


class EmuKernel:
    """A launchable kernel: kernel(grid, block, args, shared_mem=0), like cupy.RawKernel."""

    def __init__(self, library: ctypes.PyDLL, entry, name: str, schedule: int,
                 cooperative: bool = False):
        entry.argtypes = [ctypes.POINTER(_Launch), ctypes.POINTER(_Arg), ctypes.c_int]
        entry.restype = ctypes.c_int
        self._library = library
        self._entry = entry
        self.name = name
        self._schedule = schedule
        self.cooperative = cooperative  # launched as a cooperative grid (grid.sync() allowed)

    def __call__(self, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
        grid = _dims("grid", grid, MAX_GRID_DIM)
        block = _dims("block", block, MAX_BLOCK_DIM)
        if block[0] * block[1] * block[2] > MAX_THREADS_PER_BLOCK:
            raise ValueError(f"{self.name}: block {block} has more than "
                             f"{MAX_THREADS_PER_BLOCK} threads")
        if not isinstance(shared_mem, (int, np.integer)) or not 0 <= shared_mem <= MAX_DYNAMIC_SHARED:
            raise ValueError(f"{self.name}: shared_mem must be an int in [0, {MAX_DYNAMIC_SHARED}], "
                             f"got {shared_mem!r}")
        threads = block[0] * block[1] * block[2]
        if self.cooperative and grid[0] * grid[1] * grid[2] > EmulatorRuntime.co_resident_blocks(threads):
            raise EmulatorError(
                f"kernel {self.name}: a cooperative grid of {grid[0] * grid[1] * grid[2]} blocks is "
                f"larger than the {EmulatorRuntime.co_resident_blocks(threads)} blocks of {threads} "
                f"threads the emulated GPU holds at once ({EMULATED_SMS} SMs): on a GPU the launch "
                f"fails (cudaErrorCooperativeLaunchTooLarge)")
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"{self.name}: args must be a tuple, got {type(args).__name__}")
        keep_alive, c_args = [], (_Arg * max(len(args), 1))()
        for i, arg in enumerate(args):
            c_args[i] = _marshal(self.name, i, arg, keep_alive)
        launch = _Launch((ctypes.c_uint32 * 3)(*grid), (ctypes.c_uint32 * 3)(*block),
                         int(shared_mem), self._schedule, int(self.cooperative),
                         self.name.encode())
        targets = [word for arg in args if isinstance(arg, PointerTable)
                   for pair in arg.ranges for word in pair]
        self._library.minicnn_emu_table_targets((ctypes.c_uint64 * max(len(targets), 1))(*targets),
                                                len(targets) // 2)
        if self._entry(ctypes.byref(launch), c_args, len(args)) != 0:
            raise EmulatorError(self._library.minicnn_emu_error().decode())


def _dims(what: str, dims, limits) -> tuple[int, int, int]:
    """(x,), (x, y) or (x, y, z) of positive ints -> (x, y, z)."""
    if isinstance(dims, (int, np.integer)):
        dims = (dims,)
    if not isinstance(dims, tuple) or not 1 <= len(dims) <= 3 or not all(
            isinstance(d, (int, np.integer)) for d in dims):
        raise ValueError(f"{what} must be a tuple of 1 to 3 ints, got {dims!r}")
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    for axis, (d, limit) in enumerate(zip(dims, limits)):
        if not 1 <= d <= limit:
            raise ValueError(f"{what}[{axis}] must be in [1, {limit}], got {d}")
    return dims


def _type_code(dtype: np.dtype) -> bytes:
    return f"{dtype.kind}{dtype.itemsize}".encode()


def _marshal(kernel: str, index: int, arg, keep_alive: list) -> _Arg:
    """One launch argument -> _Arg; keep_alive holds the ctypes buffers until the launch ends."""
    if isinstance(arg, np.ndarray):
        if not arg.flags.c_contiguous:
            raise ValueError(f"{kernel}: argument {index} must be a C-contiguous array "
                             f"(use np.ascontiguousarray)")
        pointer = ctypes.c_void_p(arg.ctypes.data)
        keep_alive.append(pointer)
        return _Arg(ctypes.addressof(pointer), ctypes.sizeof(pointer), 1,
                    _type_code(arg.dtype), arg.nbytes)
    if isinstance(arg, SCALAR_TYPES):
        value = np.array(arg)
        keep_alive.append(value)
        return _Arg(value.ctypes.data, value.nbytes, 0, _type_code(value.dtype), 0)
    raise TypeError(f"{kernel}: argument {index} is a {type(arg).__name__}; pass a NumPy array "
                    f"or a sized NumPy scalar such as np.int32(...) or np.float32(...)")
