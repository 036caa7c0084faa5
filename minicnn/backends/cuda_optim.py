"""Multi-tensor optimizer steps (optim.cu version 2): one launch updates every parameter.

    steps = MultiTensorSteps(launcher)          # launcher: a CudaKernels
    steps.adam(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, wd, decoupled)

A kernel reaches the tensors through pointer tables: uint64 device arrays of their addresses
(runtime.pointer_table). Building a table is a host-to-device copy, so each table is kept and
rebuilt only when an address changes: the parameters and their optimizer state never move; the
gradients are new arrays each step, which neither NumPy's allocator nor CuPy's pool keeps in
place (benchmarks/grad_addresses.py replays eager steps through a model of CuPy's pool: most
gradients move every step), so an eager step rebuilds the gradient table; a CUDA graph replay
keeps the gradients at fixed addresses in its own pool and uploads nothing. The per-step scalars
live in a device array `schedule` (float64: step, lr, correction1, correction2, optim.cu's
Schedule) that Adam's launch moves to the next step on the device; the host writes it only on
the first step, after a resume or when lr changes. Hence, once warm, an optimizer step copies
nothing to the device but a moved gradient table, which CUDA graph replay needs.
"""
from __future__ import annotations

import contextlib
from collections import Counter

import numpy as np

from minicnn.backends.cuda_launch import THREADS, cdiv, i32
from minicnn.backends.kernel_facts import KERNELS_DIR, source_constants

MULTI_CHUNK = source_constants(KERNELS_DIR / "optim.cu")["MULTI_CHUNK"]  # elements per block


def address(array) -> int:
    """The address of an array's first element (CuPy: device pointer; NumPy: host pointer)."""
    pointer = getattr(array.data, "ptr", None)
    return array.ctypes.data if pointer is None else pointer


class TensorGroup:
    """What one optimizer's launches keep on the device: block layout, tables, schedule."""

    def __init__(self, launcher, arrays, deferred_writes=None):
        """deferred_writes: a callable that returns the list to put table uploads on while a
        CUDA graph is being captured (None when not capturing)."""
        sizes = [a.size for a in arrays]
        first_block = np.cumsum([0] + [cdiv(n, MULTI_CHUNK) for n in sizes])
        self.blocks = int(first_block[-1])
        i32(self.blocks, *sizes)
        self.count = len(sizes)
        self.sizes = launcher.xp.asarray(np.array(sizes, np.int32))
        self.first_block = launcher.xp.asarray(first_block.astype(np.int32))
        self.schedule = launcher.xp.zeros(4, np.float64)
        self.arrivals = launcher.xp.zeros(1, np.uint32)  # optim.cu version 3's block counter
        self.schedule_holds = None  # the (step, lr) the device schedule holds, known on the host
        self.advances = False  # Adam: its launch moves the schedule's step on the device
        self._deferred_writes = deferred_writes or (lambda: None)
        self.host_writes = Counter()  # host-to-device copies so far, by table role / "schedule"
        self._runtime, self._xp = launcher.runtime, launcher.xp
        self._tables: dict[str, tuple] = {}  # role -> (addresses and sizes, device table)

    def table(self, role: str, arrays):
        """The pointer table of `arrays`, rebuilt only when an address or size changed."""
        key = tuple((address(a), a.nbytes) for a in arrays)
        known, deferred = self._tables.get(role), self._deferred_writes()
        if known is not None and known[0] != key and deferred is not None:
            # capturing: the graph keeps this table; its new addresses are uploaded afterwards
            deferred.append(lambda: self._refill(known[1], arrays))
            self._tables[role] = (key, known[1])
        elif known is None or known[0] != key:
            self._tables[role] = (key, self._runtime.pointer_table(arrays))
            self.host_writes[role] += 1
        return self._tables[role][1]

    def ready_for_replay(self, step: int, lr: float) -> None:
        """Before a captured update of this group replays as step `step` (1-based): the schedule
        must hold what the capture's first launch reads (one host write when lr changed); the
        host's note then says what it holds after the replay, as an eager step leaves it."""
        self.hold(step - 1 if self.advances else 0, lr)
        self.schedule_holds = (step, lr) if self.advances else (0, lr)

    def _refill(self, table, arrays) -> None:
        """Write the addresses of `arrays` into an existing table (same length)."""
        fresh = self._runtime.pointer_table(arrays)
        table[...] = fresh
        if hasattr(fresh, "ranges"):  # the emulator's bounds of each target
            table.ranges = fresh.ranges
        self.host_writes["deferred"] += 1

    def hold(self, step: int, lr: float) -> None:
        """Make the device schedule hold (step, lr), writing it only when it does not."""
        if self.schedule_holds != (step, lr):
            self.schedule[...] = self._xp.asarray(np.array([step, lr, 0.0, 0.0]))
            self.host_writes["schedule"] += 1
        self.schedule_holds = (step, lr)


class MultiTensorSteps:
    """Adam and SGD over lists of tensors in one launch each (Adam's step advanced in the same
    launch, optim.cu version 3; with the launcher's adam_advance_in_update off, in a launch of
    its own before it, optim_advance: the same bits).

    One TensorGroup per list of parameters (keyed by their addresses), so several optimizers,
    or one optimizer whose set of live gradients changes, each get their own tables.
    """

    def __init__(self, launcher):
        self.launcher = launcher
        self.groups: dict[tuple, TensorGroup] = {}
        self._deferred: list | None = None

    def group(self, params) -> TensorGroup:
        key = tuple((address(p), p.size) for p in params)
        if key not in self.groups:
            self.groups[key] = TensorGroup(self.launcher, params, lambda: self._deferred)
        return self.groups[key]

    @contextlib.contextmanager
    def deferred_table_writes(self):
        """While a CUDA graph is captured: a table whose addresses change (the gradients' move
        into the graph's memory) keeps its device array, and is rewritten after the block, since
        a host-to-device copy cannot be part of the capture."""
        self._deferred = []
        try:
            yield
            for write in self._deferred:
                write()
        finally:
            self._deferred = None

    def adam(self, params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps,
             weight_decay, decoupled):
        group = self.group(params)
        if group.blocks == 0:  # only empty tensors
            return
        T = params[0].dtype.type
        group.advances = True
        group.hold(step - 1, lr)
        tables = (group.table("params", params), group.table("exp_avgs", exp_avgs),
                  group.table("exp_avg_sqs", exp_avg_sqs), group.table("grads", grads),
                  group.sizes, group.first_block, *i32(group.count), group.schedule)
        rest = (T(eps), T(weight_decay), *i32(bool(decoupled)))
        if self.launcher.adam_advance_in_update:
            self.launcher._kernel("optim.cu", "adam_update_advance_multi<{T}>", params[0].dtype)(
                (group.blocks,), (THREADS,),
                (*tables, group.arrivals, *rest, np.float64(beta1), np.float64(beta2)))
        else:
            self.launcher._kernel("optim.cu", "optim_advance")((1,), (1,), (
                group.schedule, np.float64(beta1), np.float64(beta2)))
            self.launcher._kernel("optim.cu", "adam_update_multi<{T}>", params[0].dtype)(
                (group.blocks,), (THREADS,), (*tables, T(beta1), T(beta2), *rest))
        group.schedule_holds = (step, lr)

    def sgd(self, params, grads, velocities, lr, momentum, nesterov, weight_decay):
        """velocities: one per param, or the params themselves without momentum."""
        group = self.group(params)
        if group.blocks == 0:
            return
        T = params[0].dtype.type
        group.hold(0, lr)
        self.launcher._kernel("optim.cu", "sgd_update_multi<{T}>", params[0].dtype)(
            (group.blocks,), (THREADS,), (
                group.table("params", params), group.table("velocities", velocities),
                group.table("grads", grads), group.sizes, group.first_block,
                *i32(group.count), group.schedule, T(momentum), *i32(bool(nesterov)),
                T(weight_decay)))
