"""Batch norm in one launch forward and one backward (kernels/bn_one_launch.cu, cooperative
grids): each pattern's kernel gives the bits of its two-launch chain in the emulator, whatever
the grid, on odd shapes and on every batch-norm layer of the model zoo's BN networks."""
import shutil

import numpy as np
import pytest

import minicnn as mc
from minicnn import functional as F
from minicnn.backends import numpy_ref
from minicnn.backends.cuda import CudaKernels
from minicnn.backends.recording import Recorder, RecordingRuntime
from minicnn.models.zoo import get_spec

POOL = ("max", (3, 3), (2, 2), (1, 1, 1, 1))  # overlapping windows, padded edges
# kind -> the forward's trailing arguments after (momentum, eps, unbiased)
KINDS = {"batch_norm": (), "relu_batch_norm": (), "batch_norm_relu": (),
         "batch_norm_relu_pool": POOL, "relu_batch_norm_pool_dropout": (*POOL, 0.3, 11, 4)}


@pytest.fixture(scope="module")
def kernels():
    from minicnn.emu import EmulatorRuntime
    return CudaKernels(RecordingRuntime(EmulatorRuntime(), Recorder()))


def forward(ops, kind, x, gamma, beta, options):
    """ops' `kind` forward (CudaKernels or numpy_ref) -> its outputs, then the running stats."""
    running_mean, running_var = np.full_like(gamma, 0.5), np.full_like(gamma, 2.0)
    out = getattr(ops, f"{kind}_forward_train")(x, gamma, beta, running_mean, running_var, 0.1,
                                                1e-5, True, *options)
    return (*out, running_mean, running_var)


def backward(ops, kind, dy, outputs, x, gamma, beta, options, dx_sums):
    """ops' `kind` backward of forward()'s outputs -> (dx, dgamma, dbeta[, sums of dx])."""
    mean, rstd = outputs[-4], outputs[-3]
    if kind == "batch_norm_relu":
        return ops.batch_norm_relu_backward(dy, outputs[0], x, gamma, mean, rstd, dx_sums=dx_sums)
    if options:  # the pooling kinds: dy of the pooled map, the forward's index
        return getattr(ops, f"{kind}_backward")(dy, outputs[1], x, gamma, beta, mean, rstd,
                                                *options, dx_sums=dx_sums)
    return getattr(ops, f"{kind}_backward")(dy, x, gamma, mean, rstd, dx_sums=dx_sums)


def one_and_two_launches(kernels, call):
    """call() with bn_in_one_launch on, then off -> [(its arrays, its kernels)] for each."""
    runs = []
    for one_launch in (True, False):
        kernels.bn_in_one_launch = one_launch
        kernels.runtime.recorder.reset()
        arrays = [None if a is None else np.array(a) for a in call()]
        runs.append((arrays, [launch.kernel for launch in kernels.runtime.recorder.launches]))
    kernels.bn_in_one_launch = True
    return runs


def assert_same_bits(runs):
    (one, _), (two, _) = runs
    assert len(one) == len(two)
    for a, b in zip(one, two):
        assert (a is None and b is None) or np.array_equal(a, b)


def check_layer(kernels, kind, x, options, dx_sums, rng):
    """The forward and the backward of one layer both ways: the same bits, 1 launch vs 2.
    Returns the one-launch (forward outputs, backward outputs) and the inputs used."""
    c = x.shape[1]
    gamma, beta = rng.uniform(0.5, 1.5, c).astype(x.dtype), rng.standard_normal(c).astype(x.dtype)
    runs = one_and_two_launches(kernels, lambda: forward(kernels, kind, x, gamma, beta, options))
    assert_same_bits(runs)
    assert len(runs[0][1]) == 1 and len(runs[1][1]) == 2
    assert runs[0][1][0].split("<")[0].endswith("_one_launch")
    outputs = runs[0][0]
    dy = rng.standard_normal(outputs[0].shape).astype(x.dtype)
    runs = one_and_two_launches(
        kernels, lambda: backward(kernels, kind, dy, outputs, x, gamma, beta, options, dx_sums))
    assert_same_bits(runs)
    assert len(runs[0][1]) == 1 and len(runs[1][1]) == 2
    assert not kernels._arrivals(1).any()  # the counters are left zero for the next launch
    return outputs, runs[0][0], (gamma, beta, dy)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("dx_sums", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_each_pattern_in_one_launch_is_its_two_launch_chain_bit_for_bit(kernels, kind, dx_sums,
                                                                        dtype, rtol):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, 5, 7, 6)) + 0.3).astype(dtype)  # odd sizes everywhere
    options = KINDS[kind]
    outputs, grads, (gamma, beta, dy) = check_layer(kernels, kind, x, options, dx_sums, rng)
    # and the reference's numbers (NumPy, float64 sums) to the dtype's precision
    expected = forward(numpy_ref, kind, x, gamma, beta, options)
    expected_grads = backward(numpy_ref, kind, dy, expected, x, gamma, beta, options, dx_sums)
    for got, want in zip([*outputs, *grads], [*expected, *expected_grads]):
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


def test_the_grid_size_changes_no_bit(kernels):
    """The grid follows the GPU's SM count; the slices and the order of every sum do not."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 6, 9, 9)).astype(np.float32)
    gamma, beta = np.ones(6, np.float32), np.zeros(6, np.float32)
    dy = rng.standard_normal((4, 6, 5, 5)).astype(np.float32)
    emulator, results, grids = kernels.runtime.inner, [], set()
    try:
        for sm_count in (1, 2, 5):
            emulator.sm_count = sm_count
            kernels.runtime.recorder.reset()
            out = forward(kernels, "batch_norm_relu_pool", x, gamma, beta, POOL)
            grads = backward(kernels, "batch_norm_relu_pool", dy, out, x, gamma, beta, POOL, True)
            results.append([np.array(a) for a in (*out, *grads)])
            grids |= {launch.grid for launch in kernels.runtime.recorder.launches}
    finally:
        del emulator.sm_count  # back to the class's emulated GPU
    assert grids == {(2,), (4,), (10,)}  # 2 blocks per SM
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def batch_norm_calls(arch):
    """(kind, x shape, the forward's trailing arguments) of each distinct batch norm of one dry
    training step of `arch` at batch 2, read off the calls its layers make."""
    device = Recorder(execute="skip").device("dry")
    calls = []
    for kind in KINDS:
        method = getattr(device.kernels, f"{kind}_forward_train")

        def logged(x, *args, kind=kind, method=method):
            calls.append((kind, x.shape, args[7:]))
            return method(x, *args)
        setattr(device.kernels, f"{kind}_forward_train", logged)
    model = get_spec(arch).build().to(device)
    model.train()
    x = mc.tensor(np.zeros((2, 3, 32, 32), np.float32), device=device)
    F.cross_entropy(model(x), np.zeros(2, np.int64)).backward()
    return sorted(set(calls), key=str)


@pytest.mark.parametrize("arch", ["vgg_like", "vgg8_bn", "resnet20", "cifar100_cnn"])
def test_every_batch_norm_layer_of_the_bn_networks(kernels, arch):
    calls = batch_norm_calls(arch)
    assert calls
    rng = np.random.default_rng(7)
    for kind, shape, options in calls:
        x = rng.standard_normal(shape).astype(np.float32)
        check_layer(kernels, kind, x, options, dx_sums=True, rng=rng)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_ptxas_fits_the_blocks_per_sm_the_grid_is_sized_for():
    """cooperative_grid launches COOPERATIVE_BLOCKS_PER_SM blocks per SM: the kernels'
    __launch_bounds__ must make ptxas keep registers and shared memory low enough for that
    many (else the driver refuses the launch). Checked for the profiler's default GPU (one
    nvcc run: each architecture costs minutes on a small CPU)."""
    from minicnn.backends.cuda_launch import COOPERATIVE_BLOCKS_PER_SM, KERNELS, THREADS, expand
    from minicnn.profile.gpus import get_gpu, occupancy
    from minicnn.profile.static import static_facts

    names = [name for e in KERNELS["bn_one_launch.cu"] for name in expand(e)]
    gpu = get_gpu("h100")
    facts = static_facts("bn_one_launch.cu", names, gpu.arch)
    for name in names:
        fit = occupancy(gpu, THREADS, facts[name].registers, facts[name].static_shared)
        assert fit.blocks_per_sm >= COOPERATIVE_BLOCKS_PER_SM, (name, fit)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("net", ["mixed_net", "vgg_like_tail"])
def test_three_training_steps_are_the_same_in_one_launch_and_in_two(dtype, net):
    """Every fused pattern (mixed_net) and vgg_like's (vgg_like_tail), 3 fixed-seed Adam steps
    on the emulator: the same losses, weights and running statistics bit for bit."""
    from test_fused_relu_bn_pool_dropout import vgg_like_tail
    from test_fusion import mixed_net, train_three_steps

    recorder = Recorder()
    device = recorder.device("emu")
    runs, families = [], []
    for one_launch in (True, False):
        device.kernels.bn_in_one_launch = one_launch
        recorder.reset()
        runs.append(train_three_steps(device, dtype, fused=True,
                                      net={"mixed_net": mixed_net, "vgg_like_tail": vgg_like_tail}[net]))
        families.append({launch.family for launch in recorder.launches})
    assert {"bn_moments", "bn_backward_sums"} & families[0] == set()
    assert any(f.endswith("_one_launch") for f in families[0])
    assert not any(f.endswith("_one_launch") for f in families[1])
    (losses, state), (two_launch_losses, two_launch_state) = runs
    assert losses == two_launch_losses and losses[-1] < losses[0]
    for key in state:
        np.testing.assert_array_equal(state[key], two_launch_state[key], err_msg=key)
