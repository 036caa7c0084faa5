"""Run the CUDA kernels in kernels/ on the CPU, with CUDA's execution model and bug checks.

    rt = EmulatorRuntime()
    relu = rt.module("elementwise.cu", ["relu_forward<float>"]).get_function("relu_forward<float>")
    relu((blocks,), (256,), (x, y, np.int32(x.size)))

Same interface as the CuPy runtime (minicnn/backends/cuda.py); see runtime.py.
"""
from minicnn.emu.errors import EmulatorCompileError, EmulatorError
from minicnn.emu import build
from minicnn.emu.runtime import EmulatorRuntime

__all__ = ["EmulatorRuntime", "EmulatorError", "EmulatorCompileError"]
