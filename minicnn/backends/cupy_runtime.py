"""CupyRuntime: compiles kernels/*.cu with NVRTC through CuPy and launches them on the GPU.

It is the GPU half of the KernelRuntime contract (the CPU half is minicnn.emu.EmulatorRuntime):

    runtime.name                          "cuda"
    runtime.xp                            cupy
    runtime.module(source, expressions)   -> module; source is a file name in kernels/
                                             (cooperative=True: its kernels launch as
                                             cooperative grids, for grid_sync.cuh)
    runtime.sm_count                      the GPU's SM count (cooperative grids' size)
    module.get_function(expression)       -> kernel, e.g. "relu_forward<float>"
    kernel(grid, block, args, shared_mem=0)
    runtime.pointer_table(arrays)         -> uint64 device array of the arrays' addresses

CuPy is imported in __init__, never at import time, so CPU-only installs never need it.
"""
from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Sequence

import numpy as np

KERNELS_DIR = Path(__file__).resolve().parents[2] / "kernels"
SCALAR_TYPES = (np.int32, np.uint32, np.int64, np.uint64, np.float32, np.float64)


class KernelCompileError(ValueError):
    """A kernel source failed to compile; the message names the file and line."""


def kernels_digest(kernels_dir: Path = KERNELS_DIR) -> str:
    """A hash of every file in kernels/. CuPy's disk cache keys on the main source only, so
    this goes into the compile options: editing an included file (common.cuh, gemm.cu) then
    recompiles every module that includes it."""
    digest = hashlib.sha256()
    for path in sorted(kernels_dir.glob("*.cu*")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def first_error(log: str, source: str) -> str:
    """'gemm.cu:42: error: ...' from an NVRTC log (whose file names are temporary ones)."""
    match = re.search(r"\((\d+)\): (error|catastrophic error): (.*)", log)
    if match is None:
        return f"{source}: {log.strip().splitlines()[-1] if log.strip() else 'compilation failed'}"
    return f"{source}:{match.group(1)}: {match.group(2)}: {match.group(3).strip()}"


class CupyRuntime:
    """Kernels of kernels/*.cu on the current CuPy device; each file compiled once per process."""

    name = "cuda"

    def __init__(self, kernels_dir: str | Path = KERNELS_DIR):
        import cupy  # only here: importing minicnn never requires CuPy

        self.xp = cupy
        self.kernels_dir = Path(kernels_dir)
        self._options = ("-std=c++17", f"-I{self.kernels_dir}",
                         f"-DMINICNN_KERNELS_DIGEST={kernels_digest(self.kernels_dir)}")
        self._modules: dict[tuple[str, tuple[str, ...]], CupyModule] = {}
        # a list while a CUDA graph is captured: every launch's arguments are kept alive in it,
        # so arrays the graph reads stay allocated while it lives (minicnn/train/graph_step.py)
        self.keep_launch_args: list | None = None

    def module(self, source: str, name_expressions: Sequence[str],
               cooperative: bool = False) -> "CupyModule":
        key = (source, tuple(name_expressions))
        if key not in self._modules:
            self._modules[key] = self._compile(source, key[1], cooperative)
        return self._modules[key]

    @functools.cached_property
    def sm_count(self) -> int:
        """The current device's SMs, asked once (a driver call per launch would cost host time)."""
        return self.xp.cuda.Device().attributes["MultiProcessorCount"]

    def pointer_table(self, arrays):
        """The device addresses of C-contiguous arrays as a uint64 device array (one
        host-to-device copy): what multi-tensor kernels index to reach each tensor."""
        for a in arrays:
            if not (isinstance(a, self.xp.ndarray) and a.flags.c_contiguous):
                raise ValueError("a pointer table holds C-contiguous CuPy arrays only")
        return self.xp.asarray(np.array([a.data.ptr for a in arrays], np.uint64))

    def _compile(self, source: str, names: tuple[str, ...], cooperative: bool) -> "CupyModule":
        cupy = self.xp
        path = self.kernels_dir / source
        if not path.is_file():
            raise FileNotFoundError(f"kernel source {path} does not exist")
        try:
            # cooperative: CuPy launches every kernel of the module with cuLaunchCooperativeKernel
            raw = cupy.RawModule(code=path.read_text(), options=self._options,
                                 name_expressions=list(names),
                                 enable_cooperative_groups=cooperative)
            raw.get_function(names[0])  # force compilation now, so errors surface here
        except cupy.cuda.compiler.CompileException as error:
            raise KernelCompileError(first_error(str(error), source)) from None
        return CupyModule(raw, names, cupy.ndarray, self)


class CupyModule:
    def __init__(self, raw, names: tuple[str, ...], array_type: type, runtime=None):
        self._raw, self._names, self._array_type = raw, names, array_type
        self._runtime = runtime

    def get_function(self, name_expression: str) -> "CupyKernel":
        if name_expression not in self._names:
            raise ValueError(f"{name_expression!r} was not among the module's name_expressions")
        return CupyKernel(self._raw.get_function(name_expression), name_expression,
                          self._array_type, self._runtime)


class CupyKernel:
    """kernel(grid, block, args, shared_mem=0). Python ints and floats are refused: their C
    type would be a guess, and a wrong guess is silent garbage on a GPU."""

    def __init__(self, function, name: str, array_type: type, runtime=None):
        self._function, self.name, self._array_type = function, name, array_type
        self._runtime = runtime

    def __call__(self, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
        for i, arg in enumerate(args):
            if not isinstance(arg, (self._array_type, *SCALAR_TYPES)):
                raise TypeError(f"{self.name}: argument {i} is a {type(arg).__name__}; pass a "
                                f"CuPy array or a sized NumPy scalar such as np.int32(...)")
            if isinstance(arg, self._array_type) and not arg.flags.c_contiguous:
                raise ValueError(f"{self.name}: argument {i} must be C-contiguous")
        kept = getattr(self._runtime, "keep_launch_args", None)
        if kept is not None:
            kept.append(tuple(args))
        self._function(grid, block, tuple(args), shared_mem=shared_mem)
