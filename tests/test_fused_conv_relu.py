"""The conv -> ReLU pair fused (conv.cu's ReLU epilogue, fused.cu's relu_backward_channel_sums):
against numpy_ref on the emulator, equal to the unfused kernel chain, and chosen by the fusion
pass of nn.Sequential without changing what training computes."""
import numpy as np
import pytest

import minicnn as mc
from minicnn import nn
from minicnn.autograd import _topological_order
from minicnn.backends import numpy_ref
from minicnn.backends.cuda import CudaKernels
from minicnn.backends.recording import Recorder, RecordingRuntime
from minicnn.nn.module import capture
from test_kernels_emu import CONV_CASES, check, randn


@pytest.fixture(scope="module")
def kernels():
    from minicnn.emu import EmulatorRuntime
    return CudaKernels(RecordingRuntime(EmulatorRuntime(), Recorder()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", ["3x3-same", "3x3-s2-tf-same", "F67-C65"])
def test_conv_relu_forward_and_its_backward_pass_match_the_reference_and_the_chain(kernels, dtype,
                                                                                 case):
    n, c, h, w, f, kernel, stride, pads = CONV_CASES[case]
    rng = np.random.default_rng(7)
    x, weight = randn(rng, (n, c, h, w), dtype), randn(rng, (f, c) + kernel, dtype)
    b = randn(rng, (f,), dtype)
    y = check(kernels, "conv2d_relu_forward", x, weight, b, stride, pads)
    assert (y == 0).any() and (y > 0).any()  # the ReLU cut something
    check(kernels, "conv2d_relu_forward", x, weight, None, stride, pads)
    dy = randn(rng, y.shape, dtype)
    check(kernels, "relu_backward_bias_grad", dy, y)

    kernels.runtime.recorder.reset()
    fused = kernels.conv2d_relu_forward(x, weight, b, stride, pads)
    dx, db = kernels.relu_backward_bias_grad(dy, fused)
    assert len(kernels.runtime.recorder.launches) == 2
    kernels.runtime.recorder.reset()
    chain_y = kernels.relu_forward(kernels.conv2d_forward(x, weight, b, stride, pads))
    chain_dx = kernels.relu_backward(dy, chain_y)
    chain_db = kernels.bias_grad(chain_dx)
    if any(r.kernel.startswith(("sum_splits", "conv2d_forward_split_k"))
           for r in kernels.runtime.recorder.launches):
        # the plain conv summed K in slices (split-K, a small grid); the fused one never splits
        # (its ReLU needs whole sums), so the two sum in different orders
        tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
        for got, want in ((fused, chain_y), (dx, chain_dx), (db, chain_db)):
            np.testing.assert_allclose(got, want, **tol)
    else:  # the same arithmetic, bit for bit
        for got, want in ((fused, chain_y), (dx, chain_dx), (db, chain_db)):
            np.testing.assert_array_equal(got, want)


def test_relu_backward_bias_grad_of_features_and_of_many_slices(kernels):
    rng = np.random.default_rng(8)
    for shape in [(5, 3), (64, 2, 20, 20)]:  # S = 1; several slices per channel
        y = np.maximum(randn(rng, shape, np.float32), 0)
        check(kernels, "relu_backward_bias_grad", randn(rng, shape, np.float32), y)


def conv_relu_net():
    """conv -> ReLU twice (the first fused, the second followed by a batch norm), as in vgg_like."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU(), nn.Conv2d(4, 5, 3, padding="same"),
        nn.ReLU(), nn.BatchNorm2d(5), nn.MaxPool2d(2), nn.Conv2d(5, 6, 3, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(6, 10))


def test_the_pass_fuses_a_conv_and_its_relu_unless_a_batch_norm_follows_or_a_hook_is_set():
    model = conv_relu_net()
    x = mc.tensor(np.random.default_rng(9).standard_normal((2, 3, 6, 6)))
    names = [type(f).__name__ for f in _topological_order(model(x))]
    assert names.count("Conv2dReLU") == 2 and names.count("Conv2d") == 1
    assert names.count("ReLUBatchNorm") == 1 and "ReLU" not in names
    with capture(model, ["relu1"]) as outputs:
        names = [type(f).__name__ for f in _topological_order(model(x))]
    assert names.count("Conv2dReLU") == 1 and names.count("ReLU") == 1
    np.testing.assert_array_equal(outputs["relu1"].numpy(), np.maximum(
        numpy_ref.conv2d_forward(x.numpy(), model.conv1.weight.numpy(), model.conv1.bias.numpy(),
                                 (1, 1), (1, 1, 1, 1)), 0))
