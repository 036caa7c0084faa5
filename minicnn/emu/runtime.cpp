// runtime.cpp - runs a grid of emulated CUDA threads: fibers, barriers, warp rendezvous.
//
// Blocks run one after another (a cooperative launch: see run_cooperative_grid). Inside a block
// every CUDA thread is a fiber (ucontext) with its own small stack. The scheduler resumes each runnable thread in turn; a thread runs until
// it finishes, reaches __syncthreads() or calls a warp intrinsic, then switches back. Once no
// thread can run, the scheduler releases whatever is complete: a warp whose lanes all arrived
// at the same intrinsic, or the whole block at a barrier. Anything else is a divergence error.
//
// Memory checks live in checks.cpp; this file is compiled without instrumentation.
#include "counters.h"
#include "emu_state.h"

#include <sys/mman.h>

#include <cstdarg>
#include <cstdio>
#include <string>

namespace emu {

State state;
static std::string last_error;  // read by Python through minicnn_emu_error()
static constexpr size_t STACK_BYTES = 64 * 1024;
static constexpr size_t MAX_DYNAMIC_SHARED = 48 * 1024;
alignas(16) static unsigned char dynamic_storage[MAX_DYNAMIC_SHARED];

// ---- Errors ----

std::string describe_thread(int linear) {
    const dim3& d = state.block_dim;
    char text[96];
    std::snprintf(text, sizeof text, "thread (%d,%d,%d)", int(linear % d.x), int(linear / d.x % d.y),
                  int(linear / (d.x * d.y)));
    return text;
}

void report(const char* format, ...) {
    char text[512];
    va_list arguments;
    va_start(arguments, format);
    std::vsnprintf(text, sizeof text, format, arguments);
    va_end(arguments);
    char where[64];
    std::snprintf(where, sizeof where, "block (%u,%u,%u): ", state.block_idx.x, state.block_idx.y,
                  state.block_idx.z);
    state.errors.push_back(where + std::string(text));
    if (state.errors.size() >= MAX_ERRORS) state.aborted = true;
}

void abort_thread() {
    state.aborted = true;
    Thread* self = state.current;
    swapcontext(&self->context, &state.scheduler);  // never resumed
}

bool launch_error(const Launch* launch, const char* format, ...) {
    char text[512];
    va_list arguments;
    va_start(arguments, format);
    std::vsnprintf(text, sizeof text, format, arguments);
    va_end(arguments);
    last_error = std::string("kernel ") + launch->kernel_name + ": " + text;
    return false;
}

const char* dtype_name(const char* type_code) {
    static const char* const names[][2] = {
        {"f4", "float32"}, {"f8", "float64"}, {"i1", "int8"},  {"i2", "int16"},  {"i4", "int32"},
        {"i8", "int64"},   {"u1", "uint8"},   {"u2", "uint16"}, {"u4", "uint32"}, {"u8", "uint64"},
        {"b1", "bool"}};
    if (!type_code) return "a non-NumPy type";
    for (const auto& name : names)
        if (std::strcmp(name[0], type_code) == 0) return name[1];
    return type_code;
}

// ---- Built-in variables, as seen by the running thread ----

uint3 thread_idx() { return state.current->idx; }
uint3 block_idx() { return state.block_idx; }
dim3 block_dim() { return state.block_dim; }
dim3 grid_dim() { return state.grid_dim; }
void* dynamic_shared() { return dynamic_storage; }

// ---- Fibers ----

static void yield(ThreadState waiting) {
    Thread* self = state.current;
    self->state = waiting;
    swapcontext(&self->context, &state.scheduler);
}

static void thread_main() {
    state.run(state.closure);
    finish_async_copies();
    yield(ThreadState::Done);
}

static void resume(Thread& thread) {
    state.current = &thread;
    swapcontext(&state.scheduler, &thread.context);
    state.current = nullptr;
}

static size_t stack_slots = 0;  // how many thread stacks state.stacks holds

static void allocate_stacks(size_t count) {
    if (count <= stack_slots) return;
    if (state.stacks) munmap(state.stacks, stack_slots * STACK_BYTES);
    size_t bytes = count * STACK_BYTES;
    void* stacks = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (stacks == MAP_FAILED) throw std::bad_alloc();
    state.stacks = static_cast<char*>(stacks);
    for (size_t i = 0; i < count; ++i)  // a guard page under each stack: overflow faults, not corrupts
        mprotect(state.stacks + i * STACK_BYTES, 4096, PROT_NONE);
    stack_slots = count;
}

// ---- Barriers and warps ----

void sync_threads() { yield(ThreadState::AtBarrier); }

void grid_sync() {
    if (!state.launch->cooperative) {
        report("%s calls grid.sync() in a launch that is not cooperative: on a GPU that is "
               "undefined behaviour (launch it from a cooperative module)",
               describe_thread(int(state.current - state.threads.data())).c_str());
        abort_thread();
    }
    yield(ThreadState::AtGridBarrier);
}

static const char* op_name(WarpOp op) {
    if (is_tensor_core_op(op)) return tensor_core_op_name(op);
    static const char* const names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                        "__shfl_xor_sync", "__ballot_sync", "__any_sync", "__all_sync"};
    return names[op];
}

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int lane_arg, int width) {
    Thread* self = state.current;
    if (width < 1 || width > 32 || (width & (width - 1))) {
        report("%s: %s width %d is not a power of two in [1, 32]", describe_thread(int(self - state.threads.data())).c_str(),
               op_name(op), width);
        abort_thread();
    }
    self->op = op;
    self->mask = mask;
    self->value = value;
    self->lane_arg = lane_arg;
    self->width = width;
    yield(ThreadState::AtWarpOp);
    return self->result;
}


// The lane whose value a shuffle returns to `lane` (its own lane when the source falls
// outside its group of `width` lanes, as CUDA specifies).
static int source_lane(const Thread& t, int lane) {
    int group = lane / t.width * t.width;
    switch (t.op) {
        case SHFL_IDX: return group + ((t.lane_arg % t.width) + t.width) % t.width;
        case SHFL_UP: return lane - group >= t.lane_arg ? lane - t.lane_arg : lane;
        case SHFL_DOWN: return lane - group + t.lane_arg < t.width ? lane + t.lane_arg : lane;
        case SHFL_XOR: return (lane ^ t.lane_arg) < group + t.width ? lane ^ t.lane_arg : lane;
        default: return lane;
    }
}

static const char* state_name(const Thread& t, const Thread& waiter) {
    switch (t.state) {
        case ThreadState::Done: return "has exited";
        case ThreadState::AtBarrier: return "waits at __syncthreads()";
        case ThreadState::AtGridBarrier: return "waits at grid.sync()";
        case ThreadState::AtWarpOp: return t.op != waiter.op ? "waits in a different warp intrinsic"
                                                             : "waits with a different mask";
        default: return "is still running";
    }
}

// Completes the warp intrinsic that lanes of warp `first / 32` wait in, if all lanes of the
// mask have arrived. Returns true when it released lanes; otherwise fills `stuck`.
static bool release_warp(int first, int count, std::string& stuck) {
    for (int lane = 0; lane < count; ++lane) {
        Thread& waiter = state.threads[first + lane];
        if (waiter.state != ThreadState::AtWarpOp) continue;
        unsigned present = waiter.mask & (count == 32 ? ~0u : (1u << count) - 1);
        bool ready = (present >> lane) & 1;
        for (int other = 0; ready && other < count; ++other) {
            const Thread& t = state.threads[first + other];
            if (!((present >> other) & 1)) continue;
            if (t.state != ThreadState::AtWarpOp || t.op != waiter.op || t.mask != waiter.mask) {
                ready = false;
                if (stuck.empty())
                    stuck = describe_thread(first + lane) + " waits in " + op_name(waiter.op) +
                            " for lane " + std::to_string(other) + " (" + describe_thread(first + other) +
                            "), which " + state_name(t, waiter);
            }
        }
        if (!((present >> lane) & 1) && stuck.empty())
            stuck = describe_thread(first + lane) + " calls " + op_name(waiter.op) +
                    " with a mask that leaves out its own lane";
        if (!ready) continue;
        if (is_tensor_core_op(waiter.op)) {  // mma.sync / ldmatrix: .aligned, the whole warp
            if (count < 32) {
                report("%s: %s needs a full warp of 32 threads, but this warp has %d",
                       describe_thread(first).c_str(), op_name(waiter.op), count);
                state.aborted = true;
                return false;
            }
            complete_tensor_core_op(first);
            for (int other = 0; other < count; ++other) state.threads[first + other].state = ThreadState::Runnable;
            return true;
        }
        unsigned votes = 0;
        for (int other = 0; other < count; ++other)
            if (((present >> other) & 1) && state.threads[first + other].value) votes |= 1u << other;
        for (int other = 0; other < count; ++other) {
            if (!((present >> other) & 1)) continue;
            Thread& t = state.threads[first + other];
            int source = source_lane(t, other);
            if (!((present >> source) & 1) || source >= count) {
                report("%s: %s reads lane %d, which is not in the mask or does not exist; "
                       "on a GPU the value is undefined", describe_thread(first + other).c_str(),
                       op_name(t.op), source);
                state.aborted = true;
                return false;
            }
            t.result = waiter.op == BALLOT ? votes
                     : waiter.op == ANY    ? votes != 0
                     : waiter.op == ALL    ? votes == present
                                           : state.threads[first + source].value;
            t.state = ThreadState::Runnable;
        }
        count_warp_op();
        return true;
    }
    return false;
}

// Called when no thread can run: releases warps, else the barrier, else reports why stuck.
static bool advance(int count) {
    std::string stuck;
    bool released = false;
    for (int first = 0; first < count && !state.aborted; first += 32)
        released |= release_warp(first, std::min(32, count - first), stuck);
    if (released || state.aborted) return released;
    int at_barrier = 0, blocker = -1;
    for (int i = 0; i < count; ++i) {
        if (state.threads[i].state == ThreadState::AtBarrier) ++at_barrier;
        else if (blocker < 0) blocker = i;
    }
    if (at_barrier == count) {
        ++state.epoch;  // a new barrier interval: accesses before and after no longer race
        count_barrier();
        for (int i = 0; i < count; ++i) state.threads[i].state = ThreadState::Runnable;
        return true;
    }
    if (!stuck.empty()) report("warp divergence: %s", stuck.c_str());
    else report("barrier divergence: %d threads wait at __syncthreads() but %s %s", at_barrier,
                describe_thread(blocker).c_str(), state_name(state.threads[blocker], state.threads[blocker]));
    state.aborted = true;
    return false;
}

// Sets up the current block's `count` fibers, on the stacks from slot first_stack on.
static void start_block(int count, size_t first_stack) {
    state.block_first_epoch = ++state.epoch;
    poison_shared_memory();
    reset_async_copies(count);
    // static: a fiber's first resume restores the floating-point state this context points to,
    // which must outlive a cooperative block's return to run_cooperative_grid
    static ucontext_t blank;
    getcontext(&blank);
    for (int i = 0; i < count; ++i) {
        Thread& t = state.threads[i];
        t.idx = {unsigned(i % state.block_dim.x), unsigned(i / state.block_dim.x % state.block_dim.y),
                 unsigned(i / (state.block_dim.x * state.block_dim.y))};
        t.state = ThreadState::Runnable;
        t.context = blank;
        t.context.uc_stack.ss_sp = state.stacks + (first_stack + i) * STACK_BYTES + 4096;
        t.context.uc_stack.ss_size = STACK_BYTES - 4096;
        t.context.uc_link = nullptr;
        makecontext(&t.context, thread_main, 0);
    }
}

// Runs the current block's threads until each has exited or waits at grid.sync() (or the
// launch is aborted).
static void schedule_block(int count) {
    bool reverse = state.launch->schedule == 1;
    while (!state.aborted) {
        bool paused = true;
        for (int k = 0; k < count && !state.aborted; ++k) {
            Thread& t = state.threads[reverse ? count - 1 - k : k];
            if (t.state == ThreadState::Runnable) resume(t);
            paused &= t.state == ThreadState::Done || t.state == ThreadState::AtGridBarrier;
        }
        if (paused || state.aborted || !advance(count)) return;
    }
}

static void run_block(int count) {
    start_block(count, 0);
    schedule_block(count);
}

// ---- Cooperative launches: grid.sync() ----
//
// On a GPU every block of a cooperative grid is resident at once, so a grid-wide barrier can
// wait for all of them. Here blocks still take turns, but a turn ends where the GPU's block
// would wait: when every thread of the block has exited or waits at grid.sync(). The block's
// fibers (each with its own stack) and its shared memory are then parked, and the next block
// runs. Once every block waits, the barrier opens and each resumes in turn, in a new barrier
// interval. A block that exits while others wait, or that reaches grid.sync() with some of its
// threads gone, would hang a GPU: both are reported (deadlock), as is grid.sync() in a launch
// that is not cooperative. (Python checks the grid against the co-resident limit.)
struct ParkedBlock {
    uint3 idx;
    std::vector<Thread> threads;        // swapped with state.threads while the block runs
    std::vector<unsigned char> shared;  // its shared memory and shadow (checks.cpp)
    int first_epoch = 0;
    bool waiting = false;               // at grid.sync(); else exited
};

// One turn of block k: until its threads exit or wait. Returns whether they all wait.
static bool run_turn(ParkedBlock& block, size_t k, int count, bool first_turn) {
    state.block_idx = block.idx;
    std::swap(state.threads, block.threads);
    if (first_turn) {
        start_block(count, k * count);
    } else {
        restore_shared(block.shared);
        state.block_first_epoch = block.first_epoch;
        ++state.epoch;  // after the barrier: accesses before it no longer race with these
        for (Thread& t : state.threads) t.state = ThreadState::Runnable;
    }
    schedule_block(count);
    int waiting = 0, exited = -1;
    for (int i = 0; i < count; ++i) {
        if (state.threads[i].state == ThreadState::AtGridBarrier) ++waiting;
        else if (exited < 0) exited = i;
    }
    if (!state.aborted && waiting && waiting < count) {
        report("%d threads wait at grid.sync() but %s has exited: on a GPU the grid never gets "
               "past the barrier (deadlock)", waiting, describe_thread(exited).c_str());
        state.aborted = true;
    }
    block.waiting = waiting == count;
    if (block.waiting) {
        count_barrier();
        block.shared = save_shared();
        block.first_epoch = state.block_first_epoch;
    } else {
        count_block_done();
    }
    std::swap(state.threads, block.threads);
    return block.waiting;
}

static void run_cooperative_grid(int count) {
    std::vector<ParkedBlock> blocks;
    for (unsigned z = 0; z < state.grid_dim.z; ++z)
        for (unsigned y = 0; y < state.grid_dim.y; ++y)
            for (unsigned x = 0; x < state.grid_dim.x; ++x) blocks.push_back({{x, y, z}, std::vector<Thread>(count)});
    allocate_stacks(blocks.size() * count);
    for (bool first_turn = true; !state.aborted; first_turn = false) {
        int waiting = 0;
        const ParkedBlock* exited = nullptr;
        for (size_t k = 0; k < blocks.size() && !state.aborted; ++k) {
            if (!first_turn && !blocks[k].waiting) continue;  // exited before this barrier
            if (run_turn(blocks[k], k, count, first_turn)) ++waiting;
            else if (!exited) exited = &blocks[k];
        }
        if (state.aborted || waiting == 0) return;
        if (exited) {
            state.block_idx = exited->idx;
            report("exited without reaching grid.sync(), where %d blocks wait: on a GPU they "
                   "would wait forever (deadlock)", waiting);
            return;
        }
    }
}

int run_grid(const Launch* launch, const Arg* args, int nargs, void (*run)(const void*),
             const void* closure, size_t closure_size) {
    if (launch->shared_mem > MAX_DYNAMIC_SHARED)
        return launch_error(launch, "shared_mem=%llu is over %zu bytes", (unsigned long long)launch->shared_mem,
                            MAX_DYNAMIC_SHARED), 1;
    state.launch = launch;
    state.run = run;
    state.closure = closure;
    state.grid_dim = dim3(launch->grid[0], launch->grid[1], launch->grid[2]);
    state.block_dim = dim3(launch->block[0], launch->block[1], launch->block[2]);
    state.errors.clear();
    state.aborted = false;
    state.epoch = 0;
    int count = int(state.block_dim.x * state.block_dim.y * state.block_dim.z);
    if (launch->cooperative) {  // the stacks of every block of the grid
        allocate_stacks(size_t(count) * state.grid_dim.x * state.grid_dim.y * state.grid_dim.z);
    } else {
        allocate_stacks(count);
        state.threads.resize(count);
    }
    prepare_checks(args, nargs, closure, closure_size, dynamic_storage, launch->shared_mem,
                   state.stacks, stack_slots * STACK_BYTES);
    if (launch->cooperative) {
        run_cooperative_grid(count);  // every block: a sampled subset would never pass grid.sync()
    } else {
        for (unsigned z = 0; z < state.grid_dim.z && !state.aborted; ++z)
            for (unsigned y = 0; y < state.grid_dim.y && !state.aborted; ++y)
                for (unsigned x = 0; x < state.grid_dim.x && !state.aborted; ++x) {
                    state.block_idx = {x, y, z};
                    if (!block_selected(x + uint64_t(state.grid_dim.x) * (y + uint64_t(state.grid_dim.y) * z))) continue;
                    run_block(count);
                    count_block_done();
                }
    }
    if (state.errors.empty()) return 0;
    last_error = std::string("kernel ") + launch->kernel_name + ":";
    for (const std::string& error : state.errors) last_error += "\n  " + error;
    if (state.errors.size() >= MAX_ERRORS) last_error += "\n  (stopped after " + std::to_string(MAX_ERRORS) + " errors)";
    return 1;
}

}  // namespace emu

extern "C" const char* minicnn_emu_error() { return emu::last_error.c_str(); }
