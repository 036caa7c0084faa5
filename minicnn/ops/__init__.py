"""Differentiable operations: one Function subclass per op, forward and backward side by side.

Each Function calls its device's kernels (numpy_ref on the CPU, CUDA kernels on the GPU) and
keeps what its backward needs. Argument checking lives one level up, in minicnn.functional.
"""
