// checks.cpp - checks every load and store the kernel makes.
//
// Kernel code is compiled with -fsanitize=thread, but the ThreadSanitizer runtime is not
// linked: the __tsan_* hooks it calls before each access are defined here instead. Each access
// must fall in a buffer the kernel was given (an array argument), shared memory, a thread's
// stack, the kernel's argument values, or an array a pointer table argument points to (see
// minicnn_emu_table_targets); anything else is out of bounds and stops the launch before the
// access happens. Shared memory also keeps a shadow per byte (last writer, readers,
// barrier interval) to find races and reads of memory no thread has written.
#include <cxxabi.h>
#include <dlfcn.h>
#include <link.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

#include "counters.h"
#include "emu_state.h"

extern "C" {
// Bounds of all __shared__ variables (see cuda_emu.h); weak: a module may have none.
extern char __start_emu_shared[] __attribute__((weak));
extern char __stop_emu_shared[] __attribute__((weak));
}

namespace emu {

enum class Access { Read, Write, Atomic };

struct Region {
    uintptr_t begin = 0, end = 0;
    std::string name;  // "argument 2", "dynamic shared memory", ...
    bool contains(uintptr_t address, size_t size) const { return address >= begin && address + size <= end; }
};

// Shadow of one byte of shared memory.
constexpr int ATOMIC_WRITER = -1, MANY_READERS = -2;
struct Shadow {
    int writer, write_epoch;
    int reader, read_epoch;
    int async_writer = -1;  // the thread whose cp.async has not landed here yet, or -1
};

struct SharedRegion : Region {
    std::vector<Shadow> shadow;
};

static std::vector<Region> buffers;  // array arguments
static std::vector<Region> table_targets;  // arrays reached through pointer tables
static Region arguments, stacks;
static SharedRegion static_region, dynamic_region;

void prepare_checks(const Arg* args, int nargs, const void* closure, size_t closure_size,
                    unsigned char* dynamic_memory, size_t dynamic_bytes, const char* stack_memory,
                    size_t stack_bytes) {
    buffers.clear();
    for (int i = 0; i < nargs; ++i) {
        if (!args[i].is_pointer) continue;
        uintptr_t begin = *static_cast<const uintptr_t*>(args[i].value);
        buffers.push_back({begin, begin + args[i].buffer_bytes,
                           "argument " + std::to_string(i) + " (" + std::to_string(args[i].buffer_bytes) +
                               "-byte " + dtype_name(args[i].type_code) + " array)"});
    }
    buffers.insert(buffers.end(), table_targets.begin(), table_targets.end());
    arguments = {uintptr_t(closure), uintptr_t(closure) + closure_size, "the kernel arguments"};
    stacks = {uintptr_t(stack_memory), uintptr_t(stack_memory) + stack_bytes, "thread stacks"};
    static_region.begin = uintptr_t(__start_emu_shared);
    static_region.end = uintptr_t(__stop_emu_shared);
    static_region.name = "static shared memory";
    dynamic_region.begin = uintptr_t(dynamic_memory);
    dynamic_region.end = dynamic_region.begin + dynamic_bytes;
    dynamic_region.name = "dynamic shared memory (shared_mem=" + std::to_string(dynamic_bytes) + " bytes)";
    for (SharedRegion* region : {&static_region, &dynamic_region})
        region->shadow.assign(region->end - region->begin, Shadow{0, 0, 0, 0});
}

// Before each block: all-ones bytes are NaN as float or double, so reads of memory no
// thread has written stand out even where the shadow check does not stop the launch.
void poison_shared_memory() {
    for (SharedRegion* region : {&static_region, &dynamic_region}) {
        std::memset(reinterpret_cast<void*>(region->begin), 0xFF, region->end - region->begin);
        for (Shadow& s : region->shadow) s.async_writer = -1;
    }
}

// The static shared variable holding `address`, as "shared variable 'tile' byte 12", looked up
// in the library's full symbol table (.symtab): function-local statics are not in the dynamic
// one that dladdr() searches. Only runs when an error is reported.
static std::string describe_static_shared(uintptr_t address) {
    Dl_info info;
    if (!dladdr(reinterpret_cast<void*>(address), &info)) return "";
    std::ifstream file(info.dli_fname, std::ios::binary);
    std::vector<char> image((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (image.size() < sizeof(ElfW(Ehdr))) return "";
    const auto* header = reinterpret_cast<const ElfW(Ehdr)*>(image.data());
    const auto* sections = reinterpret_cast<const ElfW(Shdr)*>(image.data() + header->e_shoff);
    for (int i = 0; i < header->e_shnum; ++i) {
        if (sections[i].sh_type != SHT_SYMTAB) continue;
        const auto* symbols = reinterpret_cast<const ElfW(Sym)*>(image.data() + sections[i].sh_offset);
        const char* names = image.data() + sections[sections[i].sh_link].sh_offset;
        for (size_t k = 0; k < sections[i].sh_size / sizeof(ElfW(Sym)); ++k) {
            uintptr_t begin = uintptr_t(info.dli_fbase) + symbols[k].st_value;
            if (ELF64_ST_TYPE(symbols[k].st_info) != STT_OBJECT || address < begin ||
                address >= begin + symbols[k].st_size)
                continue;
            char* demangled = abi::__cxa_demangle(names + symbols[k].st_name, nullptr, nullptr, nullptr);
            std::string name = demangled ? demangled : names + symbols[k].st_name;
            std::free(demangled);
            size_t scope = name.rfind("::");  // "void f<float>(float*)::tile" -> "tile"
            if (scope != std::string::npos) name = name.substr(scope + 2);
            return "shared variable '" + name + "' byte " + std::to_string(address - begin);
        }
    }
    return "";
}

static std::string describe_shared(const SharedRegion& region, uintptr_t address) {
    std::string variable = &region == &static_region ? describe_static_shared(address) : "";
    return variable.empty() ? region.name + " byte " + std::to_string(address - region.begin) : variable;
}

static std::string describe_reader(int reader) {
    return reader == MANY_READERS ? "other threads" : describe_thread(reader);
}

static void report_shared(const SharedRegion& region, uintptr_t address, Access access, int self,
                          const char* problem) {
    const char* verb = access == Access::Read ? "reads" : access == Access::Write ? "writes" : "atomically updates";
    report("%s %s %s%s", describe_thread(self).c_str(), verb, describe_shared(region, address).c_str(), problem);
}

// One byte of shared memory accessed by thread `self`; returns false after reporting a race.
static bool check_shared_byte(SharedRegion& region, uintptr_t address, Access access, int self) {
    Shadow& s = region.shadow[address - region.begin];
    if (s.async_writer >= 0) {
        report_shared(region, address, access, self,
                      (", which a cp.async of " + describe_thread(s.async_writer) +
                       " has not landed yet (missing cp.async.wait_group)").c_str());
        return false;
    }
    if (access != Access::Write && s.write_epoch < state.block_first_epoch) {
        report_shared(region, address, access, self, ", which no thread of this block has written yet (uninitialized, or a missing __syncthreads())");
        return false;
    }
    bool other_wrote = s.write_epoch == state.epoch && s.writer != self &&
                       !(access == Access::Atomic && s.writer == ATOMIC_WRITER);
    bool other_read = access != Access::Read && s.read_epoch == state.epoch && s.reader != self;
    if (other_wrote || other_read) {
        std::string conflict = !other_wrote               ? "a read by " + describe_reader(s.reader)
                               : s.writer == ATOMIC_WRITER ? std::string("an atomic of another thread")
                                                           : "a write by " + describe_thread(s.writer);
        report_shared(region, address, access, self,
                      (" after " + conflict + " with no __syncthreads() in between (shared-memory race)").c_str());
        return false;
    }
    if (access == Access::Read) {
        s.reader = s.read_epoch == state.epoch && s.reader != self ? MANY_READERS : self;
        s.read_epoch = state.epoch;
    } else {
        s.writer = access == Access::Atomic ? ATOMIC_WRITER : self;
        s.write_epoch = state.epoch;
    }
    return true;
}

static void out_of_bounds(uintptr_t address, size_t size, Access access) {
    const Region* nearest = nullptr;
    uintptr_t distance = UINTPTR_MAX;
    auto consider = [&](const Region& region) {
        uintptr_t d = address < region.begin ? region.begin - address : address + size - region.end;
        if (region.end > region.begin && d < distance) nearest = &region, distance = d;
    };
    for (const Region& buffer : buffers) consider(buffer);
    consider(static_region);
    consider(dynamic_region);
    bool shared = nearest == &static_region || nearest == &dynamic_region;
    std::string where = "far from any buffer";
    if (nearest) {
        long long offset = (long long)(address - nearest->begin), past = (long long)(address - nearest->end);
        where = "at byte " + std::to_string(offset) + " of " + nearest->name + ", " +
                (offset < 0 ? std::to_string(-offset) + " bytes before its start"
                 : past < 0 ? std::string("running over its end")
                            : std::to_string(past) + " bytes past its end");
    }
    report("out-of-bounds %s %s of %zu bytes by %s %s", shared ? "shared" : "global",
           access == Access::Read ? "read" : access == Access::Write ? "write" : "atomic update", size,
           describe_thread(int(state.current - state.threads.data())).c_str(), where.c_str());
    abort_thread();
}

// pc: the kernel code's address of the access, for the performance counters.
static void check(const void* pointer, size_t size, Access access, const void* pc) {
    if (!state.current) return;  // the runtime itself, not kernel code
    uintptr_t address = uintptr_t(pointer);
    int self = int(state.current - state.threads.data());
    for (SharedRegion* region : {&static_region, &dynamic_region}) {
        if (!region->contains(address, size)) continue;
        if (counting)
            count_access(pc, Space::Shared, access != Access::Read, region == &dynamic_region,
                         address - region->begin, size);
        for (size_t i = 0; i < size; ++i)
            if (!check_shared_byte(*region, address + i, access, self)) break;
        if (state.aborted) abort_thread();  // enough errors: stop here
        return;
    }
    if (stacks.contains(address, size) || (access == Access::Read && arguments.contains(address, size))) return;
    for (size_t i = 0; i < buffers.size(); ++i) {
        if (!buffers[i].contains(address, size)) continue;
        if (counting)
            count_access(pc, Space::Global, access != Access::Read, int(i), address - buffers[i].begin, size);
        return;
    }
    out_of_bounds(address, size, access);
}

void check_access(const void* pointer, size_t size, bool write, const void* pc) {
    check(pointer, size, write ? Access::Write : Access::Read, pc);
}

static SharedRegion* shared_region(const void* pointer, size_t size) {
    for (SharedRegion* region : {&static_region, &dynamic_region})
        if (region->contains(uintptr_t(pointer), size)) return region;
    return nullptr;
}

bool in_shared_memory(const void* pointer, size_t size) { return shared_region(pointer, size) != nullptr; }

// The bytes of both shared regions, then their shadows (plain structs: copied as bytes).
std::vector<unsigned char> save_shared() {
    std::vector<unsigned char> image;
    for (SharedRegion* region : {&static_region, &dynamic_region}) {
        const auto* bytes = reinterpret_cast<const unsigned char*>(region->begin);
        const auto* shadow = reinterpret_cast<const unsigned char*>(region->shadow.data());
        image.insert(image.end(), bytes, bytes + (region->end - region->begin));
        image.insert(image.end(), shadow, shadow + region->shadow.size() * sizeof(Shadow));
    }
    return image;
}

void restore_shared(const std::vector<unsigned char>& image) {
    const unsigned char* next = image.data();
    for (SharedRegion* region : {&static_region, &dynamic_region}) {
        const size_t bytes = region->end - region->begin;
        std::memcpy(reinterpret_cast<void*>(region->begin), next, bytes);
        std::memcpy(static_cast<void*>(region->shadow.data()), next + bytes, bytes * sizeof(Shadow));
        next += bytes + bytes * sizeof(Shadow);
    }
}

void mark_async_copy(const void* pointer, size_t size, int thread) {
    SharedRegion* region = shared_region(pointer, size);
    for (size_t i = 0; region && i < size; ++i)
        region->shadow[uintptr_t(pointer) + i - region->begin].async_writer = thread;
}

// ---- Atomics: checked like any access, then done in place (threads only yield at barriers).

// always_inline: the return address is then the kernel code's that called atomicAdd & co.
template <typename T, typename Update>
__attribute__((always_inline)) static inline T atomic_update(T* address, Update update) {
    check(address, sizeof(T), Access::Atomic, __builtin_return_address(0));
    T old = *address;
    *address = update(old);
    return old;
}

}  // namespace emu

// The arrays the next launch reaches through pointer tables (multi-tensor kernels read their
// tensors' addresses from a device array): count (begin, bytes) pairs. Python sets them before
// every launch (count 0 for none), so they are valid targets of loads and stores.
extern "C" void minicnn_emu_table_targets(const uint64_t* ranges, int count) {
    emu::table_targets.clear();
    for (int i = 0; i < count; ++i)
        emu::table_targets.push_back({uintptr_t(ranges[2 * i]), uintptr_t(ranges[2 * i] + ranges[2 * i + 1]),
                                      "pointer table entry " + std::to_string(i) + " (" +
                                          std::to_string(ranges[2 * i + 1]) + "-byte array)"});
}

using emu::atomic_update;
float atomicAdd(float* a, float v) { return atomic_update(a, [v](float old) { return old + v; }); }
double atomicAdd(double* a, double v) { return atomic_update(a, [v](double old) { return old + v; }); }
int atomicAdd(int* a, int v) { return atomic_update(a, [v](int old) { return int(unsigned(old) + unsigned(v)); }); }
unsigned atomicAdd(unsigned* a, unsigned v) { return atomic_update(a, [v](unsigned old) { return old + v; }); }
unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
    return atomic_update(a, [v](unsigned long long old) { return old + v; });
}
int atomicSub(int* a, int v) { return atomic_update(a, [v](int old) { return int(unsigned(old) - unsigned(v)); }); }
unsigned atomicSub(unsigned* a, unsigned v) { return atomic_update(a, [v](unsigned old) { return old - v; }); }
int atomicMax(int* a, int v) { return atomic_update(a, [v](int old) { return old > v ? old : v; }); }
unsigned atomicMax(unsigned* a, unsigned v) { return atomic_update(a, [v](unsigned old) { return old > v ? old : v; }); }
int atomicMin(int* a, int v) { return atomic_update(a, [v](int old) { return old < v ? old : v; }); }
unsigned atomicMin(unsigned* a, unsigned v) { return atomic_update(a, [v](unsigned old) { return old < v ? old : v; }); }
int atomicExch(int* a, int v) { return atomic_update(a, [v](int) { return v; }); }
unsigned atomicExch(unsigned* a, unsigned v) { return atomic_update(a, [v](unsigned) { return v; }); }
float atomicExch(float* a, float v) { return atomic_update(a, [v](float) { return v; }); }
int atomicCAS(int* a, int compare, int v) {
    return atomic_update(a, [=](int old) { return old == compare ? v : old; });
}
unsigned atomicCAS(unsigned* a, unsigned compare, unsigned v) {
    return atomic_update(a, [=](unsigned old) { return old == compare ? v : old; });
}
unsigned long long atomicCAS(unsigned long long* a, unsigned long long compare, unsigned long long v) {
    return atomic_update(a, [=](unsigned long long old) { return old == compare ? v : old; });
}

// ---- ThreadSanitizer's instrumentation hooks, redirected to check(). ----

#define CALLER __builtin_return_address(0)  // the program point of the access in kernel code

#define EMU_TSAN_HOOKS(N)                                                                          \
    void __tsan_read##N(void* p) { emu::check(p, N, emu::Access::Read, CALLER); }                 \
    void __tsan_write##N(void* p) { emu::check(p, N, emu::Access::Write, CALLER); }               \
    void __tsan_unaligned_read##N(void* p) { emu::check(p, N, emu::Access::Read, CALLER); }       \
    void __tsan_unaligned_write##N(void* p) { emu::check(p, N, emu::Access::Write, CALLER); }

extern "C" {
EMU_TSAN_HOOKS(1)
EMU_TSAN_HOOKS(2)
EMU_TSAN_HOOKS(4)
EMU_TSAN_HOOKS(8)
EMU_TSAN_HOOKS(16)
void __tsan_read_range(void* p, unsigned long size) { emu::check(p, size, emu::Access::Read, CALLER); }
void __tsan_write_range(void* p, unsigned long size) { emu::check(p, size, emu::Access::Write, CALLER); }
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
}
