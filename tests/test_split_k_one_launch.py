"""Split-K in one launch (gemm.cu's add_splits_when_last): the product's last block of each tile
adds the slices itself, bit for bit what the second launch (sum_splits) adds, on the emulator."""
import numpy as np
import pytest

from minicnn.backends import numpy_ref
from minicnn.backends.cuda import CudaKernels
from minicnn.backends.kernel_facts import conv_kernel
from minicnn.backends.recording import Recorder, RecordingRuntime


C_TYPE = {np.float32: "float", np.float64: "double"}
# float64 always runs the SIMT loop, so tensor-core precisions pair with float32 only
CASES = [("fp32", np.float32), ("fp32", np.float64), ("tf32", np.float32)]


@pytest.fixture(scope="module")
def emulated():
    from minicnn.emu import EmulatorRuntime
    made = {}
    return lambda precision: made.setdefault(
        precision, CudaKernels(RecordingRuntime(EmulatorRuntime(), Recorder()), precision=precision))


def both_ways(kernels, call):
    """(one-launch result, its kernel names, two-launch result, its kernel names)."""
    results = []
    for one_launch in (True, False):
        kernels.split_k_in_one_launch = one_launch
        kernels.runtime.recorder.reset()
        result = np.asarray(call())
        results += [result, [launch.kernel for launch in kernels.runtime.recorder.launches]]
    kernels.split_k_in_one_launch = True
    return results


@pytest.mark.parametrize("precision, dtype", CASES)
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True)])
def test_a_split_gemm_adds_its_slices_in_the_same_launch(emulated, precision, dtype, trans_a,
                                                         trans_b):
    kernels = emulated(precision)
    rng = np.random.default_rng(0)
    m, n, k = 70, 65, 1500  # 2 x 2 tiles, edges inside both, K cut into 6 slices
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    one, one_names, two, two_names = both_ways(kernels, lambda: kernels.gemm(a, b, trans_a, trans_b))
    np.testing.assert_array_equal(one, two)
    np.testing.assert_allclose(one, (a.T if trans_a else a) @ (b.T if trans_b else b),
                               rtol=1e-2 if kernels.precision == "tf32" else 1e-4, atol=0.5)
    assert len(one_names) == 1 and "split_k" in one_names[0]
    assert len(two_names) == 2 and two_names[1].startswith("sum_splits")
    assert not kernels._arrivals(1).any()  # the counters are left zero for the next launch


@pytest.mark.parametrize("precision, dtype", CASES)
def test_conv_backward_weight_adds_its_slices_in_the_same_launch(emulated, precision, dtype):
    kernels = emulated(precision)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 5, 16, 16)).astype(dtype)
    dy = rng.standard_normal((16, 70, 8, 8)).astype(dtype)  # stride 2, 70 filters: 2 row tiles
    one, one_names, two, two_names = both_ways(
        kernels, lambda: kernels.conv2d_backward_weight(dy, x, (3, 3), (2, 2), (1, 1, 1, 1)))
    np.testing.assert_array_equal(one, two)
    assert one.shape == (70, 5, 3, 3)
    tile = kernels._tile_for(dtype, 70, 5 * 3 * 3)  # dw: 70 filters x C*kH*kW
    assert one_names == [conv_kernel("conv2d_backward_weight_split_k", tile)
                         .format(T="float" if dtype == np.float32 else "double")]
    assert len(two_names) == 2


# (x shape, w shape, stride, pads): small images over a long K, so the grids split K
CONV_SPLITS = [((2, 70, 5, 5), (72, 70, 3, 3), (1, 1), (1, 1, 1, 1)),  # 50 columns, K 630 and 648
               ((3, 64, 6, 7), (70, 64, 3, 3), (2, 2), (1, 0, 1, 1))]  # 2 row tiles, odd edges


@pytest.mark.parametrize("precision, dtype", CASES)
@pytest.mark.parametrize("x_shape, w_shape, stride, pads", CONV_SPLITS)
@pytest.mark.parametrize("name", ["conv2d_forward", "conv2d_backward_data"])
def test_conv_forward_and_backward_data_add_their_slices_in_the_same_launch(
        emulated, precision, dtype, name, x_shape, w_shape, stride, pads):
    kernels = emulated(precision)
    rng = np.random.default_rng(3)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape, w_shape[:1]))
    s = kernels._conv_shape(x_shape, w_shape, stride, pads)
    if name == "conv2d_forward":  # F x N*Ho*Wo over C*kH*kW, the bias added by slice 0
        product, args = (s.F, s.N * s.Ho * s.Wo, s.patch), (x, w, b, stride, pads)
    else:  # C x N*H*W over F*kH*kW
        dy = rng.standard_normal(s.y_shape).astype(dtype)
        product, args = (s.C, s.N * s.H * s.W, s.F * s.kh * s.kw), (dy, w, x_shape, stride, pads)
    one, one_names, two, two_names = both_ways(kernels, lambda: getattr(kernels, name)(*args))
    np.testing.assert_array_equal(one, two)  # the same slices, added in the same order
    tile = kernels._tile_for(dtype, *product[:2])
    assert tile.split(*product)[0] > 1  # the case splits K
    # backward-data first copies W^T into a contiguous array (conv_weight_transpose)
    first = [f"conv_weight_transpose<{C_TYPE[dtype]}>"] if name == "conv2d_backward_data" else []
    assert one_names == first + [conv_kernel(f"{name}_split_k", tile).format(T=C_TYPE[dtype])]
    assert len(two_names) == len(first) + 2 and two_names[-1].startswith("sum_splits")
    wide = [a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args]
    np.testing.assert_allclose(one, getattr(numpy_ref, name)(*wide),
                               rtol=1e-2 if precision == "tf32" else 1e-4,
                               atol=0.1 if precision == "tf32" else 1e-3)
    assert not kernels._arrivals(1).any()  # the counters are left zero for the next launch


def test_an_unsplit_product_is_one_launch_either_way(emulated):
    kernels = emulated("fp32")
    a = np.ones((3, 4), np.float32)
    one, one_names, two, two_names = both_ways(kernels, lambda: kernels.gemm(a, a.T))
    np.testing.assert_array_equal(one, np.full((3, 3), 4, np.float32))
    assert one_names == two_names and len(one_names) == 1


@pytest.mark.parametrize("precision, dtype", CASES)
def test_a_linear_layer_adds_its_bias_in_the_gemm_epilogue(emulated, precision, dtype):
    kernels = emulated(precision)
    rng = np.random.default_rng(2)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in [(70, 40), (65, 40), (65,)])
    results = []
    for in_epilogue in (True, False):
        kernels.linear_bias_in_epilogue = in_epilogue
        kernels.runtime.recorder.reset()
        y = kernels.linear_forward(x, w, b)
        results.append((y, [launch.kernel for launch in kernels.runtime.recorder.launches]))
    kernels.linear_bias_in_epilogue = True
    (fused, names), (separate, separate_names) = results
    np.testing.assert_array_equal(fused, separate)  # value + bias[col] either way
    np.testing.assert_allclose(fused, x @ w.T + b, rtol=1e-2 if precision == "tf32" else 1e-4,
                               atol=0.1)
    assert len(names) == 1 and names[0].startswith("gemm_bias")
    assert separate_names[-1].startswith("add_bias")
