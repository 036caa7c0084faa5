"""Host (Python) time of one training step, eager vs a CUDA-graph replay, measured on this CPU.

    python benchmarks/host_time.py                       # vgg_like and vgg8_bn, batch 512 and 32
    python benchmarks/host_time.py --arch vgg_like --batch 512 --steps 30

Both paths run CudaKernels over minicnn.backends.recording's DryRuntime, whose kernels do
nothing, so what is timed is the Python a GPU step costs before CuPy's own launch cost (~5-10 us
per launch on a GPU host, not included): ops, autograd, argument checks, launch geometry.
  eager   the textbook step (minicnn/train/graph_step.eager_step), every kernel launched
  replay  GraphStep's replay (minicnn/train/graph_step.py) with ReplayGraphs(run=False): the
          batch copied into the static buffers, the host mirrors advanced, one graph launch
          (a no-op here; cudaGraphLaunch itself costs a few microseconds)
On this CPU the batch copy is a real memcpy (on a GPU it is one asynchronous device copy), so it
is timed on its own and shown apart. Median over --steps steps, after two warm-up steps, in
CPU time of this process (time.process_time): the machine is shared, and wall time would add
the time other processes held the cores.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from minicnn import optim
from minicnn.backends import Device
from minicnn.backends.cuda import CudaKernels
from minicnn.backends.recording import DryRuntime, Recorder
from minicnn.models.zoo import get_spec
from minicnn.train.graph_step import GraphStep, ReplayGraphs


class CountingDryRuntime(DryRuntime):
    """DryRuntime that counts its launches (an int increment: no recorder overhead)."""

    launches = 0

    def get_function(self, name_expression):
        def launch(grid, block, args, shared_mem=0):
            CountingDryRuntime.launches += 1
        return launch


def median_ms(call, steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    return statistics.median(times) * 1e3


def stepper(arch: str, batch: int, device, graphs):
    model = get_spec(arch).build().to(device)
    model.train()
    step = GraphStep(model, optim.Adam(model.parameters()), device, graphs)
    x, y = device.xp.zeros((batch, 3, 32, 32), np.float32), device.xp.zeros(batch, np.int64)
    return lambda: step(x, y), x, y


def measure(arch: str, batch: int, steps: int) -> dict:
    with np.errstate(all="ignore"):  # the dry runtime leaves arrays uninitialized
        runtime = CountingDryRuntime()
        eager, _, _ = stepper(arch, batch, Device("dry", np, CudaKernels(runtime)), None)
        for _ in range(2):
            eager()
        before = CountingDryRuntime.launches
        eager_ms = median_ms(eager, steps)
        launches = (CountingDryRuntime.launches - before) // steps

        recorder = Recorder(execute="skip")
        replay, x, y = stepper(arch, batch, recorder.device("dry"), ReplayGraphs(recorder, run=False))
        for _ in range(3):  # two eager steps, then the capture
            replay()
        replay_ms = median_ms(replay, steps)
        static_x, static_y = np.empty_like(x), np.empty_like(y)

        def copy():
            static_x[...] = x
            static_y[...] = y
        copy_ms = median_ms(copy, steps)
    return dict(launches=launches, eager_ms=eager_ms, per_launch_us=eager_ms * 1e3 / launches,
                replay_ms=replay_ms, copy_ms=copy_ms)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["vgg_like", "vgg8_bn"])
    parser.add_argument("--batch", type=int, nargs="+", default=[512, 32])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    print("host CPU time per training step (Python only; kernels do nothing), median of "
          f"{args.steps} steps")
    print(f"{'arch':<10} {'batch':>5} {'launches':>8} {'eager ms':>9} {'us/launch':>9} "
          f"{'replay ms':>9} {'of it copy':>10} {'eager/replay':>12}")
    for arch in args.arch:
        for batch in args.batch:
            r = measure(arch, batch, args.steps)
            bookkeeping = max(r["replay_ms"] - r["copy_ms"], 1e-3)
            print(f"{arch:<10} {batch:>5} {r['launches']:>8} {r['eager_ms']:>9.2f} "
                  f"{r['per_launch_us']:>9.1f} {r['replay_ms']:>9.3f} {r['copy_ms']:>10.3f} "
                  f"{r['eager_ms'] / bookkeeping:>11.0f}x")
    print("eager/replay: eager host time over the replay's without the batch copy (a device "
          "copy on a GPU)")


if __name__ == "__main__":
    main()
