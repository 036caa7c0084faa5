"""The GPUs the profiler can estimate for (gpus.json) and theoretical occupancy on them.

Occupancy is how many warps an SM can hold at once for a kernel, as a fraction of its maximum;
more resident warps hide more memory latency. Each block needs registers, shared memory and
warp slots, and the scarcest of the three sets how many blocks fit on one SM:

    registers  regs/thread * 32 rounded up to the allocation unit (256) per warp;
               blocks = (registers_per_sm // regs_per_warp) // warps_per_block
    shared     (static + dynamic + 1 KB reserved) rounded up to 128 B per block;
               blocks = shared_per_sm // that
    warps      max_warps_per_sm // warps_per_block, and at most max_blocks_per_sm
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

GPUS_FILE = Path(__file__).with_name("gpus.json")


@dataclass(frozen=True)
class Gpu:
    key: str
    name: str
    arch: str           # nvcc's -arch for it, e.g. sm_90
    sm_count: int
    clock_hz: float
    registers_per_sm: int
    register_unit: int
    max_registers_per_thread: int
    max_warps_per_sm: int
    max_blocks_per_sm: int
    max_threads_per_block: int
    shared_per_sm: int
    max_shared_per_block: int
    shared_unit: int
    shared_reserved_per_block: int
    peak_fp32: float
    peak_tf32: float
    peak_bf16: float
    dram_bandwidth: float

    @property
    def fp32_lanes_per_sm(self) -> float:
        """FFMA lanes per SM per clock (128 on Hopper, 64 on Ampere), from the FP32 peak."""
        return self.peak_fp32 / (2 * self.sm_count * self.clock_hz)


@functools.cache
def gpu_table() -> dict[str, Gpu]:
    data = json.loads(GPUS_FILE.read_text())
    return {key: Gpu(key=key, **fields) for key, fields in data.items() if not key.startswith("_")}


def get_gpu(name: str) -> Gpu:
    """'h100', 'H200', 'a100' -> its Gpu; ValueError naming the choices otherwise."""
    table = gpu_table()
    key = name.lower().replace(" ", "").replace("-", "").replace("sxm", "")
    if key not in table:
        raise ValueError(f"unknown GPU {name!r}: choose one of {', '.join(table)}")
    return table[key]


@dataclass(frozen=True)
class Occupancy:
    blocks_per_sm: int
    warps_per_sm: int
    fraction: float  # warps_per_sm / max_warps_per_sm
    limiter: str     # "registers", "shared memory", "warps", "blocks" or "does not fit"


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def occupancy(gpu: Gpu, threads_per_block: int, registers_per_thread: int, shared_bytes: int) -> Occupancy:
    """Theoretical occupancy of a kernel launched with threads_per_block threads, using
    registers_per_thread registers and shared_bytes of static + dynamic shared memory."""
    warps = -(-threads_per_block // 32)
    if (threads_per_block > gpu.max_threads_per_block or registers_per_thread > gpu.max_registers_per_thread
            or shared_bytes > gpu.max_shared_per_block):
        return Occupancy(0, 0, 0.0, "does not fit")
    regs_per_warp = _round_up(max(registers_per_thread, 1) * 32, gpu.register_unit)
    shared_per_block = _round_up(shared_bytes + gpu.shared_reserved_per_block, gpu.shared_unit)
    limits = {
        "registers": gpu.registers_per_sm // regs_per_warp // warps,
        "shared memory": gpu.shared_per_sm // shared_per_block,
        "warps": gpu.max_warps_per_sm // warps,
        "blocks": gpu.max_blocks_per_sm,
    }
    limiter = min(limits, key=limits.get)
    blocks = limits[limiter]
    return Occupancy(blocks, blocks * warps, blocks * warps / gpu.max_warps_per_sm,
                     limiter if blocks else "does not fit")
