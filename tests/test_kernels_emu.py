"""Every CUDA kernel, forward and backward, against the NumPy reference, on the CPU emulator.

`CudaKernels(EmulatorRuntime())` runs the unchanged kernels/*.cu with CUDA's execution model
(one fiber per CUDA thread, barriers, races and out-of-bounds accesses caught), so these tests
check the kernels' logic without a GPU. Shapes are tiny and chosen to hit the edges: odd sizes,
batch 1, channel counts that are not a multiple of the 64-wide GEMM tile, strides 1 and 2,
no / symmetric / TensorFlow-'same' (bottom-right) padding, split-K, multi-slice reductions.

tests/test_cuda_parity.py imports these cases and runs them again on a real GPU.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from minicnn.backends import numpy_ref
from minicnn.backends.cuda import CudaKernels

RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


@pytest.fixture(scope="module")
def kernels():
    from minicnn.emu import EmulatorRuntime  # not importable is a failure: the emulator is core

    return CudaKernels(EmulatorRuntime())


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return np.dtype(request.param)


# ---------------------------------------------------------------------------- the harness

def to_device(xp, value):
    """Arrays (also inside lists/tuples) copied onto xp; everything else unchanged."""
    if isinstance(value, np.ndarray):
        return xp.array(value)
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(xp, v) for v in value)
    return value


def to_host(value):
    if hasattr(value, "get"):
        return value.get()
    if isinstance(value, (list, tuple)):
        return type(value)(to_host(v) for v in value)
    return value


def assert_same(expected, actual, exact=False, where="output"):
    """Recursive comparison: float arrays to RTOL of their dtype (relative to the largest
    expected magnitude), integer arrays and `exact` ones bit for bit."""
    if isinstance(expected, np.generic):  # NumPy returns 0-d results as scalars
        expected = np.asarray(expected)
    if expected is None:
        assert actual is None, f"{where}: expected None, got {type(actual).__name__}"
        return
    if not isinstance(expected, (np.ndarray, list, tuple)):
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"  # rates, modes, shapes
        return
    if isinstance(expected, (list, tuple)):
        assert len(expected) == len(actual), where
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same(e, a, exact, f"{where}[{i}]")
        return
    actual = np.asarray(actual)
    assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{where}: shape {actual.shape} != {expected.shape}"
    if exact or expected.dtype.kind != "f":
        np.testing.assert_array_equal(actual, expected, err_msg=where)
    else:
        rtol = RTOL[expected.dtype]
        scale = float(np.abs(expected).max()) if expected.size else 0.0
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=where)


def check(kernels, name, *args, exact=False):
    """Run numpy_ref.<name> and kernels.<name> on separate copies of args; compare the results
    and the arguments afterwards (several functions update their arguments in place)."""
    ref_args = to_device(np, args)
    our_args = to_device(kernels.xp, args)
    expected = getattr(numpy_ref, name)(*ref_args)
    actual = to_host(getattr(kernels, name)(*our_args))
    assert_same(expected, actual, exact, f"{name} output")
    assert_same(ref_args, to_host(our_args), exact, f"{name} arguments after the call")
    return expected


def randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------- GEMM, linear

GEMM_SHAPES = [(1, 1, 1), (5, 7, 3), (70, 65, 33), (8, 9, 600)]  # (M, N, K); the last splits K


@pytest.mark.parametrize("m, n, k", GEMM_SHAPES)
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False),
                                              (True, True)])
def test_gemm(kernels, dtype, m, n, k, trans_a, trans_b):
    rng = np.random.default_rng(m * n + k)
    a = randn(rng, (k, m) if trans_a else (m, k), dtype)
    b = randn(rng, (n, k) if trans_b else (k, n), dtype)
    check(kernels, "gemm", a, b, trans_a, trans_b)
    naive = to_host(kernels._gemm(kernels.xp.array(a), kernels.xp.array(b), trans_a, trans_b, 1))
    assert_same(numpy_ref.gemm(a, b, trans_a, trans_b), naive, where="gemm_v1")


@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_forward(kernels, dtype, with_bias):
    rng = np.random.default_rng(1)
    b = randn(rng, (66,), dtype) if with_bias else None
    check(kernels, "linear_forward", randn(rng, (5, 7), dtype), randn(rng, (66, 7), dtype), b)


@pytest.mark.parametrize("shape", [(4, 3), (1, 70), (2, 3, 5, 5), (2, 3, 64, 64)])
def test_bias_grad(kernels, dtype, shape):
    check(kernels, "bias_grad", randn(np.random.default_rng(2), shape, dtype))


# ---------------------------------------------------------------------------- convolution

CONV_CASES = {  # (N, C, H, W, F, kernel, stride, pads)
    "3x3-same": (1, 3, 5, 5, 4, (3, 3), (1, 1), (1, 1, 1, 1)),
    "3x3-s2-tf-same": (2, 3, 7, 6, 5, (3, 3), (2, 2), (0, 1, 0, 1)),
    "3x3-valid": (2, 2, 6, 5, 3, (3, 3), (1, 1), (0, 0, 0, 0)),
    "1x1-s2": (2, 4, 5, 5, 3, (1, 1), (2, 2), (0, 0, 0, 0)),
    "F67-C65": (1, 65, 4, 3, 67, (3, 3), (1, 1), (1, 1, 1, 1)),  # past the 64-wide tiles
    "split-k": (4, 2, 16, 16, 3, (3, 3), (1, 1), (1, 1, 1, 1)),  # dW's K = 1024 is split
}


@pytest.fixture(params=list(CONV_CASES), ids=list(CONV_CASES))
def conv_case(request, dtype):
    n, c, h, w, f, kernel, stride, pads = CONV_CASES[request.param]
    rng = np.random.default_rng(3)
    x, weight = randn(rng, (n, c, h, w), dtype), randn(rng, (f, c) + kernel, dtype)
    y = numpy_ref.conv2d_forward(x, weight, None, stride, pads)
    return x, weight, randn(rng, (f,), dtype), randn(rng, y.shape, dtype), stride, pads


def test_conv2d_forward(kernels, conv_case):
    x, w, b, _, stride, pads = conv_case
    check(kernels, "conv2d_forward", x, w, b, stride, pads)
    check(kernels, "conv2d_forward", x, w, None, stride, pads)


def test_conv2d_backward_data(kernels, conv_case):
    x, w, _, dy, stride, pads = conv_case
    check(kernels, "conv2d_backward_data", dy, w, x.shape, stride, pads)


def test_conv2d_backward_weight(kernels, conv_case):
    x, w, _, dy, stride, pads = conv_case
    check(kernels, "conv2d_backward_weight", dy, x, w.shape[2:], stride, pads)


# ---------------------------------------------------------------------------- pooling

POOL_CASES = {  # (x shape, kernel, stride, pads)
    "3x3s2-same-even": ((2, 3, 8, 8), (3, 3), (2, 2), (0, 1, 0, 1)),  # Keras 'same' on 8
    "3x3s2-same-odd": ((1, 2, 7, 7), (3, 3), (2, 2), (1, 1, 1, 1)),
    "3x3s2-valid": ((1, 2, 9, 9), (3, 3), (2, 2), (0, 0, 0, 0)),  # vgg11's pools
    "2x2s2": ((2, 3, 6, 5), (2, 2), (2, 2), (0, 0, 0, 0)),
}


@pytest.mark.parametrize("mode", ["max", "min", "avg"])
@pytest.mark.parametrize("case", list(POOL_CASES))
@pytest.mark.parametrize("ties", [False, True], ids=["random", "ties"])
def test_pool2d(kernels, dtype, mode, case, ties):
    shape, kernel, stride, pads = POOL_CASES[case]
    rng = np.random.default_rng(4)
    # small integers make many ties: the first cell in row-major order must win, as in NumPy
    x = rng.integers(-2, 3, shape).astype(dtype) if ties else randn(rng, shape, dtype)
    y, index = check(kernels, "pool2d_forward", x, mode, kernel, stride, pads)
    dy = randn(rng, y.shape, dtype)
    check(kernels, "pool2d_backward", dy, index, x.shape, mode, kernel, stride, pads)


def test_global_avg_pool(kernels, dtype):
    rng = np.random.default_rng(5)
    x = randn(rng, (2, 3, 5, 4), dtype)
    check(kernels, "global_avg_pool_forward", x)
    check(kernels, "global_avg_pool_backward", randn(rng, (2, 3), dtype), x.shape)


# ---------------------------------------------------------------------------- batch norm

@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4, 5), (1, 2, 64, 64)])
@pytest.mark.parametrize("unbiased", [True, False])
def test_batch_norm(kernels, dtype, shape, unbiased):
    rng = np.random.default_rng(6)
    c = shape[1]
    x = (randn(rng, shape, dtype) * 3 + 1).astype(dtype)
    gamma, beta = randn(rng, (c,), dtype), randn(rng, (c,), dtype)
    running_mean, running_var = randn(rng, (c,), dtype), rng.uniform(0.5, 2, c).astype(dtype)
    _, mean, rstd = check(kernels, "batch_norm_forward_train", x, gamma, beta, running_mean,
                          running_var, 0.1, 1e-3, unbiased)
    check(kernels, "batch_norm_forward_eval", x, gamma, beta, running_mean, running_var, 1e-3)
    check(kernels, "batch_norm_backward", randn(rng, shape, dtype), x, gamma, mean, rstd)


# ---------------------------------------------------------------------------- activations

@pytest.mark.parametrize("name", ["relu", "sigmoid"])
def test_activation(kernels, dtype, name):
    rng = np.random.default_rng(7)
    x = randn(rng, (3, 37), dtype) * 20  # large |x|: sigmoid must not overflow
    y = check(kernels, f"{name}_forward", x)
    check(kernels, f"{name}_backward", randn(rng, x.shape, dtype), y)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape", [(5, 10), (3, 100), (1, 1), (9, 33)])
def test_softmax(kernels, dtype, name, shape):
    rng = np.random.default_rng(8)
    x = randn(rng, shape, dtype) * 10
    y = check(kernels, f"{name}_forward", x)
    check(kernels, f"{name}_backward", randn(rng, shape, dtype), y)


# ---------------------------------------------------------------------------- loss

@pytest.mark.parametrize("shape", [(5, 10), (1, 3), (6, 100)])
@pytest.mark.parametrize("soft", [False, True], ids=["labels", "soft"])
def test_cross_entropy(kernels, dtype, shape, soft):
    rng = np.random.default_rng(9)
    logits = randn(rng, shape, dtype) * 5
    if soft:
        target = rng.dirichlet(np.ones(shape[1]), shape[0]).astype(dtype)
    else:
        target = rng.integers(0, shape[1], shape[0]).astype(np.int64)
    loss, probs = check(kernels, "cross_entropy_forward", logits, target)
    assert loss.shape == ()
    check(kernels, "cross_entropy_backward", np.array(0.5, dtype), probs, target)
    check(kernels, "cross_entropy_backward", 2.0, probs, target)  # a Python float dloss
    check(kernels, "cross_entropy_forward_train", logits, target)  # + the gradient for dloss = 1


# ---------------------------------------------------------------------------- dropout

def test_philox_words_match_the_reference(kernels):
    counter = np.array([0, 1, 2, 0xFFFFFFFF, 12345], np.uint64)
    check(kernels, "philox4x32", counter, counter[::-1].copy(), 2**33 + 7, 2**40 + 99)


@pytest.mark.parametrize("seed, step", [(0, 0), (1234, 7), (2**40 + 5, 2**33 + 1)])
def test_dropout_masks_are_bit_identical(kernels, dtype, seed, step):
    rng = np.random.default_rng(10)
    x = randn(rng, (3, 7, 5), dtype)  # 105 elements: the last counter is partly used
    y, mask = check(kernels, "dropout_forward", x, 0.3, seed, step, exact=True)
    assert 0.1 < (mask == 0).mean() < 0.5  # a real mask: about 30% dropped
    check(kernels, "dropout_backward", randn(rng, x.shape, dtype), mask, exact=True)


# ---------------------------------------------------------------------------- optimizers

def optimizer_state(dtype, count):
    rng = np.random.default_rng(11)
    shapes = [(3, 4), (5,), (2, 3, 3, 3)]
    return [[randn(rng, s, dtype) for s in shapes] for _ in range(count)]


@pytest.mark.parametrize("weight_decay, decoupled", [(0.0, False), (0.01, False), (0.01, True)])
def test_adam_update(kernels, dtype, weight_decay, decoupled):
    params, grads, exp_avgs, exp_avg_sqs = optimizer_state(dtype, 4)
    exp_avg_sqs = [np.abs(v) for v in exp_avg_sqs]
    check(kernels, "adam_update", params, grads, exp_avgs, exp_avg_sqs, 3, 1e-3, 0.9, 0.999,
          1e-8, weight_decay, decoupled)


@pytest.mark.parametrize("momentum, nesterov, weight_decay", [(0.0, False, 0.0), (0.9, False, 0.0),
                                                              (0.9, True, 5e-4)])
def test_sgd_update(kernels, dtype, momentum, nesterov, weight_decay):
    params, grads, velocities = optimizer_state(dtype, 3)
    check(kernels, "sgd_update", params, grads, velocities if momentum else None, 0.1, momentum,
          nesterov, weight_decay)


# ---------------------------------------------------------------------------- augmentation

def warp_maps(h, w):
    """Named (N, 2, 3) inverse maps for (H, W) images, float64 like sample_params draws them."""
    from minicnn.data import affine_inverse

    rng = np.random.default_rng(12)
    n = 3
    return {
        "identity": np.repeat(affine_inverse(h, w), n, axis=0),
        "flips": affine_inverse(h, w, hflip=[1, 0, 1], vflip=[0, 1, 1]),
        "integer-shifts": affine_inverse(h, w, shift_x=[3, -2, 0], shift_y=[-1, 4, 2]),
        "off-the-image": affine_inverse(h, w, shift_x=[3 * w, -5 * w, 0.5], shift_y=[0, 1, -4 * h]),
        "rotations": affine_inverse(h, w, angle=[90, -37, 180]),
        "random": affine_inverse(h, w, angle=rng.uniform(-40, 40, n), shear=rng.uniform(-15, 15, n),
                                 scale=rng.uniform(0.6, 1.4, n), shift_x=rng.uniform(-3, 3, n),
                                 shift_y=rng.uniform(-3, 3, n), hflip=[0, 1, 1], vflip=[1, 0, 1]),
    }


EXACT_MAPS = ("identity", "flips", "integer-shifts")   # whole-pixel moves: copies, bit for bit


@pytest.mark.parametrize("shape", [(3, 3, 7, 9), (3, 2, 6, 6), (3, 1, 1, 1)], ids=str)
@pytest.mark.parametrize("fill", ["nearest", "constant"])
@pytest.mark.parametrize("name", ["identity", "flips", "integer-shifts", "off-the-image",
                                  "rotations", "random"])
def test_affine_warp(kernels, dtype, shape, fill, name):
    x = np.random.default_rng(13).uniform(0, 255, shape).astype(dtype)
    inverse = warp_maps(*shape[2:])[name]
    check(kernels, "affine_warp", x, inverse, fill, exact=name in EXACT_MAPS)


@pytest.mark.parametrize("shape", [(4, 3, 5, 7), (4, 3, 1, 1), (4, 3, 64, 65)], ids=str)
def test_adjust_colour(kernels, dtype, shape):
    rng = np.random.default_rng(14)
    x = rng.uniform(0, 255, shape).astype(dtype)
    factors = np.array([[1.0, 1.0, 1.0],     # unchanged
                        [1.6, 0.7, 1.3],     # brightness clips at 255
                        [0.8, 1.8, 0.0],     # contrast clips, saturation 0 gives gray
                        [1.1, 0.0, 2.0]])    # contrast 0 gives the mean luma everywhere
    check(kernels, "adjust_colour", x, factors)


# ---------------------------------------------------------------------------- arithmetic, shapes

BROADCAST_CASES = [  # (a shape, b shape)
    ((2, 3, 4, 5), (2, 3, 4, 5)),   # a residual add: one merged dim
    ((2, 3, 4, 5), (2, 3, 1, 1)),   # an SE gate
    ((3, 1), (2, 3, 4)),            # a lower-rank operand on the left
    ((2, 1, 4, 1), (1, 3, 1, 5)),   # both broadcast, alternating: four merged dims
    ((7,), ()),                     # a 0-d scalar
]


@pytest.mark.parametrize("a_shape, b_shape", BROADCAST_CASES, ids=str)
@pytest.mark.parametrize("name", ["add_forward", "mul_forward"])
def test_broadcast_arithmetic(kernels, dtype, name, a_shape, b_shape):
    rng = np.random.default_rng(15)
    check(kernels, name, randn(rng, a_shape, dtype), randn(rng, b_shape, dtype))


SUM_CASES = [  # (x shape, target shape): every reduction pattern sum / mean / a gradient makes
    ((2, 3, 4, 5), (2, 3, 1, 1)),   # mean over H, W; an SE gate's gradient
    ((3, 4, 2), (3, 1, 2)),         # a middle axis (keepdims)
    ((2, 3, 4, 5), (1, 3, 1, 5)),   # alternating kept and summed dims
    ((5, 7), (1, 1)),               # everything
    ((2, 3, 4), (3, 1)),            # a lower-rank target: the leading axis is summed too
    ((4, 6), (4, 6)),               # nothing to sum: a scaled copy
]


@pytest.mark.parametrize("x_shape, shape", SUM_CASES, ids=str)
def test_sum_to_and_broadcast_to(kernels, dtype, x_shape, shape):
    rng = np.random.default_rng(16)
    check(kernels, "sum_to", randn(rng, x_shape, dtype), shape, 0.25)
    check(kernels, "broadcast_to", randn(rng, shape, dtype), x_shape, -1.5)


def test_broadcast_beyond_four_merged_dims_is_refused(kernels):
    a, b = np.ones((2, 1, 2, 1, 2)), np.ones((1, 2, 1, 2, 1))
    with pytest.raises(ValueError, match="at most 4"):
        kernels.add_forward(a, b)


@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 2, 3, 0), (0, 0, 0, 0)], ids=str)
def test_zero_pad2d(kernels, dtype, pads):
    rng = np.random.default_rng(17)
    x = randn(rng, (2, 3, 4, 5), dtype)
    y = check(kernels, "zero_pad2d_forward", x, pads, exact=True)
    check(kernels, "zero_pad2d_backward", randn(rng, y.shape, dtype), pads, exact=True)


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4, 5)])
def test_batch_norm_backward_eval(kernels, dtype, shape):
    rng = np.random.default_rng(18)
    c = shape[1]
    x, dy = randn(rng, shape, dtype), randn(rng, shape, dtype)
    running_mean, running_var = randn(rng, (c,), dtype), rng.uniform(0.5, 2, c).astype(dtype)
    check(kernels, "batch_norm_backward_eval", dy, x, randn(rng, (c,), dtype), running_mean,
          running_var, 1e-3)


def test_one_hot(kernels, dtype):
    check(kernels, "one_hot", np.array([2, 0, 4, 4], np.int64), 5, dtype, exact=True)


# ---------------------------------------------------------------------------- multi-tensor steps

MULTI_SHAPES = [(3, 4), (5,), (0,), (2, 3, 3, 3), (1100,), (7, 300)]  # > 1 block; an empty one


def multi_state(dtype, count):
    rng = np.random.default_rng(12)
    return [[randn(rng, s, dtype) for s in MULTI_SHAPES] for _ in range(count)]


@pytest.mark.parametrize("weight_decay, decoupled", [(0.0, False), (0.01, False), (0.01, True)])
def test_multi_tensor_adam_is_bit_identical_to_the_per_tensor_kernel(kernels, dtype, weight_decay,
                                                                     decoupled):
    state = multi_state(dtype, 4)
    state[3] = [np.abs(v) for v in state[3]]
    per_tensor, multi = to_device(kernels.xp, state), to_device(kernels.xp, state)
    for step, lr in [(1, 1e-3), (2, 1e-3), (3, 5e-4), (7, 5e-4)]:  # a resume at 7, an lr change
        for arrays, update in ((per_tensor, kernels._adam_update_v1), (multi, kernels.adam_update)):
            update(*arrays, step, lr, 0.9, 0.999, 1e-8, weight_decay, decoupled)
    assert_same(to_host(per_tensor), to_host(multi), exact=True, where="adam state")
    assert not np.array_equal(to_host(multi[0][0]), state[0][0])  # it moved


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_multi_tensor_sgd_is_bit_identical_to_the_per_tensor_kernel(kernels, dtype, momentum,
                                                                    nesterov):
    state = multi_state(dtype, 3)
    per_tensor, multi = to_device(kernels.xp, state), to_device(kernels.xp, state)
    for lr in (0.1, 0.1, 0.05):
        for arrays, update in ((per_tensor, kernels._sgd_update_v1), (multi, kernels.sgd_update)):
            params, grads, velocities = arrays
            update(params, grads, velocities if momentum else None, lr, momentum, nesterov, 5e-4)
    assert_same(to_host(per_tensor), to_host(multi), exact=True, where="sgd state")


def test_multi_tensor_steps_copy_nothing_to_the_device_once_warm(kernels):
    state = multi_state(np.dtype(np.float32), 4)
    state[3] = [np.abs(v) for v in state[3]]
    params, grads, exp_avgs, exp_avg_sqs = to_device(kernels.xp, state)
    for step in range(1, 4):
        kernels.adam_update(params, grads, exp_avgs, exp_avg_sqs, step, 1e-3, 0.9, 0.999, 1e-8,
                            0.0, False)
        if step == 1:
            group = kernels._multi_tensor.group(params)
            warm = group.host_writes.copy()
    assert warm == {"params": 1, "exp_avgs": 1, "exp_avg_sqs": 1, "grads": 1, "schedule": 1}
    assert group.host_writes == warm  # the same gradient arrays: nothing is written again
    assert group.schedule.tolist()[:2] == [3.0, 1e-3]


def test_a_pointer_table_to_a_too_small_array_is_out_of_bounds(kernels):
    if kernels.runtime.name != "emu":
        pytest.skip("only the emulator catches an out-of-bounds read")
    from minicnn.emu import EmulatorError
    params, grads, exp_avgs, exp_avg_sqs = multi_state(np.dtype(np.float64), 4)
    grads[-1] = grads[-1][:, :299].copy()  # one element short of its parameter
    with pytest.raises(EmulatorError, match="out-of-bounds global read"):
        kernels.adam_update(params, grads, exp_avgs, exp_avg_sqs, 1, 1e-3, 0.9, 0.999, 1e-8,
                            0.0, False)


# ---------------------------------------------------------------------------- reductions (version 2)

# Odd sizes: S not dividing the 256-thread step (77, 300), S = 1 with rows wrapping (300, 7),
# several slices per channel (8633 values), a channel of fewer values than threads.
REDUCTION_SHAPES = [(3, 5, 7, 11), (300, 7), (2, 2, 1, 300), (1, 1, 97, 89), (2, 3), (5, 1, 3, 1)]


@pytest.mark.parametrize("shape", REDUCTION_SHAPES)
def test_channel_sums_of_odd_shapes(kernels, dtype, shape):
    x = randn(np.random.default_rng(13), shape, dtype)
    check(kernels, "bias_grad", x)
    exact = [math.fsum(x[:, c].astype(np.float64).ravel()) for c in range(shape[1])]
    np.testing.assert_allclose(to_host(kernels.bias_grad(to_device(kernels.xp, x))), exact,
                               rtol=RTOL[dtype] / 10,
                               atol=RTOL[dtype] * np.abs(x).sum() / 100)



# ---------------------------------------------------------------------------- fused ReLU + BN

@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4, 5), (1, 2, 64, 64)])
@pytest.mark.parametrize("order", ["relu_batch_norm", "batch_norm_relu"])
def test_fused_relu_batch_norm(kernels, dtype, shape, order):
    rng = np.random.default_rng(15)
    c = shape[1]
    x = (randn(rng, shape, dtype) + 0.3).astype(dtype)  # both signs: the ReLU matters
    gamma, beta = randn(rng, (c,), dtype), randn(rng, (c,), dtype)
    running_mean, running_var = randn(rng, (c,), dtype), rng.uniform(0.5, 2, c).astype(dtype)
    y, mean, rstd = check(kernels, f"{order}_forward_train", x, gamma, beta, running_mean,
                          running_var, 0.1, 1e-3, True)
    dy = randn(rng, shape, dtype)
    extra = (y,) if order == "batch_norm_relu" else ()
    check(kernels, f"{order}_backward", dy, *extra, x, gamma, mean, rstd)


def bn_pair_unfused(kernels, order, x, dy, bn_args):
    """The two separate layers' kernels: (y, running stats, dx, dgamma, dbeta)."""
    gamma, beta, running_mean, running_var = bn_args
    if order == "relu_batch_norm":
        r = kernels.relu_forward(x)
        y, mean, rstd = kernels.batch_norm_forward_train(r, gamma, beta, running_mean,
                                                         running_var, 0.1, 1e-3, True)
        dr, dgamma, dbeta = kernels.batch_norm_backward(dy, r, gamma, mean, rstd)
        dx = kernels.relu_backward(dr, r)
    else:
        z, mean, rstd = kernels.batch_norm_forward_train(x, gamma, beta, running_mean,
                                                         running_var, 0.1, 1e-3, True)
        y = kernels.relu_forward(z)
        dx, dgamma, dbeta = kernels.batch_norm_backward(kernels.relu_backward(dy, y), x, gamma,
                                                        mean, rstd)
    return y, running_mean, running_var, dx, dgamma, dbeta


def bn_pair_fused(kernels, order, x, dy, bn_args):
    gamma, beta, running_mean, running_var = bn_args
    forward = getattr(kernels, f"{order}_forward_train")
    y, mean, rstd = forward(x, gamma, beta, running_mean, running_var, 0.1, 1e-3, True)
    extra = (y,) if order == "batch_norm_relu" else ()
    dx, dgamma, dbeta = getattr(kernels, f"{order}_backward")(dy, *extra, x, gamma, mean, rstd)
    return y, running_mean, running_var, dx, dgamma, dbeta


@pytest.mark.parametrize("order", ["relu_batch_norm", "batch_norm_relu"])
def test_fused_pairs_equal_the_unfused_kernels_bit_for_bit(kernels, dtype, order):
    rng = np.random.default_rng(16)
    x, dy = randn(rng, (3, 4, 9, 7), dtype), randn(rng, (3, 4, 9, 7), dtype)
    bn_args = [randn(rng, (4,), dtype), randn(rng, (4,), dtype), randn(rng, (4,), dtype),
               rng.uniform(0.5, 2, 4).astype(dtype)]
    x, dy = to_device(kernels.xp, (x, dy))
    unfused = to_host(bn_pair_unfused(kernels, order, x, dy, to_device(kernels.xp, bn_args)))
    fused = to_host(bn_pair_fused(kernels, order, x, dy, to_device(kernels.xp, bn_args)))
    assert_same(list(unfused), list(fused), exact=True, where=order)
    zeroed_by_relu = unfused[3] if order == "relu_batch_norm" else unfused[0]  # dx or y
    assert (zeroed_by_relu == 0).mean() > 0.2


# ---------------------------------------------------------------------------- pooling + dropout

@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_dropout_pair(kernels, dtype, mode):
    rng = np.random.default_rng(17)
    x = randn(rng, (2, 3, 7, 6), dtype)
    geometry = (mode, (3, 3), (2, 2), (0, 1, 0, 1))  # overlapping windows, TF-'same' pads
    exact = mode == "max"  # numpy_ref averages in another order
    y, index = check(kernels, "pool2d_dropout_forward", x, *geometry, 0.3, 9, 4, exact=exact)
    dy = randn(rng, y.shape, dtype)
    check(kernels, "pool2d_dropout_backward", dy, index, x.shape, *geometry, 0.3, 9, 4,
          exact=exact)
    # the same bits as the two layers' own kernels
    x, dy, index = to_device(kernels.xp, (x, dy, index))
    pooled, pool_index = kernels.pool2d_forward(x, *geometry)
    dropped, mask = kernels.dropout_forward(pooled, 0.3, 9, 4)
    fused = kernels.pool2d_dropout_forward(x, *geometry, 0.3, 9, 4)
    assert_same(to_host([dropped, pool_index]), to_host(list(fused)), exact=True)
    assert (to_host(mask) == 0).any()
    dx = kernels.pool2d_backward(kernels.dropout_backward(dy, mask), pool_index, x.shape, *geometry)
    assert_same(to_host(dx), to_host(kernels.pool2d_dropout_backward(
        dy, index, x.shape, *geometry, 0.3, 9, 4)), exact=True)


def test_dropout_apply_is_dropout_without_a_stored_mask(kernels, dtype):
    x = randn(np.random.default_rng(18), (3, 7, 5), dtype)
    y = check(kernels, "dropout_apply", x, 0.3, 11, 2, exact=True)
    assert_same(to_host(kernels.dropout_forward(to_device(kernels.xp, x), 0.3, 11, 2)[0]), y,
                exact=True)


def test_dropout_steps_from_the_device_counter_match_the_reference(kernels):
    """Steps as a training run meets them: a forward (the next step: the kernel advances the
    device counter), its backward (the same step), a resume (a jump: written from the host)."""
    rng = np.random.default_rng(19)
    x, maps = randn(rng, (5, 9, 7), np.float32), randn(rng, (2, 3, 6, 5), np.float32)
    x_here, maps_here = to_device(kernels.xp, (x, maps))
    pool = ("max", (3, 3), (2, 2), (1, 1, 1, 1))
    for step in (1, 1, 2, 2, 3, 7, 7, 8, 8):
        assert_same(numpy_ref.dropout_apply(x, 0.4, 123, step),
                    to_host(kernels.dropout_apply(x_here, 0.4, 123, step)), exact=True,
                    where=f"step {step}")
        assert_same(numpy_ref.pool2d_dropout_forward(maps, *pool, 0.4, 321, step),
                    to_host(kernels.pool2d_dropout_forward(maps_here, *pool, 0.4, 321, step)),
                    exact=True, where=f"pool at step {step}")
    for seed in (123, 321):
        counter = kernels._step_counters[seed]
        assert counter.host_writes == 1 and int(counter.device[0]) == 8  # the jump to 7 only


# ---------------------------------------------------------------------------- BN + ReLU + pooling

BN_POOLS = {"max-3x3-s2-same": ("max", (3, 3), (2, 2), (0, 1, 0, 1)),
            "max-2x2": ("max", (2, 2), (2, 2), (0, 0, 0, 0)),
            "avg-2x2": ("avg", (2, 2), (2, 2), (0, 0, 0, 0))}


@pytest.mark.parametrize("pool", BN_POOLS.values(), ids=BN_POOLS.keys())
def test_batch_norm_relu_pool(kernels, dtype, pool):
    rng = np.random.default_rng(20)
    x = (randn(rng, (2, 3, 7, 6), dtype) + 0.2).astype(dtype)
    gamma, beta = randn(rng, (3,), dtype), randn(rng, (3,), dtype)
    running = [randn(rng, (3,), dtype), rng.uniform(0.5, 2, 3).astype(dtype)]
    y, index, mean, rstd = check(kernels, "batch_norm_relu_pool_forward_train", x, gamma, beta,
                                 *running, 0.1, 1e-3, True, *pool)
    dy = randn(rng, y.shape, dtype)
    check(kernels, "batch_norm_relu_pool_backward", dy, index, x, gamma, beta, mean, rstd, *pool)
    # bit for bit the three layers' kernels
    x, gamma, beta, dy = to_device(kernels.xp, (x, gamma, beta, dy))
    z, mean1, rstd1 = kernels.batch_norm_relu_forward_train(
        x, gamma, beta, *to_device(kernels.xp, running), 0.1, 1e-3, True)
    pooled, index1 = kernels.pool2d_forward(z, *pool)
    dz = kernels.pool2d_backward(dy, index1, z.shape, *pool)
    unfused = [pooled, index1, *kernels.batch_norm_relu_backward(dz, z, x, gamma, mean1, rstd1)]
    y2, index2, mean2, rstd2 = kernels.batch_norm_relu_pool_forward_train(
        x, gamma, beta, *to_device(kernels.xp, running), 0.1, 1e-3, True, *pool)
    fused = [y2, index2, *kernels.batch_norm_relu_pool_backward(dy, index2, x, gamma, beta, mean2,
                                                                 rstd2, *pool)]
    assert_same(to_host(unfused), to_host(fused), exact=True, where="fused vs unfused")
    assert (to_host(z) == 0).mean() > 0.2  # the ReLU matters
