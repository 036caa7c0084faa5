"""Every kernels/*.cu compiles with nvcc for the GPUs we target, with no error and no warning.

Each source is compiled with every instantiation CudaKernels launches (cuda_launch.KERNELS),
since template kernels are only type-checked once instantiated. This is the check CI can do
without a GPU; the emulator tests check what the kernels compute.
"""
from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from minicnn.backends.cuda_launch import KERNELS, expand
from minicnn.backends.cupy_runtime import KERNELS_DIR

ARCHS = ("sm_80", "sm_90")
NVCC = shutil.which("nvcc")


def test_every_source_is_in_the_kernel_table():
    sources = {p.name for p in KERNELS_DIR.glob("*.cu")}
    assert sources == set(KERNELS), "kernels/*.cu and cuda_launch.KERNELS must list the same files"


def instantiating_source(source: str) -> str:
    """A translation unit that includes `source` and takes the address of every kernel
    instantiation CudaKernels uses, which forces nvcc to compile each one."""
    names = [name for expression in KERNELS[source] for name in expand(expression)]
    return "\n".join([f'#include "{source}"', "void* minicnn_instances[] = {",
                      *(f"    (void*)&{name}," for name in names), "};", ""])


def compile_ptx(source: str, arch: str, workdir: Path) -> tuple[str, int, str]:
    unit = workdir / f"instances_{arch}_{source}"
    unit.write_text(instantiating_source(source))
    result = subprocess.run(
        [NVCC, "-ptx", f"-arch={arch}", "-std=c++17", f"-I{KERNELS_DIR}", "-Werror",
         "all-warnings", str(unit), "-o", str(unit.with_suffix(".ptx"))],
        capture_output=True, text=True, timeout=300)
    return f"{source} ({arch})", result.returncode, (result.stdout + result.stderr).strip()


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed: cannot compile the kernels")
def test_kernels_compile_without_warnings(tmp_path):
    jobs = [(source, arch) for source in KERNELS for arch in ARCHS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda job: compile_ptx(*job, tmp_path), jobs))
    failures = [f"{what}: exit {code}\n{output}" for what, code, output in results if code or output]
    assert not failures, "\n\n".join(failures)


def _nvrtc():
    """CuPy's NVRTC binding, when CuPy and an NVRTC library are installed (no GPU needed)."""
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception:  # ImportError, or the library itself missing
        return None
    return nvrtc


@pytest.mark.skipif(_nvrtc() is None, reason="CuPy's NVRTC is not installed: CupyRuntime's compiler "
                                             "cannot be tried here (nvcc checks the sources above)")
def test_kernels_compile_with_nvrtc_as_cupy_loads_them():
    """The path CupyRuntime takes: NVRTC, which has no system headers and warns on things nvcc
    lets pass; every name expression must lower to a kernel symbol."""
    nvrtc = _nvrtc()
    problems = []
    for source in KERNELS:
        names = [name for expression in KERNELS[source] for name in expand(expression)]
        program = nvrtc.createProgram((KERNELS_DIR / source).read_text(), source, [], [])
        for name in names:
            nvrtc.addNameExpression(program, name)
        try:
            nvrtc.compileProgram(program, ["-std=c++17", f"-I{KERNELS_DIR}", "-arch=compute_80"])
            assert all(nvrtc.getLoweredName(program, name) for name in names)
        except Exception as error:
            problems.append(f"{source}: {error}")
        log = nvrtc.getProgramLog(program).strip()
        if log:
            problems.append(f"{source}: {log}")
    assert not problems, "\n\n".join(problems)
