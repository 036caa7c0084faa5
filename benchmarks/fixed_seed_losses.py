"""Fixed-seed training losses on the CPU: proof that a speed change left the arithmetic alone.

    python benchmarks/fixed_seed_losses.py --save /tmp/before.json     # on the old code
    python benchmarks/fixed_seed_losses.py --compare /tmp/before.json  # on the new code

Trains each network for --steps steps (seed 0, the same random images, the recipe's optimizer)
and prints every loss; with --compare it also prints the largest relative difference from the
saved run. Random labels and Adam make these runs chaotic: a float32 rounding difference
(~1e-7, e.g. from another BLAS thread count) grows to percent level within 20 steps. So the
check has two parts: float32 against the noise floor of the old code run with another
OPENBLAS_NUM_THREADS, and --dtype float64, where rounding stays near 1e-12 and any real
change in the maths still shows.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

import minicnn as mc
from minicnn import functional as F
from minicnn.models import get_spec
from minicnn.train.loop import build_optimizer

NETWORKS = ("vgg_like", "vgg8_bn", "resnet20")


def losses(arch, steps, batch, dtype):
    mc.manual_seed(0)
    spec = get_spec(arch)
    model = spec.build(10).to(dtype=dtype)
    optimizer = build_optimizer(spec.recipe, model.parameters())
    rng = np.random.default_rng(0)
    images = rng.random((4 * batch, 3, 32, 32), dtype=dtype)
    labels = rng.integers(0, 10, 4 * batch)
    return train_losses(model, optimizer, images, labels, steps, batch, dtype)


def train_losses(model, optimizer, images, labels, steps, batch, dtype=np.float32, device="cpu"):
    """The loss of each of `steps` steps; step i trains on the batch at (i * batch) % len(images)."""
    out = []
    for step in range(steps):
        start = (step * batch) % len(images)
        optimizer.zero_grad()
        x = mc.tensor(images[start:start + batch], dtype=dtype, device=device)
        loss = F.cross_entropy(model(x), labels[start:start + batch])
        loss.backward()
        optimizer.step()
        out.append(loss.item())
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--save", help="write the losses to this JSON file")
    parser.add_argument("--compare", help="a JSON file written by --save")
    args = parser.parse_args()
    result = {arch: losses(arch, args.steps, args.batch, np.dtype(args.dtype)) for arch in NETWORKS}
    saved = json.load(open(args.compare)) if args.compare else None
    for arch, values in result.items():
        print(f"{arch:<9} " + " ".join(f"{v:.5f}" for v in values))
        if saved:
            difference = np.abs(np.array(values) - saved[arch]) / np.abs(saved[arch])
            print(f"{'':<9} largest relative difference from {args.compare}: {difference.max():.1e} "
                  f"(step {int(difference.argmax()) + 1})")
    if args.save:
        with open(args.save, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
