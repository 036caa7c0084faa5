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
