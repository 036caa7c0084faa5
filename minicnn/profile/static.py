"""What the compiler says about each kernel: registers, spills, static shared memory, and the
instruction mix of its main loop.

    facts = static_facts("conv.cu", ["conv2d_forward<float>"], arch="sm_90")
    facts["conv2d_forward<float>"].registers, facts[...].mix.loop

nvcc compiles the source once per (source, instantiations, arch) with `-Xptxas -v`, which
prints per kernel "Used 64 registers, ... 8320 bytes smem" and the spill bytes. The instruction
mix comes from `cuobjdump -sass` of the same cubin when cuobjdump is installed, otherwise from
the PTX (`nvcc -ptx`): PTX is the compiler's intermediate code, close to but not the same as
what runs (ptxas schedules it, and one PTX integer division becomes a ~20-instruction SASS
sequence), so the table says which one it counted. The "main loop" is the loop (a backward
branch) with the most mma instructions, else the most floating-point instructions: the k-loop
of a GEMM or convolution.
Results are cached on disk under a hash of kernels/ and the nvcc version.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from minicnn.backends.cupy_runtime import KERNELS_DIR, kernels_digest

CACHE_VERSION = "3"  # bump when the parsing below changes

# Instruction classes, by opcode prefix (PTX: "fma.rn.f32"; SASS: "FFMA").
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
    ("global load", ("LDG",)),
    ("global store", ("STG",)),
    ("int/address", ("IMAD", "IADD", "LEA", "SHF", "LOP", "ISETP", "IABS", "SEL", "I2F", "F2I", "IMNMX",
                     "MOV", "FSETP", "PRMT", "S2R", "CS2R")),
    ("branch", ("BRA", "BSSY", "BSYNC")),
    ("barrier", ("BAR",)),
]
FP_CLASSES = ("fp32 (fma/mul/add)", "fp64", "tensor (mma)")
PTX_DIVISION_COST = 20  # SASS instructions of a 32-bit integer division by a non-constant


@dataclass(frozen=True)
class InstructionMix:
    kind: str          # "sass" or "ptx"
    loop: dict         # class -> static count in the main loop (the whole kernel if it has none)
    kernel: dict       # class -> static count in the whole kernel

    @property
    def loop_per_fp(self) -> float | None:
        """Instructions issued per floating-point instruction in the main loop (None: no FP).
        A PTX integer division or remainder counts as PTX_DIVISION_COST instructions."""
        fp = sum(self.loop.get(c, 0) for c in FP_CLASSES)
        extra = (PTX_DIVISION_COST - 1) * self.loop.get("int div/rem", 0) if self.kind == "ptx" else 0
        return (sum(self.loop.values()) + extra) / fp if fp else None


@dataclass(frozen=True)
class KernelFacts:
    registers: int
    spill_stores: int   # bytes
    spill_loads: int    # bytes
    stack_bytes: int
    static_shared: int  # bytes
    mix: InstructionMix | None


class StaticFactsError(RuntimeError):
    """nvcc is missing or failed; the profile then shows n/a for the compiler's facts."""


def static_facts(source: str, expressions: list[str], arch: str = "sm_90",
                 kernels_dir: Path = KERNELS_DIR) -> dict[str, KernelFacts]:
    """expression -> KernelFacts for each instantiation of kernels_dir/source (cached)."""
    return _cached_facts(source, tuple(sorted(set(expressions))), arch, str(kernels_dir))


@functools.lru_cache(maxsize=None)
def _cached_facts(source: str, expressions: tuple[str, ...], arch: str, kernels_dir: str) -> dict:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise StaticFactsError("nvcc not found")
    key = hashlib.sha256("\0".join([CACHE_VERSION, kernels_digest(Path(kernels_dir)), source, arch,
                                    *expressions, _tool_version(nvcc)]).encode()).hexdigest()[:24]
    cache = _cache_dir() / f"{Path(source).stem}-{key}.json"
    if cache.exists():
        stored = json.loads(cache.read_text())
        return {e: _facts_from_json(f) for e, f in stored.items()}
    facts = _compile_facts(nvcc, source, expressions, arch, Path(kernels_dir))
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps({e: asdict(f) for e, f in facts.items()}))
    os.replace(partial, cache)
    return facts


def _facts_from_json(fields: dict) -> KernelFacts:
    mix = fields.pop("mix")
    return KernelFacts(**fields, mix=InstructionMix(**mix) if mix else None)


def _compile_facts(nvcc: str, source: str, expressions: tuple[str, ...], arch: str,
                   kernels_dir: Path) -> dict[str, KernelFacts]:
    # Taking each kernel's address in host code makes nvcc instantiate the template.
    wrapper = f'#include "{source}"\nvoid* minicnn_instantiate[] = {{\n' + "".join(
        f"    (void*)&{e},\n" for e in expressions) + "};\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "instantiate.cu"
        path.write_text(wrapper)
        common = [nvcc, f"-arch={arch}", "-std=c++17", f"-I{kernels_dir}", str(path)]
        verbose = _run([*common, "-cubin", "-Xptxas", "-v", "-o", str(Path(tmp) / "k.cubin")], source)
        resources = parse_ptxas_verbose(verbose)
        cuobjdump = shutil.which("cuobjdump")
        if cuobjdump:
            mixes = parse_listing(_run([cuobjdump, "-sass", str(Path(tmp) / "k.cubin")], source), "sass")
        else:
            _run([*common, "-ptx", "-o", str(Path(tmp) / "k.ptx")], source)
            mixes = parse_listing((Path(tmp) / "k.ptx").read_text(), "ptx")
    names = _demangle([*resources, *mixes])
    by_expression = {_expression_of(names[m]): m for m in resources}
    facts = {}
    for expression, mangled in _match_expressions(expressions, by_expression, _enumerators(kernels_dir)).items():
        if mangled is None:
            raise StaticFactsError(f"nvcc did not report {expression} of {source}")
        facts[expression] = KernelFacts(**resources[mangled], mix=mixes.get(mangled))
    return facts


def _enumerators(kernels_dir: Path) -> dict[str, str]:
    """'Mma::TF32' -> '(Mma)0' for each `enum class` of the kernel sources: how c++filt
    writes an enumerator used as a template argument."""
    table = {}
    for path in sorted(kernels_dir.glob("*.cu*")):
        for name, body in re.findall(r"enum\s+class\s+(\w+)\s*\{([^}]*)\}", path.read_text()):
            for value, enumerator in enumerate(e.strip() for e in body.split(",") if e.strip()):
                table[f"{name}::{enumerator}"] = f"({name}){value}"
    return table


def _match_expressions(expressions, by_expression: dict, enumerators: dict) -> dict:
    """expression -> mangled name (None if not found). An expression matches its demangled
    form exactly, or else the one kernel not matched exactly whose template arguments begin
    with the expression's: c++filt also writes the defaulted ones ('conv2d_forward<float>' is
    'conv2d_forward<float,SimtTile>')."""
    def normalized(expression):
        for written, demangled in enumerators.items():
            expression = expression.replace(written, demangled)
        return expression.replace(" ", "")

    found = {e: by_expression.get(normalized(e)) for e in expressions}
    claimed = set(found.values())
    for expression in [e for e, m in found.items() if m is None and normalized(e).endswith(">")]:
        stem = normalized(expression)[:-1] + ","
        candidates = [m for name, m in by_expression.items() if name.startswith(stem) and m not in claimed]
        if len(candidates) == 1:
            found[expression] = candidates[0]
            claimed.add(candidates[0])
    return found


def parse_ptxas_verbose(text: str) -> dict[str, dict]:
    """`ptxas -v` output -> mangled name -> registers, spills, stack, static shared bytes."""
    facts, current = {}, None
    for line in text.splitlines():
        if m := re.search(r"Function properties for (\S+)", line):
            current = facts.setdefault(m.group(1), dict(registers=0, spill_stores=0, spill_loads=0,
                                                        stack_bytes=0, static_shared=0))
        elif current is not None and (m := re.search(
                r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)):
            current.update(stack_bytes=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif current is not None and (m := re.search(r"Used (\d+) registers", line)):
            current["registers"] = int(m.group(1))
            shared = re.search(r"(\d+) bytes smem", line)
            current["static_shared"] = int(shared.group(1)) if shared else 0
    return facts


_LABEL = re.compile(r"^\s*(\$?[\w.$]+):\s*$")
_TARGET = re.compile(r"(\$L__BB\d+_\d+|\.L_x_\d+)")


def parse_listing(text: str, kind: str) -> dict[str, InstructionMix]:
    """PTX or `cuobjdump -sass` text -> mangled kernel name -> InstructionMix."""
    entry = re.compile(r"\.entry\s+(\w+)" if kind == "ptx" else r"Function\s*:\s*(\w+)")
    kernels, name = {}, None
    for line in text.splitlines():
        if m := entry.search(line):
            name = m.group(1)
            kernels[name] = []
        elif name is not None:
            kernels[name].append(line)
    return {name: _mix(lines, kind) for name, lines in kernels.items()}


def _mix(lines: list[str], kind: str) -> InstructionMix:
    """Classify each instruction; the main loop is the backward branch's span with most FP."""
    classes = PTX_CLASSES if kind == "ptx" else SASS_CLASSES
    labels, program = {}, []  # program: (class, branch target or None)
    for line in lines:
        if m := _LABEL.match(line):
            labels[m.group(1)] = len(program)
            continue
        opcode = _opcode(line, kind)
        if opcode is None:
            continue
        target = _TARGET.search(line) if opcode.lower().startswith("bra") else None
        program.append((_classify(opcode, classes), target.group(1) if target else None))
    loops = [(labels[t], i + 1) for i, (_, t) in enumerate(program) if t in labels and labels[t] <= i]

    def fp_count(span, fp_classes=FP_CLASSES):
        return sum(1 for c, _ in program[span[0]:span[1]] if c in fp_classes)

    # a loop with mma first: a tensor-core kernel's k-loop has few FP instructions (16 mma per
    # k step), fewer than, say, an unrolled channel sum in the same kernel (backward.cu)
    main = max(loops, key=lambda s: (fp_count(s, ("tensor (mma)",)), fp_count(s), -(s[1] - s[0])),
               default=(0, len(program)))
    return InstructionMix(kind, _count(program[main[0]:main[1]]), _count(program))


def _opcode(line: str, kind: str) -> str | None:
    if kind == "sass":
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        return m.group(1) if m else None
    text = line.split("//")[0].strip()
    if not text or text[0] in ".{}(),)" or text.endswith(":") or text.startswith("//"):
        return None
    if text.startswith("@"):
        text = text.split(None, 1)[1] if " " in text else ""
    opcode = text.split(None, 1)[0].rstrip(";") if text else ""
    return opcode or None


def _classify(opcode: str, classes) -> str:
    for name, prefixes in classes:
        if opcode.startswith(prefixes):
            return name
    return "other"


def _count(program) -> dict:
    counts: dict[str, int] = {}
    for cls, _ in program:
        counts[cls] = counts.get(cls, 0) + 1
    return counts


def _demangle(names: list[str]) -> dict[str, str]:
    names = sorted(set(names))
    result = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    demangled = result.stdout.splitlines() if result.returncode == 0 else names
    return dict(zip(names, demangled))


def _expression_of(demangled: str) -> str:
    """'void gemm_v2<float, false, true>(float*, ...)' -> 'gemm_v2<float,false,true>'."""
    text = demangled[5:] if demangled.startswith("void ") else demangled
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0:
            text = text[:i]
            break
    return text.replace(" ", "")


def _run(command: list[str], source: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise StaticFactsError(f"{Path(command[0]).name} on {source}: {last}")
    return result.stdout + result.stderr


@functools.cache
def _tool_version(tool: str) -> str:
    return subprocess.run([tool, "--version"], capture_output=True, text=True).stdout


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minicnn" / "static"
