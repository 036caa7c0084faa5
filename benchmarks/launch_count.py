"""Count the kernel launches of one training step (forward, loss, backward, optimizer).

    python benchmarks/launch_count.py                     # vgg_like, batch 512
    python benchmarks/launch_count.py --arch vgg8_bn --by-kernel
    python benchmarks/launch_count.py --unfused           # every layer on its own; split-K
                                                          # sums, BN statistics and linear
                                                          # biases in two launches each, a
                                                          # layer's gradients in separate ones
    python benchmarks/launch_count.py --bn-two-launch     # batch norm's two-launch passes
    python benchmarks/launch_count.py --with-data         # also the data loader's work per batch
                                                          # (--augment NAME: another preset)

The step runs on minicnn.backends.recording's "dry" device (CudaKernels over DryRuntime),
which records every launch and runs nothing (arrays stay uninitialized), so it takes a second
on any CPU (uninitialized arrays are never touched, so batch 512 needs little memory). The
batch changes the count only through split-K: a product with a small grid (a weight gradient's
long sum over the batch, the last layers' small images) is cut into slices, which the product's
last block adds (unfused: one more launch, sum_splits). "array GB" adds up the
bytes of each launch's distinct array arguments (and of the arrays its pointer tables reach):
a roofline-style estimate of the step's DRAM traffic that counts every array once per launch
(tiled kernels re-read some inputs; caches absorb part of it). The array-module glue a GPU
step also runs (CuPy's own fill, copy and element-wise kernels: a zero fill, a gradient added
by `+`, an astype; minicnn.backends.recording's GlueRecord) has its own row, with its bytes;
"total" counts both. The step's data (the batch and its labels) is already on the device;
--with-data adds the rows of the loader's per-batch work that makes them (gather, uint8 to
float, augmentation, normalization: kernels.prepare_batch), recorded the same way on a set of
exactly one batch, so that the bytes of reading the set are those of the batch's rows.
"""
from __future__ import annotations

import argparse
import contextlib
from collections import Counter

import numpy as np

from minicnn import functional as F
from minicnn import optim, tensor
from minicnn.backends.recording import Recorder
from minicnn.data import BatchLoader, Normalizer, augment_preset
from minicnn.models.zoo import get_spec
from minicnn.nn import fusion


def count_step(arch: str, batch: int, fused: bool = True, bn_one_launch: bool = True,
               recorder: Recorder | None = None) -> dict[str, tuple[list, list]]:
    """(kernel launches, glue) per phase of the second training step of `arch` (the first one
    warms up). fused=False adds split-K slices, computes BN statistics and adds a linear
    layer's bias in two launches each, the loss's mean and gradient and Adam's step advance in
    launches of their own, and a conv's or linear layer's gradients in separate launches (nn
    fusion is the caller's). bn_one_launch=False (or fused=False): batch norm's two-launch
    passes instead of bn_one_launch.cu's. recorder: a Recorder(execute="skip", count_glue=True)
    to record into (then also read its allocations and copies of the step), else a new one."""
    recorder = recorder or Recorder(execute="skip", count_glue=True)
    device = recorder.device("dry")
    kernels = device.kernels  # CudaKernels
    kernels.split_k_in_one_launch = kernels.bn_statistics_in_one_launch = fused
    kernels.linear_bias_in_epilogue = kernels.loss_in_one_launch = fused
    kernels.adam_advance_in_update = kernels.backward_in_one_launch = fused
    kernels.bn_in_one_launch = fused and bn_one_launch
    model = get_spec(arch).build().to(device)
    model.train()
    optimizer = optim.Adam(model.parameters())
    x = tensor(np.zeros((batch, 3, 32, 32), np.float32), device=device)
    labels = device.asarray(np.zeros(batch, np.int64))
    for _ in range(2):
        recorder.reset()
        loss = F.cross_entropy(model(x), labels)
        forward = len(recorder.launches), len(recorder.glue)
        optimizer.zero_grad()
        loss.backward()
        backward = len(recorder.launches), len(recorder.glue)
        optimizer.step()
    ends = {"forward + loss": forward, "backward": backward,
            "optimizer": (len(recorder.launches), len(recorder.glue))}
    phases, start = {}, (0, 0)
    for phase, end in ends.items():
        phases[phase] = (recorder.launches[start[0]:end[0]], recorder.glue[start[1]:end[1]])
        start = end
    return phases


def count_batch(arch: str, batch: int, augment: str | None = None) -> tuple[list, list]:
    """(kernel launches, glue) of the data loader's work for one training batch of `arch`'s
    recipe (its normalization; its augmentation preset unless `augment` names another), on the
    dry device. The set holds one batch of uint8 images (all zeros: the launches do not depend
    on the pixels), and the second epoch's batch is the one recorded (the first copies the
    normalization constants)."""
    recipe = get_spec(arch).recipe
    recorder = Recorder(execute="skip", count_glue=True)
    images = np.zeros((batch, 3, 32, 32), np.uint8)
    loader = BatchLoader(images, np.zeros(batch, np.int64), batch, shuffle=True,
                         normalizer=Normalizer.fit(recipe.normalization, images),
                         augment=augment_preset(augment or recipe.augmentation),
                         device=recorder.device("dry"))
    next(iter(loader))
    recorder.reset()
    next(iter(loader))
    return recorder.launches, recorder.glue


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg_like")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--by-kernel", action="store_true", help="list every kernel's count")
    parser.add_argument("--unfused", action="store_true",
                        help="run every layer on its own (minicnn.nn.fusion off), split-K "
                             "sums, BN statistics and linear biases in two launches each, "
                             "a layer's gradients in separate launches")
    parser.add_argument("--bn-two-launch", action="store_true",
                        help="batch norm's two-launch passes (statistics, then output; sums, "
                             "then dx), not bn_one_launch.cu's cooperative kernels")
    parser.add_argument("--with-data", action="store_true",
                        help="also count the data loader's per-batch work (kernels.prepare_batch)")
    parser.add_argument("--augment", default=None,
                        help="with --with-data: an augmentation preset (default: the arch's recipe's)")
    args = parser.parse_args(argv)
    with fusion.unfused() if args.unfused else contextlib.nullcontext():
        recorder = Recorder(execute="skip", count_glue=True)
        phases = count_step(args.arch, args.batch, fused=not args.unfused,
                            bn_one_launch=not args.bn_two_launch, recorder=recorder)
    fused = "unfused" if args.unfused else "fused" + (", BN in two launches" * args.bn_two_launch)
    augment = args.augment or get_spec(args.arch).recipe.augmentation
    data = f"; data loader with augmentation '{augment}'" * args.with_data
    print(f"launches per training step, {args.arch}, batch {args.batch}, {fused}{data}")
    print(f"{'phase':<18} {'launches':>8} {'array GB':>9}")
    kernels = sum((launches for launches, _ in phases.values()), [])
    glue = sum((glue for _, glue in phases.values()), [])
    rows = [(phase, launches) for phase, (launches, _) in phases.items()]
    rows += [("kernels/*.cu", kernels), ("array-module glue", glue), ("total", kernels + glue)]
    if args.with_data:
        data_kernels, data_glue = count_batch(args.arch, args.batch, args.augment)
        rows += [("data: kernels", data_kernels), ("data: glue", data_glue),
                 ("total with data", kernels + glue + data_kernels + data_glue)]
        kernels, glue = kernels + data_kernels, glue + data_glue
    for phase, launches in rows:
        gigabytes = sum(launch.array_bytes for launch in launches) / 1e9
        print(f"{phase:<18} {len(launches):>8} {gigabytes:>9.3f}")
    print(f"step allocations {recorder.allocations}, host-to-device copies {recorder.host_to_device}"
          " (NumPy moves the gradients: Adam's table, see grad_addresses.py)")
    if args.by_kernel:
        names = [launch.kernel for launch in kernels] + [f"glue: {g.operation}" for g in glue]
        for name, count in Counter(names).most_common():
            print(f"  {count:>4}  {name}")


if __name__ == "__main__":
    main()
