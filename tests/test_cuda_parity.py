"""The CUDA kernels on a real GPU against numpy_ref: every emulator case again, plus the layer
shapes of vgg_like (report A13) at batch 512 and of vgg11 (report B), CIFAR augmentation at
batch 512, and bitwise run-to-run reproducibility. Skipped, with the reason, where CuPy sees no
usable GPU.
"""
from __future__ import annotations

import numpy as np
import pytest

from minicnn.backends import cuda_status
from minicnn.backends.cuda import CudaKernels
from test_kernels_emu import *  # noqa: F401,F403  (every emulator case runs here too)
from test_kernels_emu import check, randn

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def kernels():  # replaces the emulator's fixture for every imported case
    usable, reason = cuda_status()
    if not usable:
        pytest.skip(f"no usable GPU: {reason}")
    from minicnn.backends.cuda import CupyRuntime
    return CudaKernels(CupyRuntime())


SAME = (1, 1, 1, 1)
LAYERS = {  # (N, C, H, W, F): 3x3 convs, stride 1
    "vgg_like-conv1": (512, 3, 32, 32, 32),
    "vgg_like-conv2": (512, 32, 32, 32, 32),
    "vgg_like-conv3": (512, 32, 16, 16, 64),
    "vgg_like-conv9": (512, 64, 2, 2, 128),
    "vgg11-conv4": (4, 256, 32, 32, 256),
    "vgg11-conv5": (8, 256, 15, 15, 512),
}


@pytest.mark.parametrize("layer", list(LAYERS))
def test_conv_layers(kernels, layer):
    n, c, h, w, f = LAYERS[layer]
    rng = np.random.default_rng(0)
    x, weight = randn(rng, (n, c, h, w), np.float32), randn(rng, (f, c, 3, 3), np.float32)
    y = check(kernels, "conv2d_forward", x, weight, randn(rng, (f,), np.float32), (1, 1), SAME)
    dy = randn(rng, y.shape, np.float32)
    check(kernels, "conv2d_backward_data", dy, weight, x.shape, (1, 1), SAME)
    check(kernels, "conv2d_backward_weight", dy, x, (3, 3), (1, 1), SAME)
    check(kernels, "bias_grad", dy)


def test_vgg_like_pool_bn_dropout_at_batch_512(kernels):
    rng = np.random.default_rng(1)
    x = randn(rng, (512, 32, 32, 32), np.float32)
    y, index = check(kernels, "pool2d_forward", x, "max", (3, 3), (2, 2), (0, 1, 0, 1))
    check(kernels, "pool2d_backward", randn(rng, y.shape, np.float32), index, x.shape, "max",
          (3, 3), (2, 2), (0, 1, 0, 1))
    gamma, beta = np.ones(32, np.float32), np.zeros(32, np.float32)
    _, mean, rstd = check(kernels, "batch_norm_forward_train", x, gamma, beta,
                          np.zeros(32, np.float32), np.ones(32, np.float32), 0.01, 1e-3, False)
    check(kernels, "batch_norm_backward", randn(rng, x.shape, np.float32), x, gamma, mean, rstd)
    check(kernels, "dropout_forward", x, 0.3, 42, 1000, exact=True)


def test_classifier_head_at_batch_512(kernels):
    rng = np.random.default_rng(2)
    features = randn(rng, (512, 512), np.float32)
    hidden = check(kernels, "linear_forward", features, randn(rng, (1000, 512), np.float32),
                   randn(rng, (1000,), np.float32))
    check(kernels, "gemm", randn(rng, (512, 1000), np.float32), hidden, True, False)  # dW
    labels = rng.integers(0, 10, 512).astype(np.int64)
    _, probs = check(kernels, "cross_entropy_forward", randn(rng, (512, 10), np.float32), labels)
    check(kernels, "cross_entropy_backward", np.float32(1.0), probs, labels)


def test_results_are_bitwise_reproducible(kernels):
    xp, rng = kernels.xp, np.random.default_rng(3)
    x = xp.asarray(randn(rng, (512, 64, 16, 16), np.float32))
    dy = xp.asarray(randn(rng, (512, 64, 16, 16), np.float32))
    runs = [(kernels.conv2d_backward_weight(dy, x, (3, 3), (1, 1), SAME).get(),
             kernels.bias_grad(dy).get(),
             kernels.batch_norm_backward(dy, x, xp.ones(64, np.float32),
                                         xp.zeros(64, np.float32), xp.ones(64, np.float32))[1].get())
            for _ in range(2)]
    for first, second in zip(*runs):
        np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("preset", ["report_b", "keras_rot_shift_flip", "pad_crop_flip"])
def test_cifar_augmentation_at_batch_512(kernels, preset):
    from minicnn.data import PRESETS, sample_params

    rng = np.random.default_rng(4)
    x = rng.uniform(0, 255, (512, 3, 32, 32)).astype(np.float32)
    params = sample_params(PRESETS[preset], 512, rng, 32, 32)
    warped = check(kernels, "affine_warp", x, params.inverse, params.fill)
    if params.colour is not None:
        check(kernels, "adjust_colour", warped, params.colour)
        colour = kernels.xp.asarray(params.colour)
        runs = [kernels.adjust_colour(kernels.xp.asarray(warped), colour).get() for _ in range(2)]
        np.testing.assert_array_equal(*runs)  # the per-image means are deterministic reductions


def test_loader_augments_on_the_gpu(kernels):
    from minicnn.backends import get_device
    from minicnn.data import BatchLoader, Normalizer, augment_preset

    images = np.random.default_rng(5).integers(0, 256, (600, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(600) % 10
    common = dict(normalizer=Normalizer.fit("standardize", images), augment=augment_preset("report_b"),
                  shuffle=True, seed=6)
    gpu = BatchLoader(images, labels, 256, device=get_device("cuda"), **common)
    cpu = BatchLoader(images, labels, 256, **common)
    for (x, y), (x_cpu, y_cpu) in zip(gpu, cpu):
        assert isinstance(x, kernels.xp.ndarray) and x.dtype == np.float32
        np.testing.assert_array_equal(y.get(), y_cpu)
        np.testing.assert_allclose(x.get(), x_cpu, rtol=1e-4, atol=1e-3)


def test_loader_batches_with_whole_pixel_crops_are_the_cpus_bit_for_bit(kernels):
    """prepare_batch at batch 512: pad-crop-flip moves whole pixels (bilinear weights 0 and 1,
    exact with or without FMA) and the normalization is a subtract and an IEEE divide."""
    from minicnn.backends import get_device
    from minicnn.data import BatchLoader, Normalizer, augment_preset

    images = np.random.default_rng(7).integers(0, 256, (1100, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(1100) % 10
    common = dict(normalizer=Normalizer.fit("standardize", images),
                  augment=augment_preset("pad_crop_flip"), shuffle=True, seed=8)
    gpu = BatchLoader(images, labels, 512, device=get_device("cuda"), **common)
    cpu = BatchLoader(images, labels, 512, **common)
    for (x, y), (x_cpu, y_cpu) in zip(gpu, cpu):
        np.testing.assert_array_equal(y.get(), y_cpu)
        np.testing.assert_array_equal(x.get(), x_cpu)
