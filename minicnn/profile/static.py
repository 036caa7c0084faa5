"""What the compiler says about each kernel: registers, spills, static shared memory, and the
instruction mix of its main loop.

    facts = static_facts("conv.cu", ["conv2d_forward<float>"], arch="sm_90")
    facts["conv2d_forward<float>"].registers, facts[...].mix.loop

nvcc compiles the source once per (source, instantiations, arch) with `-Xptxas -v`, which
prints per kernel "Used 64 registers, ... 8320 bytes smem" and the spill bytes. The instruction
mix comes from `cuobjdump -sass` of the same cubin when cuobjdump is installed (and works:
it needs nvdisasm), otherwise from the PTX (`nvcc -ptx`): PTX is the compiler's intermediate
code, close to but not the same as what runs (ptxas schedules it, and one PTX integer division
becomes a ~20-instruction SASS sequence), so the table says which one it counted. Either way
the mix is what one K step of the main loop issues per thread (profile/main_loop.py, shared
with benchmarks/sass_counts.py), load loops weighed by the kernel's tile shape.
Results are cached on disk under a hash of kernels/, the nvcc version and the listing used.
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
from minicnn.backends.kernel_facts import MMA_TYPES, TiledProduct, named_products, tiled_products
from minicnn.profile.estimate import CONV_FAMILIES, GEMM_FAMILIES
from minicnn.profile.main_loop import FP_CLASSES, classify, k_step, ptx_programs, sass_programs

CACHE_VERSION = "4"  # bump when the parsing here or in main_loop.py changes
PTX_DIVISION_COST = 20  # SASS instructions of a 32-bit integer division by a non-constant


@dataclass(frozen=True)
class InstructionMix:
    kind: str          # "sass" or "ptx"
    loop: dict         # class -> instructions per thread per K step of the main loop (the whole
                       # kernel if it has none; see main_loop.py)
    kernel: dict       # class -> static count in the whole kernel
    note: str = ""     # why it is PTX although cuobjdump is installed

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
    return _cached_facts(source, tuple(sorted(set(expressions))), arch, str(kernels_dir), shutil.which("cuobjdump"))


@functools.lru_cache(maxsize=None)
def _cached_facts(source: str, expressions: tuple[str, ...], arch: str, kernels_dir: str,
                  cuobjdump: str | None) -> dict:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise StaticFactsError("nvcc not found")
    listing = _tool_version(cuobjdump) if cuobjdump else "ptx"  # a PTX mix is not a SASS one
    key = hashlib.sha256("\0".join([CACHE_VERSION, kernels_digest(Path(kernels_dir)), source, arch,
                                    *expressions, _tool_version(nvcc), listing]).encode()).hexdigest()[:24]
    cache = _cache_dir() / f"{Path(source).stem}-{key}.json"
    if cache.exists():
        stored = json.loads(cache.read_text())
        return {e: _facts_from_json(f) for e, f in stored.items()}
    facts = _compile_facts(nvcc, cuobjdump, source, expressions, arch, Path(kernels_dir))
    if any(f.mix is not None and f.mix.note for f in facts.values()):
        return facts  # cuobjdump failed: not cached, so that a repaired one is used next time
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps({e: asdict(f) for e, f in facts.items()}))
    os.replace(partial, cache)
    return facts


def _facts_from_json(fields: dict) -> KernelFacts:
    mix = fields.pop("mix")
    return KernelFacts(**fields, mix=InstructionMix(**mix) if mix else None)


def _compile_facts(nvcc: str, cuobjdump: str | None, source: str, expressions: tuple[str, ...], arch: str,
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
        programs, kind, note = _programs(cuobjdump, Path(tmp) / "k.cubin", common, source)
    names = _demangle([*resources, *programs])
    by_expression = {_expression_of(names[m]): m for m in resources}
    facts = {}
    for expression, mangled in _match_expressions(expressions, by_expression, _enumerators(kernels_dir)).items():
        if mangled is None:
            raise StaticFactsError(f"nvcc did not report {expression} of {source}")
        program = programs.get(mangled)
        mix = None if program is None else instruction_mix(
            program, kind, stores_per_step(expression, kernels_dir), note)
        facts[expression] = KernelFacts(**resources[mangled], mix=mix)
    return facts


def _programs(cuobjdump: str | None, cubin: Path, compile_command: list[str], source: str):
    """(mangled name -> program, "sass" or "ptx", why PTX though cuobjdump is installed): the
    cubin's SASS, or the PTX of the same source when cuobjdump is missing or fails."""
    note = ""
    if cuobjdump:
        sass = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True)
        if sass.returncode == 0:
            return sass_programs(sass.stdout), "sass", note
        # e.g. no nvdisasm, which it runs: one line in the profile's notes, not a traceback
        note = f"cuobjdump -sass failed ({_last_error(sass)}): main loops counted in PTX"
    ptx = cubin.with_suffix(".ptx")
    _run([*compile_command, "-ptx", "-o", str(ptx)], source)
    return ptx_programs(ptx.read_text()), "ptx", note


def instruction_mix(program, kind: str, stores: float | None = None, note: str = "") -> InstructionMix:
    """One kernel's main-loop step (main_loop.k_step) and whole-kernel counts."""
    kernel: dict[str, int] = {}
    for instruction in program:
        name = classify(instruction.opcode, kind)
        kernel[name] = kernel.get(name, 0) + 1
    return InstructionMix(kind, k_step(program, kind, stores).counts, kernel, note)


def stores_per_step(expression: str, kernels_dir: Path = KERNELS_DIR) -> float | None:
    """Elements each thread stores into the shared tiles per K step, for a GEMM or convolution
    kernel (main_loop's trips of its load loops); None for other kernels."""
    if expression.split("<")[0] not in GEMM_FAMILIES + CONV_FAMILIES:
        return None
    tile = block_loop(expression, kernels_dir)
    return (tile.tile_m + tile.tile_n) * tile.tile_k / tile.threads


def block_loop(expression: str, kernels_dir: Path = KERNELS_DIR) -> TiledProduct:
    """The block loop a GEMM or convolution kernel runs: the tile policy its expression names
    (gemm_v3<Mma::TF32, ...> runs MmaTile<Mma::TF32>), else gemm.cu's default SimtTile<>."""
    named = named_products(expression, kernels_dir)
    if named:
        return named[0]
    tiled, flat = tiled_products(kernels_dir), expression.replace(" ", "")
    return next((tiled[p] for p, mma in MMA_TYPES.items() if mma in flat), tiled["fp32"])


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


def parse_listing(text: str, kind: str) -> dict[str, InstructionMix]:
    """PTX or `cuobjdump -sass` text -> mangled kernel name -> InstructionMix (load loops
    counted once per K step: no tile shape is known here)."""
    programs = sass_programs(text) if kind == "sass" else ptx_programs(text)
    return {name: instruction_mix(program, kind) for name, program in programs.items()}


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
        raise StaticFactsError(f"{Path(command[0]).name} on {source}: {_last_error(result)}")
    return result.stdout + result.stderr


def _last_error(result: subprocess.CompletedProcess) -> str:
    """The last line a failed tool wrote to stderr, spaces collapsed."""
    return " ".join((result.stderr.strip().splitlines() or ["failed"])[-1].split())


@functools.cache
def _tool_version(tool: str) -> str:
    return subprocess.run([tool, "--version"], capture_output=True, text=True).stdout


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minicnn" / "static"
