"""Profile one training step (forward, loss, backward, optimizer) of a zoo network.

    profile = profile_step("vgg_like", batch=512, device="emu", gpu="h100")
    profile.launches[0].kernel, profile.estimates[0].seconds, profile.step_seconds

Three recorded steps on a recording device (minicnn.backends.recording), same shapes each time:
  1. warm-up: compiles every kernel the step uses (launches are not run on the emulator);
  2. host: the step's launches, allocations and host-to-device copies, and its wall time.
     On the emulator the kernels are skipped, so this is the Python side of a step alone;
     on a GPU it is a real step, synchronized;
  3. counted: each launch runs in the emulator with the counters on, sampled blocks only.
     With blocks="sample" or a number, the cooperative launches (bn_one_launch.cu), whose grid
     barrier needs every block, are counted from their two-launch twins' sampled blocks instead
     (profile/twins.py: the same accesses, two steps); blocks="all" counts them as they are.
With device="cuda" a fourth step times every launch with CUDA events on the GPU.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from minicnn.profile.estimate import estimate
from minicnn.profile.gpus import Gpu, get_gpu
from minicnn.profile.measure import CountInEmulator, CudaEventTimer
from minicnn.backends.cuda_launch import COOPERATIVE_SOURCES
from minicnn.backends.recording import Recorder
from minicnn.profile.static import StaticFactsError, static_facts
from minicnn.profile.twins import TWINS_NOTE, counted_with_twins

MAX_BATCH = 65536


@dataclass
class StepProfile:
    arch: str
    batch: int
    device: str
    gpu: Gpu
    launches: list                  # LaunchRecord, counted (and timed on a GPU)
    estimates: list                 # Estimate per launch
    facts: dict                     # kernel expression -> KernelFacts (or absent)
    host_seconds: float             # measured wall time of step 2
    allocations: int                # in step 2
    host_to_device: int             # in step 2
    notes: list = field(default_factory=list)
    precision: str = "fp32"         # of the float32 GEMMs and convolutions (v2 SIMT or v3 mma)

    @property
    def step_seconds(self) -> float:
        return sum(e.seconds for e in self.estimates)

    @property
    def measured_seconds(self) -> float | None:
        times = [r.gpu_seconds for r in self.launches]
        return sum(times) if times and None not in times else None


def check_batch(batch: int) -> None:
    if not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"--batch must be an int in [1, {MAX_BATCH}], got {batch!r}")


def profile_step(arch: str, batch: int = 512, device: str = "emu", gpu: str = "h100", blocks="sample",
                 seed: int = 0, precision: str = "fp32", twins: bool = True) -> StepProfile:
    """twins=False: cooperative launches counted as they run, every block (minutes at batch 512;
    the reference that profile/twins.py's estimate is checked against)."""
    from minicnn.backends import get_device
    from minicnn.models import get_spec

    spec, target = get_spec(arch), get_gpu(gpu)
    check_batch(batch)
    if device not in ("emu", "cuda"):
        raise ValueError(f"--device must be emu or cuda, got {device!r}")
    if device == "cuda":
        get_device("cuda")  # DeviceError, one line, when there is no usable GPU
    notes = []
    with np.errstate(all="ignore"):  # skipped launches leave garbage that NumPy glue then touches
        recorder = Recorder(execute="skip" if device == "emu" else "run", zero_fill=device == "emu")
        # the emulator's cooperative grids as large as on the GPU estimated for (measure.py)
        sm_count = target.sm_count if device == "emu" else None
        step = _Step(spec, batch, recorder.device(device, precision, sm_count), seed)
        step()  # warm-up: compiles the kernels
        host_seconds = _timed_step(step, recorder)
        allocations, copies = recorder.allocations, recorder.host_to_device
        if device == "emu":
            launches = _counted_launches(step, recorder, blocks, twins)
        else:
            emu_recorder = Recorder(execute="skip", zero_fill=True)
            emu_step = _Step(spec, batch, emu_recorder.device("emu", precision, target.sm_count),
                             seed)
            emu_step()  # compiles the emulator's kernels outside the counted step
            launches = _counted_launches(emu_step, emu_recorder, blocks, twins)
            _attach_timings(launches, _gpu_timed_launches(step, recorder))
    if twins and blocks != "all" and any(r.source in COOPERATIVE_SOURCES for r in launches):
        notes.append(TWINS_NOTE)
    facts = _facts(launches, target, notes)
    estimates = [estimate(r, target, facts.get(r.kernel)) for r in launches]
    if device == "emu":
        notes.append("host time: the step's Python side with every launch skipped (the emulator "
                     "only runs sampled blocks, so timing it would say nothing about a GPU)")
    return StepProfile(spec.name, batch, device, target, launches, estimates, facts, host_seconds,
                       allocations, copies, notes, precision)


class _Step:
    """One training step of a fresh model on a recording device, callable repeatedly."""

    def __init__(self, spec, batch, device, seed):
        from minicnn import functional as F
        from minicnn.autograd import tensor
        from minicnn.train.loop import build_optimizer

        classes = 100 if spec.recipe.dataset == "cifar100" else 10
        rng = np.random.default_rng(seed)
        self.device = device
        self.model = spec.build(classes).to(device)
        self.model.train()
        self.optimizer = build_optimizer(spec.recipe, self.model.parameters())
        self.x = device.asarray(rng.standard_normal((batch, 3, 32, 32), dtype=np.float32))
        self.y = device.asarray(rng.integers(0, classes, batch))
        self._F, self._tensor = F, tensor

    def __call__(self):
        loss = self._F.cross_entropy(self.model(self._tensor(self.x, device=self.device)), self.y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


def _timed_step(step: _Step, recorder: Recorder) -> float:
    """Wall time of one step, with the recorder's launches, allocations and copies reset first."""
    recorder.reset()
    with recorder.recording(step.device):
        start = time.perf_counter()
        step()
        if step.device.name == "cuda":
            step.device.xp.cuda.Device().synchronize()
        return time.perf_counter() - start


def _counted_launches(step: _Step, recorder: Recorder, blocks, twins: bool) -> list:
    if twins and blocks != "all":
        return counted_with_twins(step, recorder, blocks)
    recorder.reset(execute=CountInEmulator(blocks))
    step()
    return recorder.launches


def _gpu_timed_launches(step: _Step, recorder: Recorder) -> list:
    timer = CudaEventTimer()
    recorder.reset(execute=timer)
    step()
    timer.finish()
    return recorder.launches


def _attach_timings(counted: list, timed: list) -> None:
    if [r.kernel for r in counted] != [r.kernel for r in timed]:
        raise RuntimeError("the GPU step launched different kernels than the emulator's step")
    for c, t in zip(counted, timed):
        c.gpu_seconds = t.gpu_seconds


def _facts(launches, gpu: Gpu, notes: list) -> dict:
    """The compiler's facts for every kernel the step launched; none (with a note) without nvcc."""
    by_source: dict[str, set] = {}
    for r in launches:
        by_source.setdefault(r.source, set()).add(r.kernel)
    facts = {}
    for source, kernels in sorted(by_source.items()):
        try:
            facts.update(static_facts(source, sorted(kernels), gpu.arch))
        except StaticFactsError as error:
            notes.append(f"no compiler facts for {source} ({error}): occupancy and issue terms left out")
    notes.extend(sorted({f.mix.note for f in facts.values() if f.mix is not None and f.mix.note}))
    return facts
