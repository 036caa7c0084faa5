"""The recorder's glue count (minicnn.backends.recording.GlueRecord): the array-module work a GPU
step runs as CuPy's own kernels. What is glue and what is not, and that a training step of the
zoo's networks runs none once warm, while what the step launches is unchanged by counting it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import minicnn as mc
from minicnn import functional as F
from minicnn.backends.recording import Recorder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from launch_count import count_step  # noqa: E402


def glue_of(work):
    """[(operation, bytes)] of the glue `work(xp)` runs on a dry device."""
    recorder = Recorder(count_glue=True)
    work(recorder.device("dry").xp)
    return [(g.operation, g.array_bytes) for g in recorder.glue]


def test_fills_copies_and_element_wise_ops_are_glue():
    def work(xp):
        a = xp.zeros((4, 5), np.float32)               # a fill: 80 bytes written
        b = xp.ones_like(a)                            # reads nothing of a
        c = a + b                                      # reads 2 x 80, writes 80
        a[0] = 1                                       # item assignment
        a.astype(np.float64)                           # 80 read, 160 written
        xp.ascontiguousarray(a.T)                      # a copy: 80 read, 80 written
        a[xp.asarray(np.array([0, 2]))]                # a gather: a, 2 int64 indices, 2 rows
        np.concatenate([a, c])                         # 2 x 80 read, 160 written
    assert glue_of(work) == [("zeros", 80), ("ones_like", 80), ("add", 240), ("__setitem__", 80),
                             ("astype", 240), ("ascontiguousarray", 160), ("__getitem__", 136),
                             ("concatenate", 320)]


def test_allocations_without_a_fill_views_and_no_copy_asks_are_not_glue():
    def work(xp):
        a = xp.empty((4, 5), np.float32)
        xp.empty_like(a), a.T, a[1:3], a.reshape(20), np.moveaxis(a, 0, 1)
        xp.asarray(a), xp.ascontiguousarray(a), a.astype(np.float32, copy=False)
    assert glue_of(work) == []


def test_counting_glue_changes_no_result():
    """Device arrays stay device arrays through ufuncs, and compute what NumPy computes."""
    recorder = Recorder(count_glue=True)
    device = recorder.device("emu")
    x = device.xp.asarray(np.arange(6.0).reshape(2, 3))
    total, doubled = x.sum(), x * 2
    assert type(total) is type(x) and total.shape == () and float(total) == 15.0
    np.testing.assert_array_equal(doubled, np.arange(6.0).reshape(2, 3) * 2)
    rng = np.random.default_rng(1)
    logits, labels = rng.standard_normal((4, 10)), rng.integers(0, 10, 4)
    counted = F.cross_entropy(mc.tensor(logits, device=device), labels).item()
    assert counted == F.cross_entropy(mc.tensor(logits, device="emu"), labels).item()


@pytest.mark.parametrize("arch", ["vgg_like", "vgg8_bn", "resnet20"])
def test_a_warm_training_step_runs_no_glue(arch):
    """The loss's gradient comes with its forward (no seed of ones), Adam's step is advanced on
    the device, and a bias-less convolution (resnet20) reads a zero bias made once."""
    phases = count_step(arch, 4)
    assert [g.operation for _, glue in phases.values() for g in glue] == []
    launched = [r.family for launches, _ in phases.values() for r in launches]
    assert launched.count("cross_entropy_mean_labels") == 1 and len(phases["optimizer"][0]) == 1
    assert not {"cross_entropy_backward_labels", "sum_partials", "optim_advance"} & set(launched)


def test_a_loss_that_is_not_the_root_is_seeded_with_a_fill():
    """backward() from another scalar fills its seed with ones (glue) and runs the loss's
    backward kernel; from the loss itself it does neither."""
    recorder = Recorder(count_glue=True)
    device = recorder.device("dry")
    x = mc.tensor(np.zeros((4, 10), np.float32), device=device, requires_grad=True)
    labels = device.asarray(np.zeros(4, np.int64))
    for root, seed_glue, backward_launches in ((lambda loss: loss, [], 0),
                                               (lambda loss: loss * 1, ["ones_like"], 1)):
        loss = F.cross_entropy(x, labels)
        recorder.reset()
        root(loss).backward()
        families = [r.family for r in recorder.launches]
        assert [g.operation for g in recorder.glue if g.operation == "ones_like"] == seed_glue
        assert families.count("cross_entropy_backward_labels") == backward_launches
