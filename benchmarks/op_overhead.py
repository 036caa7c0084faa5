"""Host time per op call: what a call costs around its kernels (issue 12's host time per launch).

The ops run on a kernel set that returns stored results (numpy_ref's, computed on the first
call), so the kernels cost next to nothing and what is timed is the rest: parsing the
arguments, the argument rules (minicnn/backends/checks.py), Function bookkeeping and the calls
between them. The same calls on the real CPU kernels are printed for scale.

    PYTHONPATH=$PWD python benchmarks/op_overhead.py [--repeat 7] [--number 2000] [--wrap]

--wrap wraps the kernel set in checks.CheckedKernels, as every device was wired before issue
15 (today's ops run the rules themselves, so with --wrap they run twice). Prints microseconds
of CPU time per call (process time: a shared machine's other processes do not count), the best
of --repeat timings of --number calls each. x: (1, 1, 4, 4), w: (1, 1, 3, 3).
"""
from __future__ import annotations

import argparse
import inspect
import time
import timeit

import numpy as np

import minicnn as mc
from minicnn import functional as F
from minicnn.backends import Device, checks, numpy_ref


class StoredResults:
    """numpy_ref's kernels, each returning the result of its first call with arguments of the
    same shapes from then on."""

    def __init__(self):
        for name, kernel in inspect.getmembers(numpy_ref, inspect.isfunction):
            setattr(self, name, self._stored(kernel))

    @staticmethod
    def _stored(kernel):
        results = {}

        def call(*args, **kwargs):
            key = tuple(getattr(a, "shape", None) for a in args)
            if key not in results:
                results[key] = kernel(*args, **kwargs)
            return results[key]
        return call


def op_calls(device):
    """name -> a call of F.conv2d on `device` (no_grad; with a backward through sum)."""
    x, w, b = (mc.tensor(np.ones(shape, np.float32), device=device, requires_grad=True)
               for shape in ((1, 1, 4, 4), (1, 1, 3, 3), (1,)))

    def forward():
        with mc.no_grad():
            F.conv2d(x, w, b, padding=1)

    def forward_and_backward():
        F.conv2d(x, w, b, padding=1).sum().backward()
        x.grad = w.grad = b.grad = None

    return {f"F.conv2d, no_grad ({device.name})": forward,
            f"F.conv2d + sum + backward ({device.name})": forward_and_backward}


def calls(wrap: bool):
    """name -> a call without arguments."""
    stored = StoredResults()

    def wiring(kernels):
        return checks.CheckedKernels(kernels) if wrap else kernels

    x, w, b = np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32), np.ones(1, np.float32)
    args = (x, w, b, (1, 1), (1, 1, 1, 1))
    checked = checks.CheckedKernels(stored)
    return {
        "checks.conv2d_forward (the rule alone)": lambda: checks.conv2d_forward(*args),
        "stored conv2d_forward": lambda: stored.conv2d_forward(*args),
        "CheckedKernels(stored).conv2d_forward": lambda: checked.conv2d_forward(*args),
        "CheckedKernels(stored).bias_grad (no rule)": lambda: checked.bias_grad(x),
        **op_calls(Device("stored" + ", wrapped" * wrap, np, wiring(stored))),
        **op_calls(Device("cpu" + ", wrapped" * wrap, np, wiring(numpy_ref))),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--wrap", action="store_true",
                        help="wrap the kernel sets in CheckedKernels (the wiring before issue 15)")
    args = parser.parse_args(argv)
    print(f"{'call':52s} {'us per call':>12s}")
    for name, call in calls(args.wrap).items():
        timer = timeit.Timer(call, timer=time.process_time)
        seconds = min(timer.repeat(number=args.number, repeat=args.repeat)) / args.number
        print(f"{name:52s} {seconds * 1e6:12.2f}")


if __name__ == "__main__":
    main()
