"""Shared-memory bank conflicts and global coalescing of the tensor-core (v3) kernels, from the
emulator's counters, on the layer shapes of one training step.

    PYTHONPATH=$PWD python benchmarks/mma_counters.py --arch vgg_like --batch 8
    PYTHONPATH=$PWD python benchmarks/mma_counters.py --kernels-dir /tmp/main_kernels/kernels  # before

Records one training step in each tensor-core precision (minicnn.profile.step, sampled blocks)
and sums, per v3 kernel family, the counters of minicnn.emu.counters: global loads as ideal /
actual 32-byte sectors (100% = perfectly coalesced), shared accesses as wavefronts / ideal (1.00
= no bank conflict), split into stores (cp.async landing in the tile) and loads (the fragment
loads: ldmatrix or scalar). No GPU is needed; nothing is timed.
"""
from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

from minicnn.profile.step import profile_step

TENSOR_CORE = ("MmaTile", "gemm_v3")


def v3_sums(profile) -> dict:
    """family -> {(space, op, field): sum over its launches, whole grid}."""
    sums: dict = defaultdict(lambda: defaultdict(float))
    for record in profile.launches:
        if record.counters is None or not any(name in record.kernel for name in TENSOR_CORE):
            continue
        for space in ("global", "shared"):
            for op in ("load", "store"):
                for field in ("requests", "units", "ideal_units"):
                    sums[record.family][space, op, field] += record.counters.total(space, op, field)
    return sums


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 1.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg_like")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--blocks", default="sample", help="sample, all or a number (see minicnn profile)")
    parser.add_argument("--kernels-dir", type=Path, default=None, help="kernel sources to profile (default: kernels/)")
    args = parser.parse_args()
    blocks = int(args.blocks) if args.blocks.isdigit() else args.blocks
    if args.kernels_dir is not None:  # the emulator compiles the sources of this folder instead
        os.environ["MINICNN_KERNELS_DIR"] = str(args.kernels_dir.resolve())
    print(f"{args.arch}, batch {args.batch}, one training step, emulator counters ({blocks} blocks per launch)")
    print(f"{'precision':<9} {'kernel':<24} {'global ld %':>11} {'shared st':>9} {'shared ld':>9} "
          f"{'shared ld req':>13}")
    for precision in ("tf32", "bf16"):
        profile = profile_step(args.arch, args.batch, blocks=blocks, precision=precision)
        for family, s in sorted(v3_sums(profile).items()):
            print(f"{precision:<9} {family:<24} "
                  f"{100 * ratio(s['global', 'load', 'ideal_units'], s['global', 'load', 'units']):>11.1f} "
                  f"{ratio(s['shared', 'store', 'units'], s['shared', 'store', 'ideal_units']):>9.2f} "
                  f"{ratio(s['shared', 'load', 'units'], s['shared', 'load', 'ideal_units']):>9.2f} "
                  f"{s['shared', 'load', 'requests']:>13,.0f}")
    print("\nglobal ld %: ideal / actual sectors; shared st / ld: wavefronts / ideal (1.00 = no bank conflict); "
          "shared ld req: warp-level shared loads, whole grid")


if __name__ == "__main__":
    main()
