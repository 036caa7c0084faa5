"""The NumPy reference kernels against independent, obviously-correct definitions."""
import numpy as np
import pytest

import minicnn as mc
from minicnn import functional as F
from minicnn.backends import numpy_ref as R
from minicnn.ops.arguments import resolve_padding


def direct_conv(x, w, b, stride, pads):
    """Convolution by its definition: four nested loops over output positions."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    top, bottom, left, right = pads
    xp = np.zeros((n, c, h + top + bottom, wd + left + right))
    xp[:, :, top:top + h, left:left + wd] = x
    ho, wo = (h + top + bottom - kh) // stride[0] + 1, (wd + left + right - kw) // stride[1] + 1
    y = np.zeros((n, f, ho, wo))
    for i in range(n):
        for o in range(f):
            for r in range(ho):
                for col in range(wo):
                    patch = xp[i, :, r * stride[0]:r * stride[0] + kh, col * stride[1]:col * stride[1] + kw]
                    y[i, o, r, col] = (patch * w[o]).sum() + (b[o] if b is not None else 0)
    return y


def direct_pool(x, mode, k, s, pads):
    """Pooling by its definition, skipping padded cells explicitly."""
    n, c, h, w = x.shape
    top, bottom, left, right = pads
    ho, wo = (h + top + bottom - k) // s + 1, (w + left + right - k) // s + 1
    y = np.zeros((n, c, ho, wo))
    for r in range(ho):
        for col in range(wo):
            rows = [i for i in range(r * s - top, r * s - top + k) if 0 <= i < h]
            cols = [j for j in range(col * s - left, col * s - left + k) if 0 <= j < w]
            window = x[:, :, rows][:, :, :, cols]
            y[:, :, r, col] = {"max": window.max, "min": window.min, "avg": window.mean}[mode](axis=(2, 3))
    return y


CONV_CONFIGS = [
    ((2, 3, 6, 5), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1)),
    ((1, 2, 7, 7), (3, 2, 3, 3), (2, 2), (0, 1, 0, 1)),
    ((2, 1, 5, 8), (2, 1, 2, 4), (1, 3), (2, 0, 1, 3)),
    ((1, 3, 4, 4), (5, 3, 1, 1), (2, 2), (0, 0, 0, 0)),
]


@pytest.mark.parametrize("x_shape,w_shape,stride,pads", CONV_CONFIGS)
def test_conv2d_forward_equals_direct_convolution(x_shape, w_shape, stride, pads):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    np.testing.assert_allclose(R.conv2d_forward(x, w, b, stride, pads), direct_conv(x, w, b, stride, pads),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["max", "min", "avg"])
@pytest.mark.parametrize("shape,k,s,padding", [((2, 3, 7, 7), 3, 2, "same"), ((1, 2, 8, 6), 3, 2, "same"),
                                               ((1, 1, 6, 5), 2, 2, 0), ((2, 2, 5, 5), 3, 1, 1)])
def test_pooling_equals_direct_loop(mode, shape, k, s, padding):
    x = np.random.default_rng(2).standard_normal(shape)
    pads = resolve_padding("test", padding, shape[2:], (k, k), (s, s))
    y, index = R.pool2d_forward(x, mode, (k, k), (s, s), pads)
    np.testing.assert_allclose(y, direct_pool(x, mode, k, s, pads), rtol=1e-12)
    if mode != "avg":  # the index points at the winning input value
        planes = x.reshape(shape[0], shape[1], -1)
        np.testing.assert_array_equal(np.take_along_axis(planes, index.reshape(*index.shape[:2], -1), 2),
                                      y.reshape(*y.shape[:2], -1))


def test_padded_cells_never_win_a_max_of_negative_numbers():
    x = -np.ones((1, 1, 4, 4)) - np.arange(16).reshape(1, 1, 4, 4)  # all negative: zero padding would win
    y, _ = R.pool2d_forward(x, "max", (3, 3), (2, 2), (0, 1, 0, 1))
    assert (y < 0).all()


def test_max_pool_ties_go_to_the_first_cell_in_row_major_order():
    x = np.zeros((1, 1, 2, 2))
    _, index = R.pool2d_forward(x, "max", (2, 2), (2, 2), (0, 0, 0, 0))
    assert index.item() == 0


@pytest.mark.parametrize("size,k,s,expected", [(32, 3, 2, (0, 1)), (5, 3, 1, (1, 1)), (4, 4, 1, (1, 2)),
                                               (7, 3, 2, (1, 1)), (16, 2, 2, (0, 0))])
def test_same_padding_follows_tensorflow(size, k, s, expected):
    pads = resolve_padding("test", "same", (size, size), (k, k), (s, s))
    assert pads == expected * 2
    out = (size + sum(expected) - k) // s + 1
    assert out == -(-size // s)  # ceil(size / stride), TensorFlow's 'same' output size


def test_report_a_pool_shrinks_32_to_1():
    x = mc.tensor(np.random.default_rng(0).standard_normal((1, 1, 32, 32)))
    sizes = []
    for _ in range(5):
        x = F.max_pool2d(x, 3, 2, "same")
        sizes.append(x.shape[2])
    assert sizes == [16, 8, 4, 2, 1]


def test_batch_norm_training_normalizes_and_tracks_running_stats():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 3, 4, 4)) * 3 + 5
    gamma, beta = np.ones(3), np.zeros(3)
    for unbiased, momentum in ((True, 0.1), (False, 0.01)):
        mean, var = np.zeros(3), np.ones(3)
        y, m, rstd = R.batch_norm_forward_train(x, gamma, beta, mean, var, momentum, 1e-5, unbiased)
        np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
        np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)
        batch_var = x.var(axis=(0, 2, 3), ddof=1 if unbiased else 0)
        np.testing.assert_allclose(mean, momentum * x.mean(axis=(0, 2, 3)))
        np.testing.assert_allclose(var, (1 - momentum) + momentum * batch_var)


def test_batch_norm_keras_convention_is_exact():
    layer = mc.nn.BatchNorm2d(2, momentum=0.99, eps=1e-3, convention="keras").to(dtype=np.float64)
    x = np.random.default_rng(4).standard_normal((4, 2, 3, 3))
    layer(mc.tensor(x, dtype=np.float64))
    # Keras: moving = 0.99 * moving + 0.01 * batch (biased variance)
    np.testing.assert_allclose(layer.running_mean, 0.01 * x.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(layer.running_var, 0.99 + 0.01 * x.var(axis=(0, 2, 3)), rtol=1e-6)
    assert layer.eps == 1e-3


def test_batch_norm_eval_uses_running_statistics():
    rng = np.random.default_rng(5)
    x, gamma, beta = rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal(4)
    mean, var = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    y = R.batch_norm_forward_eval(x, gamma, beta, mean, var, 1e-5)
    np.testing.assert_allclose(y, gamma * (x - mean) / np.sqrt(var + 1e-5) + beta)


def test_cross_entropy_is_mean_negative_log_probability():
    rng = np.random.default_rng(6)
    logits, labels = rng.standard_normal((5, 4)) * 10, rng.integers(0, 4, 5)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    loss, probs = R.cross_entropy_forward(logits, labels)
    assert loss.item() == pytest.approx(-np.log(p[np.arange(5), labels]).mean(), rel=1e-12)
    np.testing.assert_allclose(probs, p, rtol=1e-12)
    one_hot = np.eye(4)[labels]
    assert R.cross_entropy_forward(logits, one_hot)[0].item() == pytest.approx(loss.item(), rel=1e-12)


def test_softmax_is_stable_for_huge_logits():
    y = R.softmax_forward(np.array([[1000.0, 0.0, -1000.0]]))
    np.testing.assert_allclose(y, [[1, 0, 0]], atol=1e-300)
    assert np.isfinite(R.log_softmax_forward(np.array([[1000.0, 0.0]]))).all()


def test_sigmoid_matches_formula_without_overflow():
    x = np.array([-800.0, -3.0, 0.0, 3.0, 800.0])
    with np.errstate(over="raise"):
        y = R.sigmoid_forward(x)
    np.testing.assert_allclose(y[1:4], 1 / (1 + np.exp(-x[1:4])))
    assert y[0] == 0 and y[-1] == 1


def test_philox_known_answers():
    """Random123's published test vectors for Philox-4x32-10."""
    zero = np.zeros(1, np.uint64)
    assert [int(w[0]) for w in R.philox4x32(zero, zero, 0, 0)] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    ones = np.full(1, 0xFFFFFFFF, np.uint64)
    words = R.philox4x32(ones, ones, 2 ** 64 - 1, 2 ** 64 - 1)
    assert [int(w[0]) for w in words] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]


def test_dropout_mask_is_reproducible_scaled_and_has_the_right_rate():
    x = np.ones((100, 1000), np.float32)
    y, mask = R.dropout_forward(x, 0.3, seed=42, step=7)
    assert set(np.unique(mask)) == {0, np.float32(1 / 0.7)}
    assert abs((mask == 0).mean() - 0.3) < 0.005
    np.testing.assert_array_equal(R.dropout_forward(x, 0.3, 42, 7)[1], mask)
    assert (R.dropout_forward(x, 0.3, 42, 8)[1] != mask).any()
    assert abs(y.mean() - 1) < 0.01  # inverted dropout keeps the expectation


def test_adam_first_step_moves_by_lr_times_sign():
    p, g = np.array([1.0, -2.0, 3.0]), np.array([0.5, -4.0, 0.0])
    m, v = np.zeros(3), np.zeros(3)
    R.adam_update([p], [g], [m], [v], 1, 0.1, 0.9, 0.999, 1e-8, 0.0, False)
    # first step with bias correction: m_hat = g, v_hat = g^2, update = lr * g / (|g| + eps)
    np.testing.assert_allclose(p, [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 4 / (4 + 1e-8), 3.0])


def test_adam_matches_a_plain_loop_over_steps_with_weight_decay():
    rng = np.random.default_rng(7)
    for decoupled in (False, True):
        p = rng.standard_normal(4)
        expected, m, v = p.copy(), np.zeros(4), np.zeros(4)
        em, ev = np.zeros(4), np.zeros(4)
        for t in range(1, 6):
            g = rng.standard_normal(4)
            R.adam_update([p], [g], [m], [v], t, 0.01, 0.9, 0.99, 1e-8, 0.1, decoupled)
            ge = g if decoupled else g + 0.1 * expected
            em = 0.9 * em + 0.1 * ge
            ev = 0.99 * ev + 0.01 * ge ** 2
            step = 0.01 * (em / (1 - 0.9 ** t)) / (np.sqrt(ev / (1 - 0.99 ** t)) + 1e-8)
            expected = expected - step - (0.01 * 0.1 * expected if decoupled else 0)
        np.testing.assert_allclose(p, expected, rtol=1e-12)


def test_sgd_momentum_and_nesterov_match_the_formulas():
    for nesterov in (False, True):
        p, vel = np.array([1.0]), [np.zeros(1)]
        expected, buf = 1.0, 0.0
        for g in (1.0, 0.5, -2.0):
            R.sgd_update([p], [np.array([g])], vel, 0.1, 0.9, nesterov, 0.01)
            g = g + 0.01 * expected
            buf = 0.9 * buf + g
            expected -= 0.1 * (g + 0.9 * buf if nesterov else buf)
        assert p[0] == pytest.approx(expected, rel=1e-12)


def test_linear_and_gemm():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    np.testing.assert_allclose(R.gemm(a, b, trans_b=True), a @ b.T)
    c = rng.standard_normal((3, 5))
    np.testing.assert_allclose(R.gemm(a, c, trans_a=True), a.T @ c)
    d = rng.standard_normal((4, 3))
    np.testing.assert_allclose(R.gemm(c, d, trans_a=True, trans_b=True), c.T @ d.T)
    bias = rng.standard_normal(5)
    np.testing.assert_allclose(R.linear_forward(a, b, bias), a @ b.T + bias)
