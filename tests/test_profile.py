"""minicnn.profile: occupancy by hand, compiler facts, the recorder's launch list, the model."""
import re
import shutil

import numpy as np
import pytest

import minicnn as mc
from minicnn import functional as F, nn
from minicnn.emu.counters import AccessSite, LaunchCounters
from minicnn.profile.estimate import (CONV_FAMILIES, FLOPS_PER_ELEMENT, GEMM_FAMILIES, LAUNCH_OVERHEAD,
                                      MULTI_CHUNK, estimate, minimum_bytes, useful_flops)
from minicnn.profile.gpus import get_gpu, occupancy
from minicnn.backends.recording import ArgInfo, LaunchRecord, Recorder
from minicnn.profile.measure import CountInEmulator
from minicnn.profile.static import parse_listing, parse_ptxas_verbose, static_facts

H100, A100 = get_gpu("h100"), get_gpu("A100")


@pytest.mark.parametrize("gpu, threads, registers, shared, blocks, warps, limiter", [
    # 64 regs * 32 lanes = 2048 per warp -> 32 warps -> 4 blocks of 8 warps; smem would allow 24
    (H100, 256, 64, 8320, 4, 32, "registers"),
    # 37 regs -> 1184 per warp, rounded up to 1280 -> 51 warps -> 6 blocks of 8
    (H100, 256, 37, 0, 6, 48, "registers"),
    # 49152 + 1024 reserved = 50176 B per block; 167936 // 50176 = 3 blocks of 4 warps
    (A100, 128, 32, 49152, 3, 12, "shared memory"),
    # 16 regs: registers allow 32 blocks, but 64 warps // 4 = 16 blocks
    (H100, 128, 16, 0, 16, 64, "warps"),
    # one-warp blocks stop at 32 blocks per SM: half the warp slots
    (H100, 32, 16, 0, 32, 32, "blocks"),
    (H100, 1024, 255, 0, 0, 0, "does not fit"),   # 255 * 32 * 32 = 261120 > 65536 registers
    (H100, 256, 300, 0, 0, 0, "does not fit"),    # over 255 registers per thread
])
def test_occupancy_matches_hand_computed_cases(gpu, threads, registers, shared, blocks, warps, limiter):
    occ = occupancy(gpu, threads, registers, shared)
    assert (occ.blocks_per_sm, occ.warps_per_sm, occ.limiter) == (blocks, warps, limiter)
    assert occ.fraction == warps / 64


def test_gpu_names_are_case_insensitive_and_unknown_ones_are_refused():
    assert get_gpu("H200").dram_bandwidth > get_gpu("h100").dram_bandwidth
    assert H100.fp32_lanes_per_sm == pytest.approx(128, rel=1e-3)
    with pytest.raises(ValueError, match="unknown GPU 'v100': choose one of h100, h200, a100"):
        get_gpu("v100")


PTXAS = """ptxas info    : Compiling entry function '_Z4copyPf' for 'sm_90'
ptxas info    : Function properties for _Z4copyPf
    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 42 registers, used 1 barriers, 4096 bytes smem, 368 bytes cmem[0]
"""
PTX = """.visible .entry _Z4loopPf(
{
\tmov.u32 \t%r1, %tid.x;
$L__BB0_1:
\tld.shared.f32 \t%f1, [%r2];
\tfma.rn.f32 \t%f2, %f1, %f1, %f2;
\tdiv.s32 \t%r3, %r1, %r4;
\tadd.s32 \t%r1, %r1, 1;
\tsetp.lt.s32 \t%p1, %r1, %r5;
\t@%p1 bra \t$L__BB0_1;
\tst.global.f32 \t[%rd1], %f2;
\tret;
}
"""


def test_ptxas_verbose_and_ptx_listings_are_parsed():
    assert parse_ptxas_verbose(PTXAS) == {"_Z4copyPf": dict(registers=42, spill_stores=8, spill_loads=4,
                                                            stack_bytes=16, static_shared=4096)}
    mix = parse_listing(PTX, "ptx")["_Z4loopPf"]
    assert mix.loop == {"shared load": 1, "fp32 (fma/mul/add)": 1, "int div/rem": 1, "int/address": 2,
                        "branch": 1}
    assert mix.kernel["global store"] == 1 and mix.kernel["int/address"] == 3
    assert mix.loop_per_fp == 6 + 19  # the PTX division counts as 20 instructions


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_nvcc_reports_the_gemm_tiles_and_its_main_loop():
    facts = static_facts("gemm.cu", ["gemm_v2<float, false, false>", "sum_splits<float>"])
    gemm = facts["gemm_v2<float, false, false>"]
    assert gemm.static_shared == 2 * 2 * 16 * 68 * 4  # two stages of a_tile + b_tile, rows padded to 68
    assert 0 < gemm.registers <= 255 and gemm.spill_stores == 0
    # one 16-deep k-step unrolled: 16 * 4 * 4 FMAs from 16 * (1 + 1) float4 shared loads
    assert gemm.mix.loop["fp32 (fma/mul/add)"] == 256 and gemm.mix.loop["shared load"] == 32
    assert facts["sum_splits<float>"].static_shared == 0


def tiny_step(device):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 10)).to(device)
    x = mc.tensor(np.random.default_rng(0).random((2, 3, 8, 8)), device=device)
    loss = F.cross_entropy(model(x), np.array([1, 2]))
    loss.backward()
    return loss.item(), model


TINY_LAUNCHES = [
    "conv2d_relu_forward<float, SimtTile<32, 128, 256>>",  # conv -> ReLU fused; 4 filters: a 32-row tile
    "gemm_bias<float, false, true>",                                                   # linear
    "cross_entropy_mean_labels<float>",                    # loss, its mean and its gradient
    "gemm_v2<float, false, false>", "gemm_v2<float, true, false>",                     # linear dx, dw
    "channel_sums<float>",                                                             # linear db
    "relu_backward_channel_sums<float>",                                               # ReLU dx + conv db
    "conv2d_backward_weight<float, SimtTile<32, 32, 64>>",                             # no dx: x is data
]


def test_recorder_lists_every_launch_of_a_tiny_network_and_changes_no_result():
    recorder = Recorder()
    device = recorder.device("emu")
    loss, model = tiny_step(device)
    assert [r.kernel for r in recorder.launches] == TINY_LAUNCHES
    first = recorder.launches[0]
    assert (first.source, first.family, first.block) == ("conv.cu", "conv2d_relu_forward", (256, 1, 1)[:len(first.block)])
    assert first.args[0] == ArgInfo((2, 4, 8, 8), "float32")
    assert recorder.allocations > 0 and recorder.host_to_device == 0
    # the same weights on the plain emulator device give the same loss, bit for bit
    plain = model.to("emu")
    x = mc.tensor(np.random.default_rng(0).random((2, 3, 8, 8)), device="emu")
    assert F.cross_entropy(plain(x), np.array([1, 2])).item() == loss


def test_skipped_launches_are_recorded_but_not_run():
    recorder = Recorder(execute="skip")
    device = recorder.device("emu")
    y = device.kernels.relu_forward(np.full(10, -1.0, np.float32))
    assert [r.kernel for r in recorder.launches] == ["relu_forward<float>"]
    assert recorder.launches[0].args[2] == ArgInfo(None, "int32", 10)
    assert recorder.allocations == 1  # the output, through xp.empty_like
    assert y.shape == (10,)


def test_zero_filled_recording_makes_skipped_outputs_zeros():
    device = Recorder(execute="skip", zero_fill=True).device("emu")
    y = device.kernels.relu_forward(np.full(1 << 16, -1.0, np.float32))
    assert not y.any()  # np.empty would hold whatever memory held: counts could change run to run


def copy_record(units_per_request: int, wavefronts_per_request: int = 1) -> LaunchRecord:
    """A 1M-float copy, 4096 blocks of 256 threads, with hand-made counters (all blocks)."""
    n, requests = 1 << 20, (1 << 20) // 32
    sites = [AccessSite("x", "global", "load", 4, requests, n, units_per_request * requests, 4 * requests, 4 * n),
             AccessSite("y", "global", "store", 4, requests, n, 4 * requests, 4 * requests, 4 * n),
             AccessSite("t", "shared", "load", 4, requests, n, wavefronts_per_request * requests, requests, 4 * n)]
    counters = LaunchCounters("copy", (4096, 1, 1), (256, 1, 1), 4096, 4096, 0, 0, sites)
    args = (ArgInfo((n,), "float32"), ArgInfo((n,), "float32"), ArgInfo(None, "int32", n))
    return LaunchRecord(0, "x.cu", "copy", (4096,), (256,), 0, args, counters=counters)


def test_uncoalesced_and_conflicted_launches_estimate_slower_than_the_bound():
    coalesced, scattered, conflicted = copy_record(4), copy_record(32), copy_record(4, 32)
    good = estimate(coalesced, H100)
    assert good.bound == pytest.approx(8 * 2**20 / H100.dram_bandwidth)  # 8 MB moved once
    waves = 4096 / (8 * 132)  # 8 blocks of 8 warps per SM (no register count given)
    tail = 4 / waves          # the 4th wave is partly empty
    assert good.limiter == "dram" and good.seconds == pytest.approx(good.bound * tail + LAUNCH_OVERHEAD)
    slow = estimate(scattered, H100)
    assert slow.bound == good.bound and slow.seconds > 1.5 * good.seconds
    bank = estimate(conflicted, H100)
    assert bank.terms["shared"] == pytest.approx(32 * good.terms["shared"])
    assert bank.limiter == "shared" and bank.seconds > 1.3 * good.seconds


def test_useful_flops_of_convolutions_and_products():
    ints = [ArgInfo(None, "int32", v) for v in (8, 16, 32, 32, 64, 3, 3, 1, 1, 1, 1, 32, 32)]
    conv = LaunchRecord(0, "conv.cu", "conv2d_forward<float>", (1,), (256,), 0,
                        (ArgInfo((8, 64, 32, 32), "float32"),) * 4 + tuple(ints))
    assert useful_flops(conv) == 2 * 8 * 64 * 32 * 32 * 16 * 9
    gemm = LaunchRecord(0, "gemm.cu", "gemm_v2<float, false, true>", (1,), (256,), 0,
                        (ArgInfo((5, 7), "float32"),) * 3 + tuple(ArgInfo(None, "int32", v) for v in (5, 7, 11, 16)))
    assert useful_flops(gemm) == 2 * 5 * 7 * 11


def conv_record(kernel: str) -> LaunchRecord:
    """A 64-channel 32 x 32 forward conv at batch 8 (4.8 GFLOP), 128 x 2 tiles of 64 x 64."""
    ints = [ArgInfo(None, "int32", v) for v in (8, 64, 32, 32, 64, 3, 3, 1, 1, 1, 1, 32, 32)]
    return LaunchRecord(0, "conv.cu", kernel, (128, 1), (128,), 0,
                        (ArgInfo((8, 64, 32, 32), "float32"),) * 4 + tuple(ints))


def test_tensor_core_kernels_are_held_to_their_tensor_peak():
    fp32 = estimate(conv_record("conv2d_forward<float>"), H100)
    tf32 = estimate(conv_record("conv2d_forward<float, MmaTile<Mma::TF32>>"), H100)
    bf16 = estimate(conv_record("conv2d_forward<float, MmaTile<Mma::BF16>>"), H100)
    assert tf32.flops == fp32.flops == bf16.flops
    assert fp32.terms["flop"] / tf32.terms["flop"] == pytest.approx(H100.peak_tf32 / H100.peak_fp32)
    assert fp32.terms["flop"] / bf16.terms["flop"] == pytest.approx(H100.peak_bf16 / H100.peak_fp32)


def test_multi_tensor_optimizer_bytes_count_the_arrays_its_tables_reach():
    tables = (ArgInfo((16,), "uint64"),) * 4 + (ArgInfo((16,), "int32"), ArgInfo((17,), "int32"))
    scalars = (ArgInfo(None, "int32", 16), ArgInfo((4,), "float64")) + (ArgInfo(None, "float32", 0.9),) * 4
    adam = LaunchRecord(0, "optim.cu", "adam_update_multi<float>", (100,), (256,), 0,
                        tables + scalars + (ArgInfo(None, "int32", 1),))
    elements = 100 * MULTI_CHUNK  # params, moments and grads: 4 float arrays of them
    assert minimum_bytes(adam) == 4 * 4 * elements + sum(a.nbytes for a in adam.args)
    assert useful_flops(adam) == FLOPS_PER_ELEMENT["adam_update_multi"] * elements


def test_every_kernel_of_a_vgg_like_step_has_a_flop_count():
    """Each family a vgg_like training step launches (fp32 and tf32) is a product or listed in
    FLOPS_PER_ELEMENT, so `minicnn profile` estimates the whole step, not a default."""
    from minicnn.models import get_spec
    from minicnn.profile.step import _Step
    families = set()
    for precision in ("fp32", "tf32"):
        recorder = Recorder(execute="skip", zero_fill=True)
        with np.errstate(all="ignore"):
            _Step(get_spec("vgg_like"), 4, recorder.device("emu", precision), 0)()
        families |= {r.family for r in recorder.launches}
        assert precision == "fp32" or any("Mma::TF32" in r.kernel for r in recorder.launches)
    missing = families - set(FLOPS_PER_ELEMENT) - set(GEMM_FAMILIES) - set(CONV_FAMILIES)
    assert not missing, sorted(missing)


def test_kernel_expressions_match_their_demangled_names_with_enums_and_default_arguments():
    from minicnn.profile.static import _match_expressions
    demangled = {"conv2d_forward<float,SimtTile>": "simt", "conv2d_forward<float,MmaTile<(Mma)0>>": "tf32",
                 "conv2d_forward<float,MmaTile<(Mma)1>>": "bf16", "gemm_v2<float,false,true>": "gemm"}
    enumerators = {"Mma::TF32": "(Mma)0", "Mma::BF16": "(Mma)1"}
    expressions = ["conv2d_forward<float>", "conv2d_forward<float, MmaTile<Mma::TF32>>",
                   "conv2d_forward<float, MmaTile<Mma::BF16>>", "gemm_v2<float, false, true>", "relu<float>"]
    assert _match_expressions(expressions, demangled, enumerators) == {
        "conv2d_forward<float>": "simt", "conv2d_forward<float, MmaTile<Mma::TF32>>": "tf32",
        "conv2d_forward<float, MmaTile<Mma::BF16>>": "bf16", "gemm_v2<float, false, true>": "gemm",
        "relu<float>": None}


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_tensor_core_tiles_have_no_shared_memory_bank_conflicts(precision):
    """Every v3 kernel of a small training step (three conv passes; GEMMs with A and B stored
    either way round, so both slab layouts on both sides) counted in the emulator: its shared
    stores (cp.async landing) and fragment loads (ldmatrix, scalar) take the ideal wavefronts."""
    recorder = Recorder(execute=CountInEmulator("all"))
    device = recorder.device("emu", precision)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding="same"), nn.ReLU(), nn.Conv2d(8, 16, 3, padding="same"),
                          nn.Flatten(), nn.Linear(16 * 8 * 8, 10)).to(device)
    x = mc.tensor(np.random.default_rng(0).random((2, 3, 8, 8)), device=device)
    F.cross_entropy(model(x), np.array([1, 2])).backward()
    v3 = [r for r in recorder.launches if "Mma::" in r.kernel]
    # the layouts of the GEMMs' operands, whichever kernel (gemm_v3, one-launch split-K) ran them
    gemm_layouts = {re.search(r"(true|false), (true|false)", r.kernel).groups()
                    for r in v3 if r.kernel.startswith("gemm")}
    assert gemm_layouts >= {("false", "true"), ("false", "false"), ("true", "false")}
    assert {r.family for r in v3} >= {"conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight"}
    for r in v3:
        wavefronts, ideal = (r.counters.total("shared", None, name) for name in ("units", "ideal_units"))
        assert wavefronts == ideal > 0, (r.kernel, wavefronts / ideal)


def test_useful_flops_of_the_fused_and_one_launch_split_k_products():
    ints = [ArgInfo(None, "int32", v) for v in (8, 16, 32, 32, 64, 3, 3, 1, 1, 1, 1, 32, 32)]
    arrays = (ArgInfo((8, 64, 32, 32), "float32"),) * 5
    for name in ("conv2d_relu_forward<float>", "conv2d_forward_split_k<float>",
                 "conv2d_backward_data_split_k<float>", "conv2d_backward_weight_split_k<float>"):
        record = LaunchRecord(0, "conv.cu", name, (1,), (256,), 0, arrays + tuple(ints))
        assert useful_flops(record) == 2 * 8 * 64 * 32 * 32 * 16 * 9, name
    gemm = LaunchRecord(0, "gemm.cu", "gemm_split_k<float, true, false>", (1,), (256,), 0,
                        arrays + tuple(ArgInfo(None, "int32", v) for v in (5, 7, 11, 16)))
    assert useful_flops(gemm) == 2 * 5 * 7 * 11
