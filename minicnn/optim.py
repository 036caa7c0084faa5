"""Optimizers: Adam (and AdamW) and SGD with momentum / Nesterov.

The update itself is a device kernel (adam_update / sgd_update): the NumPy reference on the
CPU; on the GPU (and the emulator) one launch updates every parameter, reading each tensor's
address from a table in device memory, in one pass over the optimizer state (optim.cu versions
2 and 3; Adam's launch also advances the step and bias corrections on the device).
This file only keeps the state (moments, step count) and the hyper-parameters.
"""
from __future__ import annotations

import numpy as np

from minicnn.backends import to_host


class Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if lr <= 0:
            raise ValueError(f"{type(self).__name__}: lr must be positive, got {lr}")
        self.lr = lr
        self.step_count = 0

    def zero_grad(self, set_to_none=True):
        """Forget the gradients (set_to_none) or set them to zero, as PyTorch's does."""
        for p in self.params:
            p.grad = None if set_to_none or p.grad is None else p.device.xp.zeros_like(p.grad)

    def step(self):
        """Update every parameter that received a gradient: one kernel-set call for all of them."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        self.step_count += 1
        kernels = self.params[live[0]].device.kernels
        self._update(kernels, live, [self.params[i].data for i in live], [self.params[i].grad for i in live])

    def _update(self, kernels, live, params, grads):
        """Apply the rule to params/grads; live holds their indices into self.params."""
        raise NotImplementedError

    def _slots(self):
        """Per-parameter state arrays, allocated once on the parameter's device."""
        return [p.device.xp.zeros_like(p.data) for p in self.params]

    def state_dict(self) -> dict:
        """Host copies of the optimizer state: {'step': n, 'lr': lr, '<slot>.<i>': array}."""
        state = {"step": self.step_count, "lr": self.lr}
        for slot in self.slot_names:
            for i, array in enumerate(getattr(self, slot)):
                state[f"{slot}.{i}"] = np.array(to_host(array))
        return state

    def load_state_dict(self, state):
        self.step_count, self.lr = int(state["step"]), float(state["lr"])
        for slot in self.slot_names:
            for i, array in enumerate(getattr(self, slot)):
                key = f"{slot}.{i}"
                if key not in state or tuple(np.shape(state[key])) != array.shape:
                    raise ValueError(f"optimizer state does not fit: {key} missing or mis-shaped")
                array[...] = self.params[i].device.asarray(state[key])


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction. weight_decay adds L2 to the gradient
    (coupled, Keras-style regularization); use AdamW for decoupled weight decay."""
    slot_names = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.exp_avg, self.exp_avg_sq = self._slots(), self._slots()

    def _update(self, kernels, live, params, grads):
        kernels.adam_update(params, grads, [self.exp_avg[i] for i in live],
                            [self.exp_avg_sq[i] for i in live], self.step_count, self.lr,
                            self.beta1, self.beta2, self.eps, self.weight_decay, self.decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p -= lr * weight_decay * p."""
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


class SGD(Optimizer):
    """SGD with optional momentum and Nesterov momentum; weight_decay is L2 on the gradient."""
    slot_names = ("velocity",)

    def __init__(self, params, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        self.velocity = self._slots() if momentum else []

    def _update(self, kernels, live, params, grads):
        velocities = [self.velocity[i] for i in live] if self.momentum else None
        kernels.sgd_update(params, grads, velocities, self.lr, self.momentum, self.nesterov,
                           self.weight_decay)
