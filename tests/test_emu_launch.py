"""Launching through the emulator: argument checks, launch limits, compile errors, the cache."""
from pathlib import Path

import numpy as np
import pytest

from minicnn.emu import EmulatorCompileError, EmulatorError, EmulatorRuntime, build

EMU_KERNELS = Path(__file__).parent / "emu_kernels"
GOOD_KERNEL = '#include "common.cuh"\n__global__ void twice(float* y) { y[threadIdx.x] *= 2.0f; }\n'


@pytest.fixture(scope="module")
def basics():
    return EmulatorRuntime(kernels_dir=EMU_KERNELS).module("basics.cu", ["axpy<float>", "warp_sum<float>",
                                                                     "histogram"])


@pytest.fixture
def axpy(basics):
    return basics.get_function("axpy<float>")


def axpy_args(**changes):
    args = dict(a=np.float32(2), x=np.ones(8, np.float32), y=np.ones(8, np.float32), n=np.int32(8))
    args.update(changes)
    return tuple(args.values())


def test_runtime_contract(axpy):
    runtime = EmulatorRuntime(kernels_dir=EMU_KERNELS)
    assert runtime.name == "emu" and runtime.xp is np
    args = axpy_args()
    axpy((1,), (32,), args)
    np.testing.assert_array_equal(args[2], np.full(8, 3, np.float32))


@pytest.mark.parametrize("changes, message", [
    (dict(n=np.int64(8)), r"argument 3: the kernel's parameter is int32 \(4 bytes\) but int64 \(8 bytes\) was passed"),
    (dict(n=np.float32(8)), r"argument 3: the kernel's parameter is int32 \(4 bytes\) but float32 \(4 bytes\)"),
    (dict(n=np.uint32(8)), r"argument 3: the kernel's parameter is int32 .* but uint32"),
    (dict(x=np.ones(8)), r"argument 1: the kernel's parameter points to float32 but a float64 array was passed"),
    (dict(a=np.ones(1, np.float32)), r"argument 0: the kernel's parameter is float32 \(4 bytes\) but an array"),
    (dict(x=np.float32(1)), r"argument 1: the kernel's parameter is a pointer but a float32 scalar"),
])
def test_argument_type_mismatches_are_errors(axpy, changes, message):
    with pytest.raises(EmulatorError, match=r"kernel axpy<float>: " + message):
        axpy((1,), (32,), axpy_args(**changes))


def test_argument_count_is_checked(axpy):
    with pytest.raises(EmulatorError, match="takes 4 arguments but 3 were passed"):
        axpy((1,), (32,), axpy_args()[:3])


@pytest.mark.parametrize("value", [8, 2.0, True, [1.0]])
def test_python_numbers_are_rejected_because_their_c_type_is_ambiguous(axpy, value):
    with pytest.raises(TypeError, match="argument 3 .* np.int32"):
        axpy((1,), (32,), axpy_args(n=value))


def test_non_contiguous_arrays_are_rejected(axpy):
    with pytest.raises(ValueError, match="argument 1 must be a C-contiguous array"):
        axpy((1,), (32,), axpy_args(x=np.ones(16, np.float32)[::2]))


@pytest.mark.parametrize("grid, block, shared_mem, message", [
    ((1,), (1025,), 0, r"block\[0\] must be in \[1, 1024\], got 1025"),
    ((1,), (32, 32, 2), 0, r"block \(32, 32, 2\) has more than 1024 threads"),
    ((1,), (1, 1, 65), 0, r"block\[2\] must be in \[1, 64\]"),
    ((0,), (32,), 0, r"grid\[0\] must be in \[1, "),
    ((1, 2, 3, 4), (32,), 0, "grid must be a tuple of 1 to 3 ints"),
    ((1,), (32.0,), 0, "block must be a tuple of 1 to 3 ints"),
    ((1,), (32,), 48 * 1024 + 1, r"shared_mem must be an int in \[0, 49152\]"),
])
def test_launch_configuration_is_validated(axpy, grid, block, shared_mem, message):
    with pytest.raises(ValueError, match=message):
        axpy(grid, block, axpy_args(), shared_mem=shared_mem)


def test_shuffle_from_a_lane_that_does_not_exist(basics):
    """48 threads: the second warp has 16 lanes, so a full-mask reduction reads missing lanes."""
    x, out = np.ones(48, np.float32), np.zeros(1, np.float32)
    with pytest.raises(EmulatorError, match=r"thread \(32,0,0\): __shfl_down_sync reads lane 16, which is not "
                                            r"in the mask or does not exist"):
        basics.get_function("warp_sum<float>")((1,), (48,), (x, out, np.int32(48)))


def test_atomics_are_bounds_checked_too(basics):
    """A value outside [0, bins) makes the histogram count past its shared-memory bins."""
    values, counts = np.array([1, 2, 40], np.int32), np.zeros(37, np.uint32)
    with pytest.raises(EmulatorError, match=r"out-of-bounds shared atomic update of 4 bytes by thread \(2,0,0\) "
                                            r"at byte 160 of dynamic shared memory \(shared_mem=148 bytes\), "
                                            r"12 bytes past its end"):
        basics.get_function("histogram")((1,), (32,), (values, counts, np.int32(3), np.int32(37)),
                                         shared_mem=37 * 4)


def test_unknown_name_expression_and_missing_source(basics, tmp_path):
    with pytest.raises(ValueError, match="'axpy<int>' was not among the module's name_expressions"):
        basics.get_function("axpy<int>")
    with pytest.raises(FileNotFoundError, match="nope.cu does not exist"):
        EmulatorRuntime(kernels_dir=tmp_path).module("nope.cu", ["k"])
    with pytest.raises(ValueError, match="schedule must be one of"):
        EmulatorRuntime(schedule="random")


def test_compile_error_shows_file_and_line(tmp_path):
    (tmp_path / "broken.cu").write_text('#include "common.cuh"\n\n'
                                        "__global__ void broken(float* y) { y[0] = undefined_name; }\n")
    with pytest.raises(EmulatorCompileError, match=r"broken.cu:3:\d+: error: 'undefined_name' was not declared"):
        EmulatorRuntime(kernels_dir=tmp_path, cache_dir=tmp_path / "cache").module("broken.cu", ["broken"])


def test_kernels_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICNN_KERNELS_DIR", str(tmp_path))
    assert EmulatorRuntime().kernels_dir == tmp_path
    assert EmulatorRuntime(kernels_dir=EMU_KERNELS).kernels_dir == EMU_KERNELS


def test_compiled_library_is_reused_from_disk_until_the_source_changes(tmp_path, monkeypatch):
    source = tmp_path / "twice.cu"
    source.write_text(GOOD_KERNEL)
    runtime = EmulatorRuntime(kernels_dir=tmp_path, cache_dir=tmp_path / "cache")
    runtime.module("twice.cu", ["twice"])

    compiles = []
    real_compiler = build._run_compiler
    monkeypatch.setattr(build, "_run_compiler", lambda args, what: compiles.append(what) or real_compiler(args, what))
    monkeypatch.setattr(build, "_loaded", {})  # a fresh process: only the disk cache remains
    y = np.ones(4, np.float32)
    runtime.module("twice.cu", ["twice"]).get_function("twice")((1,), (4,), (y,))
    assert compiles == [] and (y == 2).all()

    source.write_text(GOOD_KERNEL.replace("2.0f", "3.0f"))
    runtime.module("twice.cu", ["twice"]).get_function("twice")((1,), (4,), (y,))
    assert compiles == ["twice.cu", "twice.cu"] and (y == 6).all()  # compile + link
