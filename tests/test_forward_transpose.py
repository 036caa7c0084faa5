"""The transposed weights at zero launches (issue 11): a training step's forward conv writes
wt = W^T from extra blocks of its own launch, and the one-launch backward's data product reads
it (whole rows, coalesced) instead of W in place; the same bits, the same launch count."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import minicnn as mc
from minicnn.autograd import _topological_order, no_grad
from minicnn.backends import get_device, numpy_ref
from minicnn.backends.kernel_facts import block_kinds, forward_transpose
from minicnn.backends.recording import Recorder
from minicnn.profile.measure import CountInEmulator
from test_fused_backward import conv_relu_conv_net
from test_fusion import train_three_steps
from test_split_k_one_launch import emulated  # noqa: F401 (a fixture: CudaKernels on the emulator)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from launch_count import count_step  # noqa: E402

PRECISIONS = [("fp32", np.float32), ("fp32", np.float64), ("tf32", np.float32), ("bf16", np.float32)]
# (x shape, w shape, stride, pads): odd filter and channel counts that leave partial transpose
# tiles, 1 x 1, 5 x 5 and 7 x 7 kernels, and a K split in two (the split-K twin's extra blocks)
LAYERS = {
    "odd-3x3": ((2, 19, 7, 6), (37, 19, 3, 3), (1, 1), (1, 1, 1, 1)),
    "1x1": ((2, 150, 5, 5), (5, 150, 1, 1), (2, 2), (0, 0, 0, 0)),
    "5x5": ((2, 3, 9, 9), (20, 3, 5, 5), (1, 1), (2, 2, 2, 2)),
    "7x7": ((1, 2, 9, 9), (3, 2, 7, 7), (2, 1), (3, 3, 3, 3)),
    "split-K": ((2, 70, 5, 5), (72, 70, 3, 3), (1, 1), (1, 1, 1, 1)),
}


def launches(kernels, call):
    """(call()'s result, the LaunchRecords it made)."""
    kernels.runtime.recorder.reset()
    result = call()
    return result, list(kernels.runtime.recorder.launches)


@pytest.mark.parametrize("precision, dtype", PRECISIONS)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_a_training_forward_also_writes_the_transposed_weights(emulated, precision, dtype, layer):
    kernels = emulated(precision)
    x_shape, w_shape, stride, pads = LAYERS[layer]
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape, w_shape[:1]))
    args = (x, w, b, stride, pads)
    for forward in ("conv2d_forward", "conv2d_relu_forward"):  # the second never splits K
        y, plain = launches(kernels, lambda: getattr(kernels, forward)(*args))
        for split_k_in_one_launch in (True, False):
            kernels.split_k_in_one_launch = split_k_in_one_launch
            (y_train, wt), records = launches(kernels, lambda: getattr(kernels, forward + "_train")(*args))
            kernels.split_k_in_one_launch = True
            np.testing.assert_array_equal(y_train, y)
            np.testing.assert_array_equal(wt, w.transpose(1, 0, 2, 3))
            # one launch (with sum_splits after a split K when the slices are added apart),
            # the plain forward's grid but for whole columns of transposing blocks
            (product, *rest), ((plain_x, plain_y, splits),) = records, [r.grid for r in plain]
            summed = not split_k_in_one_launch and splits > 1
            assert [r.family for r in rest] == ["sum_splits"] * summed
            gx, gy, gz = product.grid
            assert (gy, gz) == (plain_y, splits)
            blocks = forward_transpose(w_shape[0], w_shape[1], math.prod(w_shape[2:])).blocks
            assert blocks <= (gx - plain_x) * gy * gz < blocks + gy * gz
    assert not kernels._arrivals(1).any()  # the split-K twin's counters are left zero


def test_only_a_forward_whose_backward_wants_dx_writes_them():
    """No wt in eval or under no_grad, nor for the first layer, whose input needs no gradient:
    their launches have no extra blocks; the one-launch training step keeps one per other conv."""
    recorder = Recorder(execute="skip")
    device = recorder.device("dry")
    model = conv_relu_conv_net().to(device)
    x = mc.tensor(np.zeros((2, 3, 6, 6), np.float32), device=device)

    def forward_wt_tiles():
        recorder.reset()
        output = model(x)
        tiles = [[a.value for a in r.args if a.shape is None][-2] for r in recorder.launches
                 if r.family in ("conv2d_forward", "conv2d_relu_forward")]
        return output, tiles
    output, tiles = forward_wt_tiles()
    assert len(tiles) == 4 and tiles[0] == 0 and all(tiles[1:])
    convs = [f for f in _topological_order(output) if "Conv2d" in type(f).__name__]
    assert sum(f.wt is not None for f in convs) == 3
    with no_grad():
        assert forward_wt_tiles()[1] == [0] * 4
    model.eval()
    with no_grad():
        assert forward_wt_tiles()[1] == [0] * 4
    model.train()
    device.kernels.backward_in_one_launch = False  # separate launches transpose w themselves
    try:
        assert forward_wt_tiles()[1] == [0] * 4
    finally:
        device.kernels.backward_in_one_launch = True


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_three_training_steps_are_the_same_with_the_separate_backward(dtype):
    """Bit for bit: reading the forward's wt changes no value and no order of a sum."""
    kernels = get_device("emu").kernels
    one_launch = train_three_steps("emu", dtype, fused=True)
    kernels.backward_in_one_launch = False
    try:
        separate = train_three_steps("emu", dtype, fused=True)
    finally:
        kernels.backward_in_one_launch = True
    assert one_launch[0] == separate[0] and one_launch[0][-1] < one_launch[0][0]
    for key in one_launch[1]:
        np.testing.assert_array_equal(one_launch[1][key], separate[1][key], err_msg=key)


def test_a_backward_given_no_wt_transposes_w_itself(emulated):
    kernels = emulated("fp32")
    x_shape, w_shape, stride, pads = LAYERS["odd-3x3"]
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    dy = rng.standard_normal(numpy_ref.conv2d_forward(x, w, None, stride, pads).shape)
    wt = kernels.conv2d_forward_train(x, w, None, stride, pads)[1]
    given, records = launches(kernels, lambda: kernels.conv2d_backward(dy, x, w, stride, pads, True, True,
                                                                       False, wt))
    assert [r.family for r in records] == ["conv2d_backward"]
    itself, records = launches(kernels, lambda: kernels.conv2d_backward(dy, x, w, stride, pads, True,
                                                                        True, False))
    assert [r.family for r in records] == ["conv_weight_transpose", "conv2d_backward"]
    for a, b, want in zip(given, itself, numpy_ref.conv2d_backward(dy, x, w, stride, pads, True, True, False)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, want, rtol=0, atol=1e-10 * np.abs(want).max())


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_the_default_backward_loads_at_least_90_percent_coalesced(precision):
    """A 64-channel 3 x 3 layer on 16 x 16 images: the training forward (product and
    transposing blocks) and the one-launch backward (data product reading wt, weight product,
    bias) each >= 90% of their global load sectors useful (the backward was 83% reading W in
    place), and each equal to the reference."""
    recorder = Recorder(execute=CountInEmulator("all"))
    kernels = recorder.device("emu", precision).kernels
    rng = np.random.default_rng(2)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 64, 16, 16), (64, 64, 3, 3), (64,)))
    x = np.maximum(x, 0)
    dy = rng.standard_normal((2, 64, 16, 16)).astype(np.float32)
    stride, pads = (1, 1), (1, 1, 1, 1)
    tolerance = {"fp32": 1e-4, "tf32": 2e-2, "bf16": 1e-1}[precision]
    (y, wt), (forward,) = launches(kernels, lambda: kernels.conv2d_forward_train(x, w, b, stride, pads))
    grads, (backward,) = launches(kernels, lambda: kernels.conv2d_backward(dy, x, w, stride, pads, True,
                                                                            True, True, wt))
    reference = [numpy_ref.conv2d_forward(*(a.astype(np.float64) for a in (x, w, b)), stride, pads),
                 *numpy_ref.conv2d_backward(*(a.astype(np.float64) for a in (dy, x, w)), stride, pads,
                                            True, True, True)]
    for got, want in zip([y, *grads], reference):
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * np.abs(want).max())
    for record in (forward, backward):
        assert record.counters.efficiency("global", "load") >= 0.9, (record.kernel, precision)


def test_the_counters_sample_each_kind_of_block_of_a_transposing_forward():
    """Product blocks (here in two K slices), transposing blocks and idle extra blocks: counted
    from a few blocks of each kind (kernel_facts.block_kinds), the totals are the whole grid's."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 64, 8, 8)).astype(np.float32), rng.standard_normal((72, 64, 3, 3)).astype(np.float32)
    totals = []
    for blocks in ("sample", "all"):
        recorder = Recorder(execute=CountInEmulator(blocks))
        kernels = recorder.device("emu").kernels
        kernels.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1))
        kernels.conv2d_forward_train(x, w, None, (1, 1), (1, 1, 1, 1))
        plain, record = recorder.launches
        kinds = block_kinds(record.kernel, [a.value for a in record.args if a.shape is None], record.grid)
        assert sorted(np.concatenate(kinds)) == list(range(record.blocks))
        assert [len(kind) for kind in kinds[:2]] == [plain.blocks, forward_transpose(72, 64, 9).blocks]
        assert plain.grid[2] == 2 and len(kinds[2]) > 0
        # (not the global stores: the last block of each tile to arrive stores the sums, and
        # which one that is in a sample is the emulator's schedule)
        totals.append([record.counters.total(space, op, "units")
                       for space, op in (("global", "load"), ("shared", "load"), ("shared", "store"))])
    np.testing.assert_allclose(totals[0], totals[1], rtol=0.1)


@pytest.mark.parametrize("arch, launches_per_step", [("vgg_like", 38), ("vgg8_bn", 44)])
def test_a_training_step_launches_no_transpose_of_its_own(arch, launches_per_step):
    phases = count_step(arch, 512)
    names = [r.kernel for kernels, _ in phases.values() for r in kernels]
    assert len(names) == launches_per_step
    assert not [name for name in names if name.startswith("conv_weight_transpose")]
