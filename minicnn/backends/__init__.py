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
`device.kernels` is the kernel set itself, so an op's forward calls numpy_ref or CudaKernels
directly; it first runs the kernel's argument rule (the one validator,
minicnn/backends/checks.py), the same on every device.
CuPy is imported only when a GPU device is asked for, so CPU-only installs never need it.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from types import ModuleType

import numpy as np

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

    @property
    def precision(self) -> str:
        """fp32, tf32 or bf16: how the CUDA kernels multiply float32 (always fp32 on the CPU)."""
        return getattr(self.kernels, "precision", "fp32")

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
    return Device("cpu", np, numpy_ref)


@functools.cache
def _cuda(precision: str) -> Device:
    import cupy
    from minicnn.backends.cuda import CudaKernels, CupyRuntime
    capability = cupy.cuda.Device().compute_capability  # "86" for 8.6
    major, minor = capability[:-1], capability[-1]
    if precision != "fp32" and int(major) < 8:
        raise DeviceError(f"--precision {precision} needs tensor cores with TF32/BF16 (compute capability "
                          f"8.0 or newer); this GPU is {major}.{minor}: use --precision fp32")
    return Device("cuda", cupy, CudaKernels(CupyRuntime(), precision))


@functools.cache
def _emu(precision: str) -> Device:
    from minicnn.backends.cuda import CudaKernels
    from minicnn.emu import EmulatorRuntime
    return Device("emu", np, CudaKernels(EmulatorRuntime(), precision))


def resolve_precision(device: str, precision: "str | None") -> str:
    """The precision for a resolved device name: None / 'auto' means tf32 on CUDA (as PyTorch's
    convolutions), fp32 on the emulator (exact against the reference) and on the CPU."""
    from minicnn.backends.precision import DEFAULT_CUDA_PRECISION, PRECISIONS
    if precision in (None, "auto"):
        return DEFAULT_CUDA_PRECISION if device == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if device == "cpu" and precision != "fp32":
        raise DeviceError(f"--precision {precision} changes only the CUDA kernels (--device cuda or emu); "
                          f"the CPU's NumPy backend computes in fp32")
    return precision


def get_device(spec: "str | Device" = "cpu", *, quiet: bool = False, precision: "str | None" = None) -> Device:
    """Resolve 'auto' | 'cpu' | 'cuda' | 'emu' (or a Device) to a Device.

    'auto' picks the GPU when CuPy sees one, otherwise the CPU with a one-line notice;
    'cuda' without a usable GPU is a DeviceError saying why. precision: fp32 | tf32 | bf16 for
    the CUDA kernels' float32 products (minicnn/backends/precision.py); None or 'auto': the
    device's default.
    """
    if isinstance(spec, Device):
        return spec
    name = str(spec).lower()
    if name not in DEVICE_NAMES:
        raise DeviceError(f"unknown device {spec!r}: choose one of {', '.join(DEVICE_NAMES)}")
    if name in ("cpu", "emu"):
        precision = resolve_precision(name, precision)
        return _cpu() if name == "cpu" else _emu(precision)
    usable, reason = cuda_status()
    if name == "cuda" and not usable:
        raise DeviceError(f"--device cuda needs a usable GPU: {reason}")
    if usable:
        return _cuda(resolve_precision("cuda", precision))
    if not quiet:
        print(f"minicnn: no usable GPU ({reason}); using the CPU", file=sys.stderr)
    resolve_precision("cpu", precision)  # an explicit tf32 / bf16 has no effect there: say so
    return _cpu()
