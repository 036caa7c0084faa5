"""CudaKernels offers exactly numpy_ref's functions, and its launch helpers behave (no GPU needed)."""
from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest

from minicnn.backends import numpy_ref
from minicnn.backends.checks import CheckedKernels
from minicnn.backends.cuda import CudaKernels
from minicnn.backends.cuda_launch import (MIN_SPLIT_K, TARGET_BLOCKS, TILE_K, i32,
                                          reduction_slices, split_k)
from minicnn.backends.cupy_runtime import first_error


def reference_functions():
    return {name: fn for name, fn in vars(numpy_ref).items()
            if inspect.isfunction(fn) and not name.startswith("_") and fn.__module__ == numpy_ref.__name__}


def test_every_reference_function_has_a_cuda_twin_with_the_same_signature():
    functions = reference_functions()
    assert len(functions) > 20
    for name, fn in functions.items():
        assert hasattr(CudaKernels, name), f"CudaKernels lacks {name}"
        ours = inspect.signature(getattr(CudaKernels, name))
        ours = ours.replace(parameters=list(ours.parameters.values())[1:])  # drop self
        assert ours == inspect.signature(fn), f"{name}: {ours} != {inspect.signature(fn)}"


def test_cuda_kernels_exposes_the_runtime_xp():
    class FakeRuntime:
        name, xp = "fake", np

    assert CudaKernels(FakeRuntime()).xp is np


def test_importing_the_cuda_backend_does_not_import_cupy():
    code = "import sys, minicnn.backends.cuda; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("tiles, depth", [(1, 600), (1, 10), (100, 10**6), (4, 4096), (1, 0)])
def test_split_k_covers_k_exactly_once(tiles, depth):
    splits, k_chunk = split_k(tiles, depth)
    assert k_chunk % TILE_K == 0 and splits >= 1
    assert (splits - 1) * k_chunk < max(depth, 1) <= splits * k_chunk  # no empty slice
    assert splits == 1 or k_chunk >= MIN_SPLIT_K - TILE_K
    assert splits * tiles <= TARGET_BLOCKS + tiles


def test_split_k_splits_a_long_thin_product():
    assert split_k(1, 600) == (2, 304)
    assert split_k(1000, 10**6)[0] == 1  # enough tiles already


def test_reduction_slices():
    assert reduction_slices(64, 100) == 1
    assert reduction_slices(3, 8192) == 2
    assert reduction_slices(1, 10**9) == TARGET_BLOCKS


def test_sizes_beyond_int32_are_refused():
    assert i32(5, 2**31 - 1) == (np.int32(5), np.int32(2**31 - 1))
    with pytest.raises(ValueError, match="too large"):
        i32(2**31)


def test_compile_errors_name_file_and_line():
    log = "/tmp/tmpab/kern.cu(42): error: identifier \"foo\" is undefined\n1 error detected"
    assert first_error(log, "gemm.cu") == 'gemm.cu:42: error: identifier "foo" is undefined'
    assert first_error("something odd", "pool.cu") == "pool.cu: something odd"


@pytest.mark.parametrize("call, message", [
    (lambda k: k.gemm(np.ones((2, 3)), np.ones((4, 2))), "inner sizes differ"),
    (lambda k: k.relu_forward(np.ones(3, np.int64)), "float32 or float64"),
    (lambda k: k.linear_forward(np.ones((2, 3)), np.ones((4, 3), np.float32), None), "one dtype"),
    (lambda k: k.pool2d_forward(np.ones((1, 1, 4, 4)), "median", (2, 2), (2, 2), (0,) * 4),
     "pool mode"),
    (lambda k: k.conv2d_forward(np.ones((1, 2, 3, 3)), np.ones((1, 3, 3, 3)), None, (1, 1),
                                (0,) * 4), "channels"),
    (lambda k: k.conv2d_forward(np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3)), None, (1, 1),
                                (0,) * 4), "does not fit"),
    (lambda k: k.affine_warp(np.ones((2, 3, 4, 4)), np.ones((2, 2, 3)), "reflect"), "fill must be"),
    (lambda k: k.affine_warp(np.ones((2, 3, 4, 4)), np.ones((1, 2, 3)), "nearest"),
     r"inverse must have shape \(2, 2, 3\)"),
    (lambda k: k.affine_warp(np.ones((3, 4, 4)), np.ones((3, 2, 3)), "nearest"), r"\(N, C, H, W\)"),
    (lambda k: k.adjust_colour(np.ones((2, 1, 4, 4)), np.ones((2, 3))), r"need \(N, 3, H, W\)"),
    (lambda k: k.adjust_colour(np.ones((2, 3, 4, 4)), np.ones((3,))),
     r"factors must have shape \(2, 3\)"),
])
def test_bad_input_is_a_clear_value_error(call, message):
    class NoLaunchRuntime:  # validation happens before any kernel is looked up
        name, xp = "none", np

        def module(self, source, names):
            raise AssertionError("no kernel should be launched for bad input")

    with pytest.raises(ValueError, match=message):  # the rules of checks.py, as every device runs them
        call(CheckedKernels(CudaKernels(NoLaunchRuntime())))


class FakeCupy:
    """Stands in for cupy (absent in CI) to check CupyRuntime's own logic: options, one compile
    per source, errors naming file and line, argument checks."""

    class CompileException(Exception):
        pass

    class ndarray:  # noqa: N801 (cupy's name)
        def __init__(self, contiguous=True):
            self.flags = type("Flags", (), {"c_contiguous": contiguous})()

    def __init__(self):
        self.compiled, self.launches, self.cooperative = [], [], []
        self.cuda = type("cuda", (), {"compiler": type("compiler", (), {
            "CompileException": FakeCupy.CompileException})})
        fake = self

        class RawModule:
            def __init__(self, code, options, name_expressions, enable_cooperative_groups=False):
                fake.compiled.append((code, options, name_expressions))
                fake.cooperative.append(enable_cooperative_groups)
                if "BROKEN" in code:
                    raise FakeCupy.CompileException(
                        "/tmp/x/kern.cu(3): error: identifier \"BROKEN\" is undefined")

            def get_function(self, name):
                return lambda grid, block, args, shared_mem=0: fake.launches.append((name, args))

        self.RawModule = RawModule


@pytest.fixture
def fake_cupy(monkeypatch, tmp_path):
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    (tmp_path / "common.cuh").write_text("// header\n")
    (tmp_path / "ok.cu").write_text('#include "common.cuh"\n')
    (tmp_path / "bad.cu").write_text('#include "common.cuh"\n\nBROKEN\n')
    return fake, tmp_path


def test_cupy_runtime_compiles_each_source_once_with_our_options(fake_cupy):
    from minicnn.backends.cupy_runtime import CupyRuntime

    fake, kernels_dir = fake_cupy
    runtime = CupyRuntime(kernels_dir)
    assert runtime.name == "cuda" and runtime.xp is fake
    module = runtime.module("ok.cu", ["f<float>"])
    assert runtime.module("ok.cu", ["f<float>"]) is module and len(fake.compiled) == 1
    _, options, names = fake.compiled[0]
    assert "-std=c++17" in options and f"-I{kernels_dir}" in options and names == ["f<float>"]
    kernel = module.get_function("f<float>")
    kernel((1,), (32,), (FakeCupy.ndarray(), np.int32(3), np.float64(0.5)))
    assert fake.launches == [("f<float>", (fake.launches[0][1][0], np.int32(3), np.float64(0.5)))]
    with pytest.raises(TypeError, match="argument 1 is a int"):
        kernel((1,), (32,), (FakeCupy.ndarray(), 3))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernel((1,), (32,), (FakeCupy.ndarray(contiguous=False),))
    with pytest.raises(ValueError, match="not among"):
        module.get_function("g<float>")


def test_a_cooperative_module_is_compiled_for_cooperative_launches(fake_cupy):
    """CuPy then launches its kernels with cuLaunchCooperativeKernel (grid_sync.cuh)."""
    from minicnn.backends.cupy_runtime import CupyRuntime

    fake, kernels_dir = fake_cupy
    runtime = CupyRuntime(kernels_dir)
    runtime.module("ok.cu", ["f<float>"])
    runtime.module("ok.cu", ["g<float>"], cooperative=True)
    assert fake.cooperative == [False, True]


def test_cupy_runtime_compile_error_names_file_and_line(fake_cupy):
    from minicnn.backends.cupy_runtime import CupyRuntime, KernelCompileError

    runtime = CupyRuntime(fake_cupy[1])
    with pytest.raises(KernelCompileError, match=r"^bad\.cu:3: error: identifier \"BROKEN\""):
        runtime.module("bad.cu", ["f<float>"])
    with pytest.raises(FileNotFoundError, match="missing.cu"):
        runtime.module("missing.cu", ["f<float>"])
