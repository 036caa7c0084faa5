"""The CUDA-graph training step (minicnn/train/graph_step.py), checked without a GPU: a
stand-in graph runtime records a captured step's launches and replays them against the same
buffers, so a replayed run must equal an eager one bit for bit in the emulator, and a replay
must copy nothing from the host, allocate nothing, read nothing back and launch the same
kernels every time."""
import numpy as np
import pytest

import minicnn as mc
from minicnn import nn, optim
from minicnn.backends.recording import Recorder, graph_blockers
from minicnn.train.graph_step import GraphStep, ReplayGraphs


def small_net():
    """conv-ReLU-BN-pool-dropout (vgg_like's pattern), conv-BN-ReLU-pool (vgg8_bn's), BN1d."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU(), nn.BatchNorm2d(4), nn.MaxPool2d(2),
        nn.Dropout(0.3, seed=5), nn.Conv2d(4, 6, 3, padding="same"), nn.BatchNorm2d(6), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 2 * 2, 8), nn.BatchNorm1d(8), nn.ReLU(),
        nn.Dropout(0.2, seed=7), nn.Linear(8, 10))


def batches(count, size=4, seed=3):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, 3, 8, 8)).astype(np.float32), rng.integers(0, 10, size))
            for _ in range(count)]


def train(data, graphs, make_optimizer, lr_change_at=None):
    """Losses, state after training on `data` in the emulator, eagerly or through graphs."""
    mc.manual_seed(3)
    recorder = Recorder(track_host=True)
    device = recorder.device("emu")
    model = small_net().to(device)
    model.train()
    optimizer = make_optimizer(model.parameters())
    step = GraphStep(model, optimizer, device, ReplayGraphs(recorder) if graphs else None)
    losses = []
    for i, (x, y) in enumerate(data):
        if i == lr_change_at:
            optimizer.lr /= 2
        loss, _ = step(device.xp.asarray(x), device.xp.asarray(y))
        losses.append(float(loss))
    return losses, model.state_dict(), optimizer.state_dict(), step


OPTIMIZERS = {"adam": lambda p: optim.Adam(p, lr=1e-2),
              "sgd": lambda p: optim.SGD(p, 0.05, momentum=0.9, nesterov=True)}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_replayed_steps_equal_eager_steps_bit_for_bit(name):
    # 2 eager warm-up steps, the capture, 3 replays; a short last batch runs eagerly in between,
    # and the learning rate changes between two replays (a host write of the schedule)
    data = batches(5) + batches(1, size=3, seed=4) + batches(1, seed=5)
    eager_losses, eager_state, eager_optimizer, _ = train(data, False, OPTIMIZERS[name], 4)
    losses, state, optimizer_state, step = train(data, True, OPTIMIZERS[name], 4)
    assert step.replays == 3
    assert losses == eager_losses and len(set(losses)) == len(losses)  # fresh outputs each replay
    for key in eager_state:  # weights, BN statistics, dropout steps
        np.testing.assert_array_equal(state[key], eager_state[key], err_msg=key)
    for key in eager_optimizer:  # moments and the step count: a resume continues identically
        np.testing.assert_array_equal(optimizer_state[key], eager_optimizer[key], err_msg=key)
