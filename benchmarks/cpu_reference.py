"""Time minicnn's NumPy reference kernels (the CPU backend) on vgg_like's layer shapes.

    python benchmarks/cpu_reference.py                   # batch 64, float32
    python benchmarks/cpu_reference.py --batch 128 --model vgg11 --repeats 5

Each op runs next to PyTorch's CPU implementation of the same op, timed in the same process
(median of --repeats after one warm-up), when torch is importable; else the reference column
is '-'. Both sides use the same number of threads. The ratio is ours / reference: how many
times slower the readable NumPy path is than a tuned C++ library on this machine; 'max diff'
is the largest relative difference of the two outputs, to show they computed the same thing.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from kernels import NETWORKS  # the layer shapes, shared with the GPU benchmark
from minicnn.backends import numpy_ref as R

SAME = (1, 1, 1, 1)


def median_ms(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def relative_difference(ours, reference):
    """max |ours - reference| / max |reference|; ours may be a tuple whose first item is the output."""
    ours = ours[0] if isinstance(ours, tuple) else ours
    reference = reference.numpy()
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def cases(network, batch, rng):
    """(name, shape text, our fn, reference fn taking torch) for every distinct layer op."""
    def data(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    out = []
    for c, f, size in network["convs"]:
        x, w, b = data(batch, c, size, size), data(f, c, 3, 3), data(f)
        dy = data(batch, f, size, size)
        shape = f"{batch}x{c}x{size}x{size} -> {f}"
        out += [
            ("conv fwd", shape, lambda x=x, w=w, b=b: R.conv2d_forward(x, w, b, (1, 1), SAME),
             lambda t, x=x, w=w, b=b: t.nn.functional.conv2d(t.from_numpy(x), t.from_numpy(w), t.from_numpy(b), 1, 1)),
            ("conv bwd data", shape, lambda dy=dy, w=w, s=x.shape: R.conv2d_backward_data(dy, w, s, (1, 1), SAME),
             lambda t, dy=dy, w=w, s=x.shape: t.nn.grad.conv2d_input(s, t.from_numpy(w), t.from_numpy(dy), 1, 1)),
            ("conv bwd weight", shape, lambda dy=dy, x=x: R.conv2d_backward_weight(dy, x, (3, 3), (1, 1), SAME),
             lambda t, dy=dy, x=x, ws=w.shape: t.nn.grad.conv2d_weight(t.from_numpy(x), ws, t.from_numpy(dy), 1, 1)),
        ]
    for c, size in network["pools"]:
        x = data(batch, c, size, size)
        pads = (0, 1, 0, 1) if network["pool_padding"] == "same" and size % 2 == 0 else (0, 0, 0, 0)
        out.append(("max pool 3x3/2 fwd", f"{batch}x{c}x{size}x{size}",
                    lambda x=x, p=pads: R.pool2d_forward(x, "max", (3, 3), (2, 2), p),
                    lambda t, x=x, p=pads: t.nn.functional.max_pool2d(
                        t.nn.functional.pad(t.from_numpy(x), (p[2], p[3], p[0], p[1]), value=-np.inf), 3, 2)))
    c, f, size = network["convs"][1]
    x = data(batch, f, size, size)
    gamma, beta, mean, var = np.ones(f, np.float32), np.zeros(f, np.float32), np.zeros(f, np.float32), np.ones(f, np.float32)
    out.append(("batch norm train fwd", f"{batch}x{f}x{size}x{size}",
                lambda: R.batch_norm_forward_train(x, gamma, beta, mean.copy(), var.copy(), 0.1, 1e-5, True),
                lambda t: t.nn.functional.batch_norm(t.from_numpy(x), t.from_numpy(mean.copy()), t.from_numpy(var.copy()),
                                                     t.from_numpy(gamma), t.from_numpy(beta), True, 0.1, 1e-5)))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(NETWORKS), default="vgg_like")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import torch
        torch.set_grad_enabled(False)
        reference = f"PyTorch {torch.__version__} CPU ({torch.get_num_threads()} threads)"
    except ImportError:
        torch, reference = None, "none (torch not installed)"
    print(f"minicnn numpy_ref on {args.model}, batch {args.batch}, float32; reference: {reference}")
    print(f"{'op':<22} {'shape':<26} {'ours ms':>9} {'ref ms':>9} {'ratio':>7} {'max diff':>9}")
    ratios = []
    for name, shape, ours, ref in cases(NETWORKS[args.model], args.batch, np.random.default_rng(0)):
        ours_ms = median_ms(ours, args.repeats)
        ref_ms = median_ms(lambda: ref(torch), args.repeats) if torch else None
        if ref_ms:
            ratios.append(ours_ms / ref_ms)
        ratio = f"{ours_ms / ref_ms:7.2f}" if ref_ms else f"{'-':>7}"
        ref_text = f"{ref_ms:9.2f}" if ref_ms else f"{'-':>9}"
        diff = f"{relative_difference(ours(), ref(torch)):9.1e}" if torch else f"{'-':>9}"
        print(f"{name:<22} {shape:<26} {ours_ms:9.2f} {ref_text} {ratio} {diff}")
    if ratios:
        print(f"geometric mean ratio (ours / reference): {float(np.exp(np.mean(np.log(ratios)))):.2f}")


if __name__ == "__main__":
    main()
