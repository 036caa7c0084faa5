"""Counters of the cooperative launches (bn_one_launch.cu) from their two-launch twins.

    launches = counted_with_twins(step, recorder, blocks="sample")

A cooperative grid cannot be sampled: a grid barrier waits for every block, so the emulator
runs all of them, every element of the batch (minutes per step at batch 512). Each of those
kernels reads and writes exactly what its two-launch twin does (cuda_norm.py's
bn_in_one_launch = False: bn_moments then bn_normalize, *_backward_sums then *_backward_dx...,
same slices, same per-element code), plus a grid barrier. So the step is run twice:
  1. with bn_in_one_launch off, counted in the emulator with sampled blocks, as every other
     launch is;
  2. with it on, launches skipped (recorded only), the step the profile reports;
and each cooperative launch of step 2 gets the merged counters of the twin pair that stands at
its place in step 1 (the other launches: their own counts from step 1). The barrier's own
accesses (on a GPU an atomic and a poll per block) are not counted.
"""
from __future__ import annotations

from minicnn.backends.cuda_launch import COOPERATIVE_SOURCES
from minicnn.emu.counters import merge_counters
from minicnn.profile.measure import CountInEmulator

TWINS_NOTE = ("cooperative launches (bn_one_launch.cu): counters of their two-launch twins' "
              "sampled blocks, merged (the same accesses; the grid barrier's not counted); "
              "--blocks all counts them as they are")
TWIN_LAUNCHES = 2  # a cooperative launch's grid barrier stands where the pair's boundary was


def counted_with_twins(step, recorder, blocks="sample") -> list:
    """The LaunchRecords of one `step` (profile/step.py's _Step on `recorder`'s device), with
    counters: the cooperative launches' from their twins (module docstring)."""
    kernels = step.device.kernels
    one_launch, kernels.bn_in_one_launch = kernels.bn_in_one_launch, False
    try:
        recorder.reset(execute=CountInEmulator(blocks))
        step()
        twins = recorder.launches
    finally:
        kernels.bn_in_one_launch = one_launch
    recorder.reset(execute="skip")
    step()
    attach_twin_counters(recorder.launches, twins)
    return recorder.launches


def attach_twin_counters(launches: list, twins: list) -> None:
    """Sets each record's counters from `twins`, the same step's counted launches with batch
    norm in two launches: a launch of a cooperative source takes the next TWIN_LAUNCHES twins'
    merged counters, any other the next twin's (which must be the same kernel)."""
    position = 0
    for record in launches:
        if record.source in COOPERATIVE_SOURCES:
            pair = twins[position:position + TWIN_LAUNCHES]
            position += TWIN_LAUNCHES
            if len(pair) < TWIN_LAUNCHES:
                raise RuntimeError(f"{record.kernel} has no two-launch twin in the counted step")
            record.counters = merge_counters(record.kernel, _three(record.grid), _three(record.block),
                                             [(t.counters.blocks_total, t.counters) for t in pair])
        else:
            if position >= len(twins) or twins[position].kernel != record.kernel:
                found = twins[position].kernel if position < len(twins) else "nothing"
                raise RuntimeError(f"the two-launch step has {found} where the profiled step "
                                   f"launches {record.kernel}")
            record.counters = twins[position].counters
            position += 1
    if position != len(twins):
        raise RuntimeError(f"the two-launch step launched {len(twins) - position} kernels more "
                           f"than its twins account for")


def _three(dims) -> tuple:
    """A launch's grid or block as (x, y, z), as LaunchCounters keeps them."""
    dims = tuple(int(d) for d in dims)
    return dims + (1,) * (3 - len(dims))
