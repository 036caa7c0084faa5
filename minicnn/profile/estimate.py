"""How long a launch would take on a GPU: a roofline lower bound and a counter-based estimate.

    bound     = max(FLOPs / peak, minimum DRAM bytes / DRAM bandwidth); peak: FP32, or TF32 / BF16
                for the tensor-core kernels
    estimate  = max(flop, dram, l1, shared, issue) * tail + LAUNCH_OVERHEAD, where
      flop    FLOPs / that peak, of the SMs the grid occupies
      dram    minimum bytes / global coalescing efficiency / bandwidth: a half-used sector
              still crosses the bus
      l1      sectors the counters saw / (4 sectors per clock per SM): every request, even one
              L2 serves, passes the SM's load/store unit
      shared  wavefronts the counters saw / (1 per clock per SM): bank conflicts add wavefronts
      issue   FP instructions (FFMA, or one mma per 2048 TF32 / 4096 BF16 FLOPs) * (instructions
              per FP instruction in the static main loop) / (4 per clock per SM): the address
              arithmetic around the FMAs
      dram and l1 are divided by min(1, achieved occupancy / 25%): too few warps cannot keep
      enough loads in flight to hide DRAM latency.
      tail    ceil(waves) / waves: the last wave of blocks leaves SMs idle.
FLOPs are the useful ones (2 per multiply-add of a conv or GEMM; a few per element elsewhere);
the minimum DRAM bytes count every array argument once, and for the multi-tensor optimizer
kernels the arrays their pointer tables reach (grid blocks * MULTI_CHUNK elements per table:
over by at most one partial chunk per tensor). The tensor-core kernels (v3, MmaTile<Mma::TF32>
or <Mma::BF16> in the name) are held to the GPU's TF32 / BF16 tensor peak instead of FP32's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from minicnn.backends.kernel_facts import KERNELS_DIR, source_constants
from minicnn.profile.gpus import Gpu, Occupancy, occupancy

LAUNCH_OVERHEAD = 2e-6        # seconds between back-to-back dependent launches on one stream
L1_SECTORS_PER_CLOCK = 4      # per SM: 128 bytes per clock through the load/store unit
SHARED_WAVEFRONTS_PER_CLOCK = 1
ISSUE_PER_CLOCK = 4           # warp instructions per SM per clock (4 schedulers)
LATENCY_OCCUPANCY = 0.25      # occupancy needed to reach full memory throughput
GEMM_FAMILIES = ("gemm_v1", "gemm_v2", "gemm_v3", "gemm_split_k", "gemm_bias", "linear_backward")
CONV_FAMILIES = ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight",
                 "conv2d_relu_forward", "conv2d_forward_split_k", "conv2d_backward_data_split_k",
                 "conv2d_backward_weight_split_k", "conv2d_backward")
# backward.cu's kernels compute the weight gradient's product and, when their with_dx flag (this
# scalar argument, counted from 0) is set, the data gradient's, of the same FLOPs
WITH_DX_SCALAR = {"conv2d_backward": 18, "linear_backward": 8}
# FLOPs per element of the largest array, for the kernels that are not products (an
# element-wise pass, a reduction, a pool reading its input once).
FLOPS_PER_ELEMENT = {"adam_update": 12, "sgd_update": 4, "bn_normalize": 4, "bn_backward_dx": 8,
                     "bn_eval": 4, "bn_sqdev_partial_sums": 3, "bn_dot_partial_sums": 3,
                     "softmax_forward": 5, "log_softmax_forward": 5, "cross_entropy_forward_labels": 5,
                     "cross_entropy_forward_soft": 6, "sigmoid_forward": 4, "dropout_forward": 2,
                     "affine_warp": 20, "adjust_colour": 12,
                     "adam_update_multi": 12, "sgd_update_multi": 4, "optim_advance": 1,
                     "bn_mean": 1, "bn_variance": 3, "bn_backward_sums": 5, "channel_sums": 1,
                     "sum_splits": 1, "sum_partials": 1, "relu_forward": 1, "relu_backward": 1,
                     "add_bias": 1, "dropout_apply": 2, "pool2d_dropout_forward": 1,
                     "pool2d_dropout_backward": 1, "cross_entropy_backward_labels": 2,
                     # issue 12's fused passes: the sum of the chain's counts they replace
                     "bn_moments": 4, "relu_backward_channel_sums": 2,
                     "relu_bn_pool_dropout_forward": 6, "relu_bn_pool_dropout_backward_sums": 6,
                     "relu_bn_pool_dropout_backward_dx_sums": 10,
                     "adam_update_advance_multi": 12, "cross_entropy_mean_labels": 7,
                     "cross_entropy_mean_soft": 8,
                     # batch norm in one launch (bn_one_launch.cu): its two launches' counts
                     "bn_train_one_launch": 8, "bn_backward_one_launch": 13,
                     "bn_relu_pool_forward_one_launch": 5, "bn_relu_pool_backward_one_launch": 2,
                     "relu_bn_pool_dropout_forward_one_launch": 10,
                     "relu_bn_pool_dropout_backward_one_launch": 16,
                     "conv_weight_transpose": 0}  # a copy: memory only
# Arrays of the multi-tensor kernels' pointer tables (optim.cu): params, moments, grads.
TABLE_ARRAYS = {"adam_update_multi": 4, "adam_update_advance_multi": 4, "sgd_update_multi": 3}
MULTI_CHUNK = source_constants(KERNELS_DIR / "optim.cu")["MULTI_CHUNK"]  # elements per block
# The multiply's peak per tensor-core operand type, as named in v3's instantiations.
TENSOR_PEAKS = {"Mma::TF32": "peak_tf32", "Mma::BF16": "peak_bf16"}
# FLOPs per FP warp instruction: an FFMA on 32 lanes, or one mma (m16n8k8 TF32, m16n8k16 BF16).
FLOPS_PER_FP_INSTRUCTION = {"Mma::TF32": 2 * 16 * 8 * 8, "Mma::BF16": 2 * 16 * 8 * 16}
FFMA_FLOPS = 2 * 32


@dataclass(frozen=True)
class Estimate:
    flops: float
    min_bytes: float
    occupancy: Occupancy | None  # None without the compiler's register count
    bound: float                 # seconds, roofline lower bound
    seconds: float               # seconds, the counter-based estimate
    limiter: str                 # the largest term: "flop", "dram", "l1", "shared", "issue" or "launch"
    terms: dict                  # term -> seconds (before tail and launch overhead)


def useful_flops(record) -> float:
    """The FLOPs the launch must do for its shapes (see the module docstring)."""
    scalars = [i for i, a in enumerate(record.args) if a.shape is None]
    products = 1 + record.scalar(scalars[WITH_DX_SCALAR[record.family]]) \
        if record.family in WITH_DX_SCALAR else 1
    if record.family in GEMM_FAMILIES:
        m, n, k = (record.scalar(i) for i in scalars[:3])
        return 2.0 * m * n * k * products
    if record.family in CONV_FAMILIES:
        s = [record.scalar(i) for i in scalars]
        batch, channels, filters, kh, kw, ho, wo = s[0], s[1], s[4], s[5], s[6], s[11], s[12]
        return 2.0 * batch * filters * ho * wo * channels * kh * kw * products
    largest = max([a.size for a in record.args] + list(_table_elements(record)), default=0)
    return float(FLOPS_PER_ELEMENT.get(record.family, 1) * largest)


def _table_elements(record) -> tuple:
    """(elements per table array,) of a multi-tensor kernel, else ()."""
    return (record.blocks * MULTI_CHUNK,) if record.family in TABLE_ARRAYS else ()


def minimum_bytes(record) -> float:
    tables = [TABLE_ARRAYS[record.family] * n * _float_itemsize(record) for n in _table_elements(record)]
    return float(sum(a.nbytes for a in record.args) + sum(tables))


def _float_itemsize(record) -> int:
    """Bytes per element of the kernel's float type (its first float scalar argument)."""
    return next((8 if a.dtype == "float64" else 4 for a in record.args
                 if a.shape is None and a.dtype.startswith("float")), 4)


def peak_flops(record, gpu: Gpu) -> float:
    """The multiply's peak: a tensor-core kernel's TF32 / BF16 peak, else FP32's."""
    tensor = next((peak for name, peak in TENSOR_PEAKS.items() if name in record.kernel), None)
    return getattr(gpu, tensor) if tensor else gpu.peak_fp32


def estimate(record, gpu: Gpu, facts=None) -> Estimate:
    """record: a LaunchRecord (with .counters when it was counted); facts: its KernelFacts."""
    flops, min_bytes = useful_flops(record), minimum_bytes(record)
    threads, blocks = record.threads_per_block, record.blocks
    occ = None
    if facts is not None:
        occ = occupancy(gpu, threads, facts.registers, facts.static_shared + record.shared_mem)
    warps_per_block = math.ceil(threads / 32)
    blocks_per_sm = occ.blocks_per_sm if occ and occ.blocks_per_sm else max(1, gpu.max_warps_per_sm // warps_per_block)
    active_sms = min(gpu.sm_count, blocks)
    resident = min(blocks_per_sm, math.ceil(blocks / gpu.sm_count))
    achieved = resident * warps_per_block / gpu.max_warps_per_sm
    latency = min(1.0, achieved / LATENCY_OCCUPANCY)
    sm_clocks = active_sms * gpu.clock_hz
    counters = record.counters
    if counters is not None:
        sectors = counters.total("global", None, "units")
        wavefronts = counters.total("shared", None, "units")
        coalescing = counters.efficiency("global")
    else:  # not counted: assume perfect access
        sectors, wavefronts, coalescing = min_bytes / 32, 0.0, 1.0
    terms = {
        "flop": flops / (peak_flops(record, gpu) * active_sms / gpu.sm_count),
        "dram": min_bytes / coalescing / gpu.dram_bandwidth / latency,
        "l1": sectors / (L1_SECTORS_PER_CLOCK * sm_clocks) / latency,
        "shared": wavefronts / (SHARED_WAVEFRONTS_PER_CLOCK * sm_clocks),
        "issue": 0.0,
    }
    per_fp = facts.mix.loop_per_fp if facts is not None and facts.mix is not None else None
    if per_fp and record.family in GEMM_FAMILIES + CONV_FAMILIES:
        per_instruction = next((f for name, f in FLOPS_PER_FP_INSTRUCTION.items() if name in record.kernel),
                               FFMA_FLOPS)
        terms["issue"] = flops / per_instruction * per_fp / (ISSUE_PER_CLOCK * sm_clocks)
    waves = blocks / (blocks_per_sm * gpu.sm_count)
    tail = math.ceil(waves) / waves if waves >= 1 else 1.0
    limiter = max(terms, key=terms.get)
    seconds = terms[limiter] * tail + LAUNCH_OVERHEAD
    if terms[limiter] * tail < LAUNCH_OVERHEAD:
        limiter = "launch"
    bound = max(flops / peak_flops(record, gpu), min_bytes / gpu.dram_bandwidth)
    return Estimate(flops, min_bytes, occ, bound, seconds, limiter, terms)
