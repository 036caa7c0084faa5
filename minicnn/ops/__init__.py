"""Differentiable operations: one Function subclass per op, forward and backward side by side.

Each Function calls its device's kernels (numpy_ref on the CPU, CUDA kernels on the GPU) and
keeps what its backward needs. Argument rules live in minicnn/backends/checks.py and run
before every kernel on every device; minicnn.functional parses the user's arguments.
"""
