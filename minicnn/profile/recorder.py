"""A recording device: every kernel launch, array allocation and host-to-device copy made by
code that runs on it is written down.

    recorder = Recorder()
    device = recorder.device("emu")              # or "cuda"; a Device like get_device's
    model = spec.build().to(device); ...         # run anything
    recorder.launches                            # [LaunchRecord(kernel, grid, block, args ...)]
    recorder.allocations, recorder.host_to_device

It wraps the KernelRuntime seam (runtime.module(source, names).get_function(name)(grid, block,
args, shared_mem)) and the device's array module, so nothing in ops/ or backends/ knows it is
being recorded. What happens to each launch is the recorder's `execute` choice:

    "run"     run it as usual
    "skip"    record only (the host-side cost of a step, without the kernels)
    a callable(record, kernel, grid, block, args, shared_mem), e.g. counting in the emulator or
              timing with CUDA events (see minicnn.profile.measure)

Allocations counted: arrays made through the device's array module (xp.empty, zeros, *_like,
copies by asarray / ascontiguousarray) and, on a GPU, every allocation from CuPy's memory pool
(the kernels' outputs and CuPy's own temporaries alike). Host-to-device copies: a NumPy array
handed to a GPU array module's asarray / array / ascontiguousarray.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import numpy as np

from minicnn.backends import Device, get_device

ALLOCATING = ("empty", "zeros", "ones", "full", "empty_like", "zeros_like", "ones_like", "full_like",
              "arange", "concatenate", "stack")
COPYING = ("asarray", "array", "ascontiguousarray")


@dataclass(frozen=True)
class ArgInfo:
    """A launch argument as the profiler needs it: an array's shape and dtype, or a scalar."""
    shape: tuple | None  # None for a scalar
    dtype: str
    value: float | int | None = None  # scalars only

    @property
    def nbytes(self) -> int:
        return 0 if self.shape is None else int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    @property
    def size(self) -> int:
        return 0 if self.shape is None else int(np.prod(self.shape, dtype=np.int64))


@dataclass
class LaunchRecord:
    index: int
    source: str        # "conv.cu"
    kernel: str        # "conv2d_forward<float>"
    grid: tuple
    block: tuple
    shared_mem: int
    args: tuple        # ArgInfo per argument
    counters: object = None      # LaunchCounters when counted in the emulator
    gpu_seconds: float | None = None  # CUDA-event time when measured on a GPU

    @property
    def family(self) -> str:
        """The kernel's name without template arguments: "conv2d_forward"."""
        return re.sub(r"<.*", "", self.kernel)

    @property
    def blocks(self) -> int:
        return int(np.prod(self.grid))

    @property
    def threads_per_block(self) -> int:
        return int(np.prod(self.block))

    def scalar(self, index: int):
        return self.args[index].value


def describe_arg(arg) -> ArgInfo:
    """A kernel argument (array or NumPy scalar) -> ArgInfo; arrays keep only shape and dtype."""
    if hasattr(arg, "shape") and not np.isscalar(arg):  # a NumPy or CuPy array
        return ArgInfo(tuple(int(d) for d in arg.shape), str(arg.dtype))
    value = arg.item() if hasattr(arg, "item") else arg
    return ArgInfo(None, str(np.asarray(arg).dtype), value)


class Recorder:
    def __init__(self, execute="run", zero_fill=False):
        self.execute = execute
        # np.empty -> np.zeros: when launches are skipped or sampled, their outputs' unwritten
        # parts are zeros instead of whatever memory held, so the counts of kernels that branch
        # on values (ReLU's mask) are the same on every run. Zeroed pages cost nothing until used.
        self.zero_fill = zero_fill
        self.launches: list[LaunchRecord] = []
        self.allocations = 0
        self.host_to_device = 0

    def reset(self, execute=None) -> None:
        """Forget what was recorded (e.g. after a warm-up step); optionally change `execute`."""
        self.launches, self.allocations, self.host_to_device = [], 0, 0
        if execute is not None:
            self.execute = execute

    def device(self, name: str = "emu") -> Device:
        """A Device like get_device(name) whose kernel launches and allocations are recorded."""
        from minicnn.backends.cuda import CudaKernels

        base = get_device(name)
        runtime = RecordingRuntime(base.kernels.runtime, self)
        return Device(base.name, runtime.xp, CudaKernels(runtime))

    @contextlib.contextmanager
    def recording(self, device: Device):
        """Also count the CuPy memory pool's allocations (GPU devices) inside the block."""
        if device.name != "cuda":
            yield self
            return
        from cupy.cuda import memory_hook

        recorder = self

        class PoolAllocations(memory_hook.MemoryHook):
            name = "minicnn_profile"

            def malloc_postprocess(self, **kwargs):
                recorder.allocations += 1

        with PoolAllocations():
            yield self

    def launch(self, source, expression, kernel, grid, block, args, shared_mem):
        record = LaunchRecord(len(self.launches), source, expression, tuple(grid) if isinstance(grid, tuple)
                              else (grid,), tuple(block) if isinstance(block, tuple) else (block,),
                              int(shared_mem), tuple(describe_arg(a) for a in args))
        self.launches.append(record)
        if self.execute == "run":
            kernel(grid, block, args, shared_mem)
        elif callable(self.execute):
            self.execute(record, kernel, grid, block, args, shared_mem)


class RecordingRuntime:
    """The KernelRuntime contract around another runtime; launches go to the recorder."""

    def __init__(self, inner, recorder: Recorder):
        self.inner, self.recorder = inner, recorder
        self.name = inner.name
        self.xp = CountingArrayModule(inner.xp, recorder)

    def module(self, source, name_expressions):
        return RecordingModule(self.inner.module(source, name_expressions), source, self.recorder)

    def pointer_table(self, arrays):
        """The inner runtime's table of array addresses (multi-tensor optimizer steps)."""
        return self.inner.pointer_table(arrays)


class RecordingModule:
    def __init__(self, inner, source: str, recorder: Recorder):
        self.inner, self.source, self.recorder = inner, source, recorder

    def get_function(self, name_expression: str):
        return RecordingKernel(self.inner.get_function(name_expression), self.source, name_expression,
                               self.recorder)


class RecordingKernel:
    def __init__(self, inner, source: str, name: str, recorder: Recorder):
        self.inner, self.source, self.name, self.recorder = inner, source, name, recorder

    def __call__(self, grid, block, args, shared_mem=0):
        self.recorder.launch(self.source, self.name, self.inner, grid, block, args, shared_mem)


class CountingArrayModule:
    """numpy or cupy, with the allocating and host-copying functions counted."""

    def __init__(self, xp, recorder: Recorder):
        self._xp, self._recorder = xp, recorder

    def __getattr__(self, name):
        if name in ("empty", "empty_like") and self._recorder.zero_fill and self._xp is np:
            name = name.replace("empty", "zeros")
        attribute = getattr(self._xp, name)
        if name in ALLOCATING:
            return self._counted(attribute)
        if name in COPYING:
            return self._copy_counted(attribute)
        return attribute

    def _counted(self, function):
        def allocate(*args, **kwargs):
            if self._xp is np:  # a GPU's allocations are counted by the memory-pool hook
                self._recorder.allocations += 1
            return function(*args, **kwargs)
        return allocate

    def _copy_counted(self, function):
        def copy(a, *args, **kwargs):
            out = function(a, *args, **kwargs)
            if out is not a:
                self._recorder.allocations += self._xp is np
                if self._xp is not np and isinstance(a, np.ndarray):
                    self._recorder.host_to_device += 1
            return out
        return copy
