"""Launching kernels/*.cu from Python: the table of kernel instantiations, launch geometry,
and the few multi-launch patterns (two-pass channel sums, split-K products) that CudaKernels
(minicnn/backends/cuda.py) builds its functions from.

Launch geometry depends on array shapes only, never on the GPU model, so the order of every
floating-point sum, and hence every result bit, is the same from run to run and GPU to GPU.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from minicnn.backends import kernel_facts
from minicnn.backends.kernel_facts import (KERNELS_DIR, MIN_SPLIT_K, TARGET_BLOCKS,  # noqa: F401
                                           backward_instantiations, best_tile, cdiv, conv_instantiations,
                                           gemm_instantiations, gemm_twin, simt_products,
                                           source_constants, split_k_instantiations, tiled_products)
from minicnn.backends.precision import PRECISIONS, check_precision
from minicnn.backends.checks import conv_output_size  # noqa: F401 (the launchers' window size)

# The instantiations each source provides; {T} is float or double.
KERNELS = {
    "gemm.cu": gemm_instantiations() + ["sum_splits<{T}>"] + split_k_instantiations()
               + [gemm_twin("gemm_bias", p, False, True) for p in PRECISIONS],  # linear layers
    "conv.cu": conv_instantiations() + ["sum_splits<{T}>"],
    "backward.cu": backward_instantiations(),
    "reduce.cu": ["sum_partials<{T}>", "channel_sums<{T}>"],
    "batchnorm.cu": [f"bn_{name}<{{T}}, {pre}>" for name in ("mean", "variance", "moments")
                     for pre in ("false", "true")]
                    + [f"bn_{name}<{{T}}, {pre}, {post}>"
                       for name in ("normalize", "backward_sums", "backward_dx", "backward_dx_sums")
                       for pre, post in (("false", "false"), ("true", "false"), ("false", "true"))]
                    + ["bn_eval<{T}>", "bn_eval_backward<{T}>"],
    "pool.cu": ["pool2d_forward<{T}>", "pool2d_backward<{T}>"],
    "elementwise.cu": ["relu_forward<{T}>", "relu_backward<{T}>", "sigmoid_forward<{T}>",
                       "sigmoid_backward<{T}>", "add_bias<{T}>", "multiply<{T}>",
                       "global_avg_pool_backward<{T}>", "dropout_forward<{T}>", "philox_words"],
    "softmax.cu": ["softmax_forward<{T}>", "softmax_backward<{T}>", "log_softmax_forward<{T}>",
                   "log_softmax_backward<{T}>", "cross_entropy_forward_labels<{T}>",
                   "cross_entropy_forward_soft<{T}>", "cross_entropy_backward_labels<{T}>",
                   "cross_entropy_backward_soft<{T}>", "sum_partials<{T}>",
                   "cross_entropy_mean_labels<{T}>", "cross_entropy_mean_soft<{T}>"],
    "optim.cu": ["adam_update<{T}>", "sgd_update<{T}>", "adam_update_multi<{T}>",
                 "sgd_update_multi<{T}>", "optim_advance", "adam_update_advance_multi<{T}>"],
    "fused.cu": ["dropout_apply<{T}>", "pool2d_dropout_forward<{T}>",
                 "pool2d_dropout_backward<{T}>", "bn_relu_pool_forward<{T}>",
                 "bn_relu_pool_backward_sums<{T}>", "bn_relu_pool_backward_dx<{T}>",
                 "relu_backward_channel_sums<{T}>", "bn_relu_pool_backward_dx_sums<{T}>",
                 "relu_bn_pool_dropout_forward<{T}>", "relu_bn_pool_dropout_backward_sums<{T}>",
                 "relu_bn_pool_dropout_backward_dx_sums<{T}>"],
    "bn_one_launch.cu": [f"bn_{name}_one_launch<{{T}}, {pre}, {post}>" for name in ("train", "backward")
                         for pre, post in (("false", "false"), ("true", "false"), ("false", "true"))]
                        + [f"{kind}_{way}_one_launch<{{T}}>" for kind in ("bn_relu_pool", "relu_bn_pool_dropout")
                           for way in ("forward", "backward")],
    "augment.cu": ["affine_warp<{T}>", "brightness_luma_partial_sums<{T}>", "adjust_colour<{T}>",
                   "prepare_batch<{T}>"],
    "shape.cu": ["broadcast_add<{T}>", "broadcast_mul<{T}>", "sum_to<{T}>", "broadcast_to<{T}>",
                 "zero_pad2d_forward<{T}>", "zero_pad2d_backward<{T}>", "one_hot<{T}>"],
}
# Sources whose kernels are launched as cooperative grids (grid_sync.cuh's grid_sync()).
COOPERATIVE_SOURCES = ("bn_one_launch.cu",)
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
POOL_MODES = {"max": 0, "min": 1, "avg": 2}  # the mode codes of pool.cu
FILL_MODES = {"nearest": 0, "constant": 1}   # augment.cu's constant_fill flag

THREADS = 256        # block size of one-thread-per-element kernels and of the reductions
TILE_K = source_constants(KERNELS_DIR / "gemm.cu")["TILE_K"]  # the GEMMs' K step (split-K unit)
SOFTMAX_ROWS = 4     # rows (warps) per 128-thread block in softmax.cu
COOPERATIVE_BLOCKS_PER_SM = source_constants(KERNELS_DIR / "grid_sync.cuh")["COOPERATIVE_BLOCKS_PER_SM"]
# Reduction slicing aims for TARGET_BLOCKS blocks, like split-K (kernel_facts.py says why).
MIN_SLICE = THREADS * 16      # at least 16 values per thread in a reduction slice
INT32_MAX = 2**31 - 1


def expand(expression: str) -> list[str]:
    """'relu_forward<{T}>' -> ['relu_forward<float>', 'relu_forward<double>']."""
    return [expression.format(T=t) for t in C_TYPES.values()] if "{T}" in expression else [expression]


def split_k(tiles: int, depth: int) -> tuple[int, int]:
    """kernel_facts.split_k with the GEMMs' K step."""
    return kernel_facts.split_k(tiles, depth, TILE_K)


def reduction_slices(channels: int, count: int) -> int:
    """P, the number of blocks that share one channel's count values in reduce.cu's pass 1."""
    return max(1, min(cdiv(TARGET_BLOCKS, channels), cdiv(count, MIN_SLICE), 65535))


def i32(*values) -> tuple:
    """Kernel int arguments, refusing sizes that would overflow the kernels' int indices."""
    for v in values:
        if not -INT32_MAX <= v <= INT32_MAX:
            raise ValueError(f"size {v} is too large for the CUDA kernels' 32-bit indices")
    return tuple(np.int32(v) for v in values)


def uint64(*values) -> tuple:
    """Seeds and steps as the kernels' unsigned 64-bit words (negative ints wrap, as in NumPy)."""
    return tuple(np.uint64(v % 2**64) for v in values)


class KernelLauncher:
    """Finds, memoizes and launches the kernels of kernels/*.cu through `runtime`
    (CupyRuntime on a GPU, EmulatorRuntime on the CPU)."""

    # Split-K products add their slices in the product's own launch (gemm.cu's
    # add_splits_when_last); False: a second launch, sum_splits (the same bits either way).
    split_k_in_one_launch = True

    def __init__(self, runtime, precision: str = "fp32"):
        """precision: fp32, tf32 or bf16, the multiply of float32 GEMMs and convolutions
        (minicnn/backends/precision.py); float64 always runs the exact SIMT kernels."""
        self.runtime = runtime
        self.xp = runtime.xp
        self.precision = check_precision(precision)
        # grids follow the tile sizes of the sources this runtime compiles
        kernels_dir = self.kernels_dir = Path(getattr(runtime, "kernels_dir", KERNELS_DIR))
        self.products = tiled_products(kernels_dir)
        self.simt_products = simt_products(kernels_dir)  # the tile shapes convolutions choose from
        # conv.cu's instantiations follow the SIMT_SHAPES of the sources this runtime compiles
        self.instantiations = {**KERNELS, "conv.cu": conv_instantiations(kernels_dir) + ["sum_splits<{T}>",
                                                                             "conv_weight_transpose<{T}>"],
                               "backward.cu": backward_instantiations(kernels_dir)}
        self._kernels: dict[tuple[str, str], object] = {}
        self._conv_taps: dict = {}  # conv.cu's per-layer tables (CudaKernels._taps)

    def _kernel(self, source: str, expression: str, dtype=None):
        """The kernel `expression` of `source`, {T} replaced by dtype's C type."""
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype not in C_TYPES:
                raise ValueError(f"CUDA kernels take float32 or float64 arrays, got {dtype}")
            expression = expression.format(T=C_TYPES[dtype])
        key = (source, expression)
        if key not in self._kernels:
            names = [name for e in self.instantiations[source] for name in expand(e)]
            module = (self.runtime.module(source, names, cooperative=True)
                      if source in COOPERATIVE_SOURCES else self.runtime.module(source, names))
            self._kernels[key] = module.get_function(expression)
        return self._kernels[key]

    def cooperative_grid(self, work_blocks: int) -> int:
        """The grid of a cooperative kernel (grid_sync.cuh) with work for `work_blocks` blocks:
        as many as the GPU holds at once, COOPERATIVE_BLOCKS_PER_SM per SM (the kernels'
        __launch_bounds__ make ptxas fit that many), no more than the work needs. Its size
        never changes a result: the kernels hand out fixed slices in a grid-stride loop."""
        return max(1, min(work_blocks, COOPERATIVE_BLOCKS_PER_SM * self.runtime.sm_count))

    def _launch(self, source: str, expression: str, dtype, count: int, *args, threads=THREADS):
        """One thread per item: ceil(count / threads) blocks of `threads` threads."""
        if count > 0:
            i32(count)
            self._kernel(source, expression, dtype)((cdiv(count, threads),), (threads,), args)

    def _launch_rows(self, expression: str, dtype, rows: int, *args):
        """softmax.cu's layout: one warp per row, SOFTMAX_ROWS warps per block."""
        self._launch("softmax.cu", expression, dtype, 32 * rows, *args, threads=32 * SOFTMAX_ROWS)

    def _array(self, a, dtype=None):
        """a as a C-contiguous array of xp (no copy when it already is one)."""
        return self.xp.ascontiguousarray(a, dtype=dtype)

    def _float_arrays(self, *arrays):
        """C-contiguous arrays sharing one float dtype (the kernels read them all as T*)."""
        arrays = [self._array(a) for a in arrays]
        i32(*(a.size for a in arrays))  # the kernels index with 32-bit ints
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) != 1:
            raise ValueError(f"arrays must share one dtype, got {sorted(map(str, dtypes))}")
        return arrays

    def _channel_sum(self, x, n: int, c: int, s: int, divisor: float = 1.0):
        """x viewed as (n, c, s) -> (c,): the sums over n and s, divided by divisor (one
        launch: reduce.cu's channel_sums)."""
        out = self.xp.empty(c, x.dtype)
        self._channel_reduce("reduce.cu", "channel_sums<{T}>", x.dtype, n, c, s, out,
                             inputs=(x,), scalars=(x.dtype.type(divisor),))
        return out

    def _channel_reduce(self, source, expression, dtype, n, c, s, *outputs, inputs, scalars=(),
                        reductions=1, counters=None):
        """A one-launch channel reduction (reduce.cu's channel_reduce): kernel(*outputs,
        partial, arrivals, *inputs, n, c, s, *scalars) on grid (c, P, reductions).
        counters: how many arrival counters it uses (default reductions * c)."""
        slices = reduction_slices(c, n * s)
        if c == 0:
            return
        partial = self.xp.empty((reductions, c, slices), dtype)
        counters = reductions * c if counters is None else counters
        self._kernel(source, expression, dtype)(
            (c, slices, reductions), (THREADS,),
            (*outputs, partial, self._arrivals(counters), *inputs, *i32(n, c, s), *scalars))

    def _arrivals(self, count: int):
        """At least `count` zeroed uint32 counters for channel_reduce (which leaves them zero),
        allocated once and grown when a launch needs more."""
        if getattr(self, "_arrival_counters", None) is None or self._arrival_counters.size < count:
            self._arrival_counters = self.xp.zeros(max(count, 1024), np.uint32)
        return self._arrival_counters

    def _channel_partials(self, source, expression, dtype, n, c, s, *inputs):
        """Pass 1 of a channel reduction (reduce.cu): partial sums of shape (c, P)."""
        partial = self.xp.empty((c, reduction_slices(c, n * s)), dtype)
        if partial.size:
            self._kernel(source, expression, dtype)(partial.shape, (THREADS,),
                                                    (partial, *inputs, *i32(n, c, s)))
        return partial

    def _sum_partials(self, partial, divisor: float = 1.0, source="reduce.cu"):
        """Pass 2: (C, P) -> (C,), each row added in order, then divided by divisor."""
        out = self.xp.empty(partial.shape[0], partial.dtype)
        self._launch(source, "sum_partials<{T}>", partial.dtype, out.size, out, partial,
                     *i32(*partial.shape), partial.dtype.type(divisor))
        return out

    def _product_precision(self, dtype) -> str:
        """The precision a float32 product runs in; float64 always runs the exact SIMT loop."""
        return self.precision if np.dtype(dtype) == np.float32 else "fp32"

    def _tile_for(self, dtype, rows: int, cols: int):
        """The block loop of a rows x cols product of `dtype` with a per-shape choice of tile
        (the SIMT loop's best_tile; the tensor-core loop has one shape)."""
        precision = self._product_precision(dtype)
        return best_tile(self.simt_products, rows, cols) if precision == "fp32" else self.products[precision]

    def _tiled_launch(self, source, expression, dtype, rows, cols, args, splits=1, product=None,
                      extra_blocks=0):
        """One launch of a tiled product kernel of `dtype`'s precision: rows x cols output;
        product: its block loop (the precision's default one if None); extra_blocks: blocks
        of other work after the product's (TiledProduct.grid)."""
        product = product or self.products[self._product_precision(dtype)]
        self._kernel(source, expression, dtype)(product.grid(rows, cols, splits, extra_blocks),
                                                (product.threads,), args)

    def _split_k_product(self, source, kernel, dtype, rows, cols, depth, *args, shape=None,
                         one_launch=None, extra=((), 0)):
        """rows x cols = a product over `depth`, split along depth when the output is small.
        The kernel writes (splits, rows * cols) partial sums; sum_splits adds them. kernel: its
        expression, or, for kernels instantiated per tile shape (conv.cu), a function from the
        tile _tile_for picks to the expression. shape: how the kernel lays the rows * cols
        values out (default (rows, cols)), the result's shape. one_launch: the kernel's twin
        that adds the slices itself (kernel_facts.split_k_kernel; a function of the tile when
        kernel is), used when split_k_in_one_launch is set instead of the sum_splits launch.
        extra: (the kernel's arguments after k_chunk, blocks of other work appended to the
        grid), a forward conv's weight transpose."""
        tail, extra_blocks = extra
        if callable(kernel):
            product = self._tile_for(dtype, rows, cols)
            expression, one_launch = kernel(product), one_launch and one_launch(product)
        else:
            product, expression = self.products[self._product_precision(dtype)], kernel
        shape = shape or (rows, cols)
        splits, k_chunk = product.split(rows, cols, depth)
        partial = self.xp.empty(shape if splits == 1 else (splits, *shape), dtype)
        if partial.size == 0:
            return partial.reshape(shape)
        if splits > 1 and one_launch and self.split_k_in_one_launch:
            out = self.xp.empty(shape, dtype)
            tiles = math.prod(product.grid(rows, cols, splits, extra_blocks)[:2])
            self._tiled_launch(source, one_launch, dtype, rows, cols,
                               (out, partial, self._arrivals(tiles), *args, *i32(k_chunk), *tail),
                               splits, product, extra_blocks)
            return out
        self._tiled_launch(source, expression, dtype, rows, cols,
                           (partial, *args, *i32(k_chunk), *tail), splits, product, extra_blocks)
        if splits == 1:
            return partial
        out = self.xp.empty(shape, dtype)
        self._launch(source, "sum_splits<{T}>", dtype, out.size, out, partial,
                     *i32(out.size, splits))
        return out

    def _in_place(self, *arrays):
        """The shared dtype of arrays a kernel updates in place (so they cannot be copies)."""
        for a in arrays:
            if not (isinstance(a, self.xp.ndarray) and a.flags.c_contiguous):
                raise ValueError("optimizer state must be C-contiguous arrays of this device")
        if len({a.dtype for a in arrays}) != 1:
            raise ValueError("a parameter and its optimizer state must share one dtype")
        return arrays[0].dtype

    def _zeros(self, count: int, dtype):
        """count zeros of dtype that kernels only read (a bias-less convolution's bias) or
        never touch (backward.cu's outputs and scratch a launch does not use): one
        array per dtype, filled once and grown when a launch needs more, so a step fills
        nothing (a fresh xp.zeros per forward would be a CuPy fill every step)."""
        dtype = np.dtype(dtype)
        zeros = self.__dict__.setdefault("_zero_arrays", {})
        if dtype not in zeros or zeros[dtype].size < count:
            zeros[dtype] = self.xp.zeros(max(count, 1024), dtype)
        return zeros[dtype][:count]

    def _one(self, dtype):
        """A 0-d 1 of dtype that kernels only read (the dloss = 1 of the loss's separate
        gradient launch): one array per dtype, filled once, not a CuPy fill every step."""
        ones = self.__dict__.setdefault("_one_arrays", {})
        if np.dtype(dtype) not in ones:
            ones[np.dtype(dtype)] = self.xp.ones((), dtype)
        return ones[np.dtype(dtype)]
