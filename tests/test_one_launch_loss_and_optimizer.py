"""The training step's head in one launch each (issue 12): the loss with its batch mean and, in
training, its gradient (softmax.cu version 2); Adam's step advanced inside its update (optim.cu
version 3). Each against the launches it replaces, in the emulator, bit for bit, and the
autograd's seed path against an explicit gradient of 1.
"""
from __future__ import annotations

import numpy as np
import pytest

import minicnn as mc
from minicnn import functional as F
from minicnn.autograd import no_grad
from minicnn.backends.recording import Recorder
from test_fusion import train_three_steps
from test_kernels_emu import assert_same, multi_state, randn, to_device, to_host


def emu_kernels(one_launch: bool):
    """A fresh emulator device's kernels (recorded), with the loss and Adam in one launch
    each, or in the launches they replace."""
    recorder = Recorder()
    device = recorder.device("emu")
    device.kernels.loss_in_one_launch = device.kernels.adam_advance_in_update = one_launch
    return recorder, device


def targets(rng, shape, dtype, soft):
    if soft:
        return rng.dirichlet(np.ones(shape[1]), shape[0]).astype(dtype)
    return rng.integers(0, shape[1], shape[0]).astype(np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(0, 4), (1, 3), (5, 10), (37, 100)])  # 37: 10 blocks, 1 short
@pytest.mark.parametrize("soft", [False, True], ids=["labels", "soft"])
def test_the_one_launch_loss_is_the_three_launch_chain_bit_for_bit(dtype, shape, soft):
    rng = np.random.default_rng(shape[0])
    logits, target = randn(rng, shape, np.dtype(dtype)) * 5, targets(rng, shape, dtype, soft)
    results = {}
    for one_launch in (True, False):
        recorder, device = emu_kernels(one_launch)
        kernels = device.kernels
        results[one_launch] = (kernels.cross_entropy_forward_train(logits, target),
                               kernels.cross_entropy_forward(logits, target))
        results[one_launch, "launches"] = [r.family for r in recorder.launches]
        if one_launch:
            assert kernels._arrivals(1)[0] == 0  # the last block reset its counter
    assert_same(results[False], results[True], exact=True, where="loss, probs, dlogits")
    if shape[0] == 0:  # the loss is 0 / 0 either way; version 1 launches only sum_partials
        return
    kind = "soft" if soft else "labels"
    assert results[True, "launches"] == [f"cross_entropy_mean_{kind}"] * 2
    assert results[False, "launches"] == [f"cross_entropy_forward_{kind}", "sum_partials",
                                          f"cross_entropy_backward_{kind}",
                                          f"cross_entropy_forward_{kind}", "sum_partials"]


def loss_and_grad(device, logits, labels, backward):
    """logits.grad after backward(loss) of a leaf with requires_grad, and the loss value."""
    x = mc.tensor(logits, device=device, requires_grad=True)
    loss = F.cross_entropy(x, labels)
    backward(loss, x)
    return loss.item(), x.grad if isinstance(x.grad, np.ndarray) else to_host(x.grad)


BACKWARDS = {  # how the gradient reaches the loss: seeded, explicit, scaled, summed, twice
    "seed": lambda loss, x: loss.backward(),
    "explicit 1": lambda loss, x: loss.backward(np.ones((), np.float32)),
    "loss * 2": lambda loss, x: (loss * 2).backward(),
    "loss + other": lambda loss, x: (loss + F.cross_entropy(x * 1, np.array([0, 1, 2, 3, 4]))).backward(),
    "twice": lambda loss, x: [loss.backward(retain_graph=True), loss.backward()],
}


@pytest.mark.parametrize("how", list(BACKWARDS))
def test_the_gradient_from_the_forward_is_the_backward_kernels(how):
    """The seed path returns the forward's dlogits (no launch); every other path runs the
    backward kernel: each equal to the NumPy reference, the seed bit for bit to an explicit 1."""
    rng = np.random.default_rng(4)
    logits, labels = rng.standard_normal((5, 7)).astype(np.float32), rng.integers(0, 7, 5)
    recorder, device = emu_kernels(True)
    loss, grad = loss_and_grad(device, logits, labels, BACKWARDS[how])
    ref_loss, ref_grad = loss_and_grad("cpu", logits, labels, BACKWARDS[how])
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)
    backward_launches = [r.family for r in recorder.launches].count("cross_entropy_backward_labels")
    assert backward_launches == {"seed": 0, "twice": 0, "loss + other": 2}.get(how, 1)
    if how == "seed":
        _, explicit = loss_and_grad(device, logits, labels, BACKWARDS["explicit 1"])
        np.testing.assert_array_equal(grad, explicit)


def test_evaluation_writes_no_gradient():
    recorder, device = emu_kernels(True)
    x = mc.tensor(np.zeros((3, 4), np.float32), device=device, requires_grad=True)
    with no_grad():
        F.cross_entropy(x, np.array([0, 1, 2]))
    F.cross_entropy(x, np.array([0, 1, 2]))
    with_grad = [r.args[-1].value for r in recorder.launches]
    assert with_grad == [0, 1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("weight_decay, decoupled", [(0.0, False), (0.01, True)])
def test_adam_advanced_in_its_update_is_the_two_launch_step_bit_for_bit(dtype, weight_decay,
                                                                        decoupled):
    state = multi_state(np.dtype(dtype), 4)
    state[3] = [np.abs(v) for v in state[3]]
    after = {}
    for one_launch in (True, False):
        recorder, device = emu_kernels(one_launch)
        kernels = device.kernels
        arrays = to_device(kernels.xp, state)
        for step, lr in [(1, 1e-3), (2, 1e-3), (3, 5e-4), (9, 5e-4)]:  # a resume at 9, a new lr
            kernels.adam_update(*arrays, step, lr, 0.9, 0.999, 1e-8, weight_decay, decoupled)
        group = kernels._multi_tensor.group(arrays[0])
        after[one_launch] = (to_host(arrays), group.schedule.copy())
        after[one_launch, "launches"] = len(recorder.launches)
        assert group.arrivals[0] == 0
    assert_same(after[False], after[True], exact=True, where="adam state and schedule")
    assert after[True][1].tolist() == [9.0, 5e-4, 1 - 0.9 ** 9, 1 - 0.999 ** 9]
    assert (after[True, "launches"], after[False, "launches"]) == (4, 8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_three_training_steps_are_the_same_with_the_one_launch_head(dtype):
    """A fixed-seed 3-step Adam run of a net with every fused pattern: the same losses and
    state, bit for bit, whether the loss and Adam take one launch each or their old chains."""
    runs = {one_launch: train_three_steps(emu_kernels(one_launch)[1], dtype, fused=True)
            for one_launch in (True, False)}
    (losses, state), (old_losses, old_state) = runs[True], runs[False]
    assert losses == old_losses and losses[-1] < losses[0]
    for key in state:
        np.testing.assert_array_equal(state[key], old_state[key], err_msg=key)
