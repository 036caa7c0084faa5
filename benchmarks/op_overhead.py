"""Host time per op call on the CPU, for an input so small that the arithmetic is negligible.

What remains is what every call costs on any device before and around the kernel: parsing
the arguments, the argument rules (minicnn/backends/checks.py), Function bookkeeping and the
calls between them. On a GPU this is the time the host needs per launch (issue 12).

    PYTHONPATH=$PWD python benchmarks/op_overhead.py [--repeat 7] [--number 2000]

Prints microseconds per call (the best of --repeat timings of --number calls each).
"""
from __future__ import annotations

import argparse
import timeit

import numpy as np

import minicnn as mc
from minicnn import functional as F
from minicnn.backends import checks, numpy_ref


def cases():
    """name -> a call without arguments. x: (1, 1, 4, 4), w: (1, 1, 3, 3)."""
    x = np.ones((1, 1, 4, 4), np.float32)
    w, b = np.ones((1, 1, 3, 3), np.float32), np.ones(1, np.float32)
    args = (x, w, b, (1, 1), (1, 1, 1, 1))
    checked = checks.CheckedKernels(numpy_ref)
    tx, tw, tb = (mc.tensor(a, requires_grad=True) for a in (x, w, b))

    def forward_and_backward():
        F.conv2d(tx, tw, tb, padding=1).sum().backward()

    return {
        "numpy_ref.conv2d_forward": lambda: numpy_ref.conv2d_forward(*args),
        "checks.conv2d_forward (the rule alone)": lambda: checks.conv2d_forward(*args),
        "CheckedKernels(numpy_ref).conv2d_forward": lambda: checked.conv2d_forward(*args),
        "numpy_ref.relu_forward": lambda: numpy_ref.relu_forward(x),
        "CheckedKernels(numpy_ref).relu_forward": lambda: checked.relu_forward(x),
        "F.conv2d, no_grad": lambda: _no_grad(lambda: F.conv2d(tx, tw, tb, padding=1)),
        "F.conv2d + sum + backward": forward_and_backward,
    }


def _no_grad(call):
    with mc.no_grad():
        return call()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args(argv)
    print(f"{'call':44s} {'us per call':>12s}")
    for name, call in cases().items():
        seconds = min(timeit.repeat(call, number=args.number, repeat=args.repeat)) / args.number
        print(f"{name:44s} {seconds * 1e6:12.2f}")


if __name__ == "__main__":
    main()
