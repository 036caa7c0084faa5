"""minicnn/profile/twins.py: the cooperative launches counted from their two-launch twins."""
import numpy as np
import pytest

import minicnn as mc
from minicnn import functional as F, nn
from minicnn.backends.recording import Recorder
from minicnn.emu.counters import AccessSite, LaunchCounters
from minicnn.profile.measure import CountInEmulator
from minicnn.profile.step import profile_step
from minicnn.profile.twins import TWINS_NOTE, attach_twin_counters, counted_with_twins


class BnStep:
    """A training step's forward and backward of conv -> BN -> ReLU -> max pool -> BN1d -> linear:
    one bn_relu_pool_* and one bn_* cooperative launch each way."""

    def __init__(self, device):
        self.device = device
        self.model = nn.Sequential(nn.Conv2d(3, 8, 3, padding="same"), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.MaxPool2d(2), nn.Flatten(), nn.BatchNorm1d(8 * 4 * 4),
                                   nn.Linear(8 * 4 * 4, 10)).to(device)
        self.model.train()
        self.x = device.asarray(np.random.default_rng(0).standard_normal((6, 3, 8, 8), np.float32))

    def __call__(self):
        loss = F.cross_entropy(self.model(mc.tensor(self.x, device=self.device)), np.arange(6) % 10)
        loss.backward()


def cooperative(launches):
    return [r for r in launches if r.source == "bn_one_launch.cu"]


def global_totals(counters):
    return [counters.total("global", op, name) for op in ("load", "store")
            for name in ("requests", "units", "ideal_units", "bytes")]


def test_twins_count_what_the_cooperative_grids_themselves_access():
    """Every block on both sides: the pairs' merged counts are the one-launch kernels' own."""
    recorder = Recorder(execute="skip", zero_fill=True)
    step = BnStep(recorder.device("emu"))
    step()  # compiles
    recorder.reset(execute=CountInEmulator("all"))
    step()
    run = cooperative(recorder.launches)
    twins = cooperative(counted_with_twins(step, recorder, blocks="all"))
    assert [r.family for r in twins] == ["bn_relu_pool_forward_one_launch", "bn_train_one_launch",
                                         "bn_backward_one_launch", "bn_relu_pool_backward_one_launch"]
    for own, twin in zip(run, twins):
        assert twin.counters.kernel == own.kernel and twin.counters.blocks_run == twin.counters.blocks_total
        assert global_totals(twin.counters) == pytest.approx(global_totals(own.counters), rel=1e-12)
        assert twin.counters.total("shared", None, "units") == own.counters.total("shared", None, "units")
    assert step.device.kernels.bn_in_one_launch  # switched back on


def test_sampled_twins_estimate_the_step_as_the_full_cooperative_grids_do():
    twins = profile_step("cnn7_bn", batch=2, blocks="sample")
    run = profile_step("cnn7_bn", batch=2, blocks="sample", twins=False)
    assert [r.kernel for r in twins.launches] == [r.kernel for r in run.launches]
    assert cooperative(twins.launches) and TWINS_NOTE in twins.notes and TWINS_NOTE not in run.notes
    assert twins.step_seconds == pytest.approx(run.step_seconds, rel=0.01)


def counters(kernel, blocks_total, blocks_run, units):
    site = AccessSite("batchnorm.cu:1", "global", "load", 4, 1, 32, units, units, 128)
    return LaunchCounters(kernel, (blocks_total, 1, 1), (256, 1, 1), blocks_total, blocks_run, 0, 0,
                          [site])


class Record:
    def __init__(self, source, kernel, counters=None):
        self.source, self.kernel, self.counters = source, kernel, counters
        self.grid, self.block = (8,), (256,)


def test_a_cooperative_launch_takes_its_pairs_scaled_totals_and_a_misaligned_step_is_refused():
    twins = [Record("conv.cu", "conv", counters("conv", 10, 2, 5)),
             Record("batchnorm.cu", "bn_moments", counters("bn_moments", 300, 3, 7)),
             Record("batchnorm.cu", "bn_normalize", counters("bn_normalize", 1000, 3, 4))]
    launches = [Record("conv.cu", "conv"), Record("bn_one_launch.cu", "bn_train_one_launch")]
    attach_twin_counters(launches, twins)
    assert launches[0].counters is twins[0].counters
    merged = launches[1].counters
    assert (merged.kernel, merged.grid, merged.blocks_total, merged.blocks_run) == \
        ("bn_train_one_launch", (8, 1, 1), 1300, 6)
    assert merged.total("global", "load", "units") == pytest.approx(100 * 7 + 1000 / 3 * 4)
    with pytest.raises(RuntimeError, match="has bn_moments where the profiled step launches conv"):
        attach_twin_counters([Record("conv.cu", "conv")], twins[1:])
    with pytest.raises(RuntimeError, match="no two-launch twin"):
        attach_twin_counters(launches, twins[:2])
    with pytest.raises(RuntimeError, match="1 kernels more"):
        attach_twin_counters(launches[:1], twins[:2])
