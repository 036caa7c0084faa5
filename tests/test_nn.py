"""Modules: names, state, hooks, initializers, and a small network that actually learns."""
import numpy as np
import pytest

import minicnn as mc
from minicnn import functional as F
from minicnn import nn, optim


def small_net(dropout=0.0):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding="same", init="he_uniform"), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding="same", init="he_uniform"), nn.ReLU(),
        nn.MaxPool2d(3, 2, "same"), nn.Dropout(dropout), nn.Flatten(), nn.Linear(8 * 2 * 2, 10))


def test_layers_get_kind_names_and_can_be_found():
    net = small_net()
    names = [name for name, _ in net.named_modules() if name]
    assert names[:6] == ["conv1", "bn1", "relu1", "pool1", "conv2", "relu2"]
    assert net.get_layer("conv2") is net.conv2
    with pytest.raises(ValueError, match="unknown layer 'conv9'.*conv1, bn1"):
        net.get_layer("conv9")


def test_explicit_names_win_and_duplicates_are_refused():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, name="stem"), nn.ReLU())
    assert net.get_layer("stem") is net.stem
    with pytest.raises(ValueError, match="two layers are named 'x'"):
        nn.Sequential(nn.ReLU(name="x"), nn.ReLU(name="x"))


def test_small_network_overfits_a_tiny_batch():
    mc.manual_seed(0)
    rng = np.random.default_rng(0)
    x = mc.tensor(rng.standard_normal((16, 3, 8, 8)))
    labels = rng.integers(0, 10, 16)
    net = small_net()
    opt = optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, losses[::10]


def test_state_dict_round_trip_restores_outputs_and_running_stats():
    mc.manual_seed(1)
    a = small_net()
    x = mc.tensor(np.random.default_rng(1).standard_normal((4, 3, 8, 8)))
    a(x)  # updates BN running statistics
    mc.manual_seed(2)
    b = small_net()
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    np.testing.assert_array_equal(b.bn1.running_mean, a.bn1.running_mean)


def test_loading_a_state_of_another_architecture_lists_every_mismatch():
    state = small_net().state_dict()
    other = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Linear(4, 2))
    with pytest.raises(ValueError) as error:
        other.load_state_dict(state)
    message = str(error.value)
    assert "conv1.weight: checkpoint (8, 3, 3, 3) vs model (16, 3, 3, 3)" in message
    assert "missing fc1.bias" not in message and "unexpected bn1.weight" in message


def test_dropout_masks_resume_exactly_from_the_state_dict():
    mc.manual_seed(3)
    layer = nn.Dropout(0.5)
    x = mc.tensor(np.ones((4, 64)))
    layer(x)
    saved = layer.state_dict()
    after = layer(x).numpy()
    fresh = nn.Dropout(0.5, seed=999)
    fresh.load_state_dict(saved)
    np.testing.assert_array_equal(fresh(x).numpy(), after)
    assert not np.array_equal(layer(x).numpy(), after)  # the next step draws a new mask
    assert np.array_equal(layer.eval()(x).numpy(), x.numpy())


def test_capture_reads_layer_outputs_and_removes_its_hooks():
    net = small_net()
    x = mc.tensor(np.random.default_rng(2).standard_normal((2, 3, 8, 8)))
    with nn.capture(net, ["conv1", "pool2"]) as outputs:
        net(x)
    assert outputs["conv1"].shape == (2, 8, 8, 8) and outputs["pool2"].shape == (2, 8, 2, 2)
    np.testing.assert_array_equal(outputs["conv1"].numpy(), net.conv1(x).numpy())
    assert all(not m._hooks for m in net.modules())


def test_to_float64_keeps_optimizer_references():
    net = small_net()
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net.to(dtype=np.float64)
    assert opt.params[0] is net.conv1.weight and net.conv1.weight.dtype == np.float64
    assert net.bn1.running_var.dtype == np.float64


@pytest.mark.parametrize("scheme,std", [("he_uniform", np.sqrt(2 / 288)), ("he_normal", np.sqrt(2 / 288)),
                                        ("glorot_uniform", np.sqrt(2 / (288 + 576))),
                                        ("glorot_normal", np.sqrt(2 / (288 + 576))),
                                        ("torch", np.sqrt(1 / (3 * 288)))])
def test_initializers_have_the_named_variance(scheme, std):
    w = nn.init.weight(scheme, (64, 32, 3, 3), rng=np.random.default_rng(0))
    assert w.std() == pytest.approx(std, rel=0.03)
    if scheme.endswith("normal"):
        assert np.abs(w).max() <= 2 * std / 0.8796 + 1e-6  # truncated at two standard deviations


def test_keras_layers_have_zero_bias_and_torch_layers_do_not():
    assert not nn.Conv2d(3, 4, 3, init="glorot_uniform").bias.numpy().any()
    assert nn.Linear(10, 4).bias.numpy().any()
    net = nn.init.initialize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2)), "he_uniform")
    assert net.conv1.init == "he_uniform" and not net.fc1.bias.numpy().any()


def test_optimizer_state_round_trip():
    net = small_net()
    opt = optim.Adam(net.parameters(), lr=1e-3)
    x = mc.tensor(np.random.default_rng(3).standard_normal((2, 3, 8, 8)))
    F.cross_entropy(net(x), np.array([1, 2])).backward()
    opt.step()
    copy = optim.Adam(net.parameters(), lr=5.0)
    copy.load_state_dict(opt.state_dict())
    assert copy.step_count == 1 and copy.lr == 1e-3
    np.testing.assert_array_equal(copy.exp_avg_sq[0], opt.exp_avg_sq[0])
