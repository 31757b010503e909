#pragma once

// Design
// ------
// Connections live in a fixed array of slots (max_size of them, allocated once, one cache line
// or more each). A slot's `state` word says who owns it: nobody (vacant), a creating thread
// (reserved), a lease (in_use), the pool itself (busy), the idle queue (queued), or nobody in
// particular while idle (parked). Whoever owns the state owns the connection, so no lock guards
// connections, and creation, validation, reset and destruction all run outside any lock.
//
// Fast path (the one HikariCP made famous): a thread that gives back a connection parks it and
// remembers its slot in a thread-local cache; its next acquire takes the same slot back with one
// CAS (parked -> in_use), and the release is one more CAS (in_use -> parked). No lock, no shared
// counter written, one read of a coarse clock (see detail/clock.hpp) on acquire and none on
// release. Statistics that the fast path feeds are kept per slot, on the line the thread
// already owns. Without a clock read at release, idle time is measured from the last hand-out
// (or the last maintenance pass that saw that lease running), which errs towards validating and
// retiring early; a lease that outlives max_lifetime is flagged `retiring` by maintenance, so
// its release takes the slow path and retires it.
//
// Slow path: a thread whose cached slot is gone takes the newest idle connection from the idle
// queue (a BoundedBlockingQueue in LIFO order, so the least recently used ones age out), then
// steals any parked slot, then creates a connection if there is room. Failing that it spins
// briefly (a few pauses, then yields, at most ~200 us): when threads outnumber cores, a thread
// that lost a race nearly always finds a parked connection within a few yields, and sleeping
// instead would turn every release into a wake-up and a context switch (a lock convoy that a
// busy pool never leaves). Only then does it sleep in the queue. Before it sleeps it counts
// itself in `waiting_` and flags every owned slot `wanted`: a release then sees either
// `waiting_ > 0` (it reads it before its CAS) or the flag (its CAS fails), and pushes the
// connection into the queue, which hands it to the oldest sleeper (FIFO). So a waiter is served
// at most ~200 us of spinning plus as many releases as there are sleepers ahead of it: while
// anybody sleeps, no release parks, so nobody can barge past the sleepers.
//
// Capacity: a vacant slot is reserved with a CAS before creating into it, so at most max_size
// connections exist, and at most max_concurrent_creates creations run at once. A failing
// create() makes the pool back off (exponentially, shared by all acquirers) until each
// acquirer's deadline. When capacity frees up (a discard, a retirement) while threads wait, the
// vacant slot itself is handed to the oldest waiter through the queue, as a ticket to create.
//
// Lifetime: the pool object owns a reference to the core; so does every slot that holds a
// connection. Closing destroys idle connections at once and flags owned slots `closing`, so
// outstanding leases destroy theirs when they come back; the last one out deletes the core. A
// release never touches the core after the CAS that publishes its slot.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>

#include "bounded_queue.hpp"
#include "detail/clock.hpp"
#include "detail/slot.hpp"
#include "detail/source_location.hpp"
#include "detail/wait_histogram.hpp"
#include "errors.hpp"
#include "lease.hpp"

namespace connpool {

/// A factory for connections of type Conn: `f.create()` returns a new one (or throws).
/// Optional members, used when present: `bool validate(Conn&)`, `bool reset(Conn&)`,
/// `void destroy(Conn&)`. Members may be called from several threads at once.
template <class F, class Conn>
concept ConnectionFactory = requires(F& f) {
    { f.create() } -> std::convertible_to<Conn>;
};

namespace detail {
template <class F, class Conn>
concept has_validate = requires(F& f, Conn& c) {
    { f.validate(c) } -> std::convertible_to<bool>;
};
template <class F, class Conn>
concept has_reset = requires(F& f, Conn& c) {
    { f.reset(c) } -> std::convertible_to<bool>;
};
template <class F, class Conn>
concept has_destroy = requires(F& f, Conn& c) { f.destroy(c); };

/// The connection type a factory creates.
template <class F>
using connection_t = std::remove_cvref_t<decltype(std::declval<F&>().create())>;
} // namespace detail

/// What happened in a pool, as reported to PoolOptions::on_event.
enum class PoolEventKind {
    created,           ///< a connection was created; `duration` is how long create() took
    create_failed,     ///< create() threw; `detail` is its message
    destroyed,         ///< a connection was destroyed; `detail` says why
    acquired,          ///< a lease was handed out; `duration` is how long the caller waited
    released,          ///< a lease came back; `duration` is how long it was held
    timeout,           ///< an acquire gave up; `duration` is how long it waited
    leak,              ///< a lease has been held past leak_threshold; `duration` is the hold so far
    validation_failed, ///< validate() said an idle connection is dead (it is then destroyed)
};

/// Where an acquire was called from, as recorded by the pool.
struct CallSite {
    const char* file = "";           ///< source file
    const char* function = "";       ///< enclosing function
    std::uint_least32_t line = 0;    ///< line number
};

/// One pool event. Views and pointers in it are valid only during the callback.
struct PoolEvent {
    PoolEventKind kind{};                ///< what happened
    std::uint32_t slot = 0;              ///< the connection's slot (stable place in the pool)
    std::chrono::nanoseconds duration{}; ///< meaning depends on `kind`
    CallSite site{};                     ///< the acquiring call site (acquired, released, timeout, leak)
    std::string_view detail{};           ///< error text or reason (create_failed, destroyed)
};

/// How a Pool behaves. Every field has a default; invalid values make Pool's constructor throw
/// std::invalid_argument naming the field and the value.
struct PoolOptions {
    /// Most connections open at once, idle or in use. Default 8; at least 1.
    std::size_t max_size = 8;
    /// Idle connections kept ready (created in the background). Default 0; at most max_size.
    std::size_t min_idle = 0;
    /// How long acquire() waits before throwing AcquireTimeout. Default 30 s.
    std::chrono::milliseconds acquire_timeout{30'000};
    /// An idle connection unused this long is destroyed (while more than min_idle are open).
    /// Default 10 min; 0 = never.
    std::chrono::milliseconds idle_timeout{600'000};
    /// A connection is retired this long after its creation, minus up to 2.5 % random jitter so
    /// they don't all expire at once; checked when handed out, when given back and while idle.
    /// Default 30 min; 0 = never.
    std::chrono::milliseconds max_lifetime{1'800'000};
    /// An idle connection is validated (if the factory has validate()) before being handed out
    /// once it has been idle this long. Default 500 ms; 0 = every time.
    std::chrono::milliseconds validate_after_idle{500};
    /// A lease held this long is reported once as a leak (event + stats). Default 0 = off.
    std::chrono::milliseconds leak_threshold{0};
    /// Most create() calls running at once. Default 2; at least 1.
    std::size_t max_concurrent_creates = 2;
    /// First back-off after create() throws; doubles up to create_retry_max. Default 10 ms.
    std::chrono::milliseconds create_retry_initial{10};
    /// Longest back-off between creation attempts. Default 1 s; at least create_retry_initial.
    std::chrono::milliseconds create_retry_max{1'000};
    /// How often the maintenance thread runs (idle timeout, lifetime, leaks, min_idle). It runs
    /// only when one of those is enabled. Default 1 s; 0 = no thread (call Pool::maintain()).
    std::chrono::milliseconds maintenance_interval{1'000};
    /// Called for every PoolEvent, from the thread where it happened, outside any lock. Must be
    /// thread-safe and quick; exceptions it throws are swallowed. Default: none.
    std::function<void(const PoolEvent&)> on_event{};
};

/// A snapshot of a pool's state and counters. The gauges are read one by one, so they agree
/// with each other (open == idle + in_use, created - destroyed == open) only while no acquire,
/// release or maintenance is in flight.
struct PoolStats {
    std::size_t max_size = 0;           ///< PoolOptions::max_size
    std::size_t open = 0;               ///< connections that exist, idle or in use
    std::size_t idle = 0;               ///< connections ready to hand out
    std::size_t in_use = 0;             ///< connections held by leases
    std::size_t waiting = 0;            ///< threads inside acquire() that found nothing at once
    std::uint64_t created = 0;          ///< connections created, ever
    std::uint64_t destroyed = 0;        ///< connections destroyed, ever
    std::uint64_t acquired = 0;         ///< leases handed out, ever
    std::uint64_t timeouts = 0;         ///< acquires that threw AcquireTimeout
    std::uint64_t create_failures = 0;  ///< create() calls that threw
    std::uint64_t validation_failures = 0; ///< idle connections validate() rejected
    std::uint64_t discarded = 0;        ///< leases ended with discard()
    std::uint64_t leaks = 0;            ///< leases reported as held past leak_threshold
    std::chrono::nanoseconds acquire_wait_p50{};  ///< median acquire wait (fast-path acquires count as 0)
    std::chrono::nanoseconds acquire_wait_p99{};  ///< 99th percentile acquire wait
    std::chrono::nanoseconds acquire_wait_max{};  ///< longest acquire wait
};

namespace detail {

inline std::atomic<std::uint64_t> next_pool_id{1};

// The thread-local "last slot I gave back" hint, per pool (a few pools per thread share it by
// pool id; ids are never reused, so a stale entry can only miss, never point into a dead pool).
struct CacheEntry {
    std::uint64_t pool = 0;
    std::uint32_t index = 0;
};
struct ThreadCache {
    CacheEntry entries[4]{};
    std::uint32_t rotor = 0; // spreads the slot scans of different threads
};
// constinit: the compiler can then reach it without a TLS init guard on the hot path.
inline constinit thread_local ThreadCache thread_cache{};

inline std::string format_duration(std::chrono::nanoseconds d) {
    std::ostringstream out;
    const auto ns = d.count();
    if (ns < 1'000'000) {
        out << ns / 1000 << " us";
    } else if (ns < 10'000'000'000) {
        out << ns / 1'000'000 << " ms";
    } else {
        out << ns / 1'000'000'000 << " s";
    }
    return out.str();
}

inline void check_option(bool ok, const char* field, const std::string& requirement,
                         long long value) {
    if (!ok) {
        throw std::invalid_argument("connpool::PoolOptions: " + std::string(field) + " " +
                                    requirement + ", got " + std::to_string(value));
    }
}

inline PoolOptions validated(PoolOptions o) {
    using ll = long long;
    check_option(o.max_size >= 1, "max_size", "must be at least 1", static_cast<ll>(o.max_size));
    check_option(o.max_size <= (1u << 20), "max_size", "must be at most 1048576",
                 static_cast<ll>(o.max_size));
    check_option(o.min_idle <= o.max_size, "min_idle",
                 "must be at most max_size (" + std::to_string(o.max_size) + ")",
                 static_cast<ll>(o.min_idle));
    check_option(o.acquire_timeout.count() >= 0, "acquire_timeout", "must not be negative (ms)",
                 o.acquire_timeout.count());
    check_option(o.idle_timeout.count() >= 0, "idle_timeout", "must not be negative (ms)",
                 o.idle_timeout.count());
    check_option(o.max_lifetime.count() >= 0, "max_lifetime", "must not be negative (ms)",
                 o.max_lifetime.count());
    check_option(o.validate_after_idle.count() >= 0, "validate_after_idle",
                 "must not be negative (ms)", o.validate_after_idle.count());
    check_option(o.leak_threshold.count() >= 0, "leak_threshold", "must not be negative (ms)",
                 o.leak_threshold.count());
    check_option(o.max_concurrent_creates >= 1, "max_concurrent_creates", "must be at least 1",
                 static_cast<ll>(o.max_concurrent_creates));
    check_option(o.create_retry_initial.count() >= 1, "create_retry_initial",
                 "must be at least 1 ms", o.create_retry_initial.count());
    check_option(o.create_retry_max >= o.create_retry_initial, "create_retry_max",
                 "must be at least create_retry_initial (" +
                     std::to_string(o.create_retry_initial.count()) + " ms)",
                 o.create_retry_max.count());
    check_option(o.maintenance_interval.count() >= 0, "maintenance_interval",
                 "must not be negative (ms)", o.maintenance_interval.count());
    return o;
}

/// The shared state behind a Pool; outlives the Pool while leases are out. Not for users.
template <class Conn, class Factory, class Clock>
class PoolCore final : public LeaseOwner<Conn> {
    using Slot = detail::Slot<Conn>;
    using steady = std::chrono::steady_clock;

public:
    PoolCore(Factory factory, PoolOptions options)
        : options_(validated(std::move(options))),
          factory_(std::move(factory)),
          slots_(std::make_unique<Slot[]>(options_.max_size)),
          idle_(options_.max_size),
          validate_after_ns_(ns(options_.validate_after_idle)),
          lifetime_ns_(ns(options_.max_lifetime)) {
        for (std::size_t i = 0; i < options_.max_size; ++i) {
            slots_[i].index = static_cast<std::uint32_t>(i);
            slots_[i].owner = this;
        }
        const bool needs_maintenance = options_.min_idle > 0 || options_.idle_timeout.count() > 0 ||
                                       options_.max_lifetime.count() > 0 ||
                                       options_.leak_threshold.count() > 0;
        if (needs_maintenance && options_.maintenance_interval.count() > 0) {
            maintenance_ = std::thread([this] { maintenance_loop(); });
        }
    }

    PoolCore(const PoolCore&) = delete;
    PoolCore& operator=(const PoolCore&) = delete;

    // ---- acquire -------------------------------------------------------------------------

    Lease<Conn> acquire(std::chrono::milliseconds timeout, const source_location& loc) {
        // No closed_ check here: close() destroys every parked connection, so after it the
        // cached slot cannot be taken and the slow path throws PoolClosed.
        if (Slot* s = take_cached()) {
            if (hand_out(*s, loc, std::chrono::nanoseconds{0}, false)) return Lease<Conn>(s);
        }
        return acquire_slow(timeout, loc);
    }

    std::optional<Lease<Conn>> try_acquire(const source_location& loc) {
        if (closed_.load(std::memory_order_acquire)) throw PoolClosed{};
        for (;;) {
            Slot* s = take_cached();
            if (s == nullptr) {
                if (auto popped = idle_.try_pop()) {
                    s = *popped;
                    if ((s->state.load(std::memory_order_acquire) & state_mask) == reserved) {
                        vacate(*s, true); // a ticket to create: try_acquire never creates
                        continue;
                    }
                    own(*s);
                } else {
                    s = steal_parked(false);
                }
            }
            if (s == nullptr) return std::nullopt;
            if (hand_out(*s, loc, std::chrono::nanoseconds{0}, false)) return Lease<Conn>(s);
        }
    }

    // ---- release (LeaseOwner) ------------------------------------------------------------

    void give_back(Slot& s, bool discard) noexcept override {
        if (discard) {
            discarded_.fetch_add(1, std::memory_order_relaxed);
            destroy_owned(s, "discarded by its lease");
            return;
        }
        if constexpr (has_reset<Factory, Conn>) {
            bool ok = false;
            try {
                ok = factory_.reset(*s.conn);
            } catch (...) {
            }
            if (!ok) {
                destroy_owned(s, "reset() rejected it");
                return;
            }
        }
        // No clock read here: it would cost a third of the whole cycle. Idle time is measured
        // from the hand-out (see idle_since()), and a lease that outlives max_lifetime is
        // flagged `retiring` by maintenance, which sends this release down the slow path.
        if (options_.on_event) {
            emit(PoolEventKind::released, &s,
                 std::chrono::nanoseconds{now_ns<Clock>() - s.acquired_at.load(std::memory_order_relaxed)},
                 site_of(s));
        }
        remember(s);
        // Read before the CAS (see the design note). After a successful CAS the slot may be
        // taken, closed and the core deleted by others: touch nothing of ours after it.
        // closed_ need not be read: close() flags owned slots `closing`, failing this CAS.
        if (waiting_.load(std::memory_order_seq_cst) == 0) {
            std::uint32_t expected = in_use;
            if (s.state.compare_exchange_strong(expected, parked, std::memory_order_acq_rel,
                                                std::memory_order_relaxed)) {
                return;
            }
        }
        make_idle(s);
    }

    [[nodiscard]] std::int64_t clock_now_ns() const noexcept override { return now_ns<Clock>(); }

    // ---- close and lifetime --------------------------------------------------------------

    void close() {
        bool expected = false;
        const bool first = closed_.compare_exchange_strong(expected, true, std::memory_order_seq_cst);
        stop_maintenance();
        if (!first) return;
        idle_.close();
        for (std::size_t i = 0; i < options_.max_size; ++i) {
            Slot& s = slots_[i];
            std::uint32_t cur = s.state.load(std::memory_order_acquire);
            for (;;) {
                const std::uint32_t st = cur & state_mask;
                if (cur == parked) {
                    if (s.state.compare_exchange_weak(cur, busy, std::memory_order_acq_rel)) {
                        destroy_owned(s, "pool closed");
                        break;
                    }
                } else if (st == in_use || st == busy || st == reserved || st == queued) {
                    // Owned: its owner destroys it. Queued ones are drained below; flagged in
                    // case a popper has one already (see own()).
                    if ((cur & closing) != 0 ||
                        s.state.compare_exchange_weak(cur, cur | closing, std::memory_order_acq_rel)) {
                        break;
                    }
                } else {
                    break; // vacant
                }
            }
        }
        while (auto popped = idle_.try_pop()) {
            Slot& s = **popped;
            if ((s.state.load(std::memory_order_acquire) & state_mask) == queued) {
                s.state.store(busy, std::memory_order_relaxed);
                destroy_owned(s, "pool closed");
            } else {
                vacate(s, false);
            }
        }
    }

    [[nodiscard]] bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }

    // Called by ~Pool after close(): the pool's own reference.
    void release_pool_reference() noexcept {
        stop_maintenance(); // joins even if close() ran on the maintenance thread itself
        drop_ref();
    }

    // ---- maintenance ---------------------------------------------------------------------

    std::size_t maintain() {
        if (closed_.load(std::memory_order_acquire)) return 0;
        const std::int64_t now = now_ns<Clock>();
        std::size_t retired = 0;
        const std::int64_t idle_limit = ns(options_.idle_timeout);
        const std::int64_t open = static_cast<std::int64_t>(open_.load(std::memory_order_acquire));
        std::int64_t may_retire_idle = open - static_cast<std::int64_t>(options_.min_idle);

        auto verdict = [&](const Slot& s) -> const char* {
            const std::int64_t expires = s.expires_at.load(std::memory_order_relaxed);
            if (expires != 0 && now >= expires) return "max_lifetime reached";
            if (idle_limit > 0 && may_retire_idle > 0 && now - idle_since(s) >= idle_limit) {
                --may_retire_idle;
                return "idle_timeout reached";
            }
            return nullptr;
        };

        // Idle connections in the queue (oldest first, so the least recently used go first).
        std::vector<std::pair<Slot*, const char*>> doomed;
        // The reasons are collected beside: extract_if's result holds the same slots.
        (void)idle_.extract_if([&](Slot* const& s) {
            if ((s->state.load(std::memory_order_acquire) & state_mask) != queued) return false;
            if (const char* why = verdict(*s)) {
                doomed.emplace_back(s, why);
                return true;
            }
            return false;
        });
        for (auto& [s, why] : doomed) {
            s->state.store(busy, std::memory_order_relaxed);
            destroy_owned(*s, why);
            ++retired;
        }
        // Idle connections parked in some thread's cache.
        for (std::size_t i = 0; i < options_.max_size; ++i) {
            Slot& s = slots_[i];
            std::uint32_t cur = parked;
            if (!s.state.compare_exchange_strong(cur, busy, std::memory_order_acq_rel)) continue;
            if (const char* why = verdict(s)) {
                destroy_owned(s, why);
                ++retired;
            } else {
                make_idle(s);
            }
        }
        // Leases: note that they are still running (for idle_since()), flag the ones past
        // max_lifetime so their release retires them, report the ones held too long.
        const std::int64_t leak_threshold = ns(options_.leak_threshold);
        for (std::size_t i = 0; i < options_.max_size; ++i) {
            Slot& s = slots_[i];
            std::uint32_t cur = s.state.load(std::memory_order_acquire);
            if ((cur & state_mask) != in_use) continue;
            s.seen_in_use_version.store(s.acquires.load(std::memory_order_relaxed),
                                        std::memory_order_relaxed);
            s.seen_in_use_at.store(now, std::memory_order_relaxed);
            const std::int64_t expires = s.expires_at.load(std::memory_order_relaxed);
            while (expires != 0 && now >= expires && (cur & state_mask) == in_use && (cur & retiring) == 0 &&
                   !s.state.compare_exchange_weak(cur, cur | retiring, std::memory_order_acq_rel)) {
            }
            const std::int64_t held = now - s.acquired_at.load(std::memory_order_relaxed);
            const std::uint64_t lease = s.acquires.load(std::memory_order_relaxed);
            if (leak_threshold > 0 && held >= leak_threshold &&
                s.leak_reported.exchange(lease, std::memory_order_relaxed) != lease) {
                leaks_.fetch_add(1, std::memory_order_relaxed);
                emit(PoolEventKind::leak, &s, std::chrono::nanoseconds{held}, site_of(s));
            }
        }
        // Keep min_idle connections ready.
        while (!closed_.load(std::memory_order_acquire) && idle_count() < options_.min_idle) {
            Slot* r = reserve();
            if (r == nullptr || !create_into(*r)) break;
            to_queue(*r); // no thread's cache knows it: it belongs in the idle queue
        }
        return retired;
    }

    // ---- stats ---------------------------------------------------------------------------

    PoolStats stats() const {
        PoolStats st;
        st.max_size = options_.max_size;
        std::uint64_t acquired = 0;
        for (std::size_t i = 0; i < options_.max_size; ++i) {
            const Slot& s = slots_[i];
            const std::uint32_t state = s.state.load(std::memory_order_acquire) & state_mask;
            if (state == parked || state == queued) ++st.idle;
            if (state == in_use) ++st.in_use;
            acquired += s.acquires.load(std::memory_order_relaxed);
        }
        st.open = open_.load(std::memory_order_acquire);
        st.waiting = static_cast<std::size_t>(waiting_.load(std::memory_order_acquire));
        st.created = created_.load(std::memory_order_relaxed);
        st.destroyed = destroyed_.load(std::memory_order_relaxed);
        st.acquired = acquired;
        st.timeouts = timeouts_.load(std::memory_order_relaxed);
        st.create_failures = create_failures_.load(std::memory_order_relaxed);
        st.validation_failures = validation_failures_.load(std::memory_order_relaxed);
        st.discarded = discarded_.load(std::memory_order_relaxed);
        st.leaks = leaks_.load(std::memory_order_relaxed);
        const std::uint64_t slow = waits_.count();
        const std::uint64_t zeros = acquired > slow ? acquired - slow : 0;
        st.acquire_wait_p50 = std::chrono::nanoseconds(waits_.percentile(0.50, zeros));
        st.acquire_wait_p99 = std::chrono::nanoseconds(waits_.percentile(0.99, zeros));
        st.acquire_wait_max = std::chrono::nanoseconds(waits_.max());
        return st;
    }

    const PoolOptions& options() const noexcept { return options_; }

private:
    ~PoolCore() = default; // only drop_ref() deletes

    static std::int64_t ns(std::chrono::milliseconds d) noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    }

    void drop_ref() noexcept {
        if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
    }

    static CallSite site_of(const Slot& s) noexcept {
        return CallSite{s.site.file(), s.site.function(), s.site.line()};
    }

    void emit(PoolEventKind kind, const Slot* s, std::chrono::nanoseconds d, CallSite site = {},
              std::string_view detail = {}) const noexcept {
        if (!options_.on_event) return;
        try {
            options_.on_event(PoolEvent{kind, s != nullptr ? s->index : 0, d, site, detail});
        } catch (...) {
            // A monitoring hook must not break the pool.
        }
    }

    // The slot this thread gave back last, if it is still parked: ours now.
    Slot* take_cached() noexcept {
        const CacheEntry& e = thread_cache.entries[id_ & 3];
        if (e.pool != id_) return nullptr;
        Slot& s = slots_[e.index];
        std::uint32_t expected = parked;
        if (s.state.compare_exchange_strong(expected, in_use, std::memory_order_acquire,
                                            std::memory_order_relaxed)) {
            return &s;
        }
        return nullptr;
    }

    // Makes `s` this thread's cached slot. A different slot still parked under the old entry
    // goes to the queue, so every idle connection is in the queue or in exactly one cache.
    void remember(Slot& s) {
        CacheEntry& e = thread_cache.entries[id_ & 3];
        if (e.pool == id_ && e.index != s.index) {
            Slot& old = slots_[e.index];
            std::uint32_t expected = parked;
            if (old.state.compare_exchange_strong(expected, busy, std::memory_order_acq_rel)) {
                to_queue(old);
            }
        }
        e.pool = id_;
        e.index = s.index;
    }

    // Claims a parked slot anywhere. With `mark`, also flags every owned slot `wanted` so that
    // its release cannot park it unseen while this thread sleeps (see the design note).
    Slot* steal_parked(bool mark) noexcept {
        const std::size_t n = options_.max_size;
        const std::size_t start = thread_cache.rotor++ % n;
        for (std::size_t k = 0; k < n; ++k) {
            Slot& s = slots_[(start + k) % n];
            // Before sleeping (mark) the load must not be stale: see the design note.
            std::uint32_t cur = s.state.load(mark ? std::memory_order_seq_cst : std::memory_order_relaxed);
            for (;;) {
                if (cur == parked) {
                    if (s.state.compare_exchange_weak(cur, in_use, std::memory_order_acq_rel)) return &s;
                    continue;
                }
                const std::uint32_t st = cur & state_mask;
                if (!mark || (cur & wanted) != 0 || (st != in_use && st != busy && st != reserved)) break;
                if (s.state.compare_exchange_weak(cur, cur | wanted, std::memory_order_acq_rel)) break;
            }
        }
        return nullptr;
    }

    Lease<Conn> acquire_slow(std::chrono::milliseconds timeout, const source_location& loc) {
        const auto start = steady::now();
        // Saturate: a "wait forever" timeout such as milliseconds::max() must not overflow.
        constexpr auto forever = std::chrono::hours(24 * 365 * 100);
        const auto deadline = start + (timeout < forever ? std::chrono::duration_cast<steady::duration>(timeout)
                                                         : std::chrono::duration_cast<steady::duration>(forever));
        // Spin first. A thread that merely lost a race (the usual case when threads outnumber
        // cores) finds a parked connection within a few yields. Putting it to sleep instead
        // would make every later release a hand-off to a sleeping thread plus a context
        // switch: a lock convoy, from which a busy pool never recovers.
        for (int round = 0; round < spin_rounds; ++round) {
            if (closed_.load(std::memory_order_acquire)) throw PoolClosed{};
            if (Slot* s = grab()) {
                if (claim(*s, start, loc)) return Lease<Conn>(s);
                continue;
            }
            const auto now = steady::now();
            if (now >= deadline || now - start >= spin_limit) break;
            if (round < 4) {
                cpu_relax();
            } else {
                std::this_thread::yield();
            }
        }

        // Then sleep in the idle queue, served in arrival order.
        waiting_.fetch_add(1, std::memory_order_seq_cst);
        struct Leave {
            std::atomic<std::int64_t>& waiting;
            ~Leave() { waiting.fetch_sub(1, std::memory_order_seq_cst); }
        } leave{waiting_};

        for (;;) {
            if (closed_.load(std::memory_order_acquire)) throw PoolClosed{};
            Slot* s = next_slot(start, deadline, loc);
            if (s != nullptr && claim(*s, start, loc)) return Lease<Conn>(s);
        }
    }

    // Owns and hands out a slot the slow path obtained. False = it was an unusable ticket or
    // got retired: go round again.
    bool claim(Slot& s, steady::time_point start, const source_location& loc) {
        if (!own(s)) return false;
        return hand_out(s, loc, std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - start), true);
    }

    static constexpr int spin_rounds = 64;
    static constexpr auto spin_limit = std::chrono::microseconds(200);

    static void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        asm volatile("yield");
#endif
    }

    // A connection without waiting: the newest queued idle one, a parked one, or a new one.
    Slot* grab() {
        if (auto popped = idle_.try_pop()) return *popped;
        if (Slot* s = steal_parked(false)) return s;
        if (Slot* r = reserve()) return create_into(*r) ? r : nullptr;
        return nullptr;
    }

    // One round of the slow path: the newest queued idle connection, a parked one, a new one,
    // or whatever the queue hands this thread while it waits. nullptr = go round again.
    Slot* next_slot(steady::time_point start, steady::time_point deadline, const source_location& loc) {
        if (Slot* s = grab()) return s;
        if (Slot* s = steal_parked(true)) return s;
        const auto now = steady::now();
        if (now >= deadline) throw_timeout(loc, now - start);
        auto until = deadline;
        const auto backoff =
            steady::time_point(steady::duration(backoff_until_.load(std::memory_order_acquire)));
        if (backoff > now && backoff < until) until = backoff;
        auto popped = idle_.pop_until(until); // empty: closed, back-off over or deadline
        return popped ? *popped : nullptr;
    }

    // Turns a slot this thread just obtained into one it holds as in_use with a connection:
    // queued ones are taken over, tickets to create are created into. False = try again.
    bool own(Slot& s) {
        std::uint32_t cur = s.state.load(std::memory_order_acquire);
        if ((cur & state_mask) == reserved && !s.conn.has_value()) { // a ticket to create
            if ((cur & closing) != 0 || closed_.load(std::memory_order_acquire) || backing_off()) {
                vacate(s, false); // the caller sleeps until the back-off ends, then tries again
                return false;
            }
            creating_.fetch_add(1, std::memory_order_seq_cst);
            if (!create_into(s)) return false;
            cur = s.state.load(std::memory_order_acquire);
        }
        // Popped from the queue, created just now, or stolen: become in_use, keeping any flags.
        // An RMW, not a store: close() may be flagging this very slot at the same moment.
        while (!s.state.compare_exchange_weak(cur, (cur & ~state_mask) | in_use, std::memory_order_seq_cst)) {
        }
        if ((cur & closing) != 0 || closed_.load(std::memory_order_seq_cst)) {
            destroy_owned(s, "pool closed");
            throw PoolClosed{};
        }
        return true;
    }

    // Checks and stamps a slot this thread owns as in_use. False = it was retired; try again.
    bool hand_out(Slot& s, const source_location& loc, std::chrono::nanoseconds waited, bool slow) {
        const std::int64_t now = now_ns<Clock>();
        const std::int64_t expires = s.expires_at.load(std::memory_order_relaxed);
        if (expires != 0 && now >= expires) {
            destroy_owned(s, "max_lifetime reached");
            return false;
        }
        if constexpr (has_validate<Factory, Conn>) {
            if (!s.fresh && now - idle_since(s) >= validate_after_ns_) {
                bool ok = false;
                try {
                    ok = factory_.validate(*s.conn);
                } catch (...) {
                }
                if (!ok) {
                    validation_failures_.fetch_add(1, std::memory_order_relaxed);
                    emit(PoolEventKind::validation_failed, &s, std::chrono::nanoseconds{0});
                    destroy_owned(s, "validate() rejected it");
                    return false;
                }
            }
        }
        s.fresh = false;
        s.acquired_at.store(now, std::memory_order_relaxed);
        s.site.store(loc);
        // Single writer (the owner), so a plain read-modify-write without a lock prefix.
        s.acquires.store(s.acquires.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        if (slow) waits_.record(static_cast<std::uint64_t>(waited.count()));
        if (options_.on_event) {
            emit(PoolEventKind::acquired, &s, waited,
                 CallSite{loc.file_name(), loc.function_name(), loc.line()});
        }
        return true;
    }

    // Publishes an owned slot with a live connection as idle: to the queue when threads wait
    // (the queue hands it to the oldest), else parked. Destroys it if the pool closed.
    void make_idle(Slot& s) {
        std::uint32_t cur = s.state.load(std::memory_order_acquire);
        for (;;) {
            if ((cur & closing) != 0 || closed_.load(std::memory_order_seq_cst)) {
                destroy_owned(s, "pool closed");
                return;
            }
            if ((cur & retiring) != 0) {
                destroy_owned(s, "max_lifetime reached");
                return;
            }
            if (waiting_.load(std::memory_order_seq_cst) > 0) {
                to_queue(s);
                return;
            }
            if (s.state.compare_exchange_weak(cur, parked, std::memory_order_acq_rel)) return;
        }
    }

    // Moves an owned slot with a live connection into the idle queue.
    void to_queue(Slot& s) {
        std::uint32_t cur = s.state.load(std::memory_order_acquire);
        for (;;) {
            if ((cur & closing) != 0) {
                destroy_owned(s, "pool closed");
                return;
            }
            if (s.state.compare_exchange_weak(cur, queued, std::memory_order_acq_rel)) break;
        }
        if (!idle_.push(&s)) { // closed meanwhile: it is still ours
            s.state.store(busy, std::memory_order_relaxed);
            destroy_owned(s, "pool closed");
        }
    }

    // Destroys the connection of an owned slot, then frees the slot.
    void destroy_owned(Slot& s, std::string_view why) noexcept {
        if constexpr (has_destroy<Factory, Conn>) {
            try {
                factory_.destroy(*s.conn);
            } catch (...) {
            }
        }
        s.conn.reset();
        open_.fetch_sub(1, std::memory_order_acq_rel);
        destroyed_.fetch_add(1, std::memory_order_relaxed);
        emit(PoolEventKind::destroyed, &s, std::chrono::nanoseconds{0}, {}, why);
        vacate(s, true);
    }

    // Frees an owned slot that holds no connection. With `hand_off`, the oldest sleeping thread
    // gets the capacity as a ticket to create; else (or with nobody asleep) the slot is vacant.
    void vacate(Slot& s, bool hand_off) noexcept {
        std::uint32_t cur = s.state.load(std::memory_order_acquire);
        for (;;) {
            // Handed over even while creation backs off: the waiter then sleeps until the
            // back-off ends instead of until its deadline (see own()).
            if (hand_off && (cur & closing) == 0 && !closed_.load(std::memory_order_seq_cst) &&
                waiting_.load(std::memory_order_seq_cst) > 0) {
                if (s.state.compare_exchange_weak(cur, reserved, std::memory_order_acq_rel)) {
                    if (idle_.push(&s)) return;
                    hand_off = false; // closed meanwhile
                    cur = s.state.load(std::memory_order_acquire);
                }
                continue;
            }
            if (s.state.compare_exchange_weak(cur, vacant, std::memory_order_acq_rel)) break;
        }
        drop_ref(); // last: may delete this
    }

    bool backing_off() const noexcept {
        return steady::now().time_since_epoch().count() <
               backoff_until_.load(std::memory_order_acquire);
    }

    // Claims a vacant slot for a creation by this thread, within max_concurrent_creates and
    // outside a creation back-off. Counts the creation in creating_.
    Slot* reserve() noexcept {
        if (backing_off()) return nullptr;
        std::size_t c = creating_.load(std::memory_order_seq_cst);
        do {
            if (c >= options_.max_concurrent_creates) return nullptr;
        } while (!creating_.compare_exchange_weak(c, c + 1, std::memory_order_seq_cst));
        if (Slot* s = claim_vacant()) return s;
        creating_.fetch_sub(1, std::memory_order_seq_cst);
        return nullptr;
    }

    Slot* claim_vacant() noexcept {
        const std::size_t n = options_.max_size;
        const std::size_t start = thread_cache.rotor++ % n;
        for (std::size_t k = 0; k < n; ++k) {
            Slot& s = slots_[(start + k) % n];
            if (s.state.load(std::memory_order_relaxed) != vacant) continue;
            refs_.fetch_add(1, std::memory_order_relaxed);
            std::uint32_t expected = vacant;
            if (s.state.compare_exchange_strong(expected, reserved, std::memory_order_acq_rel)) return &s;
            refs_.fetch_sub(1, std::memory_order_relaxed); // we still hold the pool's, never 0
        }
        return nullptr;
    }

    // Creates a connection into a slot this thread reserved (counted in creating_). On failure
    // the slot is vacated and the pool backs off; returns false.
    bool create_into(Slot& s) {
        const auto t0 = steady::now();
        std::string error;
        // Nothing may escape from here: the slot is reserved and counted in creating_.
        auto describe = [&error](const char* what) noexcept {
            try {
                error = (what != nullptr && *what != '\0') ? what : "create() threw an exception with an empty message";
            } catch (...) {
                // Out of memory for the message: the slot and the counts matter more.
            }
        };
        try {
            s.conn.emplace(factory_.create());
        } catch (const std::exception& e) {
            describe(e.what());
        } catch (...) {
            describe("create() threw a non-standard exception");
        }
        const auto took = steady::now() - t0;
        if (!s.conn.has_value()) {
            create_failures_.fetch_add(1, std::memory_order_relaxed);
            {
                std::lock_guard lock(error_mutex_);
                backoff_ = backoff_.count() == 0
                               ? options_.create_retry_initial
                               : std::min(backoff_ * 2, options_.create_retry_max);
                backoff_until_.store((steady::now() + backoff_).time_since_epoch().count(),
                                     std::memory_order_release);
                try {
                    last_create_error_ = error;
                } catch (...) {
                    // Out of memory for the message: the counts and the slot matter more.
                }
            }
            emit(PoolEventKind::create_failed, &s, std::chrono::nanoseconds{0}, {}, error);
            creating_.fetch_sub(1, std::memory_order_seq_cst);
            vacate(s, true); // a sleeper takes over the retry once the back-off ends
            return false;
        }
        const std::int64_t now = now_ns<Clock>();
        s.fresh = true;
        s.acquired_at.store(now, std::memory_order_relaxed);
        s.expires_at.store(lifetime_ns_ == 0 ? 0 : now + lifetime_ns_ - jitter(), std::memory_order_relaxed);
        open_.fetch_add(1, std::memory_order_acq_rel);
        created_.fetch_add(1, std::memory_order_relaxed);
        if (backoff_until_.load(std::memory_order_acquire) != 0) {
            std::lock_guard lock(error_mutex_);
            last_create_error_.clear();
            backoff_ = {};
            backoff_until_.store(0, std::memory_order_release);
        }
        emit(PoolEventKind::created, &s, std::chrono::duration_cast<std::chrono::nanoseconds>(took));
        creating_.fetch_sub(1, std::memory_order_seq_cst);
        // A thread may be waiting only because creations were at their limit: pass it a ticket.
        if (waiting_.load(std::memory_order_seq_cst) > 0 && !closed_.load(std::memory_order_acquire)) {
            if (Slot* ticket = claim_vacant()) {
                if (!idle_.push(ticket)) vacate(*ticket, false);
            }
        }
        return true;
    }

    std::int64_t jitter() {
        if (lifetime_ns_ < 10'000'000'000) return 0; // HikariCP's rule: no jitter under 10 s
        std::lock_guard lock(error_mutex_);
        return std::uniform_int_distribution<std::int64_t>(0, lifetime_ns_ / 40)(rng_);
    }

    // When an idle slot's connection was last in use, without a clock read at release: its
    // last hand-out, or later the last maintenance pass that saw that same lease still running.
    // Never later than the true release, so idle ages err long by at most the hold time (or one
    // maintenance interval): idle connections are validated or retired early, never late.
    static std::int64_t idle_since(const Slot& s) noexcept {
        std::int64_t since = s.acquired_at.load(std::memory_order_relaxed);
        if (s.seen_in_use_version.load(std::memory_order_relaxed) == s.acquires.load(std::memory_order_relaxed)) {
            since = std::max(since, s.seen_in_use_at.load(std::memory_order_relaxed));
        }
        return since;
    }

    std::size_t idle_count() const noexcept {
        std::size_t n = 0;
        for (std::size_t i = 0; i < options_.max_size; ++i) {
            const std::uint32_t st = slots_[i].state.load(std::memory_order_acquire) & state_mask;
            n += (st == parked || st == queued) ? 1 : 0;
        }
        return n;
    }

    [[noreturn]] void throw_timeout(const source_location& loc, steady::duration waited) {
        timeouts_.fetch_add(1, std::memory_order_relaxed);
        const auto waited_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(waited);
        emit(PoolEventKind::timeout, nullptr, waited_ns,
             CallSite{loc.file_name(), loc.function_name(), loc.line()});
        const PoolStats st = stats();
        std::ostringstream msg;
        msg << "connpool: acquire timed out after " << format_duration(waited_ns)
            << " waiting for a connection (max_size " << st.max_size << ", open " << st.open
            << ", in use " << st.in_use << ", idle " << st.idle << ", waiting " << st.waiting
            << ")";
        {
            std::lock_guard lock(error_mutex_);
            if (!last_create_error_.empty()) {
                msg << "; creating connections is failing, last error: " << last_create_error_;
            }
        }
        const std::int64_t now = now_ns<Clock>();
        std::size_t listed = 0;
        std::size_t holders = 0;
        for (std::size_t i = 0; i < options_.max_size; ++i) {
            const Slot& s = slots_[i];
            if ((s.state.load(std::memory_order_acquire) & state_mask) != in_use) continue;
            ++holders;
            if (listed == 8) continue;
            const CallSite site = site_of(s);
            msg << (listed++ == 0 ? "; held by: " : ", ") << site.file << ':' << site.line << " ("
                << site.function << ") for "
                << format_duration(std::chrono::nanoseconds(
                       now - s.acquired_at.load(std::memory_order_relaxed)));
        }
        if (holders > listed) msg << ", and " << holders - listed << " more";
        throw AcquireTimeout(msg.str(), std::chrono::duration_cast<std::chrono::milliseconds>(waited));
    }

    void maintenance_loop() {
        std::unique_lock lock(maintenance_mutex_);
        while (!stop_maintenance_) {
            maintenance_cv_.wait_for(lock, options_.maintenance_interval);
            if (stop_maintenance_) break;
            lock.unlock();
            try {
                maintain();
            } catch (...) {
                // Maintenance is best effort; the next pass tries again.
            }
            lock.lock();
        }
    }

    void stop_maintenance() {
        {
            std::lock_guard lock(maintenance_mutex_);
            stop_maintenance_ = true;
        }
        maintenance_cv_.notify_all();
        if (maintenance_.joinable() && maintenance_.get_id() != std::this_thread::get_id()) {
            maintenance_.join();
        }
    }

    const PoolOptions options_;
    Factory factory_;
    const std::uint64_t id_ = next_pool_id.fetch_add(1, std::memory_order_relaxed);
    std::unique_ptr<Slot[]> slots_;
    BoundedBlockingQueue<Slot*, QueueOrder::lifo> idle_;
    const std::int64_t validate_after_ns_;
    const std::int64_t lifetime_ns_;

    // Read on every release: kept together, written rarely.
    alignas(cache_line) std::atomic<bool> closed_{false};
    std::atomic<std::int64_t> waiting_{0};

    alignas(cache_line) std::atomic<std::size_t> refs_{1}; // the pool + one per non-vacant slot
    std::atomic<std::size_t> creating_{0};
    std::atomic<std::size_t> open_{0};
    std::atomic<std::uint64_t> created_{0};
    std::atomic<std::uint64_t> destroyed_{0};
    std::atomic<std::uint64_t> timeouts_{0};
    std::atomic<std::uint64_t> create_failures_{0};
    std::atomic<std::uint64_t> validation_failures_{0};
    std::atomic<std::uint64_t> discarded_{0};
    std::atomic<std::uint64_t> leaks_{0};
    std::atomic<std::int64_t> backoff_until_{0}; // steady_clock ticks; 0 = not backing off
    WaitHistogram waits_;

    mutable std::mutex error_mutex_; // guards the three below
    std::string last_create_error_;
    std::chrono::milliseconds backoff_{0};
    std::mt19937_64 rng_{std::random_device{}()};

    std::mutex maintenance_mutex_;
    std::condition_variable maintenance_cv_;
    bool stop_maintenance_ = false; // guarded by maintenance_mutex_
    std::thread maintenance_;
};

} // namespace detail

/// A thread-safe pool of connections made by `Factory`, handed out as RAII Lease<Conn>s.
///
/// Every member may be called from any thread. Destroying the pool closes it; leases still out
/// stay usable and destroy their connections when they come back. `Clock` times idle timeouts,
/// lifetimes, leaks and hold times (tests inject a manual one); waits always use steady_clock.
template <class Conn, class Factory, class Clock = detail::coarse_clock>
class Pool {
    static_assert(std::is_move_constructible_v<Conn>,
                  "connpool::Pool<Conn, Factory>: Conn must be move-constructible, because the "
                  "pool moves each new connection from create() into its slot.");
    static_assert(ConnectionFactory<Factory, Conn>,
                  "connpool::Pool<Conn, Factory>: Factory must have a member function create() "
                  "that returns a new Conn (or something convertible to Conn).");

public:
    /// The type of the connections this pool hands out (what a Lease<Conn> holds).
    using connection_type = Conn;
    /// The factory type that creates them.
    using factory_type = Factory;

    /// Creates a pool that makes connections with `factory`. Creates none yet (min_idle ones
    /// come from the maintenance thread). Throws std::invalid_argument for invalid options.
    explicit Pool(Factory factory, PoolOptions options = {})
        : core_(new detail::PoolCore<Conn, Factory, Clock>(std::move(factory), std::move(options))) {}

    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    /// Closes the pool (see close()); leases still out keep what they need alive.
    ~Pool() {
        core_->close();
        core_->release_pool_reference();
    }

    /// Returns a lease on a connection, waiting up to options().acquire_timeout. Throws
    /// AcquireTimeout at the deadline, PoolClosed if the pool is or gets closed. Records the
    /// call site for leak and timeout reports. Does not allocate once the pool is warm.
    [[nodiscard]] Lease<Conn> acquire(source_location loc = source_location::current()) {
        return core_->acquire(core_->options().acquire_timeout, loc);
    }

    /// Like acquire(), with its own deadline `timeout` from now.
    [[nodiscard]] Lease<Conn> acquire_for(std::chrono::milliseconds timeout,
                                          source_location loc = source_location::current()) {
        if (timeout.count() < 0) timeout = std::chrono::milliseconds{0};
        return core_->acquire(timeout, loc);
    }

    /// Returns a lease on an idle connection if one is ready now, else std::nullopt. Never
    /// blocks: it neither waits nor creates a connection. Throws PoolClosed after close().
    [[nodiscard]] std::optional<Lease<Conn>> try_acquire(
        source_location loc = source_location::current()) {
        return core_->try_acquire(loc);
    }

    /// Returns a snapshot of the pool's gauges, counters and acquire-wait percentiles.
    [[nodiscard]] PoolStats stats() const { return core_->stats(); }

    /// Closes the pool: acquires throw PoolClosed from now on (waiters wake with it), idle
    /// connections are destroyed, outstanding leases stay usable and their connections are
    /// destroyed when they come back, the maintenance thread stops. Idempotent.
    void close() { core_->close(); }

    /// Returns whether close() has been called.
    [[nodiscard]] bool closed() const noexcept { return core_->closed(); }

    /// Runs one maintenance pass now (retire expired and long-idle connections, report leaks,
    /// top up min_idle) and returns how many connections it retired. The maintenance thread
    /// calls it every maintenance_interval; call it yourself when that is 0.
    std::size_t maintain() { return core_->maintain(); }

    /// Returns the options the pool was built with.
    [[nodiscard]] const PoolOptions& options() const noexcept { return core_->options(); }

private:
    detail::PoolCore<Conn, Factory, Clock>* core_; // deleted by its last reference
};

/// Deduces Pool<Conn, Factory> from the factory: `connpool::Pool pool{factory, options};`
template <class Factory>
Pool(Factory, PoolOptions) -> Pool<detail::connection_t<Factory>, Factory>;

/// Deduces Pool<Conn, Factory> from the factory alone: `connpool::Pool pool{factory};`
template <class Factory>
Pool(Factory) -> Pool<detail::connection_t<Factory>, Factory>;

} // namespace connpool
