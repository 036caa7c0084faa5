"""Recomputed BN statistics (minicnn.train.bn_stats) against a direct computation over the batches."""
import numpy as np
import pytest

import minicnn as mc
from minicnn import nn
from minicnn.autograd import no_grad
from minicnn.train.bn_stats import recompute_bn_stats, recomputed_bn_stats


def tiny_net(convention):
    mc.manual_seed(0)
    bn = dict(momentum=0.99, eps=1e-3, convention="keras") if convention == "keras" else {}
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, **bn), nn.ReLU(), nn.Dropout(0.5),
                         nn.Flatten(), nn.Linear(4 * 5 * 5, 6), nn.BatchNorm1d(6, **bn)).to(dtype=np.float64)


def batches(count=5, size=7):
    rng = np.random.default_rng(1)
    return [rng.normal(2.0, 3.0, (size, 3, 5, 5)) for _ in range(count)]


def direct_statistics(model, xs, unbiased):
    """Population mean/var of each BN input over all batches, computed the plain way: the first BN
    sees conv1's outputs; the second sees fc1's output after a training-mode first BN (each batch
    normalized by its own statistics) and no dropout."""
    with no_grad():
        first = [model.conv1(mc.tensor(x, dtype=np.float64)).data for x in xs]
        second = []
        for h in first:
            mean, var = h.mean(axis=(0, 2, 3)), h.var(axis=(0, 2, 3))
            bn = model.bn1
            normed = (h - mean[None, :, None, None]) / np.sqrt(var + bn.eps)[None, :, None, None]
            a = np.maximum(normed * bn.weight.data[None, :, None, None] + bn.bias.data[None, :, None, None], 0)
            second.append(model.fc1(mc.tensor(a.reshape(len(a), -1), dtype=np.float64)).data)
    stacked1 = np.concatenate([h.transpose(1, 0, 2, 3).reshape(4, -1) for h in first], axis=1)
    stacked2 = np.concatenate(second).T
    ddof = 1 if unbiased else 0
    return [(s.mean(axis=1), s.var(axis=1, ddof=ddof)) for s in (stacked1, stacked2)]


@pytest.mark.parametrize("convention", ["torch", "keras"])
def test_recompute_equals_population_statistics(convention):
    model = tiny_net(convention)
    model.bn1.weight.data[:] = [0.5, 1.5, -1.0, 2.0]  # non-trivial scale and shift for the second layer
    model.bn1.bias.data[:] = [0.1, -0.2, 0.3, 0.0]
    weights = {k: v.copy() for k, v in model.state_dict().items() if "running" not in k}
    dropout_step = int(model.dropout1.step)
    xs = batches()
    expected = direct_statistics(model, xs, unbiased=convention == "torch")
    model.train()
    assert recompute_bn_stats(model, iter(xs)) == len(xs)
    for layer, (mean, var) in zip((model.bn1, model.bn2), expected):
        np.testing.assert_allclose(layer.running_mean, mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(layer.running_var, var, rtol=1e-12, atol=1e-12)
    assert model.training and model.bn1.training          # flags restored
    assert int(model.dropout1.step) == dropout_step       # dropout was off during the pass
    for key, value in model.state_dict().items():
        if "running" not in key:
            np.testing.assert_array_equal(value, weights[key])  # weights untouched


def test_max_batches_and_the_context_manager_restore():
    model = tiny_net("keras")
    xs = batches(count=6)
    before = model.state_dict()
    expected = direct_statistics(model, xs[:2], unbiased=False)
    with recomputed_bn_stats(model, ((x, None) for x in xs), max_batches=2) as used:
        assert used == 2
        np.testing.assert_allclose(model.bn1.running_mean, expected[0][0], rtol=1e-12)
        assert not np.allclose(model.bn1.running_var, before["bn1.running_var"])
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])  # running averages back on exit


def test_no_batches_changes_nothing():
    model = tiny_net("torch")
    before = model.state_dict()
    assert recompute_bn_stats(model, iter([])) == 0
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
