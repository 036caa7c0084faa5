"""Precision of the CUDA GEMM and convolution kernels: fp32, tf32 or bf16.

    fp32  the SIMT kernels (gemm_v2, conv v2): FP32 products and sums, the exact reference
    tf32  tensor cores (v3): operands rounded to TF32 (10 mantissa bits, cvt.rna: to nearest,
          ties away from zero), products summed in FP32. PyTorch's default for convolutions.
    bf16  tensor cores (v3): operands rounded to BF16 (7 mantissa bits, cvt.rn: to nearest,
          ties to even), FP32 sums; weights, activations and gradients stay FP32 in memory
          (master weights), only the multiply's inputs are rounded.

float64 arrays always take the SIMT path (gradcheck's exactness needs it). The NumPy backend
computes in the arrays' own precision: tf32 and bf16 only change CUDA kernels.
round_tf32 / round_bf16 below round operands exactly as the kernels do, so tests can compare
a tensor-core kernel with the NumPy reference fed the same rounded operands.
"""
from __future__ import annotations

import numpy as np

PRECISIONS = ("fp32", "tf32", "bf16")
DEFAULT_CUDA_PRECISION = "tf32"  # as PyTorch's convolutions on Ampere and later
# The mantissa bits each precision keeps; unit roundoff is 2 ** -(bits + 1).
MANTISSA_BITS = {"fp32": 23, "tf32": 10, "bf16": 7}


def check_precision(precision: str) -> str:
    """The precision name, or a one-line ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision


def round_tf32(x) -> np.ndarray:
    """float32 x rounded to TF32 like cvt.rna.tf32.f32 (still stored as float32)."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    finite = (bits & 0x7F800000) != 0x7F800000
    rounded = np.where(finite, (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000), bits)
    return rounded.astype(np.uint32).view(np.float32)


def round_bf16(x) -> np.ndarray:
    """float32 x rounded to BF16 like cvt.rn.bf16x2.f32 (still stored as float32)."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    nan = np.isnan(np.asarray(x, np.float32))
    rounded = np.where(nan, bits | 0x400000, rounded)
    return rounded.astype(np.uint32).view(np.float32)


ROUNDING = {"fp32": lambda x: np.asarray(x, np.float32), "tf32": round_tf32, "bf16": round_bf16}
