"""Differentiable operations, one module per family (conv, pool, norm, activation, loss, basic).

Each module holds an op's public function (what minicnn.functional re-exports: it checks and
parses the user's arguments, then applies the Function), and its Function subclass, forward
and backward side by side. A Function calls its device's kernels (numpy_ref on the CPU, CUDA
kernels on the GPU) and keeps what its backward needs. The kernels' shape and dtype rules live
in minicnn/backends/checks.py and run before every kernel on every device.
"""
