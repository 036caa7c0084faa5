"""A tiny define-by-run autograd: Tensor, Function, backward().

Calling a Function on tensors runs its `forward` on the raw arrays and, when gradients are
wanted, records the Function as the output's `creator`. `loss.backward()` then visits the
recorded graph in reverse topological order and calls each Function's `backward`, which maps
the gradient of its output to gradients of its inputs. Gradients are plain arrays (no
higher-order derivatives): that keeps the graph small and the code short.

Every Function reaches its compute through `self.kernels` (the device's kernel set), so a
Function is written once for the CPU reference and the CUDA kernels alike.
"""
from __future__ import annotations

import contextlib

import numpy as np

from minicnn.backends import Device, get_device, to_host

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Run without recording the graph (evaluation, optimizer steps)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


class Tensor:
    """An array plus what autograd needs: its device, its gradient and its creator.

    data: numpy or cupy array; grad: array of the same shape once backward has reached it.
    """
    __array_priority__ = 1000  # numpy scalars on the left defer to Tensor's operators

    def __init__(self, data, device: Device, requires_grad=False, creator=None):
        self.data = data
        self.device = device
        self.requires_grad = requires_grad
        self.creator = creator
        self.grad = None
        self.retains_grad = False

    # ---- array-like views
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"tensor(shape={self.shape}, dtype={self.dtype}, device={self.device.name}{grad})"

    def numpy(self) -> np.ndarray:
        """A host copy (or the array itself on the CPU)."""
        return to_host(self.data)

    def item(self) -> float:
        return float(self.numpy())

    def to(self, device) -> "Tensor":
        device = get_device(device)
        if device is self.device:
            return self
        return Tensor(device.asarray(self.data), device, self.requires_grad)

    def zero_grad(self):
        self.grad = None

    def retain_grad(self) -> "Tensor":
        """Keep this intermediate tensor's gradient after backward (Grad-CAM reads it)."""
        self.retains_grad = True
        return self

    # ---- autograd
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf tensor with requires_grad.

        grad defaults to 1 for a scalar: its creator's backward_from_seed() then starts the
        pass, so a Function that already has that gradient launches nothing to make a 1 and use
        it. Intermediate gradients are freed as soon as they have been used; leaf gradients add
        up across calls until zero_grad().
        """
        seeded = grad is None and not self.retains_grad
        if grad is None:
            if self.size != 1:
                raise ValueError(f"backward() without a gradient needs a scalar, got shape {self.shape}")
            grad = None if seeded else self.device.xp.ones_like(self.data)
        grads = {id(self): grad}
        for function in _topological_order(self):
            output = getattr(function, "output", None)
            if output is None:
                raise RuntimeError("backward() through a graph that was already freed: "
                                   "pass retain_graph=True to the first backward()")
            if seeded and output is self:
                dinputs = function.backward_from_seed()
            else:
                dout = grads.pop(id(output), None)
                if dout is None:
                    continue
                if output.retains_grad:  # every consumer has run by now: dout is complete
                    output.grad = dout
                dinputs = function.backward(dout)
            if not isinstance(dinputs, tuple):
                dinputs = (dinputs,)
            for tensor, dinput in zip(function.inputs, dinputs):
                if dinput is None or not tensor.requires_grad:
                    continue
                if tensor.creator is None:  # a leaf: keep its gradient
                    tensor.grad = _accumulate(tensor.grad, dinput, tensor.device)
                else:
                    grads[id(tensor)] = _accumulate(grads.get(id(tensor)), dinput, tensor.device)
            if not retain_graph:
                function.release()

    # ---- operators, so that `a + b`, `a * b`, `-a` read naturally in model code: each is an op
    # of minicnn.ops.basic (numbers on the left become tensors of the right operand's kind)
    def __add__(self, other):
        return _basic_ops().add(self, other)

    def __radd__(self, other):
        return _basic_ops().add(other, self)

    def __mul__(self, other):
        return _basic_ops().mul(self, other)

    def __rmul__(self, other):
        return _basic_ops().mul(other, self)

    def __neg__(self):
        return _basic_ops().mul(self, -1.0)

    def __sub__(self, other):
        return _basic_ops().add(self, -other if isinstance(other, Tensor) else -np.asarray(other))

    def __rsub__(self, other):
        return _basic_ops().add(other, -self)

    def reshape(self, *shape):
        return _basic_ops().reshape(self, shape[0] if len(shape) == 1 else shape)

    def sum(self, dim=None, keepdim=False, **numpy_names):
        """PyTorch's (dim, keepdim); NumPy's axis= / keepdims= work too."""
        return _basic_ops().sum(self, dim, keepdim, **numpy_names)

    def mean(self, dim=None, keepdim=False, **numpy_names):
        return _basic_ops().mean(self, dim, keepdim, **numpy_names)


def _basic_ops():
    """minicnn.ops.basic (add, mul, reshape, sum, mean), imported on first use: it imports
    this module."""
    from minicnn.ops import basic
    return basic


def _accumulate(total, grad, device):
    """total + grad (a tensor used twice gets both gradients), added by the device's kernel."""
    return grad if total is None else device.kernels.add_forward(total, grad)


def _topological_order(root: Tensor):
    """Functions that produced `root`, each after every Function that consumes its output."""
    order, seen = [], set()
    stack = [(root.creator, False)] if root.creator else []
    while stack:  # iterative DFS: deep networks would overflow Python's recursion limit
        function, expanded = stack.pop()
        if expanded:
            order.append(function)
            continue
        if id(function) in seen:
            continue
        seen.add(id(function))
        stack.append((function, True))
        for tensor in function.inputs:
            if tensor.creator is not None and id(tensor.creator) not in seen:
                stack.append((tensor.creator, False))
    return reversed(order)


class Function:
    """One differentiable operation. Subclasses define forward(*arrays) and backward(dout).

    forward receives raw arrays and returns one array; anything backward needs is kept on
    self (name it after what it is: self.mask, self.rstd). backward returns one gradient
    array per input (None for an input that needs none), as a tuple when there are several.
    """

    def __call__(self, *inputs: Tensor) -> Tensor:
        for tensor in inputs:
            if not isinstance(tensor, Tensor):
                raise ValueError(f"{type(self).__name__}: inputs must be minicnn Tensors, "
                                 f"got {type(tensor).__name__}")
        device = inputs[0].device
        for tensor in inputs[1:]:
            if tensor.device is not device:
                raise ValueError(f"{type(self).__name__}: inputs on different devices "
                                 f"({device.name} and {tensor.device.name})")
        self.device = device
        self.xp = device.xp
        self.kernels = device.kernels
        self.needs_grad = tuple(t.requires_grad for t in inputs)
        self.records = record = _grad_enabled and any(self.needs_grad)  # forward may ask
        # asarray: NumPy reductions return scalars, and a Tensor always holds an array
        data = self.xp.asarray(self.forward(*(t.data for t in inputs)))
        output = Tensor(data, device, requires_grad=record, creator=self if record else None)
        if record:
            self.inputs = inputs
            self.output = output
        return output

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def backward_from_seed(self):
        """backward(1) for the graph's scalar output, which Tensor.backward() seeds with 1."""
        return self.backward(self.xp.ones_like(self.output.data))

    def release(self):
        """Drop the graph links and saved arrays once backward has used them."""
        self.__dict__.clear()
        self.inputs = ()


def tensor(data, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    """Make a Tensor from array-like data. Floating data defaults to float32."""
    device = get_device(device)
    if isinstance(data, Tensor):
        data = data.numpy()
    if dtype is None:  # float data becomes float32; integer labels keep their type
        kind = data.dtype.kind if hasattr(data, "dtype") else np.asarray(data).dtype.kind
        dtype = np.float32 if kind == "f" else None
    return Tensor(device.asarray(data, dtype=dtype), device, requires_grad=requires_grad)
