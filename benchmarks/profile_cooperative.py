"""`minicnn profile`'s two ways of counting the cooperative launches (bn_one_launch.cu), side
by side: wall time of the profile and the estimated step.

    PYTHONPATH=$PWD python benchmarks/profile_cooperative.py --arch vgg_like --batch 512
    PYTHONPATH=$PWD python benchmarks/profile_cooperative.py --arch vgg8_bn --twins-only

twins (the default of `minicnn profile`): each cooperative launch gets the merged counters of
its two-launch twin's sampled blocks (minicnn/profile/twins.py). run: the emulator runs the
cooperative grids themselves, every block (a grid barrier needs them all): the reference,
minutes per step at batch 512. Per cooperative kernel family: the estimated time both ways.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

from minicnn.backends.cuda_launch import COOPERATIVE_SOURCES
from minicnn.profile.step import profile_step


def profiled(arch: str, batch: int, gpu: str, precision: str, twins: bool):
    """(profile, wall seconds of profile_step)."""
    start = time.perf_counter()
    profile = profile_step(arch, batch, gpu=gpu, precision=precision, twins=twins)
    return profile, time.perf_counter() - start


def cooperative_seconds(profile) -> dict[str, tuple[int, float]]:
    """Cooperative kernel family -> (launches, estimated seconds summed)."""
    rows = defaultdict(lambda: [0, 0.0])
    for record, estimate in zip(profile.launches, profile.estimates):
        if record.source in COOPERATIVE_SOURCES:
            rows[record.family][0] += 1
            rows[record.family][1] += estimate.seconds
    return {family: tuple(row) for family, row in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg_like")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--gpu", default="h100")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--twins-only", action="store_true", help="skip the slow reference")
    args = parser.parse_args()
    ways = [("twins", True)] + ([] if args.twins_only else [("run", False)])
    results = {name: profiled(args.arch, args.batch, args.gpu, args.precision, twins)
               for name, twins in ways}
    print(f"{args.arch}, batch {args.batch}, {args.precision}, estimated for {args.gpu}")
    print(f"{'counting':<8} {'profile wall s':>14} {'step est. ms':>12}")
    for name, (profile, wall) in results.items():
        print(f"{name:<8} {wall:>14.1f} {profile.step_seconds * 1e3:>12.4f}")
    if "run" in results:
        twin_step, run_step = (results[n][0].step_seconds for n in ("twins", "run"))
        print(f"step estimate, twins / run: {twin_step / run_step:.4f}")
    print()
    print(f"{'cooperative family':<42} {'n':>3} " + " ".join(f"{n + ' ms':>9}" for n in results))
    tables = {name: cooperative_seconds(profile) for name, (profile, _) in results.items()}
    for family in sorted(tables["twins"]):
        cells = " ".join(f"{tables[n][family][1] * 1e3:>9.4f}" for n in results)
        print(f"{family:<42} {tables['twins'][family][0]:>3} {cells}")


if __name__ == "__main__":
    main()
