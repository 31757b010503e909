#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

#include "source_location.hpp"

namespace connpool::detail {

template <class Conn>
struct Slot;

/// What a Lease needs from the pool that made it. Implemented by the pool's core, which
/// outlives every lease it handed out (see Pool's design note).
template <class Conn>
class LeaseOwner {
public:
    /// Takes the slot back from a lease; `discard` means the connection is broken.
    virtual void give_back(Slot<Conn>& slot, bool discard) noexcept = 0;
    /// Returns the pool clock's time in nanoseconds, the unit Slot stores times in.
    [[nodiscard]] virtual std::int64_t clock_now_ns() const noexcept = 0;

protected:
    ~LeaseOwner() = default;
};

// Slot states. The low byte is the state; the bits above are flags that any thread may set on a
// slot another thread owns, so that the owner's next "hand it back" CAS fails and the owner
// takes the slow path, where it reads why.
inline constexpr std::uint32_t vacant = 0;   // no connection; free capacity
inline constexpr std::uint32_t reserved = 1; // owned: capacity claimed for a creation
inline constexpr std::uint32_t parked = 2;   // idle, not in the queue; any thread may CAS it away
inline constexpr std::uint32_t queued = 3;   // idle, in the idle queue, which owns it
inline constexpr std::uint32_t in_use = 4;   // owned by a lease
inline constexpr std::uint32_t busy = 5;     // owned by the pool (validating, retiring, closing)
inline constexpr std::uint32_t state_mask = 0xff;
inline constexpr std::uint32_t wanted = 0x100;  // a waiter wants this one when it comes back
inline constexpr std::uint32_t closing = 0x200; // the pool closed while this slot was owned
inline constexpr std::uint32_t retiring = 0x400; // max_lifetime passed while it was leased

// Separate slots sit on separate cache lines: a slot's line travels with its connection from
// thread to thread, and must not drag a neighbour's along. (64 rather than
// std::hardware_destructive_interference_size, whose value may differ between translation units.)
inline constexpr std::size_t cache_line = 64;

/// An acquire's call site, readable by other threads while its owner overwrites it.
/// One lock-free word where source_location is a single pointer (libstdc++); three otherwise.
template <bool OneWord = (sizeof(source_location) == sizeof(void*) &&
                          std::atomic<source_location>::is_always_lock_free)>
struct BasicSiteCell {
    std::atomic<source_location> loc{};
    void store(const source_location& l) noexcept { loc.store(l, std::memory_order_relaxed); }
    [[nodiscard]] source_location load() const noexcept { return loc.load(std::memory_order_relaxed); }
    [[nodiscard]] const char* file() const noexcept { return load().file_name(); }
    [[nodiscard]] const char* function() const noexcept { return load().function_name(); }
    [[nodiscard]] std::uint_least32_t line() const noexcept { return load().line(); }
};
template <>
struct BasicSiteCell<false> {
    std::atomic<const char*> file_{""};
    std::atomic<const char*> function_{""};
    std::atomic<std::uint_least32_t> line_{0};
    void store(const source_location& l) noexcept {
        file_.store(l.file_name(), std::memory_order_relaxed);
        function_.store(l.function_name(), std::memory_order_relaxed);
        line_.store(l.line(), std::memory_order_relaxed);
    }
    [[nodiscard]] const char* file() const noexcept { return file_.load(std::memory_order_relaxed); }
    [[nodiscard]] const char* function() const noexcept { return function_.load(std::memory_order_relaxed); }
    [[nodiscard]] std::uint_least32_t line() const noexcept { return line_.load(std::memory_order_relaxed); }
};
using SiteCell = BasicSiteCell<>;

/// One place for a connection, with the bookkeeping that travels with it.
///
/// The thread that owns `state` (reserved, in_use or busy; or the queue's popper for queued)
/// may touch `conn` and write the other fields; everybody else only reads the atomics.
/// Ownership passes through acquire/release operations on `state`, so `conn` needs no lock.
template <class Conn>
struct alignas(cache_line) Slot {
    std::atomic<std::uint32_t> state{vacant};
    std::uint32_t index = 0;
    LeaseOwner<Conn>* owner = nullptr;
    std::optional<Conn> conn;
    bool fresh = false; // created and not yet handed out: needs no validation
    std::atomic<std::int64_t> acquired_at{0}; // pool-clock ns of the last hand-out (or creation)
    std::atomic<std::int64_t> expires_at{0};  // pool-clock ns when it retires; 0 = never
    std::atomic<std::uint64_t> acquires{0};   // leases handed out from this slot, ever
    // The last maintenance pass that saw this slot in use, and which lease (by `acquires`) it
    // saw: a lower bound for when that lease ended, so releases need not read the clock.
    std::atomic<std::int64_t> seen_in_use_at{0};
    std::atomic<std::uint64_t> seen_in_use_version{~std::uint64_t{0}};
    SiteCell site;                            // who acquired the current lease
    std::atomic<std::uint64_t> leak_reported{~std::uint64_t{0}}; // the lease (by `acquires`) reported
};

} // namespace connpool::detail
