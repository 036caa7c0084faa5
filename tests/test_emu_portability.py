"""The emulator's test kernels compile both ways: nvcc for the GPU and g++ for the emulator,
so they (and kernels/common.cuh, which they include) are valid CUDA. The real kernels in
kernels/ get the same checks in tests/test_kernels_compile.py and tests/test_kernels_emu.py.

Kernels are found by pattern; `template <typename T>` kernels are instantiated for float and
double, as the backends do through name expressions (other templates are left to their tests).
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from minicnn.emu import EmulatorRuntime

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "tests" / "emu_kernels").glob("*.cu"))
KERNEL = re.compile(r"(?:template\s*<([^>]*)>\s*)?__global__\s+void\s+"
                    r"(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(")


def name_expressions(source_text: str) -> list[str]:
    names = []
    for parameters, name in KERNEL.findall(source_text):
        if not parameters:
            names.append(name)
        elif re.fullmatch(r"\s*typename\s+\w+\s*", parameters):
            names += [f"{name}<float>", f"{name}<double>"]
    return names


def test_kernel_pattern_finds_template_and_plain_kernels():
    text = ("template <typename T>\n__global__ void scale(T* x) {}\n"
            "__global__ void __launch_bounds__(256) fill(float* x) {}\n"
            "template <typename T, bool B>\n__global__ void other(T* x) {}\n")
    assert name_expressions(text) == ["scale<float>", "scale<double>", "fill"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_nvcc_compiles_without_warnings(source, tmp_path):
    """Taking each kernel's address instantiates it, like CuPy's name_expressions."""
    names = name_expressions(source.read_text())
    if not names:
        pytest.skip(f"no kernel in {source.name} with a pattern this test can instantiate")
    entries = ", ".join(f"(void*)&{name}" for name in names)
    wrapper = tmp_path / f"nvcc_{source.name}"
    wrapper.write_text(f'#include "{source.name}"\nextern void* const entries[];\n'
                       f"void* const entries[] = {{{entries}}};\n")
    result = subprocess.run(["nvcc", "-ptx", "-arch=sm_90", "-Werror", "all-warnings",
                             f"-I{REPO / 'kernels'}", f"-I{source.parent}", str(wrapper),
                             "-o", str(tmp_path / "out.ptx")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.ptx").read_text().count(".entry") == len(names)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_emulator_compiles_every_kernel(source):
    names = name_expressions(source.read_text())
    if not names:
        pytest.skip(f"no kernel in {source.name} with a pattern this test can instantiate")
    module = EmulatorRuntime(kernels_dir=source.parent).module(source.name, names)
    assert [module.get_function(name).name for name in names] == names
    with pytest.raises(ValueError, match="not among"):
        module.get_function("no_such_kernel")
