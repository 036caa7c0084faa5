"""Batch-norm statistics in one launch (batchnorm.cu version 3, bn_moments): shifted sums of d
and d^2 in the two halves of one grid, against numpy_ref and version 2 on the emulator."""
import numpy as np
import pytest

from minicnn.backends import numpy_ref
from minicnn.backends.cuda import CudaKernels
from minicnn.backends.recording import Recorder, RecordingRuntime
from test_kernels_emu import randn


@pytest.fixture(scope="module")
def kernels():
    from minicnn.emu import EmulatorRuntime
    kernels = CudaKernels(RecordingRuntime(EmulatorRuntime(), Recorder()))
    kernels.bn_in_one_launch = False  # the statistics launches themselves (test_bn_one_launch.py
    return kernels                    # checks the one-launch kernels against them)


def statistics(kernels, name, x, one_launch):
    """(mean, rstd, running mean, running var, kernel names) of `name`_forward_train on x."""
    c = x.shape[1]
    ones = np.ones(c, x.dtype)
    running = [np.full(c, 0.5, x.dtype), np.full(c, 2.0, x.dtype)]
    kernels.bn_statistics_in_one_launch = one_launch
    kernels.runtime.recorder.reset()
    try:
        _, mean, rstd = getattr(kernels, f"{name}_forward_train")(x, ones, 0 * ones, *running, 0.1,
                                                                  1e-3, True)
    finally:
        kernels.bn_statistics_in_one_launch = True
    return mean, rstd, *running, [launch.kernel for launch in kernels.runtime.recorder.launches]


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("name", ["batch_norm", "relu_batch_norm"])
@pytest.mark.parametrize("shape", [(3, 4, 9, 7), (64, 2, 20, 20), (5, 3), (1, 2, 1, 1)])
def test_one_launch_statistics_match_the_two_pass_ones(kernels, dtype, rtol, name, shape):
    x = (randn(np.random.default_rng(30), shape, dtype) * 2 + 0.5).astype(dtype)
    *ours, names = statistics(kernels, name, x, one_launch=True)
    *theirs, their_names = statistics(kernels, name, x, one_launch=False)
    assert [n.split("<")[0] for n in names] == ["bn_moments", "bn_normalize"]
    assert [n.split("<")[0] for n in their_names] == ["bn_mean", "bn_variance", "bn_normalize"]
    for a, b, what in zip(ours, theirs, ["mean", "rstd", "running mean", "running var"]):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol, err_msg=what)
    assert not kernels._arrivals(1).any()  # every counter left at zero


def test_a_large_mean_does_not_swamp_a_small_variance(kernels):
    """Unshifted float32 sums of squares would lose every digit of this variance (1e-4 around
    1000: x^2 ~ 1e6, its rounding ~ 0.06); the shift by a value of the channel keeps it."""
    rng = np.random.default_rng(31)
    x = (1000 + 0.01 * rng.standard_normal((16, 3, 8, 8))).astype(np.float32)
    mean, rstd, *_ = statistics(kernels, "batch_norm", x, one_launch=True)
    exact = x.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(exact.var(axis=(0, 2, 3)) + 1e-3), rtol=1e-4)
    reference = numpy_ref.batch_norm_forward_train(x, np.ones(3, np.float32), np.zeros(3, np.float32),
                                                   np.zeros(3, np.float32), np.ones(3, np.float32),
                                                   0.1, 1e-3, True)
    np.testing.assert_allclose(rstd, reference[2], rtol=1e-4)
