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

// Separate slots sit on separate cache lines: a slot's line travels with its connection from
// thread to thread, and must not drag a neighbour's along. (64 rather than
// std::hardware_destructive_interference_size, whose value may differ between translation units.)
inline constexpr std::size_t cache_line = 64;

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
    std::atomic<std::int64_t> acquired_at{0}; // pool-clock ns when the current lease began
    std::atomic<std::int64_t> last_used{0};   // pool-clock ns when it last became idle
    std::atomic<std::int64_t> expires_at{0};  // pool-clock ns when it retires; 0 = never
    std::atomic<std::uint64_t> acquires{0};   // leases handed out from this slot, ever
    // Who acquired the current lease, in parts: a source_location may not fit a lock-free atomic.
    std::atomic<const char*> site_file{""};
    std::atomic<const char*> site_function{""};
    std::atomic<std::uint_least32_t> site_line{0};
    std::atomic<bool> leak_reported{false};   // the current lease was reported as a leak
};

} // namespace connpool::detail
