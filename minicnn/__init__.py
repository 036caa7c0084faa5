"""minicnn: a small CNN framework to see inside, with NumPy and hand-written CUDA backends.

    import minicnn as mc
    from minicnn import nn, functional as F, optim
    x = mc.tensor(images, requires_grad=True)     # (N, C, H, W), float32 by default
"""
from minicnn import functional, nn, optim
from minicnn.autograd import Function, Tensor, no_grad, tensor
from minicnn.backends import Device, DeviceError, cuda_status, get_device
from minicnn.random import manual_seed

__version__ = "0.1.0"
__all__ = ["Tensor", "Function", "tensor", "no_grad", "nn", "functional", "optim", "Device",
           "DeviceError", "get_device", "cuda_status", "manual_seed", "__version__"]
