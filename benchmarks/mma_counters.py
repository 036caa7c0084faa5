"""Global coalescing and shared-memory bank conflicts of the product kernels (convolutions and
GEMMs) from the emulator's counters, on the layer shapes of one training step.

    PYTHONPATH=$PWD python benchmarks/mma_counters.py --arch vgg_like --batch 8
    PYTHONPATH=$PWD python benchmarks/mma_counters.py --precisions fp32,tf32,bf16
    PYTHONPATH=$PWD python benchmarks/mma_counters.py --separate-backward  # the two-launch backward
    PYTHONPATH=$PWD python benchmarks/mma_counters.py --kernels-dir /tmp/main_kernels/kernels  # before

Records one training step per precision (minicnn.profile.step, sampled blocks): fp32 runs the
v2 SIMT kernels, tf32 and bf16 the tensor-core (v3) ones. Per kernel family, then per conv pass
(forward: its plain, ReLU-fused and split-K kernels; backward-data: with the weight transpose
it reads; backward, one launch: backward.cu's kernel, whose blocks run both products), it sums the counters of minicnn.emu.counters: global loads as ideal / actual 32-byte
sectors (100% = perfectly coalesced), shared accesses as wavefronts / ideal (1.00 = no bank
conflict), split into stores (cp.async landing in the tile) and loads (the fragment loads:
ldmatrix or scalar; v2's vector loads). No GPU is needed; nothing is timed.
"""
from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

from minicnn.backends.cuda_backward import BackwardLaunches
from minicnn.profile.estimate import CONV_FAMILIES, GEMM_FAMILIES
from minicnn.profile.step import profile_step

# The conv passes and the families each one launches.
PASSES = {"forward": ("conv2d_forward", "conv2d_relu_forward", "conv2d_forward_split_k"),
          "backward-data": ("conv2d_backward_data", "conv2d_backward_data_split_k", "conv_weight_transpose"),
          "backward-weight": ("conv2d_backward_weight", "conv2d_backward_weight_split_k"),
          "backward, one launch": ("conv2d_backward",)}  # backward.cu: data, weight and bias
PRODUCTS = GEMM_FAMILIES + CONV_FAMILIES + ("conv_weight_transpose",)


def product_sums(profile) -> dict:
    """family -> {(space, op, field): sum over its launches, whole grid}."""
    sums: dict = defaultdict(lambda: defaultdict(float))
    for record in profile.launches:
        if record.counters is None or record.family not in PRODUCTS:
            continue
        for space in ("global", "shared"):
            for op in ("load", "store"):
                for field in ("requests", "units", "ideal_units"):
                    sums[record.family][space, op, field] += record.counters.total(space, op, field)
    return sums


def pass_sums(sums: dict) -> dict:
    """"pass forward" etc. -> the sums of its families."""
    passes: dict = defaultdict(lambda: defaultdict(float))
    for name, families in PASSES.items():
        for family in families:
            for key, value in sums.get(family, {}).items():
                passes[f"pass {name}"][key] += value
    return passes


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 1.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg_like")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--blocks", default="sample", help="sample, all or a number (see minicnn profile)")
    parser.add_argument("--precisions", default="tf32,bf16", help="comma-separated: fp32, tf32, bf16")
    parser.add_argument("--kernels-dir", type=Path, default=None, help="kernel sources to profile (default: kernels/)")
    parser.add_argument("--separate-backward", action="store_true",
                        help="each conv's backward-data and backward-weight in launches of their own "
                             "(backward-data reading the transposed weights), not backward.cu's one launch")
    args = parser.parse_args()
    BackwardLaunches.backward_in_one_launch = not args.separate_backward
    blocks = int(args.blocks) if args.blocks.isdigit() else args.blocks
    if args.kernels_dir is not None:  # the emulator compiles the sources of this folder instead
        os.environ["MINICNN_KERNELS_DIR"] = str(args.kernels_dir.resolve())
    print(f"{args.arch}, batch {args.batch}, one training step, emulator counters ({blocks} blocks per launch)")
    print(f"{'precision':<9} {'kernel':<30} {'global ld %':>11} {'shared st':>9} {'shared ld':>9} "
          f"{'shared ld req':>13}")
    for precision in args.precisions.split(","):
        sums = product_sums(profile_step(args.arch, args.batch, blocks=blocks, precision=precision))
        for family, s in [*sorted(sums.items()), *pass_sums(sums).items()]:
            print(f"{precision:<9} {family:<30} "
                  f"{100 * ratio(s['global', 'load', 'ideal_units'], s['global', 'load', 'units']):>11.1f} "
                  f"{ratio(s['shared', 'store', 'units'], s['shared', 'store', 'ideal_units']):>9.2f} "
                  f"{ratio(s['shared', 'load', 'units'], s['shared', 'load', 'ideal_units']):>9.2f} "
                  f"{s['shared', 'load', 'requests']:>13,.0f}")
    print("\nglobal ld %: ideal / actual sectors; shared st / ld: wavefronts / ideal (1.00 = no bank conflict); "
          "shared ld req: warp-level shared loads, whole grid")


if __name__ == "__main__":
    main()
