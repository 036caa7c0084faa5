"""A short training run on another device equals the same run on the CPU reference.

Same seed, same initial weights, same dropout masks (counter-based RNG), Adam: after a few
steps the weights agree to float tolerance. On `emu` the CUDA kernels run in the CPU emulator
(always, CI included); on `cuda` they run on a real GPU (skipped without one).
"""
import numpy as np
import pytest

import minicnn as mc
from minicnn import functional as F
from minicnn import nn, optim
from minicnn.backends import cuda_status

GPU_USABLE, GPU_REASON = cuda_status()


def train_a_few_steps(device, dtype, steps=3):
    mc.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding="same"), nn.BatchNorm2d(5), nn.ReLU(), nn.MaxPool2d(3, 2, "same"),
        nn.Conv2d(5, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Dropout(0.3), nn.Flatten(),
        nn.Linear(6 * 2 * 2, 7), nn.BatchNorm1d(7)).to(device, dtype)
    opt = optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    rng = np.random.default_rng(1)
    x = mc.tensor(rng.standard_normal((4, 3, 7, 7)), dtype=dtype, device=device)
    labels = mc.tensor(rng.integers(0, 7, 4), device=device)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, model.state_dict()


@pytest.mark.parametrize("device", [
    "emu", pytest.param("cuda", marks=[pytest.mark.cuda,
                                       pytest.mark.skipif(not GPU_USABLE, reason=f"no usable GPU: {GPU_REASON}")])])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-9), (np.float32, 2e-4)])
def test_training_on_the_device_matches_the_cpu(device, dtype, rtol):
    cpu_losses, cpu_state = train_a_few_steps("cpu", dtype)
    losses, state = train_a_few_steps(device, dtype)
    np.testing.assert_allclose(losses, cpu_losses, rtol=rtol)
    assert cpu_losses[-1] < cpu_losses[0]
    for key in cpu_state:
        scale = max(np.abs(cpu_state[key]).max(), 1e-3)
        np.testing.assert_allclose(state[key], cpu_state[key], rtol=rtol, atol=rtol * scale, err_msg=key)
