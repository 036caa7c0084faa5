"""PyTorch's signatures where minicnn uses PyTorch's names: the same call gives the same numbers
(values and gradients, against PyTorch on the CPU), or one line saying what minicnn cannot do."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import minicnn as mc
from minicnn import functional as F
from minicnn import nn, optim


def pair(shape, seed=0):
    """The same float64 data as a minicnn and a torch leaf."""
    data = np.random.default_rng(seed).standard_normal(shape)
    return (mc.tensor(data, dtype=np.float64, requires_grad=True),
            torch.tensor(data, requires_grad=True))


def assert_same_values_and_gradients(ours, theirs, ours_in, theirs_in, seed=1):
    """ours/theirs: outputs; the gradients of sum(output * R) of every input must match too."""
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    projection = np.random.default_rng(seed).standard_normal(theirs.shape)
    ours.backward(projection)
    (theirs * torch.tensor(projection)).sum().backward()
    for mine, torch_input in zip(ours_in, theirs_in):
        np.testing.assert_allclose(mine.grad, torch_input.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, dim", [((5,), 0), ((4, 7), 1), ((4, 7), None), ((2, 3, 4), 0),
                                        ((2, 3, 4, 5), 1), ((2, 3, 4, 5), -1), ((2, 3, 4, 5), None)])
def test_softmax_along_any_dim(name, shape, dim):
    x, tx = pair(shape)
    theirs = getattr(torch.nn.functional, name)(tx, dim=1 if dim is None and len(shape) in (2, 4) else
                                                0 if dim is None else dim)
    assert_same_values_and_gradients(getattr(F, name)(x, dim=dim), theirs, [x], [tx])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
@pytest.mark.parametrize("soft", [False, True], ids=["labels", "soft"])
def test_cross_entropy_reduction_and_label_smoothing(reduction, label_smoothing, soft):
    logits, tlogits = pair((6, 5))
    rng = np.random.default_rng(2)
    target = rng.dirichlet(np.ones(5), 6) if soft else rng.integers(0, 5, 6)
    ours = F.cross_entropy(logits, target, reduction=reduction, label_smoothing=label_smoothing)
    theirs = torch.nn.functional.cross_entropy(tlogits, torch.tensor(target), reduction=reduction,
                                               label_smoothing=label_smoothing)
    assert ours.shape == tuple(theirs.shape)
    assert_same_values_and_gradients(ours, theirs, [logits], [tlogits])


def test_pytorch_style_layers_give_pytorch_numbers():
    torch_pad = torch.nn.ZeroPad2d((1, 0, 2, 3))  # (left, right, top, bottom)
    x, tx = pair((1, 2, 3, 4))
    assert_same_values_and_gradients(nn.ZeroPad2d((1, 0, 2, 3))(x), torch_pad(tx), [x], [tx])
    bn, torch_bn = nn.BatchNorm2d(2, 1e-3), torch.nn.BatchNorm2d(2, 1e-3)  # eps comes first
    assert bn.eps == torch_bn.eps == 1e-3 and bn.momentum == torch_bn.momentum
    layers = [nn.Conv2d(2, 3, 3, 1, 1, 1, 1, False, "zeros"), nn.ReLU(inplace=True), nn.Dropout(p=0.0, inplace=False),
              nn.MaxPool2d(2, dilation=1, ceil_mode=False), nn.Flatten(1, -1), nn.Softmax(dim=1)]
    y = nn.Sequential(*layers).to(dtype=np.float64)(mc.tensor(np.ones((1, 2, 4, 4)), dtype=np.float64))
    assert y.shape == (1, 12) and layers[0].bias is None
    np.testing.assert_allclose(y.numpy().sum(), 1.0)


def test_module_state_api():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    model.eval()
    assert not model.fc1.training and model.train().fc1.training
    names = [name for name, _ in model.named_parameters()]
    assert names == ["fc1.weight", "fc1.bias", "bn1.weight", "bn1.bias"]
    state = model.state_dict()
    del state["bn1.running_var"]
    state["extra"] = np.zeros(1)
    keys = model.load_state_dict(state, strict=False)
    assert keys.missing_keys == ["bn1.running_var"] and keys.unexpected_keys == ["extra"]
    with pytest.raises(ValueError, match="missing bn1.running_var; unexpected extra"):
        model.load_state_dict(state)


@pytest.mark.parametrize("owner", ["module", "optimizer"])
def test_zero_grad_set_to_none(owner):
    model = nn.Linear(3, 2)
    opt = optim.SGD(model.parameters(), lr=0.1)
    zero_grad = model.zero_grad if owner == "module" else opt.zero_grad
    F.sum(model(mc.tensor(np.ones((4, 3))))).backward()
    zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("call, message", [
    (lambda: nn.Conv2d(3, 4, 3, dilation=2), r"Conv2d: dilation=2 is not supported by minicnn \(only dilation=1\)"),
    (lambda: nn.Conv2d(3, 4, 3, padding_mode="reflect"), "Conv2d: padding_mode='reflect' is not supported"),
    (lambda: nn.Conv2d(4, 4, 3, groups=2), "Conv2d: groups=2 is not supported"),
    (lambda: nn.BatchNorm2d(3, affine=False), "BatchNorm2d: affine=False is not supported"),
    (lambda: F.max_pool2d(mc.tensor(np.ones((1, 1, 4, 4))), 2, ceil_mode=True), "max_pool2d: ceil_mode=True"),
    (lambda: F.avg_pool2d(mc.tensor(np.ones((1, 1, 4, 4))), 2, count_include_pad=True),
     "avg_pool2d: count_include_pad=True"),
    (lambda: F.cross_entropy(mc.tensor(np.ones((2, 3))), np.array([0, 1]), weight=np.ones(3)),
     "cross_entropy: weight=ndarray is not supported"),
    (lambda: F.cross_entropy(mc.tensor(np.ones((2, 3))), np.array([0, 1]), reduction="avg"),
     "cross_entropy: reduction must be"),
    (lambda: F.softmax(mc.tensor(np.ones((2, 3))), dim=2), r"softmax: dim 2 is out of range"),
    (lambda: nn.ZeroPad2d((1, 2)), r"ZeroPad2d: padding must be an int or \(left, right, top, bottom\)"),
])
def test_what_minicnn_cannot_compute_is_one_line(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


def test_dropout_module_draws_the_mask_of_its_seed_and_step():
    """F.dropout(x, p, training, inplace) is PyTorch's order; seed and step are keywords."""
    x = mc.tensor(np.ones((4, 50)))
    layer = nn.Dropout(0.5, seed=123)
    first, second = layer(x).numpy(), layer(x).numpy()
    np.testing.assert_array_equal(first, F.dropout(x, 0.5, True, seed=123, step=1).numpy())
    np.testing.assert_array_equal(second, F.dropout(x, 0.5, True, seed=123, step=2).numpy())
    assert (first != second).any()
    with pytest.raises(TypeError):
        F.dropout(x, 0.5, True, False, 123)  # a seed passed where PyTorch has inplace
