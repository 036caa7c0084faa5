"""The seam: every number an op computes comes from its device's kernel set.

The rule (README, "Where the numbers are computed"): code outside the kernel sets (ops/,
functional.py, nn/, autograd.py) may allocate arrays, take views (reshape, slices) and pass
arrays through unchanged, but never computes with them: no arithmetic, no comparison, no
reduction. Only then does a Function written once run the CUDA kernels on a GPU and in the
emulator. Array arithmetic on the CPU would slip past every other test, since NumPy gives the
same numbers, so this test runs every gradcheck case on a device whose arrays refuse it.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

from minicnn.autograd import no_grad
from minicnn.backends import Device, numpy_ref
from minicnn.gradcheck import check_case, check_parity
from minicnn.gradcheck_cases import all_cases, op_cases


class Sealed(np.ndarray):
    """A float array that refuses NumPy's ufuncs (+, *, >, sum ...): only kernels may compute."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raise AssertionError(f"np.{ufunc.__name__}.{method} on a device array outside the kernels")


def seal(value):
    """Float arrays (also inside tuples/lists) become Sealed views; the rest is unchanged."""
    if isinstance(value, (tuple, list)):
        return type(value)(seal(v) for v in value)
    if isinstance(value, (np.ndarray, np.generic)) and np.asarray(value).dtype.kind == "f":
        return np.asarray(value).view(Sealed)
    return value


def unseal(value):
    if isinstance(value, (tuple, list)):
        return type(value)(unseal(v) for v in value)
    return value.view(np.ndarray) if isinstance(value, Sealed) else value


def unseal_dict(kwargs):
    return {key: unseal(value) for key, value in kwargs.items()}


class SealedKernels:
    """numpy_ref with Sealed arrays in and out: the one place they may be computed with."""

    def __getattr__(self, name):
        kernel = getattr(numpy_ref, name)
        return lambda *args, **kwargs: seal(kernel(*unseal(args), **unseal_dict(kwargs)))


def sealed_device() -> Device:
    xp = types.SimpleNamespace(**{name: getattr(np, name) for name in dir(np) if not name.startswith("_")})
    xp.asarray = lambda array, dtype=None: seal(np.asarray(unseal(array), dtype=dtype))
    return Device("sealed", xp, SealedKernels())


def test_sealed_arrays_catch_a_computation():
    with pytest.raises(AssertionError, match="np.add"):
        seal(np.ones(3)) + 1


CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.op}:{c.shape}" for c in CASES])
def test_every_op_computes_only_through_the_kernels(case):
    device = sealed_device()
    forward, tensors = case.build(np.random.default_rng(0), device, np.float64)
    out = forward()
    out.backward(device.xp.ones_like(out.data))
    assert isinstance(out.data, Sealed)
    assert all(isinstance(t.grad, Sealed) for t in tensors if t.grad is not None)
    with no_grad():
        assert isinstance(forward().data, Sealed)


GLUE = [c for c in op_cases()
        if c.op in ("add", "mul", "sum", "mean", "zero_pad2d") or c.shape.endswith("eval")]


@pytest.mark.parametrize("case", GLUE, ids=[f"{c.op}:{c.shape}" for c in GLUE])
def test_glue_ops_in_the_emulator_match_finite_differences_and_the_cpu(case):
    """The ops that were array glue before now run CUDA kernels: checked in the emulator."""
    row = check_case(case, "emu", np.float64)
    assert row.passed and row.max_rel < 1e-5, row
    parity = check_parity(case, "emu", np.float64)
    assert parity.passed and parity.max_rel < 1e-9, parity
