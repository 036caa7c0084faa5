"""The recording runtime: every kernel launch, array allocation, host-to-device copy and host
read made by code that runs on a recording device is written down. `minicnn profile`, the
launch counts of benchmarks/, the CUDA-graph seam (minicnn/train/graph_step.py) and its tests
all read the one Recorder here.

    recorder = Recorder()
    device = recorder.device("emu")              # or "cuda", or "dry" (kernels that do nothing)
    model = spec.build().to(device); ...         # run anything
    recorder.launches                            # [LaunchRecord(kernel, grid, block, args ...)]
    recorder.allocations, recorder.host_to_device, recorder.host_reads

It wraps the KernelRuntime seam (runtime.module(source, names).get_function(name)(grid, block,
args, shared_mem)) and the device's array module, so nothing in ops/ or backends/ knows it is
being recorded. What happens to each launch is the recorder's `execute` choice:

    "run"     run it as usual
    "skip"    record only (the host-side cost of a step, without the kernels)
    a callable(record, kernel, grid, block, args, shared_mem), e.g. counting in the emulator,
              timing with CUDA events (see minicnn.profile.measure) or keeping the launch for a
              replay (minicnn/train/graph_step.py's ReplayGraphs)

The "dry" device runs CudaKernels over DryRuntime, whose kernels do nothing (arrays stay
uninitialized): a whole vgg_like step at batch 512 is recorded in a fraction of a second, since
launch counts and arguments do not depend on the data. Each record also carries the bytes of
its distinct array arguments (and of the arrays its pointer tables reach), a roofline-style
estimate of its traffic.

Allocations counted: arrays made through the device's array module (xp.empty, zeros, *_like,
copies by asarray / ascontiguousarray) and, on a GPU, every allocation from CuPy's memory pool.
Host-to-device copies: a NumPy array handed to a GPU array module's asarray / array /
ascontiguousarray, and every pointer table (uploaded by the runtime). On a NumPy device host and
device memory are one, so `track_host=True` marks the arrays the device makes (DeviceArray) and
counts a copy of an unmarked array onto the device as host-to-device, and .item() / float() /
bool() / .tolist() of a marked one as a host read (on a GPU: a synchronization).

Glue (count_glue=True, NumPy-backed devices: "dry", "emu"): the work a step does through the
array module and array methods instead of kernels/*.cu, which on a GPU is CuPy's own fill,
copy and element-wise kernels (or a memset): zeros / ones / full (and their *_like), arange,
concatenate / stack, a copy of a device array by asarray & co., and on device arrays every
ufunc (a + b, a.sum()), astype, copy, fill, item assignment and a reshape that has to copy.
Each is a GlueRecord in recorder.glue, with its bytes (the distinct arrays it reads and
writes); empty / empty_like and views launch nothing on a GPU and are not glue.

The CUDA-graph seam: a graph captured from one training step can replay the next one only if
every launch of the next step is the same kernel with the same geometry and the same scalar
arguments (array addresses are fixed by the capture itself). graph_blockers() compares two
recorded steps and names every launch that breaks this, e.g. a learning rate or a dropout step
passed as a kernel argument instead of read from device memory.
"""
from __future__ import annotations

import contextlib
import re
import weakref
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
    array_bytes: int = 0  # bytes of the distinct arrays it is given (tables: their targets too)

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

    @property
    def scalars(self) -> tuple:
        """(argument index, value) of every scalar argument."""
        return tuple((i, a.value) for i, a in enumerate(self.args) if a.shape is None)

    def scalar(self, index: int):
        return self.args[index].value


@dataclass
class GlueRecord:
    """An array-module operation that a GPU runs as one of CuPy's kernels (or a memset)."""
    operation: str     # "zeros", "astype", "add", "__setitem__", ...
    array_bytes: int   # the distinct arrays it reads and writes
    after: int         # how many kernel launches came before it


def describe_arg(arg) -> ArgInfo:
    """A kernel argument (array or NumPy scalar) -> ArgInfo; arrays keep only shape and dtype."""
    if hasattr(arg, "shape") and not np.isscalar(arg):  # a NumPy or CuPy array
        return ArgInfo(tuple(int(d) for d in arg.shape), str(arg.dtype))
    value = arg.item() if hasattr(arg, "item") else arg
    return ArgInfo(None, str(np.asarray(arg).dtype), value)


def dims(value) -> tuple:
    return tuple(value) if isinstance(value, tuple) else (value,)


class DryRuntime:
    """The KernelRuntime contract with kernels that do nothing (xp = numpy)."""

    name, xp = "dry", np

    def module(self, source, name_expressions, cooperative=False):
        return self

    @property
    def sm_count(self) -> int:
        """The grid of cooperative launches is sized for minicnn profile's default GPU."""
        from minicnn.profile.gpus import get_gpu

        return get_gpu("h100").sm_count

    def get_function(self, name_expression):
        return lambda grid, block, args, shared_mem=0: None

    @staticmethod
    def pointer_table(arrays):
        return np.zeros(len(arrays), np.uint64)


class Recorder:
    def __init__(self, execute="run", zero_fill=False, track_host=False, count_glue=False):
        self.execute = execute
        # np.empty -> np.zeros: when launches are skipped or sampled, their outputs' unwritten
        # parts are zeros instead of whatever memory held, so the counts of kernels that branch
        # on values (ReLU's mask) are the same on every run. Zeroed pages cost nothing until used.
        self.zero_fill = zero_fill
        self.track_host = track_host
        self.count_glue = count_glue
        self.launches: list[LaunchRecord] = []
        self.glue: list[GlueRecord] = []
        self.allocations = self.host_to_device = self.host_reads = 0

    def reset(self, execute=None) -> None:
        """Forget what was recorded (e.g. after a warm-up step); optionally change `execute`."""
        self.launches, self.glue = [], []
        self.allocations = self.host_to_device = self.host_reads = 0
        if execute is not None:
            self.execute = execute

    def device(self, name: str = "emu", precision: str = "fp32", sm_count: int | None = None) -> Device:
        """A Device like get_device(name, precision=...) whose kernel launches and allocations
        are recorded; "dry": CudaKernels whose launches do nothing. sm_count: the SMs that
        cooperative grids are sized for (default the runtime's own), e.g. a profiled GPU's."""
        from minicnn.backends.cuda import CudaKernels
        from minicnn.backends.precision import check_precision

        inner = DryRuntime() if name == "dry" else get_device(name, precision=precision).kernels.runtime
        runtime = RecordingRuntime(inner, self, sm_count)
        return Device(name, runtime.xp, CudaKernels(runtime, check_precision(precision)))

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

    def launch(self, source, expression, kernel, grid, block, args, shared_mem, array_bytes=0,
               host_arrays=0):
        record = LaunchRecord(len(self.launches), source, expression, dims(grid), dims(block),
                              int(shared_mem), tuple(describe_arg(a) for a in args),
                              array_bytes=array_bytes)
        self.launches.append(record)
        self.host_to_device += host_arrays  # on a GPU each would be a copy (or an error)
        if self.execute == "run":
            kernel(grid, block, args, shared_mem)
        elif callable(self.execute):
            self.execute(record, kernel, grid, block, args, shared_mem)

    def glue_op(self, operation: str, *arrays) -> None:
        """Record glue (when counting it) that reads or writes `arrays` (others are ignored)."""
        if self.count_glue:
            distinct = {id(a): a.nbytes for a in arrays if isinstance(a, np.ndarray)}
            self.glue.append(GlueRecord(operation, sum(distinct.values()), len(self.launches)))


class RecordingRuntime:
    """The KernelRuntime contract around another runtime; launches go to the recorder."""

    def __init__(self, inner, recorder: Recorder, sm_count: int | None = None):
        self.inner, self.recorder = inner, recorder
        self._sm_count = sm_count
        self.name = inner.name
        self.xp = CountingArrayModule(inner.xp, recorder)
        # id(table) -> (weak reference to it, bytes of the arrays it points to)
        self._tables: dict[int, tuple] = {}

    def module(self, source, name_expressions, cooperative=False):
        """A cooperative launch (grid_sync.cuh) is recorded as one launch like any other."""
        inner = (self.inner.module(source, name_expressions, cooperative=True) if cooperative
                 else self.inner.module(source, name_expressions))
        return RecordingModule(inner, source, self)

    @property
    def sm_count(self) -> int:
        return self._sm_count or self.inner.sm_count

    def pointer_table(self, arrays):
        """The inner runtime's table of array addresses (multi-tensor optimizer steps): one
        host-to-device copy."""
        table = self.inner.pointer_table(arrays)
        self._tables[id(table)] = (weakref.ref(table), sum(a.nbytes for a in arrays))
        self.recorder.host_to_device += 1
        return table

    def bytes_of(self, args) -> int:
        """The compulsory traffic of a launch: each distinct array argument (and each array a
        pointer table argument reaches) read or written once."""
        # distinct by memory, not by object: a device array passed twice may come as two views
        arrays = {_memory(a): a for a in args if hasattr(a, "nbytes") and not isinstance(a, np.generic)}
        return sum(a.nbytes + self._reached_bytes(a) for a in arrays.values())

    def _reached_bytes(self, array) -> int:
        reference, nbytes = self._tables.get(id(array), (None, 0))
        return nbytes if reference is not None and reference() is array else 0

    def host_arrays(self, args) -> int:
        """Tracked NumPy devices: how many arguments are host arrays (neither made by the device
        nor pointer tables, whose upload is counted when they are made)."""
        if not self.recorder.track_host:
            return 0
        return sum(isinstance(a, np.ndarray) and not isinstance(a, DeviceArray)
                   and self._reached_bytes(a) == 0 and id(a) not in self._tables for a in args)


def _memory(array) -> tuple:
    """(address, bytes, dtype) of an array's data (CuPy: device pointer; NumPy: host pointer)."""
    pointer = getattr(array.data, "ptr", None)
    return (array.ctypes.data if pointer is None else pointer, array.nbytes, str(array.dtype))


class RecordingModule:
    def __init__(self, inner, source: str, runtime: RecordingRuntime):
        self.inner, self.source, self.runtime = inner, source, runtime

    def get_function(self, name_expression: str):
        return RecordingKernel(self.inner.get_function(name_expression), self.source, name_expression,
                               self.runtime)


class RecordingKernel:
    def __init__(self, inner, source: str, name: str, runtime: RecordingRuntime):
        self.inner, self.source, self.name, self.runtime = inner, source, name, runtime

    def __call__(self, grid, block, args, shared_mem=0):
        runtime = self.runtime
        runtime.recorder.launch(self.source, self.name, self.inner, grid, block, args, shared_mem,
                                runtime.bytes_of(args), runtime.host_arrays(args))


class DeviceArray(np.ndarray):
    """A NumPy array that a tracking recorder's device made (track_host=True): what a GPU would
    hold. Views and arithmetic results stay DeviceArrays; reading a value back is counted."""

    recorder = None  # set on the subclass each tracking recorder makes
    on_device = True  # what checks.py asks before reading values on the host


def _counted_read(name: str):
    """ndarray's method `name`, counting a host read (a synchronization on a GPU) first."""
    def read(self, *args):
        if self.recorder is not None:
            self.recorder.host_reads += 1
        return getattr(np.ndarray, name)(self, *args)
    read.__name__ = name
    return read


for _name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
    setattr(DeviceArray, _name, _counted_read(_name))


def _plain(value):
    return value.view(np.ndarray) if isinstance(value, DeviceArray) else value


def _array_ufunc(self, ufunc, method, *inputs, out=None, **kwargs):
    """A ufunc on device arrays (a + b, a.sum(), np.exp(a)): glue, results stay device arrays."""
    if out is not None:
        kwargs["out"] = tuple(_plain(a) for a in out)
    result = getattr(ufunc, method)(*(_plain(a) for a in inputs), **kwargs)
    if self.recorder is not None:
        self.recorder.glue_op(ufunc.__name__, *inputs, *(out or ()), result)
    if out is not None:
        return out[0] if len(out) == 1 else out
    marked = type(self)
    if isinstance(result, tuple):
        return tuple(np.asarray(r).view(marked) for r in result)
    return np.asarray(result).view(marked) if isinstance(result, (np.ndarray, np.generic)) else result


def _glue_method(name: str, copies=lambda self, result: True):
    """ndarray's method `name`, recorded as glue when copies(self, result) (astype to its own
    dtype and a reshape that can be a view copy nothing)."""
    def method(self, *args, **kwargs):
        result = getattr(np.ndarray, name)(self, *args, **kwargs)
        if self.recorder is not None and copies(self, result):
            self.recorder.glue_op(name, self, result, *args)
        return result
    method.__name__ = name
    return method


def _arrays_in(args) -> list:
    """The arrays among args and inside list / tuple args (np.concatenate([a, b]))."""
    flat = [a for arg in args for a in (arg if isinstance(arg, (list, tuple)) else (arg,))]
    return [a for a in flat if isinstance(a, np.ndarray)]


def _array_function(self, function, types, args, kwargs):
    """A NumPy function given device arrays (np.concatenate(...), np.where(...)): glue when
    it makes a new array and no ufunc inside it was counted already; views are free."""
    before = len(self.recorder.glue) if self.recorder is not None else 0
    result = super(DeviceArray, self).__array_function__(function, types, args, kwargs)
    name, inputs = function.__name__, _arrays_in(args)
    made = isinstance(result, np.ndarray) and result.size > 0 and not name.startswith("empty") \
        and not any(np.may_share_memory(a, result) for a in inputs)
    if self.recorder is not None and made and len(self.recorder.glue) == before:
        reads = () if name.endswith("_like") else inputs  # a fill reads no input
        self.recorder.glue_op(name, *reads, result)
    return result


DeviceArray.__array_ufunc__ = _array_ufunc
DeviceArray.__array_function__ = _array_function
DeviceArray.copy = _glue_method("copy")
DeviceArray.fill = _glue_method("fill")
DeviceArray.__setitem__ = _glue_method("__setitem__")
DeviceArray.astype = _glue_method("astype", lambda self, result: result is not self)
for _name in ("reshape", "ravel", "__getitem__"):  # a reshape that cannot view, a gather
    setattr(DeviceArray, _name, _glue_method(
        _name, lambda self, result: isinstance(result, np.ndarray) and result.size > 0
        and not np.may_share_memory(self, result)))


class CountingArrayModule:
    """numpy or cupy, with the allocating and host-copying functions counted."""

    def __init__(self, xp, recorder: Recorder):
        self._xp, self._recorder = xp, recorder
        if (recorder.track_host or recorder.count_glue) and xp is np:
            self._marked = type("DeviceArray", (DeviceArray,), {"recorder": recorder})

    def __getattr__(self, name):
        asked = name  # what the caller asked for: glue unless it is empty / empty_like
        if name in ("empty", "empty_like") and self._recorder.zero_fill and self._xp is np:
            name = name.replace("empty", "zeros")
        attribute = getattr(self._xp, name)
        if name in ALLOCATING:
            return self._counted(attribute, None if asked.startswith("empty") else asked)
        if name in COPYING:
            return self._copy_counted(attribute)
        return attribute

    def _mark(self, out):
        """On a tracked NumPy device, arrays this module makes are device arrays."""
        marked = getattr(self, "_marked", None)
        if marked is None or not isinstance(out, np.ndarray) or isinstance(out, DeviceArray):
            return out
        return out.view(marked)

    def _counted(self, function, glue: str | None):
        """function, an allocation counted; glue: its name when it also fills or copies."""
        def allocate(*args, **kwargs):
            if self._xp is np:  # a GPU's allocations are counted by the memory-pool hook
                self._recorder.allocations += 1
            before = len(self._recorder.glue)  # NumPy's own dispatch may have counted it
            out = self._mark(function(*args, **kwargs))
            if glue and out.size and len(self._recorder.glue) == before:
                reads = _arrays_in(args) if glue in ("concatenate", "stack") else ()
                self._recorder.glue_op(glue, out, *reads)
            return out
        return allocate

    def _copy_counted(self, function):
        def copy(a, *args, **kwargs):
            out = function(a, *args, **kwargs)
            # NumPy returns a subclass's data as a new base-class view: neither an allocation
            # nor a copy
            copied = out is not a and not (isinstance(a, np.ndarray) and np.may_share_memory(a, out))
            if copied:
                self._recorder.allocations += self._xp is np
                if isinstance(a, DeviceArray) and out.size:  # a copy on the device
                    self._recorder.glue_op(function.__name__, a, out)
            if getattr(self, "_marked", None) is not None:  # anything unmarked comes from the host
                self._recorder.host_to_device += not isinstance(a, DeviceArray)
            elif self._xp is not np and out is not a and isinstance(a, np.ndarray):
                self._recorder.host_to_device += 1
            return self._mark(out)
        return copy


def graph_blockers(first: list[LaunchRecord], second: list[LaunchRecord]) -> list[str]:
    """Why a graph of step `first` could not replay step `second` (empty: it could)."""
    if [launch.kernel for launch in first] != [launch.kernel for launch in second]:
        return [f"the steps launch different kernels ({len(first)} vs {len(second)} launches)"]
    problems = []
    for a, b in zip(first, second):
        if (a.grid, a.block) != (b.grid, b.block):
            problems.append(f"{a.kernel}: launch geometry changes ({a.grid} -> {b.grid})")
        for (index, before), (_, after) in zip(a.scalars, b.scalars):
            if before != after:
                problems.append(f"{a.kernel}: scalar argument {index} changes ({before} -> {after})")
    return problems
