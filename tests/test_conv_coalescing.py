"""The conv kernels' global loads are coalesced (issue 11): backward-data's transposed copy of
the weights, and each pass's loads counted by the emulator on a vgg-like layer."""
import numpy as np
import pytest

from minicnn.backends import numpy_ref
from minicnn.backends.kernel_facts import weight_transpose_launch
from minicnn.backends.recording import Recorder
from minicnn.profile.measure import CountInEmulator


@pytest.fixture(scope="module")
def counted():
    """precision -> (recorder, kernels) whose launches run in the emulator with every block counted."""
    made = {}

    def make(precision):
        if precision not in made:
            recorder = Recorder(execute=CountInEmulator("all"))
            made[precision] = recorder, recorder.device("emu", precision).kernels
        return made[precision]
    return make


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("w_shape", [(37, 19, 3, 3), (5, 150, 1, 1), (20, 3, 5, 5), (3, 2, 7, 7)])
def test_weight_transpose_is_exact_on_odd_tiles(counted, w_shape, dtype):
    _, kernels = counted("fp32")
    w = np.random.default_rng(0).standard_normal(w_shape).astype(dtype)
    np.testing.assert_array_equal(kernels._conv_weight_transpose(w), w.transpose(1, 0, 2, 3))


def test_weight_transpose_reads_and_writes_whole_sectors(counted):
    recorder, kernels = counted("fp32")
    w = np.random.default_rng(1).standard_normal((64, 64, 3, 3)).astype(np.float32)
    kernels._conv_weight_transpose(w)
    c = recorder.launches[-1].counters
    assert recorder.launches[-1].family == "conv_weight_transpose"
    assert c.efficiency("global", "load") == c.efficiency("global", "store") == 1.0
    # padded shared rows, and each warp within one row of the tile: conflict-free (it was 1280
    # wavefronts for 1152 ideal when a warp could cross rows, one in nine of them)
    assert c.total("shared", None, "units") == c.total("shared", None, "ideal_units") > 0


def test_weight_transpose_refuses_kernels_larger_than_its_tile():
    assert weight_transpose_launch(64, 64, 9) == ((4, 4), (256,), (16, 16))
    with pytest.raises(ValueError, match="at most 2304 cells"):
        weight_transpose_launch(4, 4, 49 * 49)


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_conv_passes_load_at_least_90_percent_coalesced(counted, precision):
    """A 64-channel 3 x 3 layer on 16 x 16 images: forward, backward-data (with its weight
    transpose) and backward-weight, each >= 90% of its sectors useful (backward-data was 75%
    reading W in place), and each equal to the reference."""
    recorder, kernels = counted(precision)
    rng = np.random.default_rng(2)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 64, 16, 16), (64, 64, 3, 3), (64,)))
    dy = rng.standard_normal((2, 64, 16, 16)).astype(np.float32)
    stride, pads = (1, 1), (1, 1, 1, 1)
    tolerance = {"fp32": 1e-4, "tf32": 2e-2, "bf16": 1e-1}[precision]
    for name, args in (("conv2d_forward", (x, w, b, stride, pads)),
                       ("conv2d_backward_data", (dy, w, x.shape, stride, pads)),
                       ("conv2d_backward_weight", (dy, x, (3, 3), stride, pads))):
        first = len(recorder.launches)
        out = getattr(kernels, name)(*args)
        expected = getattr(numpy_ref, name)(*[a.astype(np.float64) if isinstance(a, np.ndarray) else a
                                              for a in args])
        np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())
        launches = recorder.launches[first:]
        ideal, units = (sum(r.counters.total("global", "load", f) for r in launches) for f in ("ideal_units", "units"))
        assert ideal / units >= 0.9, (name, precision, ideal / units, [r.kernel for r in launches])
