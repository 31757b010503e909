#pragma once

// The slot: one place for a connection, and the state machine that says who owns it. Every
// atomic operation on a slot's state, with its memory order, is a named transition here.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>

#include "source_location.hpp"

namespace connpool::detail {

template <class Conn>
struct Slot;

/// What a Lease needs from the pool that made it. Implemented by the pool's core, which
/// outlives every lease it handed out (see PoolCore's design note).
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
// slot another thread owns, so that the owner's next "hand it back" CAS (which expects the bare
// state) fails and the owner takes the slow path, where it reads why.
//
//   vacant ──reserve──► reserved ──created──► queued ◄──────────────┐
//                          │                    │ pop/own          │ to_queue
//                          └─failed─► vacant    ▼                  │
//          parked ◄──park── in_use ◄──────── (hand_out) ── busy ───┘
//            └──take_parked──► in_use         (validating, retiring, closing: the pool's)
//
inline constexpr std::uint32_t vacant = 0;   // no connection; free capacity (on the vacant list)
inline constexpr std::uint32_t reserved = 1; // owned by a creator: capacity claimed for a creation
inline constexpr std::uint32_t parked = 2;   // idle, not in the queue; any thread may CAS it away
inline constexpr std::uint32_t queued = 3;   // idle, in the idle queue, which owns it
inline constexpr std::uint32_t in_use = 4;   // owned by a lease
inline constexpr std::uint32_t busy = 5;     // owned by the pool (validating, retiring, closing)
inline constexpr std::uint32_t state_mask = 0xff;
inline constexpr std::uint32_t wanted = 0x100;   // must not be parked when it comes back
inline constexpr std::uint32_t closing = 0x200;  // the pool closed while this slot was owned
inline constexpr std::uint32_t expired = 0x400;  // max_lifetime passed while it was leased
inline constexpr std::uint32_t replaced = 0x800; // retire_all() ran while it was owned or queued

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
/// may touch `conn` and write the other fields; everybody else only reads the atomics and sets
/// flags. Ownership passes through acquire/release operations on `state`, so `conn` needs no
/// lock. `next_vacant` and `doomed` belong to the pool's control mutex.
template <class Conn>
struct alignas(cache_line) Slot {
    std::atomic<std::uint32_t> state{vacant};
    std::uint32_t index = 0;
    LeaseOwner<Conn>* owner = nullptr;
    std::optional<Conn> conn;
    bool handed_out = false; // handed out at least once since its creation
    bool doomed = false;     // counted as surplus after a shrink: destroyed, not reused
    Slot* next_vacant = nullptr;
    std::atomic<std::int64_t> acquired_at{0}; // pool-clock ns of the last hand-out (or creation)
    std::atomic<std::int64_t> expires_at{0};  // pool-clock ns when it retires; 0 = never
    std::atomic<std::uint64_t> acquires{0};   // leases handed out from this slot, ever
    // The last maintenance pass that saw this slot in use, and which lease (by `acquires`) it
    // saw: a lower bound for when that lease ended, so releases need not read the clock.
    std::atomic<std::int64_t> seen_in_use_at{0};
    std::atomic<std::uint64_t> seen_in_use_version{~std::uint64_t{0}};
    SiteCell site;                            // who acquired the current lease
    std::atomic<std::uint64_t> leak_reported{~std::uint64_t{0}}; // the lease (by `acquires`) reported

    // ---- transitions ---------------------------------------------------------------------

    /// parked -> in_use: the fast-path acquire. Acquire: the connection's writes are ours.
    bool take_parked() noexcept {
        std::uint32_t expected = parked;
        return state.compare_exchange_strong(expected, in_use, std::memory_order_acquire,
                                             std::memory_order_relaxed);
    }

    /// in_use (no flag) -> parked: the fast-path release. Release: publishes the connection.
    /// Fails when a flag is set, which sends the owner down the slow path.
    bool park() noexcept {
        std::uint32_t expected = in_use;
        return state.compare_exchange_strong(expected, parked, std::memory_order_acq_rel,
                                             std::memory_order_relaxed);
    }

    /// parked -> busy: the pool takes an idle parked connection (to queue, retire or destroy it).
    bool take_parked_for_pool() noexcept {
        std::uint32_t expected = parked;
        return state.compare_exchange_strong(expected, busy, std::memory_order_acq_rel,
                                             std::memory_order_relaxed);
    }

    /// Sets the state to `to`, keeping any flags; returns the word it replaced. An RMW, not a
    /// store: another thread may be adding a flag at the same moment. Only the owner calls it.
    std::uint32_t become(std::uint32_t to) noexcept {
        std::uint32_t cur = state.load(std::memory_order_relaxed);
        while (!state.compare_exchange_weak(cur, (cur & ~state_mask) | to, std::memory_order_seq_cst)) {
        }
        return cur;
    }

    /// Sets `to` and clears every flag, unless one of `refuse` is set; returns whether it did.
    /// Used by the owner to publish the slot (queued, parked) after reading the flags.
    bool publish(std::uint32_t to, std::uint32_t refuse, std::uint32_t& seen) noexcept {
        std::uint32_t cur = state.load(std::memory_order_acquire);
        for (;;) {
            if ((cur & refuse) != 0) {
                seen = cur;
                return false;
            }
            if (state.compare_exchange_weak(cur, to, std::memory_order_acq_rel)) return true;
        }
    }

    /// Adds `flag` if the slot is in one of the owned or idle states `states` (a bit mask of
    /// 1 << state); returns the state word seen. seq_cst: see PoolCore's design note on
    /// `attention_`.
    std::uint32_t flag_if(std::uint32_t flag, std::uint32_t states) noexcept {
        std::uint32_t cur = state.load(std::memory_order_seq_cst);
        for (;;) {
            if ((cur & flag) != 0 || ((1u << (cur & state_mask)) & states) == 0) return cur;
            if (state.compare_exchange_weak(cur, cur | flag, std::memory_order_seq_cst)) return cur | flag;
        }
    }

    /// Returns the bare state (no flags).
    [[nodiscard]] std::uint32_t bare(std::memory_order order = std::memory_order_acquire) const noexcept {
        return state.load(order) & state_mask;
    }
};

/// Bit mask of states for Slot::flag_if.
constexpr std::uint32_t states(std::initializer_list<std::uint32_t> list) noexcept {
    std::uint32_t m = 0;
    for (std::uint32_t s : list) m |= 1u << s;
    return m;
}

} // namespace connpool::detail
