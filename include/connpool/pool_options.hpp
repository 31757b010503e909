#pragma once

// The plain types a Pool is configured with and reports through: options, events, statistics.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace connpool {

/// What happened in a pool, as reported to PoolOptions::on_event.
enum class PoolEventKind {
    created,           ///< a connection was created; `duration` is how long create() took
    create_failed,     ///< create() threw; `detail` is its message
    destroyed,         ///< a connection was destroyed; `detail` says why
    acquired,          ///< a lease was handed out; `duration` is how long the caller waited
    released,          ///< a lease came back (the connection is idle again or destroyed); `duration` is the hold time
    timeout,           ///< an acquire gave up; `duration` is how long it waited
    leak,              ///< a lease has been held past leak_threshold; `duration` is the hold so far
    validation_failed, ///< validate() said an idle connection is dead (it is then destroyed)
    cancelled,         ///< a stop request called off a waiting acquire; `duration` is how long it waited
    resized,           ///< resize() changed max_size; `detail` is "from N to M"
    paused,            ///< pause() took effect
    resumed,           ///< resume() took effect
    retired_all,       ///< retire_all() ran: every connection is being replaced
};

/// Returns the event kind's name, e.g. "create_failed".
[[nodiscard]] constexpr std::string_view to_string(PoolEventKind kind) noexcept {
    switch (kind) {
    case PoolEventKind::created: return "created";
    case PoolEventKind::create_failed: return "create_failed";
    case PoolEventKind::destroyed: return "destroyed";
    case PoolEventKind::acquired: return "acquired";
    case PoolEventKind::released: return "released";
    case PoolEventKind::timeout: return "timeout";
    case PoolEventKind::leak: return "leak";
    case PoolEventKind::validation_failed: return "validation_failed";
    case PoolEventKind::cancelled: return "cancelled";
    case PoolEventKind::resized: return "resized";
    case PoolEventKind::paused: return "paused";
    case PoolEventKind::resumed: return "resumed";
    case PoolEventKind::retired_all: return "retired_all";
    }
    return "unknown";
}

/// Where an acquire was called from, as recorded by the pool.
struct CallSite {
    const char* file = "";           ///< source file
    const char* function = "";       ///< enclosing function
    std::uint_least32_t line = 0;    ///< line number
};

struct PoolStats;

/// One pool event. Views and pointers in it are valid only during the callback.
struct PoolEvent {
    PoolEventKind kind{};                ///< what happened
    std::uint32_t slot = 0;              ///< the connection's slot (stable place in the pool)
    std::chrono::nanoseconds duration{}; ///< meaning depends on `kind`
    CallSite site{};                     ///< the acquiring call site (acquired, released, timeout, leak, cancelled)
    std::string_view detail{};           ///< error text or reason (create_failed, destroyed, resized)
    const PoolStats* stats = nullptr;    ///< the pool's state when it happened (timeout); null otherwise
};

/// How a Pool behaves. Every field has a default; invalid values make Pool's constructor throw
/// std::invalid_argument naming the field and the value. Durations too large to mean anything
/// (such as milliseconds::max()) mean "never" (or "forever"), whatever the field.
struct PoolOptions {
    /// Most connections open at once, idle or in use. Default 8; 1 to 1048576. resize() changes it.
    std::size_t max_size = 8;
    /// Idle connections kept ready (created in the background). Default 0; at most max_size.
    std::size_t min_idle = 0;
    /// How long acquire() waits before throwing AcquireTimeout. Default 30 s.
    std::chrono::milliseconds acquire_timeout{30'000};
    /// An idle connection unused this long is destroyed (while more than min_idle are idle).
    /// Default 10 min; 0 = never.
    std::chrono::milliseconds idle_timeout{600'000};
    /// A connection is retired this long after its creation, minus up to 2.5 % random jitter so
    /// they don't all expire at once; checked when handed out, when given back and while idle.
    /// Default 30 min; 0 = never.
    std::chrono::milliseconds max_lifetime{1'800'000};
    /// An idle connection is validated (if the factory has validate()) before being handed out
    /// once it has been idle this long. A connection created less than 500 ms ago and never
    /// handed out is not validated (it was alive a moment ago). Default 500 ms; 0 = every time.
    std::chrono::milliseconds validate_after_idle{500};
    /// A lease held this long is reported once as a leak (event + stats). Default 0 = off.
    std::chrono::milliseconds leak_threshold{0};
    /// Most create() calls running at once (each on a background creator thread, started
    /// when needed). Default 2; at least 1.
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
    /// The pool's name, for monitoring (monitor::Hub uses it as the `pool` label when given none).
    /// Default empty.
    std::string name{};
};

/// Upper bounds of PoolStats::acquire_wait_buckets (the last bucket, +Inf, is implied): 10 us to
/// 30 s, the range from a hand-off between threads to a pool starved for its whole timeout.
inline constexpr std::array<std::chrono::nanoseconds, 13> acquire_wait_bucket_bounds{
    std::chrono::microseconds(10), std::chrono::microseconds(100), std::chrono::milliseconds(1),
    std::chrono::milliseconds(5),  std::chrono::milliseconds(10),  std::chrono::milliseconds(50),
    std::chrono::milliseconds(100), std::chrono::milliseconds(500), std::chrono::seconds(1),
    std::chrono::milliseconds(2500), std::chrono::seconds(5),      std::chrono::seconds(10),
    std::chrono::seconds(30)};

/// A snapshot of a pool's state and counters. The gauges are read one by one, so they agree
/// with each other (open == idle + in_use, created - destroyed == open) only while no acquire,
/// release, creation or maintenance is in flight.
struct PoolStats {
    std::size_t max_size = 0;           ///< the current max_size (PoolOptions::max_size or the last resize())
    std::size_t open = 0;               ///< connections that exist, idle or in use
    std::size_t idle = 0;               ///< connections ready to hand out
    std::size_t in_use = 0;             ///< connections held by leases
    std::size_t waiting = 0;            ///< threads inside acquire() that found nothing at once
    std::size_t creating = 0;           ///< create() calls in flight (on creator threads or maintenance)
    bool paused = false;                ///< whether pause() is in effect
    std::uint64_t created = 0;          ///< connections created, ever
    std::uint64_t destroyed = 0;        ///< connections destroyed, ever
    std::uint64_t acquired = 0;         ///< leases handed out, ever
    std::uint64_t timeouts = 0;         ///< acquires that threw AcquireTimeout
    std::uint64_t cancelled = 0;        ///< acquires that threw AcquireCancelled
    std::uint64_t create_failures = 0;  ///< create() calls that threw
    std::uint64_t validation_failures = 0; ///< idle connections validate() rejected
    std::uint64_t discarded = 0;        ///< leases ended with discard()
    std::uint64_t leaks = 0;            ///< leases reported as held past leak_threshold
    std::uint64_t retirements = 0;      ///< retire_all() calls
    std::chrono::nanoseconds acquire_wait_p50{};  ///< median acquire wait (fast-path acquires count as 0)
    std::chrono::nanoseconds acquire_wait_p99{};  ///< 99th percentile acquire wait
    std::chrono::nanoseconds acquire_wait_max{};  ///< longest acquire wait
    /// Acquires that waited at most acquire_wait_bucket_bounds[i], cumulative (fast-path acquires
    /// count as 0 and are in every bucket); the last, +Inf, counts every acquire the histogram saw.
    std::array<std::uint64_t, acquire_wait_bucket_bounds.size() + 1> acquire_wait_buckets{};
    std::chrono::nanoseconds acquire_wait_sum{}; ///< total time acquires waited
};

} // namespace connpool
