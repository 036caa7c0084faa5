"""Time minicnn's CUDA kernels on the layer shapes of vgg_like (report A13) and vgg11 (report B).

    python benchmarks/kernels.py                      # both networks, batch 512, float32
    python benchmarks/kernels.py --model vgg11 --repeats 20
    python benchmarks/kernels.py --precision tf32     # tensor-core GEMM / conv (v3) vs TF32 cuDNN

Each kernel is timed with CUDA events (warm-up, then the median of --repeats runs) next to a
library reference measured in the same run: cupy.matmul (cuBLAS) for GEMM, PyTorch + cuDNN for
conv / pool / batch norm / the rest when torch is importable (else '-'). TF32 is switched off
for PyTorch's references so that both sides do true float32 arithmetic, and on with --precision
tf32 / bf16 (our v3 kernels; cupy.matmul follows CuPy's CUPY_TF32). Rates are TFLOP/s for
compute-bound kernels (fraction of the GPU's float32 peak, from its SM count and clock) and
GB/s of compulsory traffic for memory-bound ones (fraction of the measured device-to-device
copy bandwidth, the first row). Needs a GPU; says so in one line and exits otherwise.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass

import numpy as np

from minicnn.backends import cuda_status

# Per network: 3x3 'same' convs as (C, F, size) (repeated layers listed once), 3x3/2 max pools
# as (C, size) with TF 'same' (bottom-right) or no padding, fully connected layers (in, out).
NETWORKS = {
    "vgg_like": dict(convs=[(3, 32, 32), (32, 32, 32), (32, 64, 16), (64, 64, 16), (64, 64, 8),
                            (64, 64, 4), (64, 128, 2), (128, 128, 2)],
                     pools=[(32, 32), (64, 16), (64, 8), (64, 4), (128, 2)], pool_padding="same",
                     fcs=[(128, 128), (128, 10)]),
    "vgg11": dict(convs=[(3, 64, 32), (64, 128, 32), (128, 256, 32), (256, 256, 32),
                         (256, 512, 15), (512, 512, 15)],
                  pools=[(256, 32), (512, 15)], pool_padding="valid",
                  fcs=[(512, 1000), (1000, 512), (512, 10)]),
}
FP32_LANES_PER_SM = {7: 64, 8: 64, 9: 128, 10: 128, 12: 128}  # by major compute capability
FP32_LANES_SM_8X = 128  # sm_86 / sm_89 (consumer Ampere, Ada) have twice sm_80's FP32 lanes


@dataclass
class Row:
    kernel: str
    shape: str
    ours_ms: float
    reference_ms: float | None
    work: float  # FLOPs, or bytes moved
    unit: str  # "flop" or "byte"


class Timer:
    """Median milliseconds of fn() over repeats, after warm-up, with CUDA events."""

    def __init__(self, cupy, torch, repeats: int):
        self.cupy, self.torch, self.repeats = cupy, torch, repeats

    def ours(self, fn) -> float:
        events = lambda: (self.cupy.cuda.Event(), self.cupy.cuda.Event())  # noqa: E731
        return self._median(fn, events, lambda s, e: self.cupy.cuda.get_elapsed_time(s, e))

    def reference(self, fn) -> float | None:
        """A torch reference, or None without torch or when this torch lacks the call."""
        if fn is None:
            return None
        try:
            events = lambda: (self.torch.cuda.Event(enable_timing=True),  # noqa: E731
                              self.torch.cuda.Event(enable_timing=True))
            return self._median(fn, events, lambda s, e: s.elapsed_time(e))
        except Exception as error:  # a reference must never stop the benchmark
            print(f"  (reference skipped: {type(error).__name__}: {error})".splitlines()[0])
            return None

    def _median(self, fn, make_events, elapsed) -> float:
        for _ in range(2):
            fn()
        times = []
        for _ in range(self.repeats):
            start, end = make_events()
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(elapsed(start, end))
        return statistics.median(times)


def float32_peak_flops(cupy) -> float | None:
    """2 * SMs * FP32 lanes * clock, or None when the device does not report its clock."""
    try:
        attributes = cupy.cuda.Device().attributes
        major, minor = attributes["ComputeCapabilityMajor"], attributes["ComputeCapabilityMinor"]
        lanes = FP32_LANES_SM_8X if (major, minor) in ((8, 6), (8, 7), (8, 9)) else FP32_LANES_PER_SM[major]
        return 2.0 * attributes["MultiProcessorCount"] * lanes * attributes["ClockRate"] * 1e3
    except (KeyError, AttributeError, RuntimeError):
        return None


def tf_same_pads(size: int, kernel: int = 3, stride: int = 2) -> tuple[int, int]:
    """TensorFlow 'same': output ceil(size / stride); the odd padded cell goes after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def benchmark_network(name, spec, kernels, timer, torch, batch, dtype) -> list[Row]:
    cp, rows = kernels.xp, []
    rng = cp.random.default_rng(0)
    randn = lambda *shape: rng.standard_normal(shape, dtype=dtype)  # noqa: E731
    tensor = (lambda a: torch.as_tensor(a, device="cuda")) if torch else None
    F = torch.nn.functional if torch else None

    for c, f, size in spec["convs"]:
        x, w, b = randn(batch, c, size, size), randn(f, c, 3, 3), randn(f)
        dy = randn(batch, f, size, size)
        flops = 2.0 * batch * f * size * size * c * 9
        shape = f"{batch}x{c}x{size}x{size} -> {f}"
        xt, wt, bt, dyt = (tensor(a) for a in (x, w, b, dy)) if torch else (None,) * 4
        ours = {
            "conv fwd": lambda: kernels.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1)),
            "conv bwd data": lambda: kernels.conv2d_backward_data(dy, w, x.shape, (1, 1), (1, 1, 1, 1)),
            "conv bwd weight": lambda: kernels.conv2d_backward_weight(dy, x, (3, 3), (1, 1), (1, 1, 1, 1)),
        }
        refs = {
            "conv fwd": lambda: F.conv2d(xt, wt, bt, padding=1),
            "conv bwd data": lambda: torch.nn.grad.conv2d_input(xt.shape, wt, dyt, padding=1),
            "conv bwd weight": lambda: torch.nn.grad.conv2d_weight(xt, wt.shape, dyt, padding=1),
        }
        for kernel, fn in ours.items():
            rows.append(Row(f"{name} {kernel}", shape, timer.ours(fn),
                            timer.reference(refs[kernel] if torch else None), flops, "flop"))

    for c, size in spec["pools"]:
        pads = (*tf_same_pads(size), *tf_same_pads(size)) if spec["pool_padding"] == "same" else (0,) * 4
        x = randn(batch, c, size, size)
        y, index = kernels.pool2d_forward(x, "max", (3, 3), (2, 2), pads)
        moved = (x.size + y.size) * x.itemsize + index.nbytes
        # torch pads symmetrically (padding=1 for 'same'): the same output size, a close cost
        ref = (lambda: F.max_pool2d(tensor(x), 3, 2, padding=1 if any(pads) else 0)) if torch else None
        rows.append(Row(f"{name} maxpool fwd", f"{batch}x{c}x{size}x{size}", timer.ours(
            lambda: kernels.pool2d_forward(x, "max", (3, 3), (2, 2), pads)), timer.reference(ref),
            moved, "byte"))
        rows.append(Row(f"{name} maxpool bwd", f"{batch}x{c}x{size}x{size}", timer.ours(
            lambda: kernels.pool2d_backward(y, index, x.shape, "max", (3, 3), (2, 2), pads)),
            None, moved, "byte"))

    c, size = spec["convs"][1][1], spec["convs"][1][2]  # the second conv's output: a large map
    x, dy = randn(batch, c, size, size), randn(batch, c, size, size)
    gamma, beta, mean, var = cp.ones(c, dtype), cp.zeros(c, dtype), cp.zeros(c, dtype), cp.ones(c, dtype)
    shape, nbytes = f"{batch}x{c}x{size}x{size}", x.nbytes
    _, bn_mean, bn_rstd = kernels.batch_norm_forward_train(x, gamma, beta, mean, var, 0.01, 1e-3, False)
    refs = {}
    if torch:
        xt, dyt, gt, bt = tensor(x), tensor(dy), tensor(gamma), tensor(beta)
        mt, vt, smt, srt = tensor(mean), tensor(var), tensor(bn_mean), tensor(bn_rstd)
        refs = {"bn fwd train": lambda: F.batch_norm(xt, mt, vt, gt, bt, True, 0.01, 1e-3),
                "bn bwd": lambda: torch.ops.aten.native_batch_norm_backward(
                    dyt, xt, gt, mt, vt, smt, srt, True, 1e-3, [True, True, True]),
                "relu fwd": lambda: torch.relu(xt),
                "dropout fwd": lambda: F.dropout(xt, 0.3, True),
                "bias grad": lambda: dyt.sum(dim=(0, 2, 3))}
    memory_bound = [
        ("bn fwd train", lambda: kernels.batch_norm_forward_train(x, gamma, beta, mean, var, 0.01, 1e-3, False), 2 * nbytes),
        ("bn bwd", lambda: kernels.batch_norm_backward(dy, x, gamma, bn_mean, bn_rstd), 3 * nbytes),
        ("relu fwd", lambda: kernels.relu_forward(x), 2 * nbytes),
        ("dropout fwd", lambda: kernels.dropout_forward(x, 0.3, 1, 1), 3 * nbytes),
        ("bias grad", lambda: kernels.bias_grad(dy), nbytes),
    ]
    for kernel, fn, moved in memory_bound:
        rows.append(Row(f"{name} {kernel}", shape, timer.ours(fn), timer.reference(refs.get(kernel)),
                        moved, "byte"))

    for n_in, n_out in spec["fcs"]:
        x, w, b = randn(batch, n_in), randn(n_out, n_in), randn(n_out)
        rows.append(Row(f"{name} linear fwd", f"{batch}x{n_in} -> {n_out}",
                        timer.ours(lambda: kernels.linear_forward(x, w, b)),
                        timer.ours(lambda: cp.matmul(x, w.T) + b), 2.0 * batch * n_in * n_out, "flop"))

    logits, labels = randn(batch, 10), rng.integers(0, 10, batch).astype(np.int64)
    rows.append(Row(f"{name} softmax xent fwd", f"{batch}x10",
                    timer.ours(lambda: kernels.cross_entropy_forward(logits, labels)),
                    timer.reference((lambda: F.cross_entropy(tensor(logits), tensor(labels))) if torch else None),
                    logits.nbytes * 2, "byte"))
    return rows


def benchmark_common(kernels, timer, dtype) -> list[Row]:
    """Device copy (the memory roofline), square GEMMs v1 / v2 vs cuBLAS, and one Adam step."""
    cp = kernels.xp
    rng = cp.random.default_rng(1)
    src = rng.standard_normal(64 * 2**20, dtype=dtype)
    dst = cp.empty_like(src)
    rows = [Row("device copy", f"{src.nbytes >> 20} MiB", timer.ours(lambda: dst.__setitem__(Ellipsis, src)),
                None, 2.0 * src.nbytes, "byte")]
    for size, versions in ((2048, (1, 2)), (4096, (2,))):
        a, b = rng.standard_normal((size, size), dtype=dtype), rng.standard_normal((size, size), dtype=dtype)
        reference = timer.ours(lambda: cp.matmul(a, b))
        for version in versions:
            label = f"gemm v{version}" if version == 1 or kernels.precision == "fp32" else f"gemm v3 {kernels.precision}"
            rows.append(Row(label, f"{size}^3", timer.ours(
                lambda: kernels._gemm(a, b, False, False, version)), reference, 2.0 * size**3, "flop"))
    params = [rng.standard_normal(n, dtype=dtype) for n in (1728, 9216, 36864, 73728, 147456, 16384)]
    state = [[cp.zeros_like(p) for p in params] for _ in range(3)]
    moved = 7 * sum(p.nbytes for p in params)  # read p, g, m, v; write p, m, v
    rows.append(Row("adam step", f"{len(params)} tensors, {sum(p.size for p in params)} values",
                    timer.ours(lambda: kernels.adam_update(params, *state, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)),
                    None, moved, "byte"))
    return rows


def print_table(rows: list[Row], peak_flops: float | None, copy_bandwidth: float) -> None:
    print(f"{'kernel':28} {'shape':28} {'ours ms':>9} {'ref ms':>9} {'ratio':>6} {'rate':>14} {'of peak':>8}")
    for row in rows:
        rate = row.work / (row.ours_ms * 1e-3)
        if row.unit == "flop":
            rate_text, fraction = f"{rate / 1e12:8.2f} TFLOP/s", rate / peak_flops if peak_flops else None
        else:
            rate_text, fraction = f"{rate / 1e9:9.1f} GB/s", rate / copy_bandwidth
        ref = f"{row.reference_ms:9.3f}" if row.reference_ms else f"{'-':>9}"
        ratio = f"{row.ours_ms / row.reference_ms:6.2f}" if row.reference_ms else f"{'-':>6}"
        share = f"{fraction:8.0%}" if fraction is not None else f"{'-':>8}"
        print(f"{row.kernel:28} {row.shape:28} {row.ours_ms:9.3f} {ref} {ratio} {rate_text:>14} {share}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=[*NETWORKS, "all"], default="all")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="fp32",
                        help="our float32 GEMM / conv multiply; the references use TF32 unless fp32")
    args = parser.parse_args(argv)

    usable, reason = cuda_status()
    if not usable:
        sys.exit(f"benchmarks/kernels.py needs a GPU: {reason}")
    import cupy

    from minicnn.backends.cuda import CudaKernels, CupyRuntime
    try:
        import torch
        torch.backends.cudnn.benchmark = True  # let cuDNN pick its fastest algorithm
        torch.backends.cudnn.allow_tf32 = args.precision != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = args.precision != "fp32"
    except ImportError:
        torch = None
    kernels, timer, dtype = CudaKernels(CupyRuntime(), args.precision), Timer(cupy, torch, args.repeats), np.dtype(args.dtype)
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    print(f"{name}, {args.dtype} ({args.precision}), batch {args.batch}, median of {args.repeats}; "
          f"reference: cuBLAS (cupy.matmul){' and cuDNN (torch ' + torch.__version__ + ')' if torch else ', no torch'}")
    rows = benchmark_common(kernels, timer, dtype)
    for model in NETWORKS if args.model == "all" else [args.model]:
        rows += benchmark_network(model, NETWORKS[model], kernels, timer, torch, args.batch, dtype)
    copy_bandwidth = rows[0].work / (rows[0].ours_ms * 1e-3)
    print_table(rows, float32_peak_flops(cupy) if dtype == np.float32 else None, copy_bandwidth)


if __name__ == "__main__":
    main()
