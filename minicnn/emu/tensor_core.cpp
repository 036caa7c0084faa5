// tensor_core.cpp - mma.sync, ldmatrix and cp.async on the CPU, as the PTX ISA specifies them.
//
// mma.sync and ldmatrix are warp collectives: each lane leaves its operands in Thread::in and
// waits in warp_op() like a shuffle; once all 32 lanes have arrived, runtime.cpp's
// release_warp() calls complete_tensor_core_op(), which assembles the matrices from the lanes'
// fragments (layouts drawn in kernels/warp_mma.cuh), computes, and hands each lane its part.
// A lane that exited or waits elsewhere is reported as warp divergence, like a shuffle's; an
// mma reading a fragment register that no instruction wrote is reported too.
//
// Numerics of the model (the hardware leaves accumulation order and width unspecified):
//   * TF32 operands are the top 19 bits of each 32-bit register (sign, 8 exponent, 10
//     mantissa): the low 13 bits are ignored, as the hardware does, so a kernel that skips
//     cvt.rna.tf32 truncates. BF16 operands are the register halves.
//   * Products are exact and each mma's products and C are summed in double, then rounded to
//     FP32 once: the result is within one FP32 rounding of the exact value per mma.
// cp.async copies are kept per thread and land at the cp.async.wait_group that covers their
// group; until then checks.cpp marks their shared destination bytes, so reading them (a
// missing wait) is reported, and so is a thread that exits with copies never waited for.
#include <cmath>
#include <cstring>
#include <vector>

#include "counters.h"
#include "emu_state.h"

namespace emu {

static int self_index() { return int(state.current - state.threads.data()); }

// ---- Rounding (cvt) ----

unsigned tf32_round(float x) {
    unsigned bits = emu_bit_cast<unsigned>(x);
    if ((bits & 0x7f800000u) == 0x7f800000u) return bits;  // inf and NaN stay as they are
    return (bits + 0x1000u) & ~0x1fffu;  // +half an ulp on the magnitude: ties go away from zero
}

static unsigned short bf16_round(float x) {
    unsigned bits = emu_bit_cast<unsigned>(x);
    if (std::isnan(x)) return (unsigned short)((bits >> 16) | 0x40u);  // stays a (quiet) NaN
    return (unsigned short)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);  // nearest, ties even
}

unsigned bf16x2_round(float lo, float hi) { return unsigned(bf16_round(lo)) | unsigned(bf16_round(hi)) << 16; }

// ---- The collectives ----

struct MmaOperands {
    unsigned a[4], b[2];
    float c[4];
};

struct LdmatrixRow {
    unsigned char bytes[16];  // the 8 b16 elements of the row this lane addressed
};

bool is_tensor_core_op(WarpOp op) { return op >= MMA_TF32; }

const char* tensor_core_op_name(WarpOp op) {
    static const char* const names[] = {
        "mma.sync.m16n8k8.tf32", "mma.sync.m16n8k16.bf16", "ldmatrix.x1", "ldmatrix.x2",
        "ldmatrix.x4", "ldmatrix.x1.trans", "ldmatrix.x2.trans", "ldmatrix.x4.trans"};
    return names[op - MMA_TF32];
}

static int ldmatrix_count(WarpOp op) {
    int variant = (op - LDMATRIX_X1) % 3;
    return 1 << variant;  // x1, x2, x4
}

static bool ldmatrix_trans(WarpOp op) { return op >= LDMATRIX_X1_TRANS; }

static void arrive(WarpOp op, const void* in, void* out) {
    state.current->in = in;
    state.current->out = out;
    warp_op(op, ~0u, 0, 0, warpSize);
}

void mma_sync(WarpOp op, float* d, const unsigned* a, const unsigned* b) {
    MmaOperands operands;
    std::memcpy(operands.a, a, sizeof operands.a);
    std::memcpy(operands.b, b, sizeof operands.b);
    std::memcpy(operands.c, d, sizeof operands.c);
    arrive(op, &operands, d);
}

void ldmatrix(WarpOp op, unsigned* r, const void* row, const void* pc) {
    LdmatrixRow loaded{};
    int lane = self_index() % warpSize;
    if (lane < 8 * ldmatrix_count(op)) {  // lanes 8i..8i+7 address the rows of matrix i
        if (uintptr_t(row) % 16 != 0 || !in_shared_memory(row, 16)) {
            report("%s: %s row address %p is not 16-byte aligned shared memory",
                   describe_thread(self_index()).c_str(), tensor_core_op_name(op), row);
            abort_thread();
        }
        check_access(row, 16, false, pc);
        std::memcpy(loaded.bytes, row, 16);
    } else if (counting) {
        count_idle_lane(pc, Space::Shared, false, 16);
    }
    arrive(op, &loaded, r);
}

static float tf32_value(unsigned bits) { return emu_bit_cast<float>(bits & ~0x1fffu); }
static float bf16_value(unsigned half) { return emu_bit_cast<float>((half & 0xffffu) << 16); }

// Kernel code is compiled with -ftrivial-auto-var-init=pattern (build.py): a local declared
// without an initializer starts as 0xFE bytes, so a fragment register still holding them was
// never written. A written one cannot hold them by accident where it matters: cvt.rna.tf32
// clears the low 13 bits, and as BF16 or FP32 the pattern is -1.69e38.
constexpr unsigned UNWRITTEN = 0xfefefefeu;

// Reports the first fragment register (A, B or the accumulator C) some lane never wrote.
static bool fragments_written(const Thread* lanes, WarpOp op) {
    auto unwritten = [&](int lane, int reg) {  // reg: a0..a3, b0..b1, c0..c3 as 0..9
        const MmaOperands& in = *static_cast<const MmaOperands*>(lanes[lane].in);
        const unsigned bits = reg < 4 ? in.a[reg] : reg < 6 ? in.b[reg - 4] : emu_bit_cast<unsigned>(in.c[reg - 6]);
        return bits == UNWRITTEN;
    };
    for (int reg = 0; reg < 10; ++reg) {
        int first = -1, count = 0;
        for (int l = 0; l < warpSize; ++l)
            if (unwritten(l, reg)) count += 1, first = first < 0 ? l : first;
        if (count == 0) continue;
        const char fragment = "aaaabbcccc"[reg];
        const int index = reg < 4 ? reg : reg < 6 ? reg - 4 : reg - 6;
        report("%s: %s reads fragment register %c%d of lane %d, which no instruction wrote "
               "(uninitialized; %d of 32 lanes)", describe_thread(int(lanes - state.threads.data()) + first).c_str(),
               tensor_core_op_name(op), fragment, index, first, count);
        return false;
    }
    return true;
}

// D = A B + C for one warp. Lane l holds, with g = l / 4 and t = l % 4, the fragments drawn
// in warp_mma.cuh, written below as index formulas.
static void complete_mma(Thread* lanes, bool bf16) {
    const int K = bf16 ? 16 : 8;
    double a[16][16] = {}, b[16][8] = {}, c[16][8] = {};
    for (int l = 0; l < warpSize; ++l) {
        const MmaOperands& in = *static_cast<const MmaOperands*>(lanes[l].in);
        const int g = l / 4, t = l % 4;
        for (int r = 0; r < 4; ++r) {
            const int row = g + 8 * (r % 2);
            if (bf16) {  // register r: elements (row, 2t + 8 (r / 2)) and the next column
                a[row][2 * t + 8 * (r / 2)] = bf16_value(in.a[r]);
                a[row][2 * t + 8 * (r / 2) + 1] = bf16_value(in.a[r] >> 16);
            } else {     // register r: element (row, t + 4 (r / 2))
                a[row][t + 4 * (r / 2)] = tf32_value(in.a[r]);
            }
            c[g + 8 * (r / 2)][2 * t + r % 2] = in.c[r];
        }
        for (int r = 0; r < 2; ++r) {
            if (bf16) {  // register r: rows 2t + 8r and 2t + 8r + 1 of column g
                b[2 * t + 8 * r][g] = bf16_value(in.b[r]);
                b[2 * t + 8 * r + 1][g] = bf16_value(in.b[r] >> 16);
            } else {
                b[t + 4 * r][g] = tf32_value(in.b[r]);
            }
        }
    }
    for (int l = 0; l < warpSize; ++l) {
        float* d = static_cast<float*>(lanes[l].out);
        const int g = l / 4, t = l % 4;
        for (int r = 0; r < 4; ++r) {
            const int row = g + 8 * (r / 2), col = 2 * t + r % 2;
            double sum = c[row][col];
            for (int k = 0; k < K; ++k) sum += a[row][k] * b[k][col];
            d[r] = float(sum);
        }
    }
}

// Lane l receives, from matrix i, elements (l / 4, 2 (l % 4)) and (l / 4, 2 (l % 4) + 1)
// (low half first), or with .trans elements (2 (l % 4), l / 4) and (2 (l % 4) + 1, l / 4).
static void complete_ldmatrix(Thread* lanes, int count, bool trans) {
    auto element = [&](int matrix, int row, int col) {
        unsigned short half;
        std::memcpy(&half, static_cast<const LdmatrixRow*>(lanes[8 * matrix + row].in)->bytes + 2 * col, 2);
        return unsigned(half);
    };
    for (int l = 0; l < warpSize; ++l) {
        unsigned* r = static_cast<unsigned*>(lanes[l].out);
        const int row = l / 4, col = 2 * (l % 4);
        for (int i = 0; i < count; ++i)
            r[i] = trans ? element(i, col, row) | element(i, col + 1, row) << 16
                         : element(i, row, col) | element(i, row, col + 1) << 16;
    }
}

void complete_tensor_core_op(int first_thread) {
    Thread* lanes = &state.threads[first_thread];
    const WarpOp op = lanes[0].op;
    if (op == MMA_TF32 || op == MMA_BF16) {
        if (fragments_written(lanes, op)) complete_mma(lanes, op == MMA_BF16);
        else state.aborted = true;
    }
    else complete_ldmatrix(lanes, ldmatrix_count(op), ldmatrix_trans(op));
}

// ---- cp.async ----

struct AsyncCopy {
    void* destination;
    unsigned char data[16];  // read from global memory when issued
    int bytes;
    int group;  // 0 until cp.async.commit_group gives it one
    const void* pc;  // the kernel's cp.async: the counters charge the read and the landing to it
};

static std::vector<std::vector<AsyncCopy>> pending;  // per thread of the block
static std::vector<int> committed_groups;

void reset_async_copies(int threads) {
    pending.assign(threads, {});
    committed_groups.assign(threads, 0);
}

void cp_async(void* shared, const void* global, int bytes, int source_bytes, const void* pc) {
    const int self = self_index();
    const bool aligned = uintptr_t(shared) % bytes == 0 && uintptr_t(global) % bytes == 0;
    if ((bytes != 4 && bytes != 8 && bytes != 16) || source_bytes < 0 || source_bytes > bytes || !aligned ||
        !in_shared_memory(shared, bytes)) {
        report("%s: cp.async of %d bytes (%d read) from %p to %p: the size must be 4, 8 or 16, both "
               "addresses aligned to it, and the destination in shared memory",
               describe_thread(self).c_str(), bytes, source_bytes, global, shared);
        abort_thread();
    }
    AsyncCopy copy{shared, {}, bytes, 0, pc};
    if (source_bytes) {
        check_access(global, size_t(source_bytes), false, pc);
        std::memcpy(copy.data, global, size_t(source_bytes));
    } else if (counting) {  // zero-fill: this lane reads nothing but is part of the warp's instruction
        count_idle_lane(pc, Space::Global, false, size_t(bytes));
    }
    mark_async_copy(shared, size_t(bytes), self);
    pending[self].push_back(copy);
}

void cp_async_commit() {
    const int self = self_index();
    ++committed_groups[self];
    for (AsyncCopy& copy : pending[self])
        if (copy.group == 0) copy.group = committed_groups[self];
}

void cp_async_wait(int pending_groups) {
    const int self = self_index();
    std::vector<AsyncCopy> still_pending;
    for (const AsyncCopy& copy : pending[self]) {
        if (copy.group == 0 || copy.group > committed_groups[self] - pending_groups) {
            still_pending.push_back(copy);
            continue;
        }
        mark_async_copy(copy.destination, size_t(copy.bytes), -1);
        check_access(copy.destination, size_t(copy.bytes), true, copy.pc);  // lands now, written by this thread
        std::memcpy(copy.destination, copy.data, size_t(copy.bytes));
    }
    pending[self].swap(still_pending);
}

void finish_async_copies() {
    const int self = self_index();
    if (pending[self].empty()) return;
    report("%s exits with %zu cp.async copies it never waited for (missing cp.async.wait_group)",
           describe_thread(self).c_str(), pending[self].size());
    for (const AsyncCopy& copy : pending[self]) mark_async_copy(copy.destination, size_t(copy.bytes), -1);
    pending[self].clear();
}

}  // namespace emu
