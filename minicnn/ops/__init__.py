"""Differentiable operations, one module per family (conv, pool, norm, activation, loss, basic).

Each module holds an op's public function (what minicnn.functional re-exports: it checks and
parses the user's arguments, then applies the Function), and its Function subclass, forward
and backward side by side. A Function calls its device's kernels (numpy_ref on the CPU, CUDA
kernels on the GPU) and keeps what its backward needs. Before each kernel call its forward
runs that kernel's shape and dtype rule from minicnn/backends/checks.py (`checks.<kernel
name>`), so the rules are the same on every device and are not one more layer on the way
from an op to its kernel.
"""
