"""Run the CUDA kernels in kernels/ on the CPU, with CUDA's execution model and bug checks.

    rt = EmulatorRuntime()
    relu = rt.module("elementwise.cu", ["relu_forward<float>"]).get_function("relu_forward<float>")
    relu((blocks,), (256,), (x, y, np.int32(x.size)))

Same interface as the CuPy runtime (minicnn/backends/cupy_runtime.py). How it works:

- build.py compiles the unchanged .cu file with g++, force-including cuda_emu.h (CUDA's
  built-ins for the host), into a cached shared library loaded with ctypes.
- runtime.cpp runs the grid block by block; each CUDA thread is a fiber, so threads really
  stop at __syncthreads() and warp intrinsics wait for their whole warp.
- checks.cpp sees every load and store of kernel code (through -fsanitize=thread hooks) and
  reports out-of-bounds accesses, shared-memory races, reads of unwritten shared memory,
  barrier and warp divergence; cuda_emu.h checks argument types against the kernel's.
Any of these raises EmulatorError naming the kernel, block and thread.
"""
from minicnn.emu.errors import EmulatorCompileError, EmulatorError
from minicnn.emu.runtime import EmulatorRuntime

__all__ = ["EmulatorRuntime", "EmulatorError", "EmulatorCompileError"]
