"""Tile shapes and blocks of each layer's one-launch backward (kernels/backward.cu), FP32.

    PYTHONPATH=$PWD python benchmarks/backward_tiles.py                  # vgg_like, batch 512
    PYTHONPATH=$PWD python benchmarks/backward_tiles.py --arch vgg8_bn --batch 32

Records a training step on the dry device (launch_count.count_step: nothing runs, a second on
any CPU) and lists each conv2d_backward / linear_backward launch of its backward, last layer
first as they run: the weight product (dw) and the data product (dx) as rows x cols over K,
the tile each one's block loop computes, its blocks (output tiles x K slices), the bias's
channel-sum blocks, and the block size. kernel_facts.backward_launch reads it all back from the
launch's kernel name and int arguments.
"""
from __future__ import annotations

import argparse

from launch_count import count_step
from minicnn.backends.kernel_facts import backward_launch


def product(shape, tile, blocks) -> str:
    rows, cols, depth = shape
    if not cols:
        return f"{'-':>22} {'':>7} {0:>6}"
    return f"{f'{rows}x{cols} K {depth}':>22} {f'{tile.tile_m}x{tile.tile_n}':>7} {blocks:>6}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg_like")
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args(argv)
    launches, _ = count_step(args.arch, args.batch)["backward"]
    print(f"one-launch backward of each layer, {args.arch}, batch {args.batch}, fp32")
    print(f"{'kernel':<16} {'dw: rows x cols K':>22} {'tile':>7} {'blocks':>6} {'dx: rows x cols K':>22} "
          f"{'tile':>7} {'blocks':>6} {'db':>5} {'grid':>6} {'threads':>7}")
    for launch in launches:
        found = backward_launch(launch.kernel, [a.value for a in launch.args if a.shape is None])
        if found is None:
            continue
        (weight_tile, data_tile), weight, data, plan = found
        weight_blocks, data_blocks, bias_blocks = plan.segments
        print(f"{launch.family:<16} {product(weight, weight_tile, weight_blocks)} "
              f"{product(data, data_tile, data_blocks)} {bias_blocks:>5} {plan.blocks:>6} "
              f"{weight_tile.threads:>7}")


if __name__ == "__main__":
    main()
