"""Every op and module's backward pass against central finite differences, in float64."""
import numpy as np
import pytest

from minicnn import nn
from minicnn.gradcheck import Case, check_case, leaf
from minicnn.gradcheck_cases import all_cases
from minicnn.ops.basic import Add

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.op}:{c.shape}" for c in CASES])
def test_backward_matches_finite_differences(case):
    row = check_case(case, "cpu", np.float64)
    assert row.passed, f"{row.op} {row.shape}: max abs {row.max_abs:.2e}, max rel {row.max_rel:.2e} ({row.worst})"
    assert row.max_rel < 1e-5


def test_every_op_and_module_has_a_case():
    checked = {c.op for c in CASES}
    ops = {"conv2d", "max_pool2d", "min_pool2d", "avg_pool2d", "global_avg_pool2d", "linear",
           "batch_norm", "dropout", "relu", "sigmoid", "softmax", "log_softmax", "cross_entropy",
           "add", "mul", "mean", "sum", "flatten", "zero_pad2d"}
    modules = {f"nn.{name}" for name in nn.__all__
               if isinstance(getattr(nn, name), type) and issubclass(getattr(nn, name), nn.Module)
               and name not in ("Module", "Parameter", "Sigmoid", "Softmax")}
    assert ops | modules <= checked, sorted((ops | modules) - checked)


class _WrongAdd(Add):
    """A deliberately wrong backward: the checker must catch it."""

    def backward(self, dout):
        da, db = super().backward(dout)
        return da * 1.01, db


def test_gradcheck_catches_a_wrong_backward():
    def build(rng, device, dtype):
        a, b = leaf(rng, device, dtype, (3, 4)), leaf(rng, device, dtype, (3, 4))
        return (lambda: _WrongAdd()(a, b)), [a, b]
    row = check_case(Case("wrong_add", "(3,4)", build))
    assert not row.passed
    assert row.worst.startswith("input 0")
    assert row.max_rel == pytest.approx(0.01 / 1.01, rel=1e-3)
