"""Devices: where arrays live and which kernels run on them.

A `Device` bundles two things every op needs:

    xp       the array module (numpy or cupy) used for glue: allocation, reshapes, views
    kernels  the compute functions (conv2d_forward, batch_norm_backward, ...)

There are three devices:

    cpu   xp = numpy, kernels = minicnn.backends.numpy_ref  (the readable reference)
    cuda  xp = cupy,  kernels = our CUDA kernels launched through CuPy
    emu   xp = numpy, kernels = the same CUDA kernels run by the CPU emulator (minicnn.emu)

Ops never ask "am I on a GPU?": they call `device.kernels.<name>(...)`, and every kernel set has
the same function names and signatures as numpy_ref. That is the one seam where CUDA plugs in.
Every kernel set is wrapped in checks.CheckedKernels, so the same argument rules (the one
validator, minicnn/backends/checks.py) run before either backend computes.
CuPy is imported only when a GPU device is asked for, so CPU-only installs never need it.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from minicnn.backends.checks import CheckedKernels

DEVICE_NAMES = ("auto", "cpu", "cuda", "emu")


def to_host(array) -> np.ndarray:
    """A NumPy view of a NumPy array, or a host copy of a CuPy one."""
    return array.get() if hasattr(array, "get") else np.asarray(array)


class DeviceError(ValueError):
    """A device was asked for that cannot be used here."""


@dataclass(frozen=True)
class Device:
    name: str
    xp: ModuleType
    kernels: object

    def __repr__(self) -> str:
        return f"Device({self.name!r})"

    def asarray(self, array, dtype=None):
        """Copy host or device data onto this device (no copy if it is already here)."""
        if self.xp is np:
            array = to_host(array)  # a CuPy array coming back to the host
        return self.xp.asarray(array, dtype=dtype)


def cuda_status() -> tuple[bool, str]:
    """(usable, reason): whether CuPy is installed and sees a working GPU, and why not."""
    try:
        import cupy
    except ImportError:
        return False, "CuPy is not installed (pip install 'minicnn[cuda]')"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CuPy raises several driver/runtime error types
        return False, f"CuPy found no usable GPU ({type(error).__name__}: {error})".splitlines()[0]
    if count == 0:
        return False, "CuPy sees no GPU"
    return True, f"CuPy {cupy.__version__} sees {count} GPU(s)"


@functools.cache
def _cpu() -> Device:
    from minicnn.backends import numpy_ref
    return Device("cpu", np, CheckedKernels(numpy_ref))


@functools.cache
def _cuda() -> Device:
    import cupy
    from minicnn.backends.cuda import CudaKernels, CupyRuntime
    return Device("cuda", cupy, CheckedKernels(CudaKernels(CupyRuntime())))


@functools.cache
def _emu() -> Device:
    from minicnn.backends.cuda import CudaKernels
    from minicnn.emu import EmulatorRuntime
    return Device("emu", np, CheckedKernels(CudaKernels(EmulatorRuntime())))


def get_device(spec: "str | Device" = "cpu", *, quiet: bool = False) -> Device:
    """Resolve 'auto' | 'cpu' | 'cuda' | 'emu' (or a Device) to a Device.

    'auto' picks the GPU when CuPy sees one, otherwise the CPU with a one-line notice;
    'cuda' without a usable GPU is a DeviceError saying why.
    """
    if isinstance(spec, Device):
        return spec
    name = str(spec).lower()
    if name not in DEVICE_NAMES:
        raise DeviceError(f"unknown device {spec!r}: choose one of {', '.join(DEVICE_NAMES)}")
    if name == "cpu":
        return _cpu()
    if name == "emu":
        return _emu()
    usable, reason = cuda_status()
    if name == "cuda":
        if not usable:
            raise DeviceError(f"--device cuda needs a usable GPU: {reason}")
        return _cuda()
    if usable:
        return _cuda()
    if not quiet:
        print(f"minicnn: no usable GPU ({reason}); using the CPU", file=sys.stderr)
    return _cpu()
