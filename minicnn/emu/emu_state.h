// emu_state.h - the emulator's internal state, shared by runtime.cpp and checks.cpp.
// (Kernels never see this; they see cuda_emu.h.)
#pragma once

#include <ucontext.h>

#include <string>
#include <vector>

#include "cuda_emu.h"

namespace emu {

enum class ThreadState { Runnable, AtBarrier, AtGridBarrier, AtWarpOp, Done };

struct Thread {
    ucontext_t context;
    uint3 idx;
    ThreadState state;
    // The warp intrinsic it waits in, and its answer.
    WarpOp op;
    unsigned mask;
    uint64_t value;
    int lane_arg, width;
    uint64_t result;
    const void* in;  // a tensor-core collective's operands (tensor_core.cpp), and its results
    void* out;
};

constexpr size_t MAX_ERRORS = 3;

struct State {
    const Launch* launch = nullptr;
    void (*run)(const void*) = nullptr;
    const void* closure = nullptr;
    dim3 grid_dim, block_dim;
    uint3 block_idx;
    std::vector<Thread> threads;
    char* stacks = nullptr;
    ucontext_t scheduler;
    Thread* current = nullptr;  // set while kernel code runs; the memory checks act only then
    // Barrier intervals, numbered across the launch: two shared-memory accesses race when they
    // come from different threads in the same interval.
    int epoch = 0, block_first_epoch = 0;
    std::vector<std::string> errors;
    bool aborted = false;
};
extern State state;

// runtime.cpp
void report(const char* format, ...);  // records an error of the current block
void abort_thread();                    // stops the launch from inside the running thread
std::string describe_thread(int linear);

// checks.cpp
void prepare_checks(const Arg* args, int nargs, const void* closure, size_t closure_size,
                    unsigned char* dynamic_shared, size_t dynamic_bytes, const char* stacks,
                    size_t stack_bytes);
void poison_shared_memory();
// Checks an access by the current thread as if kernel code made it (runtime code is not
// instrumented), counted at pc: the kernel's call site of the instruction (warp_mma.cuh's
// wrapper passes its return address to the twin); marks shared bytes a cp.async of `thread`
// still copies into (-1: landed).
void check_access(const void* pointer, size_t size, bool write, const void* pc);
void mark_async_copy(const void* pointer, size_t size, int thread);
bool in_shared_memory(const void* pointer, size_t size);
// A cooperative block's shared memory (bytes and shadow) while other blocks run.
std::vector<unsigned char> save_shared();
void restore_shared(const std::vector<unsigned char>& image);

// tensor_core.cpp
bool is_tensor_core_op(WarpOp op);
const char* tensor_core_op_name(WarpOp op);
void complete_tensor_core_op(int first_thread);  // all 32 lanes have arrived
void reset_async_copies(int threads);           // before each block
void finish_async_copies();                      // the current thread exits

}  // namespace emu
