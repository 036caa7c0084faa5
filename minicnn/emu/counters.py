"""Performance counters of one emulated launch: what Nsight Compute's memory tables show.

    counters = profile_launch(kernel, grid, block, args, blocks="sample")
    counters.total("global", "load", "units") / counters.total("global", "load", "requests")

Counting is off in normal runs; profile_launch turns it on for one launch (counters.h says how
accesses are grouped into warp-level instructions). Per access site (a load or store in the
kernel's code) it gives requests, active lanes, and `units`: 32-byte sectors for global memory,
wavefronts for shared memory, beside `ideal_units`, what a perfectly coalesced or conflict-free
warp would need. `blocks` picks which blocks run: "all", "sample" (first, middle, last) or an
int (that many, evenly spread). Blocks not picked are *not executed* (their outputs stay as
they were), and the totals are scaled by blocks in the grid / blocks run. A grid whose blocks do
different kinds of work (backward.cu: a product's long-K blocks, then another's, then channel
sums; a forward conv's product blocks and its weight-transposing columns) is sampled kind by
kind (profile_kinds), each kind scaled by its own size.
"""
from __future__ import annotations

import ctypes
import functools
import subprocess
from dataclasses import dataclass, field

import numpy as np

SPACES = ("global", "shared")
OPS = ("load", "store")
FIELDS = ("requests", "lanes", "units", "ideal_units", "bytes")


class _Site(ctypes.Structure):
    """Mirror of SiteOut in counters.cpp."""

    _fields_ = [("pc_offset", ctypes.c_uint64), ("space", ctypes.c_int32), ("write", ctypes.c_int32),
                ("width", ctypes.c_int32), ("_unused", ctypes.c_int32)] + [
                   (name, ctypes.c_uint64) for name in FIELDS]


@dataclass(frozen=True)
class AccessSite:
    """One load or store of the kernel's code, summed over the blocks that ran (unscaled)."""
    where: str        # "conv.cu:57" when the debug info maps it back, else "pc 0x1a2b"
    space: str        # "global" | "shared"
    op: str           # "load" | "store"
    width: int        # bytes per lane (4 float, 8 double or float2, 16 float4)
    requests: int     # warp-level instructions
    lanes: int        # lane accesses (lanes / requests = active lanes per request)
    units: int        # sectors (global) or wavefronts (shared)
    ideal_units: int  # the same if perfectly coalesced / conflict-free
    bytes: int

    @property
    def efficiency(self) -> float:
        """ideal / actual: 1.0 is perfect, 0.125 is a fully scattered float read."""
        return self.ideal_units / self.units if self.units else 1.0


@dataclass
class LaunchCounters:
    kernel: str
    grid: tuple
    block: tuple
    blocks_total: int
    blocks_run: int
    barriers: int       # block-wide barriers passed, summed over the blocks that ran
    warp_ops: int       # warp intrinsics (shuffles, votes) released
    sites: list = field(default_factory=list)

    @property
    def scale(self) -> float:
        """Multiplies a count over the blocks that ran into one for the whole grid."""
        return self.blocks_total / self.blocks_run if self.blocks_run else 0.0

    @property
    def sampling(self) -> str:
        if self.blocks_run == self.blocks_total:
            return f"all {self.blocks_total} blocks"
        return f"{self.blocks_run} of {self.blocks_total} blocks, totals scaled x{self.scale:.1f}"

    def total(self, space: str, op: str | None, name: str, scaled: bool = True) -> float:
        """Sum of `name` (one of FIELDS) over the sites of a space and op (None: both ops)."""
        value = sum(getattr(s, name) for s in self.sites
                    if s.space == space and (op is None or s.op == op))
        return value * self.scale if scaled else value

    def efficiency(self, space: str, op: str | None = None) -> float:
        """ideal / actual sectors (global) or wavefronts (shared); 1.0 when nothing moved."""
        units = self.total(space, op, "units", scaled=False)
        return self.total(space, op, "ideal_units", scaled=False) / units if units else 1.0

    def extra_wavefronts(self) -> float:
        """Shared-memory bank conflicts: wavefronts beyond the ideal, whole grid."""
        return self.total("shared", None, "units") - self.total("shared", None, "ideal_units")


def sampled_blocks(blocks_total: int, blocks="sample") -> list[int]:
    """Linear indices of the blocks to run, sorted; [] means every block."""
    if blocks == "all":
        return []
    if blocks == "sample":
        blocks = 3
    if not isinstance(blocks, (int, np.integer)) or blocks < 1:
        raise ValueError(f"blocks must be 'all', 'sample' or a positive int, got {blocks!r}")
    if blocks >= blocks_total:
        return []
    if blocks == 1:
        return [0]
    return sorted({round(i * (blocks_total - 1) / (blocks - 1)) for i in range(blocks)})


def profile_launch(kernel, grid, block, args, shared_mem: int = 0, blocks="sample") -> LaunchCounters:
    """Runs one launch of an emulator kernel (EmuKernel) with counting on."""
    grid3, block3, blocks_total = _launch_dims(grid, block)
    return _count(kernel, grid3, block3, args, shared_mem, blocks_total,
                  sampled_blocks(blocks_total, blocks))


def profile_kinds(kernel, grid, block, args, shared_mem: int, kinds, blocks="sample") -> LaunchCounters:
    """profile_launch for a grid whose blocks do different kinds of work: kinds holds each
    kind's linear block indices (sorted; together every block once). `blocks` are sampled in
    each kind, and each kind's counts are weighed by its blocks / blocks run. The result's
    counts are kept so that its (overall) scale turns them into whole-grid totals."""
    grid3, block3, blocks_total = _launch_dims(grid, block)
    if sum(map(len, kinds)) != blocks_total:
        raise ValueError(f"kinds of {[len(kind) for kind in kinds]} blocks do not add up to the grid's {blocks_total}")
    parts = []
    for kind in kinds:
        if len(kind):
            chosen = [int(kind[i]) for i in sampled_blocks(len(kind), blocks)] or [int(b) for b in kind]
            parts.append((len(kind), _count(kernel, grid3, block3, args, shared_mem, blocks_total, chosen)))
    return merge_counters(kernel.name, grid3, block3, parts)


def merge_counters(kernel: str, grid3: tuple, block3: tuple, parts) -> LaunchCounters:
    """One LaunchCounters for several counted runs, parts = [(blocks it stands for, its
    counters)]: each run's counts weighed by blocks it stands for / its blocks run, kept so
    that the result's scale (blocks stood for / blocks run, over all parts) turns them into
    the sum of the runs' totals."""
    blocks_total = sum(count for count, _ in parts)
    run = sum(part.blocks_run for _, part in parts)
    scale = blocks_total / run
    weighed = [(count / part.blocks_run / scale, part) for count, part in parts]
    merged = {}  # (where, space, op, width) -> summed fields, weighed
    for weight, part in weighed:
        for site in part.sites:
            key = (site.where, site.space, site.op, site.width)
            values = [getattr(site, name) * weight for name in FIELDS]
            merged[key] = [a + b for a, b in zip(merged.get(key, [0] * len(FIELDS)), values)]
    sites = [AccessSite(*key, *values) for key, values in merged.items()]
    return LaunchCounters(kernel, grid3, block3, blocks_total, run,
                          *(round(sum(getattr(p, name) * w for w, p in weighed))
                            for name in ("barriers", "warp_ops")), sites)


def _launch_dims(grid, block) -> tuple:
    """(grid, block as 3-tuples, blocks in the grid), checked as a launch checks them."""
    from minicnn.emu.runtime import _dims, MAX_BLOCK_DIM, MAX_GRID_DIM  # one rule for dims

    grid3, block3 = _dims("grid", grid, MAX_GRID_DIM), _dims("block", block, MAX_BLOCK_DIM)
    return grid3, block3, grid3[0] * grid3[1] * grid3[2]


def _count(kernel, grid3, block3, args, shared_mem, blocks_total, chosen) -> LaunchCounters:
    """Runs the launch with counting on, only the blocks `chosen` ([]: all of them)."""
    library = kernel._library
    library.minicnn_emu_profile_end.restype = ctypes.c_int
    library.minicnn_emu_profile_begin((ctypes.c_uint64 * max(len(chosen), 1))(*chosen), len(chosen))
    stats = (ctypes.c_uint64 * 3)()
    try:
        kernel(grid3, block3, args, shared_mem)
    finally:
        count = library.minicnn_emu_profile_end(stats)
    raw = []
    for i in range(count):
        site = _Site()
        library.minicnn_emu_profile_site(i, ctypes.byref(site))
        raw.append(site)
    places = _source_lines(library._name, tuple(s.pc_offset for s in raw))
    sites = [AccessSite(places[s.pc_offset], SPACES[s.space], OPS[s.write], s.width,
                        *(getattr(s, name) for name in FIELDS)) for s in raw]
    return LaunchCounters(kernel.name, grid3, block3, blocks_total, int(stats[0]), int(stats[1]),
                          int(stats[2]), sites)


@functools.lru_cache(maxsize=64)
def _source_lines(library_path: str, offsets: tuple[int, ...]) -> dict[int, str]:
    """pc offset -> "file.cu:line" through addr2line (the library is built with -g); an
    offset it cannot map keeps its hex form, so sites still sort by program order."""
    places = {offset: f"pc {offset:#x}" for offset in offsets}
    if not offsets:
        return places
    try:
        # the hook's return address is just after the call: step back one byte into it
        result = subprocess.run(["addr2line", "-e", library_path, *(hex(o - 1) for o in offsets)],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return places
    for offset, line in zip(offsets, result.stdout.splitlines()):
        if not line.startswith("??"):
            file_name, _, number = line.rpartition(":")
            places[offset] = f"{file_name.rsplit('/', 1)[-1]}:{number.split()[0]}"
    return places
