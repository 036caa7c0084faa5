"""Recording kernel launches: what a training step asks of the GPU, checked on the CPU.

    runtime = RecordingRuntime(DryRuntime())           # or wrap EmulatorRuntime / CupyRuntime
    kernels = CudaKernels(runtime)
    ... a training step ...
    runtime.launches                                   # [Launch(name, grid, block, scalars)]

DryRuntime runs nothing (arrays stay uninitialized), so a whole vgg_like step is recorded in
a fraction of a second: launch counts and arguments do not depend on the data. Each launch
also records the bytes of its array arguments, a roofline-style estimate of its traffic.

The CUDA-graph seam: a graph captured from one training step can replay the next one only
if every launch of the next step is the same kernel with the same geometry and the same
scalar arguments; array addresses are fixed by the capture itself (its memory is the graph's).
graph_blockers() compares two recorded steps and names every launch that breaks this, e.g. a
learning rate or a dropout step passed as a kernel argument instead of read from device memory.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Launch:
    name: str
    grid: tuple
    block: tuple
    scalars: tuple  # (argument index, value) of every scalar argument
    array_bytes: int = 0  # bytes of the distinct arrays it is given (tables: their targets too)


class DryRuntime:
    """The KernelRuntime contract with kernels that do nothing (xp = numpy)."""

    name, xp = "dry", np

    def module(self, source, name_expressions):
        return self

    def get_function(self, name_expression):
        return lambda grid, block, args, shared_mem=0: None

    @staticmethod
    def pointer_table(arrays):
        return np.zeros(len(arrays), np.uint64)


class RecordingRuntime:
    """Wraps a runtime; every launch through it is appended to self.launches first."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.name, self.xp = f"recording {runtime.name}", runtime.xp
        self.launches: list[Launch] = []
        # id(table) -> (weak reference to it, bytes of the arrays it points to)
        self._tables: dict[int, tuple] = {}

    def module(self, source, name_expressions):
        return _RecordingModule(self, self.runtime.module(source, name_expressions))

    def pointer_table(self, arrays):
        table = self.runtime.pointer_table(arrays)
        self._tables[id(table)] = (weakref.ref(table), sum(a.nbytes for a in arrays))
        return table

    def bytes_of(self, args) -> int:
        """The compulsory traffic of a launch: each distinct array argument (and each array a
        pointer table argument reaches) read or written once."""
        arrays = {id(a): a for a in args if hasattr(a, "nbytes") and not isinstance(a, np.generic)}
        return sum(a.nbytes + self._reached_bytes(a) for a in arrays.values())

    def _reached_bytes(self, array) -> int:
        reference, nbytes = self._tables.get(id(array), (None, 0))
        return nbytes if reference is not None and reference() is array else 0


class _RecordingModule:
    def __init__(self, recorder, module):
        self._recorder, self._module = recorder, module

    def get_function(self, name_expression):
        kernel, recorder = self._module.get_function(name_expression), self._recorder

        def launch(grid, block, args, shared_mem=0):
            scalars = tuple((i, a.item()) for i, a in enumerate(args) if isinstance(a, np.generic))
            recorder.launches.append(Launch(name_expression, tuple(grid), tuple(block), scalars,
                                            recorder.bytes_of(args)))
            kernel(grid, block, args, shared_mem)
        return launch


def graph_blockers(first: list[Launch], second: list[Launch]) -> list[str]:
    """Why a graph of step `first` could not replay step `second` (empty: it could)."""
    if [launch.name for launch in first] != [launch.name for launch in second]:
        return [f"the steps launch different kernels ({len(first)} vs {len(second)} launches)"]
    problems = []
    for a, b in zip(first, second):
        if (a.grid, a.block) != (b.grid, b.block):
            problems.append(f"{a.name}: launch geometry changes ({a.grid} -> {b.grid})")
        for (index, before), (_, after) in zip(a.scalars, b.scalars):
            if before != after:
                problems.append(f"{a.name}: scalar argument {index} changes ({before} -> {after})")
    return problems
