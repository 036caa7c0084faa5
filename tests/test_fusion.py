"""nn.Sequential's fusion pass: a ReLU next to a batch norm runs as one fused Function in
training, computing exactly what the two layers compute; hooks and eval mode see the layers."""
import contextlib

import numpy as np
import pytest

import minicnn as mc
from minicnn import functional as F
from minicnn import nn, optim
from minicnn.autograd import _topological_order
from minicnn.nn import fusion
from minicnn.nn.module import capture


def mixed_net():
    """Every pattern: conv-ReLU-BN-pool-dropout (vgg_like), conv-BN-ReLU-pool (vgg8_bn),
    then BN1d-ReLU."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU(), nn.BatchNorm2d(4), nn.MaxPool2d(2),
        nn.Dropout(0.3, seed=5), nn.Conv2d(4, 6, 3, padding="same"), nn.BatchNorm2d(6), nn.ReLU(),
        nn.MaxPool2d(3, 2, "same"), nn.Flatten(), nn.Linear(6 * 2 * 2, 8), nn.BatchNorm1d(8),
        nn.ReLU(), nn.Linear(8, 10))


def train_three_steps(device, dtype, fused, net=mixed_net):
    """Losses, parameters and BN running statistics after 3 Adam steps from a fixed seed."""
    mc.manual_seed(3)
    rng = np.random.default_rng(3)
    model = net().to(device, dtype=dtype)
    x = mc.tensor(rng.standard_normal((4, 3, 6, 6)), dtype=dtype, device=device)
    labels = rng.integers(0, 10, 4)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    with contextlib.nullcontext() if fused else fusion.unfused():
        for _ in range(3):
            loss = F.cross_entropy(model(x), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses, model.state_dict()


def assert_fusion_changes_no_bit(device, dtype, net):
    """Three training steps of net() fused and unfused: the same losses and state, bit for bit,
    and the loss went down."""
    fused_losses, fused_state = train_three_steps(device, dtype, fused=True, net=net)
    losses, state = train_three_steps(device, dtype, fused=False, net=net)
    assert fused_losses == losses and fused_losses[-1] < fused_losses[0]
    for key in state:
        np.testing.assert_array_equal(fused_state[key], state[key], err_msg=key)


def function_names(output):
    return [type(f).__name__ for f in _topological_order(output)]


@pytest.mark.parametrize("device", ["cpu", "emu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_three_training_steps_are_the_same_fused_and_unfused(device, dtype):
    """Bit for bit: the fused kernels apply the ReLU to each value as the layers would."""
    fused_losses, fused_state = train_three_steps(device, dtype, fused=True)
    losses, state = train_three_steps(device, dtype, fused=False)
    assert fused_losses == losses
    assert fused_losses[-1] < fused_losses[0]  # it trained
    for key in state:
        np.testing.assert_array_equal(fused_state[key], state[key], err_msg=key)


def test_training_fuses_each_pair_and_keeps_the_layers():
    model = mixed_net()
    x = mc.tensor(np.random.default_rng(0).standard_normal((4, 3, 6, 6)))
    output = model(x)
    names = function_names(output)
    assert names.count("ReLUBatchNormPoolDropout") == names.count("BatchNormReLUPool") == 1
    assert names.count("BatchNormReLU") == 1 and "Pool2d" not in names
    assert "ReLU" not in names and "BatchNorm" not in names and "Dropout" not in names
    fused = next(f for f in _topological_order(output)
                 if type(f).__name__ == "ReLUBatchNormPoolDropout")
    assert fused.dropout == (0.3, 5, 1)  # the dropout layer's rate, seed and first step
    assert [n for n, _ in model.named_modules()][1:6] == ["conv1", "relu1", "bn1", "pool1",
                                                          "dropout1"]
    with fusion.unfused():
        names = function_names(model(x))
    assert names.count("ReLU") == 3 and names.count("BatchNorm") == 3
    assert names.count("Dropout") == 1 and names.count("Pool2d") == 2


def test_hooks_see_each_layer_output_because_hooked_layers_are_not_fused():
    model = mixed_net()
    x = mc.tensor(np.random.default_rng(1).standard_normal((4, 3, 6, 6)))
    with capture(model, ["relu1", "bn2"]) as outputs:
        names = function_names(model(x))
    assert names.count("ReLUBatchNorm") == names.count("BatchNormReLUPool") == 0
    assert names.count("BatchNormReLU") == 1  # fc's pair
    assert (outputs["relu1"].numpy() >= 0).all() and (outputs["relu1"].numpy() == 0).any()
    bn_out = outputs["bn2"].numpy()  # before its ReLU: negative values remain
    assert (bn_out < 0).any()
    np.testing.assert_allclose(bn_out.mean(axis=(0, 2, 3)), 0, atol=1e-5)


def test_eval_mode_runs_the_layers_one_by_one():
    model = mixed_net()
    model(mc.tensor(np.random.default_rng(2).standard_normal((4, 3, 6, 6))))  # running stats
    model.eval()
    x = mc.tensor(np.random.default_rng(3).standard_normal((2, 3, 6, 6)), requires_grad=True)
    names = function_names(model(x))
    assert not {"ReLUBatchNorm", "BatchNormReLU", "BatchNormReLUPool"} & set(names)


def test_a_batch_norm_given_the_wrong_shape_says_so_when_fused_too():
    model = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match="BatchNorm2d: input must have 4 dims"):
        model(mc.tensor(np.ones((2, 3))))


def test_a_pool_with_options_fused_passes_lack_runs_alone_and_says_so():
    model = nn.Sequential(nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True))
    with pytest.raises(ValueError, match="ceil_mode"):
        model(mc.tensor(np.random.default_rng(4).standard_normal((2, 2, 4, 4))))


def test_a_fused_pool_needs_the_relu_after():
    bn = nn.BatchNorm2d(2)
    with pytest.raises(ValueError, match="pool needs relu='after'"):
        bn.normalize(mc.tensor(np.ones((2, 2, 4, 4))), relu="before", pool=nn.MaxPool2d(2))


def test_fused_relu_outside_training_is_refused():
    bn = nn.BatchNorm2d(2).eval()
    with pytest.raises(ValueError, match="relu must be None, or 'before' / 'after' in training"):
        bn.normalize(mc.tensor(np.ones((2, 2, 3, 3))), relu="after")
