// counters.cpp - groups the accesses of each warp into warp-level instructions and counts
// requests, sectors and bank wavefronts per program point (see counters.h for the model).
//
// Lanes run one after another between barriers, so a lane's accesses are only buffered here;
// they are grouped when the block passes a barrier or finishes, once every lane has run.
#include "counters.h"

#include <dlfcn.h>

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>

#include "emu_state.h"

namespace emu {

bool counting = false;

namespace {

constexpr uint64_t SECTOR_BYTES = 32, BANKS = 32, BANK_BYTES = 4, WARP = 32;

struct Record {
    const void* pc;
    uint64_t location;  // region << 48 | offset: distinct buffers never share a sector
    uint32_t occurrence;
    uint16_t size;
    uint8_t lane;
    uint8_t kind;  // space * 2 + write
    bool active;   // false: count_idle_lane (no bytes moved)
};

struct SiteKey {
    const void* pc;
    uint8_t kind;
    uint16_t size;
    bool operator<(const SiteKey& o) const { return std::tie(pc, kind, size) < std::tie(o.pc, o.kind, o.size); }
};

struct SiteCounts {
    uint64_t requests = 0, lanes = 0, units = 0, ideal_units = 0, bytes = 0;
};

std::vector<std::vector<Record>> pending;  // per thread of the block, since the last barrier
std::map<SiteKey, SiteCounts> sites;
std::vector<uint64_t> sampled;  // sorted linear block indices; empty = every block
uint64_t blocks_run = 0, barriers = 0, warp_ops = 0;

// Sectors (global) or the busiest bank's distinct words (shared) of one warp instruction.
void account(const Record* begin, const Record* end) {
    const Record& first = *begin;
    SiteCounts& site = sites[SiteKey{first.pc, first.kind, first.size}];
    const bool shared = first.kind / 2 == uint8_t(Space::Shared);
    const uint64_t unit = shared ? BANK_BYTES : SECTOR_BYTES;
    std::vector<uint64_t> units, addresses;
    const uint64_t active = uint64_t(std::count_if(begin, end, [](const Record& r) { return r.active; }));
    if (active == 0) return;  // every lane idle: no memory request
    for (const Record* r = begin; r != end; ++r) {
        if (!r->active) continue;
        addresses.push_back(r->location);
        for (uint64_t u = r->location / unit; u <= (r->location + r->size - 1) / unit; ++u) units.push_back(u);
    }
    std::sort(units.begin(), units.end());
    units.erase(std::unique(units.begin(), units.end()), units.end());
    std::sort(addresses.begin(), addresses.end());
    addresses.erase(std::unique(addresses.begin(), addresses.end()), addresses.end());
    uint64_t cost, ideal;
    if (shared) {
        uint64_t per_bank[BANKS] = {};
        for (uint64_t word : units) ++per_bank[word % BANKS];
        cost = *std::max_element(per_bank, per_bank + BANKS);
        ideal = (units.size() + BANKS - 1) / BANKS;
    } else {
        cost = units.size();
        ideal = (addresses.size() * first.size + SECTOR_BYTES - 1) / SECTOR_BYTES;
    }
    site.requests += 1;
    site.lanes += active;
    site.bytes += active * first.size;
    site.units += cost;
    site.ideal_units += ideal;
}

// Groups the buffered accesses of every warp by (program point, occurrence, kind, width). The
// occurrence counts per point and kind: a cp.async's read and its landing store share a point.
void close_interval() {
    std::vector<Record> warp;
    std::map<std::pair<const void*, uint8_t>, uint32_t> seen;
    for (size_t first = 0; first < pending.size(); first += WARP) {
        warp.clear();
        for (size_t t = first; t < std::min(pending.size(), first + WARP); ++t) {
            seen.clear();
            for (Record r : pending[t]) {
                r.occurrence = seen[{r.pc, r.kind}]++;
                warp.push_back(r);
            }
            pending[t].clear();
        }
        auto key = [](const Record& r) { return std::tie(r.pc, r.occurrence, r.kind, r.size); };
        std::sort(warp.begin(), warp.end(), [&](const Record& a, const Record& b) { return key(a) < key(b); });
        for (size_t i = 0; i < warp.size();) {
            size_t j = i + 1;
            while (j < warp.size() && key(warp[j]) == key(warp[i])) ++j;
            account(&warp[i], &warp[j]);
            i = j;
        }
    }
}

// Buffers one access (or idle lane) of the running thread until its interval closes.
void buffer(const void* pc, Space space, bool write, uint64_t location, size_t size, bool active) {
    size_t self = size_t(state.current - state.threads.data());
    if (pending.size() < state.threads.size()) pending.resize(state.threads.size());
    pending[self].push_back(Record{pc, location, 0, uint16_t(size), uint8_t(self % WARP),
                                   uint8_t(uint8_t(space) * 2 + write), active});
}

}  // namespace

void count_access(const void* pc, Space space, bool write, int region, uint64_t offset, size_t size) {
    buffer(pc, space, write, uint64_t(region) << 48 | offset, size, true);
}

void count_idle_lane(const void* pc, Space space, bool write, size_t size) {
    buffer(pc, space, write, 0, size, false);
}

void count_barrier() {
    if (!counting) return;
    ++barriers;
    close_interval();
}

void count_warp_op() {
    if (counting) ++warp_ops;
}

void count_block_done() {
    if (!counting) return;
    ++blocks_run;
    close_interval();
}

bool block_selected(uint64_t linear_block) {
    return !counting || sampled.empty() || std::binary_search(sampled.begin(), sampled.end(), linear_block);
}

}  // namespace emu

// ---- The Python side (counters.py). ----

struct SiteOut {  // mirrored by _Site in counters.py
    uint64_t pc_offset;  // from the library's load address, for addr2line
    int32_t space, write, width, _unused;
    uint64_t requests, lanes, units, ideal_units, bytes;
};

extern "C" {

// Starts counting the next launches; blocks: sorted linear indices to run (the others are
// skipped), or count 0 for every block.
void minicnn_emu_profile_begin(const uint64_t* blocks, int count) {
    emu::sampled.assign(blocks, blocks + count);
    emu::sites.clear();
    emu::pending.clear();
    emu::blocks_run = emu::barriers = emu::warp_ops = 0;
    emu::counting = true;
}

// Stops counting; returns the number of access sites (read them with minicnn_emu_profile_site).
int minicnn_emu_profile_end(uint64_t* stats) {
    emu::counting = false;
    stats[0] = emu::blocks_run;
    stats[1] = emu::barriers;
    stats[2] = emu::warp_ops;
    return int(emu::sites.size());
}

void minicnn_emu_profile_site(int index, SiteOut* out) {
    auto it = std::next(emu::sites.begin(), index);
    Dl_info info{};
    dladdr(it->first.pc, &info);
    *out = SiteOut{uint64_t(it->first.pc) - uint64_t(info.dli_fbase), it->first.kind / 2, it->first.kind % 2,
                   it->first.size, 0, it->second.requests, it->second.lanes, it->second.units,
                   it->second.ideal_units, it->second.bytes};
}
}
