"""Module: a named, nestable container of parameters, buffers and sub-modules.

Like PyTorch's nn.Module: assigning a Parameter, a Module or a registered buffer to an attribute
registers it; `parameters()`, `state_dict()`, `to()`, `train()`/`eval()` walk the tree.
Every module has a `name` (conv1, bn2, fc1 ...), so a layer can be addressed from the command
line (`--layer conv1`); `named_modules()` yields dotted paths for nested blocks (block1.conv2).
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict, namedtuple

import numpy as np

from minicnn.autograd import Tensor
from minicnn.backends import get_device, to_host


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter(Tensor):
    """A Tensor that a Module trains: requires_grad is always on."""

    def __init__(self, data, device=None):
        super().__init__(data, get_device(device or "cpu"), requires_grad=True)


class Module:
    kind = "module"  # the stem of automatic names: conv -> conv1, conv2, ...

    def __init__(self, name: str | None = None):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_hooks", {})
        self.name = name
        self.training = True

    def __setattr__(self, key, value):
        if key in self._buffers and value is not None:  # e.g. `self.step += 1` on a buffer
            self._buffers[key] = value
            object.__setattr__(self, key, value)
            return
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(key, None)
        if isinstance(value, Parameter):
            self._parameters[key] = value
        elif isinstance(value, Module):
            self._modules[key] = value
            if value.name is None:
                value.name = key
        object.__setattr__(self, key, value)

    def register_buffer(self, key, array):
        """State that is saved and moved with the module but not trained (BN running stats)."""
        self._buffers[key] = array
        object.__setattr__(self, key, array)

    # ---- running
    def forward(self, *args):
        raise NotImplementedError

    def __call__(self, *args):
        out = self.forward(*args)
        for hook in list(self._hooks.values()):
            hook(self, args, out)
        return out

    def register_forward_hook(self, hook):
        """hook(module, inputs, output) after every forward; returns a handle with .remove()."""
        key = object()
        self._hooks[key] = hook

        class Handle:
            def remove(_):
                self._hooks.pop(key, None)
        return Handle()

    def train(self, mode=True):
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    # ---- walking the tree
    def named_modules(self, prefix=""):
        """(path, module) for this module and every descendant; the root's path is ''."""
        yield prefix, self
        for key, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{key}" if prefix else key)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def children(self):
        return list(self._modules.values())

    def named_parameters(self):
        for path, module in self.named_modules():
            for key, p in module._parameters.items():
                yield (f"{path}.{key}" if path else key), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for path, module in self.named_modules():
            for key, b in module._buffers.items():
                yield (f"{path}.{key}" if path else key), b

    def get_layer(self, name: str) -> "Module":
        """A layer by dotted path (block1.conv2) or by its name (conv1), else a clear error."""
        table = {path: module for path, module in self.named_modules() if path}
        if name in table:
            return table[name]
        by_name = [m for m in table.values() if m.name == name]
        if len(by_name) == 1:
            return by_name[0]
        raise ValueError(f"unknown layer {name!r}; layers are: {', '.join(table)}")

    # ---- state
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Host copies of every parameter and buffer, by dotted path."""
        state = OrderedDict((k, p.numpy().copy()) for k, p in self.named_parameters())
        for key, buffer in self.named_buffers():
            state[key] = np.array(to_host(buffer))
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays into this module's parameters and buffers (in place, on their device).

        Mismatched names (with strict) or shapes raise one ValueError naming the first five and how
        many there are in all.
        Returns (missing_keys, unexpected_keys), as PyTorch does.
        """
        own = dict(self.named_parameters())
        own.update(self.named_buffers())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        problems = [f"{k}: checkpoint {tuple(np.shape(state[k]))} vs model {tuple(t.shape)}"
                    for k, t in own.items() if k in state and tuple(np.shape(state[k])) != tuple(t.shape)]
        problems += [f"missing {k}" for k in missing if strict]
        problems += [f"unexpected {k}" for k in unexpected if strict]
        if problems:  # the first few make the cause plain; all of a VGG's would fill a screen
            more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
            raise ValueError(f"state does not fit this model ({len(problems)} mismatches): "
                             + "; ".join(problems[:5]) + more)
        for key, target in own.items():
            if key in state:
                array = target.data if isinstance(target, Tensor) else target
                array[...] = _to_array_module(state[key], array)
        return IncompatibleKeys(missing, unexpected)

    def to(self, device=None, dtype=None):
        """Move (and/or cast) every parameter and buffer. Returns self."""
        device = get_device(device) if device is not None else None
        for module in self.modules():
            for p in module._parameters.values():  # in place, so optimizers keep their references
                moved = p.to(device) if device is not None else p
                p.data, p.device, p.grad = moved.data, moved.device, None
                if dtype is not None:
                    p.data = p.data.astype(dtype)
            for key, b in module._buffers.items():
                if b.dtype.kind != "f":
                    continue  # integer counters (dropout seed/step) stay on the host
                if device is not None:
                    b = device.asarray(b)
                if dtype is not None:
                    b = b.astype(dtype)
                module.register_buffer(key, b)
        return self

    def zero_grad(self, set_to_none=True):
        """Forget the gradients (set_to_none) or set them to zero (PyTorch's choice of the two)."""
        for p in self.parameters():
            p.grad = None if set_to_none or p.grad is None else p.device.xp.zeros_like(p.grad)

    # ---- reading
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        head = f"{type(self).__name__}({self.extra_repr()})"
        if not self._modules:
            return f"{self.name}: {head}" if self.name else head
        body = "\n".join("  " + line for child in self._modules.values() for line in repr(child).splitlines())
        return f"{head} [\n{body}\n]"


def _to_array_module(value, like):
    """value as an array of `like`'s kind (numpy or cupy)."""
    if isinstance(like, np.ndarray):
        return np.asarray(value)
    import cupy
    return cupy.asarray(value)


@contextlib.contextmanager
def capture(model: Module, names):
    """Record the outputs of the named layers during the block; hooks are removed on exit.

        with capture(model, ["conv1", "fc1"]) as outputs:
            model(x)
        outputs["conv1"]  # a Tensor (N, C, H, W), still part of the graph

    Removing the hooks on exit (even after an error) is what keeps captured activations from
    leaking memory across calls.
    """
    outputs = {}
    handles = []
    for name in names:
        layer = model.get_layer(name)
        handles.append(layer.register_forward_hook(
            lambda module, inputs, output, name=name: outputs.__setitem__(name, output)))
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
