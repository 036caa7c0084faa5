"""Prove backward passes: analytic gradients against central finite differences.

For an op f and a fixed random projection R of its output, the scalar L = sum(f(inputs) * R)
has d L / d input = backward(R). Each input element is nudged by +-eps and

    dL/dx[i] ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)

whose error is O(eps^2) plus rounding ~ 1e-16 / eps: in float64 with eps = 1e-6 the two
agree to ~1e-9 relative, so a wrong backward (typically off by O(1)) cannot hide.

A case is a `build(rng, device, dtype)` returning (forward, tensors): forward() recomputes the
output from `tensors`, whose arrays the checker perturbs in place. The CLI (`minicnn
gradcheck`) and the tests run the same cases (minicnn.gradcheck_cases).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from minicnn.autograd import Tensor, no_grad
from minicnn.backends import get_device, to_host


@dataclass
class Case:
    op: str          # what is checked, e.g. "conv2d" or "nn.ResidualBlock"
    shape: str       # a short description of the configuration
    build: Callable  # (rng, device, dtype) -> (forward: () -> Tensor, tensors: list[Tensor])


@dataclass
class Row:
    op: str
    device: str
    shape: str
    kind: str         # "grad" (vs finite differences) or "parity" (device vs CPU)
    max_abs: float
    max_rel: float
    passed: bool
    worst: str = ""   # the first input whose gradient failed, for the message


def _errors(analytic, reference, floor):
    """(max abs error, max relative error), relative = |a - r| / max(|a|, |r|, floor).

    The callers set floor to 1e-3 of the case's largest gradient: entries that are zero up to
    rounding noise (a conv bias right before batch norm has an exact zero gradient; finite
    differences give ~1e-10) are measured against it instead of reporting a relative error of 1.
    """
    a, r = np.asarray(analytic, np.float64), np.asarray(reference, np.float64)
    if a.size == 0:
        return 0.0, 0.0
    diff = np.abs(a - r)
    scale = np.maximum(np.maximum(np.abs(a), np.abs(r)), floor)
    return float(diff.max()), float((diff / scale).max())


def _within(analytic, reference, rtol, atol):
    a, r = np.asarray(analytic, np.float64), np.asarray(reference, np.float64)
    return bool(np.all(np.abs(a - r) <= atol + rtol * np.abs(r)))


def analytic_gradients(forward, tensors, projection):
    """Gradients of sum(forward() * projection) w.r.t. each tensor, as host arrays."""
    for t in tensors:
        t.grad = None
    out = forward()
    out.backward(projection)
    return to_host(out.data), [np.zeros(t.shape) if t.grad is None else to_host(t.grad) for t in tensors]


def numerical_gradient(forward, tensor, projection, eps):
    """Central differences of sum(forward() * projection) w.r.t. every element of tensor."""
    xp = tensor.device.xp
    flat = tensor.data.reshape(-1)  # a view: writing it perturbs the tensor
    grad = np.zeros(tensor.size)
    with no_grad():
        for i in range(tensor.size):
            original = flat[i].item()
            flat[i] = original + eps
            plus = float(xp.sum(forward().data * projection))
            flat[i] = original - eps
            minus = float(xp.sum(forward().data * projection))
            flat[i] = original
            grad[i] = (plus - minus) / (2 * eps)
    return grad.reshape(tensor.shape)


def _projection(rng, output, device):
    return device.asarray(rng.standard_normal(output.shape), dtype=output.dtype)


def check_case(case: Case, device="cpu", dtype=np.float64, seed=0, eps=None, rtol=None,
               atol=None) -> Row:
    """Analytic vs finite-difference gradients of every input of one case."""
    device = get_device(device)
    dtype = np.dtype(dtype)
    double = dtype == np.float64
    eps = eps or (1e-6 if double else 1e-2)
    rtol = rtol or (1e-5 if double else 5e-2)
    atol = atol or (1e-8 if double else 1e-3)
    rng = np.random.default_rng(seed)
    forward, tensors = case.build(rng, device, dtype)
    with no_grad():
        projection = _projection(rng, forward(), device)
    _, analytic = analytic_gradients(forward, tensors, projection)
    numeric = [numerical_gradient(forward, t, projection, eps) for t in tensors]
    noise = max(1e-3 * max(float(np.abs(n).max(initial=0)) for n in numeric), 100 * atol)
    worst_abs, worst_rel, passed, worst = 0.0, 0.0, True, ""
    for index, (t, a, n) in enumerate(zip(tensors, analytic, numeric)):
        abs_err, rel_err = _errors(a, n, noise)
        ok = _within(a, n, rtol, atol)
        if not ok and passed:  # name the first input whose gradient is wrong
            worst = f"input {index} {tuple(t.shape)}"
        passed &= ok
        worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
    return Row(case.op, device.name, case.shape, "grad", worst_abs, worst_rel, passed, worst)


def check_parity(case: Case, device, dtype=np.float64, seed=0, rtol=None, atol=None) -> Row:
    """The same case on `device` and on the CPU reference: outputs and gradients must agree."""
    device = get_device(device)
    double = np.dtype(dtype) == np.float64
    rtol = rtol or (1e-10 if double else 1e-4)
    atol = atol or (1e-12 if double else 1e-5)
    results = []
    for target in (get_device("cpu"), device):
        rng = np.random.default_rng(seed)  # same draws on both devices
        forward, tensors = case.build(rng, target, dtype)
        with no_grad():
            projection = _projection(rng, forward(), target)
        results.append(analytic_gradients(forward, tensors, projection))
    (ref_out, ref_grads), (out, grads) = results
    pairs = [(out, ref_out)] + list(zip(grads, ref_grads))
    floor = max(1e-3 * max(float(np.abs(r).max(initial=0)) for _, r in pairs), 100 * atol)
    errors = [_errors(a, r, floor) for a, r in pairs]
    passed = all(_within(a, r, rtol, atol) for a, r in pairs)
    return Row(case.op, device.name, case.shape, "parity", max(e[0] for e in errors),
               max(e[1] for e in errors), passed)


def leaf(rng, device, dtype, shape, scale=1.0, requires_grad=True) -> Tensor:
    """A random input tensor for a case."""
    data = device.asarray(rng.standard_normal(shape) * scale, dtype=dtype)
    return Tensor(data, device, requires_grad=requires_grad)
