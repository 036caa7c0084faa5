"""A layer's whole backward in one launch (backward.cu): a conv's or linear layer's dx (with the
ReLU backward of a conv -> ReLU -> conv folded in), dw and db, equal bit for bit to the separate
launches and close to numpy_ref on the emulator; and the fusion pass that moves the ReLU."""
import os

import numpy as np
import pytest

import minicnn as mc
from minicnn import nn
from minicnn.autograd import _topological_order
from minicnn.backends import numpy_ref
from minicnn.backends.recording import Recorder
from test_fusion import assert_fusion_changes_no_bit
from test_kernels_precision import FULL_RUN_WEIGHTS, zoo_layers
from test_split_k_one_launch import emulated  # noqa: F401 (a fixture: CudaKernels on the emulator)

# float64 runs the SIMT loop only, so the tensor-core precisions pair with float32
PRECISIONS = [("fp32", np.float32), ("fp32", np.float64), ("tf32", np.float32), ("bf16", np.float32)]
TOLERANCE = {("fp32", np.float32): 1e-5, ("fp32", np.float64): 1e-10, ("tf32", np.float32): 3e-3,
             ("bf16", np.float32): 2e-2}  # of the largest value
# (x shape, w shape, stride, pads): small batches of the layers of vgg_like (3x3 'same', 64
# channels), vgg8_bn (the first layer, 3 channels) and resnet20 (a stride-2 stage entry and a
# 1 x 1 shortcut), odd shapes with edges inside every tile, a split K, and two layers whose
# products take different fp32 tiles (dw 64 x 64 or 128 x 32, dx 32 x 128)
CONV_LAYERS = {
    "vgg_like-64": ((2, 64, 6, 6), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1)),
    "vgg8_bn-first": ((3, 3, 9, 9), (32, 3, 3, 3), (1, 1), (1, 1, 1, 1)),
    "resnet20-s2": ((2, 16, 8, 8), (32, 16, 3, 3), (2, 2), (1, 1, 1, 1)),
    "resnet20-1x1": ((2, 16, 8, 8), (32, 16, 1, 1), (2, 2), (0, 0, 0, 0)),
    "odd": ((3, 5, 7, 6), (67, 5, 3, 2), (2, 1), (1, 0, 1, 1)),
    "split-K": ((2, 70, 5, 5), (72, 70, 3, 3), (1, 1), (1, 1, 1, 1)),
    "tiles-64x64-32x128": ((2, 32, 8, 8), (64, 32, 3, 3), (1, 1), (1, 1, 1, 1)),
    "tiles-128x32-32x128": ((2, 32, 8, 8), (128, 32, 1, 1), (1, 1), (0, 0, 0, 0)),
}


def one_and_separate(kernels, call):
    """(the one-launch gradients, their kernels, the separate launches' gradients, theirs)."""
    results = []
    for one_launch in (True, False):
        kernels.backward_in_one_launch = one_launch
        kernels.runtime.recorder.reset()
        results += [call(), [launch.kernel for launch in kernels.runtime.recorder.launches]]
    kernels.backward_in_one_launch = True
    return results


def assert_gradients(kernels, precision, dtype, call, reference):
    """call() gives the separate launches' bits in one launch, and reference()'s numbers."""
    ours, names, separate, _ = one_and_separate(kernels, call)
    assert len(names) == 1
    for got, chain, want in zip(ours, separate, reference()):
        assert (got is None) == (chain is None) == (want is None)
        if got is not None:
            np.testing.assert_array_equal(got, chain)
            assert got.dtype == dtype
            np.testing.assert_allclose(got, want, rtol=0,
                                       atol=TOLERANCE[precision, dtype] * np.abs(want).max())
    assert not kernels._arrivals(1).any()  # the counters are left zero for the next launch
    return names[0]


@pytest.mark.parametrize("precision, dtype", PRECISIONS)
@pytest.mark.parametrize("layer", list(CONV_LAYERS))
def test_a_conv_backward_is_one_launch_with_the_separate_launches_bits(emulated, precision, dtype,
                                                                        layer):
    kernels = emulated(precision)
    x_shape, w_shape, stride, pads = CONV_LAYERS[layer]
    rng = np.random.default_rng(1)
    x = np.maximum(rng.standard_normal(x_shape), 0).astype(dtype)  # a ReLU's output
    w = rng.standard_normal(w_shape).astype(dtype)
    dy = rng.standard_normal(kernels._conv_shape(x_shape, w_shape, stride, pads).y_shape).astype(dtype)
    wt = kernels.conv2d_forward_train(x, w, None, stride, pads)[1]  # as a training step's forward keeps it
    for flags in [(True, True, True), (True, False, False), (False, True, False)]:
        name = assert_gradients(
            kernels, precision, dtype,
            lambda: kernels.conv2d_backward(dy, x, w, stride, pads, *flags, wt),
            lambda: numpy_ref.conv2d_backward(dy.astype(np.float64), x.astype(np.float64),
                                              w.astype(np.float64), stride, pads, *flags))
        assert name.startswith("conv2d_backward<")


@pytest.mark.parametrize("precision, dtype", PRECISIONS)
# the second splits K; the third's dw takes 32 x 128 tiles, its dx 64 x 64 (fp32)
@pytest.mark.parametrize("n, inputs, outputs", [(70, 40, 65), (1500, 33, 10), (64, 128, 20)])
def test_a_linear_backward_is_one_launch_with_the_separate_launches_bits(emulated, precision, dtype,
                                                                         n, inputs, outputs):
    kernels = emulated(precision)
    rng = np.random.default_rng(2)
    dy, x, w = (rng.standard_normal(s).astype(dtype) for s in [(n, outputs), (n, inputs),
                                                                (outputs, inputs)])
    for flags in [(True, True), (False, False)]:
        name = assert_gradients(kernels, precision, dtype,
                                lambda: kernels.linear_backward(dy, x, w, *flags),
                                lambda: numpy_ref.linear_backward(*(a.astype(np.float64)
                                                                    for a in (dy, x, w)), *flags))
        assert name.startswith("linear_backward<")


def test_the_relu_mask_is_the_relus_backward():
    rng = np.random.default_rng(3)
    x_shape, w_shape, stride, pads = CONV_LAYERS["odd"]
    x, w = np.maximum(rng.standard_normal(x_shape), 0), rng.standard_normal(w_shape)
    dy = rng.standard_normal(numpy_ref.conv2d_forward(x, w, None, stride, pads).shape)
    masked = numpy_ref.conv2d_backward(dy, x, w, stride, pads, True, False, True)[0]
    plain = numpy_ref.conv2d_backward(dy, x, w, stride, pads, True, False, False)[0]
    np.testing.assert_array_equal(masked, np.where(x > 0, plain, 0))
    assert (masked == 0).sum() > (plain == 0).sum()


def conv_relu_conv_net():
    """vgg_like's block: conv -> ReLU -> conv -> ReLU -> BN -> pool -> dropout, then a linear head."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU(), nn.Conv2d(4, 5, 3, padding="same"), nn.ReLU(),
        nn.BatchNorm2d(5), nn.MaxPool2d(2), nn.Dropout(0.3, seed=6), nn.Conv2d(5, 6, 3), nn.ReLU(),
        nn.Conv2d(6, 6, 1), nn.Flatten(), nn.Linear(6, 10))


def test_the_pass_moves_a_conv_relu_pairs_relu_backward_into_the_next_conv():
    model = conv_relu_conv_net()
    output = model(mc.tensor(np.random.default_rng(4).standard_normal((2, 3, 6, 6))))
    functions = list(_topological_order(output))
    pairs = [f for f in functions if type(f).__name__ == "Conv2dReLU"]
    convs = [f for f in functions if type(f).__name__ == "Conv2d"]
    assert len(pairs) == 2 and all(f.grad_masked_below for f in pairs)
    # conv2 (its output goes to the batch norm) and conv4 each apply the ReLU before them
    assert len(convs) == 2 and all(f.relu_input and f.inputs[0].creator in pairs for f in convs)


def test_a_hooked_relu_or_conv_keeps_the_relu_backward_in_its_own_pass():
    for hooked in ("relu1", "conv2"):
        model = conv_relu_conv_net()
        getattr(model, hooked).register_forward_hook(lambda module, inputs, output: None)
        output = model(mc.tensor(np.random.default_rng(5).standard_normal((2, 3, 6, 6))))
        functions = list(_topological_order(output))
        first = next(f for f in functions if f.inputs[0].creator is None)  # conv1's Function
        assert not getattr(first, "grad_masked_below", False)
        assert sum(getattr(f, "relu_input", False) for f in functions) == 1  # conv4's only


@pytest.mark.parametrize("device", ["cpu", "emu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_three_training_steps_are_the_same_with_the_relu_moved(device, dtype):
    assert_fusion_changes_no_bit(device, dtype, conv_relu_conv_net)


def test_each_conv_and_linear_backward_is_one_launch():
    recorder = Recorder(execute="skip")
    device = recorder.device("dry")
    model = conv_relu_conv_net().to(device)
    x = mc.tensor(np.zeros((2, 3, 6, 6), np.float32), device=device)
    loss = mc.functional.cross_entropy(model(x), np.zeros(2, np.int64))
    recorder.reset()
    loss.backward()
    names = [launch.kernel.split("<")[0] for launch in recorder.launches]
    assert names.count("conv2d_backward") == 4 and names.count("linear_backward") == 1
    assert not {"relu_backward_channel_sums", "channel_sums", "gemm_v2", "sum_splits",
                "conv2d_backward_data", "conv2d_backward_weight"} & set(names)


# (x shape, filters): the second's products take different tiles (dw 64 x 64, dx 32 x 128)
@pytest.mark.parametrize("x_shape, filters", [((16, 4, 16, 16), 4), ((4, 32, 8, 8), 64)])
def test_the_counters_sample_each_kind_of_block_of_a_backward_launch(x_shape, filters):
    """Long-K weight blocks first, then many short data blocks, then channel sums: counted from
    a few blocks of each kind (kernel_facts.backward_segments), the totals are the whole grid's."""
    from minicnn.backends.kernel_facts import backward_segments
    from minicnn.profile.measure import CountInEmulator
    rng = np.random.default_rng(6)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((filters, x_shape[1], 3, 3)).astype(np.float32)
    dy = rng.standard_normal((x_shape[0], filters, *x_shape[2:])).astype(np.float32)
    totals = []
    for blocks in ("sample", "all"):
        recorder = Recorder(execute=CountInEmulator(blocks))
        kernels = recorder.device("emu").kernels
        wt = kernels.conv2d_forward_train(x, w, None, (1, 1), (1, 1, 1, 1))[1]
        recorder.reset()
        kernels.conv2d_backward(dy, x, w, (1, 1), (1, 1, 1, 1), True, True, False, wt)
        (record,) = recorder.launches
        segments = backward_segments(record.kernel, [a.value for a in record.args if a.shape is None])
        assert sum(segments) == record.blocks and min(segments) > 0
        totals.append([record.counters.total(space, None, "units") for space in ("global", "shared")])
    np.testing.assert_allclose(totals[0], totals[1], rtol=0.1)


def tile_names(weight, data):
    from minicnn.backends.kernel_facts import backward_tiles, simt_products
    return [f"{t.tile_m}x{t.tile_n}/{t.threads}" for t in backward_tiles(simt_products(), weight, data)]


def test_each_product_takes_the_tile_of_its_own_launch_where_the_thread_counts_agree():
    # vgg_like at batch 512, products as (rows, cols, depth): its 32 -> 64 layer
    assert tile_names((64, 288, 131072), (32, 131072, 576)) == ["64x64/256", "32x128/256"]
    assert tile_names((10, 128, 512), (512, 128, 10)) == ["32x128/256", "64x64/256"]  # the head
    # its 32 -> 32 layer: dw alone would take 32 x 32 (64 threads), dx 32 x 128 (256); one block
    # size: 32 x 128 would compute 4/3 of dw's cells, 32 x 32 none too many of either
    assert tile_names((32, 288, 524288), (32, 524288, 288)) == ["32x32/64", "32x32/64"]
    assert tile_names((32, 27, 524288), (3, 0, 288)) == ["32x32/64", "32x32/64"]  # conv1: no dx


def test_the_one_launch_has_the_blocks_of_the_separate_products(emulated):
    """Each product in its own launch's tiles: as many blocks per product as those launches."""
    from minicnn.backends.kernel_facts import backward_segments
    kernels = emulated("fp32")
    x_shape, w_shape, stride, pads = CONV_LAYERS["tiles-64x64-32x128"]
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    dy = rng.standard_normal(kernels._conv_shape(x_shape, w_shape, stride, pads).y_shape).astype(np.float32)
    wt = kernels.conv2d_forward_train(x, w, None, stride, pads)[1]  # as a training step's forward keeps it
    launches = []
    for one_launch in (True, False):
        kernels.backward_in_one_launch = one_launch
        kernels.runtime.recorder.reset()
        kernels.conv2d_backward(dy, x, w, stride, pads, True, True, False, wt)
        launches.append(list(kernels.runtime.recorder.launches))
    kernels.backward_in_one_launch = True
    (fused,), separate = launches
    assert fused.kernel == "conv2d_backward<float, SimtTile<64, 64, 256>, SimtTile<32, 128, 256>>"
    blocks = {name: sum(r.blocks for r in separate if r.family.startswith(name))
              for name in ("conv2d_backward_weight", "conv2d_backward_data")}
    segments = backward_segments(fused.kernel, [a.value for a in fused.args if a.shape is None])
    assert segments[:2] == (blocks["conv2d_backward_weight"], blocks["conv2d_backward_data"]) == (5, 2)


# every conv layer shape of vgg_like, vgg8_bn and resnet20 at batch 1 (test_kernels_precision's)
ZOO_LAYERS = zoo_layers(["vgg_like", "vgg8_bn", "resnet20"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("layer", list(ZOO_LAYERS))
def test_zoo_layers_in_one_launch(emulated, layer, dtype):
    n, c, h, w, f, kernel, stride, pads = ZOO_LAYERS[layer]
    if f * c * kernel[0] * kernel[1] > FULL_RUN_WEIGHTS and not os.environ.get("MINICNN_EMU_FULL"):
        pytest.skip("over a minute in the emulator: set MINICNN_EMU_FULL=1 to run it")
    kernels = emulated("fp32")
    rng = np.random.default_rng(8)
    x = np.maximum(rng.standard_normal((n, c, h, w)), 0).astype(dtype)
    weight = rng.standard_normal((f, c, *kernel)).astype(dtype)
    dy = rng.standard_normal(kernels._conv_shape(x.shape, weight.shape, stride, pads).y_shape).astype(dtype)
    wt = kernels.conv2d_forward_train(x, weight, None, stride, pads)[1]
    assert_gradients(kernels, "fp32", dtype,
                     lambda: kernels.conv2d_backward(dy, x, weight, stride, pads, True, True, True, wt),
                     lambda: numpy_ref.conv2d_backward(*(a.astype(np.float64) for a in (dy, x, weight)),
                                                       stride, pads, True, True, True))
