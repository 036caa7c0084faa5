// cuda_emu.h - CUDA's device-side vocabulary for g++, so kernels/*.cu run unchanged on the CPU.
//
// build.py force-includes this header (g++ -include) before each kernel source. Every CUDA
// thread becomes a fiber run by runtime.cpp: threadIdx asks the runtime which fiber is running,
// __syncthreads() switches back to the scheduler until the whole block has arrived, and warp
// intrinsics are a rendezvous of the warp's lanes. Blocks run one after another, so a
// function-local `static` is exactly one block's shared memory.
#pragma once

#include <math.h>  // C++'s <math.h>: float overloads (exp(float), ...) in the global namespace, as in CUDA
#include <cstdint>
#include <cstdio>  // printf works in kernels, as in CUDA
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- Qualifiers: all code is ordinary host code. ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// A function-local static is one block's shared memory (blocks run one at a time). build.py
// compiles with -fdata-sections and links with SHARED_MEMORY_SCRIPT, which gathers every such
// static of the kernel code between __start_emu_shared and __stop_emu_shared; the runtime
// poisons that range before each block and checks every access to it.
#define __shared__ static
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::emu::dynamic_shared())

struct uint3 {
    unsigned x, y, z;
};
// CUDA's vector types, aligned as on the GPU (vector loads need that alignment).
struct __attribute__((aligned(8))) float2 {
    float x, y;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// ---- The runtime's side (runtime.cpp, compiled without instrumentation). ----
namespace emu {

struct Launch {  // mirrored by _Launch in runtime.py
    uint32_t grid[3];
    uint32_t block[3];
    uint64_t shared_mem;
    int32_t schedule;  // 0: threads run in order between barriers, 1: in reverse order
    int32_t cooperative;  // a cooperative launch: grid.sync() allowed (runtime.cpp)
    const char* kernel_name;
};

struct Arg {  // mirrored by _Arg in runtime.py
    const void* value;   // the scalar, or the array's address
    uint64_t size;       // bytes at value
    int32_t is_pointer;  // an array, passed as a pointer
    char type_code[8];   // NumPy kind + item size: "f4", "i8", "u4", ...
    uint64_t buffer_bytes;
};

// Runs run(closure) as every thread of the grid; closure holds the kernel's arguments.
int run_grid(const Launch* launch, const Arg* args, int nargs, void (*run)(const void*),
             const void* closure, size_t closure_size);
// Records a launch error (printf-style); returns false.
bool launch_error(const Launch* launch, const char* format, ...);
// "float32" for the type code "f4".
const char* dtype_name(const char* type_code);

uint3 thread_idx();
uint3 block_idx();
dim3 block_dim();
dim3 grid_dim();
void* dynamic_shared();
void sync_threads();
void grid_sync();  // cooperative_groups' grid.sync(), below

enum WarpOp { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_XOR, BALLOT, ANY, ALL,
              // tensor-core collectives (tensor_core.h): all 32 lanes, payload in Thread::in/out
              MMA_TF32, MMA_BF16, LDMATRIX_X1, LDMATRIX_X2, LDMATRIX_X4, LDMATRIX_X1_TRANS,
              LDMATRIX_X2_TRANS, LDMATRIX_X4_TRANS };
// Waits for the lanes in mask to call the same op, then returns this lane's result.
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int lane_arg, int width);

template <typename T>
T shuffle(WarpOp op, unsigned mask, T var, int lane_arg, int width) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a 1-8 byte value");
    uint64_t bits = 0;
    std::memcpy(&bits, &var, sizeof(T));
    bits = warp_op(op, mask, bits, lane_arg, width);
    std::memcpy(&var, &bits, sizeof(T));
    return var;
}

// ---- Argument checking: what would be silent garbage on a GPU is an error here. ----

// NumPy's name for a C++ scalar type ("f4" for float), or nullptr for other types.
template <typename T>
constexpr const char* type_code() {
    constexpr const char* signed_codes[] = {nullptr, "i1", "i2", nullptr, "i4", nullptr, nullptr, nullptr, "i8"};
    constexpr const char* unsigned_codes[] = {nullptr, "u1", "u2", nullptr, "u4", nullptr, nullptr, nullptr, "u8"};
    if constexpr (std::is_same_v<T, bool>) return "b1";
    else if constexpr (std::is_same_v<T, float>) return "f4";
    else if constexpr (std::is_same_v<T, double>) return "f8";
    else if constexpr (std::is_integral_v<T> && sizeof(T) <= 8)
        return std::is_signed_v<T> ? signed_codes[sizeof(T)] : unsigned_codes[sizeof(T)];
    else return nullptr;
}

template <typename P>
bool unpack_argument(P& value, const Launch* launch, int index, const Arg& arg) {
    if constexpr (std::is_pointer_v<P>) {
        const char* want = type_code<std::remove_cv_t<std::remove_pointer_t<P>>>();
        if (!arg.is_pointer)
            return launch_error(launch, "argument %d: the kernel's parameter is a pointer but a %s scalar was passed",
                                index, dtype_name(arg.type_code));
        if (want && std::strcmp(want, arg.type_code) != 0)
            return launch_error(launch, "argument %d: the kernel's parameter points to %s but a %s array was passed",
                                index, dtype_name(want), dtype_name(arg.type_code));
    } else {
        const char* want = type_code<P>();
        if (arg.is_pointer)
            return launch_error(launch, "argument %d: the kernel's parameter is %s (%zu bytes) but an array was passed",
                                index, dtype_name(want), sizeof(P));
        if (arg.size != sizeof(P) || (want && std::strcmp(want, arg.type_code) != 0))
            return launch_error(launch, "argument %d: the kernel's parameter is %s (%zu bytes) but %s (%d bytes) was passed",
                                index, dtype_name(want), sizeof(P), dtype_name(arg.type_code), int(arg.size));
    }
    std::memcpy(&value, arg.value, sizeof(P));
    return true;
}

// The kernel and its arguments; run() is what each emulated thread executes.
template <typename... Params>
struct Closure {
    void (*kernel)(Params...);
    std::tuple<std::decay_t<Params>...> values;
    static void run(const void* self) {
        const Closure& closure = *static_cast<const Closure*>(self);
        std::apply(closure.kernel, closure.values);
    }
};

template <typename... Params, size_t... I>
bool unpack_arguments(Closure<Params...>& closure, const Launch* launch, const Arg* args,
                      std::index_sequence<I...>) {
    return (unpack_argument(std::get<I>(closure.values), launch, int(I), args[I]) && ...);
}

// One generated entry per name expression calls this: checks and unpacks the arguments by
// the kernel's parameter types, then runs the grid. Returns 0 or 1 (see minicnn_emu_error).
template <typename... Params>
int launch(void (*kernel)(Params...), const Launch* config, const Arg* args, int nargs) {
    if (nargs != int(sizeof...(Params))) {
        launch_error(config, "the kernel takes %d arguments but %d were passed", int(sizeof...(Params)), nargs);
        return 1;
    }
    Closure<Params...> closure{kernel, {}};
    if (!unpack_arguments(closure, config, args, std::index_sequence_for<Params...>{})) return 1;
    return run_grid(config, args, nargs, &Closure<Params...>::run, &closure, sizeof closure);
}

}  // namespace emu

// ---- Built-in variables and functions. ----
#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx())
#define blockDim (::emu::block_dim())
#define gridDim (::emu::grid_dim())
constexpr int warpSize = 32;

inline void __syncthreads() { emu::sync_threads(); }

// The part of <cooperative_groups.h> that kernels/grid_sync.cuh uses: a grid-wide barrier.
namespace cooperative_groups {
struct grid_group {
    void sync() const { emu::grid_sync(); }
};
inline grid_group this_grid() { return {}; }
}  // namespace cooperative_groups
inline void __threadfence() {}  // one CPU thread runs everything: memory is always coherent
inline void __threadfence_block() {}

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
    return emu::shuffle(emu::SHFL_IDX, mask, var, src_lane, width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    return emu::shuffle(emu::SHFL_UP, mask, var, int(delta), width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    return emu::shuffle(emu::SHFL_DOWN, mask, var, int(delta), width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
    return emu::shuffle(emu::SHFL_XOR, mask, var, lane_mask, width);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
    return unsigned(emu::warp_op(emu::BALLOT, mask, predicate != 0, 0, warpSize));
}
inline int __any_sync(unsigned mask, int predicate) {
    return int(emu::warp_op(emu::ANY, mask, predicate != 0, 0, warpSize));
}
inline int __all_sync(unsigned mask, int predicate) {
    return int(emu::warp_op(emu::ALL, mask, predicate != 0, 0, warpSize));
}

// Atomics (runtime.cpp): a thread only yields at barriers, so read-modify-write is atomic.
float atomicAdd(float* address, float value);
double atomicAdd(double* address, double value);
int atomicAdd(int* address, int value);
unsigned atomicAdd(unsigned* address, unsigned value);
unsigned long long atomicAdd(unsigned long long* address, unsigned long long value);
int atomicSub(int* address, int value);
unsigned atomicSub(unsigned* address, unsigned value);
int atomicMax(int* address, int value);
unsigned atomicMax(unsigned* address, unsigned value);
int atomicMin(int* address, int value);
unsigned atomicMin(unsigned* address, unsigned value);
int atomicExch(int* address, int value);
unsigned atomicExch(unsigned* address, unsigned value);
float atomicExch(float* address, float value);
int atomicCAS(int* address, int compare, int value);
unsigned atomicCAS(unsigned* address, unsigned compare, unsigned value);
unsigned long long atomicCAS(unsigned long long* address, unsigned long long compare,
                             unsigned long long value);

// Math that CUDA has and C++ lacks.
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return fminf(fmaxf(x, 0.0f), 1.0f); }

// CUDA's min/max overloads (std::min would not accept mixed int/unsigned, as CUDA does).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned min(int a, unsigned b) { return min(unsigned(a), b); }
inline unsigned max(int a, unsigned b) { return max(unsigned(a), b); }
inline unsigned min(unsigned a, int b) { return min(a, unsigned(b)); }
inline unsigned max(unsigned a, int b) { return max(a, unsigned(b)); }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// Bit-level helpers.
template <typename To, typename From>
inline To emu_bit_cast(From value) {
    static_assert(sizeof(To) == sizeof(From), "bit cast between equal sizes");
    To result;
    std::memcpy(&result, &value, sizeof(To));
    return result;
}
inline unsigned __float_as_uint(float x) { return emu_bit_cast<unsigned>(x); }
inline float __uint_as_float(unsigned x) { return emu_bit_cast<float>(x); }
inline int __float_as_int(float x) { return emu_bit_cast<int>(x); }
inline float __int_as_float(int x) { return emu_bit_cast<float>(x); }
inline long long __double_as_longlong(double x) { return emu_bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return emu_bit_cast<double>(x); }
inline unsigned __umulhi(unsigned a, unsigned b) { return unsigned((uint64_t(a) * b) >> 32); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
template <typename T>
inline T __ldg(const T* address) { return *address; }

// mma.sync, ldmatrix and cp.async: the twins of kernels/warp_mma.cuh's inline PTX.
#include "tensor_core.h"
