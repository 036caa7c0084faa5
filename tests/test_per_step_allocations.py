"""Per-step costs the recording runtime sees: what a kernel call allocates and fills."""
import numpy as np
import pytest

from minicnn.backends.recording import Recorder


def recorded_emu():
    recorder = Recorder(count_glue=True)
    return recorder, recorder.device("emu").kernels


def bn_backward_inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    return (rng.standard_normal(x.shape).astype(np.float32), x,
            rng.uniform(0.5, 2, 3).astype(np.float32), mean, (1 / np.sqrt(var + 1e-5)).astype(np.float32))


@pytest.mark.parametrize("name", ["batch_norm_backward", "relu_batch_norm_backward"])
def test_one_launch_bn_backward_allocates_dx_sums_only_when_asked(name):
    """dx, dbeta, dgamma and the partial sums; the (C,) sums of dx only with dx_sums=True
    (without them the kernel gets the launcher's zeros, which it never writes)."""
    recorder, kernels = recorded_emu()
    backward = getattr(kernels, name)
    counts, results = {}, {}
    for dx_sums in (False, True, False):
        recorder.reset()
        results[dx_sums] = backward(*bn_backward_inputs(), dx_sums=dx_sums)
        counts[dx_sums] = recorder.allocations
    assert [launch.family for launch in recorder.launches] == ["bn_backward_one_launch"]
    assert counts == {False: 4, True: 5} and recorder.glue == []
    for plain, with_sums in zip(results[False], results[True]):  # the same bits either way
        assert np.array_equal(plain, with_sums)
    np.testing.assert_allclose(results[True][3], results[True][0].sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-5)
    assert np.all(kernels._zeros(1024, np.float32) == 0)


def test_the_loss_in_separate_launches_fills_no_ones_per_step():
    """loss_in_one_launch off: the gradient launch reads a 1 made once, not a CuPy fill per step."""
    recorder, kernels = recorded_emu()
    kernels.loss_in_one_launch = False
    rng = np.random.default_rng(1)
    logits, labels = rng.standard_normal((6, 10)).astype(np.float32), rng.integers(0, 10, 6)
    kernels.cross_entropy_forward_train(logits, labels)  # warm: makes the 1
    recorder.reset()
    loss, probs, dlogits = kernels.cross_entropy_forward_train(logits, labels)
    assert recorder.glue == [] and recorder.allocations == 4  # probs, row losses, loss, dlogits
    assert [launch.family for launch in recorder.launches] == [
        "cross_entropy_forward_labels", "sum_partials", "cross_entropy_backward_labels"]
    _, kernels_one_launch = recorded_emu()
    expected = kernels_one_launch.cross_entropy_forward_train(logits, labels)
    for ours, theirs in zip((loss, probs, dlogits), expected):
        assert np.array_equal(ours, theirs)
