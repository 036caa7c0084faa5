"""One validator: the same bad call gets the same one-line error on every device.

The argument rules live in minicnn/backends/checks.py. The ops run them beside their kernel
calls (tests/test_op_walk.py checks that every forward does); code calling kernels directly
wraps the device's kernel set in CheckedKernels. Either way the rule runs before numpy_ref or
the CUDA kernels (here: in the emulator) see the call.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

import minicnn as mc
from minicnn import functional as F
from minicnn.backends import get_device, numpy_ref
from minicnn.backends.checks import RULES, CheckedKernels

DEVICES = ("cpu", "emu")


def test_every_rule_has_its_kernels_name_and_signature():
    assert len(RULES) >= 15
    for name, rule in RULES.items():
        assert inspect.signature(rule) == inspect.signature(getattr(numpy_ref, name)), name


def f32(*shape):
    return np.zeros(shape, np.float32)


KERNEL_CALLS = {  # a bad call of a kernel -> the start of its error
    "conv channels": (lambda k: k.conv2d_forward(f32(1, 2, 5, 5), f32(4, 3, 3, 3), None, (1, 1), (0,) * 4),
                      "conv2d: weight must be (F, 2, kH, kW)"),
    "conv window": (lambda k: k.conv2d_forward(f32(1, 1, 2, 2), f32(1, 1, 3, 3), None, (1, 1), (0,) * 4),
                    "conv2d: kernel 3x3 is larger than the padded input 2x2"),
    "conv dtype": (lambda k: k.conv2d_forward(np.zeros((1, 1, 4, 4), np.int32), f32(1, 1, 3, 3), None,
                                              (1, 1), (0,) * 4), "conv2d: input must be float32 or float64"),
    "mixed dtypes": (lambda k: k.linear_forward(f32(2, 3), np.zeros((4, 3)), None), "linear: mixed dtypes"),
    "gemm": (lambda k: k.gemm(f32(2, 3), f32(4, 2)), "gemm: inner sizes differ"),
    "pool mode": (lambda k: k.pool2d_forward(f32(1, 1, 4, 4), "median", (2, 2), (2, 2), (0,) * 4),
                  "pool2d: pool mode must be one of"),
    "pool padding": (lambda k: k.pool2d_forward(f32(1, 1, 4, 4), "max", (2, 2), (2, 2), (2, 0, 0, 0)),
                     "max_pool2d: padding (2, 0, 0, 0) must be smaller"),
    "bn shapes": (lambda k: k.batch_norm_forward_eval(f32(2, 3), f32(3), f32(4), f32(3), f32(3), 1e-5),
                  "batch_norm: bias must be (3,)"),
    "labels": (lambda k: k.cross_entropy_forward(f32(2, 3), np.array([0, 3])),
               "cross_entropy: labels must be in [0, 3)"),
    "broadcast": (lambda k: k.add_forward(f32(2, 3), f32(4)), "add: shapes (2, 3) and (4,) do not broadcast"),
    "dropout": (lambda k: k.dropout_forward(f32(3), 1.5, 0, 0), "dropout: rate must be in [0, 1)"),
    "relu dtype": (lambda k: k.relu_forward(np.zeros(3, np.int32)), "relu: input must be float32 or float64"),
    "warp fill": (lambda k: k.affine_warp(f32(1, 3, 4, 4), f32(1, 2, 3), "reflect"), "fill must be one of"),
}


def error_of(call):
    with pytest.raises(ValueError) as error:
        call()
    return str(error.value)


@pytest.mark.parametrize("case", list(KERNEL_CALLS))
def test_a_bad_kernel_call_is_the_same_one_line_error_on_every_device(case):
    call, start = KERNEL_CALLS[case]
    messages = {device: error_of(lambda: call(CheckedKernels(get_device(device).kernels)))
                for device in DEVICES}
    assert len(set(messages.values())) == 1, messages
    message = messages["cpu"]
    assert message.startswith(start) and "\n" not in message, message


FUNCTIONAL_CALLS = {  # the same, one level up: (inputs, call)
    "conv2d": ([(2, 3, 8, 8), (4, 2, 3, 3)], lambda x, w: F.conv2d(x, w)),
    "max_pool2d": ([(1, 1, 2, 2)], lambda x: F.max_pool2d(x, 3)),
    "cross_entropy": ([(2, 3)], lambda x: F.cross_entropy(x, np.array([0, 5]))),
    "batch_norm": ([(1, 3), (3,), (3,)],
                   lambda x, g, b: F.batch_norm(x, g.data * 0, g.data, g, b, training=True)),
}


@pytest.mark.parametrize("case", list(FUNCTIONAL_CALLS))
def test_a_bad_functional_call_is_the_same_one_line_error_on_every_device(case):
    shapes, call = FUNCTIONAL_CALLS[case]
    messages = {}
    for device in DEVICES:
        tensors = [mc.tensor(np.ones(s), device=device) for s in shapes]
        messages[device] = error_of(lambda: call(*tensors))
    assert len(set(messages.values())) == 1, messages
    assert messages["cpu"].startswith(case) and "\n" not in messages["cpu"], messages
