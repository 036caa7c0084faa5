"""How far a reader walks from nn.Conv2d to the code that computes, and what guards the way.

The walk is the call stack at the moment the kernel starts: numpy_ref.conv2d_forward on the
CPU, the emulator's kernel launch for the CUDA kernels. Issue 15 measured it before the ops
were reorganised at 6 calls over 5 files on the CPU and about 10 over 11 for CUDA; it must
stay shorter. The argument rules (minicnn/backends/checks.py) are applied by the op's forward
beside its kernel call, so they are off the walk, and a test below makes sure no forward
calls a kernel that has a rule without running that rule first.
"""
from __future__ import annotations

import traceback
from pathlib import Path

import numpy as np
import pytest

import minicnn as mc
from minicnn import nn
from minicnn.autograd import no_grad
from minicnn.backends import Device, checks, numpy_ref
from minicnn.emu import runtime as emu_runtime
from minicnn.gradcheck_cases import all_cases

PACKAGE = Path(mc.__file__).resolve().parent
BEFORE = {"cpu": (6, 5), "emu": (10, 11)}  # (calls, files) in the issue


def conv_walk(device: str, monkeypatch) -> list[tuple[str, str]]:
    """(file inside minicnn/, function) of each call from Conv2d.forward to the kernel's start."""
    owner, name = (numpy_ref, "conv2d_forward") if device == "cpu" else (emu_runtime.EmuKernel, "__call__")
    kernel, stacks = getattr(owner, name), []

    def spy(*args, **kwargs):
        stacks.append(traceback.extract_stack()[:-1])
        return kernel(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    layer = nn.Conv2d(3, 4, 3, padding=1).to(device)
    layer(mc.tensor(np.ones((2, 3, 5, 5)), device=device))
    paths = [(Path(f.filename).resolve(), f.name) for f in stacks[0]]
    frames = [(path.relative_to(PACKAGE).as_posix(), function) for path, function in paths
              if path.is_relative_to(PACKAGE)]
    start = frames.index(("nn/layers.py", "forward"))
    kernel_file = "backends/numpy_ref.py" if device == "cpu" else "emu/runtime.py"
    return frames[start:] + [(kernel_file, name)]


def test_the_cpu_walk_is_the_op_its_function_and_the_kernel(monkeypatch):
    walk = conv_walk("cpu", monkeypatch)
    assert walk == [("nn/layers.py", "forward"), ("ops/conv.py", "conv2d"),
                    ("autograd.py", "__call__"), ("ops/conv.py", "forward"),
                    ("backends/numpy_ref.py", "conv2d_forward")], walk
    calls, files = BEFORE["cpu"]
    assert len(walk) < calls and len({f for f, _ in walk}) < files


def test_the_cuda_walk_adds_only_the_launcher(monkeypatch):
    walk = conv_walk("emu", monkeypatch)
    assert walk[:5] == [("nn/layers.py", "forward"), ("ops/conv.py", "conv2d"),
                        ("autograd.py", "__call__"), ("ops/conv.py", "forward"),
                        ("backends/cuda.py", "conv2d_forward")], walk
    assert not any(f == "backends/checks.py" for f, _ in walk), walk
    calls, files = BEFORE["emu"]
    assert len(walk) <= 8 < calls and len({f for f, _ in walk}) <= 7 < files, walk


class Recorder:
    """numpy_ref whose kernel calls, and the rules of checks.py, are logged in one list."""

    def __init__(self, log):
        self.log = log

    def __getattr__(self, name):
        kernel = getattr(numpy_ref, name)

        def call(*args, **kwargs):
            self.log.append(("kernel", name, args))
            return kernel(*args, **kwargs)
        return call


def logged_rules(log, monkeypatch):
    for name, rule in checks.RULES.items():
        def call(*args, _name=name, _rule=rule, **kwargs):
            log.append(("rule", _name, args))
            return _rule(*args, **kwargs)
        monkeypatch.setattr(checks, name, call)


CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.op}:{c.shape}" for c in CASES])
def test_every_forward_runs_the_rule_of_each_kernel_it_calls(case, monkeypatch):
    log = []
    logged_rules(log, monkeypatch)
    device = Device("recorded", np, Recorder(log))
    forward, _ = case.build(np.random.default_rng(0), device, np.float64)
    with no_grad():
        log.clear()
        forward()
    names = [(kind, name) for kind, name, _ in log]
    checked = [i for i, (kind, name) in enumerate(names) if kind == "kernel" and name in checks.RULES]
    assert checked or case.op in ("sum", "mean", "reshape", "flatten", "nn.Flatten"), names
    for i in checked:
        _, name, args = log[i]
        since_last_kernel = log[max([j for j in range(i) if log[j][0] == "kernel"], default=-1) + 1:i]
        assert any(entry[:2] == ("rule", name) and all(a is b for a, b in zip(entry[2], args, strict=True))
                   for entry in since_last_kernel), f"{name} ran without its rule: {names}"
