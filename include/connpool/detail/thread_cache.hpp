#pragma once

// The thread-local "last slot I gave back" hint of the fast path, one entry per pool.
//
// Each live pool holds a seat: an entry index no other live pool has (while at most
// `cache_seats` pools exist; beyond that, pools share seats and merely miss more often). So one
// thread can alternate between up to that many pools and keep the fast path for each. An entry
// also records its pool's id; ids are never reused, so a stale entry (a destroyed pool, or the
// previous owner of a seat) can only miss, never point into another pool.

#include <atomic>
#include <bit> // std::countr_one
#include <cstddef>
#include <cstdint>

namespace connpool::detail {

inline constexpr std::size_t cache_seats = 64;

struct CacheEntry {
    std::uint64_t pool = 0; // the id of the pool that wrote it
    void* slot = nullptr;   // that pool's slot, as its own Slot type
};

struct ThreadCache {
    CacheEntry entries[cache_seats]{};
    std::uint32_t rotor = 0; // spreads the slot scans of different threads
};

// constinit: the compiler can then reach it without a TLS init guard on the hot path.
inline constinit thread_local ThreadCache thread_cache{};

inline std::atomic<std::uint64_t> next_pool_id{1};
inline std::atomic<std::uint64_t> taken_seats{0}; // bit i: seat i belongs to a live pool

/// A pool's id and its seat in every thread's cache; frees the seat when destroyed.
class CacheSeat {
public:
    CacheSeat() noexcept {
        std::uint64_t taken = taken_seats.load(std::memory_order_relaxed);
        for (;;) {
            const int free = std::countr_one(taken);
            if (free >= static_cast<int>(cache_seats)) {
                seat_ = static_cast<std::size_t>(id_ % cache_seats); // all taken: share one
                return;
            }
            if (taken_seats.compare_exchange_weak(taken, taken | (std::uint64_t{1} << free),
                                                  std::memory_order_relaxed)) {
                seat_ = static_cast<std::size_t>(free);
                owned_ = true;
                return;
            }
        }
    }
    CacheSeat(const CacheSeat&) = delete;
    CacheSeat& operator=(const CacheSeat&) = delete;
    ~CacheSeat() {
        if (owned_) taken_seats.fetch_and(~(std::uint64_t{1} << seat_), std::memory_order_relaxed);
    }

    /// Returns this thread's entry for the pool.
    [[nodiscard]] CacheEntry& entry() const noexcept { return thread_cache.entries[seat_]; }
    /// Returns the pool's id, never reused.
    [[nodiscard]] std::uint64_t id() const noexcept { return id_; }

private:
    const std::uint64_t id_ = next_pool_id.fetch_add(1, std::memory_order_relaxed);
    std::size_t seat_ = 0;
    bool owned_ = false;
};

} // namespace connpool::detail
