"""A training step (forward, loss, backward, optimizer update) captured once per batch shape as
a CUDA graph, then replayed: one graph launch instead of ~70 kernel launches and their Python.

    step = GraphStep(model, optimizer, device, graphs=CupyGraphs(device.kernels.runtime))
    loss, logits = step(x, y)    # x: (N, C, H, W), y: (N,) arrays of the device

Per batch shape: WARMUP_STEPS eager steps (they compile the kernels, build the optimizer's
pointer tables and move the dropout counters and Adam's schedule onto the device), then one
capture, then replays. What makes a replay right without re-capturing:
  - the batch is copied into static input buffers the graph reads (a device-to-device copy);
  - every per-step scalar lives in device memory and is advanced there: Adam's step and bias
    corrections (optim.cu's Adam launch), the dropout steps (cuda_fused.StepCounter); a new
    learning rate is one host write into the schedule, before the replay;
  - the host's mirrors of those counters (optimizer.step_count, each Dropout's `step` buffer,
    the kernels' caches of what the device holds) are advanced as an eager step would, so a
    checkpoint, an eager step (the short last batch) or a resume sees the same state;
  - the graph's memory is its own (a private memory pool on the GPU) and every array a
    captured launch was given is kept alive with it, so eager work never reuses it.
Batches of another shape (the last short one) run eagerly until they too have warmed up.

What cannot be checked without a GPU sits in CupyGraphs (stream capture with CuPy). ReplayGraphs
is its stand-in on a recording device (minicnn.backends.recording): capture records the step's
launches and runs none (stream capture runs none either), a launch re-issues them with the same
arguments, hence the same buffers. tests/test_graph_step.py checks with it that a replayed step
equals an eager one bit for bit in the emulator, and that a replay copies nothing from the host,
allocates nothing, reads nothing back and launches the same kernels every time.
"""
from __future__ import annotations

from dataclasses import dataclass

from minicnn import functional as F
from minicnn.autograd import tensor
from minicnn.nn.layers import Dropout
from minicnn.train.errors import TrainError

WARMUP_STEPS = 2  # the first compiles and builds tables; the second runs as every later step will


def eager_step(model, optimizer, device, x, y):
    """The textbook step -> (loss: 0-d array, logits: (N, K) array)."""
    logits = model(tensor(x, device=device))
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.data, logits.data


@dataclass
class _Shape:
    """What one batch shape has: eager steps so far, then its graph and static buffers."""
    eager_steps: int = 0
    graph: object = None
    x: object = None
    y: object = None
    outputs: tuple = ()


class GraphStep:
    """Training steps of `model`: eager, or replays of a graph captured by `graphs` (None:
    always eager). Call it with each batch; it returns (loss, logits) arrays of the device."""

    def __init__(self, model, optimizer, device, graphs=None, warmup: int = WARMUP_STEPS):
        self.model, self.optimizer, self.device, self.graphs = model, optimizer, device, graphs
        self.warmup = warmup
        self._shapes: dict[tuple, _Shape] = {}
        self.replays = 0
        self._update = self._dropouts = None  # found at the first capture (see _before_replay)

    def __call__(self, x, y):
        if self.graphs is None:
            return eager_step(self.model, self.optimizer, self.device, x, y)
        shape = self._shapes.setdefault((x.shape, str(x.dtype), y.shape, str(y.dtype)), _Shape())
        if shape.graph is None and shape.eager_steps < self.warmup:
            shape.eager_steps += 1
            return eager_step(self.model, self.optimizer, self.device, x, y)
        if shape.graph is None:
            self._capture(shape, x, y)  # the host side of this step ran during the capture
        else:
            shape.x[...] = x
            shape.y[...] = y
            self._before_replay()
        self.graphs.launch(shape.graph)
        return shape.outputs

    def _capture(self, shape: _Shape, x, y) -> None:
        xp, kernels = self.device.xp, self.device.kernels
        shape.x, shape.y = xp.empty_like(x), xp.empty_like(y)
        shape.x[...] = x
        shape.y[...] = y
        try:
            with kernels._multi_tensor.deferred_table_writes():  # a table upload cannot be captured
                shape.graph, shape.outputs = self.graphs.capture(
                    lambda: eager_step(self.model, self.optimizer, self.device, shape.x, shape.y))
        except Exception as error:  # the step's host state moved on without its GPU work
            reason = (str(error).splitlines() or [""])[0]
            raise TrainError(f"capturing the training step as a CUDA graph failed "
                             f"({type(error).__name__}: {reason}); rerun with --no-graphs "
                             f"(the last checkpoint is intact)") from None
        # what every replay advances (the same for each shape: the same model in training)
        live = [p.data for p in self.optimizer.params if p.grad is not None]
        self._update = kernels._multi_tensor.group(live)
        self._dropouts = [m for m in self.model.modules()
                          if isinstance(m, Dropout) and m.training and m.rate]

    def _before_replay(self) -> None:
        """Make host and device hold what the captured step expects, as an eager step would."""
        self.replays += 1
        optimizer = self.optimizer
        optimizer.step_count += 1
        self._update.ready_for_replay(optimizer.step_count, optimizer.lr)
        for module in self._dropouts:
            module.next_mask()
            self.device.kernels.dropout_step_advanced(int(module.seed), int(module.step))


class ReplayGraphs:
    """CUDA graphs' stand-in on a recording device (Recorder(...).device("emu" or "dry")):
    capture() records the step's launches without running them, launch() re-issues them.
    run=False makes launch() a no-op (the host time of a replay, without the kernels)."""

    def __init__(self, recorder, run: bool = True):
        self.recorder, self.run = recorder, run

    def capture(self, step):
        """-> (graph: the recorded launches, step's outputs)."""
        launches, previous = [], self.recorder.execute
        self.recorder.execute = lambda record, kernel, grid, block, args, shared_mem: launches.append(
            (kernel, grid, block, args, shared_mem))
        try:
            outputs = step()
        finally:
            self.recorder.execute = previous
        return launches, outputs

    def launch(self, graph) -> None:
        if self.run:
            for kernel, grid, block, args, shared_mem in graph:
                kernel(grid, block, args, shared_mem)


class CupyGraphs:
    """CUDA graphs through CuPy's stream capture (not run on a GPU yet: see the README).

    capture(): on a side stream (the legacy default stream cannot capture), with a private
    memory pool: allocations made while capturing come from it, and blocks freed while
    capturing go back to it, so they are reused only inside the graph and never by eager code
    between replays. The runtime keeps every captured launch's arguments (tables, counters,
    scratch made before the capture) alive with the graph. launch() runs on the current stream,
    after the eager copies of the batch into the static buffers."""

    def __init__(self, runtime):
        import cupy

        self.cupy, self.runtime = cupy, runtime
        self.stream = cupy.cuda.Stream(non_blocking=True)

    def capture(self, step):
        cupy = self.cupy
        cupy.cuda.get_current_stream().synchronize()  # the static inputs are in place
        pool, kept = cupy.cuda.MemoryPool(), []
        self.runtime.keep_launch_args = kept
        try:
            with self.stream, cupy.cuda.using_allocator(pool.malloc):
                self.stream.begin_capture()
                try:
                    outputs = step()
                finally:
                    graph = self.stream.end_capture()
        finally:
            self.runtime.keep_launch_args = None
        return CapturedGraph(graph, pool, kept), outputs

    def launch(self, captured) -> None:
        captured.graph.launch()


@dataclass
class CapturedGraph:
    graph: object
    pool: object   # the graph's memory
    kept: list     # every captured launch's arguments
