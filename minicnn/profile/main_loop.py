"""The main loop of a GEMM or convolution kernel, read from its SASS or PTX, and what one K step
of it issues: the one loop finder of `minicnn profile` (profile/static.py) and
benchmarks/sass_counts.py.

    programs = sass_programs(cuobjdump_text)     # or ptx_programs(nvcc -ptx text)
    step = k_step(programs[mangled], "sass", stores_per_step=8)
    step.counts["fp32 (fma/mul/add)"], step.loops

A listing becomes a program per kernel: one Instruction per SASS (or PTX) instruction, each
branch knowing the index it jumps to (`cuobjdump -sass` names targets by address, PTX by
label). A loop is a backward branch's span, from its target to the branch. The main loop is,
of the innermost loops holding floating-point instructions, the one with the most mma, else
the most FP instructions: the K loop (a tensor-core kernel's has 16 mma per warp and few FP32
instructions). Innermost, because a span is a stretch of code, not a loop's body: ptxas lays
backward.cu out with a branch from its end back to its start, a span holding every loop.
When several loops tie (backward.cu inlines the block loop once per product, split and
unsplit), all are main loops and a step is their mean. Inside a main loop, loops that store to
shared memory (load_tile's, over the elements a thread loads) run once per stored element
group: with `stores_per_step` (elements each thread stores per K step, from the tile shape),

    per K step = straight-line part of the main loop + sum(inner loop * trips),
    trips = stores_per_step / (inner loops that store) / (stores in one pass of that loop);

other inner loops count once. ptxas unrolls some of those loops (the SASS holds each copy
once) and keeps others (one copy, trips passes), so without the trips the two listings would
count different things. Static counts: both sides of an if count, and a loop's remainder passes
count at its body's rate.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

# Instruction classes, by opcode prefix (PTX: "fma.rn.f32"; SASS: "FFMA"); the first match wins.
PTX_CLASSES = [
    ("tensor (mma)", ("mma.", "wmma.")),
    ("fp32 (fma/mul/add)", ("fma.rn.f32", "mul.rn.f32", "mul.f32", "add.f32", "add.rn.f32", "sub.f32",
                            "max.f32", "min.f32", "neg.f32")),
    ("fp64", ("fma.rn.f64", "mul.f64", "mul.rn.f64", "add.f64", "add.rn.f64", "sub.f64")),
    ("shared load", ("ld.shared", "ldmatrix.")),
    ("shared store", ("st.shared",)),
    ("global load", ("ld.global", "cp.async.ca.", "cp.async.cg.")),  # cp.async: global to shared
    ("global store", ("st.global",)),
    ("int div/rem", ("div.s", "div.u", "rem.s", "rem.u")),
    ("int/address", ("add.s", "add.u", "sub.s", "sub.u", "mul.lo", "mul.hi", "mul.wide", "mad.lo", "mad.wide",
                     "shl.", "shr.", "and.", "or.", "xor.", "not.", "setp.", "selp.", "cvt.", "min.s",
                     "max.s", "min.u", "max.u", "neg.s", "abs.s", "mov.")),
    ("branch", ("bra",)),
    ("barrier", ("bar.", "barrier.")),
]
SASS_CLASSES = [
    ("tensor (mma)", ("HMMA", "IMMA", "HGMMA")),
    ("fp32 (fma/mul/add)", ("FFMA", "FMUL", "FADD", "FMNMX")),
    ("fp64", ("DFMA", "DMUL", "DADD")),
    ("shared load", ("LDS", "LDSM")),
    ("shared store", ("STS",)),
    ("global load", ("LDG",)),  # LDGSTS (cp.async) too
    ("global store", ("STG",)),
    # MUFU.RCP and I2F / F2I: the reciprocal at the heart of an integer division
    ("int/address", ("IMAD", "IADD", "VIADD", "LEA", "SHF", "LOP", "ISETP", "IABS", "SEL", "I2F", "F2I",
                     "IMNMX", "VIMNMX", "MOV", "FSETP", "FSEL", "PRMT", "SGXT", "ISCADD", "MUFU", "S2R", "CS2R")),
    ("branch", ("BRA", "BSSY", "BSYNC")),
    ("barrier", ("BAR",)),
]
CLASSES = {"ptx": PTX_CLASSES, "sass": SASS_CLASSES}
FP_CLASSES = ("fp32 (fma/mul/add)", "fp64", "tensor (mma)")
# What fills a shared tile: a store, or a cp.async copy from global memory (LDGSTS in SASS).
SHARED_FILLS = {"ptx": ("st.shared", "cp.async.ca.", "cp.async.cg."), "sass": ("STS", "LDGSTS")}


@dataclass(frozen=True)
class Instruction:
    opcode: str               # "FFMA", "fma.rn.f32"
    target: int | None = None  # a branch's target, as an index into its program


@dataclass(frozen=True)
class KStep:
    """What one pass of the main loop issues per thread (the mean over tied main loops)."""
    counts: dict   # instruction class -> instructions (fractional: trips, means)
    loops: int     # main loops found (0: none, counts are the whole kernel's)


_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def sass_programs(text: str) -> dict[str, list[Instruction]]:
    """`cuobjdump -sass` text -> mangled kernel name -> program."""
    kernels, current = {}, None
    for line in text.splitlines():
        if "Function :" in line:
            current = kernels.setdefault(line.split("Function :")[1].strip(), [])
        elif current is not None and (m := _SASS_LINE.search(line)):
            # "@!PT LDS RZ, [RZ]" (ptxas pads LDGSTS with them) never executes: it takes an
            # issue slot like a NOP, so it counts as one, not as a shared load
            opcode = "NOP" if (m.group(2) or "").strip() == "@!PT" else m.group(3)
            target = re.search(r"0x([0-9a-f]+)", m.group(4)) if opcode.startswith("BRA") else None
            current.append((int(m.group(1), 16), opcode, int(target.group(1), 16) if target else None))
    return {name: _resolved(code) for name, code in kernels.items()}


def _resolved(code: list[tuple[int, str, int | None]]) -> list[Instruction]:
    """(address, opcode, target address) -> Instructions with targets as indices."""
    index = {address: i for i, (address, _, _) in enumerate(code)}
    return [Instruction(opcode, index.get(target)) for _, opcode, target in code]


_PTX_ENTRY = re.compile(r"\.entry\s+(\w+)")
_PTX_LABEL = re.compile(r"^\s*(\$[\w.$]+):\s*$")


def ptx_programs(text: str) -> dict[str, list[Instruction]]:
    """`nvcc -ptx` text -> mangled kernel name -> program."""
    kernels, current = {}, None
    for line in text.splitlines():
        if m := _PTX_ENTRY.search(line):
            current = kernels[m.group(1)] = []
        elif current is not None:
            current.append(line)
    return {name: _ptx_program(lines) for name, lines in kernels.items()}


def _ptx_program(lines: list[str]) -> list[Instruction]:
    labels, code = {}, []  # code: (opcode, target label)
    for line in lines:
        if m := _PTX_LABEL.match(line):
            labels[m.group(1)] = len(code)
            continue
        text = line.split("//")[0].strip()
        if text.startswith("@"):  # a predicate guard: "@%p1 bra $L__BB0_1;"
            text = text.split(None, 1)[1] if len(text.split(None, 1)) > 1 else ""
        if not text or text[0] in ".{}(),)" or text.endswith(":"):
            continue  # directives, braces, parameter lists
        opcode, *operands = text.rstrip(";").split(None, 1)
        code.append((opcode, operands[0].strip() if operands and opcode.startswith("bra") else None))
    return [Instruction(opcode, labels.get(target)) for opcode, target in code]


def classify(opcode: str, kind: str) -> str:
    for name, prefixes in CLASSES[kind]:
        if opcode.startswith(prefixes):
            return name
    return "other"


def loop_spans(program: list[Instruction]) -> list[tuple[int, int]]:
    """(first, last) instruction indices of each backward branch's span, in program order."""
    return [(ins.target, i) for i, ins in enumerate(program) if ins.target is not None and ins.target <= i]


def main_loops(program: list[Instruction], kind: str) -> list[tuple[int, int]]:
    """The spans of the main loop (several when they tie; see the module docstring)."""
    classes = [classify(ins.opcode, kind) for ins in program]

    def weight(span):
        inside = classes[span[0]:span[1] + 1]
        return inside.count("tensor (mma)"), sum(inside.count(c) for c in FP_CLASSES)

    spans = [s for s in loop_spans(program) if weight(s)[1] > 0]
    spans = [s for s in spans if not any(_inside(o, s) for o in spans)]  # innermost ones
    best = max(map(weight, spans), default=None)
    return [s for s in spans if weight(s) == best]


def _inside(inner: tuple[int, int], outer: tuple[int, int]) -> bool:
    return inner != outer and outer[0] <= inner[0] and inner[1] <= outer[1]


def k_step(program: list[Instruction], kind: str, stores_per_step: float | None = None) -> KStep:
    """Instructions per thread per K step, by class (see the module docstring); the whole
    kernel's counts when it has no loop with FP instructions."""
    classes = [classify(ins.opcode, kind) for ins in program]
    spans = main_loops(program, kind)
    if not spans:
        return KStep(dict(Counter(classes)), 0)
    total: Counter = Counter()
    for span in spans:
        total.update(_one_step(program, classes, span, kind, stores_per_step))
    return KStep({c: n / len(spans) for c, n in total.items()}, len(spans))


def _one_step(program, classes, span, kind, stores_per_step) -> Counter:
    first, last = span
    inner = [s for s in loop_spans(program) if _inside(s, span)]
    inner = [s for s in inner if not any(_inside(s, o) for o in inner)]  # outermost ones

    def fills(s):
        return sum(program[i].opcode.startswith(SHARED_FILLS[kind]) for i in range(s[0], s[1] + 1))

    filling = [s for s in inner if fills(s)]
    counts = Counter(classes[i] for i in range(first, last + 1) if not any(s[0] <= i <= s[1] for s in inner))
    for s in inner:
        trips = stores_per_step / len(filling) / fills(s) if stores_per_step and fills(s) else 1
        for c, n in Counter(classes[s[0]:s[1] + 1]).items():
            counts[c] += n * trips
    return counts
