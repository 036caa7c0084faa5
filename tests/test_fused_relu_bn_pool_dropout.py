"""vgg_like's ReLU -> BN -> pool -> dropout as one fused pass each way (fused.cu's
relu_bn_pool_dropout_*): against numpy_ref, and bit for bit against the kernels of the
ReLU-BN pair and the pool-dropout pair, on the emulator."""
import numpy as np
import pytest

from minicnn.backends.cuda import CudaKernels
from minicnn.backends.recording import Recorder, RecordingRuntime
from test_fused_conv_relu import conv_relu_net
from test_fusion import assert_fusion_changes_no_bit
from test_kernels_emu import check, randn


@pytest.fixture(scope="module")
def kernels():
    from minicnn.emu import EmulatorRuntime
    kernels = CudaKernels(RecordingRuntime(EmulatorRuntime(), Recorder()))
    kernels.bn_in_one_launch = False  # fused.cu's two-launch passes (test_bn_one_launch.py
    return kernels                    # checks the one-launch kernels against them)


def layer_arguments(rng, dtype, c):
    gamma, beta = randn(rng, (c,), dtype), randn(rng, (c,), dtype)
    return [gamma, beta, randn(rng, (c,), dtype), rng.uniform(0.5, 2, c).astype(dtype)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_the_four_layers_in_one_pass_each_way_match_the_reference(kernels, dtype, mode):
    rng = np.random.default_rng(40)
    x = (randn(rng, (2, 3, 7, 6), dtype) + 0.2).astype(dtype)
    gamma, beta, *running = layer_arguments(rng, dtype, 3)
    pool, dropout = (mode, (3, 3), (2, 2), (0, 1, 0, 1)), (0.3, 11, 2)
    y, index, mean, rstd = check(kernels, "relu_batch_norm_pool_dropout_forward_train", x, gamma,
                                 beta, *running, 0.1, 1e-3, True, *pool, *dropout)
    assert (y == 0).mean() > 0.1  # the dropout dropped some
    dy = randn(rng, y.shape, dtype)
    for sums in (False, True):
        check(kernels, "relu_batch_norm_pool_dropout_backward", dy, index, x, gamma, beta, mean,
              rstd, *pool, *dropout, sums)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_the_fused_pass_is_the_two_pairs_bit_for_bit(kernels, dtype):
    rng = np.random.default_rng(41)
    x, dy = randn(rng, (4, 3, 8, 8), dtype), randn(rng, (4, 3, 4, 4), dtype)
    gamma, beta, *running = layer_arguments(rng, dtype, 3)
    pool, dropout = ("max", (3, 3), (2, 2), (0, 1, 0, 1)), (0.3, 12, 5)
    fused_running = [r.copy() for r in running]
    kernels.runtime.recorder.reset()
    y, index, mean, rstd = kernels.relu_batch_norm_pool_dropout_forward_train(
        x, gamma, beta, *fused_running, 0.1, 1e-3, True, *pool, *dropout)
    dx, dgamma, dbeta, sums = kernels.relu_batch_norm_pool_dropout_backward(
        dy, index, x, gamma, beta, mean, rstd, *pool, *dropout, True)
    assert len(kernels.runtime.recorder.launches) == 4  # statistics, forward; sums, dx
    z, pair_mean, pair_rstd = kernels.relu_batch_norm_forward_train(x, gamma, beta, *running, 0.1,
                                                                    1e-3, True)
    pair_y, pair_index = kernels.pool2d_dropout_forward(z, *pool, *dropout)
    dz = kernels.pool2d_dropout_backward(dy, pair_index, x.shape, *pool, *dropout)
    pair_dx, pair_dgamma, pair_dbeta = kernels.relu_batch_norm_backward(dz, x, gamma, pair_mean,
                                                                        pair_rstd)
    for ours, theirs in zip([y, index, mean, rstd, *fused_running, dx, dgamma, dbeta, sums],
                            [pair_y, pair_index, pair_mean, pair_rstd, *running, pair_dx,
                             pair_dgamma, pair_dbeta, kernels.bias_grad(pair_dx)]):
        np.testing.assert_array_equal(ours, theirs)
    assert (dx == 0).mean() > 0.3  # ReLU, pooling and dropout all zero some


def test_a_fused_pool_with_a_dropout_needs_the_relu_before():
    import minicnn as mc
    from minicnn import nn
    bn = nn.BatchNorm2d(2)
    with pytest.raises(ValueError, match="pool needs relu='before' with a dropout"):
        bn.normalize(mc.tensor(np.ones((2, 2, 4, 4))), relu="after", pool=nn.MaxPool2d(2),
                     dropout=(0.3, 1, 1))


def vgg_like_tail():
    """vgg_like's stage and FC layer in small: conv-ReLU-conv-ReLU-BN-pool-dropout, then
    linear-ReLU-BN1d-dropout-linear."""
    from minicnn import nn
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU(), nn.Conv2d(4, 4, 3, padding="same"),
        nn.ReLU(), nn.BatchNorm2d(4), nn.MaxPool2d(3, 2, "same"), nn.Dropout(0.3),
        nn.Flatten(), nn.Linear(4 * 3 * 3, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Dropout(0.3),
        nn.Linear(8, 10))


@pytest.mark.parametrize("device", ["cpu", "emu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("net", [vgg_like_tail, conv_relu_net], ids=["vgg_like_tail", "conv_relu"])
def test_three_training_steps_are_the_same_with_this_round_s_fusions(device, dtype, net):
    assert_fusion_changes_no_bit(device, dtype, net)


def test_the_fc_dropout_joins_its_relu_and_batch_norm():
    import minicnn as mc
    from minicnn.autograd import _topological_order
    model = vgg_like_tail()
    output = model(mc.tensor(np.random.default_rng(42).standard_normal((4, 3, 6, 6))))
    names = [type(f).__name__ for f in _topological_order(output)]
    assert names.count("ReLUBatchNormPoolDropout") == names.count("ReLUBatchNormDropout") == 1
    assert not {"ReLU", "BatchNorm", "Dropout", "Pool2d"} & set(names)
    with pytest.raises(ValueError, match="a dropout without a pool needs relu='before' and"):
        model.bn2.normalize(mc.tensor(np.ones((4, 8))), relu="after", dropout=(0.3, 1, 1))
