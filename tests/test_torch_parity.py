"""Step parity with PyTorch: the same network, weights and batches in float64, trained side by side.

After every step the test compares the loss, every gradient, the optimizer's state (Adam's
moments, SGD's momentum buffers), every BN running statistic and every weight, and names the
first step and tensor that differ. It is the safety net for speed work on the kernels: a faster
kernel that changes what a step computes fails here.

Where minicnn follows Keras on purpose, the twin is configured to match (tests/torch_twin.py):
the zoo's Keras-convention BN layers keep the plain (biased) batch variance in running_var and
weigh the old average by 0.99 (minicnn stores that as momentum 0.01, PyTorch's sense), so the
twin uses a batch norm that updates its running statistics the same way; torch.nn.BatchNorm2d
itself would store the unbiased variance.
"""
from dataclasses import dataclass

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: step parity not checked")

import minicnn as mc  # noqa: E402
from minicnn import functional as F, nn, optim  # noqa: E402
from minicnn.backends import numpy_ref  # noqa: E402
from minicnn.models import get_spec  # noqa: E402
from torch_twin import torch_twin  # noqa: E402

torch.set_num_threads(1)  # these shapes are tiny: more threads only fight over the cores

TORCH_SLOTS = {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "velocity": "momentum_buffer"}
TOLERANCE = 1e-7  # max |minicnn - torch| / max |torch| of a tensor. Most agree to ~1e-12; Adam's
                  # division by sqrt(v) magnifies rounding where a gradient is near eps (bn8.bias of
                  # vgg8_bn: ~1e-8). Adam's eps moved inside the root shows as ~7e-7 at step 1.
FLOOR = 1e-3      # tensors of values below FLOOR are compared absolutely (to 1e-12): a conv bias
                  # followed by BN gets a gradient that is zero in exact arithmetic and rounding
                  # noise (~1e-13) in both, which no relative tolerance can compare


@dataclass
class Mismatch:
    step: int
    tensor: str
    error: float

    def __str__(self):
        return f"step {self.step}: {self.tensor} differs (max |minicnn - torch| / max |torch| = {self.error:.3g})"


def relative_error(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), theirs.detach().numpy()
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), FLOOR))


def torch_optimizer(opt, params):
    """The torch.optim twin of a minicnn optimizer, same hyper-parameters."""
    if isinstance(opt, optim.AdamW):
        return torch.optim.AdamW(params, opt.lr, (opt.beta1, opt.beta2), opt.eps, opt.weight_decay)
    if isinstance(opt, optim.Adam):
        return torch.optim.Adam(params, opt.lr, (opt.beta1, opt.beta2), opt.eps, opt.weight_decay)
    return torch.optim.SGD(params, opt.lr, opt.momentum, nesterov=opt.nesterov, weight_decay=opt.weight_decay)


def inert_biases(model) -> set:
    """Biases of a conv or linear layer that a batch norm follows directly: the BN subtracts them
    again, so their gradient is zero in exact arithmetic and rounding noise (~1e-13) in practice,
    and Adam, which divides by the gradient's own size, turns that noise into steps of random sign.
    They cannot change the loss, only the running mean of the BN after them; the test checks that
    their gradients are ~0, and the twin takes minicnn's values after each step (sync_inert)."""
    inert = set()
    for path, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            layers = list(module._modules.items())
            for (key, layer), (_, after) in zip(layers, layers[1:]):
                if isinstance(layer, (nn.Conv2d, nn.Linear)) and layer.bias is not None and after.kind == "bn":
                    inert.add(f"{path}.{key}.bias" if path else f"{key}.bias")
    return inert


def step_tensors(model, opt, twin, topt, loss, tloss):
    """(name, minicnn array, torch tensor) in the order a step makes them: loss, gradients,
    optimizer state, running statistics, then the weights after the update."""
    named = dict(twin.named_parameters())
    inert = inert_biases(model)
    live = [(name, i, p) for i, (name, p) in enumerate(model.named_parameters()) if name not in inert]
    pairs = [("loss", loss, tloss)]
    pairs += [(f"{name} gradient", p.grad, named[name].grad) for name, _, p in live]
    for slot in opt.slot_names:
        pairs += [(f"{name} {slot}", getattr(opt, slot)[i], topt.state[named[name]][TORCH_SLOTS[slot]])
                  for name, i, _ in live]
    buffers = dict(twin.named_buffers())
    pairs += [(name, array, buffers[name]) for name, array in model.named_buffers() if name in buffers]
    pairs += [(f"{name} after the update", p.data, named[name]) for name, _, p in live]
    zero = torch.zeros(())
    params = dict(model.named_parameters())
    pairs += [(f"{name} gradient (inert: ~0)", np.abs(params[name].grad).max() + np.abs(named[name].grad.numpy()).max(),
               zero) for name in sorted(inert)]
    return pairs


def sync_inert(model, twin, inert):
    named = dict(twin.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in inert:
                named[name].copy_(torch.tensor(p.data))


def train_side_by_side(model, opt, twin, batches) -> Mismatch | None:
    """Train both on `batches` [(x (N, C, H, W) float64, labels (N,))]; the first difference, or None."""
    topt = torch_optimizer(opt, twin.parameters())
    inert = inert_biases(model)
    for step, (x, labels) in enumerate(batches, start=1):
        loss = F.cross_entropy(model(mc.tensor(x, dtype=np.float64)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tloss = torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(labels))
        topt.zero_grad()
        tloss.backward()
        topt.step()
        for name, ours, theirs in step_tensors(model, opt, twin, topt, loss.data, tloss):
            error = relative_error(ours, theirs)
            if not error <= TOLERANCE:
                return Mismatch(step, name, error)
        sync_inert(model, twin, inert)
    return None


def random_batches(steps, size, side=32, seed=0, classes=10):
    rng = np.random.default_rng(seed)
    return [(rng.normal(0.5, 0.3, (size, 3, side, side)), rng.integers(0, classes, size)) for _ in range(steps)]


def float64_model(build, seed=0):
    mc.manual_seed(seed)
    return build().to(dtype=np.float64)


def small_resnet():
    """v1 blocks (identity and a strided projection with BN), a pre-activation block with SE."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False, init="he_normal"), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.ResidualBlock(8, 8), nn.ResidualBlock(8, 16, stride=2),
                         nn.ResidualBlock(16, 16, preact=True, se=4), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.GlobalAvgPool2d(), nn.Linear(16, 10))


def vgg8_bn_with_adam():
    model = float64_model(get_spec("vgg8_bn").build)
    return model, optim.Adam(model.parameters(), lr=1e-3)


def test_vgg8_bn_adam_steps_equal_pytorch():
    """Report C's network and recipe optimizer (Adam 1e-3), Keras BN; batches of 8."""
    model, opt = vgg8_bn_with_adam()
    mismatch = train_side_by_side(model, opt, torch_twin(model), random_batches(20, 8))
    assert mismatch is None, str(mismatch)


def test_residual_network_sgd_momentum_weight_decay_steps_equal_pytorch():
    """PyTorch-convention BN (momentum 0.1, unbiased running variance): torch.nn.BatchNorm2d itself."""
    model = float64_model(small_resnet)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    mismatch = train_side_by_side(model, opt, torch_twin(model), random_batches(20, 8, side=16))
    assert mismatch is None, str(mismatch)


def test_dropout_network_steps_equal_pytorch():
    """Report A's cnn7_dropout (dropout 0.3 after every pool and FC128, 'same' 3x3/2 pools) with
    AdamW; the twin applies minicnn's own dropout masks, so both drop the same units."""
    model = float64_model(get_spec("cnn7_dropout").build)
    opt = optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    twin = torch_twin(model)
    mismatch = train_side_by_side(model, opt, twin, random_batches(20, 4))
    assert mismatch is None, str(mismatch)
    assert int(model.dropout1.step) == twin.dropout1.step == 20


def adam_with_eps_inside_the_root(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps,
                                  weight_decay, decoupled):
    """A planted bug: sqrt(v_hat + eps) where Adam has sqrt(v_hat) + eps."""
    correction1, correction2 = 1 - beta1 ** step, 1 - beta2 ** step
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        p -= lr * (m / correction1) / np.sqrt(v / correction2 + eps)


def test_a_planted_adam_bug_is_named_at_its_first_step_and_tensor(monkeypatch):
    monkeypatch.setattr(numpy_ref, "adam_update", adam_with_eps_inside_the_root)
    model, opt = vgg8_bn_with_adam()
    mismatch = train_side_by_side(model, opt, torch_twin(model), random_batches(2, 4))
    assert (mismatch.step, mismatch.tensor) == (1, "conv1.weight after the update"), str(mismatch)


def test_a_wrong_bn_momentum_is_named_at_its_first_step_and_tensor():
    model, opt = vgg8_bn_with_adam()
    twin = torch_twin(model)
    twin.bn3.momentum = 0.1  # Keras' 0.99 misread as PyTorch's sense in one layer
    mismatch = train_side_by_side(model, opt, twin, random_batches(2, 4))
    assert (mismatch.step, mismatch.tensor) == (1, "bn3.running_mean"), str(mismatch)
