"""The autograd engine: graph traversal, accumulation, no_grad, retained gradients."""
import numpy as np
import pytest

import minicnn as mc
from minicnn import functional as F


def t(values, grad=True):
    return mc.tensor(np.asarray(values, np.float64), dtype=np.float64, requires_grad=grad)


def test_diamond_graph_sums_both_paths():
    x = t([1.0, -2.0, 3.0])
    y = F.sum(x * x + x)  # dy/dx = 2x + 1, x reached along two paths
    y.backward()
    np.testing.assert_allclose(x.grad, [3.0, -3.0, 7.0])


def test_leaf_gradients_accumulate_until_zeroed():
    x = t([2.0])
    for _ in range(2):
        F.sum(x * 3.0).backward()
    np.testing.assert_allclose(x.grad, [6.0])
    x.zero_grad()
    F.sum(x * 3.0).backward()
    np.testing.assert_allclose(x.grad, [3.0])


def test_no_grad_records_nothing():
    x = t([1.0, 2.0])
    with mc.no_grad():
        y = x * 2.0
    assert y.creator is None and not y.requires_grad


def test_inputs_without_requires_grad_get_no_gradient():
    x, c = t([1.0]), t([5.0], grad=False)
    F.sum(x * c).backward()
    assert c.grad is None
    np.testing.assert_allclose(x.grad, [5.0])


def test_retain_grad_keeps_an_intermediate_gradient():
    x = t([1.0, 2.0])
    h = (x * 3.0).retain_grad()
    F.sum(h * h).backward()
    np.testing.assert_allclose(h.grad, 2 * h.data)
    np.testing.assert_allclose(x.grad, 3 * 2 * h.data)


def test_second_backward_through_a_freed_graph_is_a_clear_error():
    x = t([1.0])
    y = F.sum(x * x)
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()
    z = F.sum(x * x)
    z.backward(retain_graph=True)
    z.backward()
    np.testing.assert_allclose(x.grad, [2.0 + 2.0 + 2.0])


def test_backward_of_a_non_scalar_needs_a_gradient():
    with pytest.raises(ValueError, match="scalar"):
        (t([1.0, 2.0]) * 2.0).backward()


def test_deep_chains_do_not_hit_the_recursion_limit():
    x = t([1.0])
    y = x
    for _ in range(3000):
        y = y * 1.0
    F.sum(y).backward()
    np.testing.assert_allclose(x.grad, [1.0])


def test_tensor_defaults_to_float32_and_keeps_integer_labels():
    assert mc.tensor([[1.0, 2.0]]).dtype == np.float32
    assert mc.tensor(np.arange(3)).dtype.kind == "i"


def test_operators_subtract_and_negate():
    a, b = t([5.0]), t([2.0])
    y = F.sum(a - b - (-a))
    y.backward()
    assert y.item() == pytest.approx(8.0)
    np.testing.assert_allclose(a.grad, [2.0])
    np.testing.assert_allclose(b.grad, [-1.0])
