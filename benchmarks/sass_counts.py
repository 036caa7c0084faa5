"""Instructions per inner K-step of the GEMM / convolution kernels, read from their SASS.

    PYTHONPATH=$PWD python benchmarks/sass_counts.py [--kernels-dir DIR] [--arch sm_90] [--ptx]

Compiles kernels/gemm.cu and conv.cu for one architecture (nvcc -cubin), disassembles them
(cuobjdump -sass, which needs nvdisasm; both come with the CUDA toolkit or the PyPI packages
nvidia-cuda-cuobjdump / nvidia-cuda-nvdisasm, found on PATH) and counts what one K step of each
kernel's main loop issues per thread, as `minicnn profile` does (minicnn/profile/main_loop.py:
the innermost loop with the most mma, else FP instructions; inside it, the loops of load_tile
run once per loaded element group, the rest once per K step):

    per K step per thread = straight-line part + sum(inner loop body * trips),
    trips = (elements this thread stores to shared memory per K step) / (loops that store)
            / (STS or LDGSTS per iteration)

(an estimate from static code: a loop's remainder iterations are counted at the body's rate).
--ptx adds the same K step counted in the PTX (nvcc -ptx), per FP instruction beside the SASS's,
as `minicnn profile` counts it without cuobjdump.
The table gives warp instructions per block step (64 x 64 x 16, 131,072 flops, unless the label
names another v2 tile shape of gemm.cu's SIMT_SHAPES), by kind.

--step vgg_like adds an issue-bound estimate of the network's convolution time per training
step (forward, backward-data but for the first layer, backward-weight) at --batch: block steps
per pass (v2 on the tile shape the launcher picks for it) times the warp instructions of one, spread over 4 schedulers per SM issuing one warp
instruction per clock (--sms, --clock-ghz: an H100 SXM by default), or the mma pipe's one
m16n8k8 TF32 / m16n8k16 BF16 per SM per clock if that is slower. Memory stalls are ignored,
so it is a lower bound on each version's time, for comparing versions, not a prediction.
No GPU is needed; nothing here is timed.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from minicnn.backends.kernel_facts import (CONV_PASSES, KERNELS_DIR, TiledProduct, best_tile, cdiv, simt_products,
                                           source_constants, tiled_products)
from minicnn.profile.main_loop import Instruction, k_step, ptx_programs, sass_programs
from minicnn.profile.static import InstructionMix

KINDS = {  # the table's columns: main_loop's instruction classes, grouped; the rest is "other"
    "math": ("tensor (mma)", "fp32 (fma/mul/add)", "fp64"),
    "shared ld": ("shared load",),
    "shared st": ("shared store",),
    "global ld": ("global load",),  # LDGSTS (cp.async) too
    "int/addr": ("int/address",),
}
# (label, source, name expression with {T} -> float, tile precision)
SHOWN = [
    ("gemm v2 fp32 (NN)", "gemm.cu", "gemm_v2<float, false, false>", "fp32"),
    ("gemm v3 tf32 (NN)", "gemm.cu", "gemm_v3<Mma::TF32, false, false>", "tf32"),
    ("gemm v3 bf16 (NN)", "gemm.cu", "gemm_v3<Mma::BF16, false, false>", "bf16"),
    ("conv fwd v2 fp32", "conv.cu", "conv2d_forward<float, SimtTile<64, 64, 256>>", "fp32"),
    ("conv fwd v3 tf32", "conv.cu", "conv2d_forward<float, MmaTile<Mma::TF32>>", "tf32"),
    ("conv fwd v3 bf16", "conv.cu", "conv2d_forward<float, MmaTile<Mma::BF16>>", "bf16"),
    ("conv bwd-data v2 fp32", "conv.cu", "conv2d_backward_data<float, SimtTile<64, 64, 256>>", "fp32"),
    ("conv bwd-data v3 tf32", "conv.cu", "conv2d_backward_data<float, MmaTile<Mma::TF32>>", "tf32"),
    ("conv bwd-weight v2 fp32", "conv.cu", "conv2d_backward_weight<float, SimtTile<64, 64, 256>>", "fp32"),
    ("conv bwd-weight v3 tf32", "conv.cu", "conv2d_backward_weight<float, MmaTile<Mma::TF32>>", "tf32"),
]


def column(instruction_class: str) -> str:
    return next((name for name, classes in KINDS.items() if instruction_class in classes), "other")


def compile_unit(kernels_dir: Path, source: str, names: list[str], arch: str, workdir: Path,
                 output: str = "cubin") -> Path:
    """nvcc -cubin (or -ptx: output="ptx") of the kernels `names` of `source`."""
    unit = workdir / f"instances_{source}"
    unit.write_text(f'#include "{source}"\nvoid* instances[] = {{' + ", ".join(f"(void*)&{n}" for n in names) + "};\n")
    target = unit.with_suffix(f".{output}")
    subprocess.run(["nvcc", f"-{output}", f"-arch={arch}", "-std=c++17", f"-I{kernels_dir}", str(unit),
                    "-o", str(target)], check=True, capture_output=True, text=True)
    return target


def functions(cubin: Path) -> dict[str, list[Instruction]]:
    """mangled name -> program, from cuobjdump -sass."""
    return sass_programs(subprocess.run(["cuobjdump", "-sass", str(cubin)], check=True, capture_output=True,
                                        text=True).stdout)


def k_step_counts(program: list[Instruction], stores_per_step: int) -> Counter:
    """Instructions per K step per thread by column, plus "mma": the mma among them."""
    step = k_step(program, "sass", stores_per_step).counts
    counts = Counter()
    for instruction_class, n in step.items():
        counts[column(instruction_class)] += n
    counts["mma"] = step.get("tensor (mma)", 0)
    return counts


def demangled_match(mangled: dict, expression: str) -> str:
    """The mangled name whose demangling is the kernel `expression` (c++filt)."""
    names = list(mangled)
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    wanted = re.sub(r"\s+", "", expression.replace("Mma::TF32", "(Mma)0").replace("Mma::BF16", "(Mma)1"))
    for name, readable in zip(names, out):
        flat = re.sub(r"\s+", "", readable)
        if flat.startswith("void" + wanted.replace("<float>", "<float,SimtTile>") + "(") or \
                flat.startswith("void" + wanted + "("):
            return name
    raise SystemExit(f"{expression} not found among {out}")


PASSES = {"forward": "conv fwd", "backward-data": "conv bwd-data", "backward-weight": "conv bwd-weight"}


def conv_products(c: int, f: int, size: int, batch: int) -> dict[str, tuple[int, int, int]]:
    """(rows, cols, depth) of each pass of a 3x3 'same' conv, C -> F channels."""
    pixels, taps = batch * size * size, 9
    return {"forward": (f, pixels, c * taps), "backward-data": (c, pixels, f * taps),
            "backward-weight": (f, c * taps, pixels)}


def block_steps(tile: TiledProduct, rows: int, cols: int, depth: int) -> int:
    return cdiv(rows, tile.tile_m) * cdiv(cols, tile.tile_n) * cdiv(depth, tile.tile_k)


def shape_label(label: str, tile: TiledProduct) -> str:
    """A v2 row's label, naming its tile shape unless it is the default 64 x 64."""
    return label if (tile.tile_m, tile.tile_n) == (64, 64) else f"{label} {tile.tile_m}x{tile.tile_n}"


def step_estimate(network: str, batch: int, per_step: dict[str, tuple[float, float]], products, simt,
                  sms: int, clock_hz: float) -> None:
    """Prints the issue-bound conv time of one training step per version (see the docstring)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from kernels import NETWORKS  # benchmarks/kernels.py: the networks' conv shapes
    convs = NETWORKS[network]["convs"]
    print(f"\n{network} batch {batch}: issue-bound conv time per training step ({sms} SMs, {clock_hz / 1e9:.3f} GHz)")
    for version in ("v2 fp32", "v3 tf32", "v3 bf16"):
        precision = version.split()[1]
        if precision not in products:
            continue
        clocks = 0.0
        for index, (c, f, size) in enumerate(convs):
            for name, (rows, cols, depth) in conv_products(c, f, size, batch).items():
                if name == "backward-data" and index == 0:
                    continue  # no gradient for the input images
                tile = best_tile(simt, rows, cols) if precision == "fp32" else products[precision]
                steps = block_steps(tile, rows, cols, depth)
                label = shape_label(f"{PASSES[name]} {version}", tile)
                if label not in per_step:  # bf16 backward passes: the tf32 loop with half the mma
                    label = f"{PASSES[name]} v3 tf32"
                warp_instructions, mma = per_step[label]
                mma_per_clock = 1.0  # one m16n8k8 TF32 or m16n8k16 BF16 per SM per clock
                clocks += steps * max(warp_instructions / 4, mma / mma_per_clock if "v3" in version else 0)
        print(f"  {version}: {1e3 * clocks / sms / clock_hz:8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels-dir", type=Path, default=KERNELS_DIR)
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--step", choices=["vgg_like", "vgg11"], help="estimate a network's conv time per step")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--sms", type=int, default=132)
    parser.add_argument("--clock-ghz", type=float, default=1.755)
    parser.add_argument("--ptx", action="store_true",
                        help="also count each K step in the PTX: instructions per FP instruction, SASS vs PTX")
    args = parser.parse_args()
    for tool in ("nvcc", "cuobjdump", "nvdisasm", "c++filt"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH (see this script's docstring)")
    constants = source_constants(args.kernels_dir / "gemm.cu")
    shaped = "SIMT_SHAPES" in (args.kernels_dir / "gemm.cu").read_text()  # sources with v2 tile shapes
    if shaped:
        products, simt = tiled_products(args.kernels_dir), simt_products(args.kernels_dir)
    else:  # older sources: one 64 x 64 v2 tile, v3 if present
        default = TiledProduct(constants["GEMM_THREADS"], constants["TILE_M"], constants["TILE_N"], constants["TILE_K"])
        products, simt = {"fp32": default}, [default]
        if "MMA_THREADS" in constants:
            mma = dataclasses.replace(default, threads=constants["MMA_THREADS"])
            products.update({"tf32": mma, "bf16": mma})
    shown = [(label, source, expression if shaped else re.sub(r", SimtTile<[^>]*>", "", expression),
              products.get(precision)) for label, source, expression, precision in SHOWN]
    shown += [(shape_label(f"{PASSES[name]} v2 fp32", tile), "conv.cu", f"{kernel}<float, {tile.policy}>", tile)
              for tile in simt[1:] for name, kernel in zip(PASSES, CONV_PASSES)]
    with tempfile.TemporaryDirectory() as tmp:
        code, ptx = {}, {}
        for source in ("gemm.cu", "conv.cu"):
            text = (args.kernels_dir / source).read_text()  # older sources lack v3: skip what is absent
            listed = [e for _, s, e, _ in shown if s == source and ("Mma" not in e or "enum class Mma" in text
                                                                   or "gemm.cu" in text and "Mma" in text)]
            code[source] = functions(compile_unit(args.kernels_dir, source, listed, args.arch, Path(tmp)))
            if args.ptx:
                ptx[source] = ptx_programs(compile_unit(args.kernels_dir, source, listed, args.arch, Path(tmp),
                                                        "ptx").read_text())
    kinds = list(KINDS) + ["other"]
    per_step = {}  # label -> (warp instructions, mma) per block step
    compared = f"{'SASS/FP':>9}{'PTX/FP':>8}{'ratio':>7}" if args.ptx else ""
    print(f"{'kernel':<32}{'threads':>8}" + "".join(f"{k:>11}" for k in kinds) + f"{'total':>9}{'math %':>8}"
          + compared)
    for label, source, expression, product in shown:
        if product is None:
            print(f"{label:<32} (not in these sources)")
            continue
        available = code[source]
        try:
            mangled = demangled_match(available, expression)
        except SystemExit:
            print(f"{label:<32} (not in these sources)")
            continue
        stores = (product.tile_m + product.tile_n) * product.tile_k // product.threads
        counts = k_step_counts(available[mangled], stores)
        warps = product.threads // 32
        row = [counts[k] * warps for k in kinds]
        total = sum(row)
        per_step[label] = (total, counts["mma"] * warps)
        if args.ptx:  # the profiler's measure: per FP instruction, a PTX division as 20
            per_fp = [InstructionMix(kind, k_step(program, kind, stores).counts, {}).loop_per_fp
                      for kind, program in (("sass", available[mangled]), ("ptx", ptx[source][mangled]))]
            compared = f"{per_fp[0]:>9.2f}{per_fp[1]:>8.2f}{per_fp[0] / per_fp[1]:>7.2f}"
        print(f"{label:<32}{product.threads:>8}" + "".join(f"{v:>11.0f}" for v in row) +
              f"{total:>9.0f}{100 * row[0] / total:>7.1f}%" + compared)
    print(f"\nwarp instructions per block step, 64 x 64 x 16 unless labelled "
          f"({os.path.basename(str(args.kernels_dir))}, {args.arch})")
    if args.step:
        step_estimate(args.step, args.batch, per_step, products, simt, args.sms, args.clock_ghz * 1e9)


if __name__ == "__main__":
    main()
