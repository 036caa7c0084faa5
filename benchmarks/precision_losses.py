"""What --precision tf32 / bf16 cost in accuracy: one short training run per precision, side by side.

    PYTHONPATH=$PWD nice python benchmarks/precision_losses.py --arch vgg8_bn --steps 12 --batch 16 \
        --data /path/holding/cifar-10-batches-py

Trains `--arch` on the emulator (device "emu": the CUDA kernels running on the CPU, v2 SIMT for
fp32, v3 tensor-core mma for tf32 and bf16) from the same seed, on the same CIFAR-10 training
images (the first steps * batch of them, in order), with the recipe's optimizer, and prints the
loss of every step in each precision beside fp32's, then the largest gap. Without --data the
images are fixed random ones (labels too), which still shows whether the curves agree.
The emulator runs every GPU thread on the CPU, so keep steps * batch small; the wall time of
each run is printed. Nothing here is timed for speed.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import minicnn as mc
from minicnn.backends import get_device
from minicnn.backends.precision import PRECISIONS
from minicnn.models import get_spec
from minicnn.train.loop import build_optimizer

from fixed_seed_losses import train_losses  # this folder (python puts a script's folder on sys.path)


def images_and_labels(count: int, data: str | None):
    """(count, 3, 32, 32) float32 images scaled to [0, 1] and their labels."""
    if data is None:
        rng = np.random.default_rng(0)
        return rng.random((count, 3, 32, 32), dtype=np.float32), rng.integers(0, 10, count)
    from minicnn.data.cifar import load_cifar
    cifar = load_cifar("cifar10", data)
    return cifar.train_x[:count].astype(np.float32) / 255.0, cifar.train_y[:count]


def losses(arch: str, precision: str, steps: int, batch: int, images, labels) -> list[float]:
    """The loss of each of `steps` training steps of `arch` on the emulator in `precision`."""
    device = get_device("emu", precision=precision)
    mc.manual_seed(0)
    spec = get_spec(arch)
    model = spec.build(10).to(device)
    model.train()
    optimizer = build_optimizer(spec.recipe, model.parameters())
    return train_losses(model, optimizer, images, labels, steps, batch, device=device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg8_bn")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--data", default=None, help="folder holding cifar-10-batches-py (else random images)")
    args = parser.parse_args()
    images, labels = images_and_labels(args.steps * args.batch, args.data)
    curves = {}
    for precision in PRECISIONS:
        start = time.perf_counter()
        curves[precision] = losses(args.arch, precision, args.steps, args.batch, images, labels)
        print(f"{precision}: {time.perf_counter() - start:.0f} s wall, losses "
              + " ".join(f"{v:.4f}" for v in curves[precision]), flush=True)
    print(f"\n{args.arch}, batch {args.batch}, emulator, "
          f"{'CIFAR-10 training images' if args.data else 'random images'}")
    print(f"{'step':>4}  " + "  ".join(f"{p:>8}" for p in PRECISIONS))
    for step in range(args.steps):
        print(f"{step + 1:>4}  " + "  ".join(f"{curves[p][step]:8.4f}" for p in PRECISIONS))
    fp32 = np.array(curves["fp32"])
    for precision in PRECISIONS[1:]:
        gap = np.abs(np.array(curves[precision]) - fp32)
        print(f"{precision} vs fp32: largest gap {gap.max():.4f} (step {gap.argmax() + 1}), "
              f"final {curves[precision][-1]:.4f} vs {fp32[-1]:.4f}")


if __name__ == "__main__":
    main()
