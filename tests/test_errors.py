"""Bad calls raise a ValueError naming the op and the shapes, never an error from deep inside."""
import numpy as np
import pytest

import minicnn as mc
from minicnn import functional as F
from minicnn import nn


def x4(shape=(2, 3, 8, 8), dtype=np.float32):
    return mc.tensor(np.zeros(shape), dtype=dtype)


@pytest.mark.parametrize("call,pattern", [
    (lambda: F.conv2d(x4((3, 8, 8)), x4((4, 3, 3, 3))), r"conv2d: input must be \(N, C, H, W\), got shape \(3, 8, 8\)"),
    (lambda: F.conv2d(x4(), x4((4, 2, 3, 3))), r"conv2d: weight must be \(F, 3, kH, kW\) for input \(2, 3, 8, 8\)"),
    (lambda: F.conv2d(x4(), x4((4, 3, 3, 3)), x4((5,))), r"conv2d: bias must be \(4,\)"),
    (lambda: F.conv2d(x4(), x4((4, 3, 3, 3)), padding=-1), r"conv2d: padding must not be negative"),
    (lambda: F.conv2d(x4(), x4((4, 3, 3, 3)), padding="half"), r"conv2d: padding must be"),
    (lambda: F.conv2d(x4(), x4((4, 3, 3, 3)), stride=0), r"conv2d: stride must be a positive int"),
    (lambda: F.conv2d(x4((1, 3, 2, 2)), x4((4, 3, 5, 5))), r"conv2d: kernel 5x5 is larger than the padded input 2x2"),
    (lambda: F.conv2d(x4(), x4((4, 3, 3, 3), np.float64)), r"conv2d: mixed dtypes float32, float64"),
    (lambda: F.conv2d(mc.tensor(np.zeros((1, 3, 4, 4), np.int32)), x4((1, 3, 3, 3))), r"conv2d: input must be float32 or float64"),
    (lambda: F.max_pool2d(x4(), 3, 2, padding=3), r"max_pool2d: padding \(3, 3, 3, 3\) must be smaller than the kernel"),
    (lambda: F.avg_pool2d(x4((1, 1, 2, 2)), 3), r"avg_pool2d: kernel 3x3 is larger than the padded input 2x2"),
    (lambda: F.linear(x4((2, 5)), x4((3, 4))), r"linear: weight must be \(OUT, 5\) for input \(2, 5\)"),
    (lambda: F.cross_entropy(x4((2, 3)), np.array([0, 3])), r"cross_entropy: labels must be in \[0, 3\)"),
    (lambda: F.cross_entropy(x4((2, 3)), np.array([0, 1, 2])), r"cross_entropy: 2 logits rows but 3 labels"),
    (lambda: F.cross_entropy(x4((2, 3)), np.zeros((2, 4))), r"cross_entropy: target must be"),
    (lambda: F.add(x4((2, 3)), x4((4,))), r"add: shapes \(2, 3\) and \(4,\) do not broadcast"),
    (lambda: F.dropout(x4(), 1.0), r"dropout: rate must be in \[0, 1\)"),
    (lambda: F.batch_norm(x4((1, 3)), np.zeros(3), np.ones(3), x4((3,)), x4((3,)), True),
     r"batch_norm: training needs more than one value per channel"),
    (lambda: nn.BatchNorm2d(3)(x4((2, 3))), r"BatchNorm2d: input must have 4 dims"),
    (lambda: nn.BatchNorm2d(3, convention="caffe"), r"convention must be 'torch' or 'keras'"),
    (lambda: nn.init.weight("lecun", (3, 3)), r"unknown init 'lecun'"),
    (lambda: mc.optim.Adam([], lr=1e-3), r"Adam: got an empty parameter list"),
    (lambda: mc.get_device("tpu"), r"unknown device 'tpu'"),
])
def test_bad_calls_name_the_op_and_shapes(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_cuda_without_a_gpu_is_a_device_error(monkeypatch):
    import minicnn.backends as backends
    monkeypatch.setattr(backends, "cuda_status", lambda: (False, "CuPy sees no GPU"))
    with pytest.raises(mc.DeviceError, match="--device cuda needs a usable GPU: CuPy sees no GPU"):
        backends.get_device("cuda")


def test_auto_falls_back_to_the_cpu_with_one_line_notice(monkeypatch, capsys):
    import minicnn.backends as backends
    monkeypatch.setattr(backends, "cuda_status", lambda: (False, "CuPy is not installed"))
    assert backends.get_device("auto").name == "cpu"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no usable GPU (CuPy is not installed); using the CPU" in err
