"""A conv / linear layer hands its bias gradient to the batch norm after it: the batch norm's dx
pass also sums dx per channel (bn_backward_dx_sums, bn_relu_pool_backward_dx_sums). Checked
against numpy_ref and against the unfused kernels (dx pass, then channel_sums) on the
emulator, and through nn.Sequential's fusion pass."""
import contextlib

import numpy as np
import pytest

import minicnn as mc
from minicnn import functional as F
from minicnn import nn
from minicnn.autograd import _topological_order
from minicnn.backends.cuda import CudaKernels
from minicnn.backends.recording import Recorder, RecordingRuntime
from minicnn.nn import fusion
from test_fusion import mixed_net
from test_kernels_emu import check, randn

SHAPE = (3, 4, 9, 7)
POOL = ("max", (3, 3), (2, 2), (0, 1, 0, 1))


@pytest.fixture(scope="module")
def kernels():
    from minicnn.emu import EmulatorRuntime
    kernels = CudaKernels(RecordingRuntime(EmulatorRuntime(), Recorder()))
    kernels.bn_in_one_launch = False  # the two-launch dx passes (test_bn_one_launch.py checks
    return kernels                    # the one-launch kernels against them)


def statistics(kernels, name, x, rng):
    """(y, mean, rstd) of a training forward `name` on fresh parameters, and gamma, beta."""
    c = x.shape[1]
    gamma, beta = randn(rng, (c,), x.dtype), randn(rng, (c,), x.dtype)
    running = [randn(rng, (c,), x.dtype), rng.uniform(0.5, 2, c).astype(x.dtype)]
    pool = POOL if name == "batch_norm_relu_pool" else ()
    out = getattr(kernels, f"{name}_forward_train")(x, gamma, beta, *running, 0.1, 1e-3, True, *pool)
    return out, gamma, beta


def backward_arguments(name, out, dy, x, gamma, beta):
    """The positional arguments of `name`_backward (without dx_sums)."""
    if name == "batch_norm_relu_pool":
        y, index, mean, rstd = out
        return (dy, index, x, gamma, beta, mean, rstd, *POOL)
    y, mean, rstd = out
    return (dy, y, x, gamma, mean, rstd) if name == "batch_norm_relu" else (dy, x, gamma, mean, rstd)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["batch_norm", "relu_batch_norm", "batch_norm_relu",
                                  "batch_norm_relu_pool"])
def test_a_dx_pass_with_sums_matches_the_reference_and_the_unfused_kernels(kernels, dtype, name):
    rng = np.random.default_rng(21)
    x = (randn(rng, SHAPE, dtype) + 0.3).astype(dtype)
    out, gamma, beta = statistics(kernels, name, x, rng)
    dy = randn(rng, out[0].shape, dtype)
    arguments = backward_arguments(name, out, dy, x, gamma, beta)
    # dx of a batch norm sums to 0 over each channel (only rounding is left), unless a ReLU
    # comes between its input and the normalization (ReLU -> BN, vgg_like's order)
    sums_vanish = name != "relu_batch_norm"
    expected = check(kernels, f"{name}_backward", *arguments, not sums_vanish)  # numpy_ref
    assert len(expected) == 3 + (not sums_vanish)

    kernels.runtime.recorder.reset()
    dx, dgamma, dbeta, sums = getattr(kernels, f"{name}_backward")(*arguments, True)
    assert len(kernels.runtime.recorder.launches) == 2  # the sums pass, the dx pass: no third
    chain = getattr(kernels, f"{name}_backward")(*arguments)
    for ours, theirs in zip((dx, dgamma, dbeta, sums), (*chain, kernels.bias_grad(chain[0]))):
        np.testing.assert_array_equal(ours, theirs)  # bit for bit
    if sums_vanish:
        np.testing.assert_allclose(sums, 0, atol=1e-5 * np.abs(dx).sum())
    else:
        assert np.abs(sums).max() > 1e-3


def test_the_pass_hands_each_bias_gradient_to_its_batch_norm():
    model = mixed_net()  # conv-ReLU-BN-pool-dropout, conv-BN-ReLU-pool, linear-BN1d-ReLU, linear
    output = model(mc.tensor(np.random.default_rng(22).standard_normal((4, 3, 6, 6))))
    functions = _topological_order(output)
    handed = {type(f).__name__: type(f.bias_grad_to).__name__ for f in functions
              if getattr(f, "bias_grad_to", None) is not None}
    assert handed == {"ReLUBatchNormPoolDropout": "Conv2d", "BatchNormReLUPool": "Conv2d",
                      "BatchNormReLU": "Linear"}
    with fusion.unfused():
        functions = _topological_order(model(mc.tensor(np.ones((4, 3, 6, 6)))))
    assert not any(getattr(f, "bias_grad_to", None) for f in functions)


@pytest.mark.parametrize("device", ["cpu", "emu"])
def test_the_handed_bias_gradients_are_the_layers_own(device):
    """The backward of a fused step gives every parameter the unfused step's gradient."""
    gradients = []
    for fused in (True, False):
        mc.manual_seed(4)
        model = mixed_net().to(device, dtype=np.float64)
        rng = np.random.default_rng(23)
        x = mc.tensor(rng.standard_normal((4, 3, 6, 6)), dtype=np.float64, device=device)
        with fusion.unfused() if not fused else contextlib.nullcontext():
            F.cross_entropy(model(x), rng.integers(0, 10, 4)).backward()
        gradients.append({name: np.asarray(p.grad) for name, p in model.named_parameters()})
    assert gradients[0].keys() == gradients[1].keys()
    for name in gradients[0]:
        np.testing.assert_array_equal(gradients[0][name], gradients[1][name], err_msg=name)
    assert np.abs(gradients[0]["conv2.bias"]).max() > 0


def test_a_conv_without_bias_or_with_its_output_hooked_computes_its_own():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(),
                          nn.Linear(4, 2))
    x = mc.tensor(np.random.default_rng(24).standard_normal((2, 3, 3, 3)))
    assert not any(getattr(f, "bias_grad_to", None) for f in _topological_order(model(x)))
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model.conv1.register_forward_hook(lambda module, inputs, output: None)
    assert not any(getattr(f, "bias_grad_to", None) for f in _topological_order(model(x)))
