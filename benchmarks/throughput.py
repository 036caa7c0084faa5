"""Training throughput (img/s) of zoo networks: minicnn against PyTorch eager on the same device.

    python benchmarks/throughput.py                                   # vgg_like, vgg8_bn; batch 512; GPU
    python benchmarks/throughput.py --batch 512 32                    # and the launch-bound batch 32
    python benchmarks/throughput.py --device cpu --batch 8 --steps 1 --rounds 1   # plumbing, no GPU

One step = forward, cross-entropy, backward, Adam, on a random batch already on the device.
On a GPU minicnn runs twice: its steps replayed as one CUDA graph each (minicnn/train/
graph_step.py, `minicnn train`'s default there) and eagerly (--no-graphs), every kernel launched.
PyTorch runs the same layer sequence (a twin built from the minicnn model: same shapes, TF
'same' padding, Keras/torch batch-norm settings are irrelevant to speed) twice: with its TF32
defaults (cuDNN convolutions in TF32, matmuls in float32) and with TF32 off. The three runs
alternate, round after round, so that clock and thermal drift hit them alike; the table gives
the median img/s over rounds. Needs PyTorch (tests/benchmarks only, never minicnn/).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np


def torch_twin(model, torch):
    """A torch.nn.Sequential with the layers of a flat minicnn Sequential, in order."""
    from minicnn import nn as mnn

    tnn, F = torch.nn, torch.nn.functional

    class TFSamePad(tnn.Module):
        """TensorFlow's 'same' padding (odd extra at bottom/right), computed from the input."""

        def __init__(self, kernel, stride, value):
            super().__init__()
            self.kernel, self.stride, self.value = kernel, stride, value

        def forward(self, x):
            pads = []
            for n, k, s in zip(x.shape[:1:-1], self.kernel[::-1], self.stride[::-1]):
                total = max((math.ceil(n / s) - 1) * s + k - n, 0)
                pads += [total // 2, total - total // 2]
            return F.pad(x, pads, value=self.value)

    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    layers = []
    for _, m in model.named_modules():
        if isinstance(m, mnn.Conv2d):
            f, c, kh, kw = m.weight_shape
            stride = pair(m.stride)
            if m.padding == "same" and stride == (1, 1) and kh % 2 and kw % 2:
                layers.append(tnn.Conv2d(c, f, (kh, kw), 1, (kh // 2, kw // 2), bias=m.use_bias))
            else:
                if m.padding == "same":
                    layers.append(TFSamePad((kh, kw), stride, 0.0))
                padding = 0 if m.padding in ("same", "valid") else m.padding
                layers.append(tnn.Conv2d(c, f, (kh, kw), stride, padding, bias=m.use_bias))
        elif isinstance(m, mnn.Linear):
            out_features, in_features = m.weight_shape
            layers.append(tnn.Linear(in_features, out_features, bias=m.use_bias))
        elif isinstance(m, (mnn.BatchNorm2d, mnn.BatchNorm1d)):
            kind = tnn.BatchNorm2d if isinstance(m, mnn.BatchNorm2d) else tnn.BatchNorm1d
            layers.append(kind(m.weight.shape[0], eps=m.eps, momentum=m.momentum))
        elif isinstance(m, mnn.MaxPool2d):
            kernel, stride = pair(m.kernel_size), pair(m.stride or m.kernel_size)
            if m.padding == "same":
                layers.append(TFSamePad(kernel, stride, float("-inf")))
            layers.append(tnn.MaxPool2d(kernel, stride, 0 if m.padding in ("same", "valid") else m.padding))
        elif isinstance(m, mnn.ReLU):
            layers.append(tnn.ReLU())
        elif isinstance(m, mnn.Dropout):
            layers.append(tnn.Dropout(m.rate))
        elif isinstance(m, mnn.Flatten):
            layers.append(tnn.Flatten())
        elif not isinstance(m, mnn.Sequential):
            raise ValueError(f"no PyTorch twin for {type(m).__name__}")
    return tnn.Sequential(*layers)


def minicnn_runner(arch: str, batch: int, device: str, graphs: bool = False):
    """step(n) runs n training steps of minicnn, synchronized at the end; graphs: CUDA graphs."""
    from minicnn.backends import get_device
    from minicnn.models import get_spec
    from minicnn.train.graph_step import CupyGraphs, GraphStep
    from minicnn.train.loop import build_optimizer

    dev, spec = get_device(device), get_spec(arch)
    model = spec.build(10).to(dev)
    model.train()
    optimizer = build_optimizer(spec.recipe, model.parameters())
    rng = np.random.default_rng(0)
    x = dev.asarray(rng.standard_normal((batch, 3, 32, 32), dtype=np.float32))
    y = dev.asarray(rng.integers(0, 10, batch))
    step = GraphStep(model, optimizer, dev, CupyGraphs(dev.kernels.runtime) if graphs else None)

    def steps(n):
        for _ in range(n):
            step(x, y)
        if dev.name == "cuda":
            dev.xp.cuda.Device().synchronize()
    return steps, model


def torch_runner(model, batch: int, device: str, tf32: bool, torch):
    twin = torch_twin(model, torch).to(device).train()
    optimizer = torch.optim.Adam(twin.parameters(), lr=1e-3)
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=generator).to(device)
    y = torch.randint(0, 10, (batch,), generator=generator).to(device)

    def steps(n):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's default either way
        for _ in range(n):
            loss = torch.nn.functional.cross_entropy(twin(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
    return steps


def measure(arch: str, batch: int, device: str, steps: int, rounds: int) -> list[tuple[str, float]]:
    import torch

    ours, model = minicnn_runner(arch, batch, device)
    runners = [("minicnn", ours)]
    if device == "cuda":
        runners = [("minicnn, CUDA graphs", minicnn_runner(arch, batch, device, graphs=True)[0]),
                   ("minicnn, eager (--no-graphs)", ours)]
    torch_device = "cuda" if device == "cuda" else "cpu"
    label = "PyTorch eager, TF32 default" if device == "cuda" else "PyTorch eager"
    runners.append((label, torch_runner(model, batch, torch_device, True, torch)))
    if device == "cuda":
        runners.append(("PyTorch eager, TF32 off", torch_runner(model, batch, torch_device, False, torch)))
    for _, run in runners:
        run(3)  # warm-up: compile kernels, pick cuDNN algorithms, capture minicnn's graph
    rates = {name: [] for name, _ in runners}
    for _ in range(rounds):
        for name, run in runners:
            start = time.perf_counter()
            run(steps)
            rates[name].append(batch * steps / (time.perf_counter() - start))
    return [(name, statistics.median(r)) for name, r in rates.items()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["vgg_like", "vgg8_bn"])
    parser.add_argument("--batch", type=int, nargs="+", default=[512])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        from minicnn.backends import cuda_status
        usable, reason = cuda_status()
        if not usable:
            raise SystemExit(f"throughput: skipped, no usable GPU ({reason})")
    print(f"training throughput, {args.device}, median of {args.rounds} alternating rounds of "
          f"{args.steps} steps")
    print(f"{'network':<10} {'batch':>5} {'framework':<30} {'ms/step':>8} {'img/s':>10} {'vs minicnn':>10}")
    for batch in args.batch:
        for arch in args.arch:
            results = measure(arch, batch, args.device, args.steps, args.rounds)
            ours = results[0][1]
            for name, rate in results:
                print(f"{arch:<10} {batch:>5} {name:<30} {batch / rate * 1e3:>8.2f} {rate:>10,.0f} "
                      f"{rate / ours:>9.2f}x")


if __name__ == "__main__":
    main()
