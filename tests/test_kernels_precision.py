"""The tensor-core kernels (gemm_v3, conv v3 in TF32 and BF16) against numpy_ref on the CPU
emulator, on odd shapes and every conv layer shape of vgg_like, vgg8_bn, vgg11 and resnet20.

Tolerance, derived rather than tuned. The reference is numpy_ref in float64 fed the operands
rounded exactly as the kernels round them (round_tf32 / round_bf16), so products agree exactly
and only the FP32 sums differ. The emulator's mma rounds once per m16n8k8 / m16n8k16 step
(minicnn/emu/tensor_core.cpp), and split-K adds one rounding per slice, so an output that sums
K products suffers at most R = ceil(K / 8) + splits + 1 roundings, each at most the unit
roundoff u = 2^-24 times the running sum, itself at most sum |a| |b|. Hence

    |ours - reference| <= R * u * (|A| @ |B|)      elementwise,

with |A| @ |B| computed by the same reference on absolute values. Against the unrounded FP32
product the operand rounding adds 2 * 2^-(p+1) * (|A| @ |B|) (p = 10 mantissa bits for TF32,
7 for BF16), which the second check asserts, and that this error is really there.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from minicnn.backends import numpy_ref
from minicnn.backends.cuda import CudaKernels
from minicnn.backends.precision import MANTISSA_BITS, ROUNDING
from minicnn.ops.arguments import resolve_padding
from minicnn.models.zoo import get_spec
from test_kernels_emu import CONV_CASES, GEMM_SHAPES

UNIT_ROUNDOFF = 2.0 ** -24
PRECISIONS = ["tf32", "bf16"]


def emulated(precision):
    from minicnn.emu import EmulatorRuntime
    return CudaKernels(EmulatorRuntime(), precision=precision)


@pytest.fixture(scope="module", params=PRECISIONS)
def kernels(request):
    return emulated(request.param)


def assert_within_derived_bound(kernels, ours, reference, inputs, depth, splits=1):
    """ours vs reference(*inputs) per the bounds in the module docstring; reference is one of
    numpy_ref's (bilinear) functions taking the operands first."""
    rounding = ROUNDING[kernels.precision]
    rounded = [rounding(a).astype(np.float64) for a in inputs[:2]]
    magnitude = reference(*[np.abs(a) for a in rounded], *inputs[2:])
    exact_rounded = reference(*rounded, *inputs[2:])
    roundings = math.ceil(depth / 8) + splits + 1
    excess = np.abs(ours - exact_rounded) - roundings * UNIT_ROUNDOFF * magnitude
    assert excess.max() <= 0, f"over the bound by {excess.max():.3g}"
    exact = reference(*[a.astype(np.float64) for a in inputs[:2]], *inputs[2:])
    operand_error = 2 * 2.0 ** -(MANTISSA_BITS[kernels.precision] + 1) * magnitude
    assert np.all(np.abs(ours - exact) <= operand_error + roundings * UNIT_ROUNDOFF * magnitude)
    assert np.abs(ours - exact).max() > 2 * UNIT_ROUNDOFF * magnitude.max()  # it is not FP32


@pytest.mark.parametrize("m, n, k", GEMM_SHAPES)
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False), (True, True)])
def test_gemm_v3(kernels, m, n, k, trans_a, trans_b):
    rng = np.random.default_rng(m * n + k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    ours = kernels.gemm(a, b, trans_a, trans_b)
    assert ours.dtype == np.float32
    splits = kernels.products[kernels.precision].split(m, n, k)[0]
    if k > 1:
        assert_within_derived_bound(kernels, ours, numpy_ref.gemm, (a, b, trans_a, trans_b), k, splits)


def test_float64_keeps_the_exact_simt_kernels(kernels):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((9, 40)), rng.standard_normal((40, 7))
    np.testing.assert_allclose(kernels.gemm(a, b), a @ b, rtol=1e-12)


def model_conv_layers(name):
    """{(C, H, W, F, kernel, stride, pads)} of every Conv2d of the zoo model `name`."""
    from minicnn.autograd import Tensor, no_grad
    from minicnn.backends import get_device
    from minicnn.nn.layers import Conv2d
    model = get_spec(name).build(10)
    layers = set()

    def record(module, inputs, out):
        x_shape, (f, c, kh, kw) = inputs[0].shape, module.weight.shape
        stride = (module.stride,) * 2 if isinstance(module.stride, int) else tuple(module.stride)
        pads = resolve_padding("conv2d", module.padding, x_shape[2:], (kh, kw), stride)
        layers.add((c, *x_shape[2:], f, (kh, kw), stride, tuple(pads)))
    for _, module in model.named_modules():
        if isinstance(module, Conv2d):
            module.register_forward_hook(record)
    with no_grad():
        model.eval()(Tensor(np.zeros((1, 3, 32, 32), np.float32), get_device("cpu")))
    return sorted(layers)


EMULATED_MACS = 3_000_000  # multiply-adds per pass the emulator does in about a second
# Layers with more weights than this (vgg11's 256 -> 512 and 512 -> 512 convs) take the emulator
# over a minute even on a 2 x 2 image (K = 4608 per output): they run with MINICNN_EMU_FULL=1.
FULL_RUN_WEIGHTS = 2 ** 20


def zoo_layers(models):
    """name -> conv case at batch 1 for each distinct layer shape of the models. Channels,
    kernel, stride and padding are the layer's; the wide vgg11 layers' images are halved
    (named "-cut-HxW") until one pass costs EMULATED_MACS or the image is 2 x 2."""
    layers = {}
    for model in models:
        for c, h, w, f, k, s, p in model_conv_layers(model):
            name = f"{model}-{c}x{h}x{w}-F{f}-k{k[0]}s{s[0]}"
            while c * f * k[0] * k[1] * h * w > EMULATED_MACS and min(h, w) > 2:
                h, w = (h + 1) // 2, (w + 1) // 2
            if not name.endswith(f"{c}x{h}x{w}-F{f}-k{k[0]}s{s[0]}"):
                name += f"-cut-{h}x{w}"
            layers.setdefault((c, h, w, f, k, s, p), name)
    return {name: (1, *layer) for layer, name in layers.items()}


LAYERS = zoo_layers(["vgg_like", "vgg8_bn", "vgg11", "resnet20"])
CASES = {**CONV_CASES, **LAYERS}
# BF16 shares everything with TF32 but the fragments' rounding: the odd shapes suffice for it.
CONV_RUNS = [(p, case) for case in CONV_CASES for p in PRECISIONS] + [("tf32", case) for case in LAYERS]


@pytest.mark.parametrize("precision, case", CONV_RUNS)
def test_conv_v3(precision, case):
    kernels = emulated(precision)
    n, c, h, w, f, kernel, stride, pads = CASES[case]
    if f * c * kernel[0] * kernel[1] > FULL_RUN_WEIGHTS and not os.environ.get("MINICNN_EMU_FULL"):
        pytest.skip("over a minute in the emulator: set MINICNN_EMU_FULL=1 to run it")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((f, c) + kernel).astype(np.float32)

    def splits(rows, cols, depth):  # every pass splits K when its output has few tiles
        return kernels.products[kernels.precision].split(rows, cols, depth)[0]

    y = kernels.conv2d_forward(x, weight, None, stride, pads)
    taps = kernel[0] * kernel[1]
    pixels = n * y.shape[2] * y.shape[3]
    assert_within_derived_bound(kernels, y, numpy_ref.conv2d_forward, (x, weight, None, stride, pads),
                                c * taps, splits(f, pixels, c * taps))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = kernels.conv2d_backward_data(dy, weight, x.shape, stride, pads)
    assert_within_derived_bound(kernels, dx, numpy_ref.conv2d_backward_data,
                                (dy, weight, x.shape, stride, pads), f * taps, splits(c, n * h * w, f * taps))
    dw = kernels.conv2d_backward_weight(dy, x, kernel, stride, pads)
    assert_within_derived_bound(kernels, dw, numpy_ref.conv2d_backward_weight,
                                (dy, x, kernel, stride, pads), pixels, splits(f, c * taps, pixels))
