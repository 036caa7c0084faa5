"""Instructions per inner K-step of the GEMM / convolution kernels, read from their SASS.

    PYTHONPATH=$PWD python benchmarks/sass_counts.py [--kernels-dir DIR] [--arch sm_90]

Compiles kernels/gemm.cu and conv.cu for one architecture (nvcc -cubin), disassembles them
(cuobjdump -sass, which needs nvdisasm; both come with the CUDA toolkit or the PyPI packages
nvidia-cuda-cuobjdump / nvidia-cuda-nvdisasm, found on PATH) and finds each kernel's K loop:
the backward branch with the widest body that contains a __syncthreads (BAR.SYNC). Inside it,
the loops of load_tile run once per loaded element group, the rest once per K step, so

    per K step per thread = straight-line part + sum(inner loop body * trips),
    trips = (elements this thread stores to shared memory per K step) / (STS or LDGSTS per iteration)

(an estimate from static code: a loop's remainder iterations are counted at the body's rate).
The table gives warp instructions per 64 x 64 x 16 block step (131,072 flops), by kind.

--step vgg_like adds an issue-bound estimate of the network's convolution time per training
step (forward, backward-data but for the first layer, backward-weight) at --batch: block steps
per pass times the warp instructions of one, spread over 4 schedulers per SM issuing one warp
instruction per clock (--sms, --clock-ghz: an H100 SXM by default), or the mma pipe's one
m16n8k8 TF32 / m16n8k16 BF16 per SM per clock if that is slower. Memory stalls are ignored,
so it is a lower bound on each version's time, for comparing versions, not a prediction.
No GPU is needed; nothing here is timed.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from minicnn.backends.kernel_facts import KERNELS_DIR, TiledProduct, source_constants, tiled_products

INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
KINDS = {  # first matching prefix wins
    "math": ("HMMA", "FFMA", "DFMA", "FMUL", "FADD"),
    "shared ld": ("LDS", "LDSM"),
    "shared st": ("STS",),
    "global ld": ("LDG", "LDGSTS"),
    "int/addr": ("IMAD", "IADD", "LEA", "SHF", "LOP", "ISETP", "IABS", "I2F", "F2I", "MUFU", "SEL",
                 "IMNMX", "VIMNMX", "PRMT", "SGXT", "FSETP", "FSEL", "ISCADD"),
}
# (label, source, name expression with {T} -> float, tile precision)
SHOWN = [
    ("gemm v2 fp32 (NN)", "gemm.cu", "gemm_v2<float, false, false>", "fp32"),
    ("gemm v3 tf32 (NN)", "gemm.cu", "gemm_v3<Mma::TF32, false, false>", "tf32"),
    ("gemm v3 bf16 (NN)", "gemm.cu", "gemm_v3<Mma::BF16, false, false>", "bf16"),
    ("conv fwd v2 fp32", "conv.cu", "conv2d_forward<float>", "fp32"),
    ("conv fwd v3 tf32", "conv.cu", "conv2d_forward<float, MmaTile<Mma::TF32>>", "tf32"),
    ("conv fwd v3 bf16", "conv.cu", "conv2d_forward<float, MmaTile<Mma::BF16>>", "bf16"),
    ("conv bwd-data v2 fp32", "conv.cu", "conv2d_backward_data<float>", "fp32"),
    ("conv bwd-data v3 tf32", "conv.cu", "conv2d_backward_data<float, MmaTile<Mma::TF32>>", "tf32"),
    ("conv bwd-weight v2 fp32", "conv.cu", "conv2d_backward_weight<float>", "fp32"),
    ("conv bwd-weight v3 tf32", "conv.cu", "conv2d_backward_weight<float, MmaTile<Mma::TF32>>", "tf32"),
]


def kind(opcode: str) -> str:
    for name, prefixes in KINDS.items():
        if opcode.startswith(prefixes):
            return name
    return "other"


def compile_cubin(kernels_dir: Path, source: str, names: list[str], arch: str, workdir: Path) -> Path:
    unit = workdir / f"instances_{source}"
    unit.write_text(f'#include "{source}"\nvoid* instances[] = {{' + ", ".join(f"(void*)&{n}" for n in names) + "};\n")
    cubin = unit.with_suffix(".cubin")
    subprocess.run(["nvcc", "-cubin", f"-arch={arch}", "-std=c++17", f"-I{kernels_dir}", str(unit),
                    "-o", str(cubin), "-Xptxas", "-v"], check=True, capture_output=True, text=True)
    return cubin


def functions(cubin: Path) -> dict[str, list[tuple[int, str, str]]]:
    """mangled name -> [(address, opcode, operands)] from cuobjdump -sass."""
    text = subprocess.run(["cuobjdump", "-sass", str(cubin)], check=True, capture_output=True, text=True).stdout
    result, current = {}, None
    for line in text.splitlines():
        if "Function :" in line:
            current = result.setdefault(line.split("Function :")[1].strip(), [])
        elif current is not None and (m := INSTRUCTION.search(line)):
            # "@!PT LDS RZ, [RZ]" (ptxas pads each LDGSTS with them) never executes: it takes an
            # issue slot like a NOP, so it is counted as one, not as a shared load
            opcode = "NOP" if (m.group(2) or "").strip() == "@!PT" else m.group(3)
            current.append((int(m.group(1), 16), opcode, m.group(4)))
    return result


def loops(code):
    """(start, end) address ranges of backward branches."""
    spans = []
    for address, opcode, operands in code:
        if opcode.startswith("BRA") and (target := re.search(r"0x([0-9a-f]+)", operands)):
            if int(target.group(1), 16) <= address:
                spans.append((int(target.group(1), 16), address))
    return spans


def k_step_counts(code, stores_per_step: int) -> tuple[Counter, int]:
    """(instructions per K step per thread by kind, plus "mma": the HMMA among them, number of
    inner loops) per the docstring."""
    bar = [a for a, op, _ in code if op.startswith("BAR")]
    outer = max((s for s in loops(code) if any(s[0] <= a <= s[1] for a in bar)), key=lambda s: s[1] - s[0])
    inner = [s for s in loops(code) if outer[0] <= s[0] and s[1] < outer[1]]
    inner = [s for s in inner if not any(o != s and o[0] <= s[0] and s[1] <= o[1] for o in inner)]
    body = lambda span: [op for a, op, _ in code if span[0] <= a <= span[1]]  # noqa: E731
    counts = Counter(kind(op) for a, op, _ in code if outer[0] <= a <= outer[1]
                     and not any(s[0] <= a <= s[1] for s in inner))
    for span in inner:
        ops = body(span)
        stores = sum(op.startswith(("STS", "LDGSTS")) for op in ops)  # LDGSTS: cp.async
        trips = stores_per_step / len(inner) / stores if stores else 1
        counts.update({k: v * trips for k, v in Counter(kind(op) for op in ops).items()})
    counts["mma"] = sum(op.startswith("HMMA") for a, op, _ in code if outer[0] <= a <= outer[1])
    return counts, len(inner)


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


def conv_block_steps(c: int, f: int, size: int, batch: int, tile: TiledProduct) -> dict[str, int]:
    """64 x 64 x 16 block steps of each pass of a 3x3 'same' conv, C -> F channels."""
    pixels, taps = batch * size * size, 9
    steps = lambda rows, cols, depth: (-(-rows // tile.tile_m) * -(-cols // tile.tile_n)  # noqa: E731
                                       * -(-depth // tile.tile_k))
    return {"forward": steps(f, pixels, c * taps), "backward-data": steps(c, pixels, f * taps),
            "backward-weight": steps(f, c * taps, pixels)}


def step_estimate(network: str, batch: int, per_step: dict[str, tuple[float, float]], products,
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
            for name, steps in conv_block_steps(c, f, size, batch, products[precision]).items():
                if name == "backward-data" and index == 0:
                    continue  # no gradient for the input images
                label = f"{PASSES[name]} {version}"
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
    args = parser.parse_args()
    for tool in ("nvcc", "cuobjdump", "nvdisasm", "c++filt"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH (see this script's docstring)")
    constants = source_constants(args.kernels_dir / "gemm.cu")
    products = (tiled_products(args.kernels_dir) if "MMA_THREADS" in constants else  # sources before v3
                {"fp32": TiledProduct(constants["GEMM_THREADS"], constants["TILE_M"], constants["TILE_N"],
                                      constants["TILE_K"])})
    with tempfile.TemporaryDirectory() as tmp:
        code = {}
        for source in ("gemm.cu", "conv.cu"):
            text = (args.kernels_dir / source).read_text()  # older sources lack v3: skip what is absent
            listed = [e for _, s, e, _ in SHOWN if s == source and ("Mma" not in e or "enum class Mma" in text
                                                                   or "gemm.cu" in text and "Mma" in text)]
            code[source] = functions(compile_cubin(args.kernels_dir, source, listed, args.arch, Path(tmp)))
    kinds = list(KINDS) + ["other"]
    per_step = {}  # label -> (warp instructions, mma) per block step
    print(f"{'kernel':<26}{'threads':>8}" + "".join(f"{k:>11}" for k in kinds) + f"{'total':>9}{'math %':>8}")
    for label, source, expression, precision in SHOWN:
        if precision not in products:
            print(f"{label:<26} (not in these sources)")
            continue
        product = products[precision]
        available = code[source]
        try:
            mangled = demangled_match(available, expression)
        except SystemExit:
            print(f"{label:<26} (not in these sources)")
            continue
        stores = (product.tile_m + product.tile_n) * product.tile_k // product.threads
        counts, _ = k_step_counts(available[mangled], stores)
        warps = product.threads // 32
        row = [counts[k] * warps for k in kinds]
        total = sum(row)
        per_step[label] = (total, counts["mma"] * warps)
        print(f"{label:<26}{product.threads:>8}" + "".join(f"{v:>11.0f}" for v in row) +
              f"{total:>9.0f}{100 * row[0] / total:>7.1f}%")
    print(f"\nwarp instructions per 64 x 64 x 16 block step ({os.path.basename(str(args.kernels_dir))}, {args.arch})")
    if args.step:
        step_estimate(args.step, args.batch, per_step, products, args.sms, args.clock_ghz * 1e9)


if __name__ == "__main__":
    main()
